//! The GitLab sign-in rules as pure functions: the scopes to ask for, allowed-group matching,
//! finding or linking the account, sign-up, login generation, which GitLab paths group
//! synchronization may take and its plan, and the refusal reasons. [`decide`] puts them
//! together: from what GitLab said ([`Claims`]), the configuration ([`Policy`]) and what the
//! store holds ([`Stored`]) it returns the [`Decision`]: admit with the exact writes to make,
//! or refuse with the reason. No I/O here; the sign-in reads the facts and applies the
//! decision.

use crate::model::{self, FieldError, GroupPaths, Login, PathList};
use std::collections::HashSet;

/// The scopes asked of GitLab, whatever the settings (defined where the connection check,
/// which makes sure GitLab offers them, can use them too).
pub use crate::gitlab::check::SIGN_IN_SCOPES as SCOPES;

/// Whether the refresh token of a sign-in may be kept (for the revalidation): the token GitLab
/// granted carries no scope beyond [`SCOPES`], or GitLab did not say which it granted (it then
/// granted those asked for). A token that could read more than who the person is is never
/// stored, even sealed.
pub fn keeps_refresh_token(granted: Option<&[String]>) -> bool {
    granted.is_none_or(|scopes| {
        scopes
            .iter()
            .all(|scope| SCOPES.split(' ').any(|asked| asked == scope))
    })
}

/// Passes when allowed groups are empty, or some GitLab group path equals an allowed entry or
/// lies below it (`acme` admits `acme/x/y`, not `acme-other`). Ignores case: GitLab paths are
/// unique regardless of case.
pub fn in_allowed_groups<P: PathList + ?Sized>(user_groups: &P, allowed_groups: &[String]) -> bool {
    allowed_groups.is_empty() || admitted_by(user_groups, allowed_groups).is_some()
}

/// The GitLab paths group synchronization takes: those that equal an allowed group or lie below
/// one, matched as [`in_allowed_groups`] does, in their order. Every other path is dropped,
/// whatever local group bears its name: anyone may create a top-level GitLab group, and one
/// named `administrators` must not make its members labgate administrators. Without allowed
/// groups no path is taken, which is why synchronization needs at least one.
pub fn synchronized_paths<'a, P: PathList + ?Sized>(
    gitlab_paths: &'a P,
    allowed_groups: &[String],
) -> Vec<&'a str> {
    let allowed = allowed_prefixes(allowed_groups);
    gitlab_paths
        .paths()
        .filter(|path| under_allowed(path, &allowed))
        .collect()
}

/// The first GitLab path that admits by the allowed groups (matched as [`in_allowed_groups`]
/// does), looking no further than it: `None` when none does or none is set.
pub fn admitted_by<'a, P: PathList + ?Sized>(
    user_groups: &'a P,
    allowed_groups: &[String],
) -> Option<&'a str> {
    let allowed = allowed_prefixes(allowed_groups);
    user_groups
        .paths()
        .find(|path| under_allowed(path, &allowed))
}

/// Whether sign-in synchronizes groups: the setting is on and some allowed group bounds what it
/// may take. On without an allowed group (a configuration stored before this rule) it would
/// take nothing, so it is treated as off: memberships are left as they are and stay editable.
pub fn synchronizes(synchronize_groups: bool, allowed_groups: &[String]) -> bool {
    synchronize_groups && !allowed_groups.is_empty()
}

/// Whether a change of "Synchronize user groups" and the allowed groups, from `before` to
/// `after` (each: the flag, the allowed groups), must be refused: it leaves synchronization on
/// with no allowed group, where it could take no GitLab group at all. A configuration already
/// in that state (stored before this rule) is not refused for changes that leave both as they
/// are, so that its other settings stay editable.
pub fn sync_change_refused(before: (bool, &[String]), after: (bool, &[String])) -> bool {
    let lacks_allowed_group = |(sync, allowed): (bool, &[String])| sync && allowed.is_empty();
    lacks_allowed_group(after) && !lacks_allowed_group(before)
}

/// Whether a change of automatic provisioning, its token and the allowed groups, from `before`
/// to `after` (each: on, a token stored, the allowed groups), must be refused: it leaves
/// automatic provisioning on without the token it reads GitLab with, or without an allowed
/// group to read. A configuration already in that state is not refused for changes that keep
/// it so, as with [`sync_change_refused`].
pub fn auto_change_refused(
    before: (bool, bool, &[String]),
    after: (bool, bool, &[String]),
) -> bool {
    let lacks =
        |(on, token, allowed): (bool, bool, &[String])| on && (!token || allowed.is_empty());
    lacks(after) && !lacks(before)
}

/// Allowed entries as compared: trimmed of spaces and `/`, in lower case. An entry left empty
/// admits nobody, so it is dropped.
fn allowed_prefixes(allowed_groups: &[String]) -> Vec<String> {
    allowed_groups
        .iter()
        .map(|allowed| allowed.trim().trim_matches('/').to_ascii_lowercase())
        .filter(|allowed| !allowed.is_empty())
        .collect()
}

/// `path` equals one of `allowed` (from [`allowed_prefixes`]) or starts with it and a `/`,
/// ignoring ASCII case. GitLab paths and allowed groups are ASCII (letters, digits, `-`, `_`,
/// `.`): a byte comparison needs no lowered copy of each of a person's many paths, and a
/// character outside ASCII matches only itself.
fn under_allowed(path: &str, allowed: &[String]) -> bool {
    let path = path.as_bytes();
    allowed.iter().any(|a| {
        let a = a.as_bytes();
        path.len() >= a.len()
            && path[..a.len()].eq_ignore_ascii_case(a)
            && (path.len() == a.len() || path[a.len()] == b'/')
    })
}

