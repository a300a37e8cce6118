//! Opening the database: URL handling, connection settings, migrations.

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::Context;
use crate::{Error, Result};

/// The SQLite schema, embedded at build time and applied by [`Store::open_sqlite`].
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Gantry's durable state: deliveries, runs, stages and log lines.
///
/// Cloning is cheap and clones share the connections. The methods are the whole interface; no
/// database type appears in them, so a PostgreSQL store can take the same shape.
#[derive(Debug, Clone)]
pub struct Store {
    /// The one connection that writes. SQLite lets one writer in at a time anyway; queueing writers
    /// here (async and fair) is much faster than letting them collide on the file lock and back
    /// off inside `busy_timeout`.
    pub(crate) writer: SqlitePool,
    /// Read-only connections, which WAL lets run alongside the writer.
    pub(crate) reader: SqlitePool,
    /// Deliveries waiting for the next group commit (see `record_delivery`).
    pub(crate) delivery_queue: crate::deliveries::DeliveryQueue,
}

impl Store {
    /// Opens the database named by `url`: `sqlite://PATH`, `sqlite:PATH` or a plain file path.
    /// PostgreSQL URLs are recognised but not supported yet.
    pub async fn open(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(Error::Unsupported(
                "PostgreSQL support is not built yet; use SQLite".to_owned(),
            ));
        }
        let path = match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some(path) => path,
            None => match url.split_once("://") {
                // Only the scheme is echoed: the rest of a URL may hold a password.
                Some((scheme, _)) => {
                    return Err(Error::Unsupported(format!(
                        "database URLs starting with {scheme}:// are not supported; \
                         use sqlite://PATH or a file path"
                    )));
                }
                None => url,
            },
        };
        if path.is_empty() || path.starts_with(":memory:") {
            return Err(Error::Unsupported(format!(
                "database URL {url:?} names no file; Gantry needs a file, e.g. sqlite://gantry-data/gantry.db"
            )));
        }
        Store::open_sqlite(Path::new(path)).await
    }

    /// Opens (creating it and its parent directories if needed) the SQLite database at `path` and
    /// brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        let location = path.display().to_string();
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }

        // WAL lets reads run while a write is in progress. FULL syncs the WAL at every commit:
        // a webhook answered 202 is on disk, also across a power cut or a kernel crash (NORMAL
        // would lose the last commits then, and GitHub does not redeliver what it saw
        // accepted). It costs a fsync per commit: 4,000 deliveries from 16 callers went from
        // 2,400/s to 850-1,050/s here; log lines, written in batches, did not measurably slow.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let open_error = |source| Error::Open {
            location: location.clone(),
            source,
        };

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        SQLITE_MIGRATOR
            .run(&writer)
            .await
            .map_err(|source| Error::Migrate {
                location: location.clone(),
                source,
            })?;

        // Reads are short; a few connections per core keep the API responsive while logs stream.
        let readers = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(2, 8));
        let reader = SqlitePoolOptions::new()
            .max_connections(readers as u32)
            .connect_with(options.pragma("query_only", "ON"))
            .await
            .map_err(open_error)?;

        Ok(Store {
            writer,
            reader,
            delivery_queue: Default::default(),
        })
    }

    /// Checks that the database answers, for readiness probes.
    pub async fn ping(&self) -> Result<()> {
        for pool in [&self.reader, &self.writer] {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .context(|| "reach the database".to_owned())?;
        }
        Ok(())
    }

    /// Closes every connection, for all clones of this store, after running statements finish.
    /// Later calls fail. Dropping the store is also safe; this only makes shutdown prompt.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
