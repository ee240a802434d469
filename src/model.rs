//! Domain types of labgate: identifiers that carry their validation rules, permissions, and
//! the lifetime cap of new API tokens.

use std::fmt;

/// A validation failure: which field, and what is wrong with it (shown to the user as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A user login: 2–255 characters of ASCII letters, digits, `.`, `-`, `_`, `@`, starting
/// with a letter or a digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Login(String);

impl Login {
    pub fn parse(raw: &str) -> Result<Login, FieldError> {
        let len = raw.chars().count();
        if !(2..=255).contains(&len) {
            return Err(FieldError::new(
                "login",
                "Login must be between 2 and 255 characters long",
            ));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c))
        {
            return Err(FieldError::new(
                "login",
                "Login may only contain letters, digits, '.', '-', '_' and '@'",
            ));
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new(
                "login",
                "Login must start with a letter or a digit",
            ));
        }
        Ok(Login(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a user's display name: 1–200 characters, not only spaces.
pub fn validate_name(raw: &str) -> Result<String, FieldError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new("name", "Name must not be empty"));
    }
    if trimmed.chars().count() > 200 {
        return Err(FieldError::new(
            "name",
            "Name must not be longer than 200 characters",
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "Name must not contain control characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// Validates an optional email: empty means none; otherwise at most 100 characters, one `@`
/// with something on both sides, no spaces or control characters.
pub fn validate_email(raw: &str) -> Result<Option<String>, FieldError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > 100 {
        return Err(FieldError::new(
            "email",
            "Email must not be longer than 100 characters",
        ));
    }
    let valid = match trimmed.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !trimmed
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"".contains(c))
        }
        None => false,
    };
    if !valid {
        return Err(FieldError::new(
            "email",
            format!("Email '{trimmed}' is not valid"),
        ));
    }
    Ok(Some(trimmed.to_string()))
}

/// Minimum length of a local password.
pub const PASSWORD_MIN_LEN: usize = 12;

/// Validates a new local password.
pub fn validate_password(raw: &str) -> Result<(), FieldError> {
    if raw.chars().count() < PASSWORD_MIN_LEN {
        return Err(FieldError::new(
            "password",
            format!("Password must be at least {PASSWORD_MIN_LEN} characters long"),
        ));
    }
    if raw.len() > 1024 {
        return Err(FieldError::new(
            "password",
            "Password must not be longer than 1024 bytes",
        ));
    }
    Ok(())
}

