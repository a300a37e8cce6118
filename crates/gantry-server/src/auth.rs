//! The admin token: where it comes from, and the check on every API request.

use std::path::Path;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use gantry_config::Secret;

use crate::error::ApiError;
use crate::state::App;

/// `GANTRY_ADMIN_TOKEN` (via the configuration) when set; otherwise the token
/// in `data_dir/admin-token`, generated (mode 0600) at first start.
pub fn admin_token(
    configured: Option<&Secret>,
    data_dir: &Path,
) -> std::io::Result<(Secret, Option<std::path::PathBuf>)> {
    if let Some(token) = configured {
        return Ok((token.clone(), None));
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((Secret::new(text.trim()), Some(path))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = hex::encode(bytes);
    write_private(&path, &token)?;
    Ok((Secret::new(token), Some(path)))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

/// Compares in time independent of where the strings differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the `Authorization: Bearer` header against the admin token.
pub fn check_token(app: &App, request: &Request) -> Result<(), ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::unauthorized(
            "missing 'Authorization: Bearer <token>' header",
        ));
    };
    let Some(token) = header.strip_prefix("Bearer ") else {
        return Err(ApiError::unauthorized(
            "the Authorization header must be 'Bearer <token>'",
        ));
    };
    if !constant_time_eq(token.trim().as_bytes(), app.admin_token.expose().as_bytes()) {
        return Err(ApiError::unauthorized("invalid token"));
    }
    Ok(())
}

/// The most of a refused request's body that is read (and dropped) before answering.
const DRAIN_LIMIT: usize = 256 * 1024;
/// How long a refused request's body may take to arrive.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Answers a refused request, after reading what is left of its body (bounded in size and
/// time). Answering before the body has arrived makes the HTTP layer close the connection while
/// the client is still sending; the client then gets a reset instead of the refusal — a
/// "connection reset" where the user needed "invalid token". nginx calls this a lingering close.
pub async fn refuse(request: Request, error: ApiError) -> Response {
    let body = request.into_body();
    let _ = tokio::time::timeout(DRAIN_TIME, axum::body::to_bytes(body, DRAIN_LIMIT)).await;
    error.into_response()
}
