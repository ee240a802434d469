//! The applications behind labgate as an operation: validate, then one transaction. Each
//! change is split into the part that runs inside a transaction the caller holds (`*_in`), so
//! that whatever must be written with it (a record of who changed what) commits with it, and
//! the part that opens and commits that transaction.

use super::rules::Origin;
use crate::audit::{self, Action, By, Event};
use crate::db::{self, applications, groups};
use crate::error::{AppError, AppResult};
use crate::model::FieldError;
use rusqlite::Connection;

pub use applications::Application;

/// Longest application name.
pub const NAME_MAX: usize = 100;
/// Longest description.
pub const DESCRIPTION_MAX: usize = 200;

/// What a create or an update sends; `None` keeps the stored value (an update) or is the
/// default (a create: no description, no allowed group, every active user admitted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub name: Option<String>,
    pub url: Option<String>,
    pub allowed_groups: Option<Vec<String>>,
    pub description: Option<String>,
}

/// An application's fields once validated: the origin normalized, the groups found.
struct Valid {
    name: String,
    url: String,
    description: String,
    group_ids: Vec<i64>,
}

fn validate_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX {
        return Err(FieldError::new(
            "name",
            format!("Name must be 1 to {NAME_MAX} characters long"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "Name must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

fn validate_url(raw: &str) -> Result<String, FieldError> {
    Origin::parse(raw)
        .map(|o| o.to_string())
        .map_err(|why| FieldError::new("url", format!("URL '{}' {why}", raw.trim())))
}

fn validate_description(raw: &str) -> Result<String, FieldError> {
    let text = raw.trim();
    if text.chars().count() > DESCRIPTION_MAX || text.chars().any(char::is_control) {
        return Err(FieldError::new(
            "description",
            format!("Description must be at most {DESCRIPTION_MAX} characters, without control characters"),
        ));
    }
    Ok(text.to_string())
}

/// Validates every field, reporting each bad one; `id` is the application being changed
/// (whose own name and URL are not duplicates).
fn validate(conn: &Connection, id: Option<i64>, fields: &Changes) -> AppResult<Valid> {
    let mut errors = Vec::new();
    let mut take =
        |r: Result<String, FieldError>| r.map_err(|e| errors.push(e)).unwrap_or_default();
    let name = take(validate_name(fields.name.as_deref().unwrap_or("")));
    let url = take(validate_url(fields.url.as_deref().unwrap_or("")));
    let description = take(validate_description(
        fields.description.as_deref().unwrap_or(""),
    ));
    let mut group_ids = Vec::new();
    for group in fields.allowed_groups.iter().flatten() {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        match groups::find_by_name(conn, group)? {
            Some(g) => group_ids.push(g.id),
            None => errors.push(FieldError::new(
                "allowedGroups",
                format!("No group named '{group}'"),
            )),
        }
    }
    let other = |found: Option<i64>| found.is_some_and(|f| Some(f) != id);
    if !name.is_empty() && other(applications::id_by_name(conn, &name)?) {
        errors.push(FieldError::new(
            "name",
            format!("An application named '{name}' already exists"),
        ));
    }
    if !url.is_empty() && other(applications::id_by_url(conn, &url)?) {
        errors.push(FieldError::new(
            "url",
            format!("Another application already has the URL {url}"),
        ));
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    Ok(Valid {
        name,
        url,
        description,
        group_ids,
    })
}

/// The application `id`, or 404.
pub fn get(conn: &Connection, id: i64) -> AppResult<Application> {
    applications::find(conn, id)?
        .ok_or_else(|| AppError::not_found(format!("Application '{id}' not found")))
}

/// An application id as a path or form names it, or 404.
pub fn parse_id(raw: &str) -> AppResult<i64> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AppError::not_found(format!("Application '{raw}' not found")))
}

/// Creates an application in `tx`.
pub fn create_in(tx: &Connection, fields: &Changes, now: i64) -> AppResult<Application> {
    let v = validate(tx, None, fields)?;
    let id = applications::insert(tx, &v.name, &v.url, &v.description, now)?;
    applications::set_groups(tx, id, &v.group_ids)?;
    get(tx, id)
}

/// Creates an application ([`create_in`] in a transaction of its own, with its audit event).
pub fn create(
    conn: &mut Connection,
    by: &By,
    fields: &Changes,
    now: i64,
) -> AppResult<Application> {
    let tx = db::write_tx(conn)?;
    let app = create_in(&tx, fields, now)?;
    audit::record(
        &tx,
        by,
        described(Event::ok(Action::ApplicationCreate, &app.name), &app),
    )?;
    tx.commit()?;
    Ok(app)
}

/// `event` with what an application admits where.
fn described(event: Event, app: &Application) -> Event {
    event
        .with("url", app.url.as_str())
        .with("allowedGroups", app.allowed_groups.clone())
        .with("description", app.description.as_str())
}

/// Changes the fields given of application `id` in `tx`; returns it before and after.
pub fn update_in(
    tx: &Connection,
    id: i64,
    changes: &Changes,
    now: i64,
) -> AppResult<(Application, Application)> {
    let before = get(tx, id)?;
    let merged = Changes {
        name: Some(changes.name.clone().unwrap_or_else(|| before.name.clone())),
        url: Some(changes.url.clone().unwrap_or_else(|| before.url.clone())),
        description: Some(
            changes
                .description
                .clone()
                .unwrap_or_else(|| before.description.clone()),
        ),
        allowed_groups: Some(
            changes
                .allowed_groups
                .clone()
                .unwrap_or_else(|| before.allowed_groups.clone()),
        ),
    };
    let v = validate(tx, Some(id), &merged)?;
    applications::update(tx, id, &v.name, &v.url, &v.description, now)?;
    applications::set_groups(tx, id, &v.group_ids)?;
    Ok((before, get(tx, id)?))
}

/// Changes an application ([`update_in`] in a transaction of its own).
pub fn update(
    conn: &mut Connection,
    by: &By,
    id: i64,
    changes: &Changes,
    now: i64,
) -> AppResult<Application> {
    let tx = db::write_tx(conn)?;
    let (before, after) = update_in(&tx, id, changes, now)?;
    let event = Event::ok(Action::ApplicationUpdate, &after.name)
        .change("name", before.name.as_str(), after.name.as_str())
        .change("url", before.url.as_str(), after.url.as_str())
        .change(
            "allowedGroups",
            before.allowed_groups.clone(),
            after.allowed_groups.clone(),
        )
        .change(
            "description",
            before.description.as_str(),
            after.description.as_str(),
        );
    if event.detail.contains_key("changes") {
        audit::record(&tx, by, event)?;
    }
    tx.commit()?;
    Ok(after)
}

/// Deletes application `id` in `tx`; returns what it was.
pub fn delete_in(tx: &Connection, id: i64) -> AppResult<Application> {
    let app = get(tx, id)?;
    applications::delete(tx, id)?;
    Ok(app)
}

/// Deletes an application ([`delete_in`] in a transaction of its own).
pub fn delete(conn: &mut Connection, by: &By, id: i64) -> AppResult<Application> {
    let tx = db::write_tx(conn)?;
    let app = delete_in(&tx, id)?;
    audit::record(
        &tx,
        by,
        described(Event::ok(Action::ApplicationDelete, &app.name), &app),
    )?;
    tx.commit()?;
    Ok(app)
}

/// Refuses deleting group `group_id` while it admits people to an application: the
/// application would be left with fewer allowed groups than its administrator chose, and with
/// none, open to every user.
pub fn check_group_deletable(conn: &Connection, group: &str, group_id: i64) -> AppResult<()> {
    let apps = applications::admitting(conn, group_id)?;
    if apps.is_empty() {
        return Ok(());
    }
    Err(AppError::rule(format!(
        "Group '{group}' admits people to {}: remove it from their allowed groups first",
        apps.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(name: &str, url: &str, groups: &[&str]) -> Changes {
        Changes {
            name: Some(name.into()),
            url: Some(url.into()),
            allowed_groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            description: None,
        }
    }

    #[test]
    fn create_normalizes_the_url_and_reports_every_bad_field() {
        let mut conn = db::test_db();
        let app = create(
            &mut conn,
            &By::admin(),
            &changes(" Jupyter ", "HTTPS://Jupyter.Lab.Example/", &[]),
            1,
        )
        .unwrap();
        assert_eq!(
            (app.name.as_str(), app.url.as_str()),
            ("Jupyter", "https://jupyter.lab.example")
        );
        let err = create(
            &mut conn,
            &By::admin(),
            &changes("jupyter", "https://jupyter.lab.example", &["nope"]),
            1,
        )
        .unwrap_err();
        let AppError::Invalid(errors) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["allowedGroups", "name", "url"], "{errors:?}");
        let err = create(
            &mut conn,
            &By::admin(),
            &changes("", "https://x.example/path", &[]),
            1,
        )
        .unwrap_err();
        assert_eq!(err.messages().len(), 2, "{err:?}");
    }

    #[test]
    fn update_changes_only_what_is_given() {
        let mut conn = db::test_db();
        groups::create(&conn, "ml", "", 1).unwrap();
        let app = create(
            &mut conn,
            &By::admin(),
            &changes("Grafana", "https://grafana.lab.example", &["ml"]),
            1,
        )
        .unwrap();
        let renamed = Changes {
            name: Some("Dashboards".into()),
            ..Default::default()
        };
        let after = update(&mut conn, &By::admin(), app.id, &renamed, 2).unwrap();
        assert_eq!(after.name, "Dashboards");
        assert_eq!(after.allowed_groups, ["ml"]);
        assert_eq!(after.url, app.url);
        let opened = Changes {
            allowed_groups: Some(Vec::new()),
            ..Default::default()
        };
        assert!(update(&mut conn, &By::admin(), app.id, &opened, 3)
            .unwrap()
            .allowed_groups
            .is_empty());
        assert!(matches!(
            update(&mut conn, &By::admin(), 999, &opened, 3),
            Err(AppError::NotFound(_))
        ));
    }

    #[test]
    fn a_group_admitting_people_to_an_application_cannot_be_deleted() {
        let mut conn = db::test_db();
        let id = groups::create(&conn, "ml", "", 1).unwrap();
        create(
            &mut conn,
            &By::admin(),
            &changes("Grafana", "https://grafana.lab.example", &["ml"]),
            1,
        )
        .unwrap();
        let err = check_group_deletable(&conn, "ml", id).unwrap_err();
        assert_eq!(
            err.public_message(),
            "Group 'ml' admits people to 'Grafana': remove it from their allowed groups first"
        );
    }
}
