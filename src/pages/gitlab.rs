//! Sign-in with GitLab: start (`/sessions/init/gitlab`), callback
//! (`/oauth2/callback/gitlab`) and the refusal page (`/sessions/unauthorized`). The rules are
//! `provisioning`'s, the database steps `signin`'s, the HTTP calls `gitlab`'s.

use super::safe_return_to;
use crate::crypto;
use crate::db::oauth;
use crate::error::{AppError, AppResult};
use crate::gitlab::{self, GitlabSettings};
use crate::gitlab_config::{self, GitlabConfig};
use crate::provisioning::{self, Refusal};
use crate::signin::{self, GitlabIdentity, SignInError};
use crate::web::auth;
use crate::web::request::Resp;
use crate::web::views::{render, Layout};
use crate::web::Ctx;
use askama::Template;
use std::time::{Duration, Instant};

/// Cookie binding a started sign-in to the browser that started it.
pub const BROWSER_COOKIE: &str = "labgate_oauth";
/// Cookie naming the stored reason of a refused sign-in.
pub const REFUSAL_COOKIE: &str = "labgate_refusal";
/// The callback answers within this, whatever GitLab does: under the 15 s a person waits
/// before giving up, and under typical proxy timeouts.
const CALLBACK_BUDGET: Duration = Duration::from_secs(14);

pub use crate::gitlab_config::redirect_uri;

fn settings_of(config: &GitlabConfig) -> Option<GitlabSettings> {
    Some(GitlabSettings {
        url: config.url.clone(),
        application_id: config.application_id.clone()?,
        secret: config.secret.clone()?,
    })
}

