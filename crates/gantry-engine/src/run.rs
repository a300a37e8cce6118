//! The async driver: carries out the [`Schedule`]'s decisions with an [`Executor`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_docker::{
    Output, PullPolicy, RegistryAuth, RunLabels, ServiceSpec, StageSpec, Stream, Termination,
    Workspace,
};
use gantry_pipeline::{Pipeline, Rollback, RunContext, StageKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ImagePush;
use crate::deploy::{DeployOutcome, DeployRequest, DeployResult, Deployer};
use crate::log::{LineSplitter, Masker};
use crate::schedule::{Action, Node, Schedule};
use crate::{
    Executor, LogStream, RunEvent, RunStatus, RunSummary, StageReport, StageStatus, human_bytes,
    human_duration,
};

/// Everything one run needs.
pub struct RunPlan {
    pub run: RunLabels,
    pub pipeline: Pipeline,
    pub context: RunContext,
    /// Extra variables for every stage (`gantry run --env`), after the pipeline's own.
    pub extra_env: Vec<(String, String)>,
    /// Values for the stages' `secrets:` names. Every value is masked in every line.
    pub secrets: Vec<(String, String)>,
    pub selection: StageSelection,
    pub max_parallel: usize,
    /// The limit of a stage with no `timeout` of its own (`[server] stage_timeout`); `None`:
    /// no limit.
    pub stage_timeout: Option<Duration>,
    /// A tar of the source tree, unpacked into the run's workspace.
    pub archive: gantry_docker::Archive,
    /// Credentials for `build` stages' `registry:`, by name. Passwords are masked like secrets.
    pub registries: Vec<RegistryAuth>,
    /// Rolls out `deploy` stages.
    pub deployer: Arc<dyn Deployer>,
    /// Where the source comes from (a clone URL without credentials, or a
    /// directory), for the images' `org.opencontainers.image.source` label.
    pub source_url: String,
}

/// Which stages to run.
#[derive(Debug, Clone, Default)]
pub enum StageSelection {
    #[default]
    All,
    /// `--stage NAME...`, and with `with_needs` everything they need.
    Only {
        names: Vec<String>,
        with_needs: bool,
    },
}

impl StageSelection {
    /// One flag per stage, or an error naming stages that do not exist.
    pub fn resolve(&self, pipeline: &Pipeline) -> Result<Vec<bool>, String> {
        let StageSelection::Only { names, with_needs } = self else {
            return Ok(vec![true; pipeline.stages.len()]);
        };
        let mut selected = vec![false; pipeline.stages.len()];
        let mut unknown = Vec::new();
        let mut todo = Vec::new();
        for name in names {
            match pipeline.stages.iter().position(|s| &s.name == name) {
                Some(i) => todo.push(i),
                None => unknown.push(format!("'{name}'")),
            }
        }
        if !unknown.is_empty() {
            let known: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "no stage named {} in the pipeline (stages: {})",
                unknown.join(", "),
                known.join(", ")
            ));
        }
        while let Some(i) = todo.pop() {
            if !selected[i] {
                selected[i] = true;
                if *with_needs {
                    todo.extend(&pipeline.stages[i].needs);
                }
            }
        }
        Ok(selected)
    }
}

/// What every stage task shares.
struct Shared<E> {
    executor: Arc<E>,
    plan: RunPlan,
    masker: Masker,
    secrets: BTreeMap<String, String>,
    workspace: Workspace,
    events: mpsc::Sender<RunEvent>,
    /// `${stages.NAME.KEY}` values of the stages that finished.
    outputs: Mutex<HashMap<String, HashMap<String, String>>>,
}

struct StageResult {
    report: StageReport,
    /// The stage ended because the infrastructure failed, not the stage's own commands.
    infrastructure_error: bool,
}

