//! The user search index: finds users by a piece of their login, name or email, for the user
//! lists (`api/users/search`, `/admin/users`), the group pickers and the permission holders, at
//! about the same cost over 100,000 users as over a hundred. It reads the `users`, `user_stats`
//! and `user_changes` tables, so it lives in the store; unlike the table modules beside it, it
//! keeps state between calls.
//!
//! - `image`: the user lists held in memory, and how they are read and caught up.
//! - `cache`: what earlier text searches found.
//! - `query`: which plan answers which search, and the entry points below.
//!
//! # Process-wide state
//!
//! Two statics, shared by every request of the process. Both start empty; each is filled by the
//! first text search that needs it and lives until the process ends.
//!
//! - `image::IMAGE_SLOT` holds one `image::Image`: for each user, active and deactivated
//!   in two lists, the login, name and email lowercased the way `LIKE` compares them, in login
//!   order (about 7 MiB at 100,000 users). It is the image of the database last searched.
//! - `cache::SEARCH_CACHE` holds what the latest text searches found (at most 64 of them and
//!   50,000 ids in all): each one's total, and its matches in login order when there are at
//!   most `query::KEEP_MAX`.
//!
//! **Why.** A substring match cannot use an index: asked of SQLite, every search reads every
//! user row (hundreds of milliseconds at 100,000 users). Searching the image in memory takes
//! 1–2 ms whatever the text, and a next page or a repeat answered from the cache reads nothing.
//!
//! **How it stays in step with the database.** Both are stamped with `user_stats.generation`,
//! a random number that the triggers on `users` change, in the same transaction, with every
//! change to who matches what: a user added or removed, a login, name, email or activity
//! changed. The triggers also write each such change, with the generation it made, to the
//! `user_changes` log (its last 10,000 rows kept). Every search starts by reading the
//! generation inside its read transaction, before anything else, so that what it reads next
//! agrees with it (see `image::ImageSlot::current`):
//!
//! - the image held at that generation is used as it is; held at an earlier one that the log
//!   still reaches, it is caught up: the changed users are read again and every run of users
//!   they do not touch is shared with the old image; otherwise (the first search, another
//!   database, a log that no longer reaches back, more than `image::CATCH_UP_MAX` changed
//!   users) it is read again from the whole table;
//! - the cached searches of the image's previous generation are moved by what changed between
//!   the two images (their totals adjusted, their matches dropped when a changed user is one of
//!   them); those of any other generation are never used again, and dropped by the next search
//!   that keeps what it found.
//!
//! The generation is kept in the database, not counted in the process, so writes by another
//! process to the same file are followed too; being random, it never makes two databases opened
//! by one process (as the tests do) look alike, and the log's own history is checked before
//! catching up. Nothing has to be cleared by hand after a write.

mod cache;
mod image;
mod query;

pub use query::search;
pub(crate) use query::{active_by_login_or_name, active_users, current_image};
