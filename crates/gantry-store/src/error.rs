//! What can go wrong in the store, worded for the person reading the server's log.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create directory {} for the database: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot open database at {location}: {source}")]
    Open {
        location: String,
        source: sqlx::Error,
    },

    #[error("cannot apply migrations to database at {location}: {source}")]
    Migrate {
        location: String,
        source: sqlx::migrate::MigrateError,
    },

    /// A database or URL the store cannot work with (yet).
    #[error("{0}")]
    Unsupported(String),

    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: i64 },

    #[error("invalid {what} {value:?}; expected one of: {}", expected.join(", "))]
    Invalid {
        what: &'static str,
        value: String,
        expected: &'static [&'static str],
    },

    /// A statement failed; `action` says what the store was doing ("create run for project web").
    #[error("cannot {action}: {source}")]
    Query { action: String, source: sqlx::Error },

    /// A statement that did the work of several callers failed (a group commit); each of them
    /// gets the message.
    #[error("cannot {action}: {message}")]
    Shared { action: String, message: String },
}

/// Names what the store was doing when a statement failed.
pub(crate) trait Context<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Query {
            action: action(),
            source,
        })
    }
}

/// Turns a foreign-key failure on a run reference into [`Error::NotFound`].
pub(crate) fn run_must_exist(run_id: i64) -> impl FnOnce(Error) -> Error {
    move |error| match &error {
        Error::Query {
            source: sqlx::Error::Database(db),
            ..
        } if db.is_foreign_key_violation() => Error::NotFound {
            what: "run",
            id: run_id,
        },
        _ => error,
    }
}
