//! One request being handled: the state, the request, a pooled connection, the time, the
//! caller, and the cookies to set; and what pages and API both do with them (a flash, a
//! revalidation asked for now).

use super::auth::Caller;
use super::request::Req;
use super::App;
use crate::audit::By;
use crate::db::PooledConn;
use crate::error::{AppError, AppResult};

/// One request being handled.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub req: &'a Req,
    pub conn: PooledConn<'a>,
    /// The time of the request, UTC seconds.
    pub now: i64,
    /// The same time in UTC milliseconds (the audit log's resolution).
    pub now_ms: i64,
    pub caller: Option<Caller>,
    /// `Set-Cookie` values to add to the response.
    pub cookies: Vec<String>,
}

impl Ctx<'_> {
    /// The signed-in caller; routes with `Access::User` or `Access::Admin` always have one.
    pub fn caller(&self) -> AppResult<&Caller> {
        self.caller
            .as_ref()
            .ok_or_else(|| AppError::Unauthorized("Authentication is required".into()))
    }

    /// Who acts in this request, for the audit log: the caller's login (none before sign-in),
    /// the client address, the request id and the time.
    pub fn by(&self) -> By {
        super::auth::by_of(self.req, self.caller.as_ref(), self.now_ms)
    }

    /// Ends the caller's session, if the caller has one (a sign-out), and clears the cookies.
    pub fn sign_out(&mut self) -> AppResult<()> {
        // Read before the sign-out's commit, which moves the commit generation.
        let domain = super::auth::cookie_domain(self.app, &self.conn)?;
        if let Some(caller) = &self.caller {
            if let Some(session) = caller.session() {
                let by = self.by();
                let (login, id_hash) = (caller.user.login.clone(), session.id_hash.clone());
                crate::accounts::sign_out(&mut self.conn, &by, &login, &id_hash)?;
            }
        }
        self.cookies
            .extend(super::auth::clear_cookies(domain.as_deref()));
        Ok(())
    }

    pub fn base_url(&self) -> String {
        self.app.base_url(&self.conn)
    }

    /// Stores a one-shot confirmation shown on the next page of this session.
    pub fn flash(&self, message: &str) -> AppResult<()> {
        if let Some(session) = self.caller.as_ref().and_then(|c| c.session()) {
            crate::db::sessions::set_flash(&self.conn, &session.id_hash, message)?;
        }
        Ok(())
    }

    /// Runs a revalidation of the GitLab users now, asked by the caller ("Revalidate now",
    /// `POST /api/v2/labgate/gitlab-revalidations`), with the request's connection given back
    /// while GitLab answers. [`AppError::Conflict`] while a run goes on.
    pub fn revalidate_now(&mut self) -> AppResult<crate::revalidation::Run> {
        use crate::revalidation::{run, Trigger};
        let by = self.caller()?.user.login.clone();
        let (app, now) = (self.app, self.now);
        log::info!("revalidation asked by {by:?}");
        self.conn.released(super::POOL_WAIT, || {
            run(
                &app.pool,
                &app.gitlab,
                &app.revalidations,
                Trigger::Manual,
                now,
            )
        })?
    }
}
