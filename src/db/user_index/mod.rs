//! The user search index: the user lists held in memory ([`image`]), what earlier searches
//! found ([`cache`]), and the searches that read them ([`query`]).

mod cache;
mod image;
mod query;

pub use query::search;
pub(crate) use query::{active_by_login_or_name, active_users, current_image};
