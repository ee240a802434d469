//! What labgate counts for Prometheus: requests by route group and status class with their
//! durations, sign-ins by provider, outcome and reason code, gate checks by outcome, calls to
//! GitLab by endpoint and outcome with their durations, the runs of scheduled tasks with the
//! time of the last success, and gauges read when scraped (active sessions, users by state,
//! database size, audit events). One registry for the process; written in the text format by
//! `prometheus-client`.
//!
//! No label carries personal data: every label value is one of a fixed set chosen here or by
//! the caller from its own constants (a route group, a status class, a reason code), never a
//! login, a name, an address or a path as sent.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

/// The content type of [`encode`]'s text (OpenMetrics, which Prometheus asks for and reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    group: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignInLabels {
    provider: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Durations in seconds: from a cached request (well under a millisecond) to a slow GitLab.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The runs of a scheduled task: how many ended how, and when one last succeeded.
#[derive(Default)]
struct Runs {
    by_outcome: Family<OutcomeLabel, Counter>,
    last_success: Gauge<i64>,
}

impl Runs {
    /// Registers `labgate_<task>_runs` and `labgate_<task>_last_success_timestamp_seconds`.
    fn register(&self, r: &mut Registry, task: &str, what: &str) {
        r.register(
            format!("labgate_{task}_runs"),
            format!("Runs of {what}, by outcome"),
            self.by_outcome.clone(),
        );
        r.register(
            format!("labgate_{task}_last_success_timestamp_seconds"),
            format!("When {what} last succeeded (UNIX time; 0: never since start)"),
            self.last_success.clone(),
        );
    }
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<GroupLabel>,
    sign_ins: Family<SignInLabels, Counter>,
    gate_checks: Family<OutcomeLabel, Counter>,
    gitlab_calls: Family<CallLabels, Counter>,
    gitlab_seconds: Histograms<EndpointLabel>,
    provisioning: Runs,
    revalidation: Runs,
    sessions: Gauge<i64>,
    users: Family<StateLabel, Gauge<i64>>,
    database_bytes: Gauge<i64>,
    audit_events: Gauge<i64>,
    scrapes: Counter<u64, AtomicU64>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(histogram),
            sign_ins: Family::default(),
            gate_checks: Family::default(),
            gitlab_calls: Family::default(),
            gitlab_seconds: Family::new_with_constructor(histogram),
            provisioning: Runs::default(),
            revalidation: Runs::default(),
            sessions: Gauge::default(),
            users: Family::default(),
            database_bytes: Gauge::default(),
            audit_events: Gauge::default(),
            scrapes: Counter::default(),
        };
        // Name (counters get `_total` in the text), help, metric: one a line.
        macro_rules! register {
            ($($name:literal, $help:literal, $metric:expr;)*) => {
                $(m.registry.register($name, $help, $metric.clone());)*
            };
        }
        #[rustfmt::skip]
        register! {
            "labgate_http_requests", "HTTP requests answered, by route group and status class", m.requests;
            "labgate_http_request_duration_seconds", "Time to answer an HTTP request, by route group", m.request_seconds;
            "labgate_sign_ins", "Sign-in decisions, by provider (gitlab, local), outcome and reason code", m.sign_ins;
            "labgate_gate_checks", "Forward-authentication checks of applications behind labgate, by outcome", m.gate_checks;
            "labgate_gitlab_calls", "Calls to GitLab, by endpoint and outcome", m.gitlab_calls;
            "labgate_gitlab_call_duration_seconds", "Time of a call to GitLab, retries included, by endpoint", m.gitlab_seconds;
            "labgate_sessions_active", "Signed-in sessions not yet expired", m.sessions;
            "labgate_users", "Users, by state", m.users;
            "labgate_database_size_bytes", "Size of the SQLite database file (its write-ahead log not included)", m.database_bytes;
            "labgate_audit_events", "Events held in the audit log", m.audit_events;
            "labgate_metrics_scrapes", "Answers of /metrics", m.scrapes;
        }
        m.provisioning
            .register(&mut m.registry, "provisioning", "automatic provisioning");
        m.revalidation
            .register(&mut m.registry, "revalidation", "the revalidation of GitLab users");
        m
    })
}

/// The route group of a request path, for the request metrics: the first part of the path
/// among those labgate serves (`api`, `admin`, `sessions`…), else `other`: what a client sends
/// never becomes a label.
pub fn route_group(path: &str) -> &'static str {
    const GROUPS: &[(&str, &str)] = &[
        ("/api/", "api"),
        ("/admin/", "admin"),
        ("/sessions/", "sessions"),
        ("/oauth2/", "oauth2"),
        ("/gate/", "gate"),
        ("/account", "account"),
        ("/static/", "static"),
        ("/metrics", "metrics"),
    ];
    if path == "/" {
        return "home";
    }
    GROUPS
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map_or("other", |(_, group)| group)
}

