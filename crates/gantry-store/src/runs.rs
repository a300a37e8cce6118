//! Runs (a durable FIFO queue with per-project numbers) and their stages.

use std::collections::HashMap;

use chrono::Utc;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Arguments, AssertSqlSafe, sqlite::SqliteArguments};

use crate::error::{Context, run_must_exist};
use crate::model::{NewRun, Run, RunFilter, RunStatus, StageRecord};
use crate::rows::{self, run_columns, stage_columns};
use crate::{Error, Result, Store};

impl Store {
    /// Queues a run, giving it the next number of its project.
    pub async fn create_run(&self, run: NewRun) -> Result<Run> {
        self.insert_run(run, None).await
    }

    /// Records a run that ended before it could start (the commit could not be
    /// fetched, the pipeline file is invalid): it gets its number like any run,
    /// but is never queued, so no runner can pick it up.
    pub async fn create_failed_run(&self, run: NewRun, reason: &str) -> Result<Run> {
        self.insert_run(run, Some(reason)).await
    }

    async fn insert_run(&self, run: NewRun, error: Option<&str>) -> Result<Run> {
        let action = || format!("create a run for project {}", run.project);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context(action)?;
        // The counter row is locked by this transaction until it commits, and UNIQUE(project,
        // number) backs it up: two runs of a project can never share a number.
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO run_counters (project, last_number) VALUES (?, 1) \
             ON CONFLICT (project) DO UPDATE SET last_number = run_counters.last_number + 1 \
             RETURNING last_number",
        )
        .bind(&run.project)
        .fetch_one(&mut *tx)
        .await
        .context(action)?;
        let created = sqlx::query(concat!(
            "INSERT INTO runs (project, number, status, event, branch, tag, commit_sha, \
             commit_message, delivery_id, rerun_of, created_at, reason, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            run_columns!()
        ))
        .bind(&run.project)
        .bind(number)
        .bind(if error.is_some() { "error" } else { "queued" })
        .bind(&run.event)
        .bind(&run.branch)
        .bind(&run.tag)
        .bind(&run.commit_sha)
        .bind(&run.commit_message)
        .bind(run.delivery_id)
        .bind(run.rerun_of)
        .bind(Utc::now())
        .bind(error)
        .bind(error.map(|_| Utc::now()))
        .try_map(rows::run)
        .fetch_one(&mut *tx)
        .await
        .context(action)?;
        tx.commit().await.context(action)?;
        Ok(created)
    }

    /// Takes the oldest queued run off the queue: it becomes `running` with `started_at` now.
    /// Every queued run is handed out once, however many callers ask at the same time.
    pub async fn claim_next_queued(&self) -> Result<Option<Run>> {
        let action = || "claim the next queued run".to_owned();
        let mut conn = self.writer.acquire().await.context(action)?;
        // One statement, so claiming is atomic even with other processes on the file.
        let claimed = sqlx::query(concat!(
            "UPDATE runs SET status = 'running', started_at = ? \
             WHERE id = (SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1) \
             RETURNING ",
            run_columns!()
        ))
        .bind(Utc::now())
        .try_map(rows::run)
        .fetch_optional(&mut *conn)
        .await
        .context(action)?;
        let Some(mut run) = claimed else {
            return Ok(None);
        };
        run.stages = stages_of(&mut conn, run.id).await.context(action)?;
        Ok(Some(run))
    }

    /// Records the commit a run builds, for manual runs that learn it only after checkout.
    pub async fn set_run_commit(
        &self,
        id: i64,
        commit_sha: &str,
        commit_message: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query("UPDATE runs SET commit_sha = ?, commit_message = ? WHERE id = ?")
            .bind(commit_sha)
            .bind(commit_message)
            .bind(id)
            .execute(&self.writer)
            .await
            .context(|| format!("set the commit of run {id}"))?;
        found(done.rows_affected(), id)
    }

    /// Ends a run with a finished `status`, `finished_at` now, and why if there is more to say.
    pub async fn finish_run(&self, id: i64, status: RunStatus, reason: Option<&str>) -> Result<()> {
        if !status.is_finished() {
            return Err(Error::Invalid {
                what: "final run status",
                value: status.to_string(),
                expected: &["success", "failure", "cancelled", "error"],
            });
        }
        let done =
            sqlx::query("UPDATE runs SET status = ?, reason = ?, finished_at = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(reason)
                .bind(Utc::now())
                .bind(id)
                .execute(&self.writer)
                .await
                .context(|| format!("finish run {id} as {status}"))?;
        found(done.rows_affected(), id)
    }

    /// Cancels a run that is still queued, in one statement: `false` when it was no longer
    /// queued (a runner claimed it in the meantime, or it had ended), and nothing changed.
    pub async fn cancel_queued_run(&self, id: i64, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'cancelled', reason = ?, finished_at = ? \
             WHERE id = ? AND status = 'queued'",
        )
        .bind(reason)
        .bind(Utc::now())
        .bind(id)
        .execute(&self.writer)
        .await
        .context(|| format!("cancel queued run {id}"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The run `delivery` made, if it made one (a delivery makes at most one).
    pub async fn run_of_delivery(&self, delivery: i64) -> Result<Option<Run>> {
        let action = || format!("read the run of delivery {delivery}");
        sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE delivery_id = ?"
        ))
        .bind(delivery)
        .try_map(rows::run)
        .fetch_optional(&self.writer)
        .await
        .context(action)
    }

    /// A run with its stages in pipeline order, or `None` if there is no run `id`.
    pub async fn get_run(&self, id: i64) -> Result<Option<Run>> {
        let selection = Selection {
            id: Some(id),
            ..Selection::default()
        };
        let runs = self
            .select_runs(&selection)
            .await
            .context(|| format!("read run {id}"))?;
        Ok(runs.into_iter().next())
    }

    /// Runs matching `filter`, newest first, with their stages.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let selection = Selection {
            project: filter.project.as_deref(),
            status: filter.status,
            newest_first: true,
            limit: Some(filter.limit.max(0)),
            ..Selection::default()
        };
        self.select_runs(&selection)
            .await
            .context(|| "list runs".to_owned())
    }

    /// Every run with `status`, oldest first, with their stages (to recover after a restart).
    pub async fn runs_with_status(&self, status: RunStatus) -> Result<Vec<Run>> {
        let selection = Selection {
            status: Some(status),
            ..Selection::default()
        };
        self.select_runs(&selection)
            .await
            .context(|| format!("list {status} runs"))
    }

    pub async fn count_runs_with_status(&self, status: RunStatus) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status = ?")
            .bind(status.as_str())
            .fetch_one(&self.reader)
            .await
            .context(|| format!("count {status} runs"))
    }

    /// Writes a stage of a run, replacing the stage of the same name if there is one.
    pub async fn upsert_stage(&self, run_id: i64, stage: &StageRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO stages (run_id, name, position, status, attempt, exit_code, reason, \
             started_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id, name) DO UPDATE SET \
             position = excluded.position, status = excluded.status, \
             attempt = excluded.attempt, exit_code = excluded.exit_code, \
             reason = excluded.reason, started_at = excluded.started_at, \
             finished_at = excluded.finished_at",
        )
        .bind(run_id)
        .bind(&stage.name)
        .bind(stage.position)
        .bind(stage.status.as_str())
        .bind(stage.attempt)
        .bind(stage.exit_code)
        .bind(&stage.reason)
        .bind(stage.started_at)
        .bind(stage.finished_at)
        .execute(&self.writer)
        .await
        .context(|| format!("save stage {} of run {run_id}", stage.name))
        .map_err(run_must_exist(run_id))?;
        Ok(())
    }

    /// Reads the selected runs and, in the same snapshot, all their stages in one more query.
    async fn select_runs(&self, selection: &Selection<'_>) -> sqlx::Result<Vec<Run>> {
        let (tail, arguments) = selection.to_sql()?;
        let mut tx = self.reader.begin().await?;
        let mut runs = sqlx::query_with(
            AssertSqlSafe(format!("SELECT {} {tail}", run_columns!())),
            arguments.clone(),
        )
        .try_map(rows::run)
        .fetch_all(&mut *tx)
        .await?;
        if runs.is_empty() {
            return Ok(runs);
        }
        let stages = sqlx::query_with(
            AssertSqlSafe(format!(
                "SELECT {} FROM stages WHERE run_id IN (SELECT id {tail}) \
                 ORDER BY run_id, position, name",
                stage_columns!()
            )),
            arguments,
        )
        .try_map(rows::stage)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut stages_by_run: HashMap<i64, Vec<StageRecord>> = HashMap::new();
        for (run_id, stage) in stages {
            stages_by_run.entry(run_id).or_default().push(stage);
        }
        for run in &mut runs {
            run.stages = stages_by_run.remove(&run.id).unwrap_or_default();
        }
        Ok(runs)
    }
}

