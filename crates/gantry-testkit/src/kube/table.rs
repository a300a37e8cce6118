//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for, with the
//! columns and cell formats of `k8s.io/kubernetes/pkg/printers/internalversion`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::meta::{i64_at, name_of, parse_time, since, str_at};
use super::resource::Resource;
use super::selector::LabelSelector;

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn column(name: &str, type_: &str, priority: i64, description: &str) -> Value {
    let mut c = json!({
        "name": name,
        "type": type_,
        "format": "",
        "description": description,
        "priority": priority,
    });
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

fn columns(resource: Resource) -> Vec<Value> {
    let name = column(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = column(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match resource {
        Resource::Deployment => vec![
            name,
            column("Ready", "string", 0, "Number of the pod with ready state"),
            column(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
            ),
            column(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age,
            column(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            column(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            column("Selector", "string", 1, "Label selector for pods."),
        ],
        Resource::ReplicaSet => vec![
            name,
            column(
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired replicas.",
            ),
            column(
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            column(
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            age,
            column(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            column(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            column(
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        Resource::Pod => vec![
            name,
            column(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            column(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            column(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age,
            column(
                "IP",
                "string",
                1,
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            column(
                "Node",
                "string",
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
            ),
            column(
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            column(
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        Resource::Event => vec![
            column(
                "Last Seen",
                "string",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            column(
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            column(
                "Reason",
                "string",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            column(
                "Object",
                "string",
                0,
                "The object that this event is about.",
            ),
            column(
                "Subobject",
                "string",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            column("Source", "string", 1, "The component reporting this event."),
            column(
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            column(
                "First Seen",
                "string",
                1,
                "The time at which the event was first recorded.",
            ),
            column(
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
            ),
            column(
                "Name",
                "string",
                1,
                "Name must be unique within a namespace.",
            ),
        ],
        Resource::Namespace => vec![
            name,
            column("Status", "string", 0, "The status of the namespace"),
            age,
        ],
    }
}

fn template_columns(object: &Value) -> (String, String) {
    let containers = object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let field = |f: &str| {
        containers
            .iter()
            .filter_map(|c| c.get(f).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(",")
    };
    (field("name"), field("image"))
}

fn selector_column(object: &Value) -> String {
    object
        .pointer("/spec/selector")
        .and_then(LabelSelector::from_object)
        .map(|s| s.to_query())
        .unwrap_or_default()
}

fn cells(resource: Resource, object: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = name_of(object);
    let age = since(str_at(object, "/metadata/creationTimestamp"), now);
    let count = |p: &str| i64_at(object, p).unwrap_or(0);
    match resource {
        Resource::Deployment => {
            let (containers, images) = template_columns(object);
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    count("/status/readyReplicas"),
                    i64_at(object, "/spec/replicas").unwrap_or(1)
                )),
                json!(count("/status/updatedReplicas")),
                json!(count("/status/availableReplicas")),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector_column(object)),
            ]
        }
        Resource::ReplicaSet => {
            let (containers, images) = template_columns(object);
            vec![
                json!(name),
                json!(count("/spec/replicas")),
                json!(count("/status/replicas")),
                json!(count("/status/readyReplicas")),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector_column(object)),
            ]
        }
        Resource::Pod => pod_cells(object, &age, now),
        Resource::Event => {
            let first = since(str_at(object, "/firstTimestamp"), now);
            let last = match str_at(object, "/lastTimestamp") {
                Some(t) => since(Some(t), now),
                None => first.clone(),
            };
            let kind = str_at(object, "/involvedObject/kind")
                .unwrap_or_default()
                .to_lowercase();
            let target = match str_at(object, "/involvedObject/name") {
                Some(n) if !n.is_empty() => format!("{kind}/{n}"),
                _ => kind,
            };
            let mut source = str_at(object, "/source/component")
                .unwrap_or_default()
                .to_owned();
            if let Some(host) = str_at(object, "/source/host") {
                source = format!("{source}, {host}");
            }
            vec![
                json!(last),
                json!(str_at(object, "/type").unwrap_or_default()),
                json!(str_at(object, "/reason").unwrap_or_default()),
                json!(target),
                json!(str_at(object, "/involvedObject/fieldPath").unwrap_or_default()),
                json!(source),
                json!(str_at(object, "/message").unwrap_or_default().trim()),
                json!(first),
                json!(i64_at(object, "/count").unwrap_or(1).max(1)),
                json!(name),
            ]
        }
        Resource::Namespace => vec![
            json!(name),
            json!(str_at(object, "/status/phase").unwrap_or_default()),
            json!(age),
        ],
    }
}

/// `printPod`: the READY, STATUS and RESTARTS columns as `kubectl get pods` shows them.
fn pod_cells(pod: &Value, age: &str, now: DateTime<Utc>) -> Vec<Value> {
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut reason = str_at(pod, "/status/reason")
        .or_else(|| str_at(pod, "/status/phase"))
        .unwrap_or_default()
        .to_owned();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut has_running = false;
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for status in statuses.iter().rev() {
        restarts += i64_at(status, "/restartCount").unwrap_or(0);
        if let Some(finished) =
            str_at(status, "/lastState/terminated/finishedAt").and_then(parse_time)
            && last_restart.is_none_or(|t| t < finished)
        {
            last_restart = Some(finished);
        }
        if let Some(waiting) = str_at(status, "/state/waiting/reason").filter(|r| !r.is_empty()) {
            reason = waiting.to_owned();
        } else if let Some(terminated) =
            str_at(status, "/state/terminated/reason").filter(|r| !r.is_empty())
        {
            reason = terminated.to_owned();
        } else if status.pointer("/state/terminated").is_some() {
            reason = format!(
                "ExitCode:{}",
                i64_at(status, "/state/terminated/exitCode").unwrap_or(0)
            );
        } else if status["ready"] == true && status.pointer("/state/running").is_some() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".to_owned();
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some()
        && !matches!(
            str_at(pod, "/status/phase"),
            Some("Succeeded") | Some("Failed")
        )
    {
        reason = "Terminating".to_owned();
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            super::meta::human_duration((now - t).num_seconds())
        ),
        _ => restarts.to_string(),
    };
    let or_none = |v: Option<&str>| v.filter(|v| !v.is_empty()).unwrap_or("<none>").to_owned();
    vec![
        json!(name_of(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age),
        json!(or_none(str_at(pod, "/status/podIP"))),
        json!(or_none(str_at(pod, "/spec/nodeName"))),
        json!(or_none(str_at(pod, "/status/nominatedNodeName"))),
        json!("<none>"),
    ]
}

fn row_object(object: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => object.clone(),
        IncludeObject::Metadata => partial_metadata(object),
    }
}

/// A Table of `objects`.
pub(crate) fn table(
    resource: Resource,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    with_columns: bool,
    now: DateTime<Utc>,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({"cells": cells(resource, object, now)});
            let object = row_object(object, include);
            if !object.is_null() {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": if with_columns { columns(resource) } else { Vec::new() },
        "rows": rows,
    })
}

/// `PartialObjectMetadata` of an object (`as=PartialObjectMetadata`).
pub(crate) fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_in_crash_loop_show_the_reason_and_restarts() {
        let now = Utc::now();
        let finished = super::super::meta::format_time(now - chrono::Duration::seconds(5));
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": finished},
            "spec": {"containers": [{"name": "web"}], "nodeName": "n"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [{
                "name": "web", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": finished}},
            }]},
        });
        let cells = cells(Resource::Pod, &pod, now);
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3 (5s ago)");
        assert_eq!(cells[5], "10.0.0.1");
    }
}
