//! End-to-end tests of labgate: each test starts the real binary on port 0 with its own data
//! directory and drives it over HTTP (one integration-test binary, one module per concern).

// Test code: a failed `unwrap()` is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod harness;
#[path = "../support/proxies.rs"]
mod proxies;
#[path = "../support/fake_gitlab.rs"]
mod support_gitlab;
#[path = "../support/tls_front.rs"]
mod tls_front;
#[path = "../support/webdriver.rs"]
mod webdriver;

mod admin_gitlab;
mod admin_only;
mod admin_pages;
mod api_groups;
mod api_permissions;
mod api_settings;
mod api_system;
mod api_tokens;
mod api_users;
mod audit;
mod audit_crash;
mod auth;
mod browser;
mod changes_seen_at_once;
mod cli;
mod gate;
mod gitlab_check;
mod gitlab_flow;
mod gitlab_provisioning;
mod lifecycle;
mod limits;
mod metrics;
mod page_forms;
mod pages;
mod paging;
mod reliability;
mod revalidation;
mod route_table;
mod secrets_at_rest;
mod throttle_proxy;
mod walkthrough;
