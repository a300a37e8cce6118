//! Running one stage attempt: its services, its container, its output and its end.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::workspace::{WORKSPACE_PATH, workspace_mount};
use crate::{
    Docker, Error, LABEL_ATTEMPT, LABEL_ROLE, LABEL_SERVICE, LABEL_STAGE, PullPolicy, Result,
    RunLabels, Workspace, is_not_found, label_filter, network_name, object_name, run_labels,
    status_of,
};

/// How long to wait for a killed container's last output before giving up on it.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// How often, and how many times, a stage killed under a memory limit is inspected for the
/// engine's OOM mark, which may arrive after the exit.
const OOM_LOOK_EVERY: Duration = Duration::from_millis(100);
const OOM_LOOKS: u32 = 20;

/// One attempt of one stage.
#[derive(Clone, Debug)]
pub struct StageSpec {
    pub run: RunLabels,
    pub stage: String,
    pub attempt: u32,
    pub image: String,
    pub pull: PullPolicy,
    /// Run as `sh -e -c <script>`.
    pub script: String,
    pub env: Vec<(String, String)>,
    /// Mounted at `/workspace`, which is also the working directory.
    pub workspace: Workspace,
    pub memory_bytes: Option<u64>,
    pub nano_cpus: Option<i64>,
    /// Counted from the container's start; pulls and services come before it.
    pub timeout: Option<Duration>,
    pub services: Vec<ServiceSpec>,
}

/// A container the stage's script talks to over the network, reachable by `name`.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub pull: PullPolicy,
    pub env: Vec<(String, String)>,
    /// Empty: the image's own entrypoint and command. Otherwise the lines, joined with
    /// newlines, run as `sh -c` in place of them.
    pub commands: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A chunk of a stage's output, as the engine delivered it (not split into lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stream: Stream,
    pub bytes: Vec<u8>,
}

/// How a stage attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Termination {
    Exited(i64),
    TimedOut(Duration),
    OomKilled {
        exit_code: i64,
        memory_limit: Option<u64>,
    },
    Cancelled,
}

