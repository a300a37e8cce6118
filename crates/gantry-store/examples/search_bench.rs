//! Search times on 1,000,000-line stage logs, plain but for one coloured line in ten, and
//! coloured throughout, next to a plain SQL `LIKE` on the stored text (the search before it
//! matched what the view shows); figures, not assertions. `cargo xtask bench search` runs it in
//! release mode.

use std::time::{Duration, Instant};

use chrono::Utc;
use gantry_store::{LogLine, NewRun, Store};
use sqlx::sqlite::SqlitePool;

const LINES: i64 = 1_000_000;
const ROUNDS: usize = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gantry.db");
    let store = Store::open_sqlite(&path).await?;
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
    let text = |seq: i64, coloured: bool| match seq {
        500_000 => "the needle-in-the-haystack".to_owned(),
        s if coloured => format!(
            "\x1b[1m\x1b[32m   Compiling\x1b[0m crate-{s} v0.{} (step {s})",
            s % 97
        ),
        s => format!("   Compiling crate-{s} v0.{} (step {s})", s % 97),
    };
    append(
        &store,
        run.id,
        "mixed",
        (1..=LINES).map(|s| text(s, s % 10 == 0)),
    )
    .await?;
    append(
        &store,
        run.id,
        "coloured",
        (1..=LINES).map(|s| text(s, true)),
    )
    .await?;
    let like = SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;

    // Medians, the two searches taking turns so that they share the machine's noise.
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    for stage in ["mixed", "coloured"] {
        for needle in ["needle-in-the-haystack", "nowhere", "compiling", "step 4"] {
            let (mut like_times, mut shown_times) = (Vec::new(), Vec::new());
            let (mut like_found, mut shown_found) = (0, 0);
            for _ in 0..ROUNDS {
                let started = Instant::now();
                like_found = search_like(&like, run.id, stage, needle).await?;
                like_times.push(started.elapsed());
                let started = Instant::now();
                shown_found = store.search_logs(run.id, stage, needle, 1001).await?.len();
                shown_times.push(started.elapsed());
            }
            let (like_time, shown_time) = (median(like_times), median(shown_times));
            println!(
                "{stage:>8} {needle:>24}: LIKE {like_time:>8.1?} ({like_found} found), \
                 search_logs {shown_time:>8.1?} ({shown_found} found), ×{:.1}",
                shown_time.as_secs_f64() / like_time.as_secs_f64()
            );
        }
    }
    Ok(())
}

async fn append(
    store: &Store,
    run_id: i64,
    stage: &str,
    texts: impl Iterator<Item = String>,
) -> gantry_store::Result<()> {
    let at = Utc::now();
    let mut batch = Vec::new();
    for (seq, text) in (1..).zip(texts) {
        batch.push(LogLine {
            seq,
            stream: "stdout".to_owned(),
            at,
            text,
        });
        if batch.len() == 10_000 {
            store.append_logs(run_id, stage, &batch).await?;
            batch.clear();
        }
    }
    store.append_logs(run_id, stage, &batch).await
}

/// SQL `LIKE` on the stored text, escape codes and all.
async fn search_like(
    pool: &SqlitePool,
    run_id: i64,
    stage: &str,
    needle: &str,
) -> Result<usize, sqlx::Error> {
    let seqs: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM log_lines WHERE run_id = ? AND stage = ? \
         AND text LIKE ? ESCAPE '\\' ORDER BY seq LIMIT ?",
    )
    .bind(run_id)
    .bind(stage)
    .bind(format!("%{needle}%"))
    .bind(1001)
    .fetch_all(pool)
    .await?;
    Ok(seqs.len())
}
