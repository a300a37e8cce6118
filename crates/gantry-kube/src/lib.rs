//! Deployments to Kubernetes: update a Deployment's image, watch the rollout, name the cause of a
//! failure within seconds and undo it — the only crate that knows kube-rs and k8s-openapi.
//!
//! The decisions are plain functions over k8s-openapi types, tested without a server:
//! [`rollout_status`] (what `kubectl rollout status` would say), [`diagnose`] (why the new pods
//! fail), [`undo_patch`] (what `kubectl rollout undo` would send) and [`history`]. [`Cluster`] is
//! the IO around them: a patch, three watches (the Deployment, its ReplicaSets, its pods) and,
//! when the rollout fails, the undo.

mod cluster;
mod diagnose;
mod error;
mod report;
mod revisions;
mod status;

pub use cluster::{Cluster, ClusterConfig};
pub use diagnose::{Thresholds, diagnose, next_recheck};
pub use error::{Error, Result};
pub use report::{Outcome, Revision, RolloutReport, RolloutRequest};
pub use revisions::{Undo, history, new_replica_set, revision_of, undo_patch};
pub use status::{RolloutStatus, progress_line, rollout_status};

/// The annotation `kubectl rollout history` shows as CHANGE-CAUSE.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
