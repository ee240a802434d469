//! Automatic provisioning's decision, as a pure function: from what GitLab said of the allowed
//! groups ([`Read`]: the groups and their direct members) and what the store holds ([`Store`]:
//! the managed groups, the names of the groups made by hand, the GitLab accounts and their
//! memberships) to the writes of one run ([`Plan`]), and whether that run must wait for an
//! administrator ([`held`]). No I/O here: the run reads GitLab, reads the store, calls
//! [`plan`] and applies the plan in one transaction.
//!
//! The rules:
//! - **Who counts**: the direct members of every group read whose `state` is `active`, except
//!   GitLab's bots (the members of group and project access tokens, [`is_bot_username`]). A
//!   person's GitLab groups are their direct groups with every subgroup of those, as in the
//!   `groups` claim at sign-in.
//! - **Groups**: each group read has a local group named by its full path and managed by
//!   provisioning (found by GitLab id, so a renamed or moved GitLab group renames its local
//!   group and keeps its permissions); a managed group whose GitLab group was not read is
//!   deleted. A group made by hand is never renamed or deleted: a GitLab group whose path names
//!   one is not mirrored, and the run says so ([`Plan::warnings`]).
//! - **Accounts**: a person is matched by GitLab id, else by a GitLab account with the same
//!   username (ignoring case) and no id yet (pre-provisioned), which is linked; otherwise an
//!   account is created. Name and username are refreshed (the email comes from sign-in).
//! - **Activity**: an active GitLab account nobody read is deactivated (its sessions and
//!   tokens end); an account provisioning deactivated is reactivated when its person is read
//!   again; an account deactivated by anyone else stays deactivated and is left alone.
//! - **Memberships**: each active GitLab account read belongs to exactly the default group
//!   and the managed groups of its GitLab groups. Local accounts are never touched.

use super::{fast_set, FastSet};
use crate::model::{self, GroupName};
use std::collections::HashSet;

/// A hash map with `foldhash`'s hasher, as [`FastSet`].
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A GitLab group read: an allowed group or one of its descendants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadGroup {
    pub id: i64,
    pub full_path: String,
    pub parent_id: Option<i64>,
}

impl ReadGroup {
    pub fn new(id: i64, full_path: &str, parent_id: Option<i64>) -> ReadGroup {
        ReadGroup {
            id,
            full_path: full_path.to_string(),
            parent_id,
        }
    }
}

/// A direct member of a group read, as GitLab lists it (blocked people included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMember {
    pub group_id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    /// `active`, `blocked`, `deactivated`, ...
    pub state: String,
}

/// What one run read from GitLab.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    pub groups: Vec<ReadGroup>,
    pub members: Vec<ReadMember>,
}

/// A local group provisioning manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedGroup {
    pub id: i64,
    pub name: String,
    pub gitlab_id: i64,
}

/// Provisioning's mark on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Read by the last applied run.
    Read,
    /// Deactivated by provisioning.
    Deactivated,
}

/// A GitLab account of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    /// Names the account in the list of a held run.
    pub login: String,
    /// Compared with GitLab's name.
    pub name: String,
    pub active: bool,
    /// GitLab's numeric id as stored, when linked.
    pub gitlab_id: Option<String>,
    /// The GitLab username as stored.
    pub username: Option<String>,
    /// Provisioning's mark, if any: what it read or deactivated.
    pub mark: Option<Mark>,
}

/// What the store holds that a run compares with GitLab.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    pub default_group: i64,
    pub managed: Vec<ManagedGroup>,
    /// The names of the groups made by hand.
    pub hand_made: Vec<String>,
    /// Every GitLab account.
    pub accounts: Vec<Account>,
    /// Every membership of a GitLab account: (user id, group id).
    pub memberships: Vec<(i64, i64)>,
}

/// A group: one that exists, or the one the plan creates at this index of
/// [`Plan::groups_created`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupRef {
    Local(i64),
    New(usize),
}

/// An account: one that exists, or the one the plan creates at this index of
/// [`Plan::accounts_created`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountRef {
    Local(i64),
    New(usize),
}

/// A group to create, mirroring a GitLab group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    pub gitlab_id: i64,
    pub name: String,
}

/// An account's profile as GitLab has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub gitlab_id: i64,
    pub username: String,
    /// GitLab's name when it is a valid name, else the username.
    pub name: String,
}

/// An account to deactivate, named for the log and for an administrator deciding on a held run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivation {
    pub id: i64,
    pub login: String,
    pub username: Option<String>,
}

/// How much a run changes, as its record shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub users_created: usize,
    pub users_updated: usize,
    pub users_deactivated: usize,
    pub users_reactivated: usize,
    pub groups_created: usize,
    pub groups_deleted: usize,
    pub memberships_added: usize,
    pub memberships_removed: usize,
}

