//! The IO: one client per cluster, the image patch, the watches, the undo.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Selector;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::diagnose::{diagnose, next_recheck};
use crate::report::{Outcome, Revision, RolloutReport, RolloutRequest};
use crate::revisions::{self, POD_TEMPLATE_HASH, Undo, new_replica_set, revision_of, undo_patch};
use crate::status::{RolloutStatus, progress_line, rollout_status};
use crate::{CHANGE_CAUSE_ANNOTATION, Error, Result, Thresholds};

/// How long connecting to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request (not a watch) may take to be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the watches may fail to reach the server before the rollout gives up on it.
const WATCH_OUTAGE_LIMIT: Duration = Duration::from_secs(30);
/// How many times a patch is tried when someone else changed the Deployment in between.
const PATCH_ATTEMPTS: u32 = 3;
/// The field manager Gantry's patches are recorded under.
const FIELD_MANAGER: &str = "gantry";

/// Where a cluster is and how to log in.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// The name errors and logs use, e.g. "prod".
    pub name: String,
    /// A kubeconfig file; None (and not `in_cluster`) means the default one: `$KUBECONFIG` or
    /// `~/.kube/config`, or in a pod without either (and without a `context`), the pod's service
    /// account, as kubectl does.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; None means its current context.
    pub context: Option<String>,
    /// Use the service account Gantry runs under in a pod.
    pub in_cluster: bool,
}

/// A connection to one cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    name: String,
    url: String,
    client: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish()
    }
}