/// A group name: 1–255 characters, case-sensitive, `/` allowed (GitLab paths), not `Anyone`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(raw: &str) -> Result<GroupName, FieldError> {
        let trimmed = raw.trim();
        let len = trimmed.chars().count();
        if len == 0 {
            return Err(FieldError::new("name", "Group name must not be empty"));
        }
        if len > 255 {
            return Err(FieldError::new(
                "name",
                "Group name must not be longer than 255 characters",
            ));
        }
        if trimmed.eq_ignore_ascii_case("anyone") {
            return Err(FieldError::new("name", "Anyone group cannot be used"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "Group name must not contain control characters",
            ));
        }
        Ok(GroupName(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a group description: at most 200 characters.
pub fn validate_description(raw: &str) -> Result<String, FieldError> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > 200 {
        return Err(FieldError::new(
            "description",
            "Description must not be longer than 200 characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// Global permissions. Stored by key, so new ones only add a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// "Administer System": every admin page and admin API call.
    Admin,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[Permission::Admin];

    pub fn key(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Permission::Admin => "Administer System",
        }
    }

    pub fn parse(raw: &str) -> Result<Permission, FieldError> {
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.key() == raw)
            .ok_or_else(|| {
                let keys: Vec<&str> = Permission::ALL.iter().map(|p| p.key()).collect();
                FieldError::new(
                    "permission",
                    format!(
                        "Value of parameter 'permission' ({raw}) must be one of: [{}]",
                        keys.join(", ")
                    ),
                )
            })
    }
}

/// Name of the token prefix (`lgu_` + 40 hex characters).
pub const TOKEN_PREFIX: &str = "lgu_";

/// External identity providers a user can be linked to.
pub const PROVIDER_GITLAB: &str = "gitlab";

/// The longest life of a new API token: the values of `sonar.auth.token.max.allowed.lifetime`.
/// A leaked token that expires does less harm than one that works forever, so administrators
/// may require every new token to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLifetime {
    Days30,
    Days90,
    Year,
    /// No cap: a token expires only on the date asked for, if any.
    Unlimited,
}

impl TokenLifetime {
    /// Every lifetime, in the order of [`TokenLifetime::LABELS`].
    pub const ALL: [TokenLifetime; 4] = [
        TokenLifetime::Days30,
        TokenLifetime::Days90,
        TokenLifetime::Year,
        TokenLifetime::Unlimited,
    ];

    /// The setting's values, exactly as SonarQube writes them.
    pub const LABELS: &'static [&'static str] = &["30 days", "90 days", "1 year", "No expiration"];

    pub fn label(self) -> &'static str {
        match self {
            TokenLifetime::Days30 => "30 days",
            TokenLifetime::Days90 => "90 days",
            TokenLifetime::Year => "1 year",
            TokenLifetime::Unlimited => "No expiration",
        }
    }

    /// The lifetime a setting value names (exactly, case included).
    pub fn parse(raw: &str) -> Option<TokenLifetime> {
        TokenLifetime::ALL.into_iter().find(|l| l.label() == raw)
    }

    /// The latest expiry of a token created at `now`: the start (UTC) of the date that lies
    /// this lifetime after the UTC date of `now` (a year after 29 February is 28 February), the
    /// instant at which a token asked for with that date expires. `None` without a cap.
    pub fn latest_expiry(self, now: i64) -> Option<i64> {
        let today = chrono::DateTime::from_timestamp(now, 0)?.date_naive();
        let last_day = match self {
            TokenLifetime::Days30 => today.checked_add_days(chrono::Days::new(30)),
            TokenLifetime::Days90 => today.checked_add_days(chrono::Days::new(90)),
            TokenLifetime::Year => today.checked_add_months(chrono::Months::new(12)),
            TokenLifetime::Unlimited => None,
        }?;
        Some(last_day.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
    }

    /// The expiry a new token gets at `now` when `asked` was asked for (`None`: no date): the
    /// cap when no date or a later one was asked for, else the date asked for.
    pub fn cap(self, asked: Option<i64>, now: i64) -> Option<i64> {
        match (self.latest_expiry(now), asked) {
            (None, asked) => asked,
            (Some(latest), Some(asked)) => Some(asked.min(latest)),
            (Some(latest), None) => Some(latest),
        }
    }
}

/// Full paths of GitLab groups, held in one buffer (one allocation for the text, one for the
/// ends) rather than one `String` each: a person in 250 groups is read at every sign-in, and
/// 250 allocations and frees were a measurable part of it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GroupPaths {
    text: String,
    /// Where each path ends in `text`, in order.
    ends: Vec<usize>,
}

impl GroupPaths {
    /// Room for `paths` paths of `bytes` bytes in all.
    pub fn with_capacity(paths: usize, bytes: usize) -> GroupPaths {
        GroupPaths {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(paths),
        }
    }

    pub fn push(&mut self, path: &str) {
        self.text.push_str(path);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// The paths, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (0..self.ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.text[start..self.ends[i]]
        })
    }
}

impl fmt::Debug for GroupPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for GroupPaths {
    fn from_iter<I: IntoIterator<Item = S>>(paths: I) -> GroupPaths {
        let mut out = GroupPaths::default();
        for path in paths {
            out.push(path.as_ref());
        }
        out
    }
}

