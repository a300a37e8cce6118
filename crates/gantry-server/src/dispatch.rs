//! From stored deliveries to runs.
//!
//! Each push delivery is read back from the database, its commit fetched into
//! the project's mirror, and the pipeline file at that commit decides whether
//! a run is made. Every delivery ends with an outcome: a run, or the reason
//! for none. Deliveries left undecided by a crash are picked up at start.
//!
//! Projects are decided side by side, each project's deliveries in the order they came: a
//! first clone of a large repository, or a forge that does not answer, holds up only its own
//! project (its fetches are serialized by the mirror's lock anyway), and run numbers still
//! follow the pushes. A stored push wakes its project ([`wake`]): a task of its own decides
//! the project's pending deliveries, batch after batch, until none is left; a push that comes
//! in meanwhile only tells that task to look once more. No webhook rescans the whole backlog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use gantry_pipeline::Event;
use gantry_store::{Delivery, NewRun};
use serde_json::Value;

use crate::state::{App, credentials};

/// How many pending deliveries a project's task reads at a time.
const BATCH: i64 = 256;

/// How many decided outcomes wait to be written together, at most.
const OUTCOMES_PER_WRITE: usize = 64;

/// The projects whose deliveries a task is deciding, each with whether more came in since the
/// task last looked. `None`: deliveries of no project.
#[derive(Default)]
pub struct Dispatch {
    busy: Mutex<HashMap<Option<String>, bool>>,
}

