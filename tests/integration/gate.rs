//! Applications behind labgate, end to end: real nginx and Caddy (Debian's packages) run on
//! loopback ports with the configuration labgate's `gate::snippets` writes (the same text the
//! application page and the README show), in front of an upstream that answers with the
//! headers it received. Host names `*.lab.test` are never resolved: the client connects to the
//! proxy on 127.0.0.1 and names the host in its `Host` header.

use crate::harness::*;
use crate::proxies::{free_port, received, Caddy, Nginx, Upstream};
use labgate::gate::rules::Origin;
use labgate::gate::snippets::{self, Target};
use serde_json::{json, Value};
use std::net::SocketAddr;

/// The two proxies the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Nginx,
    Caddy,
}

const BOTH: [Proxy; 2] = [Proxy::Nginx, Proxy::Caddy];

/// labgate, the upstream, and nginx and Caddy each in front of three hosts: `app` (members of
/// the group `ml` only), `open` (every signed-in user) and `ghost` (configured in the proxy but
/// registered in no application). labgate's base URL is `http://labgate.lab.test:<port>` and
/// its cookie domain `lab.test`.
struct Lab {
    lg: Labgate,
    _upstream: Upstream,
    nginx: Nginx,
    caddy: Caddy,
}

impl Lab {
    fn start() -> Lab {
        let lg = Labgate::start();
        let mut admin = lg.admin();
        let base = format!("http://labgate.lab.test:{}", lg.addr.port());
        for (key, value) in [
            ("sonar.core.serverBaseURL", base.as_str()),
            ("labgate.gate.cookieDomain", "lab.test"),
        ] {
            admin
                .post_form("/api/settings/set", &[("key", key), ("value", value)])
                .expect(204);
        }
        lg.create_group("ml");
        let upstream = Upstream::start();
        let labgate = format!("http://127.0.0.1:{}", lg.addr.port());
        let (n, c) = (free_port(), free_port());
        let mut servers = String::new();
        let mut sites = String::new();
        for (port, out, write) in [
            (
                n,
                &mut servers,
                snippets::nginx as fn(&Target<'_>) -> String,
            ),
            (c, &mut sites, snippets::caddy),
        ] {
            for (host, groups) in [
                ("app", Some(vec!["ml"])),
                ("open", Some(vec![])),
                ("ghost", None),
            ] {
                let url = format!("http://{host}.lab.test:{port}");
                if let Some(groups) = groups {
                    let body = json!({"name": format!("{host} {port}"), "url": url, "allowedGroups": groups});
                    admin
                        .post_json("/api/v2/labgate/applications", &body)
                        .expect_json(201);
                }
                let origin = Origin::parse(&url).unwrap();
                let name = format!("{host} {port}");
                out.push_str(&write(&Target {
                    name: &name,
                    origin: &origin,
                    labgate: &labgate,
                    upstream: &upstream.url(),
                    bind: Some("127.0.0.1"),
                }));
            }
        }
        let nginx = Nginx::nginx(&servers, n);
        let caddy = Caddy::caddy(&sites, c);
        Lab {
            lg,
            _upstream: upstream,
            nginx,
            caddy,
        }
    }

    fn port(&self, proxy: Proxy) -> u16 {
        match proxy {
            Proxy::Nginx => self.nginx.port,
            Proxy::Caddy => self.caddy.port,
        }
    }

    /// `host.lab.test:<port of proxy>`.
    fn host(&self, proxy: Proxy, host: &str) -> String {
        format!("{host}.lab.test:{}", self.port(proxy))
    }

    /// `client` (its cookies and credentials) going through `proxy` to `host`.
    fn through(&self, client: &Client, proxy: Proxy, host: &str) -> Client {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port(proxy)).into();
        client
            .clone()
            .with_xsrf(false)
            .via(addr, &self.host(proxy, host))
    }

    /// A lab and a local user signed in to it ([`Lab::user`]).
    fn with_user(login: &str, in_ml: bool) -> (Lab, Client) {
        let lab = Lab::start();
        let user = lab.user(login, in_ml);
        (lab, user)
    }

    /// `client` through each proxy to `host`.
    fn both(&self, client: &Client, host: &str) -> [(Proxy, Client); 2] {
        BOTH.map(|proxy| (proxy, self.through(client, proxy, host)))
    }

    /// A local user, member of `ml` when asked; signed in.
    fn user(&self, login: &str, in_ml: bool) -> Client {
        self.lg.create_user(login, USER_PASSWORD);
        if in_ml {
            self.add_to("ml", login);
        }
        self.lg.login(login, USER_PASSWORD)
    }

