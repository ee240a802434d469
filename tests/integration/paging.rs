//! Paging on every list: `p` (1-based), `ps` 1–500, and the `paging` object.

use crate::harness::*;
use serde_json::Value;

/// Every list endpoint with the parameters it needs, and whether it answers the
/// `user_groups/users` shape (`p`, `ps`, `total` at the top level) instead of `paging`.
/// Query parameters.
type Params = &'static [(&'static str, &'static str)];

const LISTS: &[(&str, Params, bool)] = &[
    ("/api/users/search", &[], false),
    ("/api/user_groups/search", &[], false),
    ("/api/user_groups/users", &[("name", "users")], true),
    ("/api/permissions/groups", &[("permission", "admin")], false),
    ("/api/permissions/users", &[("permission", "admin")], false),
];

fn list(c: &mut Client, path: &str, base: &[(&str, &str)], extra: &[(&str, &str)]) -> Resp {
    let mut params: Vec<(&str, &str)> = base.to_vec();
    params.extend_from_slice(extra);
    c.get_query(path, &params)
}

/// (pageIndex, pageSize, total) of a list answer.
fn paging(v: &Value, flat: bool) -> (u64, u64, u64) {
    let get = |x: &Value| {
        x.as_u64()
            .unwrap_or_else(|| panic!("paging field missing: {v}"))
    };
    if flat {
        (get(&v["p"]), get(&v["ps"]), get(&v["total"]))
    } else {
        let p = &v["paging"];
        (get(&p["pageIndex"]), get(&p["pageSize"]), get(&p["total"]))
    }
}

#[test]
fn every_list_refuses_out_of_range_page_sizes() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let mut failures = Vec::new();
    for (path, base, _) in LISTS {
        for ps in ["0", "501", "-1", "abc", "1.5"] {
            let r = list(&mut admin, path, base, &[("ps", ps)]);
            if r.status != 400 || r.header("content-type") != Some("application/json") {
                failures.push(format!("{path} ps={ps}: {}", r.describe()));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_list_refuses_page_index_below_one() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let mut failures = Vec::new();
    for (path, base, _) in LISTS {
        for p in ["0", "-3", "x"] {
            let r = list(&mut admin, path, base, &[("p", p)]);
            if r.status != 400 {
                failures.push(format!("{path} p={p}: {}", r.describe()));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_list_accepts_page_sizes_1_and_500_and_echoes_them() {
    let lg = Labgate::start();
    // Something on every list: a user holding `admin` directly.
    lg.create_user("direct", USER_PASSWORD);
    lg.grant_user("direct", "admin");
    let mut admin = lg.admin();
    for (path, base, flat) in LISTS {
        for ps in [1u64, 500] {
            let v = list(&mut admin, path, base, &[("ps", &ps.to_string())]).expect_json(200);
            let (p, size, total) = paging(&v, *flat);
            assert_eq!((p, size), (1, ps), "{path}: {v}");
            assert!(total >= 1, "{path}: {v}");
        }
        let v = list(&mut admin, path, base, &[]).expect_json(200);
        let (p, size, _) = paging(&v, *flat);
        assert_eq!(p, 1, "{path} default page: {v}");
        assert!((1..=500).contains(&size), "{path} default size: {v}");
    }
}

#[test]
fn users_search_walks_pages() {
    let lg = Labgate::start();
    for i in 1..=5 {
        lg.create_user(&format!("pager-{i}"), USER_PASSWORD);
    }
    let mut admin = lg.admin();
    let mut seen = Vec::new();
    for p in 1..=3 {
        let v = admin
            .get_query(
                "/api/users/search",
                &[("q", "pager"), ("ps", "2"), ("p", &p.to_string())],
            )
            .expect_json(200);
        assert_eq!(paging(&v, false), (p, 2, 5), "{v}");
        let page = logins(&v["users"]);
        assert_eq!(page.len(), if p < 3 { 2 } else { 1 }, "{v}");
        seen.extend(page);
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["pager-1", "pager-2", "pager-3", "pager-4", "pager-5"]
    );
    // Past the end: an empty page, same total.
    let v = admin
        .get_query(
            "/api/users/search",
            &[("q", "pager"), ("ps", "2"), ("p", "4")],
        )
        .expect_json(200);
    assert!(logins(&v["users"]).is_empty(), "{v}");
    assert_eq!(paging(&v, false).2, 5, "{v}");
}

#[test]
fn group_users_walks_pages() {
    let lg = Labgate::start();
    for i in 1..=3 {
        lg.create_user(&format!("gp-{i}"), USER_PASSWORD);
    }
    let mut admin = lg.admin();
    let mut seen = Vec::new();
    for p in 1..=2 {
        let v = admin
            .get_query(
                "/api/user_groups/users",
                &[
                    ("name", "users"),
                    ("q", "gp-"),
                    ("ps", "2"),
                    ("p", &p.to_string()),
                ],
            )
            .expect_json(200);
        assert_eq!(paging(&v, true), (p, 2, 3), "{v}");
        seen.extend(logins(&v["users"]));
    }
    seen.sort();
    assert_eq!(seen, vec!["gp-1", "gp-2", "gp-3"]);
}

#[test]
fn permission_lists_walk_pages() {
    let lg = Labgate::start();
    for i in 1..=3 {
        let login = format!("pp-{i}");
        lg.create_user(&login, USER_PASSWORD);
        lg.grant_user(&login, "admin");
    }
    let mut admin = lg.admin();
    let v = admin
        .get_query(
            "/api/permissions/users",
            &[
                ("permission", "admin"),
                ("q", "pp-"),
                ("ps", "2"),
                ("p", "2"),
            ],
        )
        .expect_json(200);
    assert_eq!(paging(&v, false), (2, 2, 3), "{v}");
    assert_eq!(logins(&v["users"]).len(), 1, "{v}");
}