impl Changes {
    /// Nothing to write.
    pub fn none(&self) -> bool {
        *self == Changes::default()
    }
}

/// The writes of one run, in the order they are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Managed groups whose GitLab group was not read (their memberships go with them).
    pub groups_deleted: Vec<i64>,
    /// Managed groups whose GitLab group changed its full path: the new name.
    pub groups_renamed: Vec<(i64, String)>,
    pub groups_created: Vec<NewGroup>,
    pub accounts_created: Vec<Profile>,
    /// Accounts linked (pre-provisioned) or whose name or username changed on GitLab.
    pub profiles: Vec<(i64, Profile)>,
    pub reactivated: Vec<i64>,
    pub deactivated: Vec<Deactivation>,
    pub memberships_removed: Vec<(i64, i64)>,
    pub memberships_added: Vec<(AccountRef, GroupRef)>,
    /// Accounts read whose mark is not [`Mark::Read`] yet (new and reactivated ones included).
    pub marked_read: Vec<AccountRef>,
    /// What the run could not do and why (a GitLab group named like a group made by hand).
    pub warnings: Vec<String>,
    pub groups_read: usize,
    /// People read: active, not bots.
    pub users_read: usize,
    /// Active GitLab accounts before the run: what [`held`] compares deactivations with.
    pub active_accounts: usize,
}

impl Plan {
    pub fn changes(&self) -> Changes {
        Changes {
            users_created: self.accounts_created.len(),
            users_updated: self.profiles.len(),
            users_deactivated: self.deactivated.len(),
            users_reactivated: self.reactivated.len(),
            groups_created: self.groups_created.len(),
            groups_deleted: self.groups_deleted.len(),
            memberships_added: self.memberships_added.len(),
            memberships_removed: self.memberships_removed.len(),
        }
    }
}