    fn add_to(&self, group: &str, login: &str) {
        self.lg
            .admin()
            .post_form(
                "/api/user_groups/add_user",
                &[("name", group), ("login", login)],
            )
            .expect(204);
    }

    fn sign_in_url(&self, proxy: Proxy, host: &str, path: &str) -> String {
        let original = format!("http://{}{path}", self.host(proxy, host));
        format!(
            "http://labgate.lab.test:{}/sessions/new?return_to={}",
            self.lg.addr.port(),
            labgate::gate::rules::sign_in_url("", &original)
                .trim_start_matches("/sessions/new?return_to=")
        )
    }

    /// What the upstream received for a `GET path` that labgate admitted.
    fn admitted(&self, client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Value {
        let r = client.request("GET", path, headers, b"");
        assert_eq!(r.status, 200, "{}", r.describe());
        seen(&r.text())
    }

    fn status(&self, client: &mut Client, path: &str) -> u16 {
        client
            .request("GET", path, &[("Accept", "text/html")], b"")
            .status
    }
}

const HTML: (&str, &str) = ("Accept", "text/html,application/xhtml+xml");

/// Asserts that the upstream received each header of `expected` once, with that value.
fn expect_received(proxy: Proxy, seen: &Value, expected: &[(&str, &str)]) {
    for (name, value) in expected {
        assert_eq!(received(seen, name), [*value], "{proxy:?} {name}: {seen}");
    }
}

/// What the upstream says it received: its JSON, or the JSON in its HTML page.
fn seen(body: &str) -> Value {
    let json = match body.split_once("<pre id=\"seen\">") {
        Some((_, rest)) => rest
            .split("</pre>")
            .next()
            .unwrap_or_default()
            .replace("&lt;", "<")
            .replace("&amp;", "&"),
        None => body.to_string(),
    };
    serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("not the upstream's answer ({e}): {body}"))
}

#[test]
fn a_member_reaches_the_application_with_labgate_identity_headers() {
    let (lab, ann) = Lab::with_user("ann", true);
    for (proxy, mut c) in lab.both(&ann, "app") {
        let seen = lab.admitted(&mut c, "/notebook?x=1", &[HTML]);
        let line = seen["request"].as_str().unwrap_or_default();
        assert!(
            line.starts_with("GET /notebook?x=1 HTTP/1."),
            "{proxy:?}: {line}"
        );
        expect_received(
            proxy,
            &seen,
            &[
                ("Remote-User", "ann"),
                ("Remote-Name", "Name of ann"),
                ("Remote-Groups", "ml,users"),
                ("X-Auth-Request-User", "ann"),
                ("X-Auth-Request-Groups", "ml,users"),
                ("X-Auth-Request-Preferred-Username", "ann"),
            ],
        );
    }
}

#[test]
fn forged_identity_headers_never_reach_the_application() {
    let lab = Lab::start();
    // Ann has no email: labgate sends no value for Remote-Email, and still the client's must go.
    let ann = lab.user("ann", true);
    let forged = [
        HTML,
        ("Remote-User", "admin"),
        ("Remote-Name", "The Administrator"),
        ("Remote-Email", "forged@evil.test"),
        ("Remote-Groups", "administrators"),
        ("X-Auth-Request-User", "admin"),
        ("X-Auth-Request-Email", "forged@evil.test"),
        ("X-Auth-Request-Groups", "administrators"),
        ("X-Auth-Request-Preferred-Username", "admin"),
        // The same names with underscores: some application servers read them alike.
        ("Remote_User", "admin"),
        ("X_Auth_Request_User", "admin"),
    ];
    for (proxy, mut c) in lab.both(&ann, "app") {
        let seen = lab.admitted(&mut c, "/", &forged);
        let labgate_says = [
            ("Remote-User", "ann"),
            ("X-Auth-Request-User", "ann"),
            ("Remote-Groups", "ml,users"),
        ];
        expect_received(proxy, &seen, &labgate_says);
        for name in ["Remote-Email", "X-Auth-Request-Email"] {
            assert!(
                received(&seen, name).iter().all(|v| v.is_empty()),
                "{proxy:?} {name}: {seen}"
            );
        }
        let text = seen.to_string();
        assert!(
            !text.contains("forged") && !text.contains("administrators"),
            "{proxy:?}: {seen}"
        );
        // Not signed in, forged headers get nowhere either.
        let mut anonymous = lab.through(&lab.lg.client(), proxy, "app");
        let r = anonymous.request("GET", "/", &forged, b"");
        assert_eq!(r.status, 302, "{proxy:?}: {}", r.describe());
    }
}

