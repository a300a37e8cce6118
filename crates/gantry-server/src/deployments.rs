//! The deploy history and manual rollbacks.
//!
//! - `GET /api/v1/deployments?cluster=&limit=`: every rollout and rollback Gantry made, newest
//!   first;
//! - `POST /api/v1/deployments/{cluster}/{namespace}/{name}/rollback` (optional body
//!   `{"to_revision": N}`): `kubectl rollout undo`, watched to its end and recorded;
//! - `GET /api/v1/deployments/{cluster}/{namespace}/{name}/history`: the Deployment's revisions,
//!   as `kubectl rollout history` lists them.
//!
//! The cluster `default` is the server's default kubeconfig unless gantry.toml names a
//! `[[cluster]]` so. The runner records what a finished stage produced through
//! [`record_stage`], and the run object shows it through [`add_to_run_view`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use gantry_engine::{DeployOutcome, DeployResult, StageReport};
use gantry_kube::{Cluster, ClusterConfig, Outcome};
use gantry_store::{Deployment, NewDeployment};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::state::App;

/// The cluster name that means the default kubeconfig, as in a `deploy` stage without `cluster`.
const DEFAULT_CLUSTER: &str = "default";

#[derive(Deserialize)]
pub struct ListQuery {
    cluster: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let cluster = query.cluster.as_deref().filter(|c| !c.is_empty());
    let deployments = app.store.list_deployments(cluster, limit).await?;
    Ok(Json(json!({ "deployments": deployments })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    /// The revision to restore; none: the one before the current.
    to_revision: Option<i64>,
}

/// Rolls the Deployment back, waits for that rollout to end, records it and answers with the
/// history entry and `current_revision`, the number the restored template now runs under.
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path((cluster, namespace, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be empty or {{\"to_revision\": N}}: {e}"
            ))
        })?
    };
    if let Some(revision) = request.to_revision
        && revision < 1
    {
        return Err(ApiError::bad_request(format!(
            "to_revision {revision} is not a revision: revisions count from 1"
        )));
    }
    let config = cluster_config(&app, &cluster)?;
    let connected = Cluster::connect(&config).await.map_err(kube_error)?;
    // In a task of its own: once the undo is sent, the rollback is watched and recorded even
    // if the client gives up waiting.
    let task = tokio::spawn(async move {
        let started_at = Utc::now();
        let (progress, mut lines) = mpsc::channel::<String>(64);
        let log = async {
            while let Some(line) = lines.recv().await {
                tracing::info!(cluster = %config.name, namespace = %namespace, deployment = %name, "{line}");
            }
        };
        let cancel = app.shutdown.child_token();
        let (report, ()) = tokio::join!(
            connected.rollback(&namespace, &name, request.to_revision, progress, cancel),
            log
        );
        let report = report.map_err(kube_error)?;
        let mut entry = manual_entry(
            &config.name,
            &namespace,
            &name,
            &report,
            started_at,
            Utc::now(),
        );
        entry.id = app.store.record_deployment(&entry).await?;
        app.metrics.rollback(
            &entry.cluster,
            crate::metrics::RollbackTrigger::Manual,
            entry.result == "complete",
            report.duration(),
        );
        tracing::info!(
            cluster = %entry.cluster, namespace = %entry.namespace, deployment = %entry.deployment,
            result = %entry.result, "manual rollback"
        );
        let mut answer = serde_json::to_value(&entry).unwrap_or_default();
        answer["current_revision"] = json!(report.revision_after);
        Ok::<_, ApiError>(answer)
    });
    let answer = task.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the rollback task failed: {e}"),
        )
    })??;
    Ok(Json(answer))
}

