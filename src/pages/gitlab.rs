//! Sign-in with GitLab: start (`/sessions/init/gitlab`), callback
//! (`/oauth2/callback/gitlab`) and the refusal page (`/sessions/unauthorized`). The rules are
//! `provisioning`'s, the database steps `signin`'s, the HTTP calls `gitlab`'s.

use super::return_to;
use crate::crypto;
use crate::db::{gitlab_sign_in_problem, oauth};
use crate::error::{AppError, AppResult};
use crate::gitlab::{self, GitlabSettings};
use crate::gitlab_config::GitlabConfig;
use crate::provisioning::{Claims, Refusal};
use crate::settings::Snapshot;
use crate::signin::pending::{PendingSignIn, STATE_TTL_SECS};
use crate::signin::{self, SignInError};
use crate::web::auth;
use crate::web::request::Resp;
use crate::web::views::{render, Layout};
use crate::web::{App, Ctx};
use askama::Template;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cookie binding a started sign-in to the browser that started it.
pub const BROWSER_COOKIE: &str = "labgate_oauth";
/// Cookie naming the stored reason of a refused sign-in.
pub const REFUSAL_COOKIE: &str = "labgate_refusal";
/// The callback answers within this, whatever GitLab does: under the 15 s a person waits
/// before giving up, and under typical proxy timeouts.
const CALLBACK_BUDGET: Duration = Duration::from_secs(14);

pub use crate::gitlab_config::redirect_uri;

/// A cookie of the sign-in; `secure` from [`auth::secure_for`] (the base URL is read once per
/// request and passed along).
fn cookie(secure: &str, name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// Why a sign-in stops short of a session: refused (the reason, GitLab's username when known,
/// the detail for the log, what an admin must change when labgate's registration in GitLab
/// is at fault, a short code of why, and whether the audit log gets it), or failed.
enum Stop {
    Refused {
        refusal: Refusal,
        username: Option<String>,
        detail: String,
        fix: Option<&'static str>,
        code: &'static str,
        audit: Audit,
    },
    Failed(AppError),
}

/// Whether a refusal goes to the audit log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audit {
    /// Recorded with the refusal page: the refusal of a sign-in that was started here (each
    /// start is bounded per network, so these cannot flood the log).
    Record,
    /// Recorded already, by the decision's transaction.
    Recorded,
    /// Not recorded: a request anyone can send without starting a sign-in (no or an unknown
    /// state, GitLab sign-in off), which would otherwise let anonymous requests fill the log.
    /// Counted in the metrics all the same.
    Skip,
}

impl From<AppError> for Stop {
    fn from(e: AppError) -> Self {
        Stop::Failed(e)
    }
}

impl Stop {
    fn refused(refusal: Refusal, username: Option<&str>, detail: impl Into<String>) -> Stop {
        Stop::Refused {
            code: refusal.code(),
            refusal,
            username: username.map(str::to_string),
            detail: detail.into(),
            fix: None,
            audit: Audit::Skip,
        }
    }

    /// A generic refusal with a code of why, recorded when `audit` says so.
    fn generic(code: &'static str, detail: impl Into<String>, audit: Audit) -> Stop {
        Stop::Refused {
            refusal: Refusal::Generic,
            username: None,
            detail: detail.into(),
            fix: None,
            code,
            audit,
        }
    }

    /// The same refusal, recorded with the refusal page unless it was already.
    fn recorded(mut self) -> Stop {
        if let Stop::Refused { audit, .. } = &mut self {
            if *audit != Audit::Recorded {
                *audit = Audit::Record;
            }
        }
        self
    }

    /// A generic refusal because GitLab failed: when the failure comes from labgate's
    /// registration in GitLab, the fix goes to the log and to the admins' GitLab tab.
    fn gitlab_failed(what: &str, error: gitlab::GitlabError) -> Stop {
        Stop::Refused {
            refusal: Refusal::Generic,
            username: None,
            detail: format!("{what}: {error}"),
            fix: error.configuration_fix(),
            code: error.code(),
            audit: Audit::Record,
        }
    }