#[test]
fn the_other_family_headers_cannot_name_another_application() {
    let (lab, bob) = Lab::with_user("bob", false);
    for (_, mut c) in lab.both(&bob, "open") {
        lab.admitted(&mut c, "/", &[HTML]);
    }
    // Through Caddy, nginx's header names the open application: ignored by /gate/forward.
    let open_caddy = format!("http://{}/", lab.host(Proxy::Caddy, "open"));
    let mut c = lab.through(&bob, Proxy::Caddy, "app");
    let r = c.request(
        "GET",
        "/",
        &[
            HTML,
            ("X-Original-URL", &open_caddy),
            ("X-Original-Method", "GET"),
        ],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.describe());
    // Through nginx, Caddy's headers name the open application: ignored by /gate/nginx.
    let mut c = lab.through(&bob, Proxy::Nginx, "app");
    let open_nginx = lab.host(Proxy::Nginx, "open");
    let r = c.request(
        "GET",
        "/",
        &[
            HTML,
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", &open_nginx),
            ("X-Forwarded-Uri", "/"),
            ("X-Forwarded-Method", "GET"),
        ],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.describe());
}

#[test]
fn not_signed_in_is_sent_to_sign_in_and_a_script_is_answered_401() {
    let lab = Lab::start();
    let anonymous = lab.lg.client();
    for (proxy, mut c) in lab.both(&anonymous, "app") {
        let r = c.request("GET", "/notebook?x=1", &[HTML], b"");
        assert_eq!(r.status, 302, "{proxy:?}: {}", r.describe());
        assert_eq!(
            r.header("location"),
            Some(lab.sign_in_url(proxy, "app", "/notebook?x=1").as_str()),
            "{proxy:?}"
        );
    }
    // Caddy passes labgate's answer on: 401 for what is not a browser navigating to a page.
    let mut c = lab.through(&anonymous, Proxy::Caddy, "app");
    let r = c.request("GET", "/api/x", &[("Accept", "application/json")], b"");
    assert_eq!(r.status, 401, "{}", r.describe());
    let r = c.request("POST", "/form", &[HTML], b"a=1");
    assert_eq!(r.status, 401, "{}", r.describe());
}

#[test]
fn a_non_member_gets_a_page_naming_the_groups_that_would_admit() {
    let (lab, bob) = Lab::with_user("bob", false);
    for (proxy, mut c) in lab.both(&bob, "app") {
        let r = c.request("GET", "/", &[HTML], b"");
        assert_eq!(r.status, 403, "{proxy:?}: {}", r.describe());
        let page = r.text();
        assert!(
            page.contains("Name of bob") && page.contains("(bob)"),
            "{proxy:?}: {page}"
        );
        assert!(
            page.contains(&format!("app {}", lab.port(proxy))),
            "{proxy:?}: {page}"
        );
        assert!(page.contains("<li>ml</li>"), "{proxy:?}: {page}");
    }
}

#[test]
fn the_very_next_request_sees_a_membership_change_a_deactivation_and_a_sign_out() {
    let (lab, ann) = Lab::with_user("ann", true);
    let carl = lab.user("carl", true);
    let mut admin = lab.lg.admin();
    for (proxy, mut a) in lab.both(&ann, "app") {
        assert_eq!(lab.status(&mut a, "/"), 200, "{proxy:?}");
        admin
            .post_form(
                "/api/user_groups/remove_user",
                &[("name", "ml"), ("login", "ann")],
            )
            .expect(204);
        assert_eq!(lab.status(&mut a, "/"), 403, "{proxy:?}: removed from ml");
        lab.add_to("ml", "ann");
        assert_eq!(lab.status(&mut a, "/"), 200, "{proxy:?}: back in ml");
    }
    let mut c = lab.through(&carl, Proxy::Nginx, "app");
    let mut c2 = lab.through(&carl, Proxy::Caddy, "app");
    assert_eq!(
        (lab.status(&mut c, "/"), lab.status(&mut c2, "/")),
        (200, 200)
    );
    admin
        .post_form("/api/users/deactivate", &[("login", "carl")])
        .expect_json(200);
    assert_eq!(
        (lab.status(&mut c, "/"), lab.status(&mut c2, "/")),
        (302, 302),
        "deactivated"
    );
    // Ann signs out at labgate: the same cookie is refused at once through both proxies.
    let mut at_labgate = ann.clone();
    at_labgate
        .post_form("/api/authentication/logout", &[])
        .expect(204);
    for (proxy, mut a) in lab.both(&ann, "app") {
        assert_eq!(lab.status(&mut a, "/"), 302, "{proxy:?}: signed out");
    }
}

