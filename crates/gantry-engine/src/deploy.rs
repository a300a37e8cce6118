//! What a `deploy` stage needs from a cluster, behind a trait so the engine's
//! tests use a fake and production uses [`KubeDeployer`] (gantry-kube).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use gantry_pipeline::FailFast;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One rollout to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// A `[[cluster]]` of gantry.toml; `None` is the default kubeconfig.
    pub cluster: Option<String>,
    pub namespace: String,
    pub deployment: String,
    pub container: Option<String>,
    pub image: String,
    /// `gantry <repo> #<run> <short sha>`, shown by `kubectl rollout history`.
    pub change_cause: String,
    pub timeout: Duration,
    pub auto_rollback: bool,
    /// The stage's `fail_fast`; what it leaves out keeps the deployer's thresholds.
    pub fail_fast: FailFast,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    Complete,
    /// Failed and left as it is (`rollback: never`, or the rollback failed too).
    Failed {
        cause: String,
    },
    /// Failed, then undone: `revision`'s template runs again.
    RolledBack {
        cause: String,
        revision: i64,
    },
    TimedOut,
    Cancelled,
}

/// What came of a rollout, for the stage's reason and the deploy history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployResult {
    /// The cluster's name (`default` for the default kubeconfig), namespace and deployment.
    pub cluster: String,
    pub namespace: String,
    pub deployment: String,
    pub image_after: String,
    pub outcome: DeployOutcome,
    pub image_before: Option<String>,
    pub revision_before: Option<i64>,
    pub revision_after: Option<i64>,
    /// The automatic rollback, when the failed rollout was undone (or the undo was tried).
    pub rollback: Option<AutoRollback>,
}

/// An automatic rollback: whether it brought the previous revision back, and how long it took
/// from the undo patch to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoRollback {
    pub ok: bool,
    pub duration: Duration,
}

pub type DeployFuture<'a> = Pin<Box<dyn Future<Output = Result<DeployResult, String>> + Send + 'a>>;

/// Rolls images out. Object-safe, so a plan can carry any implementation.
pub trait Deployer: Send + Sync {
    /// Progress lines (`2 of 3 updated, 1 available`) go to `progress`.
    fn deploy<'a>(
        &'a self,
        request: &'a DeployRequest,
        progress: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> DeployFuture<'a>;
}

/// For runs without any cluster configured: every deploy stage fails clearly.
pub struct NoClusters;

impl Deployer for NoClusters {
    fn deploy<'a>(
        &'a self,
        request: &'a DeployRequest,
        _: mpsc::Sender<String>,
        _: CancellationToken,
    ) -> DeployFuture<'a> {
        let name = request.cluster.clone().unwrap_or_else(|| "default".into());
        Box::pin(async move { Err(format!("no cluster '{name}' is available to this run")) })
    }
}

/// The real thing: gantry-kube against the clusters of gantry.toml.
pub struct KubeDeployer {
    /// Named clusters; a request without a cluster uses the default kubeconfig.
    pub clusters: Vec<gantry_kube::ClusterConfig>,
    /// For what a stage's `fail_fast` leaves out.
    pub thresholds: gantry_kube::Thresholds,
}

/// `defaults`, with what `fail_fast` says in their place.
pub fn thresholds(
    defaults: &gantry_kube::Thresholds,
    fail_fast: &FailFast,
) -> gantry_kube::Thresholds {
    let FailFast {
        crash_loop_restarts,
        image_pull_grace,
        config_error_grace,
        unschedulable_grace,
    } = *fail_fast;
    gantry_kube::Thresholds {
        crash_loop_restarts: crash_loop_restarts
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(defaults.crash_loop_restarts),
        image_pull_grace: image_pull_grace.unwrap_or(defaults.image_pull_grace),
        config_error_grace: config_error_grace.unwrap_or(defaults.config_error_grace),
        unschedulable_grace: unschedulable_grace.unwrap_or(defaults.unschedulable_grace),
    }
}

impl KubeDeployer {
    fn config(&self, name: Option<&str>) -> Result<gantry_kube::ClusterConfig, String> {
        match name {
            None => Ok(gantry_kube::ClusterConfig { name: "default".into(), ..Default::default() }),
            Some(name) => self.clusters.iter().find(|c| c.name == name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
                if known.is_empty() {
                    format!("cluster '{name}' is not configured: add a [[cluster]] named '{name}' to gantry.toml")
                } else {
                    format!("cluster '{name}' is not configured (clusters: {})", known.join(", "))
                }
            }),
        }
    }
}

impl Deployer for KubeDeployer {
    fn deploy<'a>(
        &'a self,
        request: &'a DeployRequest,
        progress: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> DeployFuture<'a> {
        Box::pin(async move {
            let config = self.config(request.cluster.as_deref())?;
            let cluster = gantry_kube::Cluster::connect(&config)
                .await
                .map_err(|e| e.to_string())?;
            let rollout = gantry_kube::RolloutRequest {
                namespace: request.namespace.clone(),
                deployment: request.deployment.clone(),
                container: request.container.clone(),
                image: request.image.clone(),
                change_cause: request.change_cause.clone(),
                timeout: request.timeout,
                auto_rollback: request.auto_rollback,
                thresholds: thresholds(&self.thresholds, &request.fail_fast),
            };
            let report = cluster
                .rollout(&rollout, progress, cancel)
                .await
                .map_err(|e| e.to_string())?;
            let outcome_was_rolled_back =
                matches!(report.outcome, gantry_kube::Outcome::RolledBack { .. });
            let outcome = match report.outcome {
                gantry_kube::Outcome::Complete => DeployOutcome::Complete,
                gantry_kube::Outcome::Failed { cause } => DeployOutcome::Failed { cause },
                gantry_kube::Outcome::RolledBack { cause, revision } => {
                    DeployOutcome::RolledBack { cause, revision }
                }
                gantry_kube::Outcome::TimedOut => DeployOutcome::TimedOut,
                gantry_kube::Outcome::Cancelled => DeployOutcome::Cancelled,
            };
            Ok(DeployResult {
                cluster: config.name.clone(),
                namespace: request.namespace.clone(),
                deployment: request.deployment.clone(),
                image_after: request.image.clone(),
                outcome,
                image_before: report.image_before,
                revision_before: report.revision_before,
                revision_after: report.revision_after,
                rollback: report.rollback_sent_at.map(|sent| AutoRollback {
                    ok: outcome_was_rolled_back,
                    duration: report.finished_at.saturating_duration_since(sent),
                }),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_fast_replaces_only_what_it_names() {
        let defaults = gantry_kube::Thresholds::default();
        assert_eq!(thresholds(&defaults, &FailFast::default()), defaults);
        let merged = thresholds(
            &defaults,
            &FailFast {
                crash_loop_restarts: Some(3),
                unschedulable_grace: Some(Duration::from_secs(180)),
                ..FailFast::default()
            },
        );
        assert_eq!(
            merged,
            gantry_kube::Thresholds {
                crash_loop_restarts: 3,
                unschedulable_grace: Duration::from_secs(180),
                ..defaults
            }
        );
    }
}
