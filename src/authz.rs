//! Effective permissions: a user's own grants united with its groups'. Pure.

use crate::model::Permission;
use std::collections::BTreeSet;

pub fn effective(direct: &[Permission], via_groups: &[Permission]) -> BTreeSet<Permission> {
    direct.iter().chain(via_groups).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_of_direct_and_group_grants() {
        assert!(effective(&[], &[]).is_empty());
        let both = effective(&[Permission::Admin], &[Permission::Admin]);
        assert_eq!(
            both.into_iter().collect::<Vec<_>>(),
            vec![Permission::Admin]
        );
        assert!(effective(&[], &[Permission::Admin]).contains(&Permission::Admin));
    }
}
