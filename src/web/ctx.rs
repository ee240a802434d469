//! One request being handled: the state, the request, a pooled connection, the time, the
//! caller, and the cookies to set; and what pages and API both do with them (a flash, a
//! revalidation asked for now).

use super::auth::Caller;
use super::request::Req;
use super::App;
use crate::db::PooledConn;
use crate::error::{AppError, AppResult};

/// One request being handled.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub req: &'a Req,
    pub conn: PooledConn<'a>,
    pub now: i64,
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