/// Validates an "Allowed groups" entry: a GitLab root group slug as it appears in the URL.
pub fn parse_allowed_group(raw: &str) -> Result<String, FieldError> {
    let slug = raw.trim().trim_matches('/');
    let valid = !slug.is_empty()
        && slug.len() <= 255
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        let message = if slug.contains('/') {
            format!("'{slug}' is not a root group: enter the top-level group slug only (such as 'acme' for 'acme/platform')")
        } else {
            format!("'{slug}' is not a GitLab group slug (letters, digits, '-', '_' and '.')")
        };
        return Err(FieldError::new("allowedGroups", message));
    }
    Ok(slug.to_string())
}

/// A local account as the linking rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub active: bool,
    /// The GitLab numeric id stored on the account, if any.
    pub gitlab_id: Option<String>,
    /// The GitLab username stored on the account.
    pub gitlab_username: Option<String>,
    pub name: String,
    pub email: Option<String>,
}

impl Account {
    /// Whether the account already holds `profile`, to the byte.
    fn profile_is(&self, profile: &Profile) -> bool {
        self.name == profile.name
            && self.email == profile.email
            && self.gitlab_username.as_deref() == Some(profile.username.as_str())
            && self.gitlab_id.as_deref() == Some(profile.gitlab_id.as_str())
    }
}

/// Which account this GitLab identity signs in to: by GitLab id, else a pre-provisioned
/// account by username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Found by GitLab numeric id.
    Existing(i64),
    /// A pre-provisioned account (GitLab username, no id yet) to link now.
    Link(i64),
    /// No account: a new one would be created.
    New,
}

/// `by_id`: the account with this GitLab id. `by_username`: a GitLab account whose external
/// identity equals the username (ignoring case). Refuses a username whose account carries another id.
pub fn find_account(
    by_id: Option<&Account>,
    by_username: Option<&Account>,
    gitlab_username: &str,
) -> Result<Found, Refusal> {
    if let Some(account) = by_id {
        return Ok(Found::Existing(account.id));
    }
    match by_username {
        Some(account) if account.gitlab_id.is_none() => Ok(Found::Link(account.id)),
        Some(_) => Err(Refusal::IdMismatch(gitlab_username.to_string())),
        None => Ok(Found::New),
    }
}

/// Logins to try, in order, for a new account: the username (made valid), then
/// `<username>-gitlab`, then `<username>-gitlab-2`, `-3`...
pub fn login_candidates(gitlab_username: &str, gitlab_id: i64) -> impl Iterator<Item = String> {
    let cleaned: String = gitlab_username
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        .collect();
    let cleaned = cleaned
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(240)
        .collect::<String>();
    let base = if Login::parse(&cleaned).is_ok() {
        cleaned
    } else {
        format!("gitlab-user-{gitlab_id}")
    };
    let first = base.clone();
    std::iter::once(first)
        .chain(std::iter::once(format!("{base}-gitlab")))
        .chain((2..).map(move |n| format!("{base}-gitlab-{n}")))
}

/// A local group as the synchronization sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalGroup {
    pub id: i64,
    pub name: String,
    pub is_default: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub add: Vec<i64>,
    pub remove: Vec<i64>,
}

/// Memberships become exactly the default group plus every existing local group whose name
/// equals one of the GitLab paths (case-sensitive, as GitLab shows them). Never creates groups;
/// never removes the default group. The paths given are those [`synchronized_paths`] kept: the
/// plan trusts every one of them.
///
/// The groups that could be wanted are the `current` memberships and `local_groups`, which
/// needs to hold only the other groups named like a GitLab path, and the default group (the
/// sign-in looks up just the paths that name no current membership); any other group in it is
/// ignored, and a group in both lists counts once. `add` follows the order of `local_groups`
/// (each group once), `remove` that of `current`. Linear in the sizes of the three lists; the
/// sets use `foldhash`, seeded at random, as paths come from GitLab.
pub fn group_sync_plan<P: AsRef<str>>(
    current: &[LocalGroup],
    local_groups: &[LocalGroup],
    gitlab_paths: &[P],
) -> SyncPlan {
    let paths: FastSet<&str> = fast_set(gitlab_paths.iter().map(AsRef::as_ref));
    let mut wanted_ids =
        FastSet::with_capacity_and_hasher(current.len() + local_groups.len(), Default::default());
    let current_ids: FastSet<i64> = fast_set(current.iter().map(|c| c.id));
    let mut add = Vec::new();
    for g in current.iter().chain(local_groups) {
        if (g.is_default || paths.contains(g.name.as_str()))
            && wanted_ids.insert(g.id)
            && !current_ids.contains(&g.id)
        {
            add.push(g.id);
        }
    }
    let remove = current
        .iter()
        .filter(|c| !c.is_default && !wanted_ids.contains(&c.id))
        .map(|c| c.id)
        .collect();
    SyncPlan { add, remove }
}

/// A hash set with `foldhash`'s hasher (fast on short keys; randomly seeded).
pub type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// Collects `items` into a [`FastSet`] sized for them.
pub fn fast_set<T: Eq + std::hash::Hash>(items: impl ExactSizeIterator<Item = T>) -> FastSet<T> {
    let mut set = FastSet::with_capacity_and_hasher(items.len(), Default::default());
    set.extend(items);
    set
}

/// Why a GitLab sign-in was refused. The texts shown are SonarQube's, word for word, so that
/// people and scripts who know them recognise them (README, "What a refusal means").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotInAllowedGroups,
    SignUpDisabled,
    EmailTaken,
    IdMismatch(String),
    Deactivated,
    /// State/CSRF failure, GitLab error, misconfiguration: no reason shown; details in the log.
    Generic,
}

impl Refusal {
    pub fn reason(&self) -> Option<String> {
        Some(match self {
            Refusal::NotInAllowedGroups => "You are not allowed to authenticate".into(),
            Refusal::SignUpDisabled => "'gitlab' users are not allowed to sign up".into(),
            Refusal::EmailTaken => "This account is already associated with another authentication method. Sign in using the current authentication method, or contact your administrator to transfer your account to a different authentication method.".into(),
            Refusal::IdMismatch(username) => format!("Failed to authenticate with login '{username}'"),
            Refusal::Deactivated => "Your account is deactivated. Please contact your administrator.".into(),
            Refusal::Generic => return None,
        })
    }

