//! The gate's checks: the lab's reverse proxy asks, for every request to an application behind
//! labgate, whether the person may enter. `/gate/nginx` (nginx's `auth_request`) reads the
//! original request from `X-Original-URL` and `X-Original-Method`, which the nginx
//! configuration sets; `/gate/forward` (Caddy's `forward_auth`, Traefik's `ForwardAuth`) from
//! `X-Forwarded-Proto`, `-Host`, `-Uri` and `-Method`, which those proxies set. Each reads only
//! its own family's headers: each proxy overwrites its own family and passes the other through
//! as the client sent it, so a header the client chose can never pick the application whose
//! rules apply.
//!
//! The answer is decided from memory for a known session or token: the applications come from
//! [`crate::gate::Table`] and the caller from the caller cache, both read again after any
//! commit, so a deactivation, a removed membership, an edited application or a sign-out is seen
//! by the very next check.

use crate::error::AppResult;
use crate::gate::applications::Application;
use crate::gate::rules::{self, Original};
use crate::gate::snippets::IDENTITY_HEADERS;
use crate::web::auth::{self, Caller};
use crate::web::request::Resp;
use crate::web::views::render;
use crate::web::Ctx;
use askama::Template;
use oxhttp::model::{HeaderName, HeaderValue};

/// Which proxy family asks: how it wants "not signed in" answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// nginx turns a 401 into a redirect to the `Location` labgate gives
    /// (`error_page 401 =302`): it cannot percent-encode the original URL itself.
    Nginx,
    /// Caddy and Traefik pass labgate's answer on as it is.
    Forward,
}

/// `/gate/nginx`: the original request from `X-Original-URL` and `X-Original-Method`.
pub fn nginx(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let req = ctx.req;
    let h = |name| req.header(name);
    let original = rules::from_nginx(h("x-original-url"), h("x-original-method"));
    check(ctx, original, Family::Nginx)
}

/// `/gate/forward`: the original request from `X-Forwarded-Proto`, `-Host`, `-Uri`, `-Method`.
pub fn forward(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let req = ctx.req;
    let h = |name| req.header(name);
    let original = rules::from_forward(
        h("x-forwarded-proto"),
        h("x-forwarded-host"),
        h("x-forwarded-uri"),
        h("x-forwarded-method"),
    );
    check(ctx, original, Family::Forward)
}

fn check(ctx: &mut Ctx<'_>, original: Option<Original<'_>>, family: Family) -> AppResult<Resp> {
    let Some(original) = original else {
        log::warn!(
            "gate: {} without a usable original URL (is the proxy configured as labgate shows?); refused",
            ctx.req.path
        );
        crate::metrics::gate_check("unknown-application");
        return unknown_application(ctx, None);
    };
    let apps = ctx.app.applications.current(&ctx.conn)?;
    let Some(app) = apps.find(&original.origin).cloned() else {
        log::warn!(
            "gate: no application at {} (host {}); refused",
            original.origin,
            original.origin.host
        );
        crate::metrics::gate_check("unknown-application");
        return unknown_application(ctx, Some(&original));
    };
    // Someone signed in with a generated password they must still change is let into no
    // application: labgate's pages send them to change it first, and the gate agrees.
    let caller = auth::gate_caller(ctx.app, &ctx.conn, ctx.req, ctx.now)?;
    let Some(caller) = caller.filter(|c| !c.user.must_change_password) else {
        crate::metrics::gate_check("unauthenticated");
        return not_signed_in(ctx, &original, family);
    };
    if rules::admits(&app.allowed_groups, &caller.groups) {
        crate::metrics::gate_check("allowed");
        return Ok(admitted(&caller));
    }
    crate::metrics::gate_check("refused");
    log::info!(
        "gate: refused login={:?} application={:?}",
        caller.user.login,
        app.name
    );
    // In the audit log once a minute per person and application: a page that keeps asking
    // must not fill it.
    let login = &caller.user.login;
    if ctx
        .app
        .gate_refusals
        .first(&format!("{}/{login}", app.id), ctx.now_ms)
    {
        let by = auth::by_of(ctx.req, None, ctx.now_ms).as_actor(login);
        crate::gate::record_refusal(&mut ctx.conn, &by, login, &app)?;
    }
    refused(ctx, &app, &caller)
}

