//! `gantry serve`: GitHub webhooks in, runs out, everything stored.
//!
//! The only crate that knows axum. It wires the store, git, the engine and
//! Docker together through their crates' APIs and never reaches past them
//! (no sqlx, bollard or git2 here).
//!
//! - `webhook`: verifies and stores deliveries, answers at once;
//! - `dispatch`: turns stored deliveries into runs (or a reason for none);
//! - `runner`: the queue: checkout, engine, storing events;
//! - `api`: `/api/v1`, behind the admin token (`auth`);
//! - `secrets`: the API's secret store, and the secrets a run gets;
//! - `deployments`: the deploy history and manual rollbacks;
//! - `metrics`: `/metrics` for Prometheus, and what the others record into it;
//! - `hub` and `sse`: live run events, fanned out to Server-Sent Events streams;
//! - `logs`: a stage's log by line ranges, search and download, for viewers of any size;
//! - `web`: the embedded web UI (`web/`) and its cookie sessions.

mod api;
mod auth;
mod deployments;
mod dispatch;
mod error;
mod hub;
mod logs;
pub mod metrics;
mod runner;
mod secrets;
mod sse;
mod state;
mod web;
pub mod webhook;
pub mod wiring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use gantry_config::Config;
use gantry_store::{RunStatus, StageRecord, StageStatus, Store};
use serde_json::json;
use tokio::net::TcpListener;

pub use crate::state::App;
pub use crate::wiring::{kube_deployer, registry_auths};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] gantry_store::Error),
    #[error(transparent)]
    SecretKey(#[from] gantry_secrets::Error),
    #[error("cannot read or create the admin token in {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// A started server: bound, recovered, its workers running.
pub struct Server {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    /// Where the generated admin token is stored, when it was not configured.
    pub token_file: Option<std::path::PathBuf>,
    listener: TcpListener,
}

impl Server {
    /// Opens the store, recovers from a crash, binds the listener and starts
    /// the dispatcher and the runner. Serving starts with [`Server::serve`].
    pub async fn start(config: Config) -> Result<Server, Error> {
        let data_dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let store = match &config.server.database_url {
            Some(url) => Store::open(url).await?,
            None => Store::open_sqlite(&data_dir.join("gantry.db")).await?,
        };
        let (token, token_file) = auth::admin_token(config.server.admin_token.as_ref(), &data_dir)
            .map_err(|source| Error::Token {
                path: data_dir.display().to_string(),
                source,
            })?;
        let secret_key = load_secret_key(&data_dir)?;
        let listen = config.server.listen;
        let app = Arc::new(App::new(config, store, token, secret_key));
        recover(&app).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
        tokio::spawn(dispatch::recover(app.clone()));
        tokio::spawn(runner::runner(app.clone()));
        tokio::spawn(metrics::upkeep(app.clone()));
        Ok(Server {
            app,
            addr,
            token_file,
            listener,
        })
    }

    /// Serves until `shutdown` fires; then cancels the runs in progress and
    /// waits (up to 10 s) for their containers to be removed.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let app = self.app.clone();
        let stop = app.shutdown.clone();
        let router = router(app.clone());
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop.cancel();
            })
            .await
            .map_err(Error::Serve)?;
        let tokens: Vec<_> = app
            .cancels
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for token in tokens {
            token.cancel();
        }
        for _ in 0..100 {
            if app.running.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/projects", get(api::projects))
        .route("/runs", get(api::list_runs).post(api::trigger))
        .route("/runs/{id}", get(api::get_run))
        .route("/runs/{id}/stages/{stage}/log", get(api::stage_log))
        .route("/runs/{id}/stages/{stage}/lines", get(logs::lines))
        .route("/runs/{id}/stages/{stage}/search", get(logs::search))
        .route("/runs/{id}/stages/{stage}/raw", get(logs::raw))
        .route("/runs/{id}/events", get(sse::run_events))
        .route("/events", get(sse::list_events))
        .route("/runs/{id}/cancel", post(api::cancel))
        .route("/runs/{id}/rerun", post(api::rerun))
        .route("/deliveries", get(api::deliveries))
        .route("/deployments", get(deployments::list))
        .route(
            "/deployments/{cluster}/{namespace}/{name}/rollback",
            post(deployments::rollback),
        )
        .route(
            "/deployments/{cluster}/{namespace}/{name}/history",
            get(deployments::history),
        )
        .route("/projects/{project}/secrets", get(secrets::list))
        .route(
            "/projects/{project}/secrets/{name}",
            put(secrets::put).delete(secrets::delete),
        )
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            web::require_auth,
        ));
    Router::new()
        .route(
            "/hooks/github",
            post(webhook::github).layer(DefaultBodyLimit::max(webhook::MAX_BODY)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::endpoint))
        .nest("/api/v1", api)
        .merge(web::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(error::json_errors))
        // Last, so that it wraps every route above (and the fallback).
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            metrics::track_http,
        ))
        .with_state(app)
}

/// The key of the secret store: `GANTRY_SECRET_KEY`, or `data_dir/secret.key` (made at first
/// start, and worth a backup: without it no stored secret can be read).
fn load_secret_key(data_dir: &std::path::Path) -> Result<gantry_secrets::SecretKey, Error> {
    let key = gantry_secrets::SecretKey::load(data_dir, &|name| std::env::var(name).ok())?;
    if let gantry_secrets::KeyOrigin::File {
        path,
        created: true,
    } = key.origin()
    {
        tracing::warn!(
            path = %path.display(),
            "generated the secret store's key; back it up: stored secrets cannot be read without it"
        );
    }
    Ok(key)
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such endpoint")
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready when the database answers and Docker is reachable.
async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let database = match app.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let docker = match app.docker().await {
        Ok(d) => match d.ping().await {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let ready = database == "ok" && docker == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "database": database, "docker": docker })),
    )
}

/// After a crash: runs that were running are marked `error` and their
/// containers removed; queued runs and undecided deliveries are left for the
/// workers, which start right after.
async fn recover(app: &Arc<App>) -> Result<(), Error> {
    let interrupted = app.store.runs_with_status(RunStatus::Running).await?;
    const REASON: &str = "interrupted by server restart";
    for run in &interrupted {
        tracing::warn!(run_id = run.id, "run was interrupted by a restart");
        for stage in run.stages.iter().filter(|s| !s.status.is_finished()) {
            let record = StageRecord {
                status: StageStatus::Cancelled,
                reason: Some(REASON.into()),
                finished_at: Some(chrono::Utc::now()),
                ..stage.clone()
            };
            app.store.upsert_stage(run.id, &record).await?;
        }
        app.store
            .finish_run(run.id, RunStatus::Error, Some(REASON))
            .await?;
        app.metrics
            .run_finished(&run.project, RunStatus::Error, None);
        let _ = std::fs::remove_dir_all(app.workspace_path(run.id));
    }
    // Archives of working trees that a crash left before their upload.
    gantry_docker::Archive::remove_leftovers(&app.archives_dir());
    match app.docker().await {
        Ok(docker) => match docker.leftovers(&app.owner).await {
            Ok(leftovers) => {
                for leftover in leftovers {
                    if let Err(e) = docker.remove_run(&leftover.run_id).await {
                        tracing::warn!(run = %leftover.run_id, error = %e, "cannot remove leftovers");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list leftover containers"),
        },
        Err(e) => tracing::warn!(error = %e, "Docker is not reachable; runs will fail until it is"),
    }
    Ok(())
}