    /// A short code for metric labels and audit events.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotInAllowedGroups => "not-in-allowed-group",
            Refusal::SignUpDisabled => "sign-up-disabled",
            Refusal::EmailTaken => "email-taken",
            Refusal::IdMismatch(_) => "id-mismatch",
            Refusal::Deactivated => "deactivated",
            Refusal::Generic => "error",
        }
    }

    /// Short tag for the sign-in log line.
    pub fn tag(&self) -> &'static str {
        match self {
            Refusal::NotInAllowedGroups => "not in allowed groups",
            Refusal::SignUpDisabled => "sign-up disabled",
            Refusal::EmailTaken => "email used by another account",
            Refusal::IdMismatch(_) => "username linked to another GitLab id",
            Refusal::Deactivated => "account deactivated",
            Refusal::Generic => "error",
        }
    }
}

/// Sign-up and deactivation: may this sign-in go on, given the account found?
pub fn admission(
    found: &Found,
    account_active: bool,
    sign_up_allowed: bool,
) -> Result<(), Refusal> {
    match found {
        Found::New if !sign_up_allowed => Err(Refusal::SignUpDisabled),
        Found::Existing(_) | Found::Link(_) if !account_active => Err(Refusal::Deactivated),
        _ => Ok(()),
    }
}

/// What the identity provider said about the person signing in: GitLab's OIDC userinfo fills
/// it. Userinfo serves active GitLab accounts only, and a bot account cannot complete a browser
/// sign-in, so whoever the claims describe is an active person on GitLab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The provider's stable numeric id of the account (> 0).
    pub id: i64,
    /// Non-empty; unique on the provider regardless of case.
    pub username: String,
    /// As the provider has it; may be empty (the username stands in for it).
    pub name: String,
    /// The email, unchecked, only when the provider says it is verified; `None` otherwise.
    pub email: Option<String>,
    /// The full paths of the groups the account belongs to, directly or through a parent
    /// group.
    pub groups: GroupPaths,
}

/// The GitLab configuration as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy<'a> {
    /// A GitLab account with no local account may create one.
    pub allow_sign_up: bool,
    /// The "Synchronize user groups" setting (see [`synchronizes`]).
    pub synchronize_groups: bool,
    pub allowed_groups: &'a [String],
    /// Automatic provisioning: accounts and memberships follow what provisioning read from
    /// GitLab, and only its accounts may sign in ([`provisioned_admission`]).
    pub auto_provisioning: bool,
}

impl Policy<'_> {
    /// See [`synchronizes`]; never with automatic provisioning, which sets the memberships
    /// itself.
    pub fn synchronizes(&self) -> bool {
        !self.auto_provisioning && synchronizes(self.synchronize_groups, self.allowed_groups)
    }
}

/// Sign-in under automatic provisioning: the account of this GitLab id (`by_id`), active and
/// read by provisioning (`provisioned`), may sign in; anyone else is refused as outside the
/// allowed groups (no account is created or linked at sign-in).
pub fn provisioned_admission(by_id: Option<&Account>, provisioned: bool) -> Result<i64, Refusal> {
    match by_id {
        Some(account) if account.active && provisioned => Ok(account.id),
        _ => Err(Refusal::NotInAllowedGroups),
    }
}

/// The email an account takes from the claims: the provider's, when it is a valid email
/// ([`model::validate_email`]); none otherwise.
pub fn claimed_email(claims: &Claims) -> Option<String> {
    let email = claims.email.as_deref()?;
    model::validate_email(email).ok().flatten()
}

/// What the store holds that [`decide`] consults, read in the sign-in's write transaction so
/// that no other write comes between the reading and the writes the decision makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The GitLab account linked to this GitLab id.
    pub by_id: Option<Account>,
    /// A GitLab account whose username is this one, ignoring case, and whose GitLab id is not
    /// this one, preferring one not linked to any id yet (a pre-provisioned account). Need not
    /// be read when `by_id` was found: that account is the one signed in to.
    pub by_username: Option<Account>,
    /// Accounts whose email is [`claimed_email`], ignoring case: at most two, which tells
    /// whether an account other than the one signed in to holds it.
    pub email_holders: Vec<i64>,
    /// The first of [`login_candidates`] that no account holds, for a new account; read when
    /// no account was found, `None` when none of the first thousand is free.
    pub free_login: Option<String>,
    pub groups: StoredGroups,
    /// Under automatic provisioning: `by_id` was read by provisioning in its last applied run
    /// (read only then).
    pub provisioned: bool,
}

/// The memberships, as group synchronization needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoredGroups {
    /// Not read: synchronization is off ([`Policy::synchronizes`]).
    #[default]
    NotRead,
    /// The account's memberships are what synchronizing the same paths made (the digest of
    /// [`paths_digest`] stored then matches), and nothing they depend on changed since.
    InSync,
    /// The account's `current` memberships (none for a new account) and the local groups
    /// synchronization may add: the default group and those named like a kept GitLab path
    /// that no current membership names (see [`group_sync_plan`]).
    Memberships {
        current: Vec<LocalGroup>,
        candidates: Vec<LocalGroup>,
    },
}

/// The outcome of a GitLab sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let in: make these writes, then start a session.
    Admit(Admission),
    Refuse(Refused),
}

/// A refused sign-in: the reason, and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub detail: String,
}

impl Refused {
    pub fn new(refusal: Refusal, detail: impl Into<String>) -> Refused {
        Refused {
            refusal,
            detail: detail.into(),
        }
    }
}

/// The writes of an admitted sign-in, before its session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub account: AccountWrite,
    /// The memberships to change and the digest to record; `None` leaves them as they are
    /// (synchronization off, or nothing changed since the last one).
    pub groups: Option<GroupSync>,
}

