//! Finding text in a stage's log, for viewers that show only the lines on screen.

use crate::error::Context;
use crate::{Result, Store};

impl Store {
    /// The `seq`s of up to `limit` lines of a stage that contain `needle` (ASCII letters match
    /// either case), in order.
    pub async fn search_logs(
        &self,
        run_id: i64,
        stage: &str,
        needle: &str,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let mut pattern = String::with_capacity(needle.len() + 2);
        pattern.push('%');
        for c in needle.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        sqlx::query_scalar(
            "SELECT seq FROM log_lines WHERE run_id = ? AND stage = ? \
             AND text LIKE ? ESCAPE '\\' ORDER BY seq LIMIT ?",
        )
        .bind(run_id)
        .bind(stage)
        .bind(pattern)
        .bind(limit.max(0))
        .fetch_all(&self.reader)
        .await
        .context(|| format!("search the log of stage {stage} of run {run_id}"))
    }
}
