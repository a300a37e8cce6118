//! The run queue: claims queued runs (at most `max_parallel_runs` at once, in
//! arrival order), checks each out, executes it with the engine and stores
//! every stage change and log line as it happens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use gantry_engine::{RunEvent, RunLabels, RunPlan, StageReport, StageSelection};
use gantry_pipeline::{Event, Pipeline, RunContext};
use gantry_store::{LogLine, Run, RunStatus, StageRecord, StageStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::{App, credentials};

/// Lines are written in batches: at most this long after they were printed...
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// ...or as soon as this many are waiting.
const FLUSH_LINES: usize = 1000;

pub async fn runner(app: Arc<App>) {
    loop {
        while app.running.load(Ordering::SeqCst) < app.config.server.max_parallel_runs {
            if app.shutdown.is_cancelled() {
                return;
            }
            match app.store.claim_next_queued().await {
                Ok(Some(run)) => {
                    app.hub.run_changed(run.id);
                    app.running.fetch_add(1, Ordering::SeqCst);
                    let token = CancellationToken::new();
                    if let Ok(mut cancels) = app.cancels.lock() {
                        cancels.insert(run.id, token.clone());
                    }
                    let app = app.clone();
                    tokio::spawn(async move {
                        let id = run.id;
                        execute(&app, run, token).await;
                        if let Ok(mut cancels) = app.cancels.lock() {
                            cancels.remove(&id);
                        }
                        app.running.fetch_sub(1, Ordering::SeqCst);
                        app.runs_waiting.notify_one();
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim a queued run");
                    break;
                }
            }
        }
        tokio::select! {
            _ = app.runs_waiting.notified() => {}
            _ = app.shutdown.cancelled() => return,
        }
    }
}

async fn execute(app: &Arc<App>, run: Run, cancel: CancellationToken) {
    let id = run.id;
    let started = std::time::Instant::now();
    tracing::info!(run_id = id, project = %run.project, number = run.number, "run started");
    let (status, reason) = match prepare_and_run(app, &run, cancel).await {
        Ok(result) => result,
        Err(reason) => (RunStatus::Error, Some(reason)),
    };
    tracing::info!(run_id = id, status = %status, reason = reason.as_deref().unwrap_or(""), "run finished");
    if let Err(e) = app.store.finish_run(id, status, reason.as_deref()).await {
        tracing::error!(run_id = id, error = %e, "cannot record a run's end");
    }
    app.hub.run_changed(id);
    app.metrics
        .run_finished(&run.project, status, Some(started.elapsed()));
    tidy_workspaces(app, id);
}

async fn prepare_and_run(
    app: &Arc<App>,
    run: &Run,
    cancel: CancellationToken,
) -> Result<(RunStatus, Option<String>), String> {
    let project = app
        .project(&run.project)
        .ok_or_else(|| format!("project '{}' is no longer configured", run.project))?
        .clone();

    // Checkout of exactly the run's commit (manual runs first resolve their branch).
    let workspace = app.workspace_path(run.id);
    let mirror_path = app.mirror_path(&project.name);
    let creds = credentials(&project);
    let url = project.clone_url.clone();
    let (branch, tag, sha) = (run.branch.clone(), run.tag.clone(), run.commit_sha.clone());
    let dest = workspace.clone();
    let checkout = tokio::task::spawn_blocking(
        move || -> Result<gantry_git::CommitInfo, gantry_git::Error> {
            let mirror = gantry_git::Mirror::open_or_init(&mirror_path)?;
            let sha = match (sha.is_empty(), &branch) {
                (true, Some(branch)) => mirror.resolve(&url, &creds, branch)?,
                _ => {
                    let refname = match (&branch, &tag) {
                        (Some(b), _) => Some(format!("refs/heads/{b}")),
                        (None, Some(t)) => Some(format!("refs/tags/{t}")),
                        _ => None,
                    };
                    mirror.fetch(&url, &creds, refname.as_deref(), Some(&sha))?;
                    sha
                }
            };
            let _ = std::fs::remove_dir_all(&dest);
            mirror.checkout(&sha, &dest)
        },
    )
    .await
    .map_err(|e| format!("the checkout task failed: {e}"))?
    .map_err(|e| format!("cannot check out {}: {e}", project.clone_url))?;
    if run.commit_sha != checkout.sha || run.commit_message.is_none() {
        app.store
            .set_run_commit(run.id, &checkout.sha, Some(&checkout.message))
            .await
            .map_err(|e| format!("cannot record the commit: {e}"))?;
        app.hub.run_changed(run.id);
    }

    let file = workspace.join(&project.pipeline);
    let source = std::fs::read_to_string(&file)
        .map_err(|_| format!("no {} at commit {}", project.pipeline, checkout.short_sha))?;
    let pipeline = gantry_pipeline::parse(&project.pipeline, &source)
        .map_err(|diagnostics| format!("invalid {}:\n{diagnostics}", project.pipeline))?;
    for (position, stage) in pipeline.stages.iter().enumerate() {
        let record = StageRecord {
            position: position as i64,
            name: stage.name.clone(),
            status: StageStatus::Pending,
            attempt: 0,
            exit_code: None,
            reason: None,
            started_at: None,
            finished_at: None,
        };
        app.store
            .upsert_stage(run.id, &record)
            .await
            .map_err(|e| format!("cannot record stages: {e}"))?;
        let needs: Vec<String> = stage
            .needs
            .iter()
            .filter_map(|&i| pipeline.stages.get(i).map(|s| s.name.clone()))
            .collect();
        app.store
            .set_stage_needs(run.id, &stage.name, &needs)
            .await
            .map_err(|e| format!("cannot record stages: {e}"))?;
    }
    app.hub.stage_changed(run.id);
    if cancel.is_cancelled() {
        return Ok((RunStatus::Cancelled, Some("cancelled".into())));
    }

    let docker = app.docker().await.map_err(|e| e.to_string())?;
    let archive = {
        let dir = workspace.clone();
        let temp = app.archives_dir();
        tokio::task::spawn_blocking(move || {
            gantry_docker::Archive::of_directory(&dir, &temp, &|_, _| false)
        })
        .await
        .map_err(|e| format!("the archive task failed: {e}"))?
        .map_err(|e| format!("cannot read the workspace: {e}"))?
    };
    let event: Event = run
        .event
        .parse()
        .map_err(|e: String| format!("stored run has a bad event: {e}"))?;
    let plan = RunPlan {
        run: RunLabels {
            run_id: format!("{}-{}", app.owner, run.id),
            owner: app.owner.clone(),
            pid: None,
        },
        context: RunContext {
            event,
            branch: run.branch.clone(),
            tag: run.tag.clone(),
            commit_sha: checkout.sha.clone(),
            run_number: run.number as u64,
            repo: run.project.clone(),
        },
        pipeline,
        extra_env: Vec::new(),
        secrets: crate::secrets::for_run(app, &project).await?,
        selection: StageSelection::All,
        max_parallel: 4,
        stage_timeout: Some(app.config.server.stage_timeout),
        archive,
        registries: crate::wiring::registry_auths(&app.config),
        deployer: Arc::new(crate::wiring::kube_deployer(&app.config)),
        source_url: gantry_git::redact_url(&project.clone_url),
    };
    let names = stage_names(&plan.pipeline);
    let (tx, rx) = mpsc::channel(4096);
    let engine = tokio::spawn(gantry_engine::execute(Arc::new(docker), plan, tx, cancel));
    record_events(app, run.id, &names, rx).await;
    let summary = engine
        .await
        .map_err(|e| format!("the run task failed: {e}"))?;
    let status = match summary.status {
        gantry_engine::RunStatus::Success => RunStatus::Success,
        gantry_engine::RunStatus::Failure => RunStatus::Failure,
        gantry_engine::RunStatus::Cancelled => RunStatus::Cancelled,
        gantry_engine::RunStatus::Error => RunStatus::Error,
    };
    Ok((status, summary.reason))
}

fn stage_names(pipeline: &Pipeline) -> Vec<String> {
    pipeline.stages.iter().map(|s| s.name.clone()).collect()
}

/// Writes stage changes at once and log lines in small batches, until the engine is done.
async fn record_events(
    app: &Arc<App>,
    run_id: i64,
    names: &[String],
    mut rx: mpsc::Receiver<RunEvent>,
) {
    let mut pending: HashMap<usize, Vec<LogLine>> = HashMap::new();
    let mut waiting = 0usize;
    let mut started: HashMap<usize, chrono::DateTime<Utc>> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(RunEvent::Log { stage, seq, stream, line }) => {
                    pending.entry(stage).or_default().push(LogLine {
                        seq: seq as i64,
                        stream: stream.as_str().to_string(),
                        at: Utc::now(),
                        text: line,
                    });
                    waiting += 1;
                    if waiting >= FLUSH_LINES {
                        flush(app, run_id, names, &mut pending).await;
                        waiting = 0;
                    }
                }
                Some(RunEvent::Stage(report)) => {
                    // Lines before a status change are stored before it.
                    flush(app, run_id, names, &mut pending).await;
                    waiting = 0;
                    store_stage(app, run_id, &report, &mut started).await;
                }
                None => break,
            },
            _ = tick.tick() => {
                if waiting > 0 {
                    flush(app, run_id, names, &mut pending).await;
                    waiting = 0;
                }
            }
        }
    }
    flush(app, run_id, names, &mut pending).await;
}

