//! What a rollout is asked to do and what came of it.

use std::fmt;
use std::time::{Duration, Instant};

use crate::Thresholds;

/// Update one container's image and see the rollout through.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    pub namespace: String,
    pub deployment: String,
    /// The container to update; None means the only one (an error when there are several).
    pub container: Option<String>,
    pub image: String,
    /// Written to `kubernetes.io/change-cause`, which `kubectl rollout history` shows, e.g.
    /// `gantry pet-project #42 1a2b3c4`.
    pub change_cause: String,
    /// How long the rollout may take before it counts as failed (and is undone when
    /// `auto_rollback`).
    pub timeout: Duration,
    /// Undo the update when it fails or times out.
    pub auto_rollback: bool,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// The rollout failed and was left as it is (no rollback asked for, or the rollback failed
    /// too: `cause` then says both).
    Failed {
        cause: String,
    },
    /// The rollout failed and `revision`'s template runs again.
    RolledBack {
        cause: String,
        revision: i64,
    },
    /// The timeout ran out and no rollback was asked for.
    TimedOut,
    /// The cancellation token fired: Gantry stopped watching and left the Deployment as it was.
    Cancelled,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Complete => f.write_str("rolled out"),
            Outcome::Failed { cause } => write!(f, "rollout failed: {cause}"),
            Outcome::RolledBack { cause, revision } => {
                write!(f, "rolled back to revision {revision}: {cause}")
            }
            Outcome::TimedOut => f.write_str("rollout timed out"),
            Outcome::Cancelled => f.write_str("rollout cancelled"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RolloutReport {
    pub outcome: Outcome,
    /// The container's image before (None when it could not be told, e.g. a manual rollback of a
    /// Deployment with several containers: then all images, comma-separated).
    pub image_before: Option<String>,
    pub image_after: String,
    /// `deployment.kubernetes.io/revision` before the change.
    pub revision_before: Option<i64>,
    /// The revision the change created (for a rollback: the new number the restored template got).
    pub revision_after: Option<i64>,
    /// The revision whose template was restored, when one was.
    pub rolled_back_to: Option<i64>,
    pub started_at: Instant,
    pub finished_at: Instant,
    /// When Gantry decided the rollout had failed (diagnosis, progress deadline or timeout).
    pub failure_detected_at: Option<Instant>,
    /// When the rollback patch was sent.
    pub rollback_sent_at: Option<Instant>,
}

impl RolloutReport {
    pub(crate) fn finish(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self.finished_at = Instant::now();
        self
    }

    pub fn duration(&self) -> Duration {
        self.finished_at.duration_since(self.started_at)
    }
}

/// One revision of a Deployment, as `kubectl rollout history` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub revision: i64,
    /// The ReplicaSet's `kubernetes.io/change-cause` annotation.
    pub change_cause: Option<String>,
    /// The images of the revision's containers, in order.
    pub images: Vec<String>,
    pub replica_set: String,
    /// The revision the Deployment's template is at.
    pub current: bool,
}
