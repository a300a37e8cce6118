//! A stage's log for viewers of any size: line ranges by sequence number, search, and the raw
//! download. A viewer of a million-line log fetches only the lines on screen.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::state::App;

/// The most lines one range request returns.
const MAX_RANGE: i64 = 10_000;
/// The most matches one search returns.
const MAX_MATCHES: i64 = 10_000;
/// Lines read from the store at a time for a download.
const DOWNLOAD_PAGE: i64 = 5_000;

async fn check_stage(app: &App, id: i64, stage: &str) -> ApiResult<()> {
    let needs = app.store.stage_needs(id).await?;
    if needs.iter().any(|(name, _)| name == stage) {
        return Ok(());
    }
    if app.store.get_run(id).await?.is_none() {
        return Err(ApiError::not_found(format!("run {id} not found")));
    }
    Err(ApiError::not_found(format!(
        "run {id} has no stage '{stage}'"
    )))
}

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<i64>,
    to: Option<i64>,
}

/// `GET /api/v1/runs/{id}/stages/{stage}/lines?from=SEQ&to=SEQ`: the lines `from..=to` (at most
/// 10,000; 1,000 from `from` by default) and the stage's `total` so far.
pub async fn lines(
    State(app): State<Arc<App>>,
    Path((id, stage)): Path<(i64, String)>,
    query: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_stage(&app, id, &stage).await?;
    let from = query.from.unwrap_or(1).max(1);
    let to = query.to.unwrap_or(from + 999);
    if to < from {
        return Err(ApiError::bad_request(format!(
            "to ({to}) is before from ({from})"
        )));
    }
    let to = to.min(from + MAX_RANGE - 1);
    let total = app.store.last_log_seq(id, &stage).await?;
    let mut lines = app
        .store
        .read_logs(id, &stage, from - 1, to - from + 1)
        .await?;
    lines.retain(|line| line.seq <= to);
    Ok(Json(
        json!({ "stage": stage, "total": total, "from": from, "to": to, "lines": lines }),
    ))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
    limit: Option<i64>,
}

/// `GET /api/v1/runs/{id}/stages/{stage}/search?q=TEXT`: the `seq`s of the lines containing
/// TEXT (ASCII letters in either case), in order; `truncated` when there are more than `limit`.
pub async fn search(
    State(app): State<Arc<App>>,
    Path((id, stage)): Path<(i64, String)>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_stage(&app, id, &stage).await?;
    if query.q.is_empty() {
        return Err(ApiError::bad_request("q must not be empty"));
    }
    let limit = query.limit.unwrap_or(1000).clamp(1, MAX_MATCHES);
    let mut matches = app
        .store
        .search_logs(id, &stage, &query.q, limit + 1)
        .await?;
    let truncated = matches.len() as i64 > limit;
    matches.truncate(limit as usize);
    Ok(Json(json!({ "matches": matches, "truncated": truncated })))
}

/// `GET /api/v1/runs/{id}/stages/{stage}/raw`: the whole log as text, as printed (colour codes
/// included), streamed page by page so any size downloads in constant memory.
pub async fn raw(
    State(app): State<Arc<App>>,
    Path((id, stage)): Path<(i64, String)>,
) -> ApiResult<Response> {
    check_stage(&app, id, &stage).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let filename = format!("run-{id}-{stage}.log");
    tokio::spawn(async move {
        let mut since = 0;
        loop {
            let lines = match app.store.read_logs(id, &stage, since, DOWNLOAD_PAGE).await {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::error!(run_id = id, stage = %stage, error = %e, "a log download failed");
                    return;
                }
            };
            let Some(last) = lines.last() else { return };
            since = last.seq;
            let mut text = String::new();
            for line in &lines {
                text.push_str(&line.text);
                text.push('\n');
            }
            if tx.send(Bytes::from(text)).await.is_err() {
                return;
            }
            if (lines.len() as i64) < DOWNLOAD_PAGE {
                return;
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, Infallible>))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