/// Runs the plan to the end and reports every change on `events`. Never
/// panics on outside failures: they end up in the summary's reason.
pub async fn execute<E: Executor>(
    executor: Arc<E>,
    mut plan: RunPlan,
    events: mpsc::Sender<RunEvent>,
    cancel: CancellationToken,
) -> RunSummary {
    let started = Instant::now();
    let archive = std::mem::take(&mut plan.archive);
    for stage in &mut plan.pipeline.stages {
        stage.timeout = stage.timeout.or(plan.stage_timeout);
    }
    let pipeline = &plan.pipeline;
    let mut stages: Vec<StageReport> = pipeline
        .stages
        .iter()
        .enumerate()
        .map(|(index, s)| StageReport {
            index,
            name: s.name.clone(),
            status: StageStatus::Pending,
            attempt: 0,
            exit_code: None,
            reason: None,
            duration: None,
            outputs: Vec::new(),
            deploy: None,
            pushes: Vec::new(),
        })
        .collect();
    let error = |reason: String, stages: Vec<StageReport>| RunSummary {
        status: RunStatus::Error,
        reason: Some(reason),
        stages,
        duration: started.elapsed(),
    };

    let selected = match plan.selection.resolve(pipeline) {
        Ok(selected) => selected,
        Err(reason) => return error(reason, stages),
    };
    let nodes: Vec<Node> = pipeline
        .stages
        .iter()
        .zip(&selected)
        .map(|(stage, &selected)| Node {
            name: stage.name.clone(),
            needs: stage.needs.clone(),
            allow_failure: stage.allow_failure,
            skip: if selected {
                stage.when.matches(&plan.context).err()
            } else {
                Some("not selected with --stage".to_string())
            },
        })
        .collect();
    for report in &stages {
        let _ = events.send(RunEvent::Stage(report.clone())).await;
    }

    let mut schedule = Schedule::new(nodes, plan.max_parallel);
    let mut actions = schedule.decide();
    let run_id = plan.run.run_id.clone();
    let workspace = if actions.iter().any(|a| matches!(a, Action::Start(_))) {
        match executor.prepare(&plan.run, archive).await {
            Ok(workspace) => workspace,
            Err(e) => {
                let _ = executor.cleanup(&run_id).await;
                return error(format!("cannot prepare the workspace: {e}"), stages);
            }
        }
    } else {
        Workspace {
            volume: String::new(),
        }
    };

    let masker = Masker::new(
        plan.secrets
            .iter()
            .map(|(_, v)| v.as_str())
            .chain(plan.registries.iter().map(|r| r.password.as_str())),
    );
    let secrets = plan.secrets.iter().cloned().collect();
    let shared = Arc::new(Shared {
        executor: executor.clone(),
        plan,
        masker,
        secrets,
        workspace,
        events,
        outputs: Mutex::new(HashMap::new()),
    });

    let mut tasks = JoinSet::new();
    let mut infrastructure_error = None;
    let mut cancelled = false;
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Start(i) => {
                    let shared = shared.clone();
                    let cancel = cancel.child_token();
                    tasks.spawn(async move { run_stage(&shared, i, cancel).await });
                }
                Action::Skip { stage, reason } => {
                    let report = &mut stages[stage];
                    report.status = StageStatus::Skipped;
                    report.reason = Some(reason);
                    let _ = shared.events.send(RunEvent::Stage(report.clone())).await;
                }
            }
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { continue };
                match joined {
                    Ok(result) => {
                        let i = result.report.index;
                        if result.infrastructure_error && infrastructure_error.is_none() {
                            infrastructure_error = result.report.reason.clone();
                        }
                        schedule.finish(i, result.report.status);
                        stages[i] = result.report;
                    }
                    // A stage task panicked: a bug, but the run must still end cleanly.
                    Err(e) => {
                        infrastructure_error.get_or_insert_with(|| format!("internal error in a stage task: {e}"));
                        schedule.cancel();
                        cancel.cancel();
                    }
                }
            }
            _ = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                schedule.cancel();
            }
        }
        actions = schedule.decide();
    }
    // Stages that panicked never reported; make sure nothing is left `running`.
    for (i, report) in stages.iter_mut().enumerate() {
        if matches!(report.status, StageStatus::Pending | StageStatus::Running) {
            report.status = StageStatus::Cancelled;
            schedule.finish(i, StageStatus::Cancelled);
        }
    }

    if let Err(e) = executor.cleanup(&run_id).await {
        tracing::warn!(run_id = %run_id, error = %e, "cleaning up the run failed");
    }

    let failed: Vec<&str> = stages
        .iter()
        .zip(&shared.plan.pipeline.stages)
        .filter(|(r, s)| r.status == StageStatus::Failure && !s.allow_failure)
        .map(|(r, _)| r.name.as_str())
        .collect();
    let (status, reason) = if cancelled || cancel.is_cancelled() {
        (RunStatus::Cancelled, Some("cancelled".to_string()))
    } else if let Some(reason) = infrastructure_error {
        (RunStatus::Error, Some(reason))
    } else if !failed.is_empty() {
        (
            RunStatus::Failure,
            Some(format!("stage {} failed", quote_list(&failed))),
        )
    } else {
        (RunStatus::Success, None)
    };
    RunSummary {
        status,
        reason,
        stages,
        duration: started.elapsed(),
    }
}

