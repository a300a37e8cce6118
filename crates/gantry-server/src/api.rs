//! `/api/v1`: the REST API the CLI and the web UI use. JSON in and out,
//! errors as `{"error": "..."}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use gantry_store::{NewRun, Run, RunFilter, RunStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::App;

pub async fn projects(State(app): State<Arc<App>>) -> Json<Value> {
    let projects: Vec<Value> = app
        .config
        .projects
        .iter()
        .map(|p| json!({ "name": p.name, "clone_url": gantry_git::redact_url(&p.clone_url), "pipeline": p.pipeline }))
        .collect();
    Json(json!({ "projects": projects }))
}

#[derive(Deserialize)]
pub struct RunsQuery {
    project: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list_runs(
    State(app): State<Arc<App>>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<RunStatus>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let runs = app
        .store
        .list_runs(&RunFilter {
            project: query.project.filter(|p| !p.is_empty()),
            status,
            limit,
        })
        .await?;
    // Each run as `GET /runs/{id}` shows it, stages with their needs, outputs and deploy.
    let mut views = Vec::with_capacity(runs.len());
    for run in &runs {
        views.push(crate::sse::run_view(&app, run).await?);
    }
    Ok(Json(json!({ "runs": views })))
}

async fn find_run(app: &App, id: i64) -> ApiResult<Run> {
    app.store
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id} not found")))
}

pub async fn get_run(State(app): State<Arc<App>>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let run = find_run(&app, id).await?;
    Ok(Json(crate::sse::run_view(&app, &run).await?))
}

#[derive(Deserialize)]
pub struct LogQuery {
    since: Option<i64>,
    limit: Option<i64>,
}

/// A stage's log as text; `?since=SEQ` for the lines after SEQ. The header
/// `X-Gantry-Last-Seq` says where to continue.
pub async fn stage_log(
    State(app): State<Arc<App>>,
    Path((id, stage)): Path<(i64, String)>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let run = find_run(&app, id).await?;
    if !run.stages.iter().any(|s| s.name == stage) {
        return Err(ApiError::not_found(format!(
            "run {id} has no stage '{stage}'"
        )));
    }
    let since = query.since.unwrap_or(0).max(0);
    let limit = query.limit.unwrap_or(100_000).clamp(1, 1_000_000);
    let lines = app.store.read_logs(id, &stage, since, limit).await?;
    let last = lines.last().map(|l| l.seq).unwrap_or(since);
    let mut text = String::new();
    for line in &lines {
        text.push_str(&line.text);
        text.push('\n');
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-gantry-last-seq", HeaderValue::from(last));
    Ok((headers, text))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    project: String,
    branch: Option<String>,
    commit_sha: Option<String>,
}

/// A manual run of a branch's tip (resolved when the run starts) or of a commit.
pub async fn trigger(
    State(app): State<Arc<App>>,
    body: Result<Json<TriggerRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if app.project(&request.project).is_none() {
        return Err(ApiError::not_found(format!(
            "project '{}' is not configured",
            request.project
        )));
    }
    let (branch, sha) = match (request.branch, request.commit_sha) {
        (Some(b), None) if !b.trim().is_empty() => (Some(b), String::new()),
        (None, Some(s)) if is_sha(&s) => (None, s.to_lowercase()),
        (None, Some(s)) => {
            return Err(ApiError::bad_request(format!(
                "commit_sha '{s}' is not a 40-character hex SHA"
            )));
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of 'branch' and 'commit_sha'",
            ));
        }
    };
    let run = app
        .store
        .create_run(NewRun {
            project: request.project,
            event: "manual".into(),
            branch,
            tag: None,
            commit_sha: sha,
            commit_message: None,
            delivery_id: None,
            rerun_of: None,
        })
        .await?;
    app.hub.run_changed(run.id);
    app.runs_waiting.notify_one();
    Ok((StatusCode::CREATED, Json(run)))
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn cancel(State(app): State<Arc<App>>, Path(id): Path<i64>) -> ApiResult<Json<Run>> {
    let run = find_run(&app, id).await?;
    if run.status.is_finished() {
        return Err(ApiError::conflict(format!(
            "run {id} has already finished ({})",
            run.status
        )));
    }
    // A queued run is cancelled in the database, unless a runner claims it first: then its
    // token appears at once, and the runner ends it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let token = loop {
        if let Some(token) = app.cancel_token(id) {
            break token;
        }
        if app
            .store
            .cancel_queued_run(id, "cancelled before it started")
            .await?
        {
            app.hub.run_changed(id);
            app.metrics
                .run_finished(&run.project, RunStatus::Cancelled, None);
            return Ok(Json(find_run(&app, id).await?));
        }
        let now = find_run(&app, id).await?;
        if now.status.is_finished() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(now));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    token.cancel();
    // The runner records the end once the containers are gone; wait for it briefly so the
    // answer shows the cancelled run.
    for _ in 0..100 {
        let run = find_run(&app, id).await?;
        if run.status.is_finished() {
            return Ok(Json(run));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(Json(find_run(&app, id).await?))
}

pub async fn rerun(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let run = find_run(&app, id).await?;
    if app.project(&run.project).is_none() {
        return Err(ApiError::conflict(format!(
            "project '{}' is no longer configured",
            run.project
        )));
    }
    let new = app
        .store
        .create_run(NewRun {
            project: run.project,
            event: run.event,
            branch: run.branch,
            tag: run.tag,
            commit_sha: run.commit_sha,
            commit_message: run.commit_message,
            delivery_id: None,
            rerun_of: Some(run.id),
        })
        .await?;
    app.hub.run_changed(new.id);
    app.runs_waiting.notify_one();
    Ok((StatusCode::CREATED, Json(new)))
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    limit: Option<i64>,
}

pub async fn deliveries(
    State(app): State<Arc<App>>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let deliveries = app.store.list_deliveries(limit).await?;
    Ok(Json(json!({ "deliveries": deliveries })))
}