/// `{"revisions": [{revision, change_cause, images, current}]}`, oldest first.
pub async fn history(
    State(app): State<Arc<App>>,
    Path((cluster, namespace, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let config = cluster_config(&app, &cluster)?;
    let connected = Cluster::connect(&config).await.map_err(kube_error)?;
    let revisions = connected
        .history(&namespace, &name)
        .await
        .map_err(kube_error)?;
    let revisions: Vec<Value> = revisions
        .iter()
        .map(|r| {
            json!({
                "revision": r.revision,
                "change_cause": r.change_cause,
                "images": r.images,
                "current": r.current,
            })
        })
        .collect();
    Ok(Json(json!({ "revisions": revisions })))
}

/// A `[[cluster]]` of gantry.toml by name, or the default kubeconfig for `default`.
fn cluster_config(app: &App, name: &str) -> ApiResult<ClusterConfig> {
    if let Some(cluster) = app.config.clusters.iter().find(|c| c.name == name) {
        return Ok(crate::wiring::kube_cluster(cluster));
    }
    if name == DEFAULT_CLUSTER {
        return Ok(ClusterConfig {
            name: DEFAULT_CLUSTER.into(),
            ..ClusterConfig::default()
        });
    }
    let mut known = vec![DEFAULT_CLUSTER];
    known.extend(app.config.clusters.iter().map(|c| c.name.as_str()));
    Err(ApiError::not_found(format!(
        "cluster '{name}' is not configured (clusters: {})",
        known.join(", ")
    )))
}

/// gantry-kube's errors as answers; their messages already say what to do.
fn kube_error(error: gantry_kube::Error) -> ApiError {
    use gantry_kube::Error as E;
    let status = match &error {
        E::NotFound { .. } => StatusCode::NOT_FOUND,
        E::UnknownRevision { .. } => StatusCode::BAD_REQUEST,
        E::Paused { .. } | E::Conflict(_) => StatusCode::CONFLICT,
        E::Unreachable { .. } | E::Api(_) => StatusCode::BAD_GATEWAY,
        E::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, error.to_string())
}

/// The history entry of a manual rollback. `revision_after` is the revision restored, as in the
/// entry of an automatic one (the template runs under a new number afterwards, as `kubectl
/// rollout undo` does it).
fn manual_entry(
    cluster: &str,
    namespace: &str,
    deployment: &str,
    report: &gantry_kube::RolloutReport,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
) -> NewDeployment {
    let rollback = report.rolled_back_to.map_or_else(
        || "the rollback".to_owned(),
        |r| format!("rollback to revision {r}"),
    );
    let (result, cause) = match &report.outcome {
        Outcome::RolledBack { cause, .. } => ("complete", cause.clone()),
        // Nothing was sent: the template already was the one asked for.
        Outcome::Complete => (
            "complete",
            "nothing to roll back: the current template already matches that revision".into(),
        ),
        Outcome::Failed { cause } => ("failed", cause.clone()),
        Outcome::TimedOut => (
            "timed_out",
            format!("{rollback} did not complete within the Deployment's progress deadline"),
        ),
        Outcome::Cancelled => (
            "cancelled",
            format!("{rollback} was cancelled: the server stopped while watching it"),
        ),
    };
    Deployment {
        id: 0,
        kind: "rollback".into(),
        run_id: None,
        stage: None,
        cluster: cluster.into(),
        namespace: namespace.into(),
        deployment: deployment.into(),
        image_before: report.image_before.clone(),
        image_after: Some(report.image_after.clone()),
        revision_before: report.revision_before,
        revision_after: report.rolled_back_to.or(report.revision_before),
        result: result.into(),
        cause: Some(cause),
        started_at,
        finished_at,
    }
}

/// Keeps what a finished stage produced: a build's outputs, a deploy's rollout in the history.
pub(crate) async fn record_stage(
    app: &App,
    run_id: i64,
    report: &StageReport,
    started_at: Option<DateTime<Utc>>,
) {
    if !report.outputs.is_empty()
        && let Err(e) = app
            .store
            .set_stage_outputs(run_id, &report.name, &report.outputs)
            .await
    {
        tracing::error!(run_id, stage = %report.name, error = %e, "cannot store a stage's outputs");
    }
    for push in &report.pushes {
        app.metrics.image_push(&push.registry, push.ok);
    }
    let Some(deploy) = &report.deploy else {
        return;
    };
    let result = match deploy.outcome {
        DeployOutcome::Complete => crate::metrics::DeployResult::Success,
        DeployOutcome::RolledBack { .. } => crate::metrics::DeployResult::RolledBack,
        _ => crate::metrics::DeployResult::Failure,
    };
    app.metrics
        .deploy(&deploy.cluster, result, report.duration.unwrap_or_default());
    if let Some(rollback) = deploy.rollback {
        app.metrics.rollback(
            &deploy.cluster,
            crate::metrics::RollbackTrigger::Automatic,
            rollback.ok,
            rollback.duration,
        );
    }
    let now = Utc::now();
    let entries = stage_entries(
        run_id,
        &report.name,
        deploy,
        report.reason.as_deref(),
        started_at.unwrap_or(now),
        now,
    );
    for entry in entries {
        if let Err(e) = app.store.record_deployment(&entry).await {
            tracing::error!(run_id, stage = %report.name, error = %e, "cannot record a deployment");
        }
    }
}

/// The history entries of a deploy stage's rollout: the rollout, and when it was rolled back,
/// the rollback too (from the failed image back to the one before), so the history shows both
/// the failure and the revert. Both span the stage: the engine does not time the rollback apart.
fn stage_entries(
    run_id: i64,
    stage: &str,
    deploy: &DeployResult,
    reason: Option<&str>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
) -> Vec<NewDeployment> {
    let (result, cause) = match &deploy.outcome {
        DeployOutcome::Complete => ("complete", None),
        DeployOutcome::Failed { cause } => ("failed", Some(cause.clone())),
        DeployOutcome::RolledBack { cause, .. } => ("rolled_back", Some(cause.clone())),
        DeployOutcome::TimedOut => ("timed_out", reason.map(str::to_owned)),
        DeployOutcome::Cancelled => ("cancelled", None),
    };
    let rollout = Deployment {
        id: 0,
        kind: "deploy".into(),
        run_id: Some(run_id),
        stage: Some(stage.into()),
        cluster: deploy.cluster.clone(),
        namespace: deploy.namespace.clone(),
        deployment: deploy.deployment.clone(),
        image_before: deploy.image_before.clone(),
        image_after: Some(deploy.image_after.clone()),
        revision_before: deploy.revision_before,
        revision_after: deploy.revision_after,
        result: result.into(),
        cause,
        started_at,
        finished_at,
    };
    let DeployOutcome::RolledBack { revision, .. } = deploy.outcome else {
        return vec![rollout];
    };
    let rollback = Deployment {
        kind: "rollback".into(),
        image_before: rollout.image_after.clone(),
        image_after: rollout.image_before.clone(),
        revision_before: rollout.revision_after,
        revision_after: Some(revision),
        result: "complete".into(),
        cause: Some("automatic rollback".into()),
        ..rollout.clone()
    };
    vec![rollout, rollback]
}

/// The run object's additions for each stage: `outputs` (`{}` when none) and, for a stage that
/// rolled something out, `deploy` (its last rollout).
pub(crate) async fn add_to_run_view(
    app: &App,
    run_id: i64,
    view: &mut Value,
) -> Result<(), gantry_store::Error> {
    let outputs = app.store.stage_outputs(run_id).await?;
    let deployments = app.store.run_deployments(run_id).await?;
    let Some(stages) = view.get_mut("stages").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for stage in stages {
        let name = stage
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let produced: serde_json::Map<String, Value> = outputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| o.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
            .unwrap_or_default();
        stage["outputs"] = Value::Object(produced);
        let rollout = deployments
            .iter()
            .rev()
            .find(|d| d.kind == "deploy" && d.stage.as_deref() == Some(name.as_str()));
        if let Some(d) = rollout {
            stage["deploy"] = json!({
                "cluster": d.cluster,
                "namespace": d.namespace,
                "deployment": d.deployment,
                "image_before": d.image_before,
                "image_after": d.image_after,
                "revision_before": d.revision_before,
                "revision_after": d.revision_after,
                "result": d.result,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(outcome: DeployOutcome) -> DeployResult {
        DeployResult {
            cluster: "prod".into(),
            namespace: "shop".into(),
            deployment: "backend".into(),
            image_after: "app:2".into(),
            outcome,
            image_before: Some("app:1".into()),
            revision_before: Some(4),
            revision_after: Some(5),
            rollback: None,
        }
    }

    /// `kind result image_before->image_after revision_before->revision_after cause`, one a line.
    fn entries(outcome: DeployOutcome, reason: Option<&str>) -> Vec<String> {
        let at = Utc::now();
        stage_entries(7, "deploy", &deploy(outcome), reason, at, at)
            .iter()
            .map(|e| {
                assert_eq!(
                    (e.run_id, e.stage.as_deref(), e.cluster.as_str()),
                    (Some(7), Some("deploy"), "prod")
                );
                format!(
                    "{} {} {}->{} {:?}->{:?} {}",
                    e.kind,
                    e.result,
                    e.image_before.as_deref().unwrap_or("-"),
                    e.image_after.as_deref().unwrap_or("-"),
                    e.revision_before,
                    e.revision_after,
                    e.cause.as_deref().unwrap_or("-"),
                )
            })
            .collect()
    }

    #[test]
    fn a_stage_rollout_becomes_history() {
        assert_eq!(
            entries(DeployOutcome::Complete, None),
            ["deploy complete app:1->app:2 Some(4)->Some(5) -"]
        );
        let failed = DeployOutcome::Failed {
            cause: "pod x CrashLoopBackOff".into(),
        };
        assert_eq!(
            entries(failed, Some("pod x CrashLoopBackOff")),
            ["deploy failed app:1->app:2 Some(4)->Some(5) pod x CrashLoopBackOff"]
        );
        let rolled_back = DeployOutcome::RolledBack {
            cause: "pod x OOMKilled".into(),
            revision: 4,
        };
        assert_eq!(
            entries(
                rolled_back,
                Some("rolled back to revision 4: pod x OOMKilled")
            ),
            [
                "deploy rolled_back app:1->app:2 Some(4)->Some(5) pod x OOMKilled",
                "rollback complete app:2->app:1 Some(5)->Some(4) automatic rollback",
            ]
        );
        assert_eq!(
            entries(
                DeployOutcome::TimedOut,
                Some("rollout of shop/backend timed out after 5m")
            ),
            [
                "deploy timed_out app:1->app:2 Some(4)->Some(5) rollout of shop/backend timed out after 5m"
            ]
        );
        assert_eq!(
            entries(DeployOutcome::Cancelled, Some("cancelled")),
            ["deploy cancelled app:1->app:2 Some(4)->Some(5) -"]
        );
    }
}
