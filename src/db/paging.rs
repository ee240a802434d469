//! Helpers for pages of ids: offsets as indexes, a page of a list in memory, ids as SQL's JSON.

/// A count or position from SQL as an index (negative: 0; too big: the largest).
pub(crate) fn as_index(n: i64) -> usize {
    usize::try_from(n.max(0)).unwrap_or(usize::MAX)
}

/// The ids from `offset`, at most `limit`: a page of a list held in memory.
pub(crate) fn page_of(ids: &[i64], offset: i64, limit: i64) -> Vec<i64> {
    let start = as_index(offset).min(ids.len());
    ids[start..].iter().take(as_index(limit)).copied().collect()
}

/// Ids as a JSON array, for `IN (SELECT value FROM json_each(?))`: one statement for a page of
/// rows instead of one per row.
pub fn id_list(ids: &[i64]) -> String {
    let mut out = String::with_capacity(ids.len() * 8 + 2);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_list_is_a_json_array() {
        assert_eq!(id_list(&[]), "[]");
        assert_eq!(id_list(&[3, -1, 42]), "[3,-1,42]");
    }
}
