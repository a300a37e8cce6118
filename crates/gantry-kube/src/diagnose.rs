//! Why a rollout's new pods fail, named from their status long before the progress deadline.
//!
//! `kubectl rollout status` only reports failure when `progressDeadlineSeconds` (600 s by
//! default) runs out. The kubelet and the scheduler know much sooner: a pod's container statuses
//! and conditions say `ImagePullBackOff`, `CrashLoopBackOff`, `OOMKilled`... within seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// When a new pod's trouble counts as the rollout's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// A container in `CrashLoopBackOff` fails the rollout once it has been restarted this many
    /// times. Default 1: the kubelet says CrashLoopBackOff only after a crash, and waiting for a
    /// second one costs its 10 s back-off, while a bad image must not stay live. Raise it to 2
    /// when a pod may crash once because a dependency is not ready yet.
    pub crash_loop_restarts: i32,
    /// How long a container may stay in `ErrImagePull`/`ImagePullBackOff`, counted from the
    /// pod's start. Default 0: the kubelet has already retried the pull before it says so.
    /// `InvalidImageName` never recovers and fails at once whatever this says.
    pub image_pull_grace: Duration,
    /// How long a container may stay in `CreateContainerConfigError` (a missing ConfigMap or
    /// Secret), counted from the pod's start. Default 0; raise it when the ConfigMap is created
    /// by the same deploy, moments later.
    pub config_error_grace: Duration,
    /// How long a pod may stay unschedulable (`PodScheduled=False`, reason `Unschedulable`),
    /// counted from the condition's `lastTransitionTime`. Default 5 s: long enough for the
    /// scheduler's own retries, short enough to revert within seconds; raise it (to a few
    /// minutes) where a cluster autoscaler adds nodes.
    pub unschedulable_grace: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            crash_loop_restarts: 1,
            image_pull_grace: Duration::ZERO,
            config_error_grace: Duration::ZERO,
            unschedulable_grace: Duration::from_secs(5),
        }
    }
}

/// The cause of the rollout's failure, if one of `pods` shows one, e.g. `pod backend-7d9f-x2k
/// OOMKilled (memory limit 128Mi), restarted 3 times`. `pods` are the new ReplicaSet's; pods being
/// deleted are ignored. An OOM kill fails the rollout at once (whatever `crash_loop_restarts`
/// says): the image does not fit its limit. When several pods fail, the most telling cause wins
/// (OOMKilled, then CrashLoopBackOff, image pull, config error, unschedulable), then the first
/// pod by name.
pub fn diagnose(pods: &[Pod], thresholds: &Thresholds, now: SystemTime) -> Option<String> {
    findings(pods, thresholds)
        .into_iter()
        .filter(|finding| finding.fired(now))
        .min_by(|a, b| (a.severity, &a.pod).cmp(&(b.severity, &b.pod)))
        .map(|finding| finding.describe(now))
}

/// When [`diagnose`] could next change its answer without any pod changing: the end of the
/// earliest grace period still running.
pub fn next_recheck(pods: &[Pod], thresholds: &Thresholds, now: SystemTime) -> Option<SystemTime> {
    findings(pods, thresholds)
        .into_iter()
        .filter(|finding| !finding.fired(now))
        .filter_map(|finding| finding.since.map(|since| since + finding.grace))
        .min()
}

/// A sign of trouble in one pod, and from when it counts.
struct Finding {
    severity: u8,
    pod: String,
    /// The cause; `{elapsed}` is replaced with how long the trouble has lasted.
    cause: String,
    since: Option<SystemTime>,
    grace: Duration,
}

impl Finding {
    fn fired(&self, now: SystemTime) -> bool {
        self.grace.is_zero() || self.since.is_some_and(|since| now >= since + self.grace)
    }

    fn describe(&self, now: SystemTime) -> String {
        let elapsed = self
            .since
            .and_then(|since| now.duration_since(since).ok())
            .unwrap_or_default();
        self.cause
            .replace("{elapsed}", &format!("{}s", elapsed.as_secs()))
    }
}

const OOM: u8 = 0;
const CRASH_LOOP: u8 = 1;
const IMAGE_PULL: u8 = 2;
const CONFIG_ERROR: u8 = 3;
const UNSCHEDULABLE: u8 = 4;