async fn flush(
    app: &Arc<App>,
    run_id: i64,
    names: &[String],
    pending: &mut HashMap<usize, Vec<LogLine>>,
) {
    for (stage, lines) in pending.iter_mut() {
        if lines.is_empty() {
            continue;
        }
        let name = names.get(*stage).map(String::as_str).unwrap_or("?");
        match app.store.append_logs(run_id, name, lines).await {
            // Stored first, published second: a viewer fills any gap from the store.
            Ok(()) => app.hub.publish_lines(run_id, name, lines),
            Err(e) => tracing::error!(run_id, stage = name, error = %e, "cannot store log lines"),
        }
        lines.clear();
    }
}

async fn store_stage(
    app: &Arc<App>,
    run_id: i64,
    report: &StageReport,
    started: &mut HashMap<usize, chrono::DateTime<Utc>>,
) {
    let status = match report.status {
        gantry_engine::StageStatus::Pending => StageStatus::Pending,
        gantry_engine::StageStatus::Running => StageStatus::Running,
        gantry_engine::StageStatus::Success => StageStatus::Success,
        gantry_engine::StageStatus::Failure => StageStatus::Failure,
        gantry_engine::StageStatus::Skipped => StageStatus::Skipped,
        gantry_engine::StageStatus::Cancelled => StageStatus::Cancelled,
    };
    if status == StageStatus::Running {
        started.entry(report.index).or_insert_with(Utc::now);
    }
    let finished = status.is_finished();
    let record = StageRecord {
        position: report.index as i64,
        name: report.name.clone(),
        status,
        attempt: i64::from(report.attempt),
        exit_code: report.exit_code,
        reason: report.reason.clone(),
        started_at: started.get(&report.index).copied(),
        finished_at: finished.then(Utc::now),
    };
    if let Err(e) = app.store.upsert_stage(run_id, &record).await {
        tracing::error!(run_id, stage = %report.name, error = %e, "cannot store a stage change");
    }
    if finished {
        crate::deployments::record_stage(app, run_id, report, record.started_at).await;
    }
    app.hub.stage_changed(run_id);
    if let (Some(start), Some(end)) = (record.started_at, record.finished_at) {
        let took = (end - start).to_std().unwrap_or_default();
        app.metrics.stage_finished(status.as_str(), took);
    }
}

/// Removes finished workspaces, keeping the last `keep_workspaces` for debugging.
fn tidy_workspaces(app: &Arc<App>, finished: i64) {
    let keep = app.config.server.keep_workspaces;
    let root = app.data_dir().join("workspaces");
    if keep == 0 {
        let _ = std::fs::remove_dir_all(app.workspace_path(finished));
        return;
    }
    let running: Vec<i64> = app
        .cancels
        .lock()
        .map(|c| c.keys().copied().collect())
        .unwrap_or_default();
    let mut done: Vec<(i64, PathBuf)> = list_workspaces(&root)
        .into_iter()
        .filter(|(id, _)| !running.contains(id))
        .collect();
    done.sort();
    let excess = done.len().saturating_sub(keep);
    for (_, path) in done.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

fn list_workspaces(root: &Path) -> Vec<(i64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect()
}