#[test]
fn an_application_edit_is_seen_by_the_very_next_check() {
    let (lab, bob) = Lab::with_user("bob", false);
    let mut admin = lab.lg.admin();
    let apps = admin.get("/api/v2/labgate/applications").expect_json(200);
    let port = lab.port(Proxy::Caddy);
    let id = apps["applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == format!("app {port}"))
        .map(|a| a["id"].as_str().unwrap().to_string())
        .unwrap();
    let mut c = lab.through(&bob, Proxy::Caddy, "app");
    assert_eq!(lab.status(&mut c, "/"), 403);
    let patch = |admin: &mut Client, body: Value| {
        admin
            .request(
                "PATCH",
                &format!("/api/v2/labgate/applications/{id}"),
                &[("Content-Type", "application/merge-patch+json")],
                body.to_string().as_bytes(),
            )
            .expect_json(200)
    };
    patch(&mut admin, json!({"allowedGroups": []}));
    assert_eq!(lab.status(&mut c, "/"), 200, "open to every user now");
    patch(&mut admin, json!({"allowedGroups": ["ml"]}));
    assert_eq!(lab.status(&mut c, "/"), 403, "restricted again");
    admin
        .request(
            "DELETE",
            &format!("/api/v2/labgate/applications/{id}"),
            &[],
            b"",
        )
        .expect(204);
    assert_eq!(
        lab.status(&mut c, "/"),
        403,
        "no application there any more"
    );
}

#[test]
fn an_api_token_passes_through_the_proxy_and_a_revoked_one_does_not() {
    let lab = Lab::start();
    lab.user("ann", true);
    let name = "through the proxy";
    let generated = lab
        .lg
        .admin()
        .post_form(
            "/api/user_tokens/generate",
            &[("login", "ann"), ("name", name)],
        )
        .expect_json(200);
    let token = generated["token"].as_str().unwrap().to_string();
    for proxy in BOTH {
        for client in [
            lab.lg.client().bearer(&token),
            lab.lg.client().basic(&token, ""),
        ] {
            let mut c = lab.through(&client, proxy, "app");
            let seen = lab.admitted(&mut c, "/api/data", &[("Accept", "application/json")]);
            assert_eq!(received(&seen, "Remote-User"), ["ann"], "{proxy:?}: {seen}");
        }
    }
    lab.lg
        .admin()
        .post_form(
            "/api/user_tokens/revoke",
            &[("login", "ann"), ("name", name)],
        )
        .expect(204);
    let mut c = lab.through(&lab.lg.client().bearer(&token), Proxy::Caddy, "app");
    let r = c.request("GET", "/api/data", &[("Accept", "application/json")], b"");
    assert_eq!(r.status, 401, "{}", r.describe());
    let mut c = lab.through(&lab.lg.client().bearer(&token), Proxy::Nginx, "app");
    assert_eq!(c.get("/api/data").status, 302);
}

#[test]
fn an_unrelated_authorization_header_is_left_to_the_application() {
    let (lab, ann) = Lab::with_user("ann", true);
    for value in ["Basic dXNlcjpwYXNz", "Bearer the-applications-own-token"] {
        for (proxy, mut c) in lab.both(&ann.clone().authorization(value), "app") {
            let seen = lab.admitted(&mut c, "/", &[HTML]);
            assert_eq!(received(&seen, "Remote-User"), ["ann"], "{proxy:?}: {seen}");
            assert_eq!(
                received(&seen, "Authorization"),
                [value],
                "{proxy:?}: {seen}"
            );
        }
    }
}

#[test]
fn a_host_with_no_application_is_refused_whoever_asks() {
    let lab = Lab::start();
    let admin = lab.lg.admin();
    for (proxy, mut c) in lab.both(&admin, "ghost") {
        let r = c.request("GET", "/", &[HTML], b"").expect(403);
        assert!(
            r.text().contains("No application is registered"),
            "{proxy:?}: {}",
            r.text()
        );
    }
    let logged = lab
        .lg
        .stderr()
        .wait_for(std::time::Duration::from_secs(5), |l| {
            l.contains("gate: no application at http://ghost.lab.test:")
        });
    assert!(logged.is_some(), "{}", lab.lg.stderr().joined());
    // Straight to labgate, without the proxy, the same.
    let mut direct = admin.clone();
    let r = direct.request(
        "GET",
        "/gate/forward",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "unknown.example"),
            ("X-Forwarded-Uri", "/"),
        ],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.describe());
    assert_eq!(
        direct.get("/gate/nginx").status,
        403,
        "no original URL at all"
    );
}

