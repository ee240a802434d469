//! One request being handled: the state, the request, a pooled connection, the time, the
//! caller, and the cookies to set.

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
}
