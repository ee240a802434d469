//! HTTP plumbing shared by pages and API, each part using only those listed before it:
//! `request` (a request and a response as handlers see them), `caller_cache` and the state
//! [`App`] (here), `auth` (who is asking), `ctx` (one request being handled), `views` (what
//! every page shares), `dispatch` (route → who is asking → may they → CSRF → handler → error
//! mapping). The handlers (`crate::pages`, `crate::api`) stand on it; the route table
//! (`crate::routes`) stands above them and comes in to `dispatch` as data.

pub mod auth;
pub mod caller_cache;
pub mod ctx;
pub mod dispatch;
pub mod request;
pub mod views;

pub use ctx::Ctx;
pub use dispatch::{dispatch, error_response, Access, Handler, Route, ANY_METHOD};

use crate::config::Config;
use crate::db::Pool;
use crate::throttle::Throttle;
use rusqlite::Connection;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the handlers share, for the life of the process.
pub struct App {
    pub config: Config,
    pub pool: Pool,
    pub throttle: Throttle,
    /// Password verifications running at once.
    pub hashing: crate::throttle::HashingSlots,
    /// GitLab sign-ins started per client network.
    pub sign_in_starts: crate::throttle::SignInStarts,
    /// GitLab sign-in callbacks per client network (each may cost calls to GitLab).
    pub sign_in_callbacks: crate::throttle::SignInStarts,
    /// The address actually bound (port 0 resolved).
    pub bound: SocketAddr,
    /// Set on SIGTERM: new requests answer 503.
    pub draining: AtomicBool,
    /// Requests being handled right now.
    pub in_flight: AtomicUsize,
    pub server_id: String,
    /// The one configured HTTP client for GitLab.
    pub gitlab: crate::gitlab::Client,
    /// Session and token callers recently resolved.
    pub callers: caller_cache::CallerCache,
    /// Logins whose failed sign-ins got an audit event of their own this minute.
    pub failure_events: crate::audit::FailureEvents,
    /// When old audit events were last removed.
    pub retention: crate::audit::Retention,
    /// Who was refused at which application this minute (one audit event a minute each).
    pub gate_refusals: crate::audit::OncePerMinute,
    /// GitLab sign-ins started and not yet called back.
    pub pending_sign_ins: crate::signin::pending::PendingSignIns,
    /// Automatic provisioning's runs, one at a time.
    pub provisioning: std::sync::Arc<crate::gitlab_provisioning::runner::Runner>,
    /// Whether a revalidation of GitLab users runs, and when the schedule counts from.
    pub revalidations: crate::revalidation::Revalidations,
    /// The applications behind labgate, held for the gate's checks.
    pub applications: crate::gate::Table,
    /// The stored settings, held until a setting changes.
    pub settings: crate::settings::Cache,
    /// The GitLab configuration of the settings held.
    pub gitlab_config: crate::gitlab_config::Held,
}

/// Connections the pool opens at most.
pub const POOL_SIZE: usize = 8;
/// Longest wait for a pooled connection before answering 503.
pub const POOL_WAIT: Duration = Duration::from_secs(10);

impl App {
    /// The state of a server bound to `bound`, with a pool of `pool_size` connections.
    pub fn new(
        config: Config,
        bound: SocketAddr,
        server_id: String,
        gitlab: crate::gitlab::Client,
        pool_size: usize,
    ) -> App {
        App {
            pool: Pool::new(config.db_path(), pool_size),
            provisioning: std::sync::Arc::new(crate::gitlab_provisioning::runner::Runner::new(
                config.db_path(),
                gitlab.clone(),
            )),
            config,
            throttle: Throttle::new(),
            hashing: crate::throttle::HashingSlots::per_core(),
            sign_in_starts: crate::throttle::SignInStarts::new(),
            sign_in_callbacks: crate::throttle::SignInStarts::new(),
            bound,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            server_id,
            gitlab,
            callers: caller_cache::CallerCache::default(),
            failure_events: crate::audit::FailureEvents::default(),
            retention: crate::audit::Retention::default(),
            gate_refusals: crate::audit::OncePerMinute::default(),
            pending_sign_ins: crate::signin::pending::PendingSignIns::default(),
            revalidations: crate::revalidation::Revalidations::new(chrono::Utc::now().timestamp()),
            applications: crate::gate::Table::default(),
            settings: crate::settings::Cache::default(),
            gitlab_config: crate::gitlab_config::Held::default(),
        }
    }

    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// The time in UTC milliseconds.
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    /// What the GitLab connection check needs of this server: its one GitLab client, the base
    /// URL given at start and the address it listens on; `by` is the admin asking.
    pub fn gitlab_asking<'a>(&'a self, by: &'a str) -> crate::gitlab_check::Asking<'a> {
        crate::gitlab_check::Asking {
            client: &self.gitlab,
            base_url_flag: self.config.base_url.as_deref(),
            bound: self.bound,
            by,
        }
    }

    /// The public base URL: `--base-url`, else the `sonar.core.serverBaseURL` setting, else the
    /// bound address.
    pub fn base_url(&self, conn: &Connection) -> String {
        if let Some(url) = &self.config.base_url {
            return url.clone();
        }
        match self.settings.current(conn) {
            Ok(stored) => self.base_url_of(&stored),
            Err(_) => format!("http://{}", self.bound),
        }
    }

    /// [`App::base_url`] with the settings already read.
    pub fn base_url_of(&self, stored: &crate::settings::Snapshot) -> String {
        if let Some(url) = &self.config.base_url {
            return url.clone();
        }
        match stored.stored(crate::settings::SERVER_BASE_URL) {
            Some(url) => url.to_string(),
            None => format!("http://{}", self.bound),
        }
    }
}
