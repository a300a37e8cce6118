//! Runs Gantry's stages in Docker containers. This is the only crate that knows bollard.
//!
//! # Talking to the engine
//!
//! [`Docker::connect`] reads `DOCKER_HOST` (default `unix:///var/run/docker.sock`) and
//! negotiates the API version, so an older engine (API 1.41 and up) is used with the calls it
//! understands. The version request doubles as the reachability check: a failure becomes
//! [`Error::Unreachable`], one line naming the endpoint and the cause.
//!
//! # The workspace: a named volume filled through the archive API
//!
//! Gantry may itself run in a container with the Docker socket mounted, where its paths mean
//! nothing to the engine, so stages never bind-mount host paths. Instead, each run gets a named
//! volume (`gantry-<run>-workspace`, labelled with the run) that every stage mounts at
//! `/workspace`. Files get into it through the engine's archive API (`PUT
//! /containers/{id}/archive`), which writes into a created-but-never-started container, volumes
//! included, with no shell, no running process and no registry involved.
//!
//! That container is a *helper* of the image `gantry/workspace:1`: a one-file root file system
//! this crate imports (`POST /images/create?fromSrc=-`) the first time the engine reports it
//! missing. It mounts the volume with `nocopy` (so an image's own `/workspace` content never
//! leaks in) and is removed with the stage that used it.
//!
//! Unpacking costs about a fifth of a `docker run` (the engine re-executes itself to untar in a
//! chroot), so it is kept off the critical path: [`Docker::create_workspace`] only creates the
//! volume and keeps the tar; the run's first stage unpacks it through the helper *while*
//! its own container is created and started, and holds its script back until then. A held-back
//! stage runs `sh -c 'read -r gate || :; exec sh -e -c "$1"' sh <script>` with standard input
//! open; closing that input once the files are in lets the script run, in the same process.
//! Other stages get `sh -e -c <script>` directly. A stage that arrives while unpacking is under
//! way waits for it; a failed unpacking is retried by the next stage. The pending archives live
//! in a process-wide table keyed by endpoint and volume, so any connection to the same engine
//! finds them, and [`Docker::remove_run`] drops the archive of a run no stage ever ran for.
//!
//! [`Archive`] records files as owned by root, as `docker cp` does, and lives in a temporary
//! file streamed to the engine: a large repository costs disk for a moment, not memory.
//!
//! # Stages
//!
//! [`Docker::run_stage`] creates the container (`sh -e -c <script>`, no TTY, working directory
//! `/workspace`), attaches to its stdout and stderr *before* starting it, so no output is lost
//! and every chunk is forwarded as it arrives with the stream it came from; then it starts the
//! container and waits for the exit, a timeout (counted from the start) or cancellation. All
//! output is delivered before `run_stage` returns, and the stage and service containers are
//! removed on every path. The work runs in a task of its own, so even a dropped `run_stage`
//! future still kills and removes its containers. Callers must drain `output` concurrently.
//!
//! Images are used optimistically: the container is created straight away, and only when the
//! engine answers "No such image" does the pull policy decide between pulling and
//! [`Error::ImageMissing`]. The common case thus costs no extra round trip.
//!
//! # Services
//!
//! A stage with services runs on a per-run bridge network `gantry-<run>` (created on first
//! use); each service joins it with its name as network alias, so the script reaches it by name.
//! Service containers are removed with their stage; networks and volumes with
//! [`Docker::remove_run`].
//!
//! # Images: build and push
//!
//! [`Docker::build_image`] builds from a directory of the workspace volume (read through the
//! archive API of a helper container, filtered by `.dockerignore`) with the classic builder,
//! and tags the result; a failing Dockerfile step becomes [`Error::Build`] naming the step.
//! [`Docker::push_image`] pushes one tag with optional [`RegistryAuth`] and returns the
//! registry's digest; transient registry failures are retried (at most [`PUSH_ATTEMPTS`] tries
//! in all), refused credentials are not ([`Error::RegistryAuth`]). Passwords appear in no
//! message or log line. Details in `build.rs` and `push.rs`.
//!
//! # Cleaning up crashed runs
//!
//! Everything this crate creates carries the labels `gantry.run`, `gantry.owner` and
//! `gantry.pid`; containers also `gantry.role` (`stage`, `service` or `workspace`), and stage
//! and service containers `gantry.stage` and `gantry.attempt`.
//! [`Docker::leftovers`] lists the runs an owner left behind and [`Docker::remove_run`] removes
//! one run's containers, networks and volumes; deciding which runs are dead is the caller's job.

