//! `POST /hooks/github`: verify, store durably, answer at once.
//!
//! Nothing here touches git or Docker: GitHub gives up after 10 s and a first
//! clone can take longer, so a verified delivery is written to the database
//! and answered 202; the dispatcher takes it from there (see `dispatch`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use gantry_store::{DeliveryInsert, NewDelivery};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::error::{ApiError, ApiResult};
use crate::metrics::{self, WebhookResult};
use crate::state::App;

/// GitHub's own cap on webhook payloads.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// Receives a delivery (`receive`) and counts what became of it.
pub async fn github(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let event = metrics::webhook_event(headers.get("x-github-event").and_then(|v| v.to_str().ok()));
    let answer = receive(State(app.clone()), headers, body).await;
    app.metrics
        .webhook_delivery(event, delivery_result(&answer));
    answer
}

/// What became of a delivery, told by the answer `receive` gave it.
fn delivery_result(answer: &ApiResult<(StatusCode, Json<Value>)>) -> WebhookResult {
    match answer {
        Ok((_, Json(body))) if body["duplicate"] == true => WebhookResult::Duplicate,
        Ok(_) => WebhookResult::Accepted,
        Err(e) => match e.status {
            StatusCode::PAYLOAD_TOO_LARGE => WebhookResult::TooLarge,
            StatusCode::BAD_REQUEST => WebhookResult::Malformed,
            StatusCode::NOT_FOUND => WebhookResult::UnknownRepository,
            StatusCode::UNAUTHORIZED => WebhookResult::BadSignature,
            _ => WebhookResult::Error,
        },
    }
}

async fn receive(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("payload larger than {} MiB", MAX_BODY >> 20),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let event = header("x-github-event")
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Event header"))?;
    let guid = header("x-github-delivery")
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Delivery header"))?;

    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let repository = payload
        .pointer("/repository/full_name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("the payload has no repository.full_name"))?;
    let project = app.project(repository).ok_or_else(|| {
        ApiError::not_found(format!(
            "repository '{repository}' is not configured in Gantry"
        ))
    })?;
    let signature = header("x-hub-signature-256")
        .ok_or_else(|| ApiError::unauthorized("missing X-Hub-Signature-256 header"))?;
    if !signature_matches(
        project.webhook_secret.expose().as_bytes(),
        &body,
        &signature,
    ) {
        tracing::warn!(repository, "webhook signature mismatch");
        return Err(ApiError::unauthorized(
            "X-Hub-Signature-256 does not match: check that the webhook's secret equals the project's webhook_secret",
        ));
    }

    let (git_ref, after_sha) = match event.as_str() {
        "push" => (
            payload.get("ref").and_then(Value::as_str).map(String::from),
            payload
                .get("after")
                .and_then(Value::as_str)
                .map(String::from),
        ),
        _ => (None, None),
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let inserted = app
        .store
        .record_delivery(NewDelivery {
            guid,
            event: event.clone(),
            project: Some(repository.to_string()),
            git_ref,
            after_sha,
            payload: text,
        })
        .await?;
    let duplicate = inserted.is_duplicate();
    let delivery = inserted.delivery().clone();
    if let DeliveryInsert::Inserted(d) = &inserted {
        match event.as_str() {
            "push" => crate::dispatch::wake(&app, Some(repository)),
            "ping" => {
                app.store
                    .set_delivery_outcome(d.id, "ping: pong", None)
                    .await?
            }
            other => {
                app.store
                    .set_delivery_outcome(
                        d.id,
                        &format!("ignored: Gantry does not act on '{other}' events"),
                        None,
                    )
                    .await?
            }
        }
    }
    let status = if event == "ping" {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut answer = json!({ "delivery": delivery.id, "guid": delivery.guid, "event": event });
    if duplicate {
        answer["duplicate"] = json!(true);
    }
    Ok((status, Json(answer)))
}

/// Checks GitHub's `sha256=<hex>` HMAC of the raw body, in constant time.
pub fn signature_matches(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_matches(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            header
        ));
        assert_eq!(
            gantry_testkit::webhook::sign("It's a Secret to Everybody", b"Hello, World!"),
            header
        );
        assert!(!signature_matches(b"wrong", b"Hello, World!", header));
        assert!(!signature_matches(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            header
        ));
        assert!(!signature_matches(b"s", b"b", "sha1=abc"));
        assert!(!signature_matches(b"s", b"b", "sha256=zz"));
    }
}
