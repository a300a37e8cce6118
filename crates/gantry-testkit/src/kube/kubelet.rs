//! A simulated scheduler and kubelet on one node: pods are bound, "pulled" and "started", and
//! become Running and Ready after a delay — or fail the way the container image name asks for:
//!
//! | image contains  | what happens                                                           |
//! |-----------------|------------------------------------------------------------------------|
//! | `crash`         | `CrashLoopBackOff`, last state `Error` (exit code 1), restarts growing |
//! | `oom`           | the same, but `OOMKilled` (exit code 137)                              |
//! | `missing`       | `ErrImagePull`, then `ImagePullBackOff`                                |
//! | `unschedulable` | stays `Pending`: `PodScheduled=False`, reason `Unschedulable`          |
//! | `configerror`   | `CreateContainerConfigError` (a ConfigMap is missing)                  |
//! | `slow`          | Running, but its readiness probe never passes                          |
//!
//! A faulty pod never becomes ready.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::events::{KUBELET, NODE_NAME, Occurrence, Recorder, SCHEDULER, Source};
use super::meta::{ApiError, format_time, name_of, namespace_of, str_at, uid_of};
use super::registry::{self, Subresource};
use super::resource::Resource;
use super::store::Store;

/// How long things take on the simulated node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeTimings {
    pub pod_ready_after: Duration,
    pub restart_every: Duration,
    pub pod_terminate_after: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Crash,
    Oom,
    Missing,
    ConfigError,
    Slow,
}

fn fault_of(image: &str) -> Fault {
    if image.contains("crash") {
        Fault::Crash
    } else if image.contains("oom") {
        Fault::Oom
    } else if image.contains("missing") {
        Fault::Missing
    } else if image.contains("configerror") {
        Fault::ConfigError
    } else if image.contains("slow") {
        Fault::Slow
    } else {
        Fault::None
    }
}

fn unschedulable(pod: &Value) -> bool {
    containers(pod).iter().any(|c| {
        str_at(c, "/image")
            .unwrap_or_default()
            .contains("unschedulable")
    })
}

