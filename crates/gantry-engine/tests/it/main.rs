//! The engine against an in-memory executor: ordering, retries, masking,
//! selection and cancellation, without Docker. The real executor is covered
//! end to end by the `gantry` binary's tests.

#![allow(clippy::unwrap_used)] // The fake executor is test code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_engine::{
    BuildSpec, BuiltImage, DeployOutcome, DeployRequest, DeployResult, Deployer, Executor,
    ImagePush, LogStream, NoClusters, Output, RegistryAuth, RunEvent, RunLabels, RunPlan,
    RunStatus, RunSummary, StageSelection, StageSpec, StageStatus, Stream, Termination, Workspace,
};
use gantry_pipeline::{Event, RunContext};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the fake does for one attempt of a stage.
#[derive(Clone)]
struct Behaviour {
    chunks: Vec<(Stream, &'static str)>,
    end: Termination,
    /// Block until cancelled instead of ending.
    hang: bool,
}

fn exits(code: i64, chunks: &[(Stream, &'static str)]) -> Behaviour {
    Behaviour {
        chunks: chunks.to_vec(),
        end: Termination::Exited(code),
        hang: false,
    }
}

type Script = dyn Fn(&StageSpec) -> Behaviour + Send + Sync;

struct Fake {
    script: Box<Script>,
    /// Every spec the engine asked to run, in order.
    calls: Mutex<Vec<StageSpec>>,
    cleaned: Mutex<Vec<String>>,
    builds: Mutex<Vec<BuildSpec>>,
    pushes: Mutex<Vec<(String, Option<String>)>>,
}

impl Fake {
    fn new(script: impl Fn(&StageSpec) -> Behaviour + Send + Sync + 'static) -> Arc<Fake> {
        Arc::new(Fake {
            script: Box::new(script),
            calls: Mutex::default(),
            cleaned: Mutex::default(),
            builds: Mutex::default(),
            pushes: Mutex::default(),
        })
    }
}

impl Executor for Fake {
    async fn prepare(
        &self,
        _run: &RunLabels,
        _archive: gantry_docker::Archive,
    ) -> Result<Workspace, gantry_docker::Error> {
        Ok(Workspace {
            volume: "fake".into(),
        })
    }

    async fn run_stage(
        &self,
        spec: &StageSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<Termination, gantry_docker::Error> {
        self.calls.lock().unwrap().push(spec.clone());
        let behaviour = (self.script)(spec);
        for (stream, text) in behaviour.chunks {
            let _ = output
                .send(Output {
                    stream,
                    bytes: text.as_bytes().to_vec(),
                })
                .await;
        }
        if behaviour.hang {
            cancel.cancelled().await;
            return Ok(Termination::Cancelled);
        }
        Ok(behaviour.end)
    }

    async fn build_image(
        &self,
        spec: &BuildSpec,
        output: mpsc::Sender<Output>,
        cancel: CancellationToken,
    ) -> Result<BuiltImage, gantry_docker::Error> {
        self.builds.lock().unwrap().push(spec.clone());
        if spec.image.contains("hang") {
            cancel.cancelled().await;
            return Err(gantry_docker::Error::Cancelled {
                what: format!("the build of '{}'", spec.image),
            });
        }
        let _ = output
            .send(Output {
                stream: Stream::Stdout,
                bytes: b"Step 1/1 : FROM local/busybox\n".to_vec(),
            })
            .await;
        Ok(BuiltImage {
            id: "sha256:1111".into(),
            references: spec
                .tags
                .iter()
                .map(|t| format!("{}:{t}", spec.image))
                .collect(),
        })
    }

    async fn push_image(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        _output: mpsc::Sender<Output>,
        _cancel: CancellationToken,
    ) -> Result<String, gantry_docker::Error> {
        self.pushes
            .lock()
            .unwrap()
            .push((reference.to_string(), auth.map(|a| a.username.clone())));
        if reference.contains("refused") {
            return Err(gantry_docker::Error::Api("the registry refused it".into()));
        }
        let repository = reference
            .rsplit_once(':')
            .map(|(r, _)| r)
            .unwrap_or(reference);
        Ok(format!("{repository}@sha256:abcdef"))
    }

    async fn cleanup(&self, run_id: &str) -> Result<(), gantry_docker::Error> {
        self.cleaned.lock().unwrap().push(run_id.to_string());
        Ok(())
    }
}

fn context(branch: &str) -> RunContext {
    RunContext {
        event: Event::Push,
        branch: Some(branch.into()),
        tag: None,
        commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
        run_number: 7,
        repo: "demo/app".into(),
    }
}

fn plan(yaml: &str) -> RunPlan {
    let pipeline = gantry_pipeline::parse(".gantry.yml", yaml).unwrap_or_else(|d| panic!("{d}"));
    RunPlan {
        run: RunLabels {
            run_id: "r1".into(),
            owner: "test".into(),
            pid: None,
        },
        pipeline,
        context: context("main"),
        extra_env: Vec::new(),
        secrets: Vec::new(),
        selection: StageSelection::All,
        max_parallel: 4,
        stage_timeout: None,
        archive: Vec::new().into(),
        registries: Vec::new(),
        deployer: Arc::new(NoClusters),
        source_url: "https://github.com/demo/app.git".into(),
    }
}

async fn execute(
    fake: &Arc<Fake>,
    plan: RunPlan,
    cancel: CancellationToken,
) -> (RunSummary, Vec<RunEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let run = tokio::spawn(gantry_engine::execute(fake.clone(), plan, tx, cancel));
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (run.await.unwrap(), events)
}

fn statuses(summary: &RunSummary) -> String {
    summary
        .stages
        .iter()
        .map(|s| match &s.reason {
            Some(r) => format!("{}={} ({r})", s.name, s.status),
            None => format!("{}={}", s.name, s.status),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn logs(events: &[RunEvent], stage: usize) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log {
                stage: s,
                stream,
                line,
                ..
            } if *s == stage => Some(format!("{}: {line}", stream.as_str())),
            _ => None,
        })
        .collect()
}

const THREE: &str = "
stages:
  - { name: build, image: img, commands: [make] }
  - { name: test, image: img, commands: [make test] }
  - { name: docs, needs: [], image: img, commands: [make docs] }
";

#[tokio::test]
async fn success_runs_every_stage_and_cleans_up() {
    let fake = Fake::new(|_| exits(0, &[]));
    let (summary, _) = execute(&fake, plan(THREE), CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Success);
    assert_eq!(
        statuses(&summary),
        "build=success, test=success, docs=success"
    );
    assert_eq!(fake.calls.lock().unwrap().len(), 3);
    assert_eq!(*fake.cleaned.lock().unwrap(), ["r1"]);
}

#[tokio::test]
async fn failure_skips_dependents_and_fails_the_run() {
    let fake = Fake::new(|spec| {
        if spec.stage == "build" {
            exits(2, &[])
        } else {
            exits(0, &[])
        }
    });
    let (summary, _) = execute(&fake, plan(THREE), CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Failure);
    assert_eq!(summary.reason.as_deref(), Some("stage 'build' failed"));
    assert_eq!(
        statuses(&summary),
        "build=failure (exit code 2), test=skipped (needs 'build', which failed), docs=success"
    );
    assert_eq!(summary.stages[0].exit_code, Some(2));
}

#[tokio::test]
async fn retry_reruns_until_success_and_each_attempt_is_visible() {
    let fake = Fake::new(|spec| {
        exits(
            if spec.attempt < 3 { 1 } else { 0 },
            &[(Stream::Stdout, "try\n")],
        )
    });
    let (summary, events) = execute(
        &fake,
        plan("stages:\n  - { name: flaky, image: img, commands: [x], retry: 2 }\n"),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.status, RunStatus::Success);
    assert_eq!(summary.stages[0].attempt, 3);
    let attempts: Vec<u32> = fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(
        logs(&events, 0),
        [
            "stdout: try",
            "system: exit code 1",
            "system: attempt 2 of 3",
            "stdout: try",
            "system: exit code 1",
            "system: attempt 3 of 3",
            "stdout: try"
        ]
    );
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| {
            if let RunEvent::Log { seq, .. } = e {
                Some(*seq)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=7).collect::<Vec<_>>(),
        "sequence numbers count on across attempts"
    );
}

#[tokio::test]
async fn retries_stop_at_the_limit() {
    let fake = Fake::new(|_| exits(1, &[]));
    let (summary, _) = execute(
        &fake,
        plan("stages:\n  - { name: bad, image: img, commands: [x], retry: 1 }\n"),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.status, RunStatus::Failure);
    assert_eq!(fake.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn allow_failure_keeps_the_run_green() {
    let fake = Fake::new(|spec| {
        if spec.stage == "lint" {
            exits(1, &[])
        } else {
            exits(0, &[])
        }
    });
    let yaml = "stages:\n  - { name: lint, image: img, commands: [x], allow_failure: true }\n  - { name: test, image: img, commands: [x] }\n";
    let (summary, _) = execute(&fake, plan(yaml), CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Success);
    assert_eq!(
        statuses(&summary),
        "lint=failure (exit code 1), test=success"
    );
}

#[tokio::test]
async fn when_skips_with_the_reason() {
    let fake = Fake::new(|_| exits(0, &[]));
    let yaml = "stages:\n  - { name: deploy, image: img, commands: [x], when: { branch: [main] } }\n  - { name: after, image: img, commands: [x] }\n";
    let mut p = plan(yaml);
    p.context = context("dev");
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Success);
    assert_eq!(summary.stages[0].status, StageStatus::Skipped);
    assert!(
        summary.stages[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("dev"),
        "{:?}",
        summary.stages[0].reason
    );
    assert_eq!(summary.stages[1].status, StageStatus::Success);
}

#[tokio::test]
async fn secrets_reach_the_container_and_are_masked_outside() {
    let fake = Fake::new(|_| {
        exits(
            0,
            &[
                (Stream::Stdout, "token is hun"),
                (Stream::Stdout, "ter2!\n"),
                (Stream::Stderr, "err hunter2"),
            ],
        )
    });
    let mut p = plan("stages:\n  - { name: s, image: img, commands: [x], secrets: [TOKEN] }\n");
    p.secrets = vec![("TOKEN".into(), "hunter2".into())];
    let (summary, events) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Success);
    assert_eq!(
        logs(&events, 0),
        ["stdout: token is ***!", "stderr: err ***"]
    );
    let calls = fake.calls.lock().unwrap();
    assert!(calls[0].env.contains(&("TOKEN".into(), "hunter2".into())));
}

#[tokio::test]
async fn a_missing_secret_fails_the_stage_clearly() {
    let fake = Fake::new(|_| exits(0, &[]));
    let p = plan("stages:\n  - { name: s, image: img, commands: [x], secrets: [TOKEN] }\n");
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Failure);
    assert_eq!(
        statuses(&summary),
        "s=failure (secret 'TOKEN' has no value)"
    );
    assert!(fake.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn builtins_and_env_are_interpolated() {
    let fake = Fake::new(|_| exits(0, &[]));
    let yaml = "env: { TAG: \"v-${GANTRY_SHORT_SHA}\" }\nstages:\n  - { name: s, image: \"img:${TAG}\", commands: [x], env: { B: \"${GANTRY_BRANCH}\" } }\n";
    let (summary, _) = execute(&fake, plan(yaml), CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Success);
    let calls = fake.calls.lock().unwrap();
    assert_eq!(calls[0].image, "img:v-01234567");
    assert!(calls[0].env.contains(&("B".into(), "main".into())));
    assert!(calls[0].env.contains(&("CI".into(), "true".into())));
    assert!(
        calls[0]
            .env
            .contains(&("GANTRY_RUN_NUMBER".into(), "7".into()))
    );
}

#[tokio::test]
async fn selection_runs_only_named_stages_and_optionally_their_needs() {
    let fake = Fake::new(|_| exits(0, &[]));
    let mut p = plan(THREE);
    p.selection = StageSelection::Only {
        names: vec!["test".into()],
        with_needs: false,
    };
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(
        statuses(&summary),
        "build=skipped (not selected with --stage), test=success, docs=skipped (not selected with --stage)"
    );

    let fake = Fake::new(|_| exits(0, &[]));
    let mut p = plan(THREE);
    p.selection = StageSelection::Only {
        names: vec!["test".into()],
        with_needs: true,
    };
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(
        statuses(&summary),
        "build=success, test=success, docs=skipped (not selected with --stage)"
    );

    let mut p = plan(THREE);
    p.selection = StageSelection::Only {
        names: vec!["nope".into()],
        with_needs: false,
    };
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Error);
    assert_eq!(
        summary.reason.as_deref(),
        Some("no stage named 'nope' in the pipeline (stages: build, test, docs)")
    );
}

#[tokio::test]
async fn cancellation_stops_running_stages_and_skips_the_rest() {
    let fake = Fake::new(|spec| {
        if spec.stage == "build" {
            Behaviour {
                chunks: vec![],
                end: Termination::Exited(0),
                hang: true,
            }
        } else {
            exits(0, &[])
        }
    });
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let (summary, _) = execute(&fake, plan(THREE), cancel).await;
    assert_eq!(summary.status, RunStatus::Cancelled);
    assert_eq!(summary.stages[0].status, StageStatus::Cancelled);
    assert_eq!(summary.stages[1].status, StageStatus::Skipped);
    assert_eq!(*fake.cleaned.lock().unwrap(), ["r1"]);
}

#[tokio::test]
async fn timeouts_and_oom_kills_read_well() {
    let fake = Fake::new(|spec| Behaviour {
        chunks: vec![],
        end: if spec.stage == "slow" {
            Termination::TimedOut(Duration::from_secs(600))
        } else {
            Termination::OomKilled {
                exit_code: 137,
                memory_limit: Some(512 * 1024 * 1024),
            }
        },
        hang: false,
    });
    let yaml = "stages:\n  - { name: slow, image: img, commands: [x] }\n  - { name: hog, needs: [], image: img, commands: [x] }\n";
    let (summary, events) = execute(&fake, plan(yaml), CancellationToken::new()).await;
    assert_eq!(
        statuses(&summary),
        "slow=failure (timed out after 10m), hog=failure (OOMKilled (memory limit 512 MiB))"
    );
    assert_eq!(
        logs(&events, 1),
        ["system: OOMKilled (memory limit 512 MiB)"]
    );
    assert!(events.iter().all(|e| !matches!(
        e,
        RunEvent::Log {
            stream: LogStream::Stdout,
            ..
        }
    )));
}

/// A cluster that answers from a script and remembers what it was asked.
struct FakeDeployer {
    outcome: DeployOutcome,
    requests: Mutex<Vec<DeployRequest>>,
}

impl Deployer for FakeDeployer {
    fn deploy<'a>(
        &'a self,
        request: &'a DeployRequest,
        progress: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> gantry_engine::deploy::DeployFuture<'a> {
        self.requests.lock().unwrap().push(request.clone());
        let outcome = self.outcome.clone();
        Box::pin(async move {
            let _ = progress.send("1 of 2 updated, 0 available".into()).await;
            // `Cancelled` is a rollout that never ends until it is cancelled.
            if outcome == DeployOutcome::Cancelled {
                cancel.cancelled().await;
            }
            Ok(DeployResult {
                cluster: "default".into(),
                namespace: request.namespace.clone(),
                deployment: request.deployment.clone(),
                image_after: request.image.clone(),
                outcome,
                image_before: Some("old".into()),
                revision_before: Some(4),
                revision_after: Some(5),
                rollback: None,
            })
        })
    }
}

const BUILD_AND_DEPLOY: &str = r#"
stages:
  - { name: test, image: img, commands: [x] }
  - name: image
    build: { image: "registry.local:5000/app", tags: ["${GANTRY_SHORT_SHA}", latest], registry: nexus }
  - name: deploy
    deploy: { namespace: shop, deployment: backend, image: "${stages.image.digest}" }
  - name: after
    image: img
    commands: [x]
    env: { PUSHED: "${stages.image.digest}" }
"#;

fn nexus() -> RegistryAuth {
    RegistryAuth {
        name: "nexus".into(),
        address: "registry.local:5000".into(),
        username: "ci".into(),
        password: "nexus-pass-123".into(),
    }
}

#[tokio::test]
async fn build_pushes_every_tag_and_deploy_gets_the_digest() {
    let fake = Fake::new(|_| exits(0, &[]));
    let deployer = Arc::new(FakeDeployer {
        outcome: DeployOutcome::Complete,
        requests: Mutex::default(),
    });
    let mut p = plan(BUILD_AND_DEPLOY);
    p.registries = vec![nexus()];
    p.deployer = deployer.clone();
    let (summary, events) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", statuses(&summary));
    let builds = fake.builds.lock().unwrap();
    assert_eq!(builds[0].tags, ["01234567", "latest"]);
    let labels: Vec<&str> = builds[0].labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        labels,
        [
            "org.opencontainers.image.revision",
            "org.opencontainers.image.source",
            "org.opencontainers.image.created"
        ]
    );
    assert_eq!(
        builds[0].labels[0].1,
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(
        *fake.pushes.lock().unwrap(),
        [
            (
                "registry.local:5000/app:01234567".to_string(),
                Some("ci".to_string())
            ),
            (
                "registry.local:5000/app:latest".to_string(),
                Some("ci".to_string())
            )
        ]
    );
    assert_eq!(
        summary.stages[1].outputs,
        [
            (
                "image".to_string(),
                "registry.local:5000/app:01234567".to_string()
            ),
            (
                "digest".to_string(),
                "registry.local:5000/app@sha256:abcdef".to_string()
            )
        ]
    );
    let nexus_ok = ImagePush {
        registry: "nexus".into(),
        ok: true,
    };
    assert_eq!(summary.stages[1].pushes, [nexus_ok.clone(), nexus_ok]);
    let request = deployer.requests.lock().unwrap()[0].clone();
    assert_eq!(request.image, "registry.local:5000/app@sha256:abcdef");
    assert_eq!(request.change_cause, "gantry demo/app #7 0123456");
    assert!(request.auto_rollback);
    assert!(
        logs(&events, 2).contains(&"system: 1 of 2 updated, 0 available".to_string()),
        "{:?}",
        logs(&events, 2)
    );
    assert_eq!(
        summary.stages[2]
            .deploy
            .as_ref()
            .and_then(|d| d.revision_after),
        Some(5)
    );
    let calls = fake.calls.lock().unwrap();
    assert!(calls.iter().any(|c| c.env.contains(&(
        "PUSHED".into(),
        "registry.local:5000/app@sha256:abcdef".into()
    ))));
}

#[tokio::test]
async fn a_rolled_back_deploy_fails_the_stage_with_the_cause() {
    let fake = Fake::new(|_| exits(0, &[]));
    let deployer = Arc::new(FakeDeployer {
        outcome: DeployOutcome::RolledBack {
            cause: "pod backend-7d9f-x2k OOMKilled (memory limit 128Mi), restarted 3 times".into(),
            revision: 41,
        },
        requests: Mutex::default(),
    });
    let mut p = plan(BUILD_AND_DEPLOY);
    p.registries = vec![nexus()];
    p.deployer = deployer;
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Failure);
    assert_eq!(
        summary.stages[2].reason.as_deref(),
        Some(
            "rolled back to revision 41: pod backend-7d9f-x2k OOMKilled (memory limit 128Mi), restarted 3 times"
        )
    );
    assert_eq!(summary.stages[3].status, StageStatus::Skipped);
}

/// `[server] stage_timeout` limits the stages without a `timeout` of their own, and only those.
#[tokio::test]
async fn the_default_stage_timeout_fills_in_for_stages_without_one() {
    let yaml = r#"
stages:
  - name: image
    build: { image: "registry.local:5000/hang" }
    allow_failure: true
  - name: unit
    needs: []
    image: local/busybox
    commands: [ "true" ]
  - name: slow
    needs: []
    image: local/busybox
    commands: [ "true" ]
    timeout: 2h
"#;
    let fake = Fake::new(|_| exits(0, &[]));
    let mut p = plan(yaml);
    p.stage_timeout = Some(Duration::from_millis(300));
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(
        summary.stages[0].reason.as_deref(),
        Some("timed out after 300ms"),
        "{}",
        statuses(&summary)
    );
    let limits: BTreeMap<String, Option<Duration>> = fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|spec| (spec.stage.clone(), spec.timeout))
        .collect();
    assert_eq!(
        limits,
        BTreeMap::from([
            ("slow".to_owned(), Some(Duration::from_secs(7200))),
            ("unit".to_owned(), Some(Duration::from_millis(300))),
        ])
    );
}

#[tokio::test]
async fn the_stage_timeout_limits_builds_and_rollouts() {
    let yaml = r#"
stages:
  - name: image
    build: { image: "registry.local:5000/hang" }
    timeout: 300ms
    allow_failure: true
  - name: deploy
    needs: []
    deploy: { deployment: backend, image: "app:1" }
    timeout: 300ms
"#;
    let fake = Fake::new(|_| exits(0, &[]));
    let deployer = Arc::new(FakeDeployer {
        outcome: DeployOutcome::Cancelled,
        requests: Mutex::default(),
    });
    let mut p = plan(yaml);
    p.deployer = deployer;
    let started = std::time::Instant::now();
    let (summary, _) = execute(&fake, p, CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(summary.status, RunStatus::Failure, "{}", statuses(&summary));
    for stage in &summary.stages {
        assert_eq!(stage.status, StageStatus::Failure, "{}", statuses(&summary));
        assert_eq!(stage.reason.as_deref(), Some("timed out after 300ms"));
    }
    // The rollout's record is kept, as timed out: the history shows what was attempted.
    assert_eq!(
        summary.stages[1].deploy.as_ref().map(|d| d.outcome.clone()),
        Some(DeployOutcome::TimedOut)
    );
}

#[tokio::test]
async fn an_unknown_registry_and_a_missing_cluster_fail_clearly() {
    let fake = Fake::new(|_| exits(0, &[]));
    let (summary, _) = execute(&fake, plan(BUILD_AND_DEPLOY), CancellationToken::new()).await;
    assert_eq!(
        summary.stages[1].reason.as_deref(),
        Some("registry 'nexus' is not configured: add a [[registry]] named 'nexus' to gantry.toml")
    );
    let yaml = "stages:\n  - name: deploy\n    deploy: { deployment: backend, image: \"app:1\" }\n";
    let (summary, _) = execute(&fake, plan(yaml), CancellationToken::new()).await;
    assert_eq!(summary.status, RunStatus::Failure);
    assert_eq!(
        summary.stages[0].reason.as_deref(),
        Some("deploy of default/backend failed: no cluster 'default' is available to this run")
    );
    // Nothing was rolled out, and the history still gets the attempt and its cause.
    let deploy = summary.stages[0].deploy.clone().expect("a deploy record");
    assert_eq!(
        (
            deploy.cluster.as_str(),
            deploy.image_after.as_str(),
            deploy.outcome
        ),
        (
            "default",
            "app:1",
            DeployOutcome::Failed {
                cause: "no cluster 'default' is available to this run".into()
            }
        )
    );
    assert_eq!((deploy.revision_before, deploy.rollback), (None, None));

    // A refused push counts as one, under the credentials' name; anonymous without them.
    let yaml = "stages:\n  - name: image\n    build: { image: \"registry.local:5000/refused\", tags: [a, b] }\n";
    let (summary, _) = execute(&fake, plan(yaml), CancellationToken::new()).await;
    assert_eq!(
        summary.stages[0].pushes,
        [ImagePush {
            registry: "anonymous".into(),
            ok: false
        }]
    );
}

#[tokio::test]
async fn registry_passwords_are_masked() {
    let fake = Fake::new(|_| exits(0, &[(Stream::Stdout, "leaked nexus-pass-123 here\n")]));
    let mut p = plan(THREE);
    p.registries = vec![nexus()];
    let (_, events) = execute(&fake, p, CancellationToken::new()).await;
    assert_eq!(logs(&events, 0), ["stdout: leaked *** here"]);
}