impl<S: AsRef<str>> From<Vec<S>> for GroupPaths {
    fn from(paths: Vec<S>) -> GroupPaths {
        paths.into_iter().collect()
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for GroupPaths {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for GroupPaths {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for GroupPaths {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

/// A list of group paths however it is held ([`GroupPaths`], or strings in a slice or vector),
/// for the rules that read one.
pub trait PathList {
    fn paths(&self) -> impl Iterator<Item = &str> + Clone;
}

impl PathList for GroupPaths {
    fn paths(&self) -> impl Iterator<Item = &str> + Clone {
        self.iter()
    }
}

impl<S: AsRef<str>> PathList for [S] {
    fn paths(&self) -> impl Iterator<Item = &str> + Clone {
        self.iter().map(AsRef::as_ref)
    }
}

impl<S: AsRef<str>> PathList for Vec<S> {
    fn paths(&self) -> impl Iterator<Item = &str> + Clone {
        self.iter().map(AsRef::as_ref)
    }
}

impl<S: AsRef<str>, const N: usize> PathList for [S; N] {
    fn paths(&self) -> impl Iterator<Item = &str> + Clone {
        self.iter().map(AsRef::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths_keep_each_path_whole_and_in_order() {
        let paths: GroupPaths = ["acme", "", "acme/web", "bé/ü"].into_iter().collect();
        assert_eq!(paths.len(), 4);
        assert_eq!(paths, ["acme", "", "acme/web", "bé/ü"]);
        assert_eq!(paths.iter().len(), 4);
        assert_eq!(format!("{paths:?}"), r#"["acme", "", "acme/web", "bé/ü"]"#);
        assert_eq!(
            paths.paths().collect::<Vec<_>>(),
            ["acme", "", "acme/web", "bé/ü"]
        );
        assert_ne!(paths, ["acme", "acme/web", "bé/ü"]);
        assert_ne!(paths, ["acme", "", "acme/we", "bé/ü"]);
        let mut paths = paths;
        paths.clear();
        assert!(paths.is_empty());
        assert_eq!(paths, GroupPaths::default());
        assert_eq!(paths.iter().count(), 0);
    }

    #[test]
    fn login_rules() {
        for ok in ["ab", "a.b-c_d@e", "9lives", &"x".repeat(255)] {
            assert!(Login::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "a",
            "",
            "-ab",
            ".ab",
            "_ab",
            "@ab",
            "a b",
            "ab/c",
            "é1",
            &"x".repeat(256),
        ] {
            assert!(Login::parse(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn group_name_rules() {
        assert!(GroupName::parse("acme/platform").is_ok());
        assert_eq!(GroupName::parse(" x ").unwrap().as_str(), "x");
        assert!(GroupName::parse("").is_err());
        assert!(GroupName::parse("anyone").is_err());
        assert!(GroupName::parse("Anyone").is_err());
        assert!(GroupName::parse(&"g".repeat(256)).is_err());
        assert!(GroupName::parse(&"g".repeat(255)).is_ok());
    }

    #[test]
    fn email_rules() {
        assert_eq!(validate_email("").unwrap(), None);
        assert_eq!(validate_email("a@b.c").unwrap().as_deref(), Some("a@b.c"));
        for bad in [
            "a",
            "@b",
            "a@",
            "a@@b",
            "a b@c",
            "a@.b",
            &format!("{}@b.c", "a".repeat(100)),
        ] {
            assert!(validate_email(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn name_and_password_rules() {
        assert!(validate_name(" ").is_err());
        assert!(validate_name(&"n".repeat(201)).is_err());
        assert_eq!(validate_name(" Ann ").unwrap(), "Ann");
        assert!(validate_password("short").is_err());
        assert!(validate_password("twelve-chars").is_ok());
    }

    /// The start (UTC) of a date, as token expiries are stored.
    fn day(date: &str) -> i64 {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp()
    }

    /// 2023-11-14 22:13:20 UTC.
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn token_lifetime_labels_round_trip() {
        for (lifetime, label) in TokenLifetime::ALL.iter().zip(TokenLifetime::LABELS) {
            assert_eq!(lifetime.label(), *label);
            assert_eq!(TokenLifetime::parse(label), Some(*lifetime));
        }
        assert_eq!(TokenLifetime::ALL.len(), TokenLifetime::LABELS.len());
        for bad in ["30 Days", " 30 days", "no expiration", "1 years", ""] {
            assert_eq!(TokenLifetime::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_token_asked_for_without_a_date_expires_at_the_cap() {
        assert_eq!(
            TokenLifetime::Days30.cap(None, NOW),
            Some(day("2023-12-14"))
        );
        assert_eq!(
            TokenLifetime::Days90.cap(None, NOW),
            Some(day("2024-02-12"))
        );
        assert_eq!(TokenLifetime::Year.cap(None, NOW), Some(day("2024-11-14")));
    }

    #[test]
    fn a_date_beyond_the_cap_becomes_the_cap_and_one_within_is_kept() {
        let cap = day("2024-02-12");
        assert_eq!(
            TokenLifetime::Days90.cap(Some(day("2099-12-31")), NOW),
            Some(cap)
        );
        assert_eq!(
            TokenLifetime::Days90.cap(Some(cap + 86_400), NOW),
            Some(cap)
        );
        assert_eq!(TokenLifetime::Days90.cap(Some(cap), NOW), Some(cap));
        let near = day("2023-11-20");
        assert_eq!(TokenLifetime::Days90.cap(Some(near), NOW), Some(near));
        assert_eq!(TokenLifetime::Days30.cap(Some(near), NOW), Some(near));
    }

    #[test]
    fn no_expiration_keeps_what_was_asked() {
        assert_eq!(TokenLifetime::Unlimited.cap(None, NOW), None);
        let far = day("2099-12-31");
        assert_eq!(TokenLifetime::Unlimited.cap(Some(far), NOW), Some(far));
    }

    #[test]
    fn a_year_is_the_same_date_a_year_later_counted_from_the_utc_date() {
        // Just before midnight UTC counts from that date, not the next one.
        let late = day("2023-03-01") - 1;
        assert_eq!(TokenLifetime::Year.cap(None, late), Some(day("2024-02-28")));
        // A year after 29 February is the last day of February.
        assert_eq!(
            TokenLifetime::Year.cap(None, day("2024-02-29") + 3600),
            Some(day("2025-02-28"))
        );
    }

    #[test]
    fn permission_keys_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.key()).unwrap(), *p);
        }
        assert!(Permission::parse("gateadmin").is_err());
    }
}

/// Properties: the identifiers accept exactly what their rules allow (fuzz target `model_names`).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn naive_login(s: &str) -> bool {
        (2..=255).contains(&s.chars().count())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
    }

    fn naive_group_name(s: &str) -> bool {
        let t = s.trim();
        (1..=255).contains(&t.chars().count())
            && !t.eq_ignore_ascii_case("anyone")
            && !t.chars().any(char::is_control)
    }

    /// Mostly login-like text, sometimes anything.
    fn login_like() -> impl Strategy<Value = String> {
        prop_oneof![
            r"[A-Za-z0-9.@_ /-]{0,8}",
            r"[a-z0-9][a-z0-9.@_-]{250,256}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn login_accepts_exactly_the_naive_logins(raw in login_like()) {
            prop_assert_eq!(Login::parse(&raw).is_ok(), naive_login(&raw), "{:?}", raw);
        }

        #[test]
        fn group_name_accepts_exactly_the_naive_names_trimmed(
            raw in prop_oneof![
                r"\s{0,2}[A-Za-z/ -]{0,8}\s{0,2}",
                Just("Anyone".to_string()),
                Just(" ANYONE ".to_string()),
                any::<String>(),
            ]
        ) {
            let parsed = GroupName::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), naive_group_name(&raw), "{:?}", raw);
            if let Ok(name) = parsed {
                prop_assert_eq!(name.as_str(), raw.trim());
                prop_assert_eq!(GroupName::parse(name.as_str()), Ok(name.clone()));
            }
        }

        #[test]
        fn a_valid_email_is_trimmed_short_and_has_one_at(raw in any::<String>()) {
            if let Ok(Some(email)) = validate_email(&raw) {
                prop_assert_eq!(email.as_str(), raw.trim());
                prop_assert!(email.chars().count() <= 100);
                prop_assert_eq!(email.matches('@').count(), 1);
            }
        }
    }
}