impl Docker {
    /// Runs one stage attempt to its end and removes its containers, whatever happens.
    ///
    /// The work runs in a task of its own: if this future is dropped, the task sees a
    /// cancellation and still kills and removes what it created.
    pub async fn run_stage(
        &self,
        spec: &StageSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<Termination> {
        let cancel = cancel.child_token();
        let _cancel_when_dropped = cancel.clone().drop_guard();
        let docker = self.clone();
        let spec = spec.clone();
        let stage = spec.stage.clone();
        let span = tracing::debug_span!(
            "stage",
            run_id = %spec.run.run_id,
            stage = %spec.stage,
            attempt = spec.attempt
        );
        let task = tokio::spawn(
            async move {
                let mut containers = Containers {
                    docker: docker.clone(),
                    ids: Vec::new(),
                };
                let result = docker
                    .run_stage_in(&spec, &output, &cancel, &mut containers)
                    .await;
                containers.remove_all().await;
                result
            }
            .instrument(span),
        );
        task.await
            .map_err(|err| Error::Api(format!("stage '{stage}' failed unexpectedly: {err}")))?
    }

    async fn run_stage_in(
        &self,
        spec: &StageSpec,
        output: &mpsc::Sender<Output>,
        cancel: &CancellationToken,
        containers: &mut Containers,
    ) -> Result<Termination> {
        let network = if spec.services.is_empty() {
            None
        } else {
            let network = self.ensure_network(&spec.run).await?;
            for service in &spec.services {
                let started = self
                    .start_service(spec, service, &network, output, containers, cancel)
                    .await?;
                if !started || cancel.is_cancelled() {
                    return Ok(Termination::Cancelled);
                }
            }
            Some(network)
        };

        // If the workspace still waits for its working tree, it is unpacked while the stage
        // container starts, and the script is held back until it is there.
        let fill = self.pending_fill(&spec.workspace);
        let gated = fill.is_some();
        let filling = async {
            match &fill {
                Some(fill) => self.fill_workspace(&spec.run, &spec.workspace, fill).await,
                None => Ok(None),
            }
        };
        let starting =
            self.start_stage(spec, network.as_deref(), gated, output, cancel, containers);
        let (filled, started) = tokio::join!(filling, starting);
        // Unpacked or not, the archive is not this stage's to keep (its file goes once unpacked).
        drop(fill);
        if let Ok(Some(helper)) = &filled {
            containers.ids.push(helper.clone());
        }
        let Some(Started {
            id,
            forwarder,
            gate,
        }) = started?
        else {
            return Ok(Termination::Cancelled);
        };
        filled?;
        if cancel.is_cancelled() {
            self.kill(&id).await;
            return Ok(Termination::Cancelled);
        }
        if let Some(mut gate) = gate {
            // End of input lets the script run.
            gate.shutdown().await.map_err(|err| {
                Error::Api(format!("could not let stage '{}' begin: {err}", spec.stage))
            })?;
        }
        tracing::debug!(container = %id, "stage running");

        let mut wait = self.client.wait_container(&id, None);
        let deadline = async {
            match spec.timeout {
                Some(timeout) => tokio::time::sleep(timeout).await,
                None => std::future::pending().await,
            }
        };
        let ending = tokio::select! {
            biased;
            _ = cancel.cancelled() => Ending::Cancelled,
            _ = deadline => Ending::TimedOut,
            exit = wait.next() => Ending::Exited(exit),
        };
        let code = match ending {
            Ending::Exited(exit) => {
                let code = match exit {
                    Some(Ok(response)) => response.status_code,
                    // bollard reports a non-zero exit as an error carrying the code.
                    Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code, ..
                    })) => code,
                    Some(Err(err)) => {
                        return Err(self.error(
                            format_args!("could not wait for stage '{}'", spec.stage),
                            err,
                        ));
                    }
                    None => {
                        return Err(Error::Api(format!(
                            "could not wait for stage '{}': the engine closed the connection",
                            spec.stage
                        )));
                    }
                };
                // The container has exited, so its output ends soon; take all of it.
                forwarder.finish(None).await;
                code
            }
            Ending::Cancelled => {
                self.kill(&id).await;
                forwarder.finish(Some(DRAIN_AFTER_KILL)).await;
                return Ok(Termination::Cancelled);
            }
            Ending::TimedOut => {
                self.kill(&id).await;
                forwarder.finish(Some(DRAIN_AFTER_KILL)).await;
                let timeout = spec.timeout.unwrap_or_default();
                return Ok(Termination::TimedOut(timeout));
            }
        };

        // An OOM kill shows as a failure; only then is it worth asking why.
        if code != 0 {
            // The engine learns of an OOM kill from an event that may arrive just
            // after the exit (always so when the killer took a child of the
            // script's shell rather than the shell itself), and on a busy engine up to
            // a second later (250 ms was not enough once in CI). For a SIGKILL under a
            // memory limit, look again for up to 2 s before calling it a plain exit;
            // only a stage killed by hand under a limit pays that wait.
            let attempts = if code == 137 && spec.memory_bytes.is_some() {
                OOM_LOOKS
            } else {
                1
            };
            for attempt in 0..attempts {
                if attempt > 0 {
                    tokio::time::sleep(OOM_LOOK_EVERY).await;
                }
                let inspected = self
                    .client
                    .inspect_container(&id, None)
                    .await
                    .map_err(|err| {
                        self.error(
                            format_args!("could not inspect stage '{}'", spec.stage),
                            err,
                        )
                    })?;
                let oom_killed = inspected
                    .state
                    .and_then(|state| state.oom_killed)
                    .unwrap_or(false);
                if oom_killed {
                    return Ok(Termination::OomKilled {
                        exit_code: code,
                        memory_limit: spec.memory_bytes,
                    });
                }
            }
        }
        Ok(Termination::Exited(code))
    }

    /// Creates, attaches to and starts the stage container. `None`: cancelled during a pull.
    async fn start_stage(
        &self,
        spec: &StageSpec,
        network: Option<&str>,
        gated: bool,
        output: &mpsc::Sender<Output>,
        cancel: &CancellationToken,
        containers: &mut Containers,
    ) -> Result<Option<Started>> {
        let name = object_name(&[
            "gantry",
            &spec.run.run_id,
            &spec.stage,
            &spec.attempt.to_string(),
        ]);
        let body = stage_container(spec, network, gated);
        let Some(id) = self
            .create_container(Some(&name), body, spec.pull, output, cancel)
            .await?
        else {
            return Ok(None);
        };
        containers.ids.push(id.clone());

        // Attach before starting, so not a byte of output is missed.
        let attach_options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(gated)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .client
            .attach_container(&id, Some(attach_options))
            .await
            .map_err(|err| {
                self.error(
                    format_args!("could not attach to stage '{}'", spec.stage),
                    err,
                )
            })?;
        let forwarder = tokio::spawn(forward(attached.output, output.clone()));
        let forwarder = AbortOnDrop(Some(forwarder));

        self.client
            .start_container(&id, None)
            .await
            .map_err(|err| {
                self.error(format_args!("could not start stage '{}'", spec.stage), err)
            })?;
        Ok(Some(Started {
            id,
            forwarder,
            gate: gated.then_some(attached.input),
        }))
    }

    /// Finds or creates the run's network. The engine allows two networks with one name, so
    /// "find or create" is serialised here, process-wide.
    async fn ensure_network(&self, run: &RunLabels) -> Result<String> {
        static NETWORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let name = network_name(&run.run_id);
        let _guard = NETWORK_LOCK.lock().await;
        let options = ListNetworksOptionsBuilder::new()
            .filters(&label_filter(crate::LABEL_RUN, &run.run_id))
            .build();
        let existing = self
            .client
            .list_networks(Some(options))
            .await
            .map_err(|err| self.error("could not list networks", err))?;
        if existing
            .iter()
            .any(|network| network.name.as_deref() == Some(name.as_str()))
        {
            return Ok(name);
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(run_labels(run)),
            ..Default::default()
        };
        self.client
            .create_network(request)
            .await
            .map_err(|err| self.error(format_args!("could not create network '{name}'"), err))?;
        Ok(name)
    }

    async fn start_service(
        &self,
        spec: &StageSpec,
        service: &ServiceSpec,
        network: &str,
        output: &mpsc::Sender<Output>,
        containers: &mut Containers,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let mut labels = stage_labels(spec, "service");
        labels.insert(LABEL_SERVICE.to_owned(), service.name.clone());
        let (entrypoint, cmd) = if service.commands.is_empty() {
            (None, None)
        } else {
            (
                Some(vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    service.commands.join("\n"),
                ]),
                Some(Vec::new()),
            )
        };
        let body = ContainerCreateBody {
            image: Some(service.image.clone()),
            entrypoint,
            cmd,
            env: Some(env_list(&service.env)),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network.to_owned()),
                ..Default::default()
            }),
            networking_config: Some(network_config(network, Some(&service.name))),
            ..Default::default()
        };
        let name = object_name(&[
            "gantry",
            &spec.run.run_id,
            &spec.stage,
            &spec.attempt.to_string(),
            &service.name,
        ]);
        let Some(id) = self
            .create_container(Some(&name), body, service.pull, output, cancel)
            .await?
        else {
            return Ok(false);
        };
        containers.ids.push(id.clone());
        self.client
            .start_container(&id, None)
            .await
            .map_err(|err| {
                self.error(
                    format_args!("could not start service '{}'", service.name),
                    err,
                )
            })?;
        Ok(true)
    }

    /// Kills a container, ignoring that it may have stopped or gone meanwhile.
    async fn kill(&self, id: &str) {
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        if let Err(err) = self.client.kill_container(id, Some(options)).await
            && !matches!(status_of(&err), Some(404 | 409))
        {
            tracing::warn!(container = id, error = %err, "could not kill container");
        }
    }
}