fn containers(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// What the node remembers about a pod.
struct PodRun {
    /// When the kubelet first saw the pod.
    started: Instant,
    started_wall: DateTime<Utc>,
    ip: String,
    /// How many steps of each container's life have been reported as events.
    reported: HashMap<String, u64>,
    terminating_since: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Node {
    pods: HashMap<String, PodRun>,
    next_ip: u32,
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Node {
    /// One pass of the scheduler and the kubelet over every pod.
    pub fn tick(
        &mut self,
        store: &mut Store,
        recorder: &mut Recorder,
        timings: &NodeTimings,
        now: Instant,
        wall: DateTime<Utc>,
    ) {
        let pods = store.list_owned(Resource::Pod, None);
        let uids: Vec<&str> = pods.iter().map(uid_of).collect();
        self.pods.retain(|uid, _| uids.contains(&uid.as_str()));
        for pod in pods {
            self.tick_pod(store, recorder, timings, pod, now, wall);
        }
    }

    fn tick_pod(
        &mut self,
        store: &mut Store,
        recorder: &mut Recorder,
        timings: &NodeTimings,
        mut pod: Value,
        now: Instant,
        wall: DateTime<Utc>,
    ) {
        let uid = uid_of(&pod).to_owned();
        let namespace = namespace_of(&pod).to_owned();
        let name = name_of(&pod).to_owned();
        let mut emit = |store: &mut Store,
                        pod: &Value,
                        source: Source,
                        warning: bool,
                        reason: &str,
                        message: String,
                        container: Option<&str>| {
            recorder.record(
                store,
                pod,
                Occurrence {
                    source,
                    warning,
                    reason,
                    message,
                    field_path: container.map(|c| format!("spec.containers{{{c}}}")),
                },
                wall,
            );
        };

        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            let Some(run) = self.pods.get_mut(&uid) else {
                store.remove(Resource::Pod, &namespace, &name);
                return;
            };
            let since = *run.terminating_since.get_or_insert_with(|| {
                for container in containers(&pod) {
                    let container = str_at(&container, "/name").unwrap_or_default().to_owned();
                    emit(
                        store,
                        &pod,
                        KUBELET,
                        false,
                        "Killing",
                        format!("Stopping container {container}"),
                        Some(&container),
                    );
                }
                now
            });
            if now.duration_since(since) >= timings.pod_terminate_after {
                store.remove(Resource::Pod, &namespace, &name);
                self.pods.remove(&uid);
            }
            return;
        }

        // The scheduler.
        if unschedulable(&pod) {
            let reported = self.pods.entry(uid.clone()).or_insert_with(|| PodRun {
                started: now,
                started_wall: wall,
                ip: String::new(),
                reported: HashMap::new(),
                terminating_since: None,
            });
            let step = 1 + now.duration_since(reported.started).as_millis()
                / timings.restart_every.as_millis().max(1)
                / 5;
            let seen = reported.reported.entry(String::new()).or_insert(0);
            if (step as u64) > *seen {
                *seen = step as u64;
                emit(
                    store,
                    &pod,
                    SCHEDULER,
                    true,
                    "FailedScheduling",
                    "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are \
                     available: 1 No preemption victims found for incoming pod."
                        .to_owned(),
                    None,
                );
            }
            let mut status = pod.get("status").cloned().unwrap_or(json!({}));
            let condition = json!({
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": null,
                "lastTransitionTime": pod_condition_time(&pod, "PodScheduled", "False", wall),
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 \
                            nodes are available: 1 No preemption victims found for incoming pod.",
            });
            status["phase"] = json!("Pending");
            status["conditions"] = json!([condition]);
            if status != pod["status"] {
                pod["status"] = status;
                let _ = registry::update(
                    store,
                    Resource::Pod,
                    &namespace,
                    &name,
                    pod,
                    Subresource::Status,
                    false,
                );
            }
            return;
        }
        if str_at(&pod, "/spec/nodeName")
            .unwrap_or_default()
            .is_empty()
        {
            // A binding: the only write to a pod's spec the API allows.
            pod["spec"]["nodeName"] = json!(NODE_NAME);
            match registry::update(
                store,
                Resource::Pod,
                &namespace,
                &name,
                pod,
                Subresource::Main,
                false,
            ) {
                Ok(bound) => pod = bound,
                Err(_) => return,
            }
            emit(
                store,
                &pod,
                SCHEDULER,
                false,
                "Scheduled",
                format!("Successfully assigned {namespace}/{name} to {NODE_NAME}"),
                None,
            );
        }

        // The kubelet.
        if !self.pods.contains_key(&uid) {
            self.next_ip += 1;
            let ip = format!("10.244.0.{}", self.next_ip % 250 + 2);
            self.pods.insert(
                uid.clone(),
                PodRun {
                    started: now,
                    started_wall: wall,
                    ip,
                    reported: HashMap::new(),
                    terminating_since: None,
                },
            );
        }
        let Some(run) = self.pods.get_mut(&uid) else {
            return;
        };
        let age = now.duration_since(run.started);
        let ready_after = timings.pod_ready_after;
        let every = timings.restart_every.max(Duration::from_millis(1));
        // Step 0: creating; step 1: started (or failed); every `restart_every` another step.
        // A late pass advances one step only, so every state a container goes through is
        // written (and watched) at least once, as a real kubelet reports each.
        let due = if age < ready_after {
            0
        } else {
            1 + ((age - ready_after).as_millis() / every.as_millis()) as u64
        };
        let started_wall = run.started_wall;
        let at = |d: Duration| started_wall + chrono::Duration::from_std(d).unwrap_or_default();
        let started_at = format_time(at(ready_after));

        let mut statuses = Vec::new();
        let mut all_ready = true;
        let mut not_ready = Vec::new();
        let mut pending = false;
        let mut events: Vec<(bool, &'static str, String, String)> = Vec::new();
        for container in containers(&pod) {
            let cname = str_at(&container, "/name").unwrap_or_default().to_owned();
            let image = str_at(&container, "/image").unwrap_or_default().to_owned();
            let fault = fault_of(&image);
            let image_id = format!(
                "{}@sha256:{}",
                image.split(':').next().unwrap_or_default(),
                sha(&image)
            );
            let container_id =
                |attempt: u64| format!("containerd://{}", sha(&format!("{uid}/{cname}/{attempt}")));
            let mut status = json!({
                "name": cname,
                "image": image,
                "imageID": "",
                "ready": false,
                "restartCount": 0,
                "started": false,
                "lastState": {},
            });
            if let Entry::Vacant(pulling) = run.reported.entry(format!("{cname}/pulling")) {
                pulling.insert(0);
                events.push((
                    false,
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                    cname.clone(),
                ));
            }
            let reported = run.reported.entry(cname.clone()).or_insert(0);
            let step = due.min(*reported + 1);
            let new_steps = (*reported + 1)..=step;
            *reported = (*reported).max(step);
            if step == 0 {
                status["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
                pending = true;
            } else {
                let pulled = format!(
                    "Successfully pulled image \"{image}\" in {}ms ({}ms including waiting). \
                     Image size: 1048576 bytes.",
                    ready_after.as_millis(),
                    ready_after.as_millis()
                );
                match fault {
                    Fault::None | Fault::Slow => {
                        status["state"] = json!({"running": {"startedAt": started_at}});
                        status["started"] = json!(true);
                        status["imageID"] = json!(image_id);
                        status["containerID"] = json!(container_id(0));
                        if fault == Fault::None {
                            status["ready"] = json!(true);
                        }
                        for s in new_steps {
                            if s == 1 {
                                events.push((false, "Pulled", pulled.clone(), cname.clone()));
                                events.push((
                                    false,
                                    "Created",
                                    format!("Created container: {cname}"),
                                    cname.clone(),
                                ));
                                events.push((
                                    false,
                                    "Started",
                                    format!("Started container {cname}"),
                                    cname.clone(),
                                ));
                            }
                            if fault == Fault::Slow {
                                events.push((
                                    true,
                                    "Unhealthy",
                                    "Readiness probe failed: HTTP probe failed with statuscode: 503"
                                        .to_owned(),
                                    cname.clone(),
                                ));
                            }
                        }
                    }
                    Fault::Crash | Fault::Oom => {
                        let (reason, code) = if fault == Fault::Oom {
                            ("OOMKilled", 137)
                        } else {
                            ("Error", 1)
                        };
                        let restarts = step;
                        let finished = at(ready_after + every * (restarts as u32 - 1));
                        let backoff = (10u64 << (restarts - 1).min(5)).min(300);
                        status["state"] = json!({"waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": format!(
                                "back-off {}s restarting failed container={cname} pod={name}_{namespace}({uid})",
                                backoff.min(300)
                            ),
                        }});
                        status["lastState"] = json!({"terminated": {
                            "exitCode": code,
                            "reason": reason,
                            "startedAt": format_time(finished),
                            "finishedAt": format_time(finished),
                            "containerID": container_id(restarts - 1),
                        }});
                        status["restartCount"] = json!(restarts);
                        status["imageID"] = json!(image_id);
                        status["containerID"] = json!(container_id(restarts - 1));
                        for s in new_steps {
                            if s == 1 {
                                events.push((false, "Pulled", pulled.clone(), cname.clone()));
                            }
                            events.push((
                                false,
                                "Created",
                                format!("Created container: {cname}"),
                                cname.clone(),
                            ));
                            events.push((
                                false,
                                "Started",
                                format!("Started container {cname}"),
                                cname.clone(),
                            ));
                            events.push((
                                true,
                                "BackOff",
                                format!(
                                    "Back-off restarting failed container {cname} in pod {name}_{namespace}({uid})"
                                ),
                                cname.clone(),
                            ));
                        }
                    }
                    Fault::Missing => {
                        pending = true;
                        let (reason, message) = if step == 1 {
                            (
                                "ErrImagePull",
                                format!(
                                    "rpc error: code = NotFound desc = failed to pull and unpack \
                                     image \"{image}\": failed to resolve reference \"{image}\": \
                                     {image}: not found"
                                ),
                            )
                        } else {
                            (
                                "ImagePullBackOff",
                                format!("Back-off pulling image \"{image}\""),
                            )
                        };
                        status["state"] =
                            json!({"waiting": {"reason": reason, "message": message}});
                        for s in new_steps {
                            if s == 1 {
                                events.push((
                                    true,
                                    "Failed",
                                    format!(
                                        "Failed to pull image \"{image}\": rpc error: code = \
                                         NotFound desc = failed to pull and unpack image \
                                         \"{image}\": failed to resolve reference \"{image}\": \
                                         {image}: not found"
                                    ),
                                    cname.clone(),
                                ));
                                events.push((
                                    true,
                                    "Failed",
                                    "Error: ErrImagePull".to_owned(),
                                    cname.clone(),
                                ));
                            } else {
                                events.push((
                                    false,
                                    "BackOff",
                                    format!("Back-off pulling image \"{image}\""),
                                    cname.clone(),
                                ));
                                events.push((
                                    true,
                                    "Failed",
                                    "Error: ImagePullBackOff".to_owned(),
                                    cname.clone(),
                                ));
                            }
                        }
                    }
                    Fault::ConfigError => {
                        pending = true;
                        let message = format!("configmap \"{cname}-config\" not found");
                        status["state"] = json!({"waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": message,
                        }});
                        for s in new_steps {
                            if s == 1 {
                                events.push((
                                    false,
                                    "Pulled",
                                    format!(
                                        "Container image \"{image}\" already present on machine"
                                    ),
                                    cname.clone(),
                                ));
                            }
                            events.push((
                                true,
                                "Failed",
                                format!("Error: {message}"),
                                cname.clone(),
                            ));
                        }
                    }
                }
            }
            if status["ready"] != true {
                all_ready = false;
                not_ready.push(cname.clone());
            }
            statuses.push(status);
        }

        let ready = if all_ready { "True" } else { "False" };
        let started = due > 0;
        let condition =
            |type_: &str, status: &str, reason: Option<&str>, message: Option<String>| {
                let mut c = json!({
                    "type": type_,
                    "status": status,
                    "lastProbeTime": null,
                    "lastTransitionTime": pod_condition_time(&pod, type_, status, wall),
                });
                if let Some(reason) = reason {
                    c["reason"] = json!(reason);
                }
                if let Some(message) = message {
                    c["message"] = json!(message);
                }
                c
            };
        let unready_message = (!all_ready)
            .then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
        let unready_reason = (!all_ready).then_some("ContainersNotReady");
        let conditions = json!([
            condition(
                "PodReadyToStartContainers",
                if started { "True" } else { "False" },
                None,
                None
            ),
            condition("Initialized", "True", None, None),
            condition("Ready", ready, unready_reason, unready_message.clone()),
            condition("ContainersReady", ready, unready_reason, unready_message),
            condition("PodScheduled", "True", None, None),
        ]);
        let mut status = json!({
            "phase": if pending { "Pending" } else { "Running" },
            "conditions": conditions,
            "hostIP": "10.0.0.10",
            "hostIPs": [{"ip": "10.0.0.10"}],
            "startTime": format_time(started_wall),
            "containerStatuses": statuses,
            "qosClass": pod.pointer("/status/qosClass").cloned().unwrap_or(json!("BestEffort")),
        });
        if started {
            status["podIP"] = json!(run.ip);
            status["podIPs"] = json!([{"ip": run.ip}]);
        }
        let pod = if status != pod["status"] {
            let mut updated = pod.clone();
            updated["status"] = status;
            registry::update(
                store,
                Resource::Pod,
                &namespace,
                &name,
                updated,
                Subresource::Status,
                false,
            )
            .unwrap_or(pod)
        } else {
            pod
        };
        for (warning, reason, message, container) in events {
            emit(
                store,
                &pod,
                KUBELET,
                warning,
                reason,
                message,
                Some(&container),
            );
        }
    }

    /// The log of a container, as `GET pods/{name}/log` returns it.
    pub fn logs(
        &self,
        pod: &Value,
        container: Option<&str>,
        previous: bool,
    ) -> Result<String, ApiError> {
        let name = name_of(pod);
        let all = containers(pod);
        let container = match container {
            Some(c) => c.to_owned(),
            None if all.len() == 1 => str_at(&all[0], "/name").unwrap_or_default().to_owned(),
            None => {
                let names: Vec<&str> = all.iter().filter_map(|c| str_at(c, "/name")).collect();
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                )));
            }
        };
        let Some(spec) = all.iter().find(|c| str_at(c, "/name") == Some(&container)) else {
            return Err(ApiError::bad_request(format!(
                "container {container} is not valid for pod {name}"
            )));
        };
        let image = str_at(spec, "/image").unwrap_or_default();
        let status = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().find(|s| str_at(s, "/name") == Some(&container)));
        let terminated_before =
            status.is_some_and(|s| s.pointer("/lastState/terminated").is_some());
        if previous && !terminated_before {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        let waiting =
            status
                .and_then(|s| str_at(s, "/state/waiting/reason"))
                .or(if status.is_none() {
                    Some("ContainerCreating")
                } else {
                    None
                });
        if let Some(reason) = waiting
            && !terminated_before
        {
            let reason = if reason == "ImagePullBackOff" || reason == "ErrImagePull" {
                "trying and failing to pull image"
            } else {
                reason
            };
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )));
        }
        let mut log = format!("starting {image}\n");
        match fault_of(image) {
            Fault::Crash => log.push_str(
                "connecting to database at db:5432\nError: dial tcp 10.96.0.20:5432: connect: \
                 connection refused\n",
            ),
            Fault::Oom => log.push_str("loading cache into memory\n"),
            Fault::Slow => log.push_str("warming up (this takes a while)\n"),
            _ => log.push_str("listening on :8080\n"),
        }
        Ok(log)
    }
}

/// Keeps a condition's `lastTransitionTime` while its status stays the same.
fn pod_condition_time(pod: &Value, type_: &str, status: &str, now: DateTime<Utc>) -> Value {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .filter(|c| c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| json!(format_time(now)))
}