    /// The refusal page ([`refuse`]), or the error.
    fn answer(self, ctx: &mut Ctx<'_>) -> AppResult<Resp> {
        match self {
            Stop::Refused {
                refusal,
                username,
                detail,
                fix,
                code,
                audit,
            } => {
                let why = Why {
                    refusal,
                    username: username.as_deref(),
                    detail: &detail,
                    fix,
                    code,
                };
                refuse(ctx, why, audit)
            }
            Stop::Failed(e) => Err(e),
        }
    }
}

/// The configuration and the settings to call GitLab with; a refusal when GitLab sign-in is
/// not enabled or not configured.
fn enabled_config(
    app: &App,
    stored: &Arc<Snapshot>,
) -> Result<(Arc<GitlabConfig>, GitlabSettings), Stop> {
    let config = app.gitlab_config.of(stored)?;
    match config.gitlab_settings().filter(|_| config.enabled) {
        Some(settings) => Ok((config, settings)),
        None => Err(Stop::refused(
            Refusal::Generic,
            None,
            "GitLab sign-in is not enabled or not configured",
        )),
    }
}

pub fn init(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let return_to = return_to(ctx, ctx.req.query.get("return_to"))?;
    let stored = ctx.app.settings.current(&ctx.conn)?;
    let (config, settings) = match enabled_config(ctx.app, &stored) {
        Ok(enabled) => enabled,
        Err(stop) => return stop.answer(ctx),
    };
    // Each start stores a pending sign-in: bound how many one network may start (the client
    // address is the one the server put in the request). The table itself is capped.
    let address = ctx.req.client_ip;
    if let Some(Err(wait)) = address.map(|ip| ctx.app.sign_in_starts.record(ip, ctx.now)) {
        log::warn!("sign-in gitlab: too many sign-ins started from {address:?}; refused");
        return Err(AppError::too_many(
            format!(
                "Too many sign-ins were started from your network address. Try again in {} minutes.",
                (wait + 59) / 60
            ),
            wait,
        ));
    }
    let base_url = ctx.app.base_url_of(&stored);
    let state = crypto::random_hex(32);
    let browser = crypto::random_hex(32);
    let pkce = gitlab::new_pkce();
    ctx.app
        .pending_sign_ins
        .insert(&state, &browser, &pkce.verifier, &return_to, ctx.now);
    let url = gitlab::authorize_url(
        &settings,
        &redirect_uri(&base_url),
        config.scope(),
        &state,
        &pkce.challenge,
    );
    let secure = auth::secure_for(&base_url);
    let set = cookie(secure, BROWSER_COOKIE, &browser, STATE_TTL_SECS);
    ctx.cookies.push(set);
    Ok(Resp::found(&url))
}

pub fn callback(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let deadline = Instant::now() + CALLBACK_BUDGET;
    // The settings, read once: a sign-in reads nothing more until its transaction.
    let stored = ctx.app.settings.current(&ctx.conn)?;
    let base_url = ctx.app.base_url_of(&stored);
    let clear = cookie(auth::secure_for(&base_url), BROWSER_COOKIE, "", 0);
    ctx.cookies.push(clear);
    // Each callback may cost calls to GitLab: bounded per network like the starts.
    let address = ctx.req.client_ip;
    if let Some(Err(wait)) = address.map(|ip| ctx.app.sign_in_callbacks.record(ip, ctx.now)) {
        log::warn!("sign-in gitlab: too many callbacks from {address:?}; refused");
        return Err(AppError::too_many(
            "Too many sign-ins were completed from your network address. Try again later.",
            wait,
        ));
    }
    match sign_in(ctx, &stored, &base_url, deadline) {
        Ok(return_to) => Ok(Resp::found(&return_to)),
        Err(stop) => stop.answer(ctx),
    }
}

