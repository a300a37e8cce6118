//! `/api/v1/projects/{project}/secrets`: pipeline secrets set at run time, sealed before they
//! are stored, never returned. A project's name holds a `/`, so clients send it encoded
//! (`demo%2Fbackend`); the path extractor decodes it.
//!
//! Runs get them through [`for_run`], merged over the project's secrets from gantry.toml.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gantry_config::Project;
use gantry_secrets::Sealed;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::App;

/// The largest value accepted: far more than any token or key file, far less than what an
/// environment variable may hold (128 KiB on Linux).
const MAX_VALUE_LEN: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    value: String,
}

/// `PUT .../secrets/{name}` with `{"value": "..."}`: creates or replaces the secret. 204.
pub async fn put(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<PutSecret>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Path((project, name)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    configured(&app, &project)?;
    check_name(&name)?;
    let Json(PutSecret { value }) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_value(&name, &value)?;
    let sealed = gantry_secrets::seal(&app.secret_key, &project, &name, &value).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encrypt the secret: {e}"),
        )
    })?;
    let created = app
        .store
        .put_secret(&project, &name, &sealed.nonce, &sealed.ciphertext)
        .await?;
    tracing::info!(project = %project, secret = %name, created, "secret set");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET .../secrets`: the names and times of a project's secrets, never their values.
pub async fn list(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(project) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    configured(&app, &project)?;
    let secrets = app.store.list_secrets(&project).await?;
    Ok(Json(json!({ "secrets": secrets })))
}

/// `DELETE .../secrets/{name}`: 204, or 404 when the project has no such secret.
pub async fn delete(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((project, name)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    configured(&app, &project)?;
    check_name(&name)?;
    if !app.store.delete_secret(&project, &name).await? {
        return Err(ApiError::not_found(format!(
            "project '{project}' has no secret {name}"
        )));
    }
    tracing::info!(project = %project, secret = %name, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The secrets a run of `project` gets: those of gantry.toml, then the stored ones, decrypted;
/// a stored secret replaces a configured one of the same name. A stored secret that does not
/// decrypt fails the run: the key changed, and running without the secret would hide that.
pub async fn for_run(app: &App, project: &Project) -> Result<Vec<(String, String)>, String> {
    let mut secrets: Vec<(String, String)> = project
        .secrets
        .iter()
        .map(|(name, value)| (name.clone(), value.expose().to_owned()))
        .collect();
    let stored = app
        .store
        .all_secrets(&project.name)
        .await
        .map_err(|e| format!("cannot read the project's secrets: {e}"))?;
    for secret in stored {
        let sealed = Sealed {
            nonce: secret.nonce,
            ciphertext: secret.ciphertext,
        };
        let value = gantry_secrets::open(&app.secret_key, &project.name, &secret.name, &sealed)
            .map_err(|e| e.to_string())?
            .expose()
            .to_owned();
        match secrets.iter_mut().find(|(name, _)| *name == secret.name) {
            Some(configured) => configured.1 = value,
            None => secrets.push((secret.name, value)),
        }
    }
    Ok(secrets)
}

fn configured(app: &App, project: &str) -> ApiResult<()> {
    match app.project(project) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!(
            "project '{project}' is not configured"
        ))),
    }
}

/// `[A-Z_][A-Z0-9_]*`: what a stage's `secrets:` can name, as an environment variable.
fn check_name(name: &str) -> ApiResult<()> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "invalid secret name '{name}': use upper-case letters, digits and '_', not starting with \
         a digit (e.g. API_TOKEN)"
    )))
}

fn check_value(name: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the value of secret {name} is empty"
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "the value of secret {name} contains a NUL byte, which an environment variable cannot hold"
        )));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(ApiError::bad_request(format!(
            "the value of secret {name} is {} bytes; a secret may be at most {MAX_VALUE_LEN} bytes",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for good in ["A", "_", "API_TOKEN", "_X1", "TOKEN_2", "A1B2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1A",
            "api_token",
            "Token",
            "A-B",
            "A B",
            "A.B",
            "ÄPI",
            "A\0",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_name("api-token").unwrap_err().message,
            "invalid secret name 'api-token': use upper-case letters, digits and '_', not \
             starting with a digit (e.g. API_TOKEN)"
        );
    }

    #[test]
    fn secret_values() {
        assert!(check_value("A", "x").is_ok());
        assert!(check_value("A", &"x".repeat(MAX_VALUE_LEN)).is_ok());
        let message = |value: &str| check_value("A", value).unwrap_err().message;
        assert_eq!(message(""), "the value of secret A is empty");
        assert_eq!(
            message("a\0b"),
            "the value of secret A contains a NUL byte, which an environment variable cannot hold"
        );
        assert_eq!(
            message(&"x".repeat(MAX_VALUE_LEN + 1)),
            "the value of secret A is 65537 bytes; a secret may be at most 65536 bytes"
        );
    }
}
