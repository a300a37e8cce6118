//! The admin token: where it comes from, and the check on every API request.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
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

pub async fn require_token(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
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
    Ok(next.run(request).await)
}