#[test]
fn non_ascii_names_reach_the_application_percent_encoded() {
    let lab = Lab::start();
    let mut admin = lab.lg.admin();
    admin
        .post_form(
            "/api/users/create",
            &[
                ("login", "zoe"),
                ("name", "Zoë Ødegård"),
                ("password", USER_PASSWORD),
                ("email", "zoe@lab.test"),
            ],
        )
        .expect_json(200);
    lab.lg.create_group("équipe, nord");
    lab.add_to("équipe, nord", "zoe");
    let zoe = lab.lg.login("zoe", USER_PASSWORD);
    for (proxy, mut c) in lab.both(&zoe, "open") {
        let seen = lab.admitted(&mut c, "/", &[HTML]);
        let encoded = [
            ("Remote-Name", "Zo%C3%AB %C3%98deg%C3%A5rd"),
            ("Remote-Email", "zoe@lab.test"),
            ("Remote-Groups", "users,%C3%A9quipe%2C nord"),
        ];
        expect_received(proxy, &seen, &encoded);
    }
}

// ------------------------------------------------------------------------------------------
// labgate alone: the applications API, the cookie domain, return_to.

/// Registers an application through the API as admin, admitting the members of `groups`.
pub(crate) fn register(lg: &Labgate, name: &str, url: &str, groups: &[&str]) {
    let body = json!({"name": name, "url": url, "allowedGroups": groups});
    let answer = lg.admin().post_json("/api/v2/labgate/applications", &body);
    assert_eq!(answer.status, 201, "{}", answer.describe());
}

#[test]
fn a_user_who_must_change_their_password_passes_no_gate_until_they_have() {
    let lg = Labgate::start();
    register(&lg, "Wiki", "https://wiki.lab.test", &[]);
    lg.create_user("newbie", USER_PASSWORD);
    // Only a generated password must be changed; the store says so for this user directly.
    let db = labgate::db::open(&lg.data_dir().join("labgate.db")).unwrap();
    db.execute(
        "UPDATE users SET must_change_password = 1 WHERE login = 'newbie'",
        [],
    )
    .unwrap();
    let original = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "wiki.lab.test"),
        ("X-Forwarded-Uri", "/page"),
        ("X-Forwarded-Method", "GET"),
        HTML,
    ];
    let anonymous = lg.client().request("GET", "/gate/forward", &original, b"");
    assert_eq!(anonymous.status, 302, "{}", anonymous.describe());
    let mut newbie = lg.login("newbie", USER_PASSWORD);
    let r = newbie.request("GET", "/gate/forward", &original, b"");
    assert_eq!(
        r.status,
        anonymous.status,
        "as if not signed in: {}",
        r.describe()
    );
    assert_eq!(r.header("location"), anonymous.header("location"));
    // The sign-in page the gate sends them to sends them on to change the password.
    let to = newbie
        .get_query(
            "/sessions/new",
            &[("return_to", "https://wiki.lab.test/page")],
        )
        .expect_redirect();
    assert_eq!(to, "/account/password");
    newbie
        .post_form(
            "/api/users/change_password",
            &[
                ("login", "newbie"),
                ("previousPassword", USER_PASSWORD),
                ("password", "newbie-own-Passw0rd"),
            ],
        )
        .expect(204);
    let mut changed = lg.login("newbie", "newbie-own-Passw0rd");
    let r = changed.request("GET", "/gate/forward", &original, b"");
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn the_applications_api_follows_the_v2_conventions() {
    let lg = Labgate::start();
    lg.create_group("ml");
    let mut admin = lg.admin();
    let created = admin
        .post_json(
            "/api/v2/labgate/applications",
            &json!({"name": "Grafana", "url": "HTTPS://Grafana.Lab.Example/", "allowedGroups": ["ml"], "description": "dashboards"}),
        )
        .expect_json(201);
    assert_eq!(created["url"], "https://grafana.lab.example");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/v2/labgate/applications/{id}");
    assert_eq!(admin.get(&path).expect_json(200), created);
    register(&lg, "Wiki", "https://wiki.lab.example", &[]);
    let page = admin
        .get_query("/api/v2/labgate/applications", &[("p", "2"), ("ps", "1")])
        .expect_json(200);
    assert_eq!(
        page["page"],
        json!({"pageIndex": 2, "pageSize": 1, "total": 2})
    );
    assert_eq!(page["applications"][0]["name"], "Wiki");
    let patched = admin
        .request(
            "PATCH",
            &path,
            &[("Content-Type", "application/merge-patch+json")],
            br#"{"description":null,"allowedGroups":[]}"#,
        )
        .expect_json(200);
    assert_eq!(
        (
            patched["description"].clone(),
            patched["allowedGroups"].clone()
        ),
        (json!(""), json!([]))
    );
    assert_eq!(patched["name"], "Grafana");
    for (body, says) in [
        (
            json!({"name": "wiki", "url": "https://x.lab.example"}),
            "already exists",
        ),
        (
            json!({"name": "X", "url": "https://wiki.lab.example:443"}),
            "already has the URL",
        ),
        (
            json!({"name": "X", "url": "https://x.lab.example/path"}),
            "without a path",
        ),
        (
            json!({"name": "X", "url": "https://x.lab.example", "allowedGroups": ["nope"]}),
            "No group named 'nope'",
        ),
        (
            json!({"url": "https://x.lab.example"}),
            "'name' is required",
        ),
        (
            json!({"name": "X", "url": "https://x.lab.example", "colour": 1}),
            "Unknown field 'colour'",
        ),
    ] {
        let message = admin
            .post_json("/api/v2/labgate/applications", &body)
            .expect_error(400);
        assert!(message.contains(says), "{body}: {message}");
    }
    admin.request("DELETE", &path, &[], b"").expect(204);
    admin.get(&path).expect_error(404);
    admin
        .get("/api/v2/labgate/applications/abc")
        .expect_error(404);
    lg.client()
        .get("/api/v2/labgate/applications")
        .expect_error(401);
}

