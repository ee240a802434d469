//! Server-rendered pages for everyone: sign-in, home, account (profile, password, tokens).
//! Admin pages live in the `admin_*` modules; what every page shares (layout, the error page)
//! is in `web::views`.

mod admin;
pub mod admin_applications;
pub mod admin_audit;
pub mod admin_gitlab;
pub mod admin_gitlab_section;
pub mod admin_groups;
pub mod admin_permissions;
pub mod admin_settings;
pub mod admin_users;
pub mod gate;
pub mod gitlab;

use crate::accounts;
use crate::db::{tokens, users};
use crate::error::{AppError, AppResult};
use crate::model::FieldError;
use crate::web::auth;
use crate::web::request::Resp;
use crate::web::views::{self, render, Layout};
use crate::web::Ctx;
use askama::Template;

/// Field errors of a form, looked up by field name in templates.
#[derive(Default)]
pub struct FormErrors(pub Vec<FieldError>);

impl FormErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    /// Errors not tied to a shown field (rules, throttling...).
    pub fn general(&self, shown: &[&str]) -> Vec<&str> {
        self.0
            .iter()
            .filter(|e| !shown.contains(&e.field))
            .map(|e| e.message.as_str())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Turns a handler error into form errors, or passes on errors that are not about input.
    pub fn from_error(err: AppError) -> AppResult<FormErrors> {
        match err {
            AppError::Invalid(errors) => Ok(FormErrors(errors)),
            AppError::Rule(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m)
            | AppError::TooManyRequests { message: m, .. } => {
                Ok(FormErrors(vec![FieldError::new("form", m)]))
            }
            other => Err(other),
        }
    }
}

