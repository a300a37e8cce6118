//! GitHub webhook deliveries: stored first, acted on after, deduplicated by their guid.

use chrono::Utc;

use crate::error::{Context, run_must_exist};
use crate::model::{Delivery, DeliveryInsert, NewDelivery};
use crate::rows::{self, delivery_columns};
use crate::{Error, Result, Store};

impl Store {
    /// Stores a delivery unless one with the same guid is stored already, in which case that one
    /// is returned and nothing is written.
    pub async fn record_delivery(&self, delivery: NewDelivery) -> Result<DeliveryInsert> {
        let action = || format!("record delivery {}", delivery.guid);
        let mut conn = self.writer.acquire().await.context(action)?;
        let inserted = sqlx::query(concat!(
            "INSERT INTO deliveries (guid, event, project, git_ref, after_sha, payload, received_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (guid) DO NOTHING \
             RETURNING ",
            delivery_columns!()
        ))
        .bind(&delivery.guid)
        .bind(&delivery.event)
        .bind(&delivery.project)
        .bind(&delivery.git_ref)
        .bind(&delivery.after_sha)
        .bind(&delivery.payload)
        .bind(Utc::now())
        .try_map(rows::delivery)
        .fetch_optional(&mut *conn)
        .await
        .context(action)?;
        if let Some(inserted) = inserted {
            return Ok(DeliveryInsert::Inserted(inserted));
        }
        // Read on the writer: the conflicting row is committed, and this sees it for certain.
        let existing = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE guid = ?"
        ))
        .bind(&delivery.guid)
        .try_map(rows::delivery)
        .fetch_one(&mut *conn)
        .await
        .context(action)?;
        Ok(DeliveryInsert::Duplicate(existing))
    }

    /// Deliveries whose outcome is not decided yet, oldest first: the ones to process again after
    /// a crash.
    pub async fn pending_deliveries(&self) -> Result<Vec<Delivery>> {
        sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE outcome IS NULL ORDER BY id"
        ))
        .try_map(rows::delivery)
        .fetch_all(&self.reader)
        .await
        .context(|| "list pending deliveries".to_owned())
    }

    /// Records what the server did with a delivery, and the run it made if any.
    pub async fn set_delivery_outcome(
        &self,
        id: i64,
        outcome: &str,
        run_id: Option<i64>,
    ) -> Result<()> {
        let done = sqlx::query("UPDATE deliveries SET outcome = ?, run_id = ? WHERE id = ?")
            .bind(outcome)
            .bind(run_id)
            .bind(id)
            .execute(&self.writer)
            .await
            .context(|| format!("set the outcome of delivery {id}"))
            .map_err(|error| match run_id {
                Some(run_id) => run_must_exist(run_id)(error),
                None => error,
            })?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "delivery",
                id,
            });
        }
        Ok(())
    }

    /// The latest `limit` deliveries, newest first.
    pub async fn list_deliveries(&self, limit: i64) -> Result<Vec<Delivery>> {
        sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries ORDER BY id DESC LIMIT ?"
        ))
        .bind(limit.max(0))
        .try_map(rows::delivery)
        .fetch_all(&self.reader)
        .await
        .context(|| "list deliveries".to_owned())
    }

    /// The body of a delivery, or `None` if there is no delivery `id`.
    pub async fn get_delivery_payload(&self, id: i64) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT payload FROM deliveries WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .context(|| format!("read the payload of delivery {id}"))
    }
}
