//! Browser sessions of the web UI, by the SHA-256 of their cookie (the cookie itself is never
//! stored), so that they outlive a restart.

use chrono::{DateTime, Utc};

use crate::error::Context;
use crate::{Result, Store};

impl Store {
    /// Stores a new session; deletes the sessions created before `expired_before`, and the
    /// oldest ones beyond `max` live sessions.
    pub async fn create_session(
        &self,
        key: &[u8],
        csrf: &str,
        created_at: DateTime<Utc>,
        expired_before: DateTime<Utc>,
        max: usize,
    ) -> Result<()> {
        let action = || "store a browser session".to_owned();
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context(action)?;
        sqlx::query("DELETE FROM sessions WHERE created_at < ?")
            .bind(expired_before)
            .execute(&mut *tx)
            .await
            .context(action)?;
        sqlx::query(
            "DELETE FROM sessions WHERE key IN \
             (SELECT key FROM sessions ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
        )
        .bind(i64::try_from(max.saturating_sub(1)).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .context(action)?;
        sqlx::query("INSERT INTO sessions (key, csrf, created_at) VALUES (?, ?, ?)")
            .bind(key)
            .bind(csrf)
            .bind(created_at)
            .execute(&mut *tx)
            .await
            .context(action)?;
        tx.commit().await.context(action)
    }

    /// The CSRF token and creation time of the session with this key, if it is stored.
    pub async fn session(&self, key: &[u8]) -> Result<Option<(String, DateTime<Utc>)>> {
        sqlx::query_as("SELECT csrf, created_at FROM sessions WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .context(|| "read a browser session".to_owned())
    }

    /// Deletes the session with this key (a logout).
    pub async fn delete_session(&self, key: &[u8]) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE key = ?")
            .bind(key)
            .execute(&self.writer)
            .await
            .context(|| "delete a browser session".to_owned())?;
        Ok(())
    }
}