mod build;
mod cleanup;
mod dockerignore;
mod image;
mod push;
mod stage;
mod workspace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use build::{BuildSpec, BuiltImage};
pub use push::{PUSH_ATTEMPTS, RegistryAuth};
pub use stage::{Output, ServiceSpec, StageSpec, Stream, Termination};
pub use workspace::{Archive, Workspace, tar_directory};

use image::is_no_such_image;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Docker at {endpoint}: {cause}")]
    Unreachable { endpoint: String, cause: String },
    #[error("image '{image}' is not present locally and pull policy is 'never'")]
    ImageMissing { image: String },
    #[error("could not pull image '{image}': {message}")]
    Pull { image: String, message: String },
    /// The Dockerfile failed: a step (`3/5 'RUN pytest'`) or, with no step, the whole file.
    #[error("{}", match step {
        Some(step) => format!("step {step} failed: {message}"),
        None => format!("image build failed: {message}"),
    })]
    Build {
        step: Option<String>,
        message: String,
    },
    /// The build's context or Dockerfile is not where the stage says.
    #[error("{message}")]
    BuildContext { message: String },
    /// The registry refused the credentials (or, with no `registry`, an anonymous push).
    #[error("{}", match (registry, user) {
        (Some(registry), Some(user)) => format!(
            "registry '{registry}' ({address}) refused the credentials of user '{user}': {message}"
        ),
        _ => format!(
            "registry {address} refused an anonymous push: {message}; \
             name a registry with credentials in the stage"
        ),
    })]
    RegistryAuth {
        registry: Option<String>,
        address: String,
        user: Option<String>,
        message: String,
    },
    #[error("could not push '{reference}'{}: {message}", match attempts {
        1 => String::new(),
        n => format!(" ({n} attempts)"),
    })]
    Push {
        reference: String,
        attempts: u32,
        message: String,
    },
    #[error("{what} was cancelled")]
    Cancelled { what: String },
    #[error("{0}")]
    Api(String),
}

/// When to pull a stage's or service's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Who a run's resources belong to; written as labels on everything created for the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLabels {
    pub run_id: String,
    /// The Gantry instance that owns the run, so instances sharing an engine leave each other alone.
    pub owner: String,
    /// The process that ran it, so a caller can tell whether it is still alive.
    pub pid: Option<u32>,
}

/// A run whose containers, networks or volumes are still around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub run_id: String,
    pub pid: Option<u32>,
}

const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const LABEL_RUN: &str = "gantry.run";
const LABEL_OWNER: &str = "gantry.owner";
const LABEL_PID: &str = "gantry.pid";
const LABEL_STAGE: &str = "gantry.stage";
const LABEL_ATTEMPT: &str = "gantry.attempt";
const LABEL_ROLE: &str = "gantry.role";
const LABEL_SERVICE: &str = "gantry.service";

