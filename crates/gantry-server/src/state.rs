//! What every part of the server shares.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use gantry_config::{Config, Project, Secret};
use gantry_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct App {
    pub config: Config,
    pub store: Store,
    pub admin_token: Secret,
    /// Seals and opens the secrets set through the API.
    pub secret_key: gantry_secrets::SecretKey,
    /// The `gantry.owner` label of this server's containers: derived from the
    /// data directory, so servers sharing a Docker engine leave each other alone.
    pub owner: String,
    docker: tokio::sync::Mutex<Option<gantry_docker::Docker>>,
    /// Which projects' deliveries are being decided (`dispatch`).
    pub dispatch: crate::dispatch::Dispatch,
    /// Wakes the runner when a run was queued or one finished.
    pub runs_waiting: Notify,
    pub running: AtomicUsize,
    /// Cancellation handles of the runs in progress.
    pub cancels: Mutex<HashMap<i64, CancellationToken>>,
    pub shutdown: CancellationToken,
    /// Live run events for the SSE streams (`hub`, `sse`).
    pub hub: crate::hub::Hub,
    /// The web UI's browser sessions (`web`).
    pub sessions: crate::web::Sessions,
    /// This server's Prometheus registry (`/metrics`).
    pub metrics: crate::metrics::Metrics,
}

impl App {
    pub fn new(
        config: Config,
        store: Store,
        admin_token: Secret,
        secret_key: gantry_secrets::SecretKey,
    ) -> App {
        let owner = owner_label(&config.server.data_dir);
        let metrics = crate::metrics::Metrics::new(config.projects.iter().map(|p| p.name.as_str()));
        App {
            config,
            store,
            admin_token,
            secret_key,
            owner,
            docker: tokio::sync::Mutex::new(None),
            dispatch: crate::dispatch::Dispatch::default(),
            runs_waiting: Notify::new(),
            running: AtomicUsize::new(0),
            cancels: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            hub: crate::hub::Hub::new(),
            sessions: crate::web::Sessions::default(),
            metrics,
        }
    }

    /// The Docker client, connecting on first use: the server starts (and
    /// says it is not ready) while the engine is down, and recovers when it
    /// comes back.
    pub async fn docker(&self) -> Result<gantry_docker::Docker, gantry_docker::Error> {
        let mut docker = self.docker.lock().await;
        if let Some(d) = docker.as_ref() {
            return Ok(d.clone());
        }
        let d = gantry_docker::Docker::connect().await?;
        *docker = Some(d.clone());
        Ok(d)
    }

    pub fn project(&self, name: &str) -> Option<&Project> {
        self.config.project(name)
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.config.server.data_dir
    }

    pub fn mirror_path(&self, project: &str) -> PathBuf {
        self.data_dir()
            .join("mirrors")
            .join(format!("{}.git", project.replace('/', "__")))
    }

    /// Where a run's working tree is packed before it goes to Docker: next to the checkouts, in
    /// the data directory (not in memory, not in a small /tmp).
    pub fn archives_dir(&self) -> PathBuf {
        self.data_dir().join("workspaces")
    }

    pub fn workspace_path(&self, run_id: i64) -> PathBuf {
        self.data_dir().join("workspaces").join(run_id.to_string())
    }

    pub fn cancel_token(&self, run_id: i64) -> Option<CancellationToken> {
        self.cancels.lock().ok()?.get(&run_id).cloned()
    }
}

pub fn credentials(project: &Project) -> gantry_git::Credentials {
    gantry_git::Credentials {
        username: None,
        token: project.git_token.as_ref().map(|t| t.expose().to_string()),
        ssh_key: project.ssh_key.clone(),
        known_hosts: project.known_hosts.clone(),
    }
}

fn owner_label(data_dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(path.to_string_lossy().as_bytes());
    format!("server-{}", &hex::encode(digest)[..12])
}
