//! Server answers → text: tables, the run page, log prefixes. No IO: the
//! clock and the colour choice come in a [`View`], so tests pin them.

use std::time::Duration;

use chrono::FixedOffset;
use gantry_engine::human_duration;

use super::model::{
    Delivery, Deployment, Project, Revision, RolledBack, Rollout, Run, SecretInfo, Stage, Time,
};

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
/// The stage prefix colours, in the order `gantry run` uses them.
const STAGE_COLOURS: [&str; 6] = ["36", "35", "34", "33", "32", "96"];
/// How much of a commit message's first line the runs table shows.
const MESSAGE_WIDTH: usize = 50;

/// How to render: whether to colour, and the clock for relative times.
pub struct View {
    pub colour: bool,
    pub now: Time,
    /// The local time zone's offset, for absolute times.
    pub offset: FixedOffset,
}

impl View {
    fn paint(&self, text: &str, colour: Option<&str>) -> String {
        match colour {
            Some(colour) if self.colour => format!("{colour}{text}{RESET}"),
            _ => text.to_string(),
        }
    }

    pub fn status(&self, status: &str) -> String {
        self.paint(status, status_colour(status))
    }
}

fn status_colour(status: &str) -> Option<&'static str> {
    match status {
        "success" => Some(GREEN),
        "failure" | "error" => Some(RED),
        "queued" | "running" => Some(YELLOW),
        "cancelled" | "skipped" => Some(DIM),
        _ => None,
    }
}

/// A cell: its text, and the colour to paint it on a terminal.
struct Cell {
    text: String,
    colour: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, colour: None }
    }
}

fn status_cell(status: &str) -> Cell {
    Cell {
        text: status.to_string(),
        colour: status_colour(status),
    }
}