impl Cluster {
    /// Reads the configuration and builds a client, without talking to the server: Gantry starts
    /// while a cluster is down, and an unreachable server is `Error::Unreachable` at the first
    /// call (connecting may take up to 10 s).
    pub async fn connect(cfg: &ClusterConfig) -> Result<Cluster> {
        let options = KubeConfigOptions {
            context: cfg.context.clone(),
            ..KubeConfigOptions::default()
        };
        let source = match (&cfg.kubeconfig, cfg.in_cluster) {
            (_, true) => "the in-cluster service account".to_owned(),
            (Some(path), false) => format!("kubeconfig {}", path.display()),
            (None, false) if cfg.context.is_none() => {
                "the default kubeconfig ($KUBECONFIG or ~/.kube/config), or in a pod without one, \
                 the in-cluster service account"
                    .to_owned()
            }
            (None, false) => "the default kubeconfig ($KUBECONFIG or ~/.kube/config)".to_owned(),
        };
        let bad = |err: &dyn std::fmt::Display| {
            Error::Config(format!(
                "cannot configure cluster '{}' from {source}: {err}",
                cfg.name
            ))
        };
        let mut config = if cfg.in_cluster {
            Config::incluster().map_err(|err| bad(&err))?
        } else if let Some(path) = &cfg.kubeconfig {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|err| bad(&err))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|err| bad(&err))?
        } else if cfg.context.is_none() {
            // As kubectl does: the kubeconfig, else (in a pod) the service account.
            Config::infer().await.map_err(|err| bad(&err))?
        } else {
            Config::from_kubeconfig(&options)
                .await
                .map_err(|err| bad(&err))?
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let url = config.cluster_url.to_string();
        let url = url.strip_suffix('/').unwrap_or(&url).to_owned();
        let client = Client::try_from(config).map_err(|err| bad(&err))?;
        Ok(Cluster {
            name: cfg.name.clone(),
            url,
            client,
        })
    }

    /// The cluster's name, as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `req.container`'s image (a strategic merge patch that also writes the change cause),
    /// watches the rollout as `kubectl rollout status` would while watching the new pods for a
    /// cause to fail early, and undoes it when it fails and `req.auto_rollback` says so.
    pub async fn rollout(
        &self,
        req: &RolloutRequest,
        progress: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Result<RolloutReport> {
        let started_at = Instant::now();
        let (before, container, patched) = self.set_image(req, &progress).await?;
        let revision_before = revision_of(&before.metadata);
        let mut report = RolloutReport {
            outcome: Outcome::Complete,
            image_before: container_image(&before, &container),
            image_after: req.image.clone(),
            revision_before,
            revision_after: None,
            rolled_back_to: None,
            started_at,
            finished_at: started_at,
            failure_detected_at: None,
            rollback_sent_at: None,
        };

        let deadline = started_at + req.timeout;
        let watched = self
            .watch_rollout(&patched, &req.thresholds, deadline, &progress, &cancel, "")
            .await?;
        report.revision_after = watched.revision;
        // The cause, and the outcome when the failure is left in place.
        let (cause, left_in_place) = match watched.end {
            End::Complete => return Ok(report.finish(Outcome::Complete)),
            End::Cancelled => return Ok(report.finish(Outcome::Cancelled)),
            End::Failed { cause, at } => {
                report.failure_detected_at = Some(at);
                say(&progress, format!("rollout failed: {cause}")).await;
                (cause.clone(), Outcome::Failed { cause })
            }
            End::TimedOut { at, last } => {
                report.failure_detected_at = Some(at);
                let cause = format!(
                    "rollout did not complete within {}s ({last})",
                    req.timeout.as_secs()
                );
                say(&progress, cause.clone()).await;
                (cause, Outcome::TimedOut)
            }
        };
        let outcome = match revision_before {
            _ if !req.auto_rollback => left_in_place,
            None => Outcome::Failed {
                cause: format!("{cause}; no earlier revision to roll back to"),
            },
            Some(target) => {
                self.roll_back_after(req, target, cause, &mut report, &progress, &cancel)
                    .await
            }
        };
        Ok(report.finish(outcome))
    }

    /// Reads the Deployment and patches the image, on a fresh read again after a conflict.
    /// Returns the Deployment before, the container's name and the patch's answer.
    async fn set_image(
        &self,
        req: &RolloutRequest,
        progress: &mpsc::Sender<String>,
    ) -> Result<(Deployment, String, Deployment)> {
        let (ns, name) = (req.namespace.as_str(), req.deployment.as_str());
        let what = format!("deployment {ns}/{name}");
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.call(&what, api.get(name)).await?;
            if paused(&current) {
                return Err(Error::Paused {
                    deployment: format!("{ns}/{name}"),
                });
            }
            let container = pick_container(&current, req.container.as_deref(), &what)?;
            // Announced between the read and the patch: where a concurrent change would land.
            say(
                progress,
                format!(
                    "{what}: container {container} {} → {} (revision {})",
                    container_image(&current, &container)
                        .as_deref()
                        .unwrap_or("?"),
                    req.image,
                    revision_of(&current.metadata)
                        .map_or_else(|| "none".to_owned(), |r| r.to_string()),
                ),
            )
            .await;
            let patch = serde_json::json!({
                "metadata": {
                    // A precondition: the patch fails with a conflict if the Deployment changed
                    // since it was read (paused, say).
                    "resourceVersion": current.metadata.resource_version,
                    "annotations": {CHANGE_CAUSE_ANNOTATION: req.change_cause},
                },
                "spec": {"template": {"spec": {"containers": [{"name": container, "image": req.image}]}}},
            });
            match self
                .call(
                    &what,
                    api.patch(name, &patch_params(), &Patch::Strategic(&patch)),
                )
                .await
            {
                Ok(patched) => return Ok((current, container, patched)),
                Err(Error::Conflict(cause)) if attempt < PATCH_ATTEMPTS => {
                    tracing::debug!(%cause, attempt, "conflict on the image patch");
                    say(
                        progress,
                        format!("{what} changed while Gantry updated it; reading it again"),
                    )
                    .await;
                }
                Err(Error::Conflict(cause)) => {
                    return Err(Error::Conflict(format!(
                        "{what} kept changing while Gantry updated its image ({attempt} conflicts, the last: {cause}); try again"
                    )));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The automatic rollback of a failed rollout to `target`, and its outcome.
    async fn roll_back_after(
        &self,
        req: &RolloutRequest,
        target: i64,
        cause: String,
        report: &mut RolloutReport,
        progress: &mpsc::Sender<String>,
        cancel: &CancellationToken,
    ) -> Outcome {
        let deadline = Instant::now() + req.timeout;
        let sent = self
            .undo(&req.namespace, &req.deployment, Some(target), progress)
            .await;
        let (revision, patched) = match sent {
            Err(err) => {
                return Outcome::Failed {
                    cause: format!("{cause}; rollback to revision {target} failed: {err}"),
                };
            }
            Ok(Undone::AlreadyCurrent { revision }) => {
                return Outcome::Failed {
                    cause: format!(
                        "{cause}; nothing to roll back: revision {revision} is the current template"
                    ),
                };
            }
            Ok(Undone::Sent {
                revision,
                sent_at,
                patched,
            }) => {
                report.rollback_sent_at = Some(sent_at);
                report.rolled_back_to = Some(revision);
                (revision, patched)
            }
        };
        let watched = self
            .watch_rollout(
                &patched,
                &req.thresholds,
                deadline,
                progress,
                cancel,
                "rollback: ",
            )
            .await;
        let watched = match watched {
            Ok(watched) => watched,
            Err(err) => {
                return Outcome::Failed {
                    cause: format!(
                        "{cause}; rollback to revision {revision} sent, but then: {err}"
                    ),
                };
            }
        };
        match watched.end {
            End::Complete => {
                say(progress, rolled_back_line(revision, watched.revision)).await;
                Outcome::RolledBack { cause, revision }
            }
            End::Cancelled => Outcome::Cancelled,
            End::Failed { cause: again, .. } => Outcome::Failed {
                cause: format!("{cause}; rollback to revision {revision} failed too: {again}"),
            },
            End::TimedOut { last, .. } => Outcome::Failed {
                cause: format!(
                    "{cause}; rollback to revision {revision} did not complete within {}s ({last})",
                    req.timeout.as_secs()
                ),
            },
        }
    }

    /// `kubectl rollout undo [--to-revision=N]`: restores the revision before the newest (or
    /// `to_revision`) and watches that rollout to its end, for as long as the Deployment's
    /// progress deadline allows.
    pub async fn rollback(
        &self,
        namespace: &str,
        deployment: &str,
        to_revision: Option<i64>,
        progress: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Result<RolloutReport> {
        let started_at = Instant::now();
        let what = format!("deployment {namespace}/{deployment}");
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let before = self.call(&what, api.get(deployment)).await?;
        let images_before = template_images(&before);
        let revision_before = revision_of(&before.metadata);
        let mut report = RolloutReport {
            outcome: Outcome::Complete,
            image_before: Some(images_before.clone()),
            image_after: images_before,
            revision_before,
            revision_after: revision_before,
            rolled_back_to: None,
            started_at,
            finished_at: started_at,
            failure_detected_at: None,
            rollback_sent_at: None,
        };
        let (revision, sent_at, patched) = match self
            .undo(namespace, deployment, to_revision, &progress)
            .await?
        {
            Undone::AlreadyCurrent { revision } => {
                say(
                    &progress,
                    format!(
                        "skipped rollback (current template already matches revision {revision})"
                    ),
                )
                .await;
                return Ok(report.finish(Outcome::Complete));
            }
            Undone::Sent {
                revision,
                sent_at,
                patched,
            } => (revision, sent_at, patched),
        };
        report.rollback_sent_at = Some(sent_at);
        report.rolled_back_to = Some(revision);
        report.image_after = template_images(&patched);
        let deadline_secs = patched
            .spec
            .progress_deadline_seconds
            .and_then(|secs| u64::try_from(secs).ok())
            .unwrap_or(600);
        let deadline = Instant::now() + Duration::from_secs(deadline_secs) + REQUEST_TIMEOUT;
        let thresholds = Thresholds::default();
        let watched = self
            .watch_rollout(
                &patched,
                &thresholds,
                deadline,
                &progress,
                &cancel,
                "rollback: ",
            )
            .await?;
        report.revision_after = watched.revision.or(report.revision_after);
        let outcome = match watched.end {
            End::Complete => {
                say(&progress, rolled_back_line(revision, watched.revision)).await;
                Outcome::RolledBack {
                    cause: "manual rollback".to_owned(),
                    revision,
                }
            }
            End::Cancelled => Outcome::Cancelled,
            End::Failed { cause, at } => {
                report.failure_detected_at = Some(at);
                Outcome::Failed {
                    cause: format!("rollback to revision {revision} failed: {cause}"),
                }
            }
            End::TimedOut { at, .. } => {
                report.failure_detected_at = Some(at);
                Outcome::TimedOut
            }
        };
        Ok(report.finish(outcome))
    }

    /// The Deployment's revisions, oldest first, like `kubectl rollout history`.
    pub async fn history(&self, namespace: &str, deployment: &str) -> Result<Vec<Revision>> {
        let what = format!("deployment {namespace}/{deployment}");
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let current = self.call(&what, api.get(deployment)).await?;
        let replica_sets = self.replica_sets(&current).await?;
        Ok(revisions::history(&current, &replica_sets))
    }

    /// The ReplicaSets matching the Deployment's selector, as kubectl lists them (ownership is
    /// checked by the pure functions).
    async fn replica_sets(&self, deployment: &Deployment) -> Result<Vec<ReplicaSet>> {
        let ns = deployment.namespace().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let selector = selector(deployment)?;
        let list = self
            .call(
                &format!("replica sets in namespace {ns}"),
                api.list(&ListParams::default().labels_from(&selector)),
            )
            .await?;
        Ok(list.items)
    }

    /// Reads the Deployment and its ReplicaSets and sends the undo patch, on a fresh read again
    /// after a conflict.
    async fn undo(
        &self,
        ns: &str,
        name: &str,
        to_revision: Option<i64>,
        progress: &mpsc::Sender<String>,
    ) -> Result<Undone> {
        let what = format!("deployment {ns}/{name}");
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.call(&what, api.get(name)).await?;
            let replica_sets = self.replica_sets(&current).await?;
            let (revision, patch) = match undo_patch(&current, &replica_sets, to_revision)? {
                Undo::AlreadyCurrent { revision } => {
                    return Ok(Undone::AlreadyCurrent { revision });
                }
                Undo::Patch { revision, patch } => (revision, patch),
            };
            say(progress, format!("rolling back to revision {revision}")).await;
            let sent_at = Instant::now();
            match self
                .call(
                    &what,
                    api.patch(name, &patch_params(), &Patch::Json::<()>(patch)),
                )
                .await
            {
                Ok(patched) => {
                    return Ok(Undone::Sent {
                        revision,
                        sent_at,
                        patched: Box::new(patched),
                    });
                }
                Err(Error::Conflict(cause)) => {
                    if attempt >= PATCH_ATTEMPTS {
                        return Err(Error::Conflict(format!(
                            "{what} kept changing while Gantry rolled it back ({attempt} conflicts, the last: {cause}); try again"
                        )));
                    }
                    say(
                        progress,
                        format!("{what} changed while Gantry rolled it back; reading it again"),
                    )
                    .await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Watches the Deployment, its ReplicaSets and its pods until the rollout of `patched`'s
    /// generation completes, fails, or `deadline` passes.
    async fn watch_rollout(
        &self,
        patched: &Deployment,
        thresholds: &Thresholds,
        deadline: Instant,
        progress: &mpsc::Sender<String>,
        cancel: &CancellationToken,
        prefix: &str,
    ) -> Result<Watched> {
        let ns = patched.namespace().unwrap_or_default();
        let name = patched.name_any();
        let what = format!("deployment {ns}/{name}");
        let generation = patched.metadata.generation.unwrap_or(0);
        let selector = selector(patched)?;
        let label_config = watcher::Config::default().labels_from(&selector);

        let mut deployments = Watching::new(watch(
            Api::<Deployment>::namespaced(self.client.clone(), &ns),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        ));
        let mut replica_sets = Watching::new(watch(
            Api::<ReplicaSet>::namespaced(self.client.clone(), &ns),
            label_config.clone(),
        ));
        let mut pods = Watching::new(watch(
            Api::<Pod>::namespaced(self.client.clone(), &ns),
            label_config,
        ));

        let deadline = tokio::time::Instant::from_std(deadline);
        let mut recheck: Option<tokio::time::Instant> = None;
        let mut last_line = String::new();
        // Since when the watches have failed to reach the server, if they do.
        let mut outage: Option<Instant> = None;
        loop {
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(Watched::ended(End::Cancelled, None)),
                () = tokio::time::sleep_until(deadline) => {
                    let last = if last_line.is_empty() { "no status yet".to_owned() } else { last_line };
                    return Ok(Watched { end: End::TimedOut { at: Instant::now(), last }, revision: None });
                }
                event = deployments.next() => event.map(|()| true),
                event = replica_sets.next() => event.map(|()| true),
                event = pods.next() => event.map(|()| true),
                () = sleep_until_some(recheck) => {
                    recheck = None;
                    Ok(false)
                }
            };
            match event {
                Ok(true) => outage = None,
                Ok(false) => {}
                Err(err) => {
                    let err = self.watch_error(err, &what);
                    if !matches!(err, Error::Unreachable { .. }) {
                        return Err(err);
                    }
                    let since = *outage.get_or_insert_with(Instant::now);
                    if since.elapsed() >= WATCH_OUTAGE_LIMIT {
                        return Err(err);
                    }
                    continue;
                }
            }
            let Some(current) = deployments.store.objects.values().next() else {
                if deployments.store.listed {
                    return Err(Error::NotFound { what });
                }
                continue;
            };
            // The watch may hold an older copy than the patch's answer: until it shows our
            // generation, its status is not about our change.
            let mut seen = current.clone();
            let spec_is_ours = seen.metadata.generation.unwrap_or(0) >= generation;
            if !spec_is_ours {
                seen.metadata.generation = Some(generation);
            }
            let status = rollout_status(&seen);
            let line = progress_line(&status);
            if line != last_line {
                say(progress, format!("{prefix}{line}")).await;
                last_line = line;
            }
            let all_replica_sets: Vec<ReplicaSet> =
                replica_sets.store.objects.values().cloned().collect();
            let new = if spec_is_ours {
                new_replica_set(current, &all_replica_sets)
            } else {
                None
            };
            let mut revision = new.and_then(|rs| revision_of(&rs.metadata));
            if spec_is_ours && matches!(status, RolloutStatus::Complete | RolloutStatus::Failed(_))
            {
                // Observed: the controller has written the new revision on the Deployment,
                // while the ReplicaSet's copy may still be on its way.
                revision = revision_of(&current.metadata).or(revision);
            }
            match status {
                RolloutStatus::Complete => return Ok(Watched::ended(End::Complete, revision)),
                RolloutStatus::Failed(cause) => {
                    return Ok(Watched::ended(
                        End::Failed {
                            cause,
                            at: Instant::now(),
                        },
                        revision,
                    ));
                }
                RolloutStatus::Waiting { .. } | RolloutStatus::Progressing { .. } => {}
            }
            let Some(hash) = new.and_then(|rs| rs.labels().get(POD_TEMPLATE_HASH).cloned()) else {
                continue;
            };
            let new_pods: Vec<Pod> = pods
                .store
                .objects
                .values()
                .filter(|pod| pod.labels().get(POD_TEMPLATE_HASH) == Some(&hash))
                .cloned()
                .collect();
            let now = SystemTime::now();
            if let Some(cause) = diagnose(&new_pods, thresholds, now) {
                return Ok(Watched::ended(
                    End::Failed {
                        cause,
                        at: Instant::now(),
                    },
                    revision,
                ));
            }
            recheck = next_recheck(&new_pods, thresholds, now).map(|at| {
                let wait = at.duration_since(now).unwrap_or_default();
                // A little late rather than early: the pure check compares wall-clock times.
                tokio::time::Instant::now() + wait + Duration::from_millis(10)
            });
        }
    }

    /// Runs one request with a time limit and turns its error into ours. `what` names the object
    /// for "not found" and conflicts.
    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.error(err, what)),
            Err(_) => {
                Err(self.unreachable(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))
            }
        }
    }

    fn error(&self, err: kube::Error, what: &str) -> Error {
        match err {
            kube::Error::Api(status) if status.code == 404 => Error::NotFound {
                what: what.to_owned(),
            },
            kube::Error::Api(status) if status.code == 409 => Error::Conflict(format!(
                "{what} was changed by someone else: {}",
                non_empty(&status.message, "conflict")
            )),
            kube::Error::Api(status) => Error::Api(format!(
                "cluster '{}' refused the request for {what}: {} ({} {})",
                self.name,
                non_empty(&status.message, "no message"),
                status.code,
                status.reason
            )),
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                self.unreachable(root_cause(&err))
            }
            kube::Error::Auth(_) => Error::Config(format!(
                "cannot authenticate to cluster '{}': {err}",
                self.name
            )),
            other => Error::Api(format!("cluster '{}', {what}: {other}", self.name)),
        }
    }

    fn watch_error(&self, err: watcher::Error, what: &str) -> Error {
        match err {
            watcher::Error::InitialListFailed(err)
            | watcher::Error::WatchStartFailed(err)
            | watcher::Error::WatchFailed(err) => match err {
                // The watcher lists again after these.
                kube::Error::Api(status)
                    if status.code == 410 || status.code == 429 || status.code >= 500 =>
                {
                    self.unreachable(format!(
                        "{} ({})",
                        non_empty(&status.message, "server error"),
                        status.code
                    ))
                }
                err => self.error(err, what),
            },
            watcher::Error::WatchError(status) if status.code == 410 || status.code >= 500 => {
                self.unreachable(format!("watch of {what} failed: {}", status.message))
            }
            other => Error::Api(format!("cluster '{}', watching {what}: {other}", self.name)),
        }
    }

    fn unreachable(&self, cause: String) -> Error {
        Error::Unreachable {
            cluster: self.name.clone(),
            url: self.url.clone(),
            cause,
        }
    }
}

/// The result of the undo request.
enum Undone {
    AlreadyCurrent {
        revision: i64,
    },
    Sent {
        revision: i64,
        sent_at: Instant,
        patched: Box<Deployment>,
    },
}

/// How a watched rollout ended, and the revision it produced if known.
struct Watched {
    end: End,
    revision: Option<i64>,
}

impl Watched {
    fn ended(end: End, revision: Option<i64>) -> Watched {
        Watched { end, revision }
    }
}

enum End {
    Complete,
    Failed { cause: String, at: Instant },
    TimedOut { at: Instant, last: String },
    Cancelled,
}

/// A watch and the objects it has shown so far.
struct Watching<K> {
    stream: BoxStream<'static, std::result::Result<Event<K>, watcher::Error>>,
    store: Store<K>,
}

impl<K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static> Watching<K> {
    fn new(
        stream: impl futures_util::Stream<Item = std::result::Result<Event<K>, watcher::Error>>
        + Send
        + 'static,
    ) -> Self {
        Watching {
            stream: stream.default_backoff().boxed(),
            store: Store::default(),
        }
    }

    /// The next event, applied to the store. A watcher never ends; if it did, waiting forever is
    /// right: the deadline ends the rollout.
    async fn next(&mut self) -> std::result::Result<(), watcher::Error> {
        match self.stream.next().await {
            Some(Ok(event)) => {
                self.store.apply(event);
                Ok(())
            }
            Some(Err(err)) => Err(err),
            None => std::future::pending().await,
        }
    }
}

/// The objects of one watch by name, replaced whole when the watcher lists again.
struct Store<K> {
    objects: BTreeMap<String, K>,
    relisting: Option<BTreeMap<String, K>>,
    /// The first list is complete: an absent object is really absent.
    listed: bool,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            relisting: None,
            listed: false,
        }
    }
}