/// A connection to one Docker engine. Cheap to clone; clones share their caches.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    endpoint: Arc<str>,
    /// Images known to be present, so `ensure_image` asks the engine once per image.
    known_images: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Docker {
    /// Connects to `DOCKER_HOST` (or the default socket) and negotiates the API version.
    pub async fn connect() -> Result<Docker> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        Docker::connect_to(&endpoint).await
    }

    /// Connects to the given endpoint (`unix://…`, `tcp://…`, `http://…`).
    pub async fn connect_to(endpoint: &str) -> Result<Docker> {
        let unreachable = |cause: String| Error::Unreachable {
            endpoint: endpoint.to_owned(),
            cause,
        };
        let client = bollard::Docker::connect_with_host(endpoint)
            .map_err(|err| unreachable(cause_of(&err)))?;
        // Negotiation is a `GET /version`, so it also proves the engine answers.
        let client = tokio::time::timeout(CONNECT_TIMEOUT, client.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|err| unreachable(cause_of(&err)))?;
        Ok(Docker {
            client,
            endpoint: endpoint.into(),
            known_images: Arc::default(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn ping(&self) -> Result<()> {
        self.client
            .ping()
            .await
            .map(drop)
            .map_err(|err| self.error("ping failed", err))
    }

    /// Turns a bollard error into ours: transport failures mean the engine went away,
    /// everything else is an API error prefixed with what we were doing.
    fn error(&self, context: impl std::fmt::Display, err: bollard::errors::Error) -> Error {
        use bollard::errors::Error as E;
        match &err {
            E::HyperLegacyError { err: inner } if inner.is_connect() => Error::Unreachable {
                endpoint: self.endpoint.to_string(),
                cause: cause_of(&err),
            },
            E::SocketNotFoundError(_) | E::RequestTimeoutError => Error::Unreachable {
                endpoint: self.endpoint.to_string(),
                cause: cause_of(&err),
            },
            _ => Error::Api(format!("{context}: {}", cause_of(&err))),
        }
    }
}

/// The most useful one-line description of a bollard error: the engine's own message when it
/// sent one, otherwise the innermost cause (e.g. "Connection refused (os error 111)").
fn cause_of(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        E::DockerStreamError { error } => error.trim().to_owned(),
        E::SocketNotFoundError(path) => format!("socket {path} does not exist"),
        E::RequestTimeoutError => "the engine did not answer in time".to_owned(),
        _ => {
            let mut innermost: &dyn std::error::Error = err;
            while let Some(source) = innermost.source() {
                innermost = source;
            }
            innermost.to_string()
        }
    }
}

/// Runs `future` unless `cancel` fires first; `None` means cancelled.
async fn cancellable<T>(
    cancel: &tokio_util::sync::CancellationToken,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        value = future => Some(value),
    }
}

fn status_of(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_not_found(err: &bollard::errors::Error) -> bool {
    status_of(err) == Some(404)
}

/// The labels every resource of a run carries.
fn run_labels(run: &RunLabels) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL_RUN.to_owned(), run.run_id.clone()),
        (LABEL_OWNER.to_owned(), run.owner.clone()),
    ]);
    if let Some(pid) = run.pid {
        labels.insert(LABEL_PID.to_owned(), pid.to_string());
    }
    labels
}

/// A Docker object name built from arbitrary parts: names must match
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, so anything else becomes `-`.
fn object_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn network_name(run_id: &str) -> String {
    object_name(&["gantry", run_id])
}

fn volume_name(run_id: &str) -> String {
    object_name(&["gantry", run_id, "workspace"])
}

fn label_filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_valid() {
        assert_eq!(object_name(&["gantry", "r1", "build"]), "gantry-r1-build");
        assert_eq!(
            object_name(&["gantry", "run/42", "unit tests"]),
            "gantry-run-42-unit-tests"
        );
        assert_eq!(volume_name("01HZ.x"), "gantry-01HZ.x-workspace");
    }

    /// The engine spawns these futures, so they must be `Send`; this fails to compile if not.
    #[allow(dead_code)]
    fn futures_are_send(
        docker: &Docker,
        spec: &StageSpec,
        output: tokio::sync::mpsc::Sender<Output>,
    ) {
        fn spawnable<T: Send>(_: T) {}
        fn shareable<T: Send + Sync>() {}
        shareable::<Docker>();
        shareable::<Error>();
        let cancel = tokio_util::sync::CancellationToken::new();
        spawnable(docker.run_stage(spec, output.clone(), cancel));
        spawnable(docker.ensure_image("x", PullPolicy::Never, &output));
        spawnable(docker.create_workspace(&spec.run, Vec::new()));
        spawnable(docker.remove_run("x"));
        spawnable(docker.leftovers("x"));
    }

    #[test]
    fn error_messages() {
        let err = Error::Unreachable {
            endpoint: "unix:///var/run/docker.sock".into(),
            cause: "socket /var/run/docker.sock does not exist".into(),
        };
        assert_eq!(
            err.to_string(),
            "cannot reach Docker at unix:///var/run/docker.sock: socket /var/run/docker.sock does not exist"
        );
        let err = Error::ImageMissing { image: "x".into() };
        assert_eq!(
            err.to_string(),
            "image 'x' is not present locally and pull policy is 'never'"
        );
    }
}