impl Dispatch {
    fn busy(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, bool>> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// At start: wakes every project with deliveries left undecided by a crash.
pub async fn recover(app: Arc<App>) {
    match app.store.pending_deliveries().await {
        Ok(pending) => {
            let mut projects: Vec<Option<String>> =
                pending.into_iter().map(|d| d.project).collect();
            projects.sort();
            projects.dedup();
            for project in projects {
                wake(&app, project.as_deref());
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read pending deliveries"),
    }
}

/// A delivery of `project` was stored: decide it, now or right after what its project's task
/// is deciding.
pub fn wake(app: &Arc<App>, project: Option<&str>) {
    let project = project.map(str::to_owned);
    let mut busy = app.dispatch.busy();
    match busy.get_mut(&project) {
        Some(more) => *more = true,
        None => {
            busy.insert(project.clone(), false);
            tokio::spawn(decide_project(app.clone(), project));
        }
    }
}

/// Decides a project's pending deliveries, oldest first, until none is left. Stops early when
/// the database fails (the project's next delivery tries again, rather than a loop against a
/// failing database) or the server shuts down (the restart picks them up).
///
/// Outcomes are written in batches (one transaction, one fsync, where one each took the writer
/// from incoming webhooks): at most 64, and at once when a run was made or the batch is done.
/// An outcome lost to a crash costs nothing: its delivery is decided again after the restart,
/// to the same answer, and one that made a run finds that run instead of making another.
async fn decide_project(app: Arc<App>, project: Option<String>) {
    // Frees the project however this ends (a panic included), so that its next delivery
    // starts a task again.
    struct Busy<'a> {
        app: &'a App,
        project: &'a Option<String>,
        armed: bool,
    }
    impl Drop for Busy<'_> {
        fn drop(&mut self) {
            if self.armed {
                self.app.dispatch.busy().remove(self.project);
            }
        }
    }
    let mut busy = Busy {
        app: &app,
        project: &project,
        armed: true,
    };
    loop {
        if app.shutdown.is_cancelled() {
            return;
        }
        let pending = match app
            .store
            .pending_deliveries_of(project.as_deref(), BATCH)
            .await
        {
            Ok(pending) => pending,
            Err(e) => {
                tracing::error!(project = ?project, error = %e, "cannot read pending deliveries");
                return;
            }
        };
        if pending.is_empty() {
            // Done, unless a delivery came in after that read: then look once more.
            let mut projects = app.dispatch.busy();
            match projects.get_mut(&project) {
                Some(more) if *more => *more = false,
                _ => {
                    // Under the lock, so that a delivery stored from now on starts a new task.
                    projects.remove(&project);
                    busy.armed = false;
                    return;
                }
            }
            continue;
        }
        if !decide_in_order(&app, pending).await {
            return;
        }
    }
}

/// Decides `deliveries` in order and records their outcomes; false when some could not be
/// stored.
async fn decide_in_order(app: &Arc<App>, deliveries: Vec<Delivery>) -> bool {
    let mut all_recorded = true;
    let mut decided = Vec::new();
    for delivery in deliveries {
        if app.shutdown.is_cancelled() {
            break;
        }
        let id = delivery.id;
        let (outcome, run_id) = decide(app, delivery).await;
        tracing::info!(delivery = id, outcome = %outcome, "delivery processed");
        decided.push((id, outcome, run_id));
        if run_id.is_some() || decided.len() >= OUTCOMES_PER_WRITE {
            all_recorded &= record(app, &mut decided).await;
        }
    }
    all_recorded & record(app, &mut decided).await
}

/// Writes the outcomes decided so far; false (and logged) when they could not be stored.
async fn record(app: &App, decided: &mut Vec<(i64, String, Option<i64>)>) -> bool {
    let outcomes = std::mem::take(decided);
    match app.store.set_delivery_outcomes(&outcomes).await {
        Ok(()) => true,
        Err(e) => {
            let ids: Vec<i64> = outcomes.iter().map(|(id, ..)| *id).collect();
            tracing::error!(deliveries = ?ids, error = %e, "cannot record deliveries' outcomes");
            false
        }
    }
}

/// What a push means, read from GitHub's payload.
#[derive(Debug, PartialEq)]
pub struct Push {
    pub event: Event,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub git_ref: String,
    pub after: String,
    pub deleted: bool,
    pub message: Option<String>,
}

pub fn parse_push(payload: &Value) -> Result<Push, String> {
    let git_ref = payload
        .get("ref")
        .and_then(Value::as_str)
        .ok_or("the push payload has no 'ref'")?;
    let after = payload
        .get("after")
        .and_then(Value::as_str)
        .ok_or("the push payload has no 'after'")?;
    let deleted = payload
        .get("deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || after.bytes().all(|b| b == b'0');
    let message = payload
        .pointer("/head_commit/message")
        .and_then(Value::as_str)
        .map(|m| m.lines().next().unwrap_or_default().to_string());
    let (event, branch, tag) = if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        (Event::Push, Some(branch.to_string()), None)
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        (Event::Tag, None, Some(tag.to_string()))
    } else {
        return Err(format!(
            "ref {git_ref} is neither a branch nor a tag: no run"
        ));
    };
    Ok(Push {
        event,
        branch,
        tag,
        git_ref: git_ref.to_string(),
        after: after.to_string(),
        deleted,
        message,
    })
}

async fn decide(app: &Arc<App>, delivery: Delivery) -> (String, Option<i64>) {
    match decide_push(app, &delivery).await {
        Ok(decision) => decision,
        Err(reason) => (reason, None),
    }
}

async fn decide_push(app: &Arc<App>, delivery: &Delivery) -> Result<(String, Option<i64>), String> {
    // A crash after the run was committed and before the outcome was recorded leaves the
    // delivery pending with its run made: that run is the outcome, not a second one.
    if let Some(run) = app
        .store
        .run_of_delivery(delivery.id)
        .await
        .map_err(|e| format!("error: cannot read the delivery's run: {e}"))?
    {
        return Ok((format!("run #{} queued", run.number), Some(run.id)));
    }
    if delivery.event != "push" {
        return Err(format!(
            "ignored: Gantry does not act on '{}' events",
            delivery.event
        ));
    }
    let payload = app
        .store
        .get_delivery_payload(delivery.id)
        .await
        .map_err(|e| format!("error: cannot read the stored payload: {e}"))?
        .ok_or("error: the stored payload is gone")?;
    let payload: Value = serde_json::from_str(&payload)
        .map_err(|e| format!("error: stored payload is not JSON: {e}"))?;
    let push = parse_push(&payload)?;
    let project_name = delivery.project.clone().unwrap_or_default();
    let project = app
        .project(&project_name)
        .ok_or_else(|| format!("repository '{project_name}' is no longer configured: no run"))?
        .clone();
    if push.deleted {
        let what = if push.tag.is_some() { "tag" } else { "branch" };
        return Err(format!(
            "{what} {} deleted: no run",
            short_ref(&push.git_ref)
        ));
    }

    let new_run = || NewRun {
        project: project.name.clone(),
        event: push.event.to_string(),
        branch: push.branch.clone(),
        tag: push.tag.clone(),
        commit_sha: push.after.clone(),
        commit_message: push.message.clone(),
        delivery_id: Some(delivery.id),
        rerun_of: None,
    };

    // Fetch, then read the pipeline file at exactly the pushed commit.
    let mirror_path = app.mirror_path(&project.name);
    let creds = credentials(&project);
    let (url, git_ref, sha, file) = (
        project.clone_url.clone(),
        push.git_ref.clone(),
        push.after.clone(),
        project.pipeline.clone(),
    );
    let read = tokio::task::spawn_blocking(move || -> Result<Option<String>, gantry_git::Error> {
        let mirror = gantry_git::Mirror::open_or_init(&mirror_path)?;
        mirror.fetch(&url, &creds, Some(&git_ref), Some(&sha))?;
        mirror.read_file(&sha, &file)
    })
    .await
    .map_err(|e| format!("error: the fetch task failed: {e}"))?;
    let source = match read {
        Ok(Some(source)) => source,
        Ok(None) => {
            return Err(format!(
                "no {} at {}: no run",
                project.pipeline,
                &push.after[..push.after.len().min(8)]
            ));
        }
        Err(e) => {
            return make_error_run(
                app,
                new_run(),
                &format!("cannot fetch {}: {e}", project.clone_url),
            )
            .await;
        }
    };
    let pipeline = match gantry_pipeline::parse(&project.pipeline, &source) {
        Ok(p) => p,
        Err(diagnostics) => {
            return make_error_run(
                app,
                new_run(),
                &format!("invalid {}:\n{diagnostics}", project.pipeline),
            )
            .await;
        }
    };
    pipeline
        .on
        .matches(push.event, push.branch.as_deref(), push.tag.as_deref())?;

    let run = app
        .store
        .create_run(new_run())
        .await
        .map_err(|e| format!("error: cannot create the run: {e}"))?;
    app.hub.run_changed(run.id);
    app.runs_waiting.notify_one();
    Ok((format!("run #{} queued", run.number), Some(run.id)))
}

/// A run in state `error` that shows why the pipeline could not start.
async fn make_error_run(
    app: &Arc<App>,
    new_run: NewRun,
    reason: &str,
) -> Result<(String, Option<i64>), String> {
    let run = app
        .store
        .create_failed_run(new_run, reason)
        .await
        .map_err(|e| format!("error: cannot create the run: {e}"))?;
    app.hub.run_changed(run.id);
    app.metrics
        .run_finished(&run.project, gantry_store::RunStatus::Error, None);
    let first_line = reason.lines().next().unwrap_or_default();
    Ok((
        format!("run #{} error: {first_line}", run.number),
        Some(run.id),
    ))
}

fn short_ref(git_ref: &str) -> &str {
    git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pushes() {
        let p = parse_push(&json!({"ref": "refs/heads/main", "after": "abc", "head_commit": {"message": "fix\n\nbody"}})).unwrap();
        assert_eq!(
            (
                p.event,
                p.branch.as_deref(),
                p.message.as_deref(),
                p.deleted
            ),
            (Event::Push, Some("main"), Some("fix"), false)
        );
        let p = parse_push(&json!({"ref": "refs/tags/v1", "after": "abc"})).unwrap();
        assert_eq!((p.event, p.tag.as_deref()), (Event::Tag, Some("v1")));
        let p = parse_push(&json!({"ref": "refs/heads/x", "after": "0000000000000000000000000000000000000000", "deleted": true})).unwrap();
        assert!(p.deleted);
        assert!(parse_push(&json!({"ref": "refs/pull/1/head", "after": "abc"})).is_err());
        assert!(parse_push(&json!({"after": "abc"})).is_err());
    }
}