fn quote_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one attempt of a stage does, resolved before the first attempt.
enum Work {
    Commands(StageSpec),
    Build {
        spec: gantry_docker::BuildSpec,
        push: bool,
        auth: Option<RegistryAuth>,
    },
    Deploy(DeployRequest),
}

/// How one attempt ended.
struct Attempt {
    status: StageStatus,
    exit_code: Option<i64>,
    reason: Option<String>,
    infrastructure_error: bool,
    outputs: Vec<(String, String)>,
    deploy: Option<DeployResult>,
    pushes: Vec<ImagePush>,
}

impl Attempt {
    fn new(status: StageStatus, reason: Option<String>) -> Attempt {
        Attempt {
            status,
            exit_code: None,
            reason,
            infrastructure_error: false,
            outputs: Vec::new(),
            deploy: None,
            pushes: Vec::new(),
        }
    }

    fn failed(reason: String, infrastructure_error: bool) -> Attempt {
        Attempt {
            infrastructure_error,
            ..Attempt::new(StageStatus::Failure, Some(reason))
        }
    }
}

async fn run_stage<E: Executor>(
    shared: &Shared<E>,
    index: usize,
    cancel: CancellationToken,
) -> StageResult {
    let stage = &shared.plan.pipeline.stages[index];
    let started = Instant::now();
    let mut report = StageReport {
        index,
        name: stage.name.clone(),
        status: StageStatus::Running,
        attempt: 1,
        exit_code: None,
        reason: None,
        duration: None,
        outputs: Vec::new(),
        deploy: None,
        pushes: Vec::new(),
    };
    let mut seq = 0u64;
    let finish = |mut report: StageReport, status, reason: Option<String>, infrastructure_error| {
        report.status = status;
        report.reason = reason;
        report.duration = Some(started.elapsed());
        StageResult {
            report,
            infrastructure_error,
        }
    };

    let mut work = match prepare_work(shared, index) {
        Ok(work) => work,
        Err(reason) => {
            let _ = shared.events.send(RunEvent::Stage(report.clone())).await;
            system_line(shared, index, &mut seq, &reason).await;
            let result = finish(report, StageStatus::Failure, Some(reason), false);
            let _ = shared
                .events
                .send(RunEvent::Stage(result.report.clone()))
                .await;
            return result;
        }
    };

    let attempts = stage.retry + 1;
    let result = loop {
        let _ = shared.events.send(RunEvent::Stage(report.clone())).await;
        if report.attempt > 1 {
            system_line(
                shared,
                index,
                &mut seq,
                &format!("attempt {} of {attempts}", report.attempt),
            )
            .await;
        }
        let attempt = match &mut work {
            Work::Commands(spec) => {
                spec.attempt = report.attempt;
                run_commands(shared, index, spec, &mut seq, &cancel).await
            }
            Work::Build { spec, push, auth } => {
                let seq = &mut seq;
                within(stage.timeout, &cancel, |cancel| async move {
                    run_build(shared, index, spec, *push, auth.as_ref(), seq, &cancel).await
                })
                .await
            }
            Work::Deploy(request) => {
                let seq = &mut seq;
                within(stage.timeout, &cancel, |cancel| async move {
                    run_deploy(shared, index, request, seq, &cancel).await
                })
                .await
            }
        };
        report.exit_code = attempt.exit_code;
        report.deploy = attempt.deploy.clone();
        report.pushes.extend(attempt.pushes.iter().cloned());
        if let Some(reason) = &attempt.reason {
            system_line(shared, index, &mut seq, reason).await;
        }
        if attempt.status == StageStatus::Success {
            report.outputs = attempt.outputs.clone();
            if let Ok(mut outputs) = shared.outputs.lock() {
                outputs.insert(
                    stage.name.clone(),
                    attempt.outputs.iter().cloned().collect(),
                );
            }
        }
        let retry = attempt.status == StageStatus::Failure
            && report.attempt < attempts
            && !cancel.is_cancelled();
        if !retry {
            break finish(
                report,
                attempt.status,
                attempt.reason,
                attempt.infrastructure_error,
            );
        }
        let _ = shared
            .events
            .send(RunEvent::Stage(StageReport {
                status: StageStatus::Failure,
                reason: attempt.reason.clone(),
                duration: Some(started.elapsed()),
                ..report.clone()
            }))
            .await;
        report.attempt += 1;
    };
    let _ = shared
        .events
        .send(RunEvent::Stage(result.report.clone()))
        .await;
    result
}