/// A cookie of the sign-in; `secure` from [`auth::secure_for`] (the base URL is read once per
/// request and passed along).
fn cookie(secure: &str, name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

pub fn init(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let return_to = safe_return_to(ctx.req.query.get("return_to"));
    let config = gitlab_config::load(&ctx.conn)?;
    let Some(settings) = settings_of(&config).filter(|_| config.enabled) else {
        return refuse(
            ctx,
            Refusal::Generic,
            None,
            "GitLab sign-in is not enabled or not configured",
        );
    };
    // Each start stores a pending sign-in: bound how many one network may start (the client
    // address as `server::client_address` decides it). The table itself is capped.
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
    let base_url = ctx.base_url();
    let state = crypto::random_hex(32);
    let browser = crypto::random_hex(32);
    let pkce = gitlab::new_pkce();
    oauth::insert_state(
        &ctx.conn,
        &state,
        &browser,
        &pkce.verifier,
        &return_to,
        ctx.now,
    )?;
    let url = gitlab::authorize_url(
        &settings,
        &redirect_uri(&base_url),
        config.scope(),
        &state,
        &pkce.challenge,
    );
    let secure = auth::secure_for(&base_url);
    let set = cookie(secure, BROWSER_COOKIE, &browser, oauth::STATE_TTL_SECS);
    ctx.cookies.push(set);
    Ok(Resp::found(&url))
}

pub fn callback(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let deadline = Instant::now() + CALLBACK_BUDGET;
    let base_url = ctx.base_url();
    let secure = auth::secure_for(&base_url);
    let clear = cookie(secure, BROWSER_COOKIE, "", 0);
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
    // Step 2: the state must be known, fresh, unused and bound to this browser. Consumed first.
    let state = ctx.req.query.get("state").unwrap_or("");
    let pending = if state.is_empty() {
        None
    } else {
        oauth::take_state(&ctx.conn, state)?
    };
    let browser = ctx.req.cookie(BROWSER_COOKIE).unwrap_or("");
    let Some(pending) = pending else {
        return refuse(
            ctx,
            Refusal::Generic,
            None,
            "state missing, unknown or already used",
        );
    };
    if browser.is_empty() || !crypto::ct_eq(&crypto::sha256_hex(browser), &pending.browser_hash) {
        return refuse(
            ctx,
            Refusal::Generic,
            None,
            "state started by another browser",
        );
    }
    if ctx.now - pending.created_at >= oauth::STATE_TTL_SECS {
        return refuse(ctx, Refusal::Generic, None, "state expired");
    }
    if let Some(error) = ctx.req.query.get("error") {
        let detail = format!("GitLab answered error={error:?}");
        return refuse(ctx, Refusal::Generic, None, &detail);
    }
    let Some(code) = ctx.req.query.get("code").filter(|c| !c.is_empty()) else {
        return refuse(ctx, Refusal::Generic, None, "callback without a code");
    };
    let config = gitlab_config::load(&ctx.conn)?;
    let Some(settings) = settings_of(&config).filter(|_| config.enabled) else {
        return refuse(
            ctx,
            Refusal::Generic,
            None,
            "GitLab sign-in is not enabled or not configured",
        );
    };
    // Steps 3 to 5 call GitLab, which may take seconds: no connection is held meanwhile, so
    // that a slow GitLab cannot starve other requests of connections.
    let app = ctx.app;
    let redirect = redirect_uri(&base_url);
    let asked = ctx.conn.released(crate::web::POOL_WAIT, || {
        ask_gitlab(
            app,
            &settings,
            &config,
            &redirect,
            code,
            &pending.verifier,
            deadline,
        )
    })?;
    let (user, groups) = match asked {
        Ok(answer) => answer,
        Err((refusal, username, detail)) => {
            return refuse(ctx, refusal, username.as_deref(), &detail)
        }
    };
    // Steps 7 to 12, one transaction; the browser's previous session ends in it.
    let who = GitlabIdentity {
        id: user.id,
        username: user.username.clone(),
        name: user.name.clone(),
        email: user.email.clone(),
    };
    let previous = ctx.caller.as_ref().and_then(|c| c.session());
    let previous = previous.map(|s| s.id_hash.clone());
    let done = signin::complete(
        &mut ctx.conn,
        &config,
        &who,
        &groups,
        previous.as_deref(),
        ctx.now,
    );
    match done {
        Ok(done) => {
            log::info!(
                "sign-in provider=gitlab username={:?} outcome=accepted login={:?}{}",
                user.username,
                done.user.login,
                if done.created { " created=true" } else { "" }
            );
            let cookies = auth::session_cookies_with(secure, &done.session_value, &done.csrf_token);
            ctx.cookies.extend(cookies);
            Ok(Resp::found(&safe_return_to(Some(&pending.return_to))))
        }
        Err(SignInError::Refused(refusal)) => {
            refuse(ctx, refusal, Some(&user.username), "sign-in rule")
        }
        Err(SignInError::Failed(e)) => refuse(
            ctx,
            Refusal::Generic,
            Some(&user.username),
            &format!("database: {e}"),
        ),
    }
}

/// A refused sign-in before anything is written: the reason, GitLab's username when known,
/// and the detail for the log.
type Refused = (Refusal, Option<String>, String);

/// Steps 3 to 6: the code exchanged for a token, the user and (when needed) their groups read,
/// the account state and the allowed groups checked. No database access here.
fn ask_gitlab(
    app: &crate::web::App,
    settings: &GitlabSettings,
    config: &GitlabConfig,
    redirect: &str,
    code: &str,
    verifier: &str,
    deadline: Instant,
) -> Result<(gitlab::GitlabUser, Vec<String>), Refused> {
    let client = &app.gitlab;
    let token = client
        .exchange_code(settings, redirect, code, verifier, deadline)
        .map_err(|e| (Refusal::Generic, None, format!("token exchange: {e}")))?;
    let user = client
        .current_user(settings, &token, deadline)
        .map_err(|e| (Refusal::Generic, None, format!("reading the user: {e}")))?;
    let username = Some(user.username.clone());
    if user.state != "active" {
        let detail = format!("GitLab state is {:?}", user.state);
        return Err((Refusal::GitlabAccountInactive, username, detail));
    }
    // Project, group and service-account bots are not people: refused with the allowed-groups
    // reason, whatever their groups.
    if user.bot {
        let detail = "GitLab bot account".to_string();
        return Err((Refusal::NotInAllowedGroups, username, detail));
    }
    let groups = if provisioning::groups_needed(config.synchronize_groups, &config.allowed_groups) {
        client
            .user_groups(settings, &token, deadline)
            .map_err(|e| {
                (
                    Refusal::Generic,
                    username.clone(),
                    format!("reading the groups: {e}"),
                )
            })?
    } else {
        Vec::new()
    };
    // Step 6: allowed groups, before anything is written.
    if !provisioning::in_allowed_groups(&groups, &config.allowed_groups) {
        let detail = "no allowed group".to_string();
        return Err((Refusal::NotInAllowedGroups, username, detail));
    }
    Ok((user, groups))
}

/// Logs the decision and sends the browser to the refusal page. A reason to show is stored
/// server-side under a random key named by a cookie; a generic refusal (no reason) stores
/// nothing, so that anonymous requests cannot fill the database.
fn refuse(
    ctx: &mut Ctx<'_>,
    refusal: Refusal,
    username: Option<&str>,
    detail: &str,
) -> AppResult<Resp> {
    log::warn!(
        "sign-in provider=gitlab username={:?} outcome=refused reason={:?} detail={detail}",
        username.unwrap_or("-"),
        refusal.tag()
    );
    if let Some(reason) = refusal.reason() {
        let key = crypto::random_hex(32);
        oauth::insert_refusal(&ctx.conn, &key, Some(&reason), ctx.now)?;
        let secure = auth::secure_attribute(ctx.app, &ctx.conn);
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
