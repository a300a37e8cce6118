//! Log storage rates on a 1,000,000-line stage: appends in batches of 1,000 (the server's log
//! writer batches so) and of 10, ranged reads of 1,000 lines at five points, and the last line's
//! number; figures, not assertions. `cargo xtask bench logs` runs it in release mode. The suite's
//! `log_throughput` test does the same on 100,000 lines and checks what it reads.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use gantry_store::{LogLine, NewRun, Store};

const LINES: i64 = 1_000_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(&dir.path().join("gantry.db")).await?;
    measure(&store, LINES, 1_000).await?;
    // Small batches pay a transaction each, which dominates.
    measure(&store, 50_000, 10).await?;
    Ok(())
}

fn line(seq: i64) -> LogLine {
    LogLine {
        seq,
        stream: ["stdout", "stderr", "system"][(seq % 3) as usize].to_owned(),
        at: Utc.timestamp_opt(1_760_000_000 + seq, 0).unwrap(),
        text: format!("line {seq}: compiling gantry-store v0.0.0 (/work/main/crates/gantry-store)"),
    }
}

async fn measure(store: &Store, total: i64, batch: i64) -> Result<(), Box<dyn std::error::Error>> {
    let run = store
        .create_run(NewRun {
            project: "acme/web".to_owned(),
            event: "push".to_owned(),
            branch: Some("main".to_owned()),
            tag: None,
            commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            commit_message: None,
            delivery_id: None,
            rerun_of: None,
        })
        .await?;
    let mut appending = Duration::ZERO;
    for first in (1..=total).step_by(batch as usize) {
        let lines: Vec<LogLine> = (first..=(first + batch - 1).min(total)).map(line).collect();
        let started = Instant::now();
        store.append_logs(run.id, "build", &lines).await?;
        appending += started.elapsed();
    }
    println!(
        "append_logs: {total} lines in batches of {batch} in {appending:.2?} = {:.0} lines/s",
        total as f64 / appending.as_secs_f64()
    );

    let mut slowest = Duration::ZERO;
    let mut reads = Duration::ZERO;
    let points = [0, total / 4, total / 2, total * 3 / 4, total - 1_000];
    for &since in &points {
        let started = Instant::now();
        let lines = store.read_logs(run.id, "build", since, 1_000).await?;
        let elapsed = started.elapsed();
        if lines.len() != 1_000 || lines[0].seq != since + 1 {
            return Err(format!("read from {since}: {} lines, not 1,000", lines.len()).into());
        }
        reads += elapsed;
        slowest = slowest.max(elapsed);
    }
    println!(
        "read_logs: 1,000 lines from a {total}-line log in {:.2?} on average, {slowest:.2?} at worst",
        reads / points.len() as u32
    );
    let started = Instant::now();
    let last = store.last_log_seq(run.id, "build").await?;
    println!(
        "last_log_seq on a {total}-line log: {:.2?} (= {last})",
        started.elapsed()
    );
    Ok(())
}