/// One attempt of a `build` or `deploy` stage under the stage's `timeout` (a `commands` stage's
/// container has its own): when it expires, the attempt is stopped as a cancelled run would be
/// (the build's container removed, the rollout's watch dropped, no rollback started), and then
/// reported as timed out.
async fn within<F, Fut>(
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    attempt: F,
) -> Attempt
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let Some(limit) = timeout else {
        return attempt(cancel.clone()).await;
    };
    let stop = cancel.child_token();
    let attempt = attempt(stop.clone());
    tokio::pin!(attempt);
    tokio::select! {
        done = &mut attempt => done,
        () = tokio::time::sleep(limit) => {
            stop.cancel();
            // Let it stop and clean up; what it says is about the stop, not the cause.
            let stopped = attempt.await;
            if cancel.is_cancelled() {
                return stopped;
            }
            // A rollout stopped this way is recorded as timed out, not as cancelled.
            let deploy = stopped.deploy.map(|mut deploy| {
                if deploy.outcome == DeployOutcome::Cancelled {
                    deploy.outcome = DeployOutcome::TimedOut;
                }
                deploy
            });
            Attempt {
                deploy,
                pushes: stopped.pushes,
                ..Attempt::failed(format!("timed out after {}", human_duration(limit)), false)
            }
        }
    }
}

async fn run_commands<E: Executor>(
    shared: &Shared<E>,
    index: usize,
    spec: &StageSpec,
    seq: &mut u64,
    cancel: &CancellationToken,
) -> Attempt {
    let (tx, rx) = mpsc::channel(256);
    let pump = pump_output(shared, index, *seq, rx);
    let (termination, last_seq) =
        tokio::join!(shared.executor.run_stage(spec, tx, cancel.clone()), pump);
    *seq = last_seq;
    match termination {
        Ok(Termination::Exited(0)) => Attempt {
            exit_code: Some(0),
            ..Attempt::new(StageStatus::Success, None)
        },
        Ok(Termination::Exited(code)) => Attempt {
            exit_code: Some(code),
            ..Attempt::failed(format!("exit code {code}"), false)
        },
        Ok(Termination::TimedOut(after)) => {
            Attempt::failed(format!("timed out after {}", human_duration(after)), false)
        }
        Ok(Termination::OomKilled {
            exit_code,
            memory_limit,
        }) => {
            let limit = memory_limit
                .map(|l| format!(" (memory limit {})", human_bytes(l)))
                .unwrap_or_default();
            Attempt {
                exit_code: Some(exit_code),
                ..Attempt::failed(format!("OOMKilled{limit}"), false)
            }
        }
        Ok(Termination::Cancelled) => {
            Attempt::new(StageStatus::Cancelled, Some("cancelled".to_string()))
        }
        Err(e) => Attempt::failed(e.to_string(), is_infrastructure(&e)),
    }
}

