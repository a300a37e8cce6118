//! Integration tests of gantry-store on real SQLite files in temporary directories.

// Helpers outside `#[test]` functions are test code too; a panic is the right failure here.
#![allow(clippy::unwrap_used)]

mod deliveries;
mod deploys;
mod logs;
mod open;
mod runs;
mod secrets;
mod sessions;
mod viewers;

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use gantry_store::{LogLine, NewDelivery, NewRun, Store};
use tempfile::TempDir;

/// A store on a fresh file; the directory lives as long as the value.
struct TestDb {
    dir: TempDir,
    store: Store,
}

impl TestDb {
    async fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("gantry.db"))
            .await
            .unwrap();
        TestDb { dir, store }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("gantry.db")
    }

    /// Another store on the same file, as a restarted server would open it.
    async fn reopen(&self) -> Store {
        Store::open_sqlite(&self.path()).await.unwrap()
    }
}

fn new_delivery(guid: &str) -> NewDelivery {
    NewDelivery {
        guid: guid.to_owned(),
        event: "push".to_owned(),
        project: Some("acme/web".to_owned()),
        git_ref: Some("refs/heads/main".to_owned()),
        after_sha: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        payload: format!(r#"{{"delivery":"{guid}"}}"#),
    }
}

fn new_run(project: &str) -> NewRun {
    NewRun {
        project: project.to_owned(),
        event: "push".to_owned(),
        branch: Some("main".to_owned()),
        tag: None,
        commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        commit_message: Some("Fix the build".to_owned()),
        delivery_id: None,
        rerun_of: None,
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + seconds, 123_456_000)
        .unwrap()
}

fn log_line(seq: i64) -> LogLine {
    let stream = match seq % 3 {
        0 => "stdout",
        1 => "stderr",
        _ => "system",
    };
    LogLine {
        seq,
        stream: stream.to_owned(),
        at: at(seq),
        text: format!("line {seq}: compiling gantry-store v0.0.0 (/work/main/crates/gantry-store)"),
    }
}

fn log_lines(seqs: std::ops::RangeInclusive<i64>) -> Vec<LogLine> {
    seqs.map(log_line).collect()
}