/// `2xx`, `3xx`, `4xx` or `5xx` (`1xx` and anything odd count as `5xx`: labgate sends neither).
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Counts an answered request of `group` ([`route_group`]) with its status and duration.
pub fn request(group: &'static str, status: u16, took: Duration) {
    let m = metrics();
    m.requests
        .get_or_create(&RequestLabels {
            group,
            status: status_class(status),
        })
        .inc();
    m.request_seconds
        .get_or_create(&GroupLabel { group })
        .observe(took.as_secs_f64());
}

/// Counts a sign-in decision: `provider` `gitlab` or `local`, `outcome` `ok`, `refused` or
/// `failed`, `reason` a short code (`-` when admitted).
pub fn sign_in(provider: &'static str, outcome: &'static str, reason: &'static str) {
    metrics()
        .sign_ins
        .get_or_create(&SignInLabels {
            provider,
            outcome,
            reason,
        })
        .inc();
}

/// Counts a gate check by outcome (`allowed`, `unauthenticated`, `forbidden`, `unknown`).
pub fn gate_check(outcome: &'static str) {
    metrics()
        .gate_checks
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}

/// Counts a call to GitLab at `endpoint` (`token`, `userinfo`, `discovery`…) with its outcome
/// (`ok`, or an error kind) and duration.
pub fn gitlab_call(endpoint: &'static str, outcome: &'static str, took: Duration) {
    let m = metrics();
    m.gitlab_calls
        .get_or_create(&CallLabels { endpoint, outcome })
        .inc();
    m.gitlab_seconds
        .get_or_create(&EndpointLabel { endpoint })
        .observe(took.as_secs_f64());
}

/// A scheduled task whose runs are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Provisioning,
    Revalidation,
}

/// Counts a run of `task` by outcome; a success also sets its last success time (UNIX seconds).
pub fn run(task: Task, outcome: &'static str, succeeded_at: Option<i64>) {
    let m = metrics();
    let runs = match task {
        Task::Provisioning => &m.provisioning,
        Task::Revalidation => &m.revalidation,
    };
    runs.by_outcome
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
    if let Some(at) = succeeded_at {
        runs.last_success.set(at);
    }
}

/// What is read from the database when scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub sessions_active: i64,
    pub users_active: i64,
    pub users_deactivated: i64,
    pub database_bytes: i64,
    pub audit_events: i64,
}

/// The metrics in the text format, with `gauges` as read for this scrape.
pub fn encode(gauges: &Gauges) -> String {
    let m = metrics();
    m.sessions.set(gauges.sessions_active);
    m.users
        .get_or_create(&StateLabel { state: "active" })
        .set(gauges.users_active);
    m.users
        .get_or_create(&StateLabel {
            state: "deactivated",
        })
        .set(gauges.users_deactivated);
    m.database_bytes.set(gauges.database_bytes);
    m.audit_events.set(gauges.audit_events);
    m.scrapes.inc();
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        log::error!("metrics: encoding failed: {e}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_groups_come_from_a_fixed_set() {
        assert_eq!(route_group("/api/users/search"), "api");
        assert_eq!(route_group("/admin/users/edit"), "admin");
        assert_eq!(route_group("/"), "home");
        assert_eq!(route_group("/oauth2/callback/gitlab"), "oauth2");
        assert_eq!(route_group("/anything/ann@example.org"), "other");
        assert_eq!(route_group("/metrics"), "metrics");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(303), "3xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }

    #[test]
    fn the_text_parses_as_prometheus_and_counts() {
        request("api", 200, Duration::from_millis(3));
        sign_in("local", "failed", "wrong-password");
        let text = encode(&Gauges {
            users_active: 7,
            ..Gauges::default()
        });
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let value = |name: &str, labels: &[(&str, &str)]| {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .map(|s| s.value.clone())
        };
        assert_eq!(
            value("labgate_users", &[("state", "active")]),
            Some(prometheus_parse::Value::Gauge(7.0))
        );
        assert!(
            value(
                "labgate_http_requests_total",
                &[("group", "api"), ("status", "2xx")]
            )
            .is_some(),
            "{text}"
        );
        assert!(
            value(
                "labgate_sign_ins_total",
                &[("provider", "local"), ("reason", "wrong-password")]
            )
            .is_some(),
            "{text}"
        );
    }
}
