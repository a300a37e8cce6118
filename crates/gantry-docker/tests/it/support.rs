//! What the tests share: finding Docker, unique runs that clean up after themselves, running a
//! stage and collecting its output.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gantry_docker::{
    Docker, Output, PullPolicy, Result, RunLabels, StageSpec, Stream, Termination, Workspace,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const BUSYBOX: &str = "local/busybox";

/// The engine, or `None` (with a note) when there is none and we are not under CI.
pub async fn docker() -> Option<Docker> {
    match Docker::connect().await {
        Ok(docker) => Some(docker),
        Err(err) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and Docker is not available: {err}")
        }
        Err(err) => {
            eprintln!("note: skipping, Docker is not available: {err}");
            None
        }
    }
}

/// The owner label of this test process's runs.
pub fn owner() -> String {
    format!("gantry-it-{}", std::process::id())
}

/// A run with a unique id that is removed when dropped, whatever the test's outcome.
pub struct TestRun {
    pub docker: Docker,
    pub labels: RunLabels,
}

impl TestRun {
    pub fn new(docker: &Docker, name: &str) -> TestRun {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TestRun {
            docker: docker.clone(),
            labels: RunLabels {
                run_id: format!("it-{name}-{}-{n}", std::process::id()),
                owner: owner(),
                pid: Some(std::process::id()),
            },
        }
    }

    pub fn id(&self) -> &str {
        &self.labels.run_id
    }

    /// A workspace holding `files` (path, content).
    pub async fn workspace(&self, files: &[(&str, &str)]) -> Workspace {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
        let archive = builder.into_inner().unwrap();
        self.docker
            .create_workspace(&self.labels, archive)
            .await
            .unwrap()
    }

    pub fn stage(&self, workspace: &Workspace, name: &str, script: &str) -> StageSpec {
        StageSpec {
            run: self.labels.clone(),
            stage: name.to_owned(),
            attempt: 1,
            image: BUSYBOX.to_owned(),
            pull: PullPolicy::Never,
            script: script.to_owned(),
            env: Vec::new(),
            workspace: workspace.clone(),
            memory_bytes: None,
            nano_cpus: None,
            timeout: None,
            services: Vec::new(),
        }
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let run_id = self.labels.run_id.clone();
        // Drop cannot await; a thread with its own runtime can.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(docker.remove_run(&run_id))
        });
        if let Ok(Err(err)) = cleanup.join() {
            eprintln!("cleanup of {} failed: {err}", self.labels.run_id);
        }
    }
}

/// A chunk of output and when it arrived.
pub struct Chunk {
    pub at: Instant,
    pub output: Output,
}

pub struct Finished {
    pub result: Result<Termination>,
    pub chunks: Vec<Chunk>,
    pub started: Instant,
    pub returned: Instant,
}

impl Finished {
    pub fn text(&self, stream: Stream) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .filter(|chunk| chunk.output.stream == stream)
            .flat_map(|chunk| chunk.output.bytes.clone())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    pub fn stdout(&self) -> String {
        if let Err(err) = &self.result {
            panic!("the stage failed: {err}");
        }
        self.text(Stream::Stdout)
    }

    pub fn termination(&self) -> &Termination {
        match &self.result {
            Ok(termination) => termination,
            Err(err) => panic!("the stage failed: {err}"),
        }
    }

    pub fn took(&self) -> Duration {
        self.returned - self.started
    }
}

/// Runs a stage, collecting its output with arrival times.
pub async fn run_stage(docker: &Docker, spec: &StageSpec, cancel: CancellationToken) -> Finished {
    let (sender, mut receiver) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(output) = receiver.recv().await {
            chunks.push(Chunk {
                at: Instant::now(),
                output,
            });
        }
        chunks
    });
    let started = Instant::now();
    let result = docker.run_stage(spec, sender, cancel).await;
    let returned = Instant::now();
    // run_stage dropped its sender, so the collector has everything once it ends.
    let chunks = collector.await.unwrap();
    Finished {
        result,
        chunks,
        started,
        returned,
    }
}

/// The test's own view of the engine, to check what is left behind.
pub async fn raw_client() -> bollard::Docker {
    bollard::Docker::connect_with_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

fn run_filter(run_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("gantry.run={run_id}")])])
}

/// The names of the run's containers, networks and volumes still present.
pub async fn resources_of(run_id: &str) -> Vec<String> {
    use bollard::query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    };
    let client = raw_client().await;
    let filters = run_filter(run_id);
    let mut found = Vec::new();
    let containers = client
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    found.extend(
        containers
            .into_iter()
            .map(|c| format!("container {:?}", c.names.unwrap_or_default())),
    );
    let networks = client
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    found.extend(
        networks
            .into_iter()
            .map(|n| format!("network {}", n.name.unwrap_or_default())),
    );
    let volumes = client
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    found.extend(
        volumes
            .volumes
            .into_iter()
            .flatten()
            .map(|v| format!("volume {}", v.name)),
    );
    found
}

/// The run's containers still present.
pub async fn containers_of(run_id: &str) -> Vec<String> {
    resources_of(run_id)
        .await
        .into_iter()
        .filter(|resource| resource.starts_with("container"))
        .collect()
}
