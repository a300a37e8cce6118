//! A run's stage graph: which stages each stage waits for, so viewers can draw parallel branches.
//!
//! Kept beside the stage rows (the `needs` column) but written and read on its own: it is set once
//! when a run's stages are recorded and never changes, while the rest of a stage row changes with
//! every status report.

use crate::error::Context;
use crate::{Result, Store};

impl Store {
    /// Records the names of the stages that `stage` of run `run_id` needs. The stage must have been
    /// written with [`Store::upsert_stage`] first; later upserts keep what this set.
    pub async fn set_stage_needs(&self, run_id: i64, stage: &str, needs: &[String]) -> Result<()> {
        sqlx::query("UPDATE stages SET needs = ? WHERE run_id = ? AND name = ?")
            .bind(needs.join(","))
            .bind(run_id)
            .bind(stage)
            .execute(&self.writer)
            .await
            .context(|| format!("save the needs of stage {stage} of run {run_id}"))?;
        Ok(())
    }

    /// Every stage of run `run_id` with the names of the stages it needs, in pipeline order.
    /// Stages recorded without their needs have none.
    pub async fn stage_needs(&self, run_id: i64) -> Result<Vec<(String, Vec<String>)>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT name, needs FROM stages WHERE run_id = ? ORDER BY position, name",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await
        .context(|| format!("read the stage graph of run {run_id}"))?;
        Ok(rows
            .into_iter()
            .map(|(name, needs)| {
                let needs = needs
                    .unwrap_or_default()
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect();
                (name, needs)
            })
            .collect())
    }
}