#[test]
fn a_group_that_admits_people_to_an_application_cannot_be_deleted() {
    let lg = Labgate::start();
    lg.create_group("ml");
    register(&lg, "Grafana", "https://grafana.lab.example", &["ml"]);
    let message = lg
        .admin()
        .post_form("/api/user_groups/delete", &[("name", "ml")])
        .expect_error(400);
    assert_eq!(
        message,
        "Group 'ml' admits people to 'Grafana': remove it from their allowed groups first"
    );
}

#[test]
fn the_cookie_domain_is_validated_and_scopes_the_session_cookie() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let set = |admin: &mut Client, key: &str, value: &str| {
        admin.post_form("/api/settings/set", &[("key", key), ("value", value)])
    };
    let message = set(&mut admin, "labgate.gate.cookieDomain", "lab.test").expect_error(400);
    assert!(
        message.contains("set the server base URL first"),
        "{message}"
    );
    let base = format!("http://labgate.lab.test:{}", lg.addr.port());
    set(&mut admin, "sonar.core.serverBaseURL", &base).expect(204);
    for (bad, says) in [
        ("test", "single label"),
        ("127.0.0.1", "IP address"),
        ("other.test", "does not cover"),
        ("ab.test", "does not cover"),
        ("lab..test", "not a domain"),
    ] {
        let message = set(&mut admin, "labgate.gate.cookieDomain", bad).expect_error(400);
        assert!(message.contains(says), "{bad}: {message}");
    }
    set(&mut admin, "labgate.gate.cookieDomain", ".Lab.Test").expect(204);
    let values = admin
        .get_query(
            "/api/settings/values",
            &[("keys", "labgate.gate.cookieDomain")],
        )
        .expect_json(200);
    assert_eq!(values["settings"][0]["value"], "lab.test");
    let message = set(
        &mut admin,
        "sonar.core.serverBaseURL",
        "http://labgate.elsewhere.test",
    )
    .expect_error(400);
    assert!(message.contains("does not cover"), "{message}");
    // Sign-in sets the session cookie for the domain; sign-out clears it there.
    let mut c = lg.client();
    let r = c.post_form(
        "/api/authentication/login",
        &[("login", "admin"), ("password", ADMIN_PASSWORD)],
    );
    let cookies = r.headers_named("set-cookie").join("\n");
    assert!(cookies.contains("; Domain=lab.test"), "{cookies}");
    assert!(
        !cookies
            .lines()
            .any(|l| l.starts_with("XSRF-TOKEN") && l.contains("Domain")),
        "{cookies}"
    );
    let r = c
        .with_xsrf(true)
        .post_form("/api/authentication/logout", &[]);
    let cleared = r.headers_named("set-cookie").join("\n");
    assert!(
        cleared.lines().any(|l| l.starts_with("labgate_session=;")
            && l.contains("Max-Age=0")
            && l.contains("Domain=lab.test")),
        "{cleared}"
    );
}

#[test]
fn a_cookie_domain_is_checked_against_the_base_url_given_at_start() {
    let lg = Labgate::start_with(&["--base-url", "https://labgate.lab.example"], &[]);
    let mut admin = lg.admin();
    let set = |admin: &mut Client, value: &str| {
        admin.post_form(
            "/api/settings/set",
            &[("key", "labgate.gate.cookieDomain"), ("value", value)],
        )
    };
    assert!(set(&mut admin, "lab.test")
        .expect_error(400)
        .contains("labgate.lab.example"));
    set(&mut admin, "lab.example").expect(204);
}

