//! GitHub webhook deliveries: stored first, acted on after, deduplicated by their guid.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Utc;
use sqlx::Connection as _;
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::oneshot;

use crate::error::{Context, run_must_exist};
use crate::model::{Delivery, DeliveryInsert, NewDelivery};
use crate::rows::{self, delivery_columns};
use crate::{Error, Result, Store};

impl Store {
    /// Stores a delivery unless one with the same guid is stored already, in which case that one
    /// is returned and nothing is written. Returns once the delivery is durable (on disk with
    /// `synchronous=FULL`).
    ///
    /// Group commit: a caller queues its delivery, then whoever gets the writer connection next
    /// stores every delivery queued by then in one transaction, so that concurrent webhooks
    /// share one fsync instead of waiting for one each. The commit runs in a task of its own:
    /// the callers whose deliveries it carries get their answer even if this one goes away.
    pub async fn record_delivery(&self, delivery: NewDelivery) -> Result<DeliveryInsert> {
        let guid = delivery.guid.clone();
        let (answer, mut answered) = oneshot::channel();
        lock(&self.delivery_queue).push((delivery, answer));
        tokio::select! {
            biased;
            // An earlier caller's commit carried it.
            result = &mut answered => return received(result, &guid),
            conn = self.writer.acquire() => {
                let conn = conn.context(|| format!("record delivery {guid}"))?;
                let batch = std::mem::take(&mut *lock(&self.delivery_queue));
                // Empty: ours is in a commit that took the queue before this caller got here.
                if !batch.is_empty() {
                    tokio::spawn(commit_deliveries(conn, batch));
                }
            }
        }
        received(answered.await, &guid)
    }

    /// Records several deliveries' outcomes in one transaction (one fsync): all of them, or
    /// none and an error naming the first that failed.
    pub async fn set_delivery_outcomes(
        &self,
        outcomes: &[(i64, String, Option<i64>)],
    ) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let action = || format!("set the outcomes of {} deliveries", outcomes.len());
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context(action)?;
        for (id, outcome, run_id) in outcomes {
            let done = sqlx::query("UPDATE deliveries SET outcome = ?, run_id = ? WHERE id = ?")
                .bind(outcome)
                .bind(run_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .context(|| format!("set the outcome of delivery {id}"))
                .map_err(|error| match run_id {
                    Some(run_id) => run_must_exist(*run_id)(error),
                    None => error,
                })?;
            if done.rows_affected() == 0 {
                return Err(Error::NotFound {
                    what: "delivery",
                    id: *id,
                });
            }
        }
        tx.commit().await.context(action)
    }

    /// One project's undecided deliveries (`None`: those of no project), oldest first, at most
    /// `limit`.
    pub async fn pending_deliveries_of(
        &self,
        project: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE outcome IS NULL AND project IS ? ORDER BY id LIMIT ?"
        ))
        .bind(project)
        .bind(limit)
        .try_map(rows::delivery)
        .fetch_all(&self.reader)
        .await
        .context(|| format!("list pending deliveries of project {project:?}"))
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
        self.set_delivery_outcomes(&[(id, outcome.to_owned(), run_id)])
            .await
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

/// Deliveries waiting for the next group commit, each with where its answer goes.
pub(crate) type DeliveryQueue =
    Arc<Mutex<Vec<(NewDelivery, oneshot::Sender<Result<DeliveryInsert>>)>>>;

fn lock(
    queue: &DeliveryQueue,
) -> MutexGuard<'_, Vec<(NewDelivery, oneshot::Sender<Result<DeliveryInsert>>)>> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

fn received(
    result: Result<Result<DeliveryInsert>, oneshot::error::RecvError>,
    guid: &str,
) -> Result<DeliveryInsert> {
    result.unwrap_or_else(|_| {
        Err(Error::Shared {
            action: format!("record delivery {guid}"),
            message: "the commit that carried it stopped before it answered".to_owned(),
        })
    })
}

/// Stores `batch` in one transaction and answers each caller: all of them stored, or none.
async fn commit_deliveries(
    mut conn: PoolConnection<Sqlite>,
    batch: Vec<(NewDelivery, oneshot::Sender<Result<DeliveryInsert>>)>,
) {
    let stored = async {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut inserts = Vec::with_capacity(batch.len());
        for (delivery, _) in &batch {
            inserts.push(insert_delivery(&mut tx, delivery).await?);
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(inserts)
    }
    .await;
    match stored {
        Ok(inserts) => {
            for ((_, answer), insert) in batch.into_iter().zip(inserts) {
                let _ = answer.send(Ok(insert));
            }
        }
        Err(err) => {
            let message = err.to_string();
            for (delivery, answer) in batch {
                let _ = answer.send(Err(Error::Shared {
                    action: format!("record delivery {}", delivery.guid),
                    message: message.clone(),
                }));
            }
        }
    }
}

async fn insert_delivery(
    conn: &mut SqliteConnection,
    delivery: &NewDelivery,
) -> Result<DeliveryInsert, sqlx::Error> {
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
    .await?;
    if let Some(inserted) = inserted {
        return Ok(DeliveryInsert::Inserted(inserted));
    }
    // Read in the same transaction: the conflicting row is committed (or earlier in this
    // batch), and this sees it for certain.
    let existing = sqlx::query(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM deliveries WHERE guid = ?"
    ))
    .bind(&delivery.guid)
    .try_map(rows::delivery)
    .fetch_one(&mut *conn)
    .await?;
    Ok(DeliveryInsert::Duplicate(existing))
}
