//! One error type for every HTTP answer: the client gets a clear JSON
//! message, the log gets the details.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Database failures are the server's problem: 500, with the cause in the log
/// and a short message for the client.
impl From<gantry_store::Error> for ApiError {
    fn from(e: gantry_store::Error) -> ApiError {
        tracing::error!(error = %e, "database error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "database error; see the server log",
        )
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The most of a non-JSON error body that is carried into the JSON answer.
const PLAIN_ERROR_LIMIT: usize = 16 * 1024;

/// Answers every error of the API and the webhook in JSON, also the ones axum makes itself
/// before a handler runs: a path parameter that does not parse (`/api/v1/runs/abc`), a query or
/// body it cannot read, or a method the endpoint does not take (405, which axum sends empty).
/// Their text becomes `{"error": ...}`; their other headers are kept.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let applies = path.starts_with("/api/") || path.starts_with("/hooks/");
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !applies || is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_ERROR_LIMIT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => format!("{path} does not take {method}"),
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let answer = ApiError::new(status, message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(answer.headers().clone());
    let (_, body) = answer.into_parts();
    Response::from_parts(parts, body)
}
