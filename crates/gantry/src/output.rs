//! How `gantry run` shows a run on a terminal: live lines prefixed with their
//! stage, status changes, and a summary table.

use std::io::{IsTerminal, Write};

use gantry_engine::{LogStream, RunEvent, RunSummary, StageReport, StageStatus, human_duration};

const COLOURS: [&str; 6] = ["36", "35", "34", "33", "32", "96"];
const RESET: &str = "\x1b[0m";

pub struct Printer {
    names: Vec<String>,
    width: usize,
    colour: bool,
    out: std::io::Stdout,
    /// Secret values, masked again in what Gantry itself prints (stage
    /// reasons can quote user input).
    masker: gantry_engine::log::Masker,
}

impl Printer {
    pub fn new(names: &[String], secrets: &[String]) -> Printer {
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Printer {
            names: names.to_vec(),
            width,
            colour,
            out: std::io::stdout(),
            masker: gantry_engine::log::Masker::new(secrets),
        }
    }

    pub fn event(&mut self, event: &RunEvent) {
        // A closed stdout (e.g. `| head`) must not stop the run: ignore write errors.
        let _ = match event {
            RunEvent::Log {
                stage,
                stream,
                line,
                ..
            } => {
                let prefix = self.prefix(*stage);
                match stream {
                    LogStream::System if self.colour => {
                        writeln!(self.out, "{prefix} \x1b[2m[gantry] {line}{RESET}")
                    }
                    LogStream::System => writeln!(self.out, "{prefix} [gantry] {line}"),
                    // Keep the colours the commands print; reset after, so a
                    // line that leaves a colour open does not bleed into the next.
                    _ if self.colour => writeln!(self.out, "{prefix} {line}{RESET}"),
                    _ => writeln!(self.out, "{prefix} {line}"),
                }
            }
            RunEvent::Stage(report) => self.stage(report),
        };
    }

    fn stage(&mut self, report: &StageReport) -> std::io::Result<()> {
        let prefix = self.prefix(report.index);
        let text = match report.status {
            StageStatus::Pending => return Ok(()),
            StageStatus::Running if report.attempt > 1 => {
                format!("started (attempt {})", report.attempt)
            }
            StageStatus::Running => "started".to_string(),
            status => {
                let mut text = status.to_string();
                if let Some(d) = report.duration {
                    text.push_str(&format!(" in {}", human_duration(d)));
                }
                if let Some(reason) = &report.reason {
                    text.push_str(&format!(": {}", self.masker.mask(reason)));
                }
                text
            }
        };
        let text = if self.colour {
            format!("\x1b[1m{}{text}{RESET}", status_colour(report.status))
        } else {
            text
        };
        writeln!(self.out, "{prefix} ==> {text}")
    }

    fn prefix(&self, stage: usize) -> String {
        let name = self.names.get(stage).map(String::as_str).unwrap_or("?");
        let padded = format!("{name:<width$} |", width = self.width);
        if self.colour {
            format!("\x1b[{}m{padded}{RESET}", COLOURS[stage % COLOURS.len()])
        } else {
            padded
        }
    }

    pub fn summary(&mut self, summary: &RunSummary) {
        let rows: Vec<[String; 5]> = summary
            .stages
            .iter()
            .map(|s| {
                [
                    s.name.clone(),
                    s.status.to_string(),
                    s.duration.map(human_duration).unwrap_or_else(|| "-".into()),
                    s.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.reason
                        .as_deref()
                        .map(|r| self.masker.mask(r))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        let header = ["STAGE", "STATUS", "DURATION", "EXIT", "REASON"].map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut text = String::from("\n");
        for row in std::iter::once(&header).chain(&rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}", w = *w))
                .collect();
            text.push_str(cells.join("  ").trim_end());
            text.push('\n');
        }
        for stage in &summary.stages {
            for (key, value) in &stage.outputs {
                let what = if key == "digest" { "pushed" } else { "built" };
                if key == "image" && stage.outputs.iter().any(|(k, _)| k == "digest") {
                    continue;
                }
                text.push_str(&format!("\n{}: {what} {value}", stage.name));
            }
            if let Some(deploy) = &stage.deploy {
                let revisions = match (deploy.revision_before, deploy.revision_after) {
                    (Some(before), Some(after)) => format!(", revision {before} -> {after}"),
                    _ => String::new(),
                };
                let before = deploy.image_before.as_deref().unwrap_or("?");
                text.push_str(&format!(
                    "\n{}: image {before} replaced{revisions}",
                    stage.name
                ));
            }
        }
        if summary
            .stages
            .iter()
            .any(|s| !s.outputs.is_empty() || s.deploy.is_some())
        {
            text.push('\n');
        }
        text.push_str(&format!(
            "\nrun {} in {}",
            summary.status,
            human_duration(summary.duration)
        ));
        if let Some(reason) = &summary.reason {
            text.push_str(&format!(": {}", self.masker.mask(reason)));
        }
        let _ = writeln!(self.out, "{text}");
    }
}

fn status_colour(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Success => "\x1b[32m",
        StageStatus::Failure => "\x1b[31m",
        StageStatus::Cancelled | StageStatus::Skipped => "\x1b[33m",
        StageStatus::Pending | StageStatus::Running => "",
    }
}