#[test]
fn return_to_follows_registered_applications_and_nothing_else() {
    let lg = Labgate::start();
    register(&lg, "App", "https://app.lab.test", &[]);
    let sign_in = |return_to: &str| {
        let mut c = lg.client();
        let page = c.get_query("/sessions/new", &[("return_to", return_to)]);
        let csp = page
            .header("content-security-policy")
            .unwrap_or_default()
            .to_string();
        let html = page.expect_html(200);
        let csrf = csrf_field(&html).unwrap();
        let r = c.post_form(
            "/sessions/new",
            &[
                ("login", "admin"),
                ("password", ADMIN_PASSWORD),
                ("return_to", return_to),
                ("csrf_token", &csrf),
            ],
        );
        assert!(r.status == 303 || r.status == 302, "{}", r.describe());
        (r.header("location").unwrap_or_default().to_string(), csp)
    };
    let (to, csp) = sign_in("https://app.lab.test/notebook?x=1");
    assert_eq!(to, "https://app.lab.test/notebook?x=1");
    assert!(
        csp.contains("form-action 'self' https://app.lab.test;"),
        "{csp}"
    );
    for evil in [
        "//evil.test/",
        "https://evil.test/",
        "https://app.lab.test.evil.test/",
        "https://app.lab.test@evil.test/",
        "https://app.lab.test%2F@evil.test/",
        "https://app.lab.test\\@evil.test/",
        "http://app.lab.test/",
        "/%2F%2Fevil.test",
        "https:%2F%2Fapp.lab.test",
    ] {
        let (to, csp) = sign_in(evil);
        assert_eq!(to, "/", "{evil}");
        assert!(csp.contains("form-action 'self';"), "{evil}: {csp}");
    }
    // Already signed in: straight on to the application.
    let mut signed_in = lg.admin();
    let r = signed_in.get_query("/sessions/new", &[("return_to", "https://app.lab.test/x")]);
    assert_eq!(r.header("location"), Some("https://app.lab.test/x"));
}

#[test]
fn the_application_page_shows_ready_to_paste_configuration() {
    let lg = Labgate::start();
    lg.create_group("ml");
    let mut admin = lg.admin();
    let page = admin.get("/admin/applications").expect_html(200);
    let csrf = csrf_field(&page).unwrap();
    let r = admin.post_form(
        "/admin/applications/create",
        &[
            ("csrf_token", &csrf),
            ("name", "Jupyter <hub>"),
            ("url", "https://jupyter.lab.example"),
            ("allowedGroups", "ml\n"),
            ("description", ""),
        ],
    );
    let to = r.expect_redirect();
    assert!(to.starts_with("/admin/applications/edit?id="), "{to}");
    let page = html_unescape(&admin.get(&to).expect_html(200));
    assert!(
        page.contains("Application 'Jupyter <hub>' was created."),
        "{page}"
    );
    let origin = Origin::parse("https://jupyter.lab.example").unwrap();
    let base = format!("http://{}", lg.addr);
    let target = Target {
        name: "Jupyter <hub>",
        origin: &origin,
        labgate: &base,
        upstream: "http://127.0.0.1:8000",
        bind: None,
    };
    for text in [
        snippets::nginx(&target),
        snippets::caddy(&target),
        snippets::traefik(&target),
    ] {
        assert!(page.contains(&text), "the page lacks:\n{text}\n---\n{page}");
    }
    let r = admin.post_form(
        "/admin/applications/create",
        &[
            ("csrf_token", &csrf),
            ("name", "X"),
            ("url", "ftp://x"),
            ("allowedGroups", "nope"),
        ],
    );
    assert_eq!(r.status, 422);
    let page = html_unescape(&r.text());
    assert!(
        page.contains("No group named 'nope'") && page.contains("must start with http://"),
        "{page}"
    );
}

// ------------------------------------------------------------------------------------------
// In a real browser (Debian's Chromium): `*.lab.test` resolves to 127.0.0.1 inside Chromium
// only (`--host-resolver-rules`).

use crate::support_gitlab::{access, FakeGitlab, FakeUser};
use crate::webdriver::Browser;
use std::time::Duration;

const RESOLVE_LAB_TEST: &str = "--host-resolver-rules=MAP *.lab.test 127.0.0.1";

