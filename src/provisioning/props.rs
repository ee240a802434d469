//! Properties of the sign-in rules (allowed groups, logins of new accounts, group
//! synchronization) against naive readings of the rules. The fuzz targets `allowed_groups`,
//! `sync_plan` and `model_names` check the same with coverage guidance.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The allowed-groups rule read literally: `p == a` or `p` starts with `a + "/"`, ignoring case; entries
/// as the settings store them (trimmed of spaces and `/`); an empty entry admits nobody.
fn naive_allowed(user: &[String], allowed: &[String]) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|a| {
            let a = a.trim().trim_matches('/').to_lowercase();
            !a.is_empty()
                && user.iter().any(|p| {
                    let p = p.to_lowercase();
                    p == a || p.starts_with(&format!("{a}/"))
                })
        })
}

/// The paths synchronization may take, read literally: in order, each path that some allowed
/// entry admits on its own; none at all without allowed groups.
fn naive_synchronized(user: &[String], allowed: &[String]) -> Vec<String> {
    if allowed.is_empty() {
        return Vec::new();
    }
    user.iter()
        .filter(|p| naive_allowed(std::slice::from_ref(*p), allowed))
        .cloned()
        .collect()
}

/// A group path made of look-alike segments, so near misses are frequent.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("acme".to_string()),
        Just("ACME".to_string()),
        Just("acme-other".to_string()),
        Just("acmex".to_string()),
        Just("x".to_string()),
        Just(String::new()),
        r"[A-Za-z0-9_.-]{1,6}",
        any::<String>(),
    ];
    (
        prop::collection::vec(segment, 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segments, leading, trailing)| {
            format!(
                "{}{}{}",
                if leading { "/" } else { "" },
                segments.join("/"),
                if trailing { "/" } else { "" }
            )
        })
}