/// The callback's steps: take the state, ask GitLab, then decide and apply in one transaction
/// ([`signin::complete`]). Returns where to send the signed-in browser.
fn sign_in(
    ctx: &mut Ctx<'_>,
    stored: &Arc<Snapshot>,
    base_url: &str,
    deadline: Instant,
) -> Result<String, Stop> {
    let (pending, code) = take_state(ctx)?;
    // From here on, a started sign-in is refused: the audit log records it.
    let (config, settings) = enabled_config(ctx.app, stored).map_err(Stop::recorded)?;
    // Where the browser goes and the session cookie's domain, settled before the transaction:
    // nothing is read after it.
    let target = return_to(ctx, Some(&pending.return_to)).map_err(Stop::Failed)?;
    let domain = auth::cookie_domain_of(ctx.app, stored);
    // GitLab may take seconds: no connection is held meanwhile, so that a slow GitLab cannot
    // starve other requests of connections.
    let (app, redirect) = (ctx.app, redirect_uri(base_url));
    let grant = Grant {
        code: &code,
        verifier: &pending.verifier,
        redirect: &redirect,
    };
    let (claims, refresh_token) = ctx.conn.released(crate::web::POOL_WAIT, || {
        ask_gitlab(app, &settings, &grant, deadline)
    })??;
    let username = Some(claims.username.as_str());
    let previous = ctx.caller.as_ref().and_then(|c| c.session());
    let previous = previous.map(|s| s.id_hash.as_str());
    let refresh_token = refresh_token.as_deref();
    let by = crate::web::auth::by_of(ctx.req, None, ctx.now_ms);
    let done = signin::complete(
        &mut ctx.conn,
        &by,
        &config,
        &claims,
        refresh_token,
        previous,
        ctx.now,
    );
    let done = done.map_err(|e| match e {
        SignInError::Refused(r) => Stop::Refused {
            code: r.refusal.code(),
            refusal: r.refusal,
            username: username.map(str::to_string),
            detail: r.detail,
            fix: None,
            audit: Audit::Recorded,
        },
        SignInError::Failed(e) => {
            let stop = Stop::refused(Refusal::Generic, username, format!("database: {e}"));
            stop.recorded()
        }
    })?;
    log::info!(
        "sign-in provider=gitlab username={:?} outcome=accepted login={:?}{}",
        claims.username,
        done.user.login,
        if done.created { " created=true" } else { "" }
    );
    let (value, csrf) = (&done.session_value, &done.csrf_token);
    let cookies = auth::session_cookies_for(base_url, domain.as_deref(), value, csrf);
    ctx.cookies.extend(cookies);
    Ok(target)
}

/// The pending sign-in of the callback's state, consumed first whatever follows: it must be
/// known, unused, started by this browser and fresh; and GitLab's code, unless GitLab answered
/// an error.
fn take_state(ctx: &Ctx<'_>) -> Result<(PendingSignIn, String), Stop> {
    let refused = |code, detail: &str| Stop::generic(code, detail, Audit::Record);
    let state = ctx.req.query.get("state").unwrap_or("");
    let pending = match state {
        "" => None,
        state => ctx.app.pending_sign_ins.take(state),
    };
    let Some(pending) = pending else {
        let detail = "state missing, unknown or already used";
        return Err(Stop::generic("state-unknown", detail, Audit::Skip));
    };
    let browser = ctx.req.cookie(BROWSER_COOKIE).unwrap_or("");
    if browser.is_empty() || !crypto::ct_eq_digest(&crypto::sha256(browser), &pending.browser_hash)
    {
        return Err(refused(
            "state-mismatch",
            "state started by another browser",
        ));
    }
    if ctx.now - pending.created_at >= STATE_TTL_SECS {
        return Err(refused("state-expired", "state expired"));
    }
    if let Some(error) = ctx.req.query.get("error") {
        let detail = format!("GitLab answered error={error:?}");
        // GitLab refuses to authorize scopes the application lacks: an application registered
        // before labgate asked for openid and email.
        return Err(match error {
            "invalid_scope" => Stop::Refused {
                refusal: Refusal::Generic,
                username: None,
                detail,
                fix: Some(gitlab::FIX_SCOPES),
                code: "gitlab-invalid-scope",
                audit: Audit::Record,
            },
            _ => refused("gitlab-error", &detail),
        });
    }
    match ctx.req.query.get("code").filter(|c| !c.is_empty()) {
        Some(code) => Ok((pending, code.to_string())),
        None => Err(refused("no-code", "callback without a code")),
    }
}

/// What exchanging GitLab's code for a token takes: the code, the PKCE verifier of the pending
/// sign-in, and the redirect URI the code was sent to.
struct Grant<'a> {
    code: &'a str,
    verifier: &'a str,
    redirect: &'a str,
}

