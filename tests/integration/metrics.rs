//! `GET /metrics`: off by default, optionally behind a bearer token, Prometheus text that a
//! parser reads, counting what it claims, with no personal data in any label.

use crate::harness::*;
use prometheus_parse::{Scrape, Value as Sample};

pub fn enable(lg: &Labgate) {
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[("key", "labgate.metrics.enabled"), ("value", "true")],
        )
        .expect(204);
}

fn parse(resp: &Resp) -> Scrape {
    let text = resp.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

pub fn scrape(lg: &Labgate) -> Scrape {
    let r = lg.client().get("/metrics");
    assert_eq!(r.status, 200, "{}", r.describe());
    parse(&r)
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none yet).
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            other => panic!("{name}: not a single value: {other:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
    found.first().copied().unwrap_or(0.0)
}

#[test]
fn metrics_are_off_by_default() {
    let lg = Labgate::start();
    let r = lg.client().get("/metrics");
    assert_eq!(r.status, 404, "{}", r.describe());
    assert!(!r.text().contains("labgate_"), "{}", r.text());
}

#[test]
fn a_metrics_token_is_required_once_set() {
    let lg = Labgate::start();
    enable(&lg);
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "labgate.metrics.token"),
                ("value", "scrape-Token-42"),
            ],
        )
        .expect(204);
    for client in [
        lg.client(),
        lg.client().bearer("scrape-Token-4"),
        lg.client().bearer("scrape-Token-42x"),
        lg.client().basic("scrape-Token-42", ""),
        lg.token_client("admin"),
    ] {
        let r = client.clone().get("/metrics");
        assert_eq!(r.status, 401, "{}", r.describe());
    }
    let r = lg.client().bearer("scrape-Token-42").get("/metrics");
    assert_eq!(r.status, 200, "{}", r.describe());
    parse(&r);
    // The token is write-only like a secret.
    let v = lg.admin().get("/api/settings/values").expect_json(200);
    assert!(!v.to_string().contains("scrape-Token-42"), "{v}");
    assert!(v["setSecuredSettings"]
        .as_array()
        .unwrap()
        .contains(&"labgate.metrics.token".into()));
}

#[test]
fn requests_sign_ins_users_and_sessions_are_counted_as_claimed() {
    let lg = Labgate::start();
    enable(&lg);
    lg.create_user("ann", USER_PASSWORD);
    lg.create_user("bob", USER_PASSWORD);
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "bob")])
        .expect(200);
    let before = scrape(&lg);
    for _ in 0..7 {
        lg.client().get("/api/system/status").expect(200);
    }
    for _ in 0..3 {
        lg.client()
            .post_form(
                "/api/authentication/login",
                &[("login", "ann"), ("password", "wrong-password-9")],
            )
            .expect(401);
    }
    lg.login("ann", USER_PASSWORD);
    let after = scrape(&lg);
    let diff = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    // 7 status requests, 3 refused and 1 accepted sign-ins through the API: 8 answers 2xx, 3 4xx.
    let api = |status| [("group", "api"), ("status", status)];
    assert_eq!(diff("labgate_http_requests_total", &api("2xx")), 8.0);
    assert_eq!(diff("labgate_http_requests_total", &api("4xx")), 3.0);
    let failed = [
        ("provider", "local"),
        ("outcome", "failed"),
        ("reason", "wrong-password"),
    ];
    assert_eq!(diff("labgate_sign_ins_total", &failed), 3.0);
    let accepted = [("provider", "local"), ("outcome", "ok")];
    assert_eq!(diff("labgate_sign_ins_total", &accepted), 1.0);
    // The duration histogram counts the same requests.
    let count = "labgate_http_request_duration_seconds_count";
    let histogram = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "labgate_http_request_duration_seconds"
                && s.labels.get("group") == Some("api")
        })
        .map(|s| s.value.clone());
    match histogram {
        Some(Sample::Histogram(buckets)) => {
            let last = buckets.last().expect("buckets").count;
            let total = value(&after, "labgate_http_requests_total", &api("2xx"))
                + value(&after, "labgate_http_requests_total", &api("4xx"))
                + value(&after, "labgate_http_requests_total", &api("5xx"));
            assert_eq!(last, total, "the +Inf bucket counts every api request");
        }
        other => panic!("{count}: {other:?}"),
    }
    // admin, ann active; bob deactivated; the admin's and ann's sessions.
    assert_eq!(value(&after, "labgate_users", &[("state", "active")]), 2.0);
    assert_eq!(
        value(&after, "labgate_users", &[("state", "deactivated")]),
        1.0
    );
    assert_eq!(value(&after, "labgate_sessions_active", &[]), 2.0);
    assert!(value(&after, "labgate_database_size_bytes", &[]) > 4096.0);
    assert!(value(&after, "labgate_audit_events", &[]) >= 6.0);
    let r = lg.client().get("/metrics");
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
}

#[test]
fn no_label_carries_personal_data() {
    let lg = Labgate::start_with(&["--trusted-proxies", "127.0.0.1"], &[]);
    enable(&lg);
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "ann.person"),
                ("name", "Ann Person"),
                ("email", "ann@example.org"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect(200);
    lg.client()
        .request(
            "POST",
            "/api/authentication/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Forwarded-For", "198.51.100.23"),
            ],
            b"login=ann.person&password=wrong-password-1",
        )
        .expect(401);
    lg.client().get("/ann.person/ann@example.org").expect(404);
    let text = lg.client().get("/metrics").text();
    for personal in ["ann", "Person", "example.org", "198.51.100", "127.0.0.1"] {
        assert!(
            !text.contains(personal),
            "{personal} in the metrics:\n{text}"
        );
    }
}