fn findings(pods: &[Pod], thresholds: &Thresholds) -> Vec<Finding> {
    let mut found = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let started = pod
            .status
            .as_ref()
            .and_then(|status| status.start_time.as_ref())
            .or(pod.metadata.creation_timestamp.as_ref())
            .map(system_time);
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let single = spec.containers.len() == 1;
        let groups = [
            (
                status.init_container_statuses.unwrap_or_default(),
                spec.init_containers.unwrap_or_default(),
                true,
            ),
            (
                status.container_statuses.unwrap_or_default(),
                spec.containers,
                false,
            ),
        ];
        for (statuses, containers, init) in &groups {
            for container_status in statuses {
                let container = containers.iter().find(|c| c.name == container_status.name);
                let who = match (init, single) {
                    (true, _) => format!("pod {name} init container {}", container_status.name),
                    (false, true) => format!("pod {name}"),
                    (false, false) => format!("pod {name} container {}", container_status.name),
                };
                if let Some((severity, cause, grace)) =
                    container_trouble(&who, container_status, container, thresholds)
                {
                    found.push(Finding {
                        severity,
                        pod: name.clone(),
                        cause,
                        since: started,
                        grace,
                    });
                }
            }
        }
        for condition in status.conditions.iter().flatten() {
            if condition.type_ == "PodScheduled"
                && condition.status == "False"
                && condition.reason.as_deref() == Some("Unschedulable")
            {
                let since = condition
                    .last_transition_time
                    .as_ref()
                    .map(system_time)
                    .or(started);
                let mut cause = format!("pod {name} unschedulable for {{elapsed}}");
                push_message(&mut cause, condition.message.as_deref());
                found.push(Finding {
                    severity: UNSCHEDULABLE,
                    pod: name.clone(),
                    cause,
                    since,
                    grace: thresholds.unschedulable_grace,
                });
            }
        }
    }
    found
}

/// The worst trouble of one container: severity, cause and grace period.
fn container_trouble(
    who: &str,
    status: &ContainerStatus,
    container: Option<&Container>,
    thresholds: &Thresholds,
) -> Option<(u8, String, Duration)> {
    let terminated = |state: &Option<k8s_openapi::api::core::v1::ContainerState>| {
        state.as_ref().and_then(|state| state.terminated.clone())
    };
    let current = terminated(&status.state);
    let last = terminated(&status.last_state);
    let oom = [&current, &last]
        .into_iter()
        .flatten()
        .any(|terminated| terminated.reason.as_deref() == Some("OOMKilled"));
    if oom {
        let limit = container
            .and_then(|container| container.resources.as_ref())
            .and_then(|resources| resources.limits.as_ref())
            .and_then(|limits| limits.get("memory"))
            .map_or_else(
                || "no memory limit".to_owned(),
                |limit| format!("memory limit {}", limit.0),
            );
        let cause = format!(
            "{who} OOMKilled ({limit}){}",
            restarted(status.restart_count)
        );
        return Some((OOM, cause, Duration::ZERO));
    }
    let waiting = status
        .state
        .as_ref()
        .and_then(|state| state.waiting.as_ref())?;
    let reason = waiting.reason.as_deref().unwrap_or_default();
    let message = waiting.message.as_deref();
    match reason {
        "CrashLoopBackOff" if status.restart_count >= thresholds.crash_loop_restarts => {
            let mut cause = format!("{who} CrashLoopBackOff");
            if let Some(last) = &last {
                cause.push_str(&format!(" (exit code {}", last.exit_code));
                match last.reason.as_deref() {
                    Some(reason) if reason != "Error" => cause.push_str(&format!(", {reason})")),
                    _ => cause.push(')'),
                }
            }
            cause.push_str(&restarted(status.restart_count));
            push_message(
                &mut cause,
                last.as_ref().and_then(|last| last.message.as_deref()),
            );
            Some((CRASH_LOOP, cause, Duration::ZERO))
        }
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            let image = container.map_or(status.image.as_str(), |container| {
                container.image.as_deref().unwrap_or_default()
            });
            let mut cause = format!("{who} cannot pull image {image} ({reason})");
            push_message(&mut cause, message);
            let grace = match reason {
                "ErrImagePull" | "ImagePullBackOff" => thresholds.image_pull_grace,
                _ => Duration::ZERO,
            };
            Some((IMAGE_PULL, cause, grace))
        }
        "CreateContainerConfigError" => {
            let mut cause = format!("{who} CreateContainerConfigError");
            push_message(&mut cause, message);
            Some((CONFIG_ERROR, cause, thresholds.config_error_grace))
        }
        _ => None,
    }
}

fn restarted(count: i32) -> String {
    match count {
        0 => String::new(),
        1 => ", restarted 1 time".to_owned(),
        n => format!(", restarted {n} times"),
    }
}

/// Appends `: message`, cut to its first line and 200 characters: the kubelet's messages can be
/// long, and the cause must fit on one line.
fn push_message(cause: &mut String, message: Option<&str>) {
    let Some(line) =
        message.and_then(|message| message.lines().map(str::trim).find(|line| !line.is_empty()))
    else {
        return;
    };
    cause.push_str(": ");
    if line.chars().count() > 200 {
        cause.extend(line.chars().take(199));
        cause.push('…');
    } else {
        cause.push_str(line);
    }
}