/// A `return_to` that stays on this site: `/` followed by a letter, digit or `_`; else `/`.
pub fn safe_return_to(raw: Option<&str>) -> String {
    match raw {
        Some(path)
            if path.len() <= 2048
                && path.starts_with('/')
                && path[1..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && !path.chars().any(|c| c == '\\' || c.is_control()) =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

/// Where a sign-in sends the person afterwards: a local path ([`safe_return_to`]), or the
/// absolute URL of a page of an application behind labgate (registered under Applications);
/// anything else, `/`. Both sign-ins, the local form and GitLab's, go through here.
pub fn return_to(ctx: &Ctx<'_>, raw: Option<&str>) -> AppResult<String> {
    let apps = || ctx.app.applications.current(&ctx.conn);
    crate::gate::return_to(raw, apps, safe_return_to)
}

/// Cookie carrying the sign-in form's CSRF token (double submit: before sign-in there is no
/// session to hold it).
pub const LOGIN_CSRF_COOKIE: &str = "labgate_login_csrf";

#[derive(Template)]
#[template(path = "sessions/new.html")]
struct LoginPage {
    l: Layout,
    csrf: String,
    login: String,
    return_to: String,
    error: Option<String>,
    gitlab_enabled: bool,
}

fn render_login(
    ctx: &mut Ctx<'_>,
    status: u16,
    login: &str,
    return_to: String,
    error: Option<String>,
) -> AppResult<Resp> {
    let csrf = crate::crypto::random_hex(16);
    let secure = auth::secure_attribute(ctx.app, &ctx.conn);
    ctx.cookies.push(format!(
        "{LOGIN_CSRF_COOKIE}={csrf}; Path=/sessions/new; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    ));
    // The form's answer redirects to `return_to`: when that is an application's page, the
    // page's policy must let the form lead there.
    let target = crate::gate::rules::absolute_return_to(&return_to);
    let page = render(
        status,
        &LoginPage {
            l: Layout::anonymous("Sign in"),
            csrf,
            login: login.to_string(),
            return_to,
            error,
            gitlab_enabled: gitlab_sign_in_offered(ctx),
        },
    )?;
    Ok(match target {
        Some(origin) => page.with_header(
            "Content-Security-Policy",
            views::csp_with_form_target(&origin.to_string()),
        ),
        None => page,
    })
}

/// Whether "Log in with GitLab" is offered: enabled, with application ID and secret.
fn gitlab_sign_in_offered(ctx: &Ctx<'_>) -> bool {
    let stored = ctx.app.settings.current(&ctx.conn);
    stored.is_ok_and(|s| ctx.app.gitlab_config.of(&s).is_ok_and(|c| c.usable()))
}

pub fn login_form(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let return_to = return_to(ctx, ctx.req.query.get("return_to"))?;
    match &ctx.caller {
        // Sent here by the gate: no application before the password is changed.
        Some(caller) if caller.user.must_change_password => Ok(Resp::redirect("/account/password")),
        Some(_) => Ok(Resp::redirect(&return_to)),
        None => render_login(ctx, 200, "", return_to, None),
    }
}

pub fn login_submit(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.form.get("login").unwrap_or("").trim().to_string();
    let password = ctx.req.form.get("password").unwrap_or("").to_string();
    let return_to = return_to(ctx, ctx.req.form.get("return_to"))?;
    let form_token = ctx.req.form.get(auth::CSRF_FIELD).unwrap_or("");
    let cookie_token = ctx.req.cookie(LOGIN_CSRF_COOKIE).unwrap_or("");
    let cross_site = auth::cross_site(ctx.req, &ctx.base_url());
    if cross_site || form_token.is_empty() || !crate::crypto::ct_eq(form_token, cookie_token) {
        let message = "This sign-in form has expired. Please sign in again.";
        return render_login(ctx, 403, &login, return_to, Some(message.into()));
    }
    if login.is_empty() || password.is_empty() {
        return render_login(
            ctx,
            422,
            &login,
            return_to,
            Some("Enter your login and password.".into()),
        );
    }
    let by = ctx.by();
    match auth::check_password(ctx.app, &mut ctx.conn, &login, &password, &by, ctx.now) {
        Ok(user) => {
            log::info!(
                "sign-in provider=local login={:?} outcome=accepted",
                user.login
            );
            // A fresh session id at every sign-in; any previous one is ended.
            let previous = ctx.caller.as_ref().and_then(|c| c.session());
            let previous = previous.map(|s| s.id_hash.clone());
            let cookies = auth::start_session(
                ctx.app,
                &mut ctx.conn,
                &by,
                &user,
                previous.as_deref(),
                ctx.now,
            )?;
            ctx.cookies.extend(cookies);
            let target = if user.must_change_password {
                "/account/password".to_string()
            } else {
                return_to
            };
            Ok(Resp::redirect(&target))
        }
        Err(AppError::Unauthorized(_)) => render_login(
            ctx,
            401,
            &login,
            return_to,
            Some("Incorrect login or password.".into()),
        ),
        Err(AppError::TooManyRequests {
            message,
            retry_after,
        }) => Ok(render_login(ctx, 429, &login, return_to, Some(message))?
            .with_header("Retry-After", retry_after.to_string())),
        Err(e) => Err(e),
    }
}

pub fn logout(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    ctx.sign_out()?;
    Ok(Resp::redirect("/sessions/new"))
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    l: Layout,
    user: std::sync::Arc<users::User>,
    groups: Vec<String>,
    permissions: Vec<(&'static str, &'static str)>,
    last_connection: String,
}

pub fn home(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let caller = ctx.caller()?.clone();
    let page = HomePage {
        l: Layout::new(ctx, "Home", "home")?,
        groups: caller.groups.to_vec(),
        permissions: caller
            .permissions
            .iter()
            .map(|p| (p.key(), p.label()))
            .collect(),
        last_connection: views::datetime(caller.user.last_connection_at),
        user: caller.user,
    };
    render(200, &page)
}

pub struct TokenRow {
    pub name: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub expired: bool,
}

#[derive(Template)]
#[template(path = "account/account.html")]
struct AccountPage {
    l: Layout,
    user: std::sync::Arc<users::User>,
    tokens: Vec<TokenRow>,
    new_token: Option<(String, String)>,
    token_name: String,
    token_expiration: String,
    token_errors: FormErrors,
    today: String,
    /// The cap on the life of new tokens, in words, when there is one.
    token_lifetime: Option<String>,
}

/// What the token form says about the cap on the life of new tokens at `now`, if there is one.
fn token_lifetime_note(lifetime: crate::model::TokenLifetime, now: i64) -> Option<String> {
    let latest = lifetime.latest_expiry(now)?;
    Some(format!(
        "Tokens expire after at most {} on this server: a token asked for without an \
         expiration date, or with a later one, expires on {}.",
        lifetime.label(),
        views::format_date(latest)
    ))
}

fn account_page(
    ctx: &Ctx<'_>,
    status: u16,
    new_token: Option<(String, String)>,
    token_form: (String, String, FormErrors),
) -> AppResult<Resp> {
    let caller = ctx.caller()?.clone();
    let rows = tokens::list(&ctx.conn, caller.user.id)?
        .into_iter()
        .map(|t| TokenRow {
            created: views::datetime(Some(t.created_at)),
            last_used: views::datetime(t.last_connection_at),
            expires: t
                .expires_at
                .map(views::format_date)
                .unwrap_or_else(|| "never".into()),
            expired: t.is_expired(ctx.now),
            name: t.name,
        })
        .collect();
    let page = AccountPage {
        l: Layout::new(ctx, "My account", "account")?,
        user: caller.user,
        tokens: rows,
        new_token,
        token_name: token_form.0,
        token_expiration: token_form.1,
        token_errors: token_form.2,
        today: views::format_date(ctx.now),
        token_lifetime: token_lifetime_note(
            crate::settings::token_max_lifetime(&ctx.conn)?,
            ctx.now,
        ),
    };
    render(status, &page)
}

pub fn account(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    account_page(ctx, 200, None, Default::default())
}

pub fn token_generate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.caller()?.user.login.clone();
    let name = ctx.req.form.get("name").unwrap_or("").to_string();
    let expiration = ctx.req.form.get("expirationDate").unwrap_or("").to_string();
    let by = ctx.by();
    match accounts::generate_token(&mut ctx.conn, &by, &login, &name, &expiration, ctx.now) {
        Ok(t) => {
            log::info!("token generated login={login:?} name={:?}", t.name);
            account_page(ctx, 200, Some((t.name, t.value)), Default::default())
        }
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            account_page(ctx, 422, None, (name, expiration, errors))
        }
    }
}

pub fn token_revoke(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.caller()?.user.login.clone();
    let name = ctx.req.form.get("name").unwrap_or("").to_string();
    let by = ctx.by();
    accounts::revoke_token(&mut ctx.conn, &by, &login, &name)?;
    ctx.flash(&format!("Token '{name}' was revoked."))?;
    Ok(Resp::redirect("/account"))
}

#[derive(Template)]
#[template(path = "account/password.html")]
struct PasswordPage {
    l: Layout,
    forced: bool,
    errors: FormErrors,
}

pub fn password_form(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let forced = ctx.caller()?.user.must_change_password;
    render(
        200,
        &PasswordPage {
            l: Layout::new(ctx, "Change password", "account")?,
            forced,
            errors: FormErrors::default(),
        },
    )
}

pub fn password_submit(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let caller = ctx.caller()?.clone();
    let current = ctx
        .req
        .form
        .get("previousPassword")
        .unwrap_or("")
        .to_string();
    let new = ctx.req.form.get("password").unwrap_or("").to_string();
    let confirm = ctx
        .req
        .form
        .get("confirmPassword")
        .unwrap_or("")
        .to_string();
    let result = if new != confirm {
        Err(AppError::invalid(
            "confirmPassword",
            "The two new passwords are not the same",
        ))
    } else {
        let keep = caller.session().map(|s| s.id_hash.clone());
        let by = ctx.by();
        auth::change_password(
            ctx.app,
            &mut ctx.conn,
            &by,
            &caller.user.login,
            &new,
            Some(&current),
            keep.as_deref(),
            ctx.now,
        )
    };
    match result {
        Ok(()) => {
            ctx.flash("Your password was changed.")?;
            Ok(Resp::redirect("/account"))
        }
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            let page = PasswordPage {
                l: Layout::new(ctx, "Change password", "account")?,
                forced: caller.user.must_change_password,
                errors,
            };
            render(422, &page)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_form_states_the_cap_with_its_date() {
        use crate::model::TokenLifetime;
        let now = 1_700_000_000; // 2023-11-14
        assert_eq!(
            token_lifetime_note(TokenLifetime::Days90, now).as_deref(),
            Some(
                "Tokens expire after at most 90 days on this server: a token asked for without \
                 an expiration date, or with a later one, expires on 2024-02-12."
            )
        );
        assert_eq!(token_lifetime_note(TokenLifetime::Unlimited, now), None);
    }

    #[test]
    fn return_to_only_accepts_local_paths() {
        assert_eq!(safe_return_to(Some("/admin/users?p=2")), "/admin/users?p=2");
        assert_eq!(safe_return_to(Some("/_x")), "/_x");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "http://evil.example",
            "evil",
            "/",
            "",
            "/%2F",
            "/ x",
            "/a\\b",
            "/a\nb",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to(None), "/");
    }
}

/// Properties of `return_to` (only local paths are followed after a sign-in); the fuzz target `return_to` checks the same.
#[cfg(test)]
mod props {
    use super::safe_return_to;
    use proptest::prelude::*;

    /// What must hold for every accepted `return_to`.
    fn stays_on_site(path: &str) -> Result<(), TestCaseError> {
        let b = path.as_bytes();
        prop_assert!(b.len() >= 2 && b.len() <= 2048 && b[0] == b'/');
        prop_assert!(b[1].is_ascii_alphanumeric() || b[1] == b'_');
        prop_assert!(!path.chars().any(|c| c == '\\' || c.is_control()));
        for page in [
            "https://labgate.example/",
            "http://10.0.0.1:9000/oauth2/callback/gitlab?x=1",
        ] {
            let base = url::Url::parse(page).unwrap();
            let target = base.join(path).unwrap();
            prop_assert_eq!(target.origin(), base.origin());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_return_to_is_kept_on_site_or_replaced_by_root(raw in any::<String>()) {
            let out = safe_return_to(Some(&raw));
            if out != "/" {
                prop_assert_eq!(&out, &raw);
                stays_on_site(&out)?;
            }
        }

        #[test]
        fn local_paths_are_kept(path in r"/[A-Za-z0-9_][A-Za-z0-9_/?=&%.~+-]{0,60}") {
            prop_assert_eq!(safe_return_to(Some(&path)), path.clone());
            stays_on_site(&path)?;
        }

        #[test]
        fn other_origins_fall_back_to_root(
            start in prop_oneof![
                Just("//"), Just("/\\"), Just("\\\\"), Just("http://"), Just("https://"),
                Just("/\t/"), Just("/\n/"), Just(" /"), Just("javascript:"), Just("/%2F"),
            ],
            rest in any::<String>(),
        ) {
            prop_assert_eq!(safe_return_to(Some(&format!("{start}{rest}"))), "/");
        }
    }
}
