//! Stage outputs and the deploy history.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Context;
use crate::{Result, Store};

/// One rollout or rollback, as `gantry deployments` and `GET /api/v1/deployments` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub id: i64,
    /// `deploy` or `rollback`.
    pub kind: String,
    pub run_id: Option<i64>,
    pub stage: Option<String>,
    pub cluster: String,
    pub namespace: String,
    pub deployment: String,
    pub image_before: Option<String>,
    pub image_after: Option<String>,
    pub revision_before: Option<i64>,
    pub revision_after: Option<i64>,
    /// `complete`, `failed`, `rolled_back`, `timed_out`, `cancelled` or `error`.
    pub result: String,
    pub cause: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// A deployment to record; `id` is assigned by the store.
pub type NewDeployment = Deployment;

type Row = (
    i64,
    String,
    Option<i64>,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

const COLUMNS: &str = "id, kind, run_id, stage, cluster, namespace, deployment, image_before, image_after, \
     revision_before, revision_after, result, cause, started_at, finished_at";

fn from_row(r: Row) -> Deployment {
    Deployment {
        id: r.0,
        kind: r.1,
        run_id: r.2,
        stage: r.3,
        cluster: r.4,
        namespace: r.5,
        deployment: r.6,
        image_before: r.7,
        image_after: r.8,
        revision_before: r.9,
        revision_after: r.10,
        result: r.11,
        cause: r.12,
        started_at: r.13,
        finished_at: r.14,
    }
}

impl Store {
    /// Records what a stage produced (`digest`, `image`). The stage row must exist.
    pub async fn set_stage_outputs(
        &self,
        run_id: i64,
        stage: &str,
        outputs: &[(String, String)],
    ) -> Result<()> {
        let json = serde_json::Value::Object(
            outputs
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
        .to_string();
        sqlx::query("UPDATE stages SET outputs = ? WHERE run_id = ? AND name = ?")
            .bind(json)
            .bind(run_id)
            .bind(stage)
            .execute(&self.writer)
            .await
            .context(|| format!("save the outputs of stage {stage} of run {run_id}"))?;
        Ok(())
    }

    /// Every stage of the run that produced outputs, with them, in pipeline order.
    pub async fn stage_outputs(&self, run_id: i64) -> Result<Vec<(String, Vec<(String, String)>)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, outputs FROM stages WHERE run_id = ? AND outputs IS NOT NULL ORDER BY position, name",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await
        .context(|| format!("read the stage outputs of run {run_id}"))?;
        Ok(rows
            .into_iter()
            .map(|(name, json)| {
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&json).unwrap_or_default();
                let outputs = map
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect();
                (name, outputs)
            })
            .collect())
    }

    /// Appends to the deploy history; returns the new entry's id.
    pub async fn record_deployment(&self, d: &NewDeployment) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deployments (kind, run_id, stage, cluster, namespace, deployment, image_before, \
             image_after, revision_before, revision_after, result, cause, started_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&d.kind)
        .bind(d.run_id)
        .bind(&d.stage)
        .bind(&d.cluster)
        .bind(&d.namespace)
        .bind(&d.deployment)
        .bind(&d.image_before)
        .bind(&d.image_after)
        .bind(d.revision_before)
        .bind(d.revision_after)
        .bind(&d.result)
        .bind(&d.cause)
        .bind(d.started_at)
        .bind(d.finished_at)
        .fetch_one(&self.writer)
        .await
        .context(|| format!("record a {} of {}/{}", d.kind, d.namespace, d.deployment))?;
        Ok(id)
    }

    /// The rollouts and rollbacks run `run_id`'s deploy stages made, oldest first.
    pub async fn run_deployments(&self, run_id: i64) -> Result<Vec<Deployment>> {
        let sql = format!("SELECT {COLUMNS} FROM deployments WHERE run_id = ? ORDER BY id");
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_all(&self.reader)
            .await
            .context(|| format!("read the deployments of run {run_id}"))?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// The deploy history, newest first, optionally of one cluster.
    pub async fn list_deployments(
        &self,
        cluster: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Deployment>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deployments WHERE (? IS NULL OR cluster = ?) ORDER BY id DESC LIMIT ?"
        );
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(cluster)
            .bind(cluster)
            .bind(limit.max(0))
            .fetch_all(&self.reader)
            .await
            .context(|| "list deployments".to_string())?;
        Ok(rows.into_iter().map(from_row).collect())
    }
}
