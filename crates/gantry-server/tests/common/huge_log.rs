//! A finished run whose one stage, `big`, has a log of many lines, written straight into a
//! server's store: for the huge-log browser test and the web benchmark (included by both with
//! `#[path]`, so there is one copy).

use std::path::Path;

use gantry_store::{LogLine, NewRun, RunStatus, StageRecord, StageStatus, Store};

/// Writes the run into the SQLite store at `db` and returns its id. Line `seq` (from 1 to
/// `lines`) says `text(seq)`.
pub fn fill_huge_run(
    db: &Path,
    project: &str,
    lines: i64,
    text: impl Fn(i64) -> String,
) -> Result<i64, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = Store::open_sqlite(db).await?;
        let run = store
            .create_run(NewRun {
                project: project.into(),
                event: "push".into(),
                branch: Some("main".into()),
                tag: None,
                commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
                commit_message: Some("a very talkative build".into()),
                delivery_id: None,
                rerun_of: None,
            })
            .await?;
        // Finished at once, so the server's runner never takes it for a queued run.
        store.finish_run(run.id, RunStatus::Success, None).await?;
        let now = chrono::Utc::now();
        let stage = StageRecord {
            position: 0,
            name: "big".into(),
            status: StageStatus::Success,
            attempt: 1,
            exit_code: Some(0),
            reason: None,
            started_at: Some(now),
            finished_at: Some(now),
        };
        store.upsert_stage(run.id, &stage).await?;
        let mut batch = Vec::with_capacity(10_000);
        for seq in 1..=lines {
            batch.push(LogLine {
                seq,
                stream: "stdout".into(),
                at: now,
                text: text(seq),
            });
            if batch.len() == 10_000 {
                store.append_logs(run.id, "big", &batch).await?;
                batch.clear();
            }
        }
        store.append_logs(run.id, "big", &batch).await?;
        store.close().await;
        Ok::<_, Box<dyn std::error::Error>>(run.id)
    })
}
