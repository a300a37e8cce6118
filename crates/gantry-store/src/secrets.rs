//! Pipeline secrets, sealed: the store keeps each one's nonce and ciphertext and never sees a
//! plaintext (gantry-secrets seals and opens them).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::Context;
use crate::{Result, Store};

/// A stored secret as the API lists it: its name and times, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored secret, sealed: what it takes to open it, with the right key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Store {
    /// Stores a sealed secret, replacing the one of the same project and name if there is one
    /// (which keeps its `created_at`). Returns whether the secret is new.
    pub async fn put_secret(
        &self,
        project: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool> {
        let now = Utc::now();
        // An update moves `updated_at` on and leaves `created_at`: they are equal only in a new row.
        sqlx::query_scalar(
            "INSERT INTO secrets (project, name, nonce, ciphertext, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
             ON CONFLICT (project, name) DO UPDATE SET \
             nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
             updated_at = excluded.updated_at \
             RETURNING created_at = updated_at",
        )
        .bind(project)
        .bind(name)
        .bind(nonce)
        .bind(ciphertext)
        .bind(now)
        .fetch_one(&self.writer)
        .await
        .context(|| format!("store secret {name} of project {project}"))
    }

    /// A project's secrets by name, without their values.
    pub async fn list_secrets(&self, project: &str) -> Result<Vec<SecretInfo>> {
        sqlx::query(
            "SELECT name, created_at, updated_at FROM secrets WHERE project = ? ORDER BY name",
        )
        .bind(project)
        .try_map(|row: SqliteRow| {
            Ok(SecretInfo {
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .fetch_all(&self.reader)
        .await
        .context(|| format!("list the secrets of project {project}"))
    }

    /// One sealed secret, or `None` if the project has none of that name.
    pub async fn get_secret(&self, project: &str, name: &str) -> Result<Option<SealedSecret>> {
        sqlx::query("SELECT name, nonce, ciphertext FROM secrets WHERE project = ? AND name = ?")
            .bind(project)
            .bind(name)
            .try_map(sealed_secret)
            .fetch_optional(&self.reader)
            .await
            .context(|| format!("read secret {name} of project {project}"))
    }

    /// All of a project's sealed secrets, by name: what a run of it needs.
    pub async fn all_secrets(&self, project: &str) -> Result<Vec<SealedSecret>> {
        sqlx::query("SELECT name, nonce, ciphertext FROM secrets WHERE project = ? ORDER BY name")
            .bind(project)
            .try_map(sealed_secret)
            .fetch_all(&self.reader)
            .await
            .context(|| format!("read the secrets of project {project}"))
    }

    /// Deletes a secret; `false` if there was none of that name.
    pub async fn delete_secret(&self, project: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM secrets WHERE project = ? AND name = ?")
            .bind(project)
            .bind(name)
            .execute(&self.writer)
            .await
            .context(|| format!("delete secret {name} of project {project}"))?;
        Ok(done.rows_affected() > 0)
    }
}

fn sealed_secret(row: SqliteRow) -> sqlx::Result<SealedSecret> {
    Ok(SealedSecret {
        name: row.try_get("name")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
    })
}