/// What becomes of the account signed in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountWrite {
    /// A new GitLab account with this login (a member of the default group from its creation).
    Create { login: String, profile: Profile },
    /// A pre-provisioned account (the GitLab username, no id yet) linked to the GitLab id for
    /// good, its profile taken from GitLab.
    Link { id: i64, profile: Profile },
    /// The account of this GitLab id, its profile changed on GitLab.
    Refresh { id: i64, profile: Profile },
    /// The account of this GitLab id, its profile as GitLab has it: nothing is written, as an
    /// UPDATE that sets an indexed column rewrites its index entries even to the same value.
    Unchanged { id: i64 },
}

/// An account's profile as GitLab has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// GitLab's name when it is a valid name ([`model::validate_name`]), else the username.
    pub name: String,
    /// [`claimed_email`].
    pub email: Option<String>,
    pub username: String,
    /// GitLab's numeric id, as stored.
    pub gitlab_id: String,
}

/// A group synchronization to apply: memberships to add and remove (group ids), and the digest
/// of the paths it took, recorded so that the next sign-in with the same paths may skip it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSync {
    pub add: Vec<i64>,
    pub remove: Vec<i64>,
    pub digest: [u8; 16],
}

/// The GitLab sign-in decision, the rules in the order they apply:
/// 1. outside every allowed group (when some are set), refused;
/// 2. the account: the one of this GitLab id, else a pre-provisioned one by username; a
///    username held by an account of another GitLab id is refused ([`find_account`]); under
///    automatic provisioning, only an active account of this GitLab id that provisioning read
///    ([`provisioned_admission`]);
/// 3. no account and sign-up off, or a deactivated account: refused ([`admission`]);
/// 4. an email (when valid) that another account holds: refused;
/// 5. admitted: the account is created, linked, refreshed or left as it is, and with group
///    synchronization on, its memberships follow the kept GitLab paths ([`group_sync_plan`]).
pub fn decide(claims: &Claims, policy: &Policy<'_>, stored: &Stored) -> Decision {
    match admit(claims, policy, stored) {
        Ok(admission) => Decision::Admit(admission),
        Err(refused) => Decision::Refuse(refused),
    }
}

fn admit(claims: &Claims, policy: &Policy<'_>, stored: &Stored) -> Result<Admission, Refused> {
    if !in_allowed_groups(&claims.groups, policy.allowed_groups) {
        return Err(Refused::new(
            Refusal::NotInAllowedGroups,
            "no allowed group",
        ));
    }
    let rule = |refusal| Refused::new(refusal, "sign-in rule");
    let (by_id, by_username) = (stored.by_id.as_ref(), stored.by_username.as_ref());
    let found = if policy.auto_provisioning {
        let id = provisioned_admission(by_id, stored.provisioned)
            .map_err(|refusal| Refused::new(refusal, "not an active account of provisioning"))?;
        Found::Existing(id)
    } else {
        let found = find_account(by_id, by_username, &claims.username).map_err(rule)?;
        let active = by_id.or(by_username).is_none_or(|a| a.active);
        admission(&found, active, policy.allow_sign_up).map_err(rule)?;
        found
    };
    let profile = Profile {
        name: model::validate_name(&claims.name).unwrap_or_else(|_| claims.username.clone()),
        email: claimed_email(claims),
        username: claims.username.clone(),
        gitlab_id: claims.id.to_string(),
    };
    let own = match found {
        Found::Existing(id) | Found::Link(id) => Some(id),
        Found::New => None,
    };
    let held_by_another = stored.email_holders.iter().any(|&h| Some(h) != own);
    if profile.email.is_some() && held_by_another {
        return Err(rule(Refusal::EmailTaken));
    }
    let account = match (found, by_id) {
        (Found::New, _) => match &stored.free_login {
            Some(login) => AccountWrite::Create {
                login: login.clone(),
                profile,
            },
            None => return Err(Refused::new(Refusal::Generic, "no free login")),
        },
        (Found::Link(id), _) => AccountWrite::Link { id, profile },
        (Found::Existing(id), Some(stored)) if stored.profile_is(&profile) => {
            AccountWrite::Unchanged { id }
        }
        (Found::Existing(id), _) => AccountWrite::Refresh { id, profile },
    };
    let created = matches!(account, AccountWrite::Create { .. });
    let groups = group_sync(claims, policy, &stored.groups, created);
    Ok(Admission { account, groups })
}

/// The synchronization of an admitted sign-in (see [`StoredGroups`]); `created`: the account
/// is new, and so a member of the default group only.
fn group_sync(
    claims: &Claims,
    policy: &Policy<'_>,
    stored: &StoredGroups,
    created: bool,
) -> Option<GroupSync> {
    let StoredGroups::Memberships {
        current,
        candidates,
    } = stored
    else {
        return None;
    };
    if !policy.synchronizes() {
        return None;
    }
    let paths = synchronized_paths(&claims.groups, policy.allowed_groups);
    let default: Vec<LocalGroup>;
    let current = if created {
        default = candidates
            .iter()
            .filter(|g| g.is_default)
            .cloned()
            .collect();
        &default
    } else {
        current
    };
    let plan = group_sync_plan(current, candidates, &paths);
    Some(GroupSync {
        add: plan.add,
        remove: plan.remove,
        digest: paths_digest(&paths),
    })
}

