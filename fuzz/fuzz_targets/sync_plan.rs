//! Group synchronization: applying `group_sync_plan` to a GitLab user's memberships gives
//! exactly the default group(s) plus every existing local group whose name equals a GitLab path
//! (case-sensitive); the default group is never removed, no group is created, nothing is added
//! twice or removed when not held. Local users are never given to the plan (the sign-in only
//! plans for the GitLab account it signs in), so they cannot be touched by it.
#![no_main]

use arbitrary::Arbitrary;
use labgate::provisioning::{group_sync_plan, LocalGroup};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

const NAMES: &[&str] = &[
    "users",
    "administrators",
    "acme",
    "ACME",
    "acme/platform",
    "Acme/Platform",
    "acme/x/y",
    "acme-other",
    "manual",
    "acme/",
    " acme",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Free(String),
}

impl Name {
    fn render(&self) -> String {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].to_string(),
            Name::Free(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Local groups: name, member now?  (The first is the default group `users`.)
    groups: Vec<(Name, bool)>,
    default_is_member: bool,
    gitlab_paths: Vec<Name>,
}

fuzz_target!(|input: Input| {
    let mut all = vec![LocalGroup {
        id: 1,
        name: "users".into(),
        is_default: true,
    }];
    let mut current = Vec::new();
    if input.default_is_member {
        current.push(all[0].clone());
    }
    let mut seen = BTreeSet::from(["users".to_string()]);
    for (name, member) in &input.groups {
        let name = name.render();
        if !seen.insert(name.clone()) {
            continue; // group names are unique
        }
        let g = LocalGroup {
            id: all.len() as i64 + 1,
            name,
            is_default: false,
        };
        if *member {
            current.push(g.clone());
        }
        all.push(g);
    }
    let paths: Vec<String> = input.gitlab_paths.iter().map(Name::render).collect();

    let plan = group_sync_plan(&current, &all, &paths);

    let held: BTreeSet<i64> = current.iter().map(|g| g.id).collect();
    let known: BTreeSet<i64> = all.iter().map(|g| g.id).collect();
    assert_eq!(
        plan.add.iter().collect::<BTreeSet<_>>().len(),
        plan.add.len(),
        "added twice"
    );
    assert_eq!(
        plan.remove.iter().collect::<BTreeSet<_>>().len(),
        plan.remove.len(),
        "removed twice"
    );
    for id in &plan.add {
        assert!(known.contains(id), "created a group");
        assert!(!held.contains(id), "added a held group");
    }
    for id in &plan.remove {
        assert!(held.contains(id), "removed a group not held");
        assert_ne!(*id, 1, "removed the default group");
    }
    let mut after = held.clone();
    after.extend(&plan.add);
    for id in &plan.remove {
        after.remove(id);
    }
    let expected: BTreeSet<i64> = all
        .iter()
        .filter(|g| g.is_default || paths.contains(&g.name))
        .map(|g| g.id)
        .collect();
    assert_eq!(after, expected, "current {current:?} paths {paths:?}");
});
