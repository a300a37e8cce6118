use std::time::{Duration, Instant};

use expect_test::expect;
use gantry_store::{LogLine, Store};

use crate::{TestDb, log_line, log_lines, new_run};

fn seqs(lines: &[LogLine]) -> Vec<i64> {
    lines.iter().map(|line| line.seq).collect()
}

#[tokio::test]
async fn log_lines_are_read_back_by_seq_range() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("web")).await.unwrap();
    // More than one INSERT statement's worth, in one batch.
    let build = log_lines(1..=1_234);
    db.store.append_logs(run.id, "build", &build).await.unwrap();
    db.store
        .append_logs(run.id, "test", &log_lines(1..=5))
        .await
        .unwrap();

    let read = async |stage: &str, since: i64, limit: i64| {
        db.store
            .read_logs(run.id, stage, since, limit)
            .await
            .unwrap()
    };
    let start = read("build", 0, 10).await;
    assert_eq!(start, build[..10], "whole lines come back as written");
    assert_eq!(seqs(&read("build", 500, 3).await), [501, 502, 503]);
    assert_eq!(
        seqs(&read("build", 1_230, 100).await),
        [1_231, 1_232, 1_233, 1_234]
    );
    assert!(read("build", 1_234, 100).await.is_empty());
    assert!(read("build", 0, 0).await.is_empty());
    assert_eq!(read("build", 0, 10_000).await, build);
    assert_eq!(seqs(&read("test", 0, 100).await), [1, 2, 3, 4, 5]);
    assert!(read("deploy", 0, 100).await.is_empty());

    assert_eq!(db.store.last_log_seq(run.id, "build").await.unwrap(), 1_234);
    assert_eq!(db.store.last_log_seq(run.id, "test").await.unwrap(), 5);
    assert_eq!(db.store.last_log_seq(run.id, "deploy").await.unwrap(), 0);

    // Another run's stage of the same name is another log.
    let other = db.store.create_run(new_run("web")).await.unwrap();
    assert!(
        db.store
            .read_logs(other.id, "build", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn appending_continues_and_a_resent_batch_changes_nothing() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("web")).await.unwrap();
    db.store
        .append_logs(run.id, "build", &log_lines(1..=3))
        .await
        .unwrap();
    db.store.append_logs(run.id, "build", &[]).await.unwrap();

    let next = db.store.last_log_seq(run.id, "build").await.unwrap() + 1;
    db.store
        .append_logs(run.id, "build", &log_lines(next..=6))
        .await
        .unwrap();
    // The same seqs again, with other text: the first write stays.
    let resent: Vec<_> = log_lines(5..=6)
        .into_iter()
        .map(|line| LogLine {
            text: "changed".to_owned(),
            ..line
        })
        .collect();
    db.store
        .append_logs(run.id, "build", &resent)
        .await
        .unwrap();

    let stored = db.store.read_logs(run.id, "build", 0, 100).await.unwrap();
    assert_eq!(stored, log_lines(1..=6));
}

#[tokio::test]
async fn bad_batches_store_nothing() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("web")).await.unwrap();

    let mut batch = log_lines(1..=3);
    batch[2].stream = "stdin".to_owned();
    let error = db
        .store
        .append_logs(run.id, "build", &batch)
        .await
        .unwrap_err();
    expect![[r#"invalid log stream "stdin"; expected one of: stdout, stderr, system"#]]
        .assert_eq(&error.to_string());
    assert_eq!(db.store.last_log_seq(run.id, "build").await.unwrap(), 0);

    let error = db
        .store
        .append_logs(run.id + 1, "build", &log_lines(1..=1_500))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("run {} does not exist", run.id + 1)
    );
}

/// Appends `total` lines in batches of `batch_size`, reads ranges back and prints the rates;
/// figures, not assertions.
async fn measure_logs(store: &Store, total: i64, batch_size: i64) {
    let run = store.create_run(new_run("web")).await.unwrap();

    let mut appending = Duration::ZERO;
    for first in (1..=total).step_by(batch_size as usize) {
        let batch = log_lines(first..=(first + batch_size - 1).min(total));
        let started = Instant::now();
        store.append_logs(run.id, "build", &batch).await.unwrap();
        appending += started.elapsed();
    }
    println!(
        "append_logs: {total} lines in batches of {batch_size} in {appending:.2?} = {:.0} lines/s",
        total as f64 / appending.as_secs_f64()
    );

    let mut slowest = Duration::ZERO;
    let mut reads = Duration::ZERO;
    let points = [0, total / 4, total / 2, total * 3 / 4, total - 1_000];
    for &since in &points {
        let started = Instant::now();
        let lines = store
            .read_logs(run.id, "build", since, 1_000)
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(lines.len(), 1_000);
        assert_eq!(lines[0], log_line(since + 1));
        reads += elapsed;
        slowest = slowest.max(elapsed);
    }
    println!(
        "read_logs: 1,000 lines from a {total}-line log in {:.2?} on average, {slowest:.2?} at worst",
        reads / points.len() as u32
    );
    let started = Instant::now();
    assert_eq!(store.last_log_seq(run.id, "build").await.unwrap(), total);
    println!(
        "last_log_seq on a {total}-line log: {:.2?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn log_throughput() {
    // The 1,000,000-line figure: `cargo xtask bench logs`.
    let db = TestDb::new().await;
    measure_logs(&db.store, 100_000, 1_000).await;
    // Small batches pay a transaction each, which dominates.
    measure_logs(&db.store, 5_000, 10).await;
}