fn is_infrastructure(e: &gantry_docker::Error) -> bool {
    matches!(
        e,
        gantry_docker::Error::Unreachable { .. } | gantry_docker::Error::Api(_)
    )
}

/// Builds the image, then pushes every tag; the digest becomes `${stages.NAME.digest}`.
async fn run_build<E: Executor>(
    shared: &Shared<E>,
    index: usize,
    spec: &gantry_docker::BuildSpec,
    push: bool,
    auth: Option<&RegistryAuth>,
    seq: &mut u64,
    cancel: &CancellationToken,
) -> Attempt {
    let (tx, rx) = mpsc::channel(256);
    let pump = pump_output(shared, index, *seq, rx);
    let (built, last_seq) =
        tokio::join!(shared.executor.build_image(spec, tx, cancel.clone()), pump);
    *seq = last_seq;
    let built = match built {
        Ok(built) => built,
        Err(_) if cancel.is_cancelled() => {
            return Attempt::new(StageStatus::Cancelled, Some("cancelled".into()));
        }
        Err(e) => return Attempt::failed(e.to_string(), is_infrastructure(&e)),
    };
    let first = built
        .references
        .first()
        .cloned()
        .unwrap_or_else(|| spec.image.clone());
    let mut outputs = vec![("image".to_string(), first)];
    if !push {
        system_line(
            shared,
            index,
            seq,
            &format!(
                "built {} (not pushed: push is false)",
                built.references.join(", ")
            ),
        )
        .await;
        return Attempt {
            outputs,
            ..Attempt::new(StageStatus::Success, None)
        };
    }
    let registry = auth.map_or("anonymous", |auth| auth.name.as_str());
    let mut pushes = Vec::new();
    let mut digest = None;
    for reference in &built.references {
        let (tx, rx) = mpsc::channel(256);
        let pump = pump_output(shared, index, *seq, rx);
        let (pushed, last_seq) = tokio::join!(
            shared
                .executor
                .push_image(reference, auth, tx, cancel.clone()),
            pump
        );
        *seq = last_seq;
        let ended = match pushed {
            Ok(pushed) => {
                system_line(shared, index, seq, &format!("pushed {reference}: {pushed}")).await;
                digest.get_or_insert(pushed);
                None
            }
            Err(_) if cancel.is_cancelled() => Some(Attempt::new(
                StageStatus::Cancelled,
                Some("cancelled".into()),
            )),
            Err(e) => {
                pushes.push(ImagePush {
                    registry: registry.to_owned(),
                    ok: false,
                });
                Some(Attempt::failed(e.to_string(), false))
            }
        };
        if let Some(ended) = ended {
            return Attempt { pushes, ..ended };
        }
        pushes.push(ImagePush {
            registry: registry.to_owned(),
            ok: true,
        });
    }
    if let Some(digest) = digest {
        outputs.push(("digest".to_string(), digest));
    }
    Attempt {
        outputs,
        pushes,
        ..Attempt::new(StageStatus::Success, None)
    }
}