/// Asks GitLab who signed in: the code exchanged for tokens, then the person and their groups
/// from OIDC userinfo, in one call that the token's `openid` scope allows. Returns the claims
/// and the refresh token to keep for the revalidation (none when the token could read more
/// than [`crate::provisioning::SCOPES`]). No database access here.
fn ask_gitlab(
    app: &crate::web::App,
    settings: &GitlabSettings,
    grant: &Grant<'_>,
    deadline: Instant,
) -> Result<(Claims, Option<String>), Stop> {
    let client = &app.gitlab;
    let (code, verifier) = (grant.code, grant.verifier);
    let tokens = client
        .exchange_code(settings, grant.redirect, code, verifier, deadline)
        .map_err(|e| Stop::gitlab_failed("token exchange", e))?;
    let info = client
        .userinfo(settings, &tokens.access, deadline)
        .map_err(|e| Stop::gitlab_failed("reading userinfo", e))?;
    let refresh = match crate::provisioning::keeps_refresh_token(tokens.scopes.as_deref()) {
        true => tokens.refresh,
        false => {
            log::warn!(
                "sign-in provider=gitlab username={:?}: GitLab granted the scopes {:?}, more \
                 than {:?}: the refresh token is not kept",
                info.username,
                tokens.scopes.unwrap_or_default().join(" "),
                crate::provisioning::SCOPES
            );
            None
        }
    };
    Ok((signin::claims_of(info), refresh))
}

/// What a refusal says: the reason, who when known, the detail for the log, the fix an admin
/// must make when labgate's registration in GitLab is at fault, and a short code of why.
struct Why<'a> {
    refusal: Refusal,
    username: Option<&'a str>,
    detail: &'a str,
    fix: Option<&'static str>,
    code: &'static str,
}

/// Logs the decision, records it in the audit log when `audit` says so, and sends the browser
/// to the refusal page. A reason to show is stored server-side under a random key named by a
/// cookie; a generic refusal (no reason) stores nothing, so that anonymous requests cannot fill
/// the database.
fn refuse(ctx: &mut Ctx<'_>, why: Why<'_>, audit: Audit) -> AppResult<Resp> {
    let Why {
        refusal,
        username,
        detail,
        fix,
        code,
    } = why;
    // Read before the writes below, which move the commit generation.
    let secure = auth::secure_attribute(ctx.app, &ctx.conn);
    log::warn!(
        "sign-in provider=gitlab username={:?} outcome=refused reason={:?} detail={detail}{}",
        username.unwrap_or("-"),
        refusal.tag(),
        fix.map(|f| format!(" fix: {f}")).unwrap_or_default()
    );
    if let Some(fix) = fix {
        // Shown to the admins on the GitLab tab until a sign-in succeeds.
        gitlab_sign_in_problem::record(&ctx.conn, detail, fix, ctx.now)?;
    }
    match audit {
        Audit::Record => {
            let by = crate::web::auth::by_of(ctx.req, None, ctx.now_ms);
            signin::record_refusal(&mut ctx.conn, &by, username, code, detail)?;
        }
        Audit::Skip => crate::metrics::sign_in("gitlab", "refused", code),
        Audit::Recorded => {}
    }
    if let Some(reason) = refusal.reason() {
        let key = crypto::random_hex(32);
        oauth::insert_refusal(&ctx.conn, &key, Some(&reason), ctx.now)?;
        let set = cookie(secure, REFUSAL_COOKIE, &key, oauth::REFUSAL_TTL_SECS);
        ctx.cookies.push(set);
    }
    Ok(Resp::found("/sessions/unauthorized"))
}

#[derive(Template)]
#[template(path = "sessions/unauthorized.html")]
struct UnauthorizedPage {
    l: Layout,
    reason: Option<String>,
}

pub fn unauthorized(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let reason = match ctx.req.cookie(REFUSAL_COOKIE) {
        Some(key) if !key.is_empty() => oauth::take_refusal(&ctx.conn, key, ctx.now)?.flatten(),
        _ => None,
    };
    let clear = cookie(
        auth::secure_attribute(ctx.app, &ctx.conn),
        REFUSAL_COOKIE,
        "",
        0,
    );
    ctx.cookies.push(clear);
    render(
        200,
        &UnauthorizedPage {
            l: Layout::anonymous("Not authorized"),
            reason,
        },
    )
}