/// Which runs to read, in which order.
#[derive(Default)]
struct Selection<'a> {
    id: Option<i64>,
    project: Option<&'a str>,
    status: Option<RunStatus>,
    newest_first: bool,
    limit: Option<i64>,
}

impl Selection<'_> {
    /// The statement from `FROM` on, and the values for its placeholders.
    fn to_sql(&self) -> sqlx::Result<(String, SqliteArguments)> {
        let mut sql = String::from("FROM runs WHERE 1 = 1");
        let mut arguments = SqliteArguments::default();
        let bind_error = |error| sqlx::Error::Encode(error);
        if let Some(id) = self.id {
            sql.push_str(" AND id = ?");
            Arguments::add(&mut arguments, id).map_err(bind_error)?;
        }
        if let Some(project) = self.project {
            sql.push_str(" AND project = ?");
            Arguments::add(&mut arguments, project).map_err(bind_error)?;
        }
        if let Some(status) = self.status {
            sql.push_str(" AND status = ?");
            Arguments::add(&mut arguments, status.as_str()).map_err(bind_error)?;
        }
        sql.push_str(if self.newest_first {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id"
        });
        if let Some(limit) = self.limit {
            sql.push_str(" LIMIT ?");
            Arguments::add(&mut arguments, limit).map_err(bind_error)?;
        }
        Ok((sql, arguments))
    }
}

/// The stages of one run in pipeline order.
async fn stages_of(conn: &mut SqliteConnection, run_id: i64) -> sqlx::Result<Vec<StageRecord>> {
    let stages = sqlx::query(concat!(
        "SELECT ",
        stage_columns!(),
        " FROM stages WHERE run_id = ? ORDER BY position, name"
    ))
    .bind(run_id)
    .try_map(rows::stage)
    .fetch_all(conn)
    .await?;
    Ok(stages.into_iter().map(|(_, stage)| stage).collect())
}

/// Turns "no row changed" into [`Error::NotFound`] for the run `id`.
fn found(rows_affected: u64, id: i64) -> Result<()> {
    if rows_affected == 0 {
        Err(Error::NotFound { what: "run", id })
    } else {
        Ok(())
    }
}