/// Rolls the image out; progress lines go to the stage log as they change.
async fn run_deploy<E: Executor>(
    shared: &Shared<E>,
    index: usize,
    request: &DeployRequest,
    seq: &mut u64,
    cancel: &CancellationToken,
) -> Attempt {
    let target = format!("{}/{}", request.namespace, request.deployment);
    system_line(
        shared,
        index,
        seq,
        &format!("rolling {target} out to {}", request.image),
    )
    .await;
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let mut lines = *seq;
    let forward = async {
        while let Some(line) = rx.recv().await {
            system_line(shared, index, &mut lines, &line).await;
        }
    };
    let (result, ()) = tokio::join!(
        shared.plan.deployer.deploy(request, tx, cancel.clone()),
        forward
    );
    *seq = lines;
    let result = match result {
        Ok(result) => result,
        Err(cause) => {
            // Nothing was rolled out (no cluster, unreachable, no such Deployment, paused, ...);
            // the history still shows the attempt and why it went nowhere.
            let reason = format!("deploy of {target} failed: {cause}");
            return Attempt {
                deploy: Some(DeployResult {
                    cluster: request.cluster.clone().unwrap_or_else(|| "default".into()),
                    namespace: request.namespace.clone(),
                    deployment: request.deployment.clone(),
                    image_after: request.image.clone(),
                    outcome: DeployOutcome::Failed { cause },
                    image_before: None,
                    revision_before: None,
                    revision_after: None,
                    rollback: None,
                }),
                ..Attempt::failed(reason, false)
            };
        }
    };
    let (status, reason) = match &result.outcome {
        DeployOutcome::Complete => (StageStatus::Success, None),
        DeployOutcome::Failed { cause } => (StageStatus::Failure, Some(cause.clone())),
        DeployOutcome::RolledBack { cause, revision } => (
            StageStatus::Failure,
            Some(format!("rolled back to revision {revision}: {cause}")),
        ),
        DeployOutcome::TimedOut => (
            StageStatus::Failure,
            Some(format!(
                "rollout of {target} timed out after {}",
                human_duration(request.timeout)
            )),
        ),
        DeployOutcome::Cancelled => (StageStatus::Cancelled, Some("cancelled".to_string())),
    };
    if status == StageStatus::Success {
        let revision = result
            .revision_after
            .map(|r| format!(" (revision {r})"))
            .unwrap_or_default();
        system_line(
            shared,
            index,
            seq,
            &format!("{target} rolled out{revision}"),
        )
        .await;
    }
    Attempt {
        deploy: Some(result),
        ..Attempt::new(status, reason)
    }
}

/// Resolves what the stage will do: interpolation, secrets, credentials.
fn prepare_work<E>(shared: &Shared<E>, index: usize) -> Result<Work, String> {
    let plan = &shared.plan;
    let stage = &plan.pipeline.stages[index];
    let outputs = shared.outputs.lock().map(|o| o.clone()).unwrap_or_default();
    match &stage.kind {
        StageKind::Build(_) => {
            let build = gantry_pipeline::resolve_build(
                &plan.pipeline,
                index,
                &plan.context,
                &plan.extra_env,
                &outputs,
            )?;
            let auth = match &build.registry {
                None => None,
                Some(name) => Some(plan.registries.iter().find(|r| &r.name == name).cloned().ok_or_else(|| {
                    format!("registry '{name}' is not configured: add a [[registry]] named '{name}' to gantry.toml")
                })?),
            };
            let created =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let spec = gantry_docker::BuildSpec {
                run: plan.run.clone(),
                stage: stage.name.clone(),
                workspace: shared.workspace.clone(),
                context: build.context,
                dockerfile: build.dockerfile,
                target: build.target,
                args: build.args,
                labels: vec![
                    (
                        "org.opencontainers.image.revision".into(),
                        plan.context.commit_sha.clone(),
                    ),
                    (
                        "org.opencontainers.image.source".into(),
                        plan.source_url.clone(),
                    ),
                    ("org.opencontainers.image.created".into(), created),
                ],
                image: build.image,
                tags: build.tags,
            };
            Ok(Work::Build {
                spec,
                push: build.push,
                auth,
            })
        }
        StageKind::Deploy(_) => {
            let deploy = gantry_pipeline::resolve_deploy(
                &plan.pipeline,
                index,
                &plan.context,
                &plan.extra_env,
                &outputs,
            )?;
            let short = plan
                .context
                .commit_sha
                .get(..7)
                .unwrap_or(&plan.context.commit_sha);
            Ok(Work::Deploy(DeployRequest {
                cluster: deploy.cluster,
                namespace: deploy.namespace,
                deployment: deploy.deployment,
                container: deploy.container,
                image: deploy.image,
                change_cause: format!(
                    "gantry {} #{} {short}",
                    plan.context.repo, plan.context.run_number
                ),
                timeout: deploy.timeout,
                auto_rollback: deploy.rollback == Rollback::Auto,
                fail_fast: deploy.fail_fast,
            }))
        }
        _ => stage_spec(shared, index, &outputs).map(Work::Commands),
    }
}