/// Digest of a set of GitLab paths: SHA-256 of the sorted, distinct paths, each preceded by its
/// length, truncated to 128 bits (compared with the stored one only: a forged match would need
/// a second preimage).
pub fn paths_digest(paths: &[&str]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&str> = paths.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hash = Sha256::new();
    for path in sorted {
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
    }
    let full: [u8; 32] = hash.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn admitted_by_names_the_first_path_under_an_allowed_group() {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let groups = strings(&["acme-other", "beta", "Acme/Lab", "acme"]);
        assert_eq!(admitted_by(&groups, &strings(&["acme"])), Some("Acme/Lab"));
        assert_eq!(admitted_by(&groups, &strings(&["gamma"])), None);
        assert_eq!(admitted_by(&groups, &[]), None);
    }

    #[test]
    fn only_a_refresh_token_limited_to_the_sign_in_scopes_is_kept() {
        let scopes = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            keeps_refresh_token(None),
            "GitLab did not say: those asked for"
        );
        for kept in [
            &["openid", "email"][..],
            &["email", "openid"],
            &["openid"],
            &[],
        ] {
            assert!(keeps_refresh_token(Some(&scopes(kept))), "{kept:?}");
        }
        for refused in [
            &["openid", "email", "api"][..],
            &["read_api"],
            &["openid email"],
        ] {
            assert!(!keeps_refresh_token(Some(&scopes(refused))), "{refused:?}");
        }
    }

    #[test]
    fn allowed_group_matching_table() {
        let cases: &[(&[&str], &[&str], bool)] = &[
            (&["acme"], &[], true),
            (&[], &[], true),
            (&[], &["acme"], false),
            (&["acme"], &["acme"], true),
            (&["acme/platform/sre"], &["acme"], true),
            (&["acme-other"], &["acme"], false),
            (&["acme-other/x"], &["acme"], false),
            (&["acmex"], &["acme"], false),
            (&["ACME/Platform"], &["acme"], true),
            (&["acme"], &["ACME"], true),
            (&["other", "acme/x"], &["zeta", "acme"], true),
            (&["acme"], &["acme/"], true),
            (&["acme"], &[""], false),
        ];
        for (user, allowed, expected) in cases {
            assert_eq!(
                in_allowed_groups(&paths(user), &paths(allowed)),
                *expected,
                "user {user:?} allowed {allowed:?}"
            );
        }
    }

    #[test]
    fn synchronized_paths_are_those_under_an_allowed_group() {
        // (the user's GitLab paths, allowed groups, the paths synchronization takes)
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["administrators", "acme/platform"],
                &["acme"],
                &["acme/platform"],
            ),
            (&["administrators", "acme/platform"], &[], &[]),
            (
                &["acme", "acme/x/y", "ACME/Ops"],
                &["acme"],
                &["acme", "acme/x/y", "ACME/Ops"],
            ),
            (
                &["acme-other", "acmex/y", "x/acme", "acme-other/acme"],
                &["acme"],
                &[],
            ),
            (&["Acme/Platform"], &["ACME"], &["Acme/Platform"]),
            (
                &["beta/tools", "administrators", "acme", "gamma"],
                &["acme", "beta"],
                &["beta/tools", "acme"],
            ),
            (&["acme", "acme"], &["acme"], &["acme", "acme"]),
            (&["acme"], &[" /acme/ "], &["acme"]),
            (&["acme", ""], &[""], &[]),
            (&["users", "administrators/acme"], &["acme"], &[]),
        ];
        for (user, allowed, expected) in cases {
            assert_eq!(
                synchronized_paths(&paths(user), &paths(allowed)),
                *expected,
                "user {user:?} allowed {allowed:?}"
            );
        }
    }

    #[test]
    fn synchronization_needs_an_allowed_group() {
        assert!(synchronizes(true, &paths(&["acme"])));
        assert!(!synchronizes(true, &[]), "nothing to bound what it takes");
        assert!(!synchronizes(false, &paths(&["acme"])));
        assert!(!synchronizes(false, &[]));
    }

    #[test]
    fn synchronization_can_be_on_only_with_an_allowed_group() {
        let acme = paths(&["acme"]);
        let none: &[String] = &[];
        type State<'a> = (bool, &'a [String]);
        // (before, after, refused)
        let cases: &[(State, State, bool)] = &[
            ((false, none), (true, none), true),
            ((false, &acme), (true, none), true),
            ((true, &acme), (true, none), true),
            ((false, none), (true, &acme), false),
            ((true, &acme), (false, none), false),
            ((false, none), (false, none), false),
            ((true, &acme), (true, &acme), false),
            ((true, none), (true, none), false),
            ((true, none), (false, none), false),
            ((true, none), (true, &acme), false),
        ];
        for (before, after, refused) in cases {
            assert_eq!(
                sync_change_refused(*before, *after),
                *refused,
                "{before:?} -> {after:?}"
            );
        }
    }

    #[test]
    fn automatic_provisioning_can_be_on_only_with_its_token_and_an_allowed_group() {
        let acme = paths(&["acme"]);
        // Each state as "on, token, allowed group" (1 or 0): before → after, refused.
        let cases = [
            ("000", "111", false),
            ("011", "111", false),
            ("001", "101", true),
            ("010", "110", true),
            ("111", "101", true),
            ("111", "110", true),
            ("111", "000", false),
            ("011", "000", false),
            ("101", "101", false),
            ("100", "110", false),
        ];
        let state = |bits: &str| {
            let on = |i: usize| bits.as_bytes()[i] == b'1';
            (on(0), on(1), if on(2) { &acme[..] } else { &[] })
        };
        for (before, after, refused) in cases {
            assert_eq!(
                auto_change_refused(state(before), state(after)),
                refused,
                "{before} -> {after}"
            );
        }
    }

    #[test]
    fn the_scopes_are_openid_and_email_and_nothing_that_reads_code() {
        assert_eq!(SCOPES, "openid email");
    }

    #[test]
    fn allowed_group_entries_are_root_slugs() {
        assert_eq!(parse_allowed_group(" acme ").unwrap(), "acme");
        assert_eq!(parse_allowed_group("/Beta-Labs/").unwrap(), "Beta-Labs");
        assert!(parse_allowed_group("acme/platform")
            .unwrap_err()
            .message
            .contains("root group"));
        assert!(parse_allowed_group("").is_err());
        assert!(parse_allowed_group("a b").is_err());
    }

    /// An active GitLab account named `ann`, `Ann`, `ann@x.org`, linked to `gitlab_id`.
    fn account(id: i64, gitlab_id: Option<&str>) -> Account {
        Account {
            id,
            active: true,
            gitlab_id: gitlab_id.map(str::to_string),
            gitlab_username: Some("ann".into()),
            name: "Ann".into(),
            email: Some("ann@x.org".into()),
        }
    }

    #[test]
    fn linking_table() {
        let linked = account(1, Some("42"));
        let pre = account(2, None);
        let other = account(3, Some("7"));
        assert_eq!(
            find_account(Some(&linked), None, "ann"),
            Ok(Found::Existing(1))
        );
        assert_eq!(
            find_account(Some(&linked), Some(&other), "ann"),
            Ok(Found::Existing(1))
        );
        assert_eq!(find_account(None, Some(&pre), "ann"), Ok(Found::Link(2)));
        assert_eq!(
            find_account(None, Some(&other), "ann"),
            Err(Refusal::IdMismatch("ann".into()))
        );
        assert_eq!(find_account(None, None, "ann"), Ok(Found::New));
    }

    #[test]
    fn admission_table() {
        assert_eq!(
            admission(&Found::New, true, false),
            Err(Refusal::SignUpDisabled)
        );
        assert_eq!(admission(&Found::New, true, true), Ok(()));
        assert_eq!(
            admission(&Found::Link(1), true, false),
            Ok(()),
            "pre-provisioned passes with sign-up off"
        );
        assert_eq!(
            admission(&Found::Existing(1), false, true),
            Err(Refusal::Deactivated)
        );
        assert_eq!(
            admission(&Found::Link(1), false, true),
            Err(Refusal::Deactivated)
        );
    }

    #[test]
    fn login_generation() {
        let first: Vec<String> = login_candidates("ann", 1).take(4).collect();
        assert_eq!(
            first,
            vec!["ann", "ann-gitlab", "ann-gitlab-2", "ann-gitlab-3"]
        );
        assert_eq!(login_candidates("_ann", 1).next().unwrap(), "ann");
        assert_eq!(login_candidates("_", 9).next().unwrap(), "gitlab-user-9");
        assert_eq!(login_candidates("a", 9).next().unwrap(), "gitlab-user-9");
        for candidate in login_candidates(&"x".repeat(300), 1).take(3) {
            assert!(Login::parse(&candidate).is_ok(), "{candidate}");
        }
    }

    fn g(id: i64, name: &str, is_default: bool) -> LocalGroup {
        LocalGroup {
            id,
            name: name.into(),
            is_default,
        }
    }

    #[test]
    fn sync_plan_adds_matching_existing_groups_and_keeps_users() {
        let all = vec![
            g(1, "users", true),
            g(2, "acme/platform", false),
            g(3, "Acme/Ops", false),
            g(4, "manual", false),
        ];
        let current = vec![g(1, "users", true), g(4, "manual", false)];
        let plan = group_sync_plan(
            &current,
            &all,
            &paths(&["acme/platform", "acme/ops", "acme/unknown"]),
        );
        assert_eq!(
            plan.add,
            vec![2],
            "case-sensitive: Acme/Ops is not acme/ops; unknown groups are not created"
        );
        assert_eq!(
            plan.remove,
            vec![4],
            "manual membership removed, users kept"
        );
    }

    #[test]
    fn sync_plan_ignores_groups_no_path_names_and_keeps_list_orders() {
        let all = vec![
            g(1, "users", true),
            g(5, "b", false),
            g(2, "a", false),
            g(3, "unrelated", false),
        ];
        let candidates = vec![g(2, "a", false), g(1, "users", true), g(5, "b", false)];
        let current = vec![
            g(9, "old", false),
            g(1, "users", true),
            g(8, "older", false),
        ];
        let wanted = paths(&["b", "a", "a", "none"]);
        let plan = group_sync_plan(&current, &candidates, &wanted);
        assert_eq!(
            plan.add,
            vec![2, 5],
            "in the order of the local groups given"
        );
        assert_eq!(
            plan.remove,
            vec![9, 8],
            "in the order of the current memberships"
        );
        let from_all = group_sync_plan(&current, &all, &wanted);
        assert_eq!((from_all.add.len(), from_all.remove), (2, vec![9, 8]));
        let twice = vec![g(2, "a", false), g(1, "users", true), g(2, "a", false)];
        assert_eq!(group_sync_plan(&[], &twice, &wanted).add, vec![2, 1]);
    }

    #[test]
    fn a_gitlab_group_named_administrators_outside_the_allowed_groups_is_never_joined() {
        let all = vec![
            g(1, "users", true),
            g(2, "administrators", false),
            g(3, "acme/platform", false),
        ];
        let gitlab = paths(&["administrators", "acme/platform"]);
        let taken = synchronized_paths(&gitlab, &paths(&["acme"]));
        let plan = group_sync_plan(&[g(1, "users", true)], &all, &taken);
        assert_eq!(plan.add, vec![3]);
        let held = [g(1, "users", true), g(2, "administrators", false)];
        assert_eq!(
            group_sync_plan(&held, &all, &taken),
            SyncPlan {
                add: vec![3],
                remove: vec![2]
            },
            "a membership of administrators is removed, not kept"
        );
    }

    #[test]
    fn sync_plan_restores_missing_default_group_and_never_removes_it() {
        let all = vec![g(1, "users", true), g(2, "a", false)];
        let plan = group_sync_plan::<&str>(&[], &all, &[]);
        assert_eq!(
            plan,
            SyncPlan {
                add: vec![1],
                remove: vec![]
            }
        );
        let plan = group_sync_plan::<&str>(&[g(1, "users", true)], &all, &[]);
        assert_eq!(plan, SyncPlan::default());
    }

    /// Ann as GitLab describes her: active, a person, in `acme/dev`.
    fn ann() -> Claims {
        Claims {
            id: 42,
            username: "ann".into(),
            name: "Ann".into(),
            email: Some("ann@x.org".into()),
            groups: paths(&["acme/dev"]).into(),
        }
    }

    fn profile(name: &str, email: Option<&str>, username: &str) -> Profile {
        Profile {
            name: name.into(),
            email: email.map(str::to_string),
            username: username.into(),
            gitlab_id: "42".into(),
        }
    }

    fn admit(account: AccountWrite, groups: Option<GroupSync>) -> Decision {
        Decision::Admit(Admission { account, groups })
    }

    fn refuse(refusal: Refusal, detail: &str) -> Decision {
        Decision::Refuse(Refused::new(refusal, detail))
    }

    #[test]
    fn decision_table() {
        let acme = paths(&["acme"]);
        let sign_up = Policy {
            allow_sign_up: true,
            synchronize_groups: false,
            allowed_groups: &acme,
            auto_provisioning: false,
        };
        let auto = Policy {
            auto_provisioning: true,
            synchronize_groups: true,
            ..sign_up
        };
        let no_sign_up = Policy {
            allow_sign_up: false,
            ..sign_up
        };
        let sync = Policy {
            synchronize_groups: true,
            ..sign_up
        };
        let anyone = Policy {
            allowed_groups: &[],
            ..sign_up
        };
        let sync_anyone = Policy {
            synchronize_groups: true,
            ..anyone
        };
        let new = Stored {
            free_login: Some("ann".into()),
            ..Stored::default()
        };
        let returning = Stored {
            by_id: Some(account(1, Some("42"))),
            ..Stored::default()
        };
        let with = |change: fn(&mut Claims)| {
            let mut claims = ann();
            change(&mut claims);
            claims
        };
        let stored = |base: &Stored, change: fn(&mut Stored)| {
            let mut stored = base.clone();
            change(&mut stored);
            stored
        };
        let ann_profile = profile("Ann", Some("ann@x.org"), "ann");
        let create = |profile: Profile| AccountWrite::Create {
            login: "ann".into(),
            profile,
        };
        let memberships =
            |current: Vec<LocalGroup>, candidates: Vec<LocalGroup>| StoredGroups::Memberships {
                current,
                candidates,
            };
        let users = g(1, "users", true);
        let dev = g(2, "acme/dev", false);
        let digest = |kept: &[&str]| paths_digest(kept);
        // (what, the claims, the policy, what the store holds, the decision)
        let rows: Vec<(&str, Claims, Policy, Stored, Decision)> = vec![
            (
                "a new person with sign-up on is created",
                ann(),
                sign_up,
                new.clone(),
                admit(create(ann_profile.clone()), None),
            ),
            (
                "a new person with sign-up off is refused",
                ann(),
                no_sign_up,
                new.clone(),
                refuse(Refusal::SignUpDisabled, "sign-in rule"),
            ),
            (
                "a returning person whose profile is unchanged: nothing written",
                ann(),
                no_sign_up,
                returning.clone(),
                admit(AccountWrite::Unchanged { id: 1 }, None),
            ),
            (
                "a returning person renamed on GitLab: profile refreshed",
                with(|c| c.name = "Ann B".into()),
                sign_up,
                returning.clone(),
                admit(
                    AccountWrite::Refresh {
                        id: 1,
                        profile: profile("Ann B", Some("ann@x.org"), "ann"),
                    },
                    None,
                ),
            ),
            (
                "a returning person whose username changed case: refreshed",
                with(|c| c.username = "Ann".into()),
                sign_up,
                returning.clone(),
                admit(
                    AccountWrite::Refresh {
                        id: 1,
                        profile: profile("Ann", Some("ann@x.org"), "Ann"),
                    },
                    None,
                ),
            ),
            (
                "a returning person without an email any more: refreshed",
                with(|c| c.email = None),
                sign_up,
                returning.clone(),
                admit(
                    AccountWrite::Refresh {
                        id: 1,
                        profile: profile("Ann", None, "ann"),
                    },
                    None,
                ),
            ),
            (
                "a pre-provisioned account is linked, even with sign-up off",
                ann(),
                no_sign_up,
                stored(&Stored::default(), |s| {
                    s.by_username = Some(account(2, None))
                }),
                admit(
                    AccountWrite::Link {
                        id: 2,
                        profile: ann_profile.clone(),
                    },
                    None,
                ),
            ),
            (
                "the username of an account linked to another GitLab id is refused",
                ann(),
                sign_up,
                stored(&new, |s| s.by_username = Some(account(3, Some("7")))),
                refuse(Refusal::IdMismatch("ann".into()), "sign-in rule"),
            ),
            (
                "the account of this GitLab id wins over a username match",
                ann(),
                sign_up,
                stored(&returning, |s| s.by_username = Some(account(3, Some("7")))),
                admit(AccountWrite::Unchanged { id: 1 }, None),
            ),
            (
                "a deactivated account is refused",
                ann(),
                sign_up,
                stored(&returning, |s| {
                    s.by_id.iter_mut().for_each(|a| a.active = false)
                }),
                refuse(Refusal::Deactivated, "sign-in rule"),
            ),
            (
                "a deactivated pre-provisioned account is refused",
                ann(),
                sign_up,
                stored(&Stored::default(), |s| {
                    s.by_username = Some(Account {
                        active: false,
                        ..account(2, None)
                    })
                }),
                refuse(Refusal::Deactivated, "sign-in rule"),
            ),
            (
                "a person outside every allowed group is refused",
                with(|c| c.groups = paths(&["acme-other", "x/acme"]).into()),
                sign_up,
                returning.clone(),
                refuse(Refusal::NotInAllowedGroups, "no allowed group"),
            ),
            (
                "without allowed groups, a person in no group passes",
                with(|c| c.groups.clear()),
                anyone,
                new.clone(),
                admit(create(ann_profile.clone()), None),
            ),
            (
                "an email another account holds is refused",
                ann(),
                sign_up,
                stored(&new, |s| s.email_holders = vec![5]),
                refuse(Refusal::EmailTaken, "sign-in rule"),
            ),
            (
                "an email only the account itself holds passes",
                ann(),
                sign_up,
                stored(&returning, |s| s.email_holders = vec![1]),
                admit(AccountWrite::Unchanged { id: 1 }, None),
            ),
            (
                "an email the account and another hold is refused",
                ann(),
                sign_up,
                stored(&returning, |s| s.email_holders = vec![1, 5]),
                refuse(Refusal::EmailTaken, "sign-in rule"),
            ),
            (
                "an invalid email from GitLab is not taken, and not checked",
                with(|c| c.email = Some("not an email".into())),
                sign_up,
                stored(&new, |s| s.email_holders = vec![5]),
                admit(create(profile("Ann", None, "ann")), None),
            ),
            (
                "an empty name from GitLab becomes the username",
                with(|c| c.name = "  ".into()),
                sign_up,
                new.clone(),
                admit(create(profile("ann", Some("ann@x.org"), "ann")), None),
            ),
            (
                "no free login for a new account",
                ann(),
                sign_up,
                Stored::default(),
                refuse(Refusal::Generic, "no free login"),
            ),
            (
                "a new person with synchronization joins the groups of kept paths, \
                 already in the default group",
                with(|c| c.groups = paths(&["acme/dev", "acme/ops", "administrators"]).into()),
                sync,
                Stored {
                    groups: memberships(Vec::new(), vec![users.clone(), dev.clone()]),
                    ..new.clone()
                },
                admit(
                    create(ann_profile.clone()),
                    Some(GroupSync {
                        add: vec![2],
                        remove: vec![],
                        digest: digest(&["acme/dev", "acme/ops"]),
                    }),
                ),
            ),
            (
                "a returning person with synchronization: memberships added and removed",
                ann(),
                sync,
                Stored {
                    groups: memberships(
                        vec![users.clone(), g(3, "acme/old", false)],
                        vec![users.clone(), dev.clone()],
                    ),
                    ..returning.clone()
                },
                admit(
                    AccountWrite::Unchanged { id: 1 },
                    Some(GroupSync {
                        add: vec![2],
                        remove: vec![3],
                        digest: digest(&["acme/dev"]),
                    }),
                ),
            ),
            (
                "a returning person whose memberships are in sync: left alone",
                ann(),
                sync,
                stored(&returning, |s| s.groups = StoredGroups::InSync),
                admit(AccountWrite::Unchanged { id: 1 }, None),
            ),
            (
                "synchronization on without an allowed group synchronizes nothing",
                ann(),
                sync_anyone,
                Stored {
                    groups: memberships(vec![users.clone()], vec![users.clone(), dev.clone()]),
                    ..returning.clone()
                },
                admit(AccountWrite::Unchanged { id: 1 }, None),
            ),
            (
                "automatic provisioning: an active account provisioning read signs in, its \
                 memberships left to provisioning",
                with(|c| c.name = "Ann B".into()),
                auto,
                Stored {
                    provisioned: true,
                    groups: memberships(vec![users.clone()], vec![users.clone(), dev.clone()]),
                    ..returning.clone()
                },
                admit(
                    AccountWrite::Refresh {
                        id: 1,
                        profile: profile("Ann B", Some("ann@x.org"), "ann"),
                    },
                    None,
                ),
            ),
            (
                "automatic provisioning: an account provisioning did not read is refused",
                ann(),
                auto,
                returning.clone(),
                refuse(
                    Refusal::NotInAllowedGroups,
                    "not an active account of provisioning",
                ),
            ),
            (
                "automatic provisioning: no account is created at sign-in, sign-up on or not",
                ann(),
                auto,
                new.clone(),
                refuse(
                    Refusal::NotInAllowedGroups,
                    "not an active account of provisioning",
                ),
            ),
            (
                "automatic provisioning: a pre-provisioned account is not linked at sign-in",
                ann(),
                auto,
                stored(&new, |s| s.by_username = Some(account(2, None))),
                refuse(
                    Refusal::NotInAllowedGroups,
                    "not an active account of provisioning",
                ),
            ),
            (
                "automatic provisioning: a deactivated account is refused like an unknown one",
                ann(),
                auto,
                Stored {
                    provisioned: true,
                    ..stored(&returning, |s| {
                        if let Some(a) = s.by_id.as_mut() {
                            a.active = false
                        }
                    })
                },
                refuse(
                    Refusal::NotInAllowedGroups,
                    "not an active account of provisioning",
                ),
            ),
            (
                "automatic provisioning: outside the allowed groups is refused first",
                with(|c| c.groups = paths(&["acme-other"]).into()),
                auto,
                Stored {
                    provisioned: true,
                    ..returning.clone()
                },
                refuse(Refusal::NotInAllowedGroups, "no allowed group"),
            ),
            (
                "automatic provisioning: an email another account holds is refused",
                ann(),
                auto,
                Stored {
                    provisioned: true,
                    email_holders: vec![1, 5],
                    ..returning.clone()
                },
                refuse(Refusal::EmailTaken, "sign-in rule"),
            ),
        ];
        for (what, claims, policy, stored, expected) in rows {
            assert_eq!(decide(&claims, &policy, &stored), expected, "{what}");
        }
    }

    #[test]
    fn refusal_texts_match_the_readme() {
        assert_eq!(
            Refusal::NotInAllowedGroups.reason().unwrap(),
            "You are not allowed to authenticate"
        );
        assert_eq!(
            Refusal::SignUpDisabled.reason().unwrap(),
            "'gitlab' users are not allowed to sign up"
        );
        assert_eq!(
            Refusal::IdMismatch("bob".into()).reason().unwrap(),
            "Failed to authenticate with login 'bob'"
        );
        assert_eq!(
            Refusal::Deactivated.reason().unwrap(),
            "Your account is deactivated. Please contact your administrator."
        );
        assert!(Refusal::EmailTaken
            .reason()
            .unwrap()
            .starts_with("This account is already associated"));
        assert_eq!(Refusal::Generic.reason(), None);
    }
}

pub mod auto;

#[cfg(test)]
mod props;