/// GitLab's bot accounts among group members: those of group and project access tokens,
/// `group_<id>_bot_<hex>` and `project_<id>_bot_<hex>` (the member list carries no bot flag).
pub fn is_bot_username(username: &str) -> bool {
    ["group_", "project_"].iter().any(|prefix| {
        username
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once("_bot"))
            .is_some_and(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether a run that deactivates `deactivations` of the `active` GitLab accounts must wait for
/// an administrator: more than 5 of them, and more than `max_percent` percent. `approved`:
/// the accounts an administrator already agreed to deactivate (applying a held run); a run
/// deactivating only those is not held again.
pub fn held(plan: &Plan, max_percent: i64, approved: Option<&HashSet<i64>>) -> bool {
    let count = plan.deactivated.len();
    if let Some(approved) = approved {
        if plan.deactivated.iter().all(|d| approved.contains(&d.id)) {
            return false;
        }
    }
    let share = i128::try_from(count).unwrap_or(i128::MAX) * 100;
    let bound = i128::from(max_percent) * i128::try_from(plan.active_accounts).unwrap_or(0);
    count > 5 && share > bound
}

/// The plan of a run: see the rules at the top of this module.
pub fn plan(read: &Read, store: &Store) -> Plan {
    let mut plan = Plan {
        groups_read: read.groups.len(),
        active_accounts: store.accounts.iter().filter(|a| a.active).count(),
        ..Plan::default()
    };
    let local_of = plan_groups(read, store, &mut plan);
    let people = people_of(read);
    plan.users_read = people.len();
    let subtrees = Subtrees::of(&read.groups);
    let current = memberships_by_account(store);
    let accounts = Accounts::of(&store.accounts);
    let deleted = fast_set(plan.groups_deleted.iter().copied());
    let mut seen: FastSet<i64> =
        FastSet::with_capacity_and_hasher(people.len(), Default::default());
    // Reused from one person to the next: most people need no allocation of their own.
    let mut closure = Closure::default();
    let mut wanted: Vec<GroupRef> = Vec::new();
    for person in &people {
        let name = model::validate_name(person.name).ok();
        let name = name.as_deref().unwrap_or(person.username);
        let profile = || Profile {
            gitlab_id: person.id,
            username: person.username.to_string(),
            name: name.to_string(),
        };
        wanted.clear();
        wanted.push(GroupRef::Local(store.default_group));
        subtrees.closure(&person.groups, &mut closure);
        wanted.extend(
            closure
                .groups
                .iter()
                .filter_map(|g| local_of.get(g).copied()),
        );
        wanted.sort_unstable();
        wanted.dedup();
        let account = match accounts.find(person.id, person.username) {
            None => {
                let new = AccountRef::New(plan.accounts_created.len());
                plan.accounts_created.push(profile());
                plan.marked_read.push(new);
                add_memberships(&mut plan, new, &wanted, &[store.default_group]);
                continue;
            }
            Some(account) => account,
        };
        seen.insert(account.id);
        let held_now: &[i64] = match (account.active, account.mark) {
            (true, _) => current.get(&account.id).map_or(&[], Vec::as_slice),
            (false, Some(Mark::Deactivated)) => {
                plan.reactivated.push(account.id);
                std::slice::from_ref(&store.default_group)
            }
            // Deactivated by someone else: left as it is.
            (false, _) => continue,
        };
        let same = account.name == name
            && account.username.as_deref() == Some(person.username)
            && account.gitlab_id.as_deref().and_then(|id| id.parse().ok()) == Some(person.id);
        if !same {
            plan.profiles.push((account.id, profile()));
        }
        if !(account.active && account.mark == Some(Mark::Read)) {
            plan.marked_read.push(AccountRef::Local(account.id));
        }
        for &group in held_now {
            if !wanted.contains(&GroupRef::Local(group)) && !deleted.contains(&group) {
                plan.memberships_removed.push((account.id, group));
            }
        }
        add_memberships(&mut plan, AccountRef::Local(account.id), &wanted, held_now);
    }
    for account in &store.accounts {
        if account.active && !seen.contains(&account.id) {
            plan.deactivated.push(Deactivation {
                id: account.id,
                login: account.login.clone(),
                username: account.username.clone(),
            });
        }
    }
    // Existing accounts and groups first, by id; then the new ones, in plan order.
    plan.memberships_added.sort_unstable();
    plan.memberships_removed.sort_unstable();
    plan
}

/// Adds the memberships of `wanted` that `account` does not hold yet.
fn add_memberships(plan: &mut Plan, account: AccountRef, wanted: &[GroupRef], held: &[i64]) {
    for group in wanted {
        let already = matches!(group, GroupRef::Local(id) if held.contains(id));
        if !already {
            plan.memberships_added.push((account, *group));
        }
    }
}

/// A person read: an active direct member of some group, not a bot.
struct Person<'a> {
    id: i64,
    username: &'a str,
    name: &'a str,
    /// Their direct groups.
    groups: Vec<i64>,
}

/// The people read, by GitLab id, in the order they were first listed.
fn people_of(read: &Read) -> Vec<Person<'_>> {
    let mut people: Vec<Person<'_>> = Vec::new();
    let mut index: Map<i64, usize> = Map::default();
    for m in &read.members {
        if m.state != "active" || is_bot_username(&m.username) {
            continue;
        }
        match index.get(&m.user_id) {
            Some(&i) => people[i].groups.push(m.group_id),
            None => {
                index.insert(m.user_id, people.len());
                people.push(Person {
                    id: m.user_id,
                    username: &m.username,
                    name: &m.name,
                    groups: vec![m.group_id],
                });
            }
        }
    }
    people
}

/// A person's GitLab groups ([`Subtrees::closure`]), in buffers kept from one person to the next.
#[derive(Default)]
struct Closure {
    groups: Vec<i64>,
    seen: FastSet<i64>,
    stack: Vec<i64>,
}

/// The groups read below each group read.
struct Subtrees {
    children: Map<i64, Vec<i64>>,
    known: FastSet<i64>,
}

impl Subtrees {
    fn of(groups: &[ReadGroup]) -> Subtrees {
        let mut children: Map<i64, Vec<i64>> = Map::default();
        for g in groups {
            if let Some(parent) = g.parent_id {
                children.entry(parent).or_default().push(g.id);
            }
        }
        Subtrees {
            children,
            known: groups.iter().map(|g| g.id).collect(),
        }
    }

    /// `direct` and every group read below one of them, each once, into `out.groups`.
    fn closure(&self, direct: &[i64], out: &mut Closure) {
        out.groups.clear();
        out.seen.clear();
        out.stack.clear();
        out.stack.extend_from_slice(direct);
        while let Some(g) = out.stack.pop() {
            if !self.known.contains(&g) || !out.seen.insert(g) {
                continue;
            }
            out.groups.push(g);
            if let Some(kids) = self.children.get(&g) {
                out.stack.extend(kids);
            }
        }
    }
}

/// The memberships held, by account.
fn memberships_by_account(store: &Store) -> Map<i64, Vec<i64>> {
    let mut by: Map<i64, Vec<i64>> = Map::default();
    for &(user, group) in &store.memberships {
        by.entry(user).or_default().push(group);
    }
    by
}

/// The accounts as a person is matched to one.
struct Accounts<'a> {
    by_gitlab_id: Map<i64, &'a Account>,
    /// Accounts with a GitLab username and no id yet, by lower-cased username (the oldest).
    unlinked: Map<String, &'a Account>,
}

