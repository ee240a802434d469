//! The route table: every path labgate answers, who may call it, and its handler. The gate's
//! checks first (asked by the reverse proxy, any method), then public routes, then signed-in,
//! then admin. Writes (non-GET) need the CSRF token when the
//! caller is authenticated by the session cookie; `web::dispatch` enforces both in one place.
//!
//! The table names the handlers of both `pages` and `api`, so it stands above them; nothing
//! below imports it. `lib::start` hands it to the server as data, which passes it to
//! `web::dispatch` with every request.

use crate::api;
use crate::pages;
use crate::web::{Access, Route};
use Access::{Admin, OwnToken, Proxy, Public, User};

/// Every route, in the order of [`ROUTES`].
pub fn routes() -> &'static [Route] {
    ROUTES
}

macro_rules! route {
    ($method:literal, $path:literal, $access:expr, $handler:path) => {
        Route {
            method: $method,
            path: $path,
            access: $access,
            handler: $handler,
        }
    };
}

/// One route a line: method, path, who may call it, handler.
#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    // Asked by the reverse proxy in front of each application, for any method.
    route!("*",      "/gate/nginx",                         Proxy,  pages::gate::nginx),
    route!("*",      "/gate/forward",                       Proxy,  pages::gate::forward),
    // Public.
    route!("GET",    "/sessions/new",                       Public, pages::login_form),
    route!("POST",   "/sessions/new",                       Public, pages::login_submit),
    route!("GET",    "/sessions/init/gitlab",               Public, pages::gitlab::init),
    route!("GET",    "/oauth2/callback/gitlab",             Public, pages::gitlab::callback),
    route!("GET",    "/sessions/unauthorized",              Public, pages::gitlab::unauthorized),
    route!("GET",    "/api/system/status",                  Public, api::system::status),
    route!("GET",    "/api/server/version",                 Public, api::system::version),
    route!("POST",   "/api/authentication/login",           Public, api::system::login),
    route!("GET",    "/api/authentication/validate",        Public, api::system::validate),
    route!("GET",    "/api/users/current",                  Public, api::users::current),
    route!("GET",    "/metrics",                            OwnToken, api::metrics::scrape),
    // Signed-in users.
    route!("POST",   "/sessions/logout",                    User,   pages::logout),
    route!("POST",   "/api/authentication/logout",          User,   api::system::logout),
    route!("GET",    "/",                                   User,   pages::home),
    route!("GET",    "/account",                            User,   pages::account),
    route!("GET",    "/account/password",                   User,   pages::password_form),
    route!("POST",   "/account/password",                   User,   pages::password_submit),
    route!("POST",   "/account/tokens/generate",            User,   pages::token_generate),
    route!("POST",   "/account/tokens/revoke",              User,   pages::token_revoke),
    route!("POST",   "/api/users/change_password",          User,   api::users::change_password),
    route!("POST",   "/api/user_tokens/generate",           User,   api::tokens::generate),
    route!("POST",   "/api/user_tokens/revoke",             User,   api::tokens::revoke),
    route!("GET",    "/api/user_tokens/search",             User,   api::tokens::search),
    // Administrators.
    route!("GET",    "/api/system/health",                  Admin,  api::system::health),
    route!("POST",   "/api/users/create",                   Admin,  api::users::create),
    route!("GET",    "/api/users/search",                   Admin,  api::users::search),
    route!("POST",   "/api/users/update",                   Admin,  api::users::update),
    route!("POST",   "/api/users/deactivate",               Admin,  api::users::deactivate),
    route!("POST",   "/api/users/update_identity_provider", Admin,  api::users::update_identity_provider),
    route!("POST",   "/api/user_groups/create",             Admin,  api::groups::create),
    route!("POST",   "/api/user_groups/update",             Admin,  api::groups::update),
    route!("POST",   "/api/user_groups/delete",             Admin,  api::groups::delete),
    route!("GET",    "/api/user_groups/search",             Admin,  api::groups::search),
    route!("POST",   "/api/user_groups/add_user",           Admin,  api::groups::add_user),
    route!("POST",   "/api/user_groups/remove_user",        Admin,  api::groups::remove_user),
    route!("GET",    "/api/user_groups/users",              Admin,  api::groups::users),
    route!("POST",   "/api/permissions/add_group",          Admin,  api::permissions::add_group),
    route!("POST",   "/api/permissions/remove_group",       Admin,  api::permissions::remove_group),
    route!("POST",   "/api/permissions/add_user",           Admin,  api::permissions::add_user),
    route!("POST",   "/api/permissions/remove_user",        Admin,  api::permissions::remove_user),
    route!("GET",    "/api/permissions/groups",             Admin,  api::permissions::groups),
    route!("GET",    "/api/permissions/users",              Admin,  api::permissions::users),
    route!("GET",    "/api/settings/values",                Admin,  api::settings::values),
    route!("POST",   "/api/settings/values",                Admin,  api::settings::values),
    route!("POST",   "/api/settings/set",                   Admin,  api::settings::set),
    route!("POST",   "/api/settings/reset",                 Admin,  api::settings::reset),
    route!("GET",    "/api/v2/dop-translation/gitlab-configurations", Admin,  api::gitlab::list),
    route!("POST",   "/api/v2/dop-translation/gitlab-configurations", Admin,  api::gitlab::create),
    route!("GET",    "/api/v2/dop-translation/gitlab-configurations/gitlab-configuration", Admin,  api::gitlab::get),
    route!("PATCH",  "/api/v2/dop-translation/gitlab-configurations/gitlab-configuration", Admin,  api::gitlab::patch),
    route!("DELETE", "/api/v2/dop-translation/gitlab-configurations/gitlab-configuration", Admin,  api::gitlab::delete),
    route!("POST",   "/api/v2/labgate/gitlab-checks",       Admin,  api::gitlab::check),
    route!("GET",    "/api/v2/dop-translation/gitlab-synchronization-runs", Admin,  api::gitlab::runs),
    route!("POST",   "/api/v2/dop-translation/gitlab-synchronization-runs", Admin,  api::gitlab::start_run),
    route!("GET",    "/api/v2/labgate/gitlab-revalidations", Admin, api::gitlab::revalidations),
    route!("POST",   "/api/v2/labgate/gitlab-revalidations", Admin, api::gitlab::revalidate),
    route!("GET",    "/api/v2/labgate/applications",        Admin,  api::applications::list),
    route!("POST",   "/api/v2/labgate/applications",        Admin,  api::applications::create),
    route!("GET",    "/api/v2/labgate/applications/{id}",   Admin,  api::applications::get),
    route!("PATCH",  "/api/v2/labgate/applications/{id}",   Admin,  api::applications::patch),
    route!("DELETE", "/api/v2/labgate/applications/{id}",   Admin,  api::applications::delete),
    route!("GET",    "/api/v2/labgate/audit-events",        Admin,  api::audit::list),
    route!("GET",    "/api/v2/labgate/audit-events/export", Admin,  api::audit::export),
    // Admin pages.
    route!("GET",    "/admin/users",                        Admin,  pages::admin_users::list),
    route!("POST",   "/admin/users/create",                 Admin,  pages::admin_users::create),
    route!("GET",    "/admin/users/edit",                   Admin,  pages::admin_users::edit),
    route!("POST",   "/admin/users/update",                 Admin,  pages::admin_users::update),
    route!("POST",   "/admin/users/add_group",              Admin,  pages::admin_users::add_group),
    route!("POST",   "/admin/users/remove_group",           Admin,  pages::admin_users::remove_group),
    route!("GET",    "/admin/users/deactivate",             Admin,  pages::admin_users::deactivate_confirm),
    route!("POST",   "/admin/users/deactivate",             Admin,  pages::admin_users::deactivate),
    route!("POST",   "/admin/users/reactivate",             Admin,  pages::admin_users::reactivate),
    route!("GET",    "/admin/groups",                       Admin,  pages::admin_groups::list),
    route!("POST",   "/admin/groups/create",                Admin,  pages::admin_groups::create),
    route!("GET",    "/admin/groups/edit",                  Admin,  pages::admin_groups::edit),
    route!("POST",   "/admin/groups/update",                Admin,  pages::admin_groups::update),
    route!("POST",   "/admin/groups/add_member",            Admin,  pages::admin_groups::add_member),
    route!("POST",   "/admin/groups/remove_member",         Admin,  pages::admin_groups::remove_member),
    route!("GET",    "/admin/groups/delete",                Admin,  pages::admin_groups::delete_confirm),
    route!("POST",   "/admin/groups/delete",                Admin,  pages::admin_groups::delete),
    route!("GET",    "/admin/permissions",                  Admin,  pages::admin_permissions::list),
    route!("POST",   "/admin/permissions/grant_group",      Admin,  pages::admin_permissions::grant_group),
    route!("POST",   "/admin/permissions/grant_user",       Admin,  pages::admin_permissions::grant_user),
    route!("POST",   "/admin/permissions/revoke_group",     Admin,  pages::admin_permissions::revoke_group),
    route!("POST",   "/admin/permissions/revoke_user",      Admin,  pages::admin_permissions::revoke_user),
    route!("GET",    "/admin/settings",                     Admin,  pages::admin_settings::show),
    route!("POST",   "/admin/settings",                     Admin,  pages::admin_settings::save),
    route!("POST",   "/admin/settings/gitlab/create",       Admin,  pages::admin_gitlab::create),
    route!("GET",    "/admin/settings/gitlab/edit",         Admin,  pages::admin_gitlab::edit),
    route!("POST",   "/admin/settings/gitlab/edit",         Admin,  pages::admin_gitlab::update),
    route!("POST",   "/admin/settings/gitlab/enabled",      Admin,  pages::admin_gitlab::set_enabled),
    route!("GET",    "/admin/settings/gitlab/delete",       Admin,  pages::admin_gitlab::delete_confirm),
    route!("POST",   "/admin/settings/gitlab/delete",       Admin,  pages::admin_gitlab::delete),
    route!("POST",   "/admin/settings/gitlab/provisioning", Admin,  pages::admin_gitlab::provisioning),
    route!("POST",   "/admin/settings/gitlab/check",        Admin,  pages::admin_gitlab::check),
    route!("POST",   "/admin/settings/gitlab/synchronize",  Admin,  pages::admin_gitlab::synchronize),
    route!("POST",   "/admin/settings/gitlab/revalidate",   Admin,  pages::admin_gitlab::revalidate),
    route!("GET",    "/admin/applications",                 Admin,  pages::admin_applications::list),
    route!("POST",   "/admin/applications/create",          Admin,  pages::admin_applications::create),
    route!("GET",    "/admin/applications/edit",            Admin,  pages::admin_applications::edit),
    route!("POST",   "/admin/applications/update",          Admin,  pages::admin_applications::update),
    route!("GET",    "/admin/applications/delete",          Admin,  pages::admin_applications::delete_confirm),
    route!("POST",   "/admin/applications/delete",          Admin,  pages::admin_applications::delete),
    route!("GET",    "/admin/audit",                        Admin,  pages::admin_audit::list),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_is_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for r in routes() {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn admin_pages_and_admin_apis_require_admin() {
        for r in routes() {
            if r.path.starts_with("/admin/") {
                assert_eq!(r.access, Admin, "{}", r.path);
            }
        }
    }

    #[test]
    fn only_the_gate_checks_take_any_method_and_resolve_their_own_callers() {
        for r in routes() {
            assert_eq!(
                r.method == crate::web::ANY_METHOD,
                r.access == Proxy,
                "{} {}",
                r.method,
                r.path
            );
            if r.access == Proxy {
                assert!(r.path.starts_with("/gate/") && !r.is_write(), "{}", r.path);
            }
        }
    }

    #[test]
    fn only_sign_in_and_read_only_endpoints_are_public() {
        for r in routes()
            .iter()
            .filter(|r| r.access == Public && r.is_write())
        {
            assert!(
                matches!(r.path, "/sessions/new" | "/api/authentication/login"),
                "{} {} is a public write",
                r.method,
                r.path
            );
        }
    }
}
