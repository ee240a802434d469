//! Applications behind labgate (forward authentication): the lab's reverse proxy asks labgate,
//! for every request to an application, whether the person may enter.
//!
//! - [`rules`]: the pure rules (origins, the original request a proxy describes, who is
//!   admitted, identity header values, `return_to`, the cookie domain);
//! - [`snippets`]: the proxy configuration for nginx, Caddy and Traefik;
//! - [`applications`]: creating, changing and deleting applications;
//! - here: the applications held in memory for the checks ([`Table`]), and the cookie domain
//!   in effect.

pub mod applications;
pub mod rules;
pub mod snippets;

use crate::db;
use crate::error::AppResult;
use applications::Application;
use rules::Origin;
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::Arc;

/// Every application by origin, as read at one commit generation.
#[derive(Debug)]
pub struct Snapshot {
    by_origin: HashMap<Origin, Arc<Application>>,
}

impl Snapshot {
    /// The application at `origin`, if any.
    pub fn find(&self, origin: &Origin) -> Option<&Arc<Application>> {
        self.by_origin.get(origin)
    }

    pub fn len(&self) -> usize {
        self.by_origin.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_origin.is_empty()
    }
}

/// The applications held in memory between commits ([`db::Held`]: an application created,
/// changed or deleted, a group renamed, each moves the commit generation), so that a check
/// reads no row and an edit is seen by the very next check.
#[derive(Default)]
pub struct Table(db::Held<Snapshot>);

impl Table {
    /// The applications as of now: the snapshot held, or one read afresh from `conn`.
    pub fn current(&self, conn: &Connection) -> AppResult<Arc<Snapshot>> {
        Ok(self.0.get(conn, |conn| -> rusqlite::Result<Snapshot> {
            let mut by_origin = HashMap::new();
            for app in db::applications::all(conn)? {
                if let Ok(origin) = Origin::parse(&app.url) {
                    by_origin.insert(origin, Arc::new(app));
                }
            }
            Ok(Snapshot { by_origin })
        })?)
    }
}

/// Where a sign-in sends the person afterwards: a local path as [`local_path`] accepts it, or
/// an absolute URL whose origin is a registered application's; anything else, `/`.
/// `apps` gives the applications, asked for only when `raw` is an absolute URL.
pub fn return_to(
    raw: Option<&str>,
    apps: impl FnOnce() -> AppResult<Arc<Snapshot>>,
    local_path: impl Fn(Option<&str>) -> String,
) -> AppResult<String> {
    if let Some(url) = raw {
        if let Some(origin) = rules::absolute_return_to(url) {
            if apps()?.find(&origin).is_some() {
                return Ok(url.to_string());
            }
            return Ok("/".into());
        }
    }
    Ok(local_path(raw))
}

/// The cookie domain in effect: the setting when set and still fitting the base URL (which
/// `--base-url` may have changed since it was saved), else none (host-only cookies).
/// `stored` is the setting's value (none when not set).
pub fn cookie_domain(stored: Option<&str>, base_url: &str) -> Option<String> {
    match rules::cookie_domain(stored?, base_url) {
        Ok(domain) => Some(domain),
        Err(why) => {
            log::warn!("labgate.gate.cookieDomain is not used: {why}");
            None
        }
    }
}

/// Records that `login` was refused at `app` (signed in, in none of its allowed groups), in a
/// transaction of its own: the reason, the application and the groups that would admit them.
pub fn record_refusal(
    conn: &mut Connection,
    by: &crate::audit::By,
    login: &str,
    app: &Application,
) -> AppResult<()> {
    use crate::audit::{Action, Event};
    let event = Event::refused(Action::GateRefused, Some(login), "not-in-allowed-group")
        .with("application", app.name.as_str())
        .with("url", app.url.as_str())
        .with("allowedGroups", app.allowed_groups.clone());
    crate::audit::record_alone(conn, by, event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(urls: &[&str]) -> Snapshot {
        let by_origin = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let app = Application {
                    id: i as i64 + 1,
                    name: format!("app{i}"),
                    url: url.to_string(),
                    description: String::new(),
                    allowed_groups: Vec::new(),
                };
                (Origin::parse(url).unwrap(), Arc::new(app))
            })
            .collect();
        Snapshot { by_origin }
    }

    #[test]
    fn return_to_follows_local_paths_and_registered_applications_only() {
        let apps = Arc::new(snapshot(&[
            "https://app.lab.test",
            "http://wiki.lab.test:8080",
        ]));
        let local = |raw: Option<&str>| {
            raw.filter(|r| r.starts_with("/a"))
                .unwrap_or("/")
                .to_string()
        };
        let to = |raw: &str| return_to(Some(raw), || Ok(Arc::clone(&apps)), local).unwrap();
        // The applications are read only for an absolute URL.
        let unread = || -> AppResult<Arc<Snapshot>> { panic!("applications read") };
        assert_eq!(return_to(Some("/admin"), unread, local).unwrap(), "/admin");
        assert_eq!(return_to(None, unread, local).unwrap(), "/");
        assert_eq!(
            to("https://app.lab.test/notebook?x=1"),
            "https://app.lab.test/notebook?x=1"
        );
        assert_eq!(to("HTTPS://APP.lab.test/"), "HTTPS://APP.lab.test/");
        assert_eq!(
            to("http://wiki.lab.test:8080/x"),
            "http://wiki.lab.test:8080/x"
        );
        assert_eq!(to("/admin"), "/admin");
        for refused in [
            "http://app.lab.test/",
            "https://app.lab.test:8443/",
            "http://wiki.lab.test/x",
            "https://app.lab.test.evil.test/",
            "https://app.lab.test@evil.test/",
            "https://evil.test/?https://app.lab.test/",
            "//app.lab.test/",
            "/\\evil.test",
            "https%3A%2F%2Fapp.lab.test%2F",
        ] {
            assert_eq!(to(refused), "/", "{refused}");
        }
    }

    #[test]
    fn the_table_reads_again_after_a_commit() {
        let dir = std::env::temp_dir().join(format!("labgate-gate-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labgate.db");
        let _ = std::fs::remove_file(&path);
        let mut conn = db::open(&path).unwrap();
        db::migrate(&mut conn).unwrap();
        let table = Table::default();
        assert!(table.current(&conn).unwrap().is_empty());
        let first = table.current(&conn).unwrap();
        assert!(Arc::ptr_eq(&first, &table.current(&conn).unwrap()), "held");
        let fields = applications::Changes {
            name: Some("Wiki".into()),
            url: Some("https://wiki.lab.test".into()),
            ..Default::default()
        };
        applications::create(&mut conn, &crate::audit::By::admin(), &fields, 1).unwrap();
        let origin = Origin::parse("https://wiki.lab.test").unwrap();
        assert_eq!(
            table.current(&conn).unwrap().find(&origin).unwrap().name,
            "Wiki"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