/// GitLab sign-in configured against a fake GitLab where Ann (member of `acme/platform`) is
/// already signed in; Ann pre-provisioned in labgate as a GitLab user and put in `ml`.
fn with_gitlab(lab: &Lab) -> FakeGitlab {
    let gl = FakeGitlab::start();
    let callback = format!(
        "http://labgate.lab.test:{}/oauth2/callback/gitlab",
        lab.lg.addr.port()
    );
    gl.register_app("gate-app-id", "gate-app-secret", &[&callback], true);
    let mut ann = FakeUser::new(4242, "ann");
    ann.name = "Ann Lovelace".into();
    gl.add_user(ann);
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    gl.sign_in_as("ann");
    let mut admin = lab.lg.admin();
    for (key, value) in [
        ("sonar.auth.gitlab.url", gl.url()),
        (
            "sonar.auth.gitlab.applicationId.secured",
            "gate-app-id".into(),
        ),
        ("sonar.auth.gitlab.secret.secured", "gate-app-secret".into()),
        ("sonar.auth.gitlab.allowedGroups", "acme".into()),
        ("sonar.auth.gitlab.enabled", "true".into()),
    ] {
        admin
            .post_form("/api/settings/set", &[("key", key), ("value", &value)])
            .expect(204);
    }
    admin
        .post_form(
            "/api/users/create",
            &[("login", "ann"), ("name", "Ann"), ("local", "false")],
        )
        .expect_json(200);
    lab.add_to("ml", "ann");
    gl
}

/// Opens the application's page signed out, signs in with GitLab from labgate's sign-in page,
/// and expects to land back on that exact URL with the upstream showing Ann.
fn gitlab_sign_in_lands_back_on_the_application(proxy: Proxy) {
    let lab = Lab::start();
    let _gl = with_gitlab(&lab);
    let browser = Browser::start_with(&[RESOLVE_LAB_TEST]);
    let url = format!("http://{}/notebook?x=1", lab.host(proxy, "app"));
    browser.goto(&url);
    browser.wait_url(Duration::from_secs(15), |u| u.contains("/sessions/new"));
    browser.click("a.gitlab");
    browser.wait_url(Duration::from_secs(15), |u| u == url);
    let page = html_unescape(&browser.source());
    assert!(page.contains("\"Remote-User\""), "{proxy:?}: {page}");
    assert!(page.contains("\"ann\""), "{proxy:?}: {page}");
}

#[test]
fn gitlab_sign_in_through_nginx_lands_back_on_the_application_page() {
    gitlab_sign_in_lands_back_on_the_application(Proxy::Nginx);
}

#[test]
fn gitlab_sign_in_through_caddy_lands_back_on_the_application_page() {
    gitlab_sign_in_lands_back_on_the_application(Proxy::Caddy);
}

/// The local sign-in form's answer redirects to the application's origin: the sign-in page's
/// policy must allow that (Chromium checks a form's redirects against `form-action`).
#[test]
fn local_sign_in_lands_back_on_the_application_page() {
    let lab = Lab::start();
    lab.user("ann", true);
    let browser = Browser::start_with(&[RESOLVE_LAB_TEST]);
    let url = format!("http://{}/notebook?x=1", lab.host(Proxy::Nginx, "app"));
    browser.goto(&url);
    browser.wait_url(Duration::from_secs(15), |u| u.contains("/sessions/new"));
    browser.type_into("#login", "ann");
    browser.type_into("#password", USER_PASSWORD);
    browser.click("button.primary");
    browser.wait_url(Duration::from_secs(15), |u| u == url);
    let page = html_unescape(&browser.source());
    assert!(
        page.contains("\"Remote-User\"") && page.contains("\"ann\""),
        "{page}"
    );
}

#[test]
fn the_cookie_domain_is_set_on_its_settings_tab() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let page = admin
        .get("/admin/settings?category=applications")
        .expect_html(200);
    assert!(page.contains("labgate.gate.cookieDomain"), "{page}");
    let csrf = csrf_field(&page).unwrap();
    let save = |admin: &mut Client, value: &str| {
        admin.post_form(
            "/admin/settings",
            &[
                ("csrf_token", &csrf),
                ("key", "labgate.gate.cookieDomain"),
                ("value", value),
            ],
        )
    };
    let r = save(&mut admin, "lab.test");
    assert_eq!(r.status, 422);
    assert!(html_unescape(&r.text()).contains("set the server base URL first"));
    let base = format!("http://labgate.lab.test:{}", lg.addr.port());
    admin
        .post_form(
            "/api/settings/set",
            &[("key", "sonar.core.serverBaseURL"), ("value", &base)],
        )
        .expect(204);
    let r = save(&mut admin, "lab.test");
    assert!(r.expect_redirect().contains("category=applications"));
}
