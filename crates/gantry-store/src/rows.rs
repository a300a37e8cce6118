//! Column lists and the mapping from result rows to model types.
//!
//! The column lists are macros so they can be `concat!`ed into `&'static str` statements.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::model::{Delivery, LogLine, Run, StageRecord};

macro_rules! delivery_columns {
    () => {
        "id, guid, event, project, git_ref, after_sha, outcome, run_id, received_at"
    };
}

macro_rules! run_columns {
    () => {
        "id, project, number, status, event, branch, tag, commit_sha, commit_message, reason, \
         created_at, started_at, finished_at, rerun_of, delivery_id"
    };
}

macro_rules! stage_columns {
    () => {
        "run_id, position, name, status, attempt, exit_code, reason, started_at, finished_at"
    };
}

pub(crate) use {delivery_columns, run_columns, stage_columns};

pub(crate) fn delivery(row: SqliteRow) -> sqlx::Result<Delivery> {
    Ok(Delivery {
        id: row.try_get("id")?,
        guid: row.try_get("guid")?,
        event: row.try_get("event")?,
        project: row.try_get("project")?,
        git_ref: row.try_get("git_ref")?,
        after_sha: row.try_get("after_sha")?,
        outcome: row.try_get("outcome")?,
        run_id: row.try_get("run_id")?,
        received_at: row.try_get("received_at")?,
    })
}

/// A run without its stages; the caller fills them in.
pub(crate) fn run(row: SqliteRow) -> sqlx::Result<Run> {
    Ok(Run {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        number: row.try_get("number")?,
        status: parse(&row, "status")?,
        event: row.try_get("event")?,
        branch: row.try_get("branch")?,
        tag: row.try_get("tag")?,
        commit_sha: row.try_get("commit_sha")?,
        commit_message: row.try_get("commit_message")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        rerun_of: row.try_get("rerun_of")?,
        delivery_id: row.try_get("delivery_id")?,
        stages: Vec::new(),
    })
}

/// A stage and the id of its run.
pub(crate) fn stage(row: SqliteRow) -> sqlx::Result<(i64, StageRecord)> {
    let stage = StageRecord {
        position: row.try_get("position")?,
        name: row.try_get("name")?,
        status: parse(&row, "status")?,
        attempt: row.try_get("attempt")?,
        exit_code: row.try_get("exit_code")?,
        reason: row.try_get("reason")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    };
    Ok((row.try_get("run_id")?, stage))
}

pub(crate) fn log_line(row: SqliteRow) -> sqlx::Result<LogLine> {
    Ok(LogLine {
        seq: row.try_get("seq")?,
        stream: row.try_get("stream")?,
        at: row.try_get("logged_at")?,
        text: row.try_get("text")?,
    })
}

/// Reads a text column holding one of our status enums.
fn parse<T>(row: &SqliteRow, column: &str) -> sqlx::Result<T>
where
    T: std::str::FromStr<Err = crate::Error>,
{
    let text: &str = row.try_get(column)?;
    text.parse().map_err(|error| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(error),
    })
}
