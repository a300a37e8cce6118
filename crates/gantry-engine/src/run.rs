//! The async driver: carries out the [`Schedule`]'s decisions with an [`Executor`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use gantry_docker::{
    Output, PullPolicy, RunLabels, ServiceSpec, StageSpec, Stream, Termination, Workspace,
};
use gantry_pipeline::{Pipeline, RunContext, StageKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    /// A tar of the source tree, unpacked into the run's workspace.
    pub archive: Vec<u8>,
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
    let mut actions = schedule.next();
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

    let masker = Masker::new(plan.secrets.iter().map(|(_, v)| v.as_str()));
    let secrets = plan.secrets.iter().cloned().collect();
    let shared = Arc::new(Shared {
        executor: executor.clone(),
        plan,
        masker,
        secrets,
        workspace,
        events,
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
        actions = schedule.next();
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

    let spec = match stage_spec(shared, index) {
        Ok(spec) => spec,
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
    let mut spec = spec;
    let result = loop {
        spec.attempt = report.attempt;
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
        let (tx, rx) = mpsc::channel(256);
        let pump = pump_output(shared, index, seq, rx);
        let (termination, last_seq) =
            tokio::join!(shared.executor.run_stage(&spec, tx, cancel.clone()), pump);
        seq = last_seq;

        let (status, exit_code, reason, infrastructure_error) = match termination {
            Ok(Termination::Exited(0)) => (StageStatus::Success, Some(0), None, false),
            Ok(Termination::Exited(code)) => (
                StageStatus::Failure,
                Some(code),
                Some(format!("exit code {code}")),
                false,
            ),
            Ok(Termination::TimedOut(after)) => (
                StageStatus::Failure,
                None,
                Some(format!("timed out after {}", human_duration(after))),
                false,
            ),
            Ok(Termination::OomKilled {
                exit_code,
                memory_limit,
            }) => {
                let limit = memory_limit
                    .map(|l| format!(" (memory limit {})", human_bytes(l)))
                    .unwrap_or_default();
                (
                    StageStatus::Failure,
                    Some(exit_code),
                    Some(format!("OOMKilled{limit}")),
                    false,
                )
            }
            Ok(Termination::Cancelled) => (
                StageStatus::Cancelled,
                None,
                Some("cancelled".to_string()),
                false,
            ),
            Err(e) => {
                let infrastructure = matches!(
                    e,
                    gantry_docker::Error::Unreachable { .. } | gantry_docker::Error::Api(_)
                );
                (
                    StageStatus::Failure,
                    None,
                    Some(e.to_string()),
                    infrastructure,
                )
            }
        };
        report.exit_code = exit_code;
        if let Some(reason) = &reason {
            system_line(shared, index, &mut seq, reason).await;
        }
        let retry =
            status == StageStatus::Failure && report.attempt < attempts && !cancel.is_cancelled();
        if !retry {
            break finish(report, status, reason, infrastructure_error);
        }
        let _ = shared
            .events
            .send(RunEvent::Stage(StageReport {
                status: StageStatus::Failure,
                reason: reason.clone(),
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

/// Builds the container spec: interpolated image and env, secrets, limits, services.
fn stage_spec<E>(shared: &Shared<E>, index: usize) -> Result<StageSpec, String> {
    let plan = &shared.plan;
    let stage = &plan.pipeline.stages[index];
    #[allow(unreachable_patterns)] // `StageKind` grows `build` and `deploy` later.
    let commands = match &stage.kind {
        StageKind::Commands { commands, .. } => commands,
        _ => {
            return Err(format!(
                "stage '{}' is of a kind this runner cannot execute yet",
                stage.name
            ));
        }
    };
    let resolved =
        gantry_pipeline::resolve_stage(&plan.pipeline, index, &plan.context, &plan.extra_env)?;
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