/// Builds the container spec: interpolated image and env, secrets, limits, services.
fn stage_spec<E>(
    shared: &Shared<E>,
    index: usize,
    outputs: &HashMap<String, HashMap<String, String>>,
) -> Result<StageSpec, String> {
    let plan = &shared.plan;
    let stage = &plan.pipeline.stages[index];
    let StageKind::Commands { commands, .. } = &stage.kind else {
        return Err(format!(
            "stage '{}' is of a kind this runner cannot execute",
            stage.name
        ));
    };
    let resolved = gantry_pipeline::resolve_stage_with(
        &plan.pipeline,
        index,
        &plan.context,
        &plan.extra_env,
        outputs,
    )?;
    let mut env = resolved.env;
    let mut missing = BTreeSet::new();
    for name in &stage.secrets {
        match shared.secrets.get(name) {
            Some(value) => env.push((name.clone(), value.clone())),
            None => {
                missing.insert(name.as_str());
            }
        }
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.into_iter().collect();
        return Err(format!("secret {} has no value", quote_list(&names)));
    }
    let services = resolved
        .services
        .into_iter()
        .map(|s| ServiceSpec {
            name: s.name,
            image: s.image,
            pull: pull_policy(stage.pull),
            env: s.env,
            // Services run their commands like a stage does: one `sh -e` script, echoed.
            commands: if s.commands.is_empty() {
                Vec::new()
            } else {
                vec![gantry_pipeline::render_script(&s.commands)]
            },
        })
        .collect();
    Ok(StageSpec {
        run: plan.run.clone(),
        stage: stage.name.clone(),
        attempt: 1,
        image: resolved.image,
        pull: pull_policy(stage.pull),
        script: gantry_pipeline::render_script(commands),
        env,
        workspace: shared.workspace.clone(),
        memory_bytes: stage.memory,
        nano_cpus: stage.cpus.map(|c| (c * 1e9) as i64),
        timeout: stage.timeout,
        services,
    })
}

fn pull_policy(policy: gantry_pipeline::PullPolicy) -> PullPolicy {
    match policy {
        gantry_pipeline::PullPolicy::Always => PullPolicy::Always,
        gantry_pipeline::PullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
        gantry_pipeline::PullPolicy::Never => PullPolicy::Never,
    }
}

/// Turns raw output into masked lines until the executor drops its sender.
/// Returns the last sequence number used.
async fn pump_output<E>(
    shared: &Shared<E>,
    stage: usize,
    mut seq: u64,
    mut rx: mpsc::Receiver<Output>,
) -> u64 {
    let mut stdout = LineSplitter::default();
    let mut stderr = LineSplitter::default();
    while let Some(chunk) = rx.recv().await {
        let (splitter, stream) = match chunk.stream {
            Stream::Stdout => (&mut stdout, LogStream::Stdout),
            Stream::Stderr => (&mut stderr, LogStream::Stderr),
        };
        for line in splitter.push(&chunk.bytes) {
            emit(shared, stage, &mut seq, stream, &line).await;
        }
    }
    for (splitter, stream) in [
        (&mut stdout, LogStream::Stdout),
        (&mut stderr, LogStream::Stderr),
    ] {
        if let Some(line) = splitter.finish() {
            emit(shared, stage, &mut seq, stream, &line).await;
        }
    }
    seq
}

async fn system_line<E>(shared: &Shared<E>, stage: usize, seq: &mut u64, line: &str) {
    emit(shared, stage, seq, LogStream::System, line).await;
}

async fn emit<E>(shared: &Shared<E>, stage: usize, seq: &mut u64, stream: LogStream, line: &str) {
    *seq += 1;
    let line = shared.masker.mask(line);
    let _ = shared
        .events
        .send(RunEvent::Log {
            stage,
            seq: *seq,
            stream,
            line,
        })
        .await;
}
