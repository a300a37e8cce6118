//! Git for Gantry: a bare mirror per project, fetched shallowly from the forge, and per-run
//! checkouts of one exact commit. The only crate that knows git2.
//!
//! Everything here blocks; the server calls it from `spawn_blocking`. Errors never contain a
//! token or a password: credentials go to libgit2 through its credentials callback, never in a
//! URL, and every message from libgit2 is scrubbed before it is put in an [`Error`].

mod credentials;
mod error;
mod host_key;
mod local;
mod mirror;

pub use credentials::Credentials;
pub use error::{Error, Result, redact_url};
pub use local::{GitIgnores, LocalHead, local_head, origin_url};
pub use mirror::{CommitInfo, Mirror};