/// Flips the case of ASCII letters where `mask` says so.
fn recase(s: &str, mask: &[bool]) -> String {
    s.chars()
        .zip(mask.iter().cycle())
        .map(|(c, &up)| {
            if up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The default group `users` plus a group for each other name, and those of them the user is
/// a member of (by `held_mask`, in order).
fn local_groups(
    names: impl IntoIterator<Item = String>,
    held_mask: &[bool],
) -> (Vec<LocalGroup>, Vec<LocalGroup>) {
    let mut all = vec![LocalGroup {
        id: 1,
        name: "users".into(),
        is_default: true,
    }];
    for name in names.into_iter().filter(|n| n != "users") {
        let id = all.len() as i64 + 1;
        all.push(LocalGroup {
            id,
            name,
            is_default: false,
        });
    }
    let current = all
        .iter()
        .zip(held_mask)
        .filter(|(_, held)| **held)
        .map(|(g, _)| g.clone())
        .collect();
    (all, current)
}

proptest! {
    #[test]
    fn allowed_groups_agree_with_the_rule(
        user in prop::collection::vec(path(), 0..4),
        allowed in prop::collection::vec(path(), 0..3),
    ) {
        prop_assert_eq!(in_allowed_groups(&user, &allowed), naive_allowed(&user, &allowed));
    }

    #[test]
    fn synchronized_paths_agree_with_the_rule(
        user in prop::collection::vec(path(), 0..5),
        allowed in prop::collection::vec(path(), 0..3),
    ) {
        let taken: Vec<String> = synchronized_paths(&user, &allowed)
            .into_iter()
            .map(str::to_string)
            .collect();
        prop_assert_eq!(taken, naive_synchronized(&user, &allowed));
    }

    #[test]
    fn acme_never_admits_acme_other(
        rest in r"(/[A-Za-z0-9_.-]{1,6}){0,3}",
        suffix in r"[A-Za-z0-9_.-]{1,6}",
        mask in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let allowed = vec![recase("acme", &mask)];
        for p in [format!("acme-other{rest}"), format!("acme{suffix}{rest}"), format!("ACME-OTHER{rest}")] {
            prop_assert!(!in_allowed_groups(std::slice::from_ref(&p), &allowed), "{} admitted", p);
        }
    }

    #[test]
    fn an_allowed_root_admits_itself_and_its_subgroups_in_any_case(
        root in r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}",
        sub in r"(/[A-Za-z0-9_.-]{1,6}){0,3}",
        mask in prop::collection::vec(any::<bool>(), 1..8),
        mask2 in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let allowed = vec![recase(&root, &mask)];
        let user = vec!["unrelated".to_string(), recase(&format!("{root}{sub}"), &mask2)];
        prop_assert!(in_allowed_groups(&user, &allowed));
        let deep = format!("{root}/x/y");
        prop_assert!(in_allowed_groups(&[deep], &allowed));
        prop_assert!(in_allowed_groups(&user, &[]), "no allowed groups: everyone passes");
    }

    #[test]
    fn a_stored_allowed_group_admits_itself(raw in any::<String>()) {
        if let Ok(slug) = parse_allowed_group(&raw) {
            prop_assert!(slug.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
            prop_assert!(in_allowed_groups(std::slice::from_ref(&slug), std::slice::from_ref(&slug)));
            let other = format!("{slug}-other");
            prop_assert!(!in_allowed_groups(&[other], &[slug]));
        }
    }

    #[test]
    fn generated_logins_are_valid_and_distinct(username in any::<String>(), id in any::<i64>()) {
        let candidates: Vec<String> = login_candidates(&username, id).take(12).collect();
        for c in &candidates {
            prop_assert!(Login::parse(c).is_ok(), "{:?} gave {:?}", username, c);
        }
        prop_assert_eq!(candidates.iter().collect::<BTreeSet<_>>().len(), candidates.len());
    }

    #[test]
    fn a_valid_username_is_its_own_first_login(username in r"[a-z0-9][a-z0-9._@-]{1,60}", id in any::<i64>()) {
        prop_assert_eq!(login_candidates(&username, id).next().unwrap(), username);
    }

    /// After the plan, memberships are exactly `users` plus the existing local
    /// groups named like a GitLab path (case-sensitive); `users` is never removed, no group is
    /// created. Local users never reach the plan: it only takes the signing-in account's groups.
    #[test]
    fn sync_plan_gives_users_plus_exactly_the_matching_local_groups(
        names in prop::collection::btree_set(
            prop_oneof![
                Just("acme".to_string()), Just("ACME".to_string()), Just("acme/platform".to_string()),
                Just("Acme/Platform".to_string()), Just("manual".to_string()),
                Just("administrators".to_string()), r"[A-Za-z/]{1,5}",
            ],
            0..8,
        ),
        held_mask in prop::collection::vec(any::<bool>(), 9),
        paths in prop::collection::vec(
            prop_oneof![
                Just("acme".to_string()), Just("acme/platform".to_string()), Just("users".to_string()),
                Just("acme/PLATFORM".to_string()), r"[A-Za-z/]{1,5}",
            ],
            0..6,
        ),
    ) {
        let (all, current) = local_groups(names, &held_mask);
        let plan = group_sync_plan(&current, &all, &paths);

        let held: BTreeSet<i64> = current.iter().map(|g| g.id).collect();
        prop_assert!(!plan.remove.contains(&1), "removed users");
        prop_assert!(plan.remove.iter().all(|id| held.contains(id)));
        prop_assert!(plan.add.iter().all(|id| !held.contains(id) && all.iter().any(|g| g.id == *id)));
        let mut after = held;
        after.extend(&plan.add);
        for id in &plan.remove {
            after.remove(id);
        }
        let expected: BTreeSet<i64> = all
            .iter()
            .filter(|g| g.is_default || paths.contains(&g.name))
            .map(|g| g.id)
            .collect();
        prop_assert_eq!(after, expected);
    }

    /// Whatever local groups exist (the built-in `administrators` among them) and whatever the
    /// user already holds, a GitLab path outside every allowed group never adds a membership,
    /// and a held group named like no path under an allowed group is removed.
    #[test]
    fn a_path_outside_every_allowed_group_never_adds_a_membership(
        names in prop::collection::btree_set(
            prop_oneof![
                Just("administrators".to_string()), Just("acme".to_string()),
                Just("acme/platform".to_string()), Just("acme-other".to_string()),
                Just("beta/x".to_string()), Just("ACME/Platform".to_string()), r"[a-z/]{1,5}",
            ],
            0..8,
        ),
        held_mask in prop::collection::vec(any::<bool>(), 9),
        paths in prop::collection::vec(
            prop_oneof![
                Just("administrators".to_string()), Just("acme".to_string()),
                Just("acme/platform".to_string()), Just("ACME/Platform".to_string()),
                Just("acme-other".to_string()), Just("beta/x".to_string()),
                Just("administrators/acme".to_string()), r"[a-z/]{1,5}",
            ],
            0..6,
        ),
        allowed in prop::collection::vec(
            prop::sample::select(vec!["acme", "ACME", "beta", "acme-other", "a"]),
            0..3,
        ),
    ) {
        let allowed: Vec<String> = allowed.into_iter().map(str::to_string).collect();
        let (all, current) = local_groups(names, &held_mask);
        let plan = group_sync_plan(&current, &all, &synchronized_paths(&paths, &allowed));

        let under_allowed =
            |name: &str| !allowed.is_empty() && naive_allowed(&[name.to_string()], &allowed);
        for id in &plan.add {
            let group = all.iter().find(|g| g.id == *id).expect("an existing group");
            prop_assert!(
                group.is_default || under_allowed(&group.name),
                "{} joined with allowed groups {:?}", group.name, allowed
            );
        }
        let mut after: BTreeSet<i64> = current.iter().map(|g| g.id).collect();
        after.extend(&plan.add);
        for id in &plan.remove {
            after.remove(id);
        }
        let expected: BTreeSet<i64> = all
            .iter()
            .filter(|g| g.is_default || (under_allowed(&g.name) && paths.contains(&g.name)))
            .map(|g| g.id)
            .collect();
        prop_assert_eq!(after, expected);
    }
}
