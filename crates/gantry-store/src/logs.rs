//! Stage log lines: appended in batches, read back by sequence number ranges.

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe};

use crate::error::{Context, run_must_exist};
use crate::model::{LOG_STREAMS, LogLine};
use crate::rows;
use crate::{Error, Result, Store};

/// Rows per INSERT statement: 6 bound values each stay far below SQLite's limit of 32,766 (and
/// measured, 100-row statements were a third slower than 1,000-row ones).
const ROWS_PER_INSERT: usize = 1_000;

impl Store {
    /// Appends log lines of a stage in one transaction: all of them are stored or none.
    ///
    /// A line whose `(run, stage, seq)` is stored already is kept as first written, so sending
    /// a batch again after an error is harmless.
    pub async fn append_logs(&self, run_id: i64, stage: &str, lines: &[LogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        if let Some(line) = lines
            .iter()
            .find(|line| !LOG_STREAMS.contains(&line.stream.as_str()))
        {
            return Err(Error::Invalid {
                what: "log stream",
                value: line.stream.clone(),
                expected: &LOG_STREAMS,
            });
        }
        let action = || {
            format!(
                "append {} log lines to stage {stage} of run {run_id}",
                lines.len()
            )
        };
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context(action)?;
        for chunk in lines.chunks(ROWS_PER_INSERT) {
            let (sql, arguments) = insert_statement(run_id, stage, chunk)
                .map_err(sqlx::Error::Encode)
                .context(action)?;
            // Keeping a statement prepared halves the cost of small batches, but one per batch
            // size would fill the statement cache with big statements used once.
            let keep_prepared = chunk.len() <= 32 || chunk.len() == ROWS_PER_INSERT;
            sqlx::query_with(AssertSqlSafe(sql), arguments)
                .persistent(keep_prepared)
                .execute(&mut *tx)
                .await
                .context(action)
                .map_err(run_must_exist(run_id))?;
        }
        tx.commit().await.context(action)
    }

    /// Up to `limit` lines of a stage with `seq` greater than `since_seq`, in order. Sequence
    /// numbers start at 1, so `since_seq = 0` reads from the start.
    pub async fn read_logs(
        &self,
        run_id: i64,
        stage: &str,
        since_seq: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>> {
        sqlx::query(
            "SELECT seq, stream, logged_at, text FROM log_lines \
             WHERE run_id = ? AND stage = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(run_id)
        .bind(stage)
        .bind(since_seq)
        .bind(limit.max(0))
        .try_map(rows::log_line)
        .fetch_all(&self.reader)
        .await
        .context(|| format!("read the log of stage {stage} of run {run_id}"))
    }

    /// The highest stored `seq` of a stage's log, 0 if it has none.
    pub async fn last_log_seq(&self, run_id: i64, stage: &str) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) FROM log_lines WHERE run_id = ? AND stage = ?",
        )
        .bind(run_id)
        .bind(stage)
        .fetch_one(&self.reader)
        .await
        .context(|| format!("read the last log line of stage {stage} of run {run_id}"))
    }
}

/// One multi-row INSERT for `lines`.
///
/// Placeholders are plain `?`: numbered ones (`?1`) would let the run and stage be bound once,
/// but sqlx then looks up every parameter's name, which is linear in their number.
fn insert_statement(
    run_id: i64,
    stage: &str,
    lines: &[LogLine],
) -> Result<(String, SqliteArguments), sqlx::error::BoxDynError> {
    const INSERT: &str =
        "INSERT INTO log_lines (run_id, stage, seq, stream, logged_at, text) VALUES ";
    const ROW: &str = "(?, ?, ?, ?, ?, ?)";
    const CONFLICT: &str = " ON CONFLICT (run_id, stage, seq) DO NOTHING";

    let mut sql =
        String::with_capacity(INSERT.len() + lines.len() * (ROW.len() + 2) + CONFLICT.len());
    sql.push_str(INSERT);
    let mut arguments = SqliteArguments::default();
    arguments.reserve(lines.len() * 6, 0);
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ROW);
        Arguments::add(&mut arguments, run_id)?;
        Arguments::add(&mut arguments, stage)?;
        Arguments::add(&mut arguments, line.seq)?;
        Arguments::add(&mut arguments, line.stream.as_str())?;
        Arguments::add(&mut arguments, line.at)?;
        Arguments::add(&mut arguments, line.text.as_str())?;
    }
    sql.push_str(CONFLICT);
    Ok((sql, arguments))
}
