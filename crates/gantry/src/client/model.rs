//! The parts of the server's JSON the client renders. Tolerant on purpose:
//! unknown fields are ignored and most fields may be missing, so a newer
//! server still works with an older client. `--json` bypasses these types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

pub type Time = DateTime<Utc>;

#[derive(Debug, Deserialize)]
pub struct RunList {
    pub runs: Vec<Run>,
}

#[derive(Debug, Deserialize)]
pub struct Run {
    pub id: u64,
    pub project: String,
    pub number: u64,
    /// `queued`, `running`, `success`, `failure`, `cancelled` or `error`;
    /// kept as text so a status this client does not know still shows.
    pub status: String,
    #[serde(default)]
    pub event: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// Empty while a manual run's commit is not resolved yet.
    #[serde(default)]
    pub commit_sha: String,
    pub commit_message: Option<String>,
    pub reason: Option<String>,
    pub created_at: Option<Time>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub rerun_of: Option<u64>,
    #[serde(default)]
    pub stages: Vec<Stage>,
}

impl Run {
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status.as_str(),
            "success" | "failure" | "cancelled" | "error"
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct Stage {
    pub name: String,
    /// `pending`, `running`, `success`, `failure`, `skipped` or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub attempt: u32,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// What the stage produced for later stages: a build's `digest` and `image`.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// The rollout of a deploy stage.
    pub deploy: Option<Rollout>,
}

impl Stage {
    /// Whether the stage can have log lines: it has started at some point.
    pub fn has_log(&self) -> bool {
        !matches!(self.status.as_str(), "pending" | "skipped")
    }
}

#[derive(Debug, Deserialize)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub guid: Option<String>,
    pub event: Option<String>,
    /// The project the repository maps to; none for an unknown repository.
    pub project: Option<String>,
    pub git_ref: Option<String>,
    pub outcome: Option<String>,
    pub run_id: Option<u64>,
    pub received_at: Option<Time>,
}

#[derive(Debug, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// A stored secret: never its value, which the server does not give out.
#[derive(Debug, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: Option<Time>,
    pub updated_at: Option<Time>,
}

#[derive(Debug, Deserialize)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

#[derive(Debug, Deserialize)]
pub struct Project {
    pub name: String,
    pub clone_url: Option<String>,
    /// The pipeline file's path; any JSON is accepted and shown compactly.
    pub pipeline: Option<serde_json::Value>,
}

/// One change of a Deployment's image: a stage's `deploy`, and the core of a history entry.
#[derive(Debug, Deserialize)]
pub struct Rollout {
    pub cluster: String,
    pub namespace: String,
    pub deployment: String,
    pub image_before: Option<String>,
    pub image_after: Option<String>,
    pub revision_before: Option<i64>,
    pub revision_after: Option<i64>,
    /// `complete`, `failed`, `rolled_back`, `timed_out`, `cancelled` or `error`.
    pub result: String,
}

#[derive(Debug, Deserialize)]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
}

/// An entry of the deploy history: a rollout (`deploy`) or a `rollback`.
#[derive(Debug, Deserialize)]
pub struct Deployment {
    pub id: u64,
    pub kind: String,
    #[serde(flatten)]
    pub rollout: Rollout,
    pub cause: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
}

/// The answer to a rollback: its history entry, and the revision number the restored template
/// runs under now.
#[derive(Debug, Deserialize)]
pub struct RolledBack {
    #[serde(flatten)]
    pub entry: Deployment,
    pub current_revision: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct RevisionList {
    pub revisions: Vec<Revision>,
}

/// A revision of a Deployment, as `kubectl rollout history` lists it.
#[derive(Debug, Deserialize)]
pub struct Revision {
    pub revision: i64,
    pub change_cause: Option<String>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub current: bool,
}