/// Columns padded to their widest cell (measured without colour codes),
/// two spaces apart; the last column is not padded.
fn table(view: &View, header: &[&str], rows: Vec<Vec<Cell>>) -> String {
    let header: Vec<Cell> = header.iter().map(|h| Cell::from(h.to_string())).collect();
    let mut widths: Vec<usize> = header.iter().map(|c| c.text.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&view.paint(&cell.text, cell.colour));
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(width - cell.text.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `main`, `tag:v1`, or `-` for a run on neither.
pub fn run_ref(branch: Option<&str>, tag: Option<&str>) -> String {
    match (tag, branch) {
        (Some(tag), _) => format!("tag:{tag}"),
        (None, Some(branch)) => branch.to_string(),
        (None, None) => "-".to_string(),
    }
}

/// A webhook's `refs/heads/main` as `main`, `refs/tags/v1` as `tag:v1`.
pub fn git_ref(git_ref: &str) -> String {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        branch.to_string()
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        format!("tag:{tag}")
    } else {
        git_ref.to_string()
    }
}

/// The first 8 characters of a commit id; `-` while it is not resolved.
pub fn short_sha(sha: &str) -> String {
    if sha.is_empty() {
        "-".to_string()
    } else {
        sha.chars().take(8).collect()
    }
}

/// A commit message's first line, cut to `width` characters with `…`.
pub fn message_summary(message: &str, width: usize) -> String {
    let first = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if first.chars().count() <= width {
        return first.to_string();
    }
    let mut cut: String = first.chars().take(width.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`; a date beyond a week.
pub fn ago(time: Time, view: &View) -> String {
    let secs = (view.now - time).num_seconds();
    match secs {
        ..5 => "just now".to_string(),
        5..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        86400..604800 => format!("{}d ago", secs / 86400),
        _ => time
            .with_timezone(&view.offset)
            .format("%Y-%m-%d")
            .to_string(),
    }
}

/// `2024-05-01 14:03:05 (5m ago)` in local time; no `(ago)` beyond a week,
/// where it would only repeat the date.
fn when(time: Time, view: &View) -> String {
    let absolute = time.with_timezone(&view.offset).format("%Y-%m-%d %H:%M:%S");
    if (view.now - time).num_days() >= 7 {
        absolute.to_string()
    } else {
        format!("{absolute} ({})", ago(time, view))
    }
}

fn elapsed(from: Time, to: Time) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// Whole seconds for something still going: `running 12s`, not `running 12.3s`.
fn so_far(from: Time, view: &View) -> String {
    human_duration(Duration::from_secs(elapsed(from, view.now).as_secs()))
}

/// How long a run took, or has been going: `1m 5s`, `running 12s`, `queued 3s`.
pub fn run_duration(run: &Run, view: &View) -> String {
    match (run.started_at, run.finished_at) {
        (Some(started), Some(finished)) => human_duration(elapsed(started, finished)),
        (Some(started), None) if !run.is_finished() => format!("running {}", so_far(started, view)),
        (None, None) if run.status == "queued" => match run.created_at {
            Some(created) => format!("queued {}", so_far(created, view)),
            None => "queued".to_string(),
        },
        _ => "-".to_string(),
    }
}

fn stage_duration(stage: &Stage, view: &View) -> String {
    match (stage.started_at, stage.finished_at) {
        (Some(started), Some(finished)) => human_duration(elapsed(started, finished)),
        (Some(started), None) if stage.status == "running" => {
            format!("running {}", so_far(started, view))
        }
        _ => "-".to_string(),
    }
}

/// `gantry runs`.
pub fn runs_table(runs: &[Run], view: &View) -> String {
    if runs.is_empty() {
        return "no runs\n".to_string();
    }
    let rows = runs
        .iter()
        .map(|run| {
            vec![
                Cell::from(run.id.to_string()),
                Cell::from(run.project.clone()),
                Cell::from(run.number.to_string()),
                status_cell(&run.status),
                Cell::from(run.event.clone()),
                Cell::from(run_ref(run.branch.as_deref(), run.tag.as_deref())),
                Cell::from(short_sha(&run.commit_sha)),
                Cell::from(
                    run.commit_message
                        .as_deref()
                        .map(|m| message_summary(m, MESSAGE_WIDTH))
                        .unwrap_or_default(),
                ),
                Cell::from(
                    run.started_at
                        .map(|t| ago(t, view))
                        .unwrap_or_else(|| "-".to_string()),
                ),
                Cell::from(run_duration(run, view)),
            ]
        })
        .collect();
    let header = [
        "RUN", "PROJECT", "#", "STATUS", "EVENT", "REF", "COMMIT", "MESSAGE", "STARTED", "DURATION",
    ];
    table(view, &header, rows)
}

/// `run 12 (demo/backend #3) queued`: how trigger, cancel and rerun name a run.
pub fn run_line(run: &Run, view: &View) -> String {
    format!(
        "run {} ({} #{}) {}",
        run.id,
        run.project,
        run.number,
        view.status(&run.status)
    )
}

/// `gantry show`: the run's facts, then its stages.
pub fn run_page(run: &Run, view: &View) -> String {
    let mut facts: Vec<(&str, String)> = vec![
        ("event", run.event.clone()),
        ("ref", run_ref(run.branch.as_deref(), run.tag.as_deref())),
    ];
    let commit = match (run.commit_sha.as_str(), run.commit_message.as_deref()) {
        ("", _) => "(not resolved yet)".to_string(),
        (sha, Some(message)) => format!(
            "{}  {}",
            short_sha(sha),
            message_summary(message, usize::MAX)
        ),
        (sha, None) => short_sha(sha),
    };
    facts.push(("commit", commit));
    if let Some(reason) = &run.reason {
        facts.push(("reason", reason.clone()));
    }
    let times = [
        ("created", run.created_at),
        ("started", run.started_at),
        ("finished", run.finished_at),
    ];
    facts.extend(
        times
            .into_iter()
            .filter_map(|(name, time)| Some((name, when(time?, view)))),
    );
    facts.push(("duration", run_duration(run, view)));
    if let Some(original) = run.rerun_of {
        facts.push(("rerun of", format!("run {original}")));
    }

    let mut out = format!(
        "run {}  {} #{}  {}\n",
        run.id,
        run.project,
        run.number,
        view.status(&run.status)
    );
    let width = facts.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in facts {
        out.push_str(&format!("{name:<width$}  {value}\n"));
    }
    out.push('\n');
    if run.stages.is_empty() {
        out.push_str(if run.is_finished() {
            "no stages ran\n"
        } else {
            "no stages yet\n"
        });
        return out;
    }
    let rows = run
        .stages
        .iter()
        .map(|stage| {
            vec![
                Cell::from(stage.name.clone()),
                status_cell(&stage.status),
                Cell::from(if stage.attempt == 0 {
                    "-".to_string()
                } else {
                    stage.attempt.to_string()
                }),
                Cell::from(
                    stage
                        .exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".to_string()),
                ),
                Cell::from(stage_duration(stage, view)),
                Cell::from(stage.reason.clone().unwrap_or_default()),
            ]
        })
        .collect();
    out.push_str(&table(
        view,
        &["STAGE", "STATUS", "ATTEMPT", "EXIT", "DURATION", "REASON"],
        rows,
    ));
    out.push_str(&stage_products(run, view));
    out
}

/// Below the stages: what they produced (build outputs, in full: the digest is there to be
/// copied) and what they rolled out.
fn stage_products(run: &Run, view: &View) -> String {
    let mut out = String::new();
    let outputs: Vec<Vec<Cell>> = run
        .stages
        .iter()
        .flat_map(|stage| {
            stage.outputs.iter().map(|(key, value)| {
                vec![
                    Cell::from(stage.name.clone()),
                    Cell::from(key.clone()),
                    Cell::from(value.clone()),
                ]
            })
        })
        .collect();
    if !outputs.is_empty() {
        out.push('\n');
        out.push_str(&table(view, &["STAGE", "OUTPUT", "VALUE"], outputs));
    }
    let rollouts: Vec<Vec<Cell>> = run
        .stages
        .iter()
        .filter_map(|stage| {
            let rollout = stage.deploy.as_ref()?;
            Some(vec![
                Cell::from(stage.name.clone()),
                Cell::from(rollout.cluster.clone()),
                Cell::from(target(rollout)),
                Cell::from(change(&rollout.image_before, &rollout.image_after, |i| {
                    i.clone()
                })),
                Cell::from(change(
                    &rollout.revision_before,
                    &rollout.revision_after,
                    i64::to_string,
                )),
                deploy_result_cell(&rollout.result),
            ])
        })
        .collect();
    if !rollouts.is_empty() {
        out.push('\n');
        let header = [
            "STAGE",
            "CLUSTER",
            "NAMESPACE/DEPLOYMENT",
            "IMAGE BEFORE -> AFTER",
            "REVISION",
            "RESULT",
        ];
        out.push_str(&table(view, &header, rollouts));
    }
    out
}

/// The last line of a followed run: `run 12 failure in 1m 5s: stage 'test' failed`.
pub fn final_line(run: &Run, view: &View) -> String {
    let mut line = format!("run {} {}", run.id, run.status);
    if let (Some(started), Some(finished)) = (run.started_at, run.finished_at) {
        line.push_str(&format!(
            " in {}",
            human_duration(elapsed(started, finished))
        ));
    }
    // `run 4 cancelled: cancelled` would say it twice.
    if let Some(reason) = run.reason.as_ref().filter(|r| **r != run.status) {
        line.push_str(&format!(": {reason}"));
    }
    match status_colour(&run.status) {
        Some(colour) if view.colour => format!("\x1b[1m{colour}{line}{RESET}"),
        _ => line,
    }
}

/// `gantry deliveries`.
pub fn deliveries_table(deliveries: &[Delivery], view: &View) -> String {
    if deliveries.is_empty() {
        return "no deliveries\n".to_string();
    }
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_string());
    let rows = deliveries
        .iter()
        .map(|d| {
            vec![
                Cell::from(d.id.to_string()),
                Cell::from(text(&d.guid)),
                Cell::from(text(&d.event)),
                Cell::from(text(&d.project)),
                Cell::from(
                    d.git_ref
                        .as_deref()
                        .map(git_ref)
                        .unwrap_or_else(|| "-".to_string()),
                ),
                Cell::from(text(&d.outcome)),
                Cell::from(
                    d.run_id
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "-".to_string()),
                ),
                Cell::from(
                    d.received_at
                        .map(|t| ago(t, view))
                        .unwrap_or_else(|| "-".to_string()),
                ),
            ]
        })
        .collect();
    table(
        view,
        &[
            "ID",
            "GUID",
            "EVENT",
            "REPOSITORY",
            "REF",
            "OUTCOME",
            "RUN",
            "RECEIVED",
        ],
        rows,
    )
}

/// `gantry projects`.
pub fn projects_table(projects: &[Project], view: &View) -> String {
    if projects.is_empty() {
        return "no projects\n".to_string();
    }
    let rows = projects
        .iter()
        .map(|p| {
            let pipeline = match &p.pipeline {
                None => "-".to_string(),
                Some(serde_json::Value::String(path)) => path.clone(),
                Some(other) => other.to_string(),
            };
            vec![
                Cell::from(p.name.clone()),
                Cell::from(p.clone_url.clone().unwrap_or_else(|| "-".to_string())),
                Cell::from(pipeline),
            ]
        })
        .collect();
    table(view, &["NAME", "CLONE URL", "PIPELINE"], rows)
}

/// `gantry secret list`.
pub fn secrets_table(project: &str, secrets: &[SecretInfo], view: &View) -> String {
    if secrets.is_empty() {
        return format!("no secrets for {project}\n");
    }
    let time = |t: Option<Time>| t.map(|t| ago(t, view)).unwrap_or_else(|| "-".to_string());
    let rows = secrets
        .iter()
        .map(|s| {
            vec![
                Cell::from(s.name.clone()),
                Cell::from(time(s.created_at)),
                Cell::from(time(s.updated_at)),
            ]
        })
        .collect();
    table(view, &["NAME", "CREATED", "UPDATED"], rows)
}

/// `build |`, padded to the widest stage name and coloured like `gantry run`.
pub fn log_prefix(name: &str, index: usize, width: usize, view: &View) -> String {
    let padded = format!("{name:<width$} |");
    if view.colour {
        format!(
            "\x1b[{}m{padded}{RESET}",
            STAGE_COLOURS[index % STAGE_COLOURS.len()]
        )
    } else {
        padded
    }
}

/// A log line after its prefix; on a terminal, colours the line leaves open
/// are reset so they do not bleed into the next prefix.
pub fn log_line(prefix: &str, line: &str, view: &View) -> String {
    if view.colour {
        format!("{prefix} {line}{RESET}\n")
    } else {
        format!("{prefix} {line}\n")
    }
}

/// `shop/backend`
fn target(rollout: &Rollout) -> String {
    format!("{}/{}", rollout.namespace, rollout.deployment)
}

/// `before -> after`, `-` for a side that is not known.
fn change<T>(before: &Option<T>, after: &Option<T>, show: impl Fn(&T) -> String) -> String {
    let side = |value: &Option<T>| value.as_ref().map_or_else(|| "-".to_string(), &show);
    format!("{} -> {}", side(before), side(after))
}

fn deploy_result_cell(result: &str) -> Cell {
    let colour = match result {
        "complete" => Some(GREEN),
        "failed" | "timed_out" | "error" => Some(RED),
        "rolled_back" => Some(YELLOW),
        "cancelled" => Some(DIM),
        _ => None,
    };
    Cell {
        text: result.to_string(),
        colour,
    }
}

/// An image for a table: a digest cut to 12 hex digits, as `docker images` shows IDs.
fn short_image(image: &str) -> String {
    match image.split_once("@sha256:") {
        Some((repository, hex)) if hex.len() > 12 => format!("{repository}@sha256:{}", &hex[..12]),
        _ => image.to_string(),
    }
}

/// How much of a deploy's cause the history table shows.
const CAUSE_WIDTH: usize = 60;

/// `gantry deployments`.
pub fn deployments_table(deployments: &[Deployment], view: &View) -> String {
    if deployments.is_empty() {
        return "no deployments\n".to_string();
    }
    let rows = deployments
        .iter()
        .map(|d| {
            let image = |i: &String| short_image(i);
            vec![
                Cell::from(d.id.to_string()),
                Cell::from(d.kind.clone()),
                Cell::from(d.rollout.cluster.clone()),
                Cell::from(target(&d.rollout)),
                Cell::from(change(
                    &d.rollout.image_before,
                    &d.rollout.image_after,
                    image,
                )),
                Cell::from(change(
                    &d.rollout.revision_before,
                    &d.rollout.revision_after,
                    i64::to_string,
                )),
                deploy_result_cell(&d.rollout.result),
                Cell::from(
                    d.cause
                        .as_deref()
                        .map_or_else(|| "-".to_string(), |c| message_summary(c, CAUSE_WIDTH)),
                ),
                Cell::from(
                    d.finished_at
                        .or(d.started_at)
                        .map_or_else(|| "-".to_string(), |t| ago(t, view)),
                ),
            ]
        })
        .collect();
    let header = [
        "ID",
        "KIND",
        "CLUSTER",
        "NAMESPACE/DEPLOYMENT",
        "IMAGE BEFORE -> AFTER",
        "REVISION",
        "RESULT",
        "CAUSE",
        "WHEN",
    ];
    table(view, &header, rows)
}

/// `gantry rollout history`, like `kubectl rollout history` with the images.
pub fn rollout_history(target: &str, cluster: &str, revisions: &[Revision], view: &View) -> String {
    let mut out = format!("deployment {target} on {cluster}\n");
    if revisions.is_empty() {
        out.push_str("no revisions\n");
        return out;
    }
    let rows = revisions
        .iter()
        .map(|r| {
            let mut images = r.images.join(", ");
            if r.current {
                images.push_str(" (current)");
            }
            vec![
                Cell::from(r.revision.to_string()),
                Cell::from(
                    r.change_cause
                        .clone()
                        .unwrap_or_else(|| "<none>".to_string()),
                ),
                Cell::from(images),
            ]
        })
        .collect();
    out.push_str(&table(view, &["REVISION", "CHANGE-CAUSE", "IMAGE"], rows));
    out
}

/// What `gantry rollback` did: `rolled back shop/backend on prod to revision 41 (now revision
/// 43)`; whether it worked is the entry's `result`.
pub fn rollback_line(answer: &RolledBack) -> String {
    let entry = &answer.entry;
    let what = format!("{} on {}", target(&entry.rollout), entry.rollout.cluster);
    let to = entry
        .rollout
        .revision_after
        .map_or_else(String::new, |r| format!(" to revision {r}"));
    let cause = entry.cause.as_deref().unwrap_or("no cause given");
    match entry.rollout.result.as_str() {
        // The template already was the one asked for: no new revision.
        "complete" if answer.current_revision == entry.rollout.revision_before => {
            let at = entry
                .rollout
                .revision_before
                .map_or_else(String::new, |r| format!(" at revision {r}"));
            format!("nothing to roll back: {what} is already{at}")
        }
        "complete" => {
            let now = answer
                .current_revision
                .map_or_else(String::new, |r| format!(" (now revision {r})"));
            format!("rolled back {what}{to}{now}")
        }
        // The cause names the revision: `rollback to revision 41 failed: ...`.
        _ => format!("{what}: {cause}"),
    }
}

/// Indents valid JSON like `serde_json::to_string_pretty`, keeping the
/// server's key order (a `serde_json::Value` would sort the keys).
pub fn pretty_json(json: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    }
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.next_if_eq(&close).is_some() {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use expect_test::{Expect, expect};

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> Time {
        chrono::Utc
            .with_ymd_and_hms(2024, 5, 1, h, m, s)
            .single()
            .expect("valid time")
    }

    fn view() -> View {
        View {
            colour: false,
            now: at(12, 0, 0),
            offset: FixedOffset::east_opt(0).expect("valid offset"),
        }
    }

    fn run(json: serde_json::Value) -> Run {
        let mut base = serde_json::json!({
            "id": 12, "project": "demo/backend", "number": 3, "status": "success", "event": "push",
            "branch": "main", "tag": null, "commit_sha": "0123456789abcdef0123456789abcdef01234567",
            "commit_message": "Fix the login form\n\nIt forgot the password.", "reason": null,
            "created_at": "2024-05-01T11:50:00Z", "started_at": "2024-05-01T11:50:02Z",
            "finished_at": "2024-05-01T11:51:07Z", "rerun_of": null, "stages": [],
            "some_future_field": {"ignored": true},
        });
        if let (Some(base), serde_json::Value::Object(changes)) = (base.as_object_mut(), json) {
            base.extend(changes);
        }
        serde_json::from_value(base).expect("a valid run")
    }

    fn check(actual: String, expected: Expect) {
        expected.assert_eq(&actual);
    }

    #[test]
    fn refs() {
        assert_eq!(run_ref(Some("main"), None), "main");
        assert_eq!(run_ref(None, Some("v1")), "tag:v1");
        assert_eq!(run_ref(Some("main"), Some("v1")), "tag:v1");
        assert_eq!(run_ref(None, None), "-");
        assert_eq!(git_ref("refs/heads/feature/x"), "feature/x");
        assert_eq!(git_ref("refs/tags/v1.2"), "tag:v1.2");
        assert_eq!(git_ref("refs/pull/1/head"), "refs/pull/1/head");
        assert_eq!(short_sha("0123456789abcdef"), "01234567");
        assert_eq!(short_sha(""), "-");
    }

    #[test]
    fn messages() {
        assert_eq!(message_summary("\n  Fix it  \n\nbody", 50), "Fix it");
        assert_eq!(
            message_summary("Make the cache key include the lockfile hash", 20),
            "Make the cache key…"
        );
        assert_eq!(message_summary("ünïcödé everywhere", 8), "ünïcödé…");
        assert_eq!(message_summary("", 50), "");
    }

    #[test]
    fn relative_times() {
        let view = view();
        let cases = [
            (at(12, 0, 3), "just now"),
            (at(12, 5, 0), "just now"),
            (at(11, 59, 48), "12s ago"),
            (at(11, 55, 0), "5m ago"),
            (at(9, 0, 0), "3h ago"),
            (at(12, 0, 0) - chrono::Duration::days(2), "2d ago"),
            (at(12, 0, 0) - chrono::Duration::days(30), "2024-04-01"),
        ];
        for (time, expected) in cases {
            assert_eq!(ago(time, &view), expected, "{time}");
        }
    }

    #[test]
    fn durations() {
        let view = view();
        let d = |json| run_duration(&run(json), &view);
        assert_eq!(d(serde_json::json!({})), "1m 5s");
        assert_eq!(
            d(
                serde_json::json!({"finished_at": "2024-05-01T11:50:02.350Z", "started_at": "2024-05-01T11:50:02Z"})
            ),
            "350ms"
        );
        assert_eq!(
            d(
                serde_json::json!({"status": "running", "finished_at": null, "started_at": "2024-05-01T11:59:47.6Z"})
            ),
            "running 12s"
        );
        assert_eq!(
            d(
                serde_json::json!({"status": "queued", "started_at": null, "finished_at": null, "created_at": "2024-05-01T11:59:57Z"})
            ),
            "queued 3s"
        );
        // Cancelled before it started.
        assert_eq!(
            d(serde_json::json!({"status": "cancelled", "started_at": null})),
            "-"
        );
    }

    fn sample_runs() -> Vec<Run> {
        vec![
            run(serde_json::json!({
                "id": 14, "number": 5, "status": "running", "event": "manual", "commit_sha": "",
                "commit_message": null, "started_at": "2024-05-01T11:59:30Z", "finished_at": null,
            })),
            run(serde_json::json!({
                "id": 13, "project": "demo/frontend", "number": 1, "status": "failure", "event": "tag",
                "branch": null, "tag": "v1.0.0",
                "commit_message": "Release 1.0: the long awaited release with every feature we promised",
                "started_at": "2024-04-28T08:00:00Z", "finished_at": "2024-04-28T08:12:30Z",
            })),
            run(serde_json::json!({})),
        ]
    }

    #[test]
    fn the_runs_table() {
        check(
            runs_table(&sample_runs(), &view()),
            expect![[r#"
                RUN  PROJECT        #  STATUS   EVENT   REF         COMMIT    MESSAGE                                            STARTED  DURATION
                14   demo/backend   5  running  manual  main        -                                                            30s ago  running 30s
                13   demo/frontend  1  failure  tag     tag:v1.0.0  01234567  Release 1.0: the long awaited release with every…  3d ago   12m 30s
                12   demo/backend   3  success  push    main        01234567  Fix the login form                                 9m ago   1m 5s
            "#]],
        );
        check(
            runs_table(&[], &view()),
            expect![[r#"
            no runs
        "#]],
        );
    }

    #[test]
    fn colour_does_not_shift_columns() {
        let view = View {
            colour: true,
            ..view()
        };
        let text = runs_table(&sample_runs()[1..], &view);
        check(
            text.replace('\x1b', "^"),
            expect![[r#"
                RUN  PROJECT        #  STATUS   EVENT  REF         COMMIT    MESSAGE                                            STARTED  DURATION
                13   demo/frontend  1  ^[31mfailure^[0m  tag    tag:v1.0.0  01234567  Release 1.0: the long awaited release with every…  3d ago   12m 30s
                12   demo/backend   3  ^[32msuccess^[0m  push   main        01234567  Fix the login form                                 9m ago   1m 5s
            "#]],
        );
    }

    #[test]
    fn the_run_page() {
        let failed = run(serde_json::json!({
            "status": "failure", "reason": "stage 'test' failed: exit code 1", "rerun_of": 11,
            "stages": [
                {"name": "build", "status": "success", "attempt": 1, "exit_code": 0, "reason": null,
                 "started_at": "2024-05-01T11:50:02Z", "finished_at": "2024-05-01T11:50:14Z"},
                {"name": "test", "status": "failure", "attempt": 2, "exit_code": 1, "reason": "exit code 1",
                 "started_at": "2024-05-01T11:50:14Z", "finished_at": "2024-05-01T11:51:07Z"},
                {"name": "deploy", "status": "skipped", "attempt": 0, "exit_code": null,
                 "reason": "needs 'test', which failed", "started_at": null, "finished_at": null},
            ],
        }));
        check(
            run_page(&failed, &view()),
            expect![[r#"
                run 12  demo/backend #3  failure
                event     push
                ref       main
                commit    01234567  Fix the login form
                reason    stage 'test' failed: exit code 1
                created   2024-05-01 11:50:00 (10m ago)
                started   2024-05-01 11:50:02 (9m ago)
                finished  2024-05-01 11:51:07 (8m ago)
                duration  1m 5s
                rerun of  run 11

                STAGE   STATUS   ATTEMPT  EXIT  DURATION  REASON
                build   success  1        0     12s
                test    failure  2        1     53s       exit code 1
                deploy  skipped  -        -     -         needs 'test', which failed
            "#]],
        );
        let queued = run(serde_json::json!({
            "status": "queued", "event": "manual", "commit_sha": "", "commit_message": null,
            "created_at": "2024-05-01T11:59:50Z", "started_at": null, "finished_at": null,
        }));
        check(
            run_page(
                &queued,
                &View {
                    offset: FixedOffset::east_opt(2 * 3600).expect("valid offset"),
                    ..view()
                },
            ),
            expect![[r#"
                run 12  demo/backend #3  queued
                event     manual
                ref       main
                commit    (not resolved yet)
                created   2024-05-01 13:59:50 (10s ago)
                duration  queued 10s

                no stages yet
            "#]],
        );
    }

    #[test]
    fn lines_about_a_run() {
        let view = view();
        let failed = run(serde_json::json!({"status": "failure", "reason": "stage 'test' failed"}));
        check(
            final_line(&failed, &view),
            expect!["run 12 failure in 1m 5s: stage 'test' failed"],
        );
        check(
            run_line(&failed, &view),
            expect!["run 12 (demo/backend #3) failure"],
        );
        let cancelled = run(serde_json::json!({"status": "cancelled", "reason": "cancelled"}));
        check(
            final_line(&cancelled, &view),
            expect!["run 12 cancelled in 1m 5s"],
        );
        check(
            final_line(
                &failed,
                &View {
                    colour: true,
                    ..view
                },
            )
            .replace('\x1b', "^"),
            expect!["^[1m^[31mrun 12 failure in 1m 5s: stage 'test' failed^[0m"],
        );
    }

    #[test]
    fn the_deliveries_table() {
        let deliveries: Vec<Delivery> = serde_json::from_value(serde_json::json!([
            {"id": 7, "guid": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "event": "push", "project": "demo/backend",
             "git_ref": "refs/heads/main", "after_sha": "0123", "outcome": "run queued", "run_id": 12,
             "received_at": "2024-05-01T11:50:00Z"},
            {"id": 6, "guid": "5f1b7c2a-cc78-11e3-81ab-4c9367dc0958", "event": "push", "project": null,
             "git_ref": "refs/tags/v1", "after_sha": "4567", "outcome": "ignored: unknown repository",
             "run_id": null, "received_at": "2024-05-01T10:00:00Z"},
            {"id": 5, "guid": null, "event": "ping"},
        ]))
        .expect("valid deliveries");
        check(
            deliveries_table(&deliveries, &view()),
            expect![[r#"
                ID  GUID                                  EVENT  REPOSITORY    REF     OUTCOME                      RUN  RECEIVED
                7   72d3162e-cc78-11e3-81ab-4c9367dc0958  push   demo/backend  main    run queued                   12   10m ago
                6   5f1b7c2a-cc78-11e3-81ab-4c9367dc0958  push   -             tag:v1  ignored: unknown repository  -    2h ago
                5   -                                     ping   -             -       -                            -    -
            "#]],
        );
    }

    #[test]
    fn the_projects_table() {
        let projects: Vec<Project> = serde_json::from_value(serde_json::json!([
            {"name": "demo/backend", "clone_url": "https://git.example.com/demo/backend.git", "pipeline": ".gantry.yml"},
            {"name": "demo/frontend", "clone_url": "file:///srv/git/frontend", "pipeline": {"path": "ci/gantry.yml"}},
        ]))
        .expect("valid projects");
        check(
            projects_table(&projects, &view()),
            expect![[r#"
                NAME           CLONE URL                                 PIPELINE
                demo/backend   https://git.example.com/demo/backend.git  .gantry.yml
                demo/frontend  file:///srv/git/frontend                  {"path":"ci/gantry.yml"}
            "#]],
        );
    }

    #[test]
    fn the_secrets_table() {
        let secrets: Vec<SecretInfo> = serde_json::from_value(serde_json::json!([
            {"name": "API_TOKEN", "created_at": "2024-04-01T08:00:00Z", "updated_at": "2024-05-01T11:58:00Z"},
            {"name": "DEPLOY_KEY", "created_at": "2024-05-01T11:59:50Z", "updated_at": "2024-05-01T11:59:50Z"},
        ]))
        .expect("valid secrets");
        check(
            secrets_table("demo/backend", &secrets, &view()),
            expect![[r#"
                NAME        CREATED     UPDATED
                API_TOKEN   2024-04-01  2m ago
                DEPLOY_KEY  10s ago     10s ago
            "#]],
        );
        check(
            secrets_table("demo/backend", &[], &view()),
            expect![[r#"
                no secrets for demo/backend
            "#]],
        );
    }

    #[test]
    fn log_prefixes() {
        let view = view();
        assert_eq!(
            log_line(&log_prefix("test", 1, 5, &view), "ok", &view),
            "test  | ok\n"
        );
        let colour = View {
            colour: true,
            ..view
        };
        assert_eq!(
            log_line(&log_prefix("test", 1, 5, &colour), "ok", &colour).replace('\x1b', "^"),
            "^[35mtest  |^[0m ok^[0m\n"
        );
    }

    #[test]
    fn pretty_json_keeps_the_servers_key_order() {
        let json = r#"{"runs":[{"id":12,"status":"ok","note":"a \"quoted\", {braced} [x]: y\\","stages":[],"o":{}}],"b": [ 1 , 2 ]}"#;
        check(
            pretty_json(json),
            expect![[r#"
                {
                  "runs": [
                    {
                      "id": 12,
                      "status": "ok",
                      "note": "a \"quoted\", {braced} [x]: y\\",
                      "stages": [],
                      "o": {}
                    }
                  ],
                  "b": [
                    1,
                    2
                  ]
                }"#]],
        );
        // Same text as serde_json's own pretty printer, where the order agrees.
        let sorted = r#"{"a":[1,{"b":null}],"c":{"d":"e"},"f":[]}"#;
        let value: serde_json::Value = serde_json::from_str(sorted).expect("valid JSON");
        assert_eq!(
            pretty_json(sorted),
            serde_json::to_string_pretty(&value).expect("serializable")
        );
    }

    const DIGEST: &str = "127.0.0.1:5000/shop/backend@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904c0ffee0123456789abcdef01";

    #[test]
    fn the_run_page_shows_outputs_and_rollouts() {
        let shipped = run(serde_json::json!({
            "stages": [
                {"name": "image", "status": "success", "attempt": 1, "exit_code": null, "reason": null,
                 "started_at": "2024-05-01T11:50:02Z", "finished_at": "2024-05-01T11:50:14Z",
                 "outputs": {"image": "127.0.0.1:5000/shop/backend:0123456", "digest": DIGEST}},
                {"name": "ship", "status": "failure", "attempt": 1, "exit_code": null,
                 "reason": "rolled back to revision 4: pod backend-1 CrashLoopBackOff",
                 "started_at": "2024-05-01T11:50:14Z", "finished_at": "2024-05-01T11:51:07Z", "outputs": {},
                 "deploy": {"cluster": "prod", "namespace": "shop", "deployment": "backend",
                            "image_before": "backend:1", "image_after": DIGEST,
                            "revision_before": 4, "revision_after": 5, "result": "rolled_back"}},
            ],
        }));
        let page = run_page(&shipped, &view());
        let products = page
            .split_once("CrashLoopBackOff\n")
            .map(|(_, p)| p)
            .unwrap_or(&page);
        check(
            products.to_string(),
            expect![[r#"

                STAGE  OUTPUT  VALUE
                image  digest  127.0.0.1:5000/shop/backend@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904c0ffee0123456789abcdef01
                image  image   127.0.0.1:5000/shop/backend:0123456

                STAGE  CLUSTER  NAMESPACE/DEPLOYMENT  IMAGE BEFORE -> AFTER                                                                                             REVISION  RESULT
                ship   prod     shop/backend          backend:1 -> 127.0.0.1:5000/shop/backend@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904c0ffee0123456789abcdef01  4 -> 5    rolled_back
            "#]],
        );
    }

    #[test]
    fn the_deployments_table() {
        let deployments: Vec<Deployment> = serde_json::from_value(serde_json::json!([
            {"id": 9, "kind": "rollback", "run_id": null, "stage": null, "cluster": "prod",
             "namespace": "shop", "deployment": "backend", "image_before": "backend:3",
             "image_after": "backend:2", "revision_before": 3, "revision_after": 2,
             "result": "complete", "cause": "manual rollback",
             "started_at": "2024-05-01T11:59:40Z", "finished_at": "2024-05-01T11:59:45Z"},
            {"id": 8, "kind": "rollback", "run_id": 12, "stage": "ship", "cluster": "prod",
             "namespace": "shop", "deployment": "backend", "image_before": DIGEST,
             "image_after": "backend:1", "revision_before": 5, "revision_after": 4,
             "result": "complete", "cause": "automatic rollback",
             "started_at": "2024-05-01T11:50:14Z", "finished_at": "2024-05-01T11:51:07Z"},
            {"id": 7, "kind": "deploy", "run_id": 12, "stage": "ship", "cluster": "prod",
             "namespace": "shop", "deployment": "backend", "image_before": "backend:1",
             "image_after": DIGEST, "revision_before": 4, "revision_after": 5,
             "result": "rolled_back",
             "cause": "pod backend-7d9f-x2k OOMKilled (memory limit 128Mi), restarted 3 times, and more",
             "started_at": "2024-05-01T11:50:14Z", "finished_at": "2024-05-01T11:51:07Z"},
            {"id": 6, "kind": "deploy", "run_id": 11, "stage": "ship", "cluster": "default",
             "namespace": "default", "deployment": "web", "image_before": null, "image_after": "web:1",
             "revision_before": null, "revision_after": null, "result": "timed_out", "cause": null,
             "started_at": "2024-04-28T08:00:00Z", "finished_at": null},
        ]))
        .expect("valid deployments");
        check(
            deployments_table(&deployments, &view()),
            expect![[r#"
                ID  KIND      CLUSTER  NAMESPACE/DEPLOYMENT  IMAGE BEFORE -> AFTER                                         REVISION  RESULT       CAUSE                                                         WHEN
                9   rollback  prod     shop/backend          backend:3 -> backend:2                                        3 -> 2    complete     manual rollback                                               15s ago
                8   rollback  prod     shop/backend          127.0.0.1:5000/shop/backend@sha256:4b825dc642cb -> backend:1  5 -> 4    complete     automatic rollback                                            8m ago
                7   deploy    prod     shop/backend          backend:1 -> 127.0.0.1:5000/shop/backend@sha256:4b825dc642cb  4 -> 5    rolled_back  pod backend-7d9f-x2k OOMKilled (memory limit 128Mi), restar…  8m ago
                6   deploy    default  default/web           - -> web:1                                                    - -> -    timed_out    -                                                             3d ago
            "#]],
        );
        check(
            deployments_table(&[], &view()),
            expect![[r#"
                no deployments
            "#]],
        );
    }

    #[test]
    fn a_rollout_history() {
        let revisions: Vec<Revision> = serde_json::from_value(serde_json::json!([
            {"revision": 3, "change_cause": "gantry demo/app #7 0123456", "images": ["backend:3"], "current": false},
            {"revision": 4, "change_cause": null, "images": ["backend:2", "sidecar:1"], "current": true},
        ]))
        .expect("valid revisions");
        check(
            rollout_history("shop/backend", "prod", &revisions, &view()),
            expect![[r#"
                deployment shop/backend on prod
                REVISION  CHANGE-CAUSE                IMAGE
                3         gantry demo/app #7 0123456  backend:3
                4         <none>                      backend:2, sidecar:1 (current)
            "#]],
        );
    }

    #[test]
    fn what_a_rollback_says() {
        let line = |result: &str, cause: &str, current: Option<i64>| {
            let answer: RolledBack = serde_json::from_value(serde_json::json!({
                "id": 9, "kind": "rollback", "run_id": null, "stage": null, "cluster": "prod",
                "namespace": "shop", "deployment": "backend", "image_before": "backend:42",
                "image_after": "backend:41", "revision_before": 42, "revision_after": 41,
                "result": result, "cause": cause, "started_at": null, "finished_at": null,
                "current_revision": current,
            }))
            .expect("a valid answer");
            rollback_line(&answer)
        };
        let lines = [
            line("complete", "manual rollback", Some(43)),
            line("complete", "nothing to roll back", Some(42)),
            line(
                "failed",
                "rollback to revision 41 failed: pod backend-1 CrashLoopBackOff",
                Some(43),
            ),
            line(
                "timed_out",
                "rollback to revision 41 did not complete within the progress deadline",
                None,
            ),
        ];
        check(
            lines.join("\n"),
            expect![[r#"
                rolled back shop/backend on prod to revision 41 (now revision 43)
                nothing to roll back: shop/backend on prod is already at revision 42
                shop/backend on prod: rollback to revision 41 failed: pod backend-1 CrashLoopBackOff
                shop/backend on prod: rollback to revision 41 did not complete within the progress deadline"#]],
        );
    }
}