impl<K: Resource> Store<K> {
    fn apply(&mut self, event: Event<K>) {
        match event {
            Event::Init => self.relisting = Some(BTreeMap::new()),
            Event::InitApply(object) => {
                if let Some(relisting) = &mut self.relisting {
                    relisting.insert(object.name_any(), object);
                }
            }
            Event::InitDone => {
                if let Some(relisting) = self.relisting.take() {
                    self.objects = relisting;
                }
                self.listed = true;
            }
            Event::Apply(object) => {
                self.objects.insert(object.name_any(), object);
            }
            Event::Delete(object) => {
                self.objects.remove(&object.name_any());
            }
        }
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn say(progress: &mpsc::Sender<String>, line: String) {
    tracing::info!(target: "gantry_kube", "{line}");
    // A caller that stopped listening does not stop the rollout.
    let _ = progress.send(line).await;
}

fn rolled_back_line(revision: i64, now_at: Option<i64>) -> String {
    match now_at {
        Some(now_at) => format!("rolled back to revision {revision} (now revision {now_at})"),
        None => format!("rolled back to revision {revision}"),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn paused(deployment: &Deployment) -> bool {
    deployment.spec.paused == Some(true)
}

fn selector(deployment: &Deployment) -> Result<Selector> {
    let label_selector = deployment.spec.selector.clone();
    Selector::try_from(label_selector).map_err(|err| {
        Error::Api(format!(
            "deployment {} has a selector Gantry cannot use: {err}",
            revisions::describe(deployment)
        ))
    })
}

fn containers(deployment: &Deployment) -> Vec<&k8s_openapi::api::core::v1::Container> {
    deployment
        .spec
        .template
        .spec
        .as_ref()
        .map(|spec| spec.containers.iter().collect())
        .unwrap_or_default()
}

fn pick_container(deployment: &Deployment, requested: Option<&str>, what: &str) -> Result<String> {
    let names: Vec<&str> = containers(deployment)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    match (requested, names.as_slice()) {
        (Some(name), _) if names.contains(&name) => Ok(name.to_owned()),
        (Some(name), _) => Err(Error::Config(format!(
            "{what} has no container '{name}' (containers: {})",
            names.join(", ")
        ))),
        (None, [only]) => Ok((*only).to_owned()),
        (None, []) => Err(Error::Config(format!("{what} has no containers"))),
        (None, several) => Err(Error::Config(format!(
            "{what} has {} containers ({}); name the one to update",
            several.len(),
            several.join(", ")
        ))),
    }
}

fn container_image(deployment: &Deployment, container: &str) -> Option<String> {
    containers(deployment)
        .into_iter()
        .find(|c| c.name == container)
        .and_then(|c| c.image.clone())
}

fn template_images(deployment: &Deployment) -> String {
    let images: Vec<String> = containers(deployment)
        .into_iter()
        .filter_map(|c| c.image.clone())
        .collect();
    images.join(", ")
}

fn non_empty<'a>(text: &'a str, otherwise: &'a str) -> &'a str {
    if text.is_empty() { otherwise } else { text }
}

/// The innermost error's words, e.g. "connection refused" rather than "ServiceError: client
/// error (Connect)".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    if let Some(io) = innermost.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut => {
                return format!("no answer within {}s", CONNECT_TIMEOUT.as_secs());
            }
            _ => {}
        }
    }
    let text = innermost.to_string();
    let text = match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => err.to_string(),
    }
}
