//! The user search index: the user lists held in memory ([`image`]) and the searches that read
//! them ([`query`]).

mod image;
mod query;

pub use query::search;
pub(crate) use query::{active_by_login_or_name, active_users, held_lists};