pub(crate) fn system_time(time: &Time) -> SystemTime {
    let millis = time.0.as_millisecond();
    match u64::try_from(millis) {
        Ok(millis) => UNIX_EPOCH + Duration::from_millis(millis),
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    /// 2025-01-01T00:01:00Z, one minute after the fixtures' pods started.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_735_689_660)
    }

    fn pod(json: serde_json::Value) -> Pod {
        match serde_json::from_value(json) {
            Ok(pod) => pod,
            Err(err) => panic!("bad fixture: {err}"),
        }
    }

    /// A pod of the new ReplicaSet with one container `app` (memory limit 128Mi) and the given
    /// container status fields.
    fn app_pod(name: &str, container_status: serde_json::Value) -> Pod {
        let mut status = serde_json::json!({"name": "app", "image": "registry.local/backend:v2", "imageID": "", "ready": false, "restartCount": 0});
        if let (Some(status), Some(extra)) = (status.as_object_mut(), container_status.as_object())
        {
            status.extend(extra.clone());
        }
        pod(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": "2025-01-01T00:00:00Z",
                         "labels": {"app": "backend", "pod-template-hash": "7d9f"}},
            "spec": {"containers": [{"name": "app", "image": "registry.local/backend:v2",
                     "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}}}]},
            "status": {"phase": "Running", "startTime": "2025-01-01T00:00:00Z", "containerStatuses": [status]}
        }))
    }

    fn check(pods: &[Pod], thresholds: &Thresholds, expected: Expect) {
        let cause = diagnose(pods, thresholds, now());
        let recheck = next_recheck(pods, thresholds, now())
            .and_then(|at| at.duration_since(now()).ok())
            .map(|wait| format!("recheck in {}s", wait.as_secs()));
        expected.assert_eq(&format!(
            "{}\n{}",
            cause.as_deref().unwrap_or("healthy"),
            recheck.as_deref().unwrap_or("no recheck")
        ));
    }

    fn defaults() -> Thresholds {
        Thresholds::default()
    }

    #[test]
    fn healthy_and_starting_pods() {
        check(
            &[],
            &defaults(),
            expect![[r#"
            healthy
            no recheck"#]],
        );
        let running = app_pod(
            "backend-7d9f-a",
            serde_json::json!({"ready": true, "state": {"running": {}}}),
        );
        let creating = app_pod(
            "backend-7d9f-b",
            serde_json::json!({"state": {"waiting": {"reason": "ContainerCreating"}}}),
        );
        check(
            &[running, creating],
            &defaults(),
            expect![[r#"
            healthy
            no recheck"#]],
        );
    }

    #[test]
    fn oom_killed_in_last_state() {
        let p = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
            }),
        );
        check(
            &[p],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k OOMKilled (memory limit 128Mi), restarted 3 times
            no recheck"#]],
        );
    }

    #[test]
    fn oom_killed_right_now_fails_at_once() {
        let p = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
        );
        check(
            &[p],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k OOMKilled (memory limit 128Mi)
            no recheck"#]],
        );
    }

    #[test]
    fn oom_without_limit() {
        let mut p = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({"restartCount": 1, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
        );
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].resources = None;
        }
        check(
            &[p],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k OOMKilled (no memory limit), restarted 1 time
            no recheck"#]],
        );
    }

    #[test]
    fn crash_loop_waits_for_the_restart_threshold() {
        let once = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
            }),
        );
        let patient = Thresholds {
            crash_loop_restarts: 2,
            ..defaults()
        };
        check(
            std::slice::from_ref(&once),
            &patient,
            expect![[r#"
            healthy
            no recheck"#]],
        );
        check(
            &[once],
            &defaults(),
            expect![[r#"
                pod backend-7d9f-x2k CrashLoopBackOff (exit code 1), restarted 1 time
                no recheck"#]],
        );
        let twice = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container=app"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "panic: DATABASE_URL is not set\ngoroutine 1 [running]:"}}
            }),
        );
        check(
            &[twice],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k CrashLoopBackOff (exit code 1), restarted 2 times: panic: DATABASE_URL is not set
            no recheck"#]],
        );
    }

    #[test]
    fn crash_loop_of_a_container_that_exits_zero() {
        let p = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }),
        );
        check(
            &[p],
            &Thresholds {
                crash_loop_restarts: 1,
                ..defaults()
            },
            expect![[r#"
            pod backend-7d9f-x2k CrashLoopBackOff (exit code 0, Completed), restarted 4 times
            no recheck"#]],
        );
    }

    #[test]
    fn image_pull() {
        let pulling = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({"state": {"waiting": {"reason": "ErrImagePull",
                "message": "rpc error: code = NotFound desc = failed to pull and unpack image \"registry.local/backend:v2\": not found"}}}),
        );
        check(
            std::slice::from_ref(&pulling),
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k cannot pull image registry.local/backend:v2 (ErrImagePull): rpc error: code = NotFound desc = failed to pull and unpack image "registry.local/backend:v2": not found
            no recheck"#]],
        );
        // With a grace period (counted from the pod's start, a minute ago) it waits.
        let patient = Thresholds {
            image_pull_grace: Duration::from_secs(90),
            ..defaults()
        };
        check(
            &[pulling],
            &patient,
            expect![[r#"
            healthy
            recheck in 30s"#]],
        );
        let invalid = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({"state": {"waiting": {"reason": "InvalidImageName",
                "message": "Failed to apply default image tag \"Backend:V2\": couldn't parse image name"}}}),
        );
        check(
            &[invalid],
            &patient,
            expect![[r#"
            pod backend-7d9f-x2k cannot pull image registry.local/backend:v2 (InvalidImageName): Failed to apply default image tag "Backend:V2": couldn't parse image name
            no recheck"#]],
        );
    }

    #[test]
    fn config_error() {
        let p = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({"state": {"waiting": {"reason": "CreateContainerConfigError",
                "message": "secret \"backend-db\" not found"}}}),
        );
        check(
            &[p],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k CreateContainerConfigError: secret "backend-db" not found
            no recheck"#]],
        );
    }

    fn unschedulable(since: &str) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "backend-7d9f-x2k", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "app", "image": "registry.local/backend:v2"}]},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "lastTransitionTime": since,
                "message": "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
            }]}
        }))
    }

    #[test]
    fn unschedulable_after_its_grace() {
        check(
            &[unschedulable("2025-01-01T00:00:58Z")],
            &defaults(),
            expect![[r#"
                healthy
                recheck in 3s"#]],
        );
        check(
            &[unschedulable("2025-01-01T00:00:15Z")],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k unschedulable for 45s: 0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.
            no recheck"#]],
        );
    }

    #[test]
    fn the_most_telling_cause_wins() {
        let crash = app_pod(
            "backend-7d9f-a",
            serde_json::json!({"restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}),
        );
        let oom = app_pod(
            "backend-7d9f-b",
            serde_json::json!({"restartCount": 1, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
        );
        let crash_too = app_pod(
            "backend-7d9f-0",
            serde_json::json!({"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}),
        );
        check(
            &[unschedulable("2025-01-01T00:00:00Z"), crash.clone(), oom],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-b OOMKilled (memory limit 128Mi), restarted 1 time
            no recheck"#]],
        );
        check(
            &[crash, crash_too],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-0 CrashLoopBackOff (exit code 2), restarted 3 times
            no recheck"#]],
        );
    }

    #[test]
    fn names_the_container_when_there_are_several() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "backend-7d9f-x2k"},
            "spec": {
                "initContainers": [{"name": "migrate", "image": "registry.local/backend:v2"}],
                "containers": [
                    {"name": "app", "image": "registry.local/backend:v2", "resources": {"limits": {"memory": "1Gi"}}},
                    {"name": "proxy", "image": "envoyproxy/envoy:v1.31", "resources": {"limits": {"memory": "64Mi"}}}
                ]
            },
            "status": {
                "initContainerStatuses": [{"name": "migrate", "image": "", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [
                    {"name": "app", "image": "", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "proxy", "image": "", "imageID": "", "ready": false, "restartCount": 2,
                     "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
                ]
            }
        }));
        check(
            &[p],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k container proxy OOMKilled (memory limit 64Mi), restarted 2 times
            no recheck"#]],
        );
    }

    #[test]
    fn init_containers_count() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "backend-7d9f-x2k"},
            "spec": {
                "initContainers": [{"name": "migrate", "image": "registry.local/backend:v2"}],
                "containers": [{"name": "app", "image": "registry.local/backend:v2"}]
            },
            "status": {
                "initContainerStatuses": [{"name": "migrate", "image": "", "imageID": "", "ready": false, "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": "relation \"users\" already exists"}}}],
                "containerStatuses": [{"name": "app", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}]
            }
        }));
        check(
            &[p],
            &defaults(),
            expect![[r#"
            pod backend-7d9f-x2k init container migrate CrashLoopBackOff (exit code 3), restarted 2 times: relation "users" already exists
            no recheck"#]],
        );
    }

    #[test]
    fn terminating_pods_are_ignored() {
        let mut p = app_pod(
            "backend-7d9f-x2k",
            serde_json::json!({"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}),
        );
        p.metadata.deletion_timestamp = p.metadata.creation_timestamp.clone();
        check(
            &[p],
            &defaults(),
            expect![[r#"
            healthy
            no recheck"#]],
        );
    }
}
