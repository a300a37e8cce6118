//! `gantry logs`: a run's stage logs, each line prefixed with its stage like
//! `gantry run` prints them, once or followed until the run finishes.
//!
//! Following polls: the run, then each started stage's log after the last
//! line seen (`?since=SEQ`, answered with `X-Gantry-Last-Seq`). A run seen
//! finished *before* its logs are read has all its lines stored, so one pass
//! after that is the last.

use std::collections::HashMap;
use std::time::Duration;

use super::api::{Error, path_segment};
use super::model::Run;
use super::{Ctx, render};

const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// Lines asked for per request; a full answer means there may be more.
const PAGE: usize = 50_000;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `stage | line`.
    Text,
    /// `{"stage": "...", "line": "..."}` per line, for `--json`.
    JsonLines,
    /// Nothing: only the run's end matters (`trigger --follow --json`).
    Quiet,
}

/// Prints the logs of the stages that have started, in the run's order.
pub fn print_all(ctx: &Ctx, run: &Run, stage: Option<&str>, mode: Mode) -> Result<(), Error> {
    check_stage(run, stage)?;
    let mut cursors = HashMap::new();
    drain(ctx, run, stage, mode, &mut cursors, false)
}

/// Prints new lines until the run finishes; returns the finished run and its JSON.
pub fn follow(
    ctx: &Ctx,
    (mut run, mut body): (Run, String),
    stage: Option<&str>,
    mode: Mode,
) -> Result<(Run, String), Error> {
    let mut cursors = HashMap::new();
    loop {
        // A manual run lists no stages until its pipeline is read: only
        // then can a named stage be missing.
        if !run.stages.is_empty() || run.is_finished() {
            check_stage(&run, stage)?;
        }
        let finished = run.is_finished();
        if mode != Mode::Quiet {
            drain(ctx, &run, stage, mode, &mut cursors, true)?;
        }
        if finished {
            return Ok((run, body));
        }
        std::thread::sleep(POLL_INTERVAL);
        (run, body) = ctx.run(run.id)?;
    }
}

fn check_stage(run: &Run, stage: Option<&str>) -> Result<(), Error> {
    match stage {
        Some(name) if !run.stages.iter().any(|s| s.name == name) => {
            let names: Vec<&str> = run.stages.iter().map(|s| s.name.as_str()).collect();
            let known = if names.is_empty() {
                "it has none yet".to_string()
            } else {
                format!("it has {}", names.join(", "))
            };
            Err(Error::NotFound(format!(
                "stage '{name}' not found in run {} ({known})",
                run.id
            )))
        }
        _ => Ok(()),
    }
}

/// Prints each selected stage's lines after its cursor and moves the cursor.
fn drain(
    ctx: &Ctx,
    run: &Run,
    only: Option<&str>,
    mode: Mode,
    cursors: &mut HashMap<String, u64>,
    following: bool,
) -> Result<(), Error> {
    let selected = || {
        run.stages
            .iter()
            .enumerate()
            .filter(|(_, s)| only.is_none_or(|name| s.name == name))
    };
    let width = selected()
        .map(|(_, s)| s.name.chars().count())
        .max()
        .unwrap_or(0);
    for (index, stage) in selected().filter(|(_, s)| s.has_log()) {
        // Page by page: a stage's log may be longer than one answer.
        loop {
            let since = cursors.get(&stage.name).copied().unwrap_or(0);
            let path = format!("/runs/{}/stages/{}/log", run.id, path_segment(&stage.name));
            let query = [
                ("since", Some(since.to_string())),
                ("limit", Some(PAGE.to_string())),
            ];
            let reply = match ctx.api.get(&path, &query) {
                Ok(reply) => reply,
                // The run lists the stage, so a 404 can only mean no log yet.
                Err(Error::NotFound(_)) => break,
                Err(e) => return Err(e),
            };
            match reply.last_seq {
                Some(last) => {
                    cursors.insert(stage.name.clone(), last);
                }
                // Without the cursor, following would print the same lines again.
                None if following => {
                    return Err(Error::Protocol {
                        url: format!("{}/api/v1{path}", ctx.api.base()),
                        detail: "the log has no X-Gantry-Last-Seq header".to_string(),
                    });
                }
                None => {}
            }
            ctx.out(&format_lines(
                &reply.body,
                &stage.name,
                index,
                width,
                mode,
                &ctx.view,
            ))?;
            // Without the cursor there is no next page to ask for.
            if reply.last_seq.is_none() || reply.body.matches('\n').count() < PAGE {
                break;
            }
        }
    }
    Ok(())
}

/// The text for one log answer: its lines (joined with `\n`, with a trailing
/// newline), each prefixed with the stage.
fn format_lines(
    body: &str,
    stage: &str,
    index: usize,
    width: usize,
    mode: Mode,
    view: &render::View,
) -> String {
    let lines = body.strip_suffix('\n').unwrap_or(body);
    if lines.is_empty() && body.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let prefix = render::log_prefix(stage, index, width, view);
    for line in lines.split('\n') {
        match mode {
            Mode::Text => out.push_str(&render::log_line(&prefix, line, view)),
            Mode::JsonLines => {
                // By hand, to keep the key order whatever serde_json's features.
                out.push_str(&format!(
                    "{{\"stage\":{},\"line\":{}}}\n",
                    json_string(stage),
                    json_string(line)
                ));
            }
            Mode::Quiet => {}
        }
    }
    out
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;

    #[test]
    fn log_answers_become_prefixed_lines() {
        let view = render::View {
            colour: false,
            now: chrono::Utc::now(),
            offset: FixedOffset::east_opt(0).expect("valid offset"),
        };
        let text = |body| format_lines(body, "test", 1, 6, Mode::Text, &view);
        assert_eq!(text(""), "");
        assert_eq!(text("one\n"), "test   | one\n");
        assert_eq!(
            text("one\n\nthree\n"),
            "test   | one\ntest   | \ntest   | three\n"
        );
        // A last line without its newline still prints.
        assert_eq!(text("one\ntwo"), "test   | one\ntest   | two\n");
        // A single empty line.
        assert_eq!(text("\n"), "test   | \n");
        assert_eq!(
            format_lines("a \"b\"\n", "test", 1, 6, Mode::JsonLines, &view),
            "{\"stage\":\"test\",\"line\":\"a \\\"b\\\"\"}\n"
        );
        assert_eq!(format_lines("a\n", "test", 1, 6, Mode::Quiet, &view), "");
    }
}