/// A started stage container.
struct Started {
    id: String,
    forwarder: AbortOnDrop,
    /// The script's standard input while it waits for the workspace; closing it lets it run.
    gate: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
}

enum Ending {
    Exited(Option<Result<bollard::models::ContainerWaitResponse, bollard::errors::Error>>),
    TimedOut,
    Cancelled,
}

fn stage_labels(spec: &StageSpec, role: &str) -> HashMap<String, String> {
    let mut labels = run_labels(&spec.run);
    labels.insert(LABEL_STAGE.to_owned(), spec.stage.clone());
    labels.insert(LABEL_ATTEMPT.to_owned(), spec.attempt.to_string());
    labels.insert(LABEL_ROLE.to_owned(), role.to_owned());
    labels
}

/// Holds the script back until its standard input ends, then runs it as `sh -e -c <script>`
/// in the same process.
const GATE: &str = r#"read -r gate || :; exec sh -e -c "$1""#;

fn stage_container(spec: &StageSpec, network: Option<&str>, gated: bool) -> ContainerCreateBody {
    // The memory limit covers swap too; otherwise the kernel swaps instead of OOM-killing.
    let memory = spec
        .memory_bytes
        .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The script replaces the image's entrypoint and command: a stage runs its script.
        entrypoint: Some(if gated {
            vec![
                "sh".to_owned(),
                "-c".to_owned(),
                GATE.to_owned(),
                "sh".to_owned(),
                spec.script.clone(),
            ]
        } else {
            vec![
                "sh".to_owned(),
                "-e".to_owned(),
                "-c".to_owned(),
                spec.script.clone(),
            ]
        }),
        open_stdin: Some(gated),
        stdin_once: Some(gated),
        attach_stdin: Some(gated),
        cmd: Some(Vec::new()),
        env: Some(env_list(&spec.env)),
        working_dir: Some(WORKSPACE_PATH.to_owned()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        labels: Some(stage_labels(spec, "stage")),
        host_config: Some(HostConfig {
            mounts: Some(vec![workspace_mount(&spec.workspace.volume, &spec.run)]),
            memory,
            memory_swap: memory,
            nano_cpus: spec.nano_cpus,
            network_mode: network.map(str::to_owned),
            ..Default::default()
        }),
        networking_config: network.map(|network| network_config(network, None)),
        ..Default::default()
    }
}