/// 200 with who the person is, for the application. Values are ASCII without control
/// characters: other text percent-encoded as UTF-8 ([`rules::header_value`]). Written once per
/// cached identity, then shared by its checks.
fn admitted(caller: &Caller) -> Resp {
    let headers = caller.gate_headers.get_or_init(|| {
        let user = &caller.user;
        let login = rules::header_value(&user.login);
        let name = rules::header_value(&user.name);
        let email = rules::header_value(user.email.as_deref().unwrap_or(""));
        let groups = rules::groups_header(&caller.groups);
        // The values of `IDENTITY_HEADERS` (the names the proxies' snippets copy), in order.
        let values: [&str; IDENTITY_HEADERS.len()] = [
            &login, &name, &email, &groups, &login, &email, &groups, &login,
        ];
        let fields = IDENTITY_HEADERS.iter().zip(values).map(|(name, value)| {
            // Printable ASCII only (header_value), so always a valid header value.
            let value = HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""));
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
            (name, value)
        });
        std::sync::Arc::new(fields.collect())
    });
    Resp {
        status: 200,
        headers: Vec::new(),
        shared: Some(std::sync::Arc::clone(headers)),
        body: Vec::new(),
        stream: None,
    }
}

/// Not signed in: the sign-in page, which brings the person back to the original URL. For
/// `/gate/forward`, 302 there for a browser navigating to a page, else 401; for `/gate/nginx`
/// always 401 with that URL in `Location`, which the nginx configuration turns into the
/// redirect.
fn not_signed_in(ctx: &Ctx<'_>, original: &Original<'_>, family: Family) -> AppResult<Resp> {
    let sign_in = rules::sign_in_url(&ctx.base_url(), &original.url());
    let navigation = rules::browser_navigation(original.method, ctx.req.header("accept"));
    if family == Family::Forward && navigation {
        return Ok(Resp::found(&sign_in));
    }
    let resp = Resp::text(401, "Sign in to labgate first.")
        .with_header("WWW-Authenticate", "Bearer realm=\"labgate\"");
    Ok(match family {
        Family::Nginx => resp.with_header("Location", sign_in),
        Family::Forward => resp,
    })
}

#[derive(Template)]
#[template(path = "gate/refused.html")]
struct RefusedPage<'a> {
    base_url: &'a str,
    /// The person, when signed in.
    who: Option<(&'a str, &'a str)>,
    /// The application, when there is one at that address.
    application: Option<&'a str>,
    /// The address asked for, when there is no application there.
    address: Option<String>,
    /// The groups whose members may enter.
    groups: &'a [String],
}

/// A 403 page shown on the application's own address: its stylesheet comes from labgate, and
/// it may load nothing else.
fn refusal_page(page: &RefusedPage<'_>) -> AppResult<Resp> {
    let base = rules::Origin::split(page.base_url)
        .map(|(o, _)| o.to_string())
        .unwrap_or_default();
    Ok(render(403, page)?.with_header(
        "Content-Security-Policy",
        format!(
            "default-src 'none'; style-src {base}; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
        ),
    ))
}

/// 403: signed in, but in none of the application's allowed groups.
fn refused(ctx: &Ctx<'_>, app: &Application, caller: &Caller) -> AppResult<Resp> {
    let base_url = ctx.base_url();
    refusal_page(&RefusedPage {
        base_url: &base_url,
        who: Some((&caller.user.name, &caller.user.login)),
        application: Some(&app.name),
        address: None,
        groups: &app.allowed_groups,
    })
}

/// 403 whatever the credentials: no application is registered at that address.
fn unknown_application(ctx: &Ctx<'_>, original: Option<&Original<'_>>) -> AppResult<Resp> {
    let base_url = ctx.base_url();
    refusal_page(&RefusedPage {
        base_url: &base_url,
        who: None,
        application: None,
        address: Some(original.map_or_else(|| "this address".into(), |o| o.origin.to_string())),
        groups: &[],
    })
}
