//! Runs a pipeline end to end: the stage graph, retries, timeouts, log lines
//! and secret masking.
//!
//! The engine talks to the container runtime only through [`Executor`], so its
//! tests run with an in-memory fake and production runs with
//! [`gantry_docker::Docker`]. It knows nothing of HTTP or the database: a
//! caller (the CLI or the server) receives [`RunEvent`]s and decides what to
//! print, store or stream.

pub mod deploy;
pub mod log;
mod run;
pub mod schedule;

use std::fmt;
use std::future::Future;
use std::time::Duration;

pub use deploy::{
    AutoRollback, DeployOutcome, DeployRequest, DeployResult, Deployer, KubeDeployer, NoClusters,
};
pub use gantry_docker::{
    BuildSpec, BuiltImage, Output, RegistryAuth, RunLabels, StageSpec, Stream, Termination,
    Workspace,
};
pub use run::{RunPlan, StageSelection, execute};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a run needs from a container runtime.
pub trait Executor: Send + Sync + 'static {
    /// Creates the run's shared workspace from a tar of the source tree.
    fn prepare(
        &self,
        run: &RunLabels,
        archive: gantry_docker::Archive,
    ) -> impl Future<Output = Result<Workspace, gantry_docker::Error>> + Send;

    /// Runs one attempt of one stage, streaming its output, until it exits,
    /// times out or `cancel` fires.
    fn run_stage(
        &self,
        spec: &StageSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<Termination, gantry_docker::Error>> + Send;

    /// Builds an image from the workspace (a `build` stage).
    fn build_image(
        &self,
        spec: &BuildSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<BuiltImage, gantry_docker::Error>> + Send;

    /// Pushes one `repository:tag`; returns `repository@sha256:…`.
    fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<String, gantry_docker::Error>> + Send;

    /// Removes everything the run created. Called after success, failure,
    /// timeout and cancellation alike.
    fn cleanup(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<(), gantry_docker::Error>> + Send;
}

impl Executor for gantry_docker::Docker {
    async fn prepare(
        &self,
        run: &RunLabels,
        archive: gantry_docker::Archive,
    ) -> Result<Workspace, gantry_docker::Error> {
        self.create_workspace(run, archive).await
    }

    async fn run_stage(
        &self,
        spec: &StageSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<Termination, gantry_docker::Error> {
        gantry_docker::Docker::run_stage(self, spec, output, cancel).await
    }

    async fn build_image(
        &self,
        spec: &BuildSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<BuiltImage, gantry_docker::Error> {
        gantry_docker::Docker::build_image(self, spec, output, cancel).await
    }

    async fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<String, gantry_docker::Error> {
        gantry_docker::Docker::push_image(self, reference, auth, output, cancel).await
    }

    async fn cleanup(&self, run_id: &str) -> Result<(), gantry_docker::Error> {
        self.remove_run(run_id).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageStatus {
    Pending,
    Running,
    Success,
    Failure,
    Skipped,
    Cancelled,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::Running => "running",
            StageStatus::Success => "success",
            StageStatus::Failure => "failure",
            StageStatus::Skipped => "skipped",
            StageStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Success,
    Failure,
    Cancelled,
    /// Gantry's or the infrastructure's fault, not the pipeline's.
    Error,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Failure => "failure",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Error => "error",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Gantry's own lines: retries, pulls, the reason a stage ended.
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }
}

/// The state of one stage as it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    pub index: usize,
    pub name: String,
    pub status: StageStatus,
    /// 1 for the first try; 0 when the stage never started.
    pub attempt: u32,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub duration: Option<Duration>,
    /// What the stage produced for later stages: `digest` and `image` of a
    /// `build` stage (see `${stages.NAME.KEY}`).
    pub outputs: Vec<(String, String)>,
    /// The rollout of a `deploy` stage.
    pub deploy: Option<DeployResult>,
    /// Every push a `build` stage tried, over all its attempts.
    pub pushes: Vec<ImagePush>,
}

/// One push of an image reference, for the push metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePush {
    /// The `[[registry]]` whose credentials pushed it, or `anonymous`: a name from
    /// gantry.toml, so a bounded metric label (an image's host is pipeline text).
    pub registry: String,
    pub ok: bool,
}

/// Everything a run reports, in order.
// Log lines are the common, small variant; a stage report comes a handful of
// times per stage, so boxing it would cost more than the size it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Stage(StageReport),
    /// One masked line of output. `seq` counts from 1 per stage.
    Log {
        stage: usize,
        seq: u64,
        stream: LogStream,
        line: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub status: RunStatus,
    pub reason: Option<String>,
    pub stages: Vec<StageReport>,
    pub duration: Duration,
}

/// Formats a duration the way stage reasons and summaries show it: `10m`, `1m 30s`, `1.2s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    if secs < 60 && d.subsec_millis() != 0 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(v, _)| *v > 0)
        .map(|(v, unit)| format!("{v}{unit}"))
        .collect();
    parts.join(" ")
}

/// `512 MiB`, `16 MiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(human_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(human_duration(Duration::from_secs(2)), "2s");
        assert_eq!(human_duration(Duration::from_millis(40)), "40ms");
        assert_eq!(human_bytes(512 * 1024 * 1024), "512 MiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