impl<'a> Accounts<'a> {
    fn of(accounts: &'a [Account]) -> Accounts<'a> {
        let mut by_gitlab_id = Map::with_capacity_and_hasher(accounts.len(), Default::default());
        let mut unlinked: Map<String, &'a Account> = Map::default();
        for a in accounts {
            match (&a.gitlab_id, &a.username) {
                (Some(id), _) => {
                    if let Ok(id) = id.parse::<i64>() {
                        by_gitlab_id.insert(id, a);
                    }
                }
                (None, Some(username)) => {
                    let entry = unlinked.entry(username.to_lowercase()).or_insert(a);
                    if a.id < entry.id {
                        *entry = a;
                    }
                }
                (None, None) => {}
            }
        }
        Accounts {
            by_gitlab_id,
            unlinked,
        }
    }

    fn find(&self, gitlab_id: i64, username: &str) -> Option<&'a Account> {
        self.by_gitlab_id
            .get(&gitlab_id)
            .or_else(|| self.unlinked.get(&username.to_lowercase()))
            .copied()
    }
}

/// Decides the groups' writes; returns the local group of each GitLab group mirrored.
fn plan_groups(read: &Read, store: &Store, plan: &mut Plan) -> Map<i64, GroupRef> {
    let hand_made: FastSet<&str> = store.hand_made.iter().map(String::as_str).collect();
    let managed: Map<i64, &ManagedGroup> = store.managed.iter().map(|m| (m.gitlab_id, m)).collect();
    let read_ids: FastSet<i64> = read.groups.iter().map(|g| g.id).collect();
    for m in &store.managed {
        if !read_ids.contains(&m.gitlab_id) {
            plan.groups_deleted.push(m.id);
        }
    }
    // The name each managed group read ends with: its full path, unless a group made by hand
    // holds that name (then it keeps its own), or another group ends with it.
    let mut finals: Vec<(i64, &ManagedGroup, String)> = Vec::new();
    let mut unmirrored: Vec<&ReadGroup> = Vec::new();
    for g in &read.groups {
        let valid = GroupName::parse(&g.full_path).is_ok_and(|n| n.as_str() == g.full_path);
        match managed.get(&g.id) {
            Some(m) if valid && !hand_made.contains(g.full_path.as_str()) => {
                finals.push((g.id, m, g.full_path.clone()))
            }
            Some(m) => {
                plan.warnings
                    .push(name_warning(&g.full_path, valid, Some(&m.name)));
                finals.push((g.id, m, m.name.clone()));
            }
            None if valid => unmirrored.push(g),
            None => plan.warnings.push(name_warning(&g.full_path, false, None)),
        }
    }
    loop {
        let mut count: Map<&str, usize> = Map::default();
        for (_, _, name) in &finals {
            *count.entry(name.as_str()).or_default() += 1;
        }
        let clash: Vec<usize> = finals
            .iter()
            .enumerate()
            .filter(|(_, (_, m, name))| count[name.as_str()] > 1 && *name != m.name)
            .map(|(i, _)| i)
            .collect();
        if clash.is_empty() {
            break;
        }
        for i in clash {
            let (_, m, name) = &mut finals[i];
            plan.warnings.push(format!(
                "GitLab group {name}: another group already ends with this name; the group \
                 {} keeps its name",
                m.name
            ));
            *name = m.name.clone();
        }
    }
    let mut local_of: Map<i64, GroupRef> =
        Map::with_capacity_and_hasher(read.groups.len(), Default::default());
    let mut taken: FastSet<String> = FastSet::default();
    for (gitlab_id, m, name) in finals {
        if name != m.name {
            plan.groups_renamed.push((m.id, name.clone()));
        }
        taken.insert(name);
        local_of.insert(gitlab_id, GroupRef::Local(m.id));
    }
    for g in unmirrored {
        if hand_made.contains(g.full_path.as_str()) || taken.contains(&g.full_path) {
            plan.warnings.push(name_warning(&g.full_path, true, None));
            continue;
        }
        taken.insert(g.full_path.clone());
        local_of.insert(g.id, GroupRef::New(plan.groups_created.len()));
        plan.groups_created.push(NewGroup {
            gitlab_id: g.id,
            name: g.full_path.clone(),
        });
    }
    local_of
}

/// Why a GitLab group is not mirrored under its full path; `kept`: the name its managed group
/// keeps.
fn name_warning(full_path: &str, valid: bool, kept: Option<&str>) -> String {
    let why = if valid {
        "a group made by hand has this name: rename or delete that group to let provisioning \
         mirror this one"
    } else {
        "its full path is not a valid group name (1 to 255 characters)"
    };
    match kept {
        Some(name) => format!("GitLab group {full_path}: {why}; its group keeps the name {name}"),
        None => format!("GitLab group {full_path} is not mirrored: {why}"),
    }
}

#[cfg(test)]
mod tests;