fn network_config(network: &str, alias: Option<&str>) -> NetworkingConfig {
    let endpoint = EndpointSettings {
        aliases: alias.map(|alias| vec![alias.to_owned()]),
        ..Default::default()
    };
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(network.to_owned(), endpoint)])),
    }
}

fn env_list(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// Copies the attached output to the stage's channel, chunk by chunk, until the container's
/// streams close.
async fn forward(
    mut attached: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    output: mpsc::Sender<Output>,
) {
    let mut receiver_gone = false;
    while let Some(chunk) = attached.next().await {
        let (stream, bytes) = match chunk {
            Ok(LogOutput::StdOut { message }) => (Stream::Stdout, message),
            Ok(LogOutput::StdErr { message }) => (Stream::Stderr, message),
            // Without a TTY everything comes multiplexed; anything else is stdout-like.
            Ok(LogOutput::Console { message }) => (Stream::Stdout, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "stage output stream broke off");
                break;
            }
        };
        // Keep reading even when nobody listens, so the container never blocks on a full pipe.
        if !receiver_gone
            && output
                .send(Output {
                    stream,
                    bytes: bytes.to_vec(),
                })
                .await
                .is_err()
        {
            receiver_gone = true;
        }
    }
}

/// The output forwarder, aborted if the stage ends without waiting for it.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    /// Waits for the forwarder to deliver everything, at most `limit` if given.
    async fn finish(mut self, limit: Option<Duration>) {
        let Some(mut handle) = self.0.take() else {
            return;
        };
        let finished = match limit {
            None => (&mut handle).await.is_ok(),
            Some(limit) => matches!(tokio::time::timeout(limit, &mut handle).await, Ok(Ok(()))),
        };
        if !finished {
            handle.abort();
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// The containers of one stage attempt. Removed explicitly at the end of `run_stage`; if the
/// `run_stage` future is dropped instead, the removal is spawned so nothing is left running.
struct Containers {
    docker: Docker,
    ids: Vec<String>,
}

impl Containers {
    async fn remove_all(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        remove_containers(&self.docker, &ids).await;
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.ids);
        let docker = self.docker.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { remove_containers(&docker, &ids).await });
        }
    }
}

/// Force-removes containers (killing them if needed) with their anonymous volumes.
async fn remove_containers(docker: &Docker, ids: &[String]) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    let removals = ids.iter().map(|id| {
        let options = options.clone();
        async move {
            if let Err(err) = docker.client.remove_container(id, Some(options)).await
                && !is_not_found(&err)
            {
                tracing::warn!(container = %id, error = %err, "could not remove container");
            }
        }
    });
    join_all(removals).await;
}
