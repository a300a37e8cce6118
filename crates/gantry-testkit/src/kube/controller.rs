//! The deployment controller, the ReplicaSet controller and the garbage collector, following
//! `k8s.io/kubernetes/pkg/controller/{deployment,replicaset,garbagecollector}`: the same
//! decisions in the same order, over JSON objects and a synchronous store.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::events::{DEPLOYMENT_CONTROLLER, Occurrence, REPLICASET_CONTROLLER, Recorder, Source};
use super::meta::{
    annotation, canonical_json, format_time, i64_at, name_of, namespace_of, normalized, parse_time,
    remove_path, set_annotation, set_path, str_at, uid_of,
};
use super::registry::{self, DeleteOptions, Propagation, Subresource};
use super::resource::Resource;
use super::selector::LabelSelector;
use super::store::Store;

pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations of a Deployment that are not copied to its ReplicaSets (and that `kubectl
/// rollout undo` keeps from the Deployment).
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Everything the controllers write through, with the time of this pass.
pub(crate) struct Ctx<'a> {
    pub store: &'a mut Store,
    pub recorder: &'a mut Recorder,
    pub now: DateTime<Utc>,
}

impl Ctx<'_> {
    fn event(&mut self, involved: &Value, source: Source, reason: &str, message: String) {
        self.recorder.record(
            self.store,
            involved,
            Occurrence {
                source,
                warning: false,
                reason,
                message,
                field_path: None,
            },
            self.now,
        );
    }

    /// Writes `object` (which carries the resource version it was read at) and returns what was
    /// stored; on failure, the unchanged stored object.
    fn write(&mut self, resource: Resource, object: Value, subresource: Subresource) -> Value {
        let (ns, name) = (
            namespace_of(&object).to_owned(),
            name_of(&object).to_owned(),
        );
        match registry::update(
            self.store,
            resource,
            &ns,
            &name,
            object.clone(),
            subresource,
            false,
        ) {
            Ok(stored) => stored,
            Err(_) => self
                .store
                .get(resource, &ns, &name)
                .cloned()
                .unwrap_or(object),
        }
    }
}

/// Resolves an `IntOrString` against `total`, as `intstr.GetScaledValueFromIntOrPercent`:
/// `None` for a malformed value.
pub(crate) fn int_or_percent(value: Option<&Value>, total: i64, round_up: bool) -> Option<i64> {
    match value {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => {
            let percent: i64 = s.strip_suffix('%')?.parse().ok()?;
            let scaled = percent * total;
            Some(if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            })
        }
        Some(_) => None,
    }
}

fn replicas(d: &Value) -> i64 {
    i64_at(d, "/spec/replicas").unwrap_or(1)
}

fn spec_replicas(rs: &Value) -> i64 {
    i64_at(rs, "/spec/replicas").unwrap_or(0)
}

fn status_count(object: &Value, field: &str) -> i64 {
    object
        .get("status")
        .and_then(|s| s.get(field))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn is_rolling_update(d: &Value) -> bool {
    str_at(d, "/spec/strategy/type").unwrap_or("RollingUpdate") == "RollingUpdate"
}

/// `(maxSurge, maxUnavailable)` for the deployment's replica count.
fn resolve_fenceposts(d: &Value) -> (i64, i64) {
    let desired = replicas(d);
    let surge = int_or_percent(
        d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        desired,
        true,
    )
    .unwrap_or(0);
    let unavailable = int_or_percent(
        d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        desired,
        false,
    )
    .unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn max_surge(d: &Value) -> i64 {
    if is_rolling_update(d) {
        resolve_fenceposts(d).0
    } else {
        0
    }
}

fn max_unavailable(d: &Value) -> i64 {
    if !is_rolling_update(d) || replicas(d) == 0 {
        return 0;
    }
    resolve_fenceposts(d).1.min(replicas(d))
}

fn has_progress_deadline(d: &Value) -> bool {
    i64_at(d, "/spec/progressDeadlineSeconds").is_some_and(|s| s != i64::from(i32::MAX))
}

fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(object: &Value) -> (String, String) {
    (
        str_at(object, "/metadata/creationTimestamp")
            .unwrap_or_default()
            .to_owned(),
        name_of(object).to_owned(),
    )
}

fn controller_uid(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| str_at(r, "/uid"))
}

fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": str_at(owner, "/apiVersion").unwrap_or_default(),
        "kind": str_at(owner, "/kind").unwrap_or_default(),
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn is_terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// `k8s.io/kubernetes/pkg/controller.ComputeHash`: FNV-32a over the template (the real one hashes
/// Go's printed form of the struct; this one its canonical JSON, so names differ from a real
/// cluster's but are just as stable), then `rand.SafeEncodeString` of the decimal number.
pub(crate) fn compute_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(canonical_json(&normalized(template)).as_bytes());
    if let Some(count) = collision_count {
        feed(&(count as u32).to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn template_without_hash(template: Option<&Value>) -> Value {
    let mut template = template.cloned().unwrap_or(Value::Null);
    remove_path(&mut template, &["metadata", "labels", POD_TEMPLATE_HASH]);
    normalized(&template)
}

/// `EqualIgnoreHash`: the templates are equal but for the `pod-template-hash` label.
fn equal_ignore_hash(a: Option<&Value>, b: Option<&Value>) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

fn set_condition(status: &mut Value, condition: Value) {
    let conditions = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let type_ = condition["type"].clone();
    let current = conditions.iter().find(|c| c["type"] == type_);
    let mut condition = condition;
    if let Some(current) = current {
        if current["status"] == condition["status"] && current["reason"] == condition["reason"] {
            return;
        }
        if current["status"] == condition["status"] {
            condition["lastTransitionTime"] = current["lastTransitionTime"].clone();
        }
    }
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != type_)
        .collect();
    conditions.push(condition);
    status["conditions"] = json!(conditions);
}

fn remove_condition(status: &mut Value, type_: &str) {
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        conditions.retain(|c| c["type"] != type_);
    }
}

fn get_condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String, now: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    })
}

/// Runs every controller once. Returns whether anything was written.
pub(crate) fn reconcile(ctx: &mut Ctx<'_>) -> bool {
    let before = ctx.store.rv();
    collect_garbage(ctx);
    for rs in ctx.store.list_owned(Resource::ReplicaSet, None) {
        sync_replica_set(ctx, rs);
    }
    for d in ctx.store.list_owned(Resource::Deployment, None) {
        sync_deployment(ctx, d);
    }
    ctx.store.rv() != before
}

// ---------------------------------------------------------------------------------------------
// The garbage collector.

fn collect_garbage(ctx: &mut Ctx<'_>) {
    let mut live: HashMap<String, bool> = HashMap::new();
    for resource in [Resource::Deployment, Resource::ReplicaSet, Resource::Pod] {
        for object in ctx.store.list(resource, None) {
            let foreground = is_terminating(object)
                && object
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.contains(&json!("foregroundDeletion")));
            live.insert(uid_of(object).to_owned(), foreground);
        }
    }
    let mut has_dependents: HashSet<String> = HashSet::new();
    for resource in [Resource::ReplicaSet, Resource::Pod] {
        for object in ctx.store.list_owned(resource, None) {
            let owners: Vec<String> = object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter()
                        .filter_map(|r| str_at(r, "/uid").map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if owners.is_empty() {
                continue;
            }
            has_dependents.extend(owners.iter().cloned());
            let all_gone = owners.iter().all(|uid| !live.contains_key(uid));
            let owner_in_foreground = owners.iter().any(|uid| live.get(uid) == Some(&true));
            if (all_gone || owner_in_foreground) && !is_terminating(&object) {
                let propagation = if owner_in_foreground {
                    Propagation::Foreground
                } else {
                    Propagation::Background
                };
                let _ = registry::delete(
                    ctx.store,
                    resource,
                    namespace_of(&object),
                    name_of(&object),
                    &DeleteOptions {
                        propagation: Some(propagation),
                        ..DeleteOptions::default()
                    },
                    ctx.now,
                );
            }
        }
    }
    // Owners deleted in the foreground go once their dependents are gone.
    for resource in [Resource::Deployment, Resource::ReplicaSet] {
        for mut object in ctx.store.list_owned(resource, None) {
            if live.get(uid_of(&object)) != Some(&true) || has_dependents.contains(uid_of(&object))
            {
                continue;
            }
            if let Some(finalizers) = object
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                finalizers.retain(|f| f != "foregroundDeletion");
            }
            ctx.write(resource, object, Subresource::Main);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ReplicaSet controller.

fn is_pod_ready(pod: &Value) -> bool {
    get_condition(pod.get("status").unwrap_or(&Value::Null), "Ready")
        .is_some_and(|c| c["status"] == "True")
}

fn is_pod_available(pod: &Value, min_ready_seconds: i64, now: DateTime<Utc>) -> bool {
    let Some(ready) = get_condition(pod.get("status").unwrap_or(&Value::Null), "Ready")
        .filter(|c| c["status"] == "True")
    else {
        return false;
    };
    if min_ready_seconds == 0 {
        return true;
    }
    ready["lastTransitionTime"]
        .as_str()
        .and_then(parse_time)
        .is_some_and(|t| t + chrono::Duration::seconds(min_ready_seconds) < now)
}

fn is_pod_active(pod: &Value) -> bool {
    !is_terminating(pod)
        && !matches!(
            str_at(pod, "/status/phase"),
            Some("Succeeded") | Some("Failed")
        )
}

/// Pods owned by the object with `owner_uid`, in its namespace.
fn owned(store: &Store, resource: Resource, namespace: &str, owner_uid: &str) -> Vec<Value> {
    store
        .list(resource, Some(namespace))
        .filter(|o| controller_uid(o) == Some(owner_uid))
        .cloned()
        .collect()
}

/// The order in which a ReplicaSet deletes surplus pods (`controller.ActivePods`): unscheduled
/// before scheduled, pending before running, not ready before ready, more restarts first,
/// newer first.
fn deletion_rank(pod: &Value) -> impl Ord + use<> {
    let scheduled = str_at(pod, "/spec/nodeName").is_some_and(|n| !n.is_empty());
    let phase = match str_at(pod, "/status/phase") {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts: i64 = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| i64_at(c, "/restartCount")).sum())
        .unwrap_or(0);
    let created = str_at(pod, "/metadata/creationTimestamp")
        .unwrap_or_default()
        .to_owned();
    (
        scheduled,
        phase,
        is_pod_ready(pod),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
    )
}

fn sync_replica_set(ctx: &mut Ctx<'_>, rs: Value) {
    if is_terminating(&rs) {
        return;
    }
    let namespace = namespace_of(&rs).to_owned();
    let uid = uid_of(&rs).to_owned();
    let pods = owned(ctx.store, Resource::Pod, &namespace, &uid);
    let active: Vec<Value> = pods.into_iter().filter(is_pod_active).collect();
    let diff = active.len() as i64 - spec_replicas(&rs);
    if diff < 0 {
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in 0..-diff {
            let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(m) = metadata.as_object_mut() {
                m.remove("creationTimestamp");
                m.insert("generateName".into(), json!(format!("{}-", name_of(&rs))));
                m.insert("namespace".into(), json!(namespace));
                m.insert("ownerReferences".into(), json!([controller_ref(&rs)]));
            }
            let pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": template.get("spec").cloned().unwrap_or(json!({})),
            });
            match registry::create(ctx.store, Resource::Pod, &namespace, pod, false, ctx.now) {
                Ok(pod) => ctx.event(
                    &rs,
                    REPLICASET_CONTROLLER,
                    "SuccessfulCreate",
                    format!("Created pod: {}", name_of(&pod)),
                ),
                Err(error) => {
                    ctx.recorder.record(
                        ctx.store,
                        &rs,
                        Occurrence {
                            source: REPLICASET_CONTROLLER,
                            warning: true,
                            reason: "FailedCreate",
                            message: format!("Error creating: {}", error.message),
                            field_path: None,
                        },
                        ctx.now,
                    );
                    break;
                }
            }
        }
    } else if diff > 0 {
        let mut victims = active.clone();
        victims.sort_by_key(deletion_rank);
        for pod in victims.into_iter().take(diff as usize) {
            if registry::delete(
                ctx.store,
                Resource::Pod,
                &namespace,
                name_of(&pod),
                &DeleteOptions::default(),
                ctx.now,
            )
            .is_ok()
            {
                ctx.event(
                    &rs,
                    REPLICASET_CONTROLLER,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", name_of(&pod)),
                );
            }
        }
    }

    // The status, from the pods as they are now.
    let Some(rs) = ctx
        .store
        .get(Resource::ReplicaSet, &namespace, name_of(&rs))
        .cloned()
    else {
        return;
    };
    let active: Vec<Value> = owned(ctx.store, Resource::Pod, &namespace, &uid)
        .into_iter()
        .filter(is_pod_active)
        .collect();
    let template_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let min_ready = i64_at(&rs, "/spec/minReadySeconds").unwrap_or(0);
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = super::meta::labels_of(p);
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_pod_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| is_pod_available(p, min_ready, ctx.now))
        .count();
    let mut status = json!({"replicas": active.len()});
    for (field, value) in [
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
    ] {
        if value > 0 {
            status[field] = json!(value);
        }
    }
    if let Some(generation) = i64_at(&rs, "/metadata/generation") {
        status["observedGeneration"] = json!(generation);
    }
    if let Some(conditions) = rs.pointer("/status/conditions") {
        status["conditions"] = conditions.clone();
    }
    if normalized(&status) != normalized(rs.get("status").unwrap_or(&Value::Null)) {
        let mut rs = rs;
        rs["status"] = status;
        ctx.write(Resource::ReplicaSet, rs, Subresource::Status);
    }
}

// ---------------------------------------------------------------------------------------------
// The deployment controller.

fn sync_deployment(ctx: &mut Ctx<'_>, mut d: Value) {
    if is_terminating(&d) {
        return;
    }
    let Some(selector) = d
        .pointer("/spec/selector")
        .and_then(LabelSelector::from_object)
    else {
        return;
    };
    if selector.is_empty() {
        return;
    }
    let namespace = namespace_of(&d).to_owned();
    let mut rs_list = owned(ctx.store, Resource::ReplicaSet, &namespace, uid_of(&d));
    // Adopt orphans the selector matches, as the controller's ref manager does.
    for mut orphan in ctx.store.list_owned(Resource::ReplicaSet, Some(&namespace)) {
        if controller_uid(&orphan).is_none()
            && !is_terminating(&orphan)
            && selector.matches_object(&orphan)
        {
            let refs = orphan["metadata"]
                .as_object_mut()
                .map(|m| m.entry("ownerReferences").or_insert_with(|| json!([])));
            if let Some(Value::Array(refs)) = refs {
                refs.push(controller_ref(&d));
            }
            rs_list.push(ctx.write(Resource::ReplicaSet, orphan, Subresource::Main));
        }
    }

    check_paused_conditions(ctx, &mut d);
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        sync(ctx, &mut d, &rs_list);
        return;
    }
    if is_scaling_event(ctx, &mut d, &rs_list) {
        // Re-read: finding the new ReplicaSet may have written to it.
        let rs_list = owned(ctx.store, Resource::ReplicaSet, &namespace, uid_of(&d));
        sync(ctx, &mut d, &rs_list);
        return;
    }
    let rs_list = owned(ctx.store, Resource::ReplicaSet, &namespace, uid_of(&d));
    if is_rolling_update(&d) {
        rollout_rolling(ctx, &mut d, &rs_list);
    } else {
        rollout_recreate(ctx, &mut d, &rs_list);
    }
}

fn write_status(ctx: &mut Ctx<'_>, d: &mut Value) {
    *d = ctx.write(Resource::Deployment, d.clone(), Subresource::Status);
}

fn check_paused_conditions(ctx: &mut Ctx<'_>, d: &mut Value) {
    if !has_progress_deadline(d) {
        return;
    }
    let status = d.get("status").cloned().unwrap_or(json!({}));
    let cond = get_condition(&status, "Progressing");
    let reason = cond.and_then(|c| c["reason"].as_str()).unwrap_or_default();
    if reason == "ProgressDeadlineExceeded" {
        return;
    }
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let paused_cond = reason == "DeploymentPaused";
    let now = format_time(ctx.now);
    let condition = if paused && !paused_cond {
        new_condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            &now,
        )
    } else if !paused && paused_cond {
        new_condition(
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".into(),
            &now,
        )
    } else {
        return;
    };
    let mut status = status;
    set_condition(&mut status, condition);
    d["status"] = status;
    write_status(ctx, d);
}

/// Splits the owned ReplicaSets into the new one (template equal to the deployment's) and the
/// old ones, syncing revision annotations and creating the new one when asked to.
fn new_and_old(
    ctx: &mut Ctx<'_>,
    d: &mut Value,
    rs_list: &[Value],
    create: bool,
) -> (Option<Value>, Vec<Value>) {
    let mut sorted = rs_list.to_vec();
    sorted.sort_by_key(created);
    let template = d.pointer("/spec/template").cloned();
    let existing = sorted
        .iter()
        .find(|rs| equal_ignore_hash(rs.pointer("/spec/template"), template.as_ref()))
        .cloned();
    let old: Vec<Value> = sorted
        .into_iter()
        .filter(|rs| Some(uid_of(rs)) != existing.as_ref().map(uid_of))
        .collect();
    let new = get_new_replica_set(ctx, d, existing, &old, create);
    (new, old)
}

fn copy_annotations_to_replica_set(d: &Value, rs: &mut Value) -> bool {
    let mut changed = false;
    let annotations = d
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, value) in annotations {
        if ANNOTATIONS_TO_SKIP.contains(&key.as_str()) {
            continue;
        }
        if rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(&key))
            != Some(&value)
        {
            set_path(rs, &["metadata", "annotations", &key], value);
            changed = true;
        }
    }
    changed
}

fn set_replicas_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if annotation(rs, key) != Some(value.to_string().as_str()) {
            set_annotation(rs, key, &value.to_string());
            changed = true;
        }
    }
    changed
}

fn replicas_annotations_need_update(rs: &Value, desired: i64, max: i64) -> bool {
    annotation(rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(rs, MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// `SetNewReplicaSetAnnotations`.
fn set_new_replica_set_annotations(
    d: &Value,
    rs: &mut Value,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_annotations_to_replica_set(d, rs);
    let old_revision = annotation(rs, REVISION).map(str::to_owned);
    let old_revision_int = match &old_revision {
        None => 0,
        Some(r) => match r.parse::<i64>() {
            Ok(r) => r,
            Err(_) => return false,
        },
    };
    if old_revision_int < new_revision {
        set_annotation(rs, REVISION, &new_revision.to_string());
        changed = true;
    }
    // A ReplicaSet that already had a revision and gets a newer one is a rollback to it: its
    // earlier revisions are kept for history.
    if let Some(old_revision) = old_revision
        && old_revision_int < new_revision
    {
        let history = annotation(rs, REVISION_HISTORY)
            .unwrap_or_default()
            .to_owned();
        let mut revisions: Vec<&str> = history.split(',').filter(|r| !r.is_empty()).collect();
        if revisions.is_empty() {
            set_annotation(rs, REVISION_HISTORY, &old_revision);
        } else {
            let mut total = history.len() + old_revision.len() + 1;
            let mut start = 0;
            while total > MAX_REVISION_HISTORY_CHARS && start < revisions.len() {
                total -= revisions[start].len() + 1;
                start += 1;
            }
            if total <= MAX_REVISION_HISTORY_CHARS {
                revisions.drain(..start);
                revisions.push(&old_revision);
                let joined = revisions.join(",");
                set_annotation(rs, REVISION_HISTORY, &joined);
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

fn set_deployment_revision(d: &mut Value, revision: &str) -> bool {
    if annotation(d, REVISION) == Some(revision) {
        return false;
    }
    set_annotation(d, REVISION, revision);
    true
}

/// `NewRSNewReplicas`: how many replicas the new ReplicaSet may have now.
fn new_rs_new_replicas(d: &Value, all: &[&Value], new_rs: &Value) -> i64 {
    if !is_rolling_update(d) {
        return replicas(d);
    }
    let current: i64 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return spec_replicas(new_rs);
    }
    let scale_up = (max_total - current).min(replicas(d) - spec_replicas(new_rs));
    spec_replicas(new_rs) + scale_up
}

fn get_new_replica_set(
    ctx: &mut Ctx<'_>,
    d: &mut Value,
    existing: Option<Value>,
    old: &[Value],
    create: bool,
) -> Option<Value> {
    let max_old_revision = old.iter().map(revision).max().unwrap_or(0);
    let new_revision = max_old_revision + 1;
    let now = format_time(ctx.now);
    if let Some(existing) = existing {
        let mut rs = existing.clone();
        let annotations_updated = set_new_replica_set_annotations(d, &mut rs, new_revision, true);
        let min_ready = d.pointer("/spec/minReadySeconds").cloned();
        let min_ready_update = rs.pointer("/spec/minReadySeconds").cloned() != min_ready;
        if annotations_updated || min_ready_update {
            match min_ready {
                Some(m) => rs["spec"]["minReadySeconds"] = m,
                None => {
                    remove_path(&mut rs, &["spec", "minReadySeconds"]);
                }
            }
            return Some(ctx.write(Resource::ReplicaSet, rs, Subresource::Main));
        }
        let rs_revision = annotation(&rs, REVISION).unwrap_or_default().to_owned();
        let mut needs_update = set_deployment_revision(d, &rs_revision);
        let status = d.get("status").cloned().unwrap_or(json!({}));
        if has_progress_deadline(d) && get_condition(&status, "Progressing").is_none() {
            let mut status = status;
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{}\"", name_of(&rs)),
                    &now,
                ),
            );
            d["status"] = status;
            needs_update = true;
        }
        if needs_update {
            write_status(ctx, d);
        }
        return Some(rs);
    }
    if !create {
        return None;
    }

    let collision_count = i64_at(d, "/status/collisionCount");
    let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = compute_hash(&template, collision_count);
    set_path(
        &mut template,
        &["metadata", "labels", POD_TEMPLATE_HASH],
        json!(hash),
    );
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    set_path(
        &mut selector,
        &["matchLabels", POD_TEMPLATE_HASH],
        json!(hash),
    );
    let name = format!("{}-{hash}", name_of(d));
    let mut rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": namespace_of(d),
            "ownerReferences": [controller_ref(d)],
            "labels": template["metadata"]["labels"].clone(),
        },
        "spec": {
            "replicas": 0,
            "selector": selector,
            "template": template,
        },
    });
    if let Some(min_ready) = d.pointer("/spec/minReadySeconds") {
        rs["spec"]["minReadySeconds"] = min_ready.clone();
    }
    let new_count = {
        let all: Vec<&Value> = old.iter().chain(std::iter::once(&rs)).collect();
        new_rs_new_replicas(d, &all, &rs)
    };
    rs["spec"]["replicas"] = json!(new_count);
    set_new_replica_set_annotations(d, &mut rs, new_revision, false);
    let namespace = namespace_of(d).to_owned();
    let (created, already_existed) = match registry::create(
        ctx.store,
        Resource::ReplicaSet,
        &namespace,
        rs,
        false,
        ctx.now,
    ) {
        Ok(created) => (created, false),
        Err(error) if error.reason == "AlreadyExists" => {
            let existing = ctx
                .store
                .get(Resource::ReplicaSet, &namespace, &name)
                .cloned()?;
            if controller_uid(&existing) == Some(uid_of(d))
                && equal_ignore_hash(
                    d.pointer("/spec/template"),
                    existing.pointer("/spec/template"),
                )
            {
                (existing, true)
            } else {
                // A hash collision: the next sync hashes with a higher collision count.
                let count = collision_count.unwrap_or(0) + 1;
                set_path(d, &["status", "collisionCount"], json!(count));
                write_status(ctx, d);
                return None;
            }
        }
        Err(_) => return None,
    };
    if !already_existed && new_count > 0 {
        ctx.event(
            d,
            DEPLOYMENT_CONTROLLER,
            "ScalingReplicaSet",
            format!(
                "Scaled up replica set {} from 0 to {new_count}",
                name_of(&created)
            ),
        );
    }
    let mut needs_update = set_deployment_revision(d, &new_revision.to_string());
    if !already_existed && has_progress_deadline(d) {
        let mut status = d.get("status").cloned().unwrap_or(json!({}));
        set_condition(
            &mut status,
            new_condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{}\"", name_of(&created)),
                &now,
            ),
        );
        d["status"] = status;
        needs_update = true;
    }
    if needs_update {
        write_status(ctx, d);
    }
    Some(created)
}

/// Scales `rs` to `new_scale`, keeping its replica annotations current. Returns whether the
/// size changed, and the stored ReplicaSet.
fn scale_replica_set(ctx: &mut Ctx<'_>, rs: &Value, new_scale: i64, d: &Value) -> (bool, Value) {
    let old_scale = spec_replicas(rs);
    let size_needs_update = old_scale != new_scale;
    let desired = replicas(d);
    let max = desired + max_surge(d);
    if !size_needs_update && !replicas_annotations_need_update(rs, desired, max) {
        return (false, rs.clone());
    }
    let mut copy = rs.clone();
    copy["spec"]["replicas"] = json!(new_scale);
    set_replicas_annotations(&mut copy, desired, max);
    let stored = ctx.write(Resource::ReplicaSet, copy, Subresource::Main);
    if size_needs_update {
        let direction = if old_scale < new_scale { "up" } else { "down" };
        ctx.event(
            d,
            DEPLOYMENT_CONTROLLER,
            "ScalingReplicaSet",
            format!(
                "Scaled {direction} replica set {} from {old_scale} to {new_scale}",
                name_of(rs)
            ),
        );
    }
    (size_needs_update, stored)
}

fn active(rss: &[Value]) -> Vec<Value> {
    rss.iter()
        .filter(|rs| spec_replicas(rs) > 0)
        .cloned()
        .collect()
}

fn is_scaling_event(ctx: &mut Ctx<'_>, d: &mut Value, rs_list: &[Value]) -> bool {
    let (new, old) = new_and_old(ctx, d, rs_list, false);
    let all: Vec<Value> = old.into_iter().chain(new).collect();
    active(&all).iter().any(|rs| {
        annotation(rs, DESIRED_REPLICAS)
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|desired| desired != replicas(d))
    })
}

/// `sync`: scaling and cleanup for paused deployments and scaling events, no rollout.
fn sync(ctx: &mut Ctx<'_>, d: &mut Value, rs_list: &[Value]) {
    let (new, old) = new_and_old(ctx, d, rs_list, false);
    scale(ctx, d, new.as_ref(), &old);
    let namespace = namespace_of(d).to_owned();
    let rs_list = owned(ctx.store, Resource::ReplicaSet, &namespace, uid_of(d));
    let (new, old) = split_fresh(d, &rs_list);
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        cleanup(ctx, d, &old);
    }
    let all: Vec<Value> = old.into_iter().chain(new.clone()).collect();
    let status = calculate_status(d, &all, new.as_ref(), ctx.now);
    if normalized(&status) != normalized(d.get("status").unwrap_or(&Value::Null)) {
        d["status"] = status;
        write_status(ctx, d);
    }
}

/// The new and old ReplicaSets without side effects, from a fresh list.
fn split_fresh(d: &Value, rs_list: &[Value]) -> (Option<Value>, Vec<Value>) {
    let mut sorted = rs_list.to_vec();
    sorted.sort_by_key(created);
    let template = d.pointer("/spec/template");
    let new = sorted
        .iter()
        .find(|rs| equal_ignore_hash(rs.pointer("/spec/template"), template))
        .cloned();
    let old = sorted
        .into_iter()
        .filter(|rs| Some(uid_of(rs)) != new.as_ref().map(uid_of))
        .collect();
    (new, old)
}

fn scale(ctx: &mut Ctx<'_>, d: &Value, new: Option<&Value>, old: &[Value]) {
    let desired = replicas(d);
    // With one active (or no active but some) ReplicaSet, it gets the full count.
    let active_or_latest = {
        let mut old_sorted = old.to_vec();
        old_sorted.sort_by_key(created);
        old_sorted.reverse();
        let all: Vec<Value> = old_sorted.iter().cloned().chain(new.cloned()).collect();
        let actives = active(&all);
        match actives.len() {
            0 => new.cloned().or_else(|| old_sorted.first().cloned()),
            1 => actives.into_iter().next(),
            _ => None,
        }
    };
    if new.is_none() && old.is_empty() {
        return;
    }
    if let Some(rs) = active_or_latest {
        if spec_replicas(&rs) != desired {
            scale_replica_set(ctx, &rs, desired, d);
        }
        return;
    }
    // A saturated new ReplicaSet: the old ones go to zero.
    if let Some(new) = new {
        let saturated = spec_replicas(new) == desired
            && annotation(new, DESIRED_REPLICAS) == Some(desired.to_string().as_str())
            && status_count(new, "availableReplicas") == desired;
        if saturated {
            for rs in active(old) {
                scale_replica_set(ctx, &rs, 0, d);
            }
            return;
        }
    }
    if !is_rolling_update(d) {
        return;
    }
    // Proportional scaling of every active ReplicaSet.
    let mut all = active(&old.iter().cloned().chain(new.cloned()).collect::<Vec<_>>());
    let all_replicas: i64 = all.iter().map(spec_replicas).sum();
    let allowed = if desired > 0 {
        desired + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - all_replicas;
    if to_add > 0 {
        // Larger first; newer first among equals.
        all.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then_with(|| created(b).cmp(&created(a)))
        });
    } else if to_add < 0 {
        // Larger first; older first among equals.
        all.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then_with(|| created(a).cmp(&created(b)))
        });
    }
    let mut added = 0;
    let mut sizes: Vec<i64> = Vec::new();
    for rs in &all {
        if to_add != 0 {
            let proportion = proportion(rs, d, to_add, added);
            sizes.push(spec_replicas(rs) + proportion);
            added += proportion;
        } else {
            sizes.push(spec_replicas(rs));
        }
    }
    for (i, rs) in all.iter().enumerate() {
        if i == 0 && to_add != 0 {
            sizes[0] = (sizes[0] + to_add - added).max(0);
        }
        scale_replica_set(ctx, rs, sizes[i], d);
    }
}

/// `GetReplicaSetProportion`.
fn proportion(rs: &Value, d: &Value, to_add: i64, added: i64) -> i64 {
    if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas(d) == 0 {
        -spec_replicas(rs)
    } else {
        let deployment_replicas = replicas(d) + max_surge(d);
        let annotated = annotation(rs, MAX_REPLICAS)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_else(|| status_count(d, "replicas"));
        if annotated == 0 {
            0
        } else {
            let size = (spec_replicas(rs) * deployment_replicas) as f64 / annotated as f64;
            size.round() as i64 - spec_replicas(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn rollout_rolling(ctx: &mut Ctx<'_>, d: &mut Value, rs_list: &[Value]) {
    let (new, old) = new_and_old(ctx, d, rs_list, true);
    let Some(new) = new else {
        return;
    };
    let all: Vec<Value> = old.iter().cloned().chain([new.clone()]).collect();

    // Scale up, if we can.
    if reconcile_new_replica_set(ctx, d, &all, &new) {
        return sync_rollout_status(ctx, d);
    }
    // Scale down, if we can.
    if reconcile_old_replica_sets(ctx, d, &all, &active(&old), &new) {
        return sync_rollout_status(ctx, d);
    }
    if deployment_complete(d, d.get("status").unwrap_or(&Value::Null)) {
        cleanup(ctx, d, &old);
    }
    sync_rollout_status(ctx, d);
}

fn reconcile_new_replica_set(ctx: &mut Ctx<'_>, d: &Value, all: &[Value], new: &Value) -> bool {
    let desired = replicas(d);
    if spec_replicas(new) == desired {
        return false;
    }
    if spec_replicas(new) > desired {
        return scale_replica_set(ctx, new, desired, d).0;
    }
    let all: Vec<&Value> = all.iter().collect();
    let count = new_rs_new_replicas(d, &all, new);
    scale_replica_set(ctx, new, count, d).0
}

fn reconcile_old_replica_sets(
    ctx: &mut Ctx<'_>,
    d: &Value,
    all: &[Value],
    old: &[Value],
    new: &Value,
) -> bool {
    let old_pods: i64 = old.iter().map(spec_replicas).sum();
    if old_pods == 0 {
        return false;
    }
    let all_pods: i64 = all.iter().map(spec_replicas).sum();
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = spec_replicas(new) - status_count(new, "availableReplicas");
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return false;
    }

    // Unhealthy replicas first: they would otherwise block the rollout.
    let mut old: Vec<Value> = old.to_vec();
    old.sort_by_key(created);
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = spec_replicas(rs) - status_count(rs, "availableReplicas");
        if spec_replicas(rs) == 0 || unhealthy <= 0 {
            continue;
        }
        let count = (max_scaled_down - cleaned).min(unhealthy);
        let target = spec_replicas(rs) - count;
        *rs = scale_replica_set(ctx, rs, target, d).1;
        cleaned += count;
    }

    // Then as many available ones as maxUnavailable allows.
    let all: Vec<Value> = old.iter().cloned().chain([new.clone()]).collect();
    let available: i64 = all
        .iter()
        .map(|rs| status_count(rs, "availableReplicas"))
        .sum();
    let mut scaled = 0;
    if available > min_available {
        let total = available - min_available;
        for rs in &old {
            if scaled >= total {
                break;
            }
            if spec_replicas(rs) == 0 {
                continue;
            }
            let count = spec_replicas(rs).min(total - scaled);
            scale_replica_set(ctx, rs, spec_replicas(rs) - count, d);
            scaled += count;
        }
    }
    cleaned + scaled > 0
}

fn rollout_recreate(ctx: &mut Ctx<'_>, d: &mut Value, rs_list: &[Value]) {
    let (mut new, old) = new_and_old(ctx, d, rs_list, false);
    let mut scaled_down = false;
    for rs in active(&old) {
        scaled_down |= scale_replica_set(ctx, &rs, 0, d).0;
    }
    if scaled_down {
        return sync_rollout_status(ctx, d);
    }
    let namespace = namespace_of(d).to_owned();
    let old_pods_running = old.iter().any(|rs| {
        owned(ctx.store, Resource::Pod, &namespace, uid_of(rs))
            .iter()
            .any(|p| {
                !matches!(
                    str_at(p, "/status/phase"),
                    Some("Succeeded") | Some("Failed")
                )
            })
    });
    if old_pods_running {
        return sync_rollout_status(ctx, d);
    }
    if new.is_none() {
        let rs_list = owned(ctx.store, Resource::ReplicaSet, &namespace, uid_of(d));
        new = new_and_old(ctx, d, &rs_list, true).0;
    }
    if let Some(new) = &new
        && spec_replicas(new) != replicas(d)
    {
        scale_replica_set(ctx, new, replicas(d), d);
    }
    if deployment_complete(d, d.get("status").unwrap_or(&Value::Null)) {
        cleanup(ctx, d, &old);
    }
    sync_rollout_status(ctx, d);
}

/// Deletes the oldest ReplicaSets beyond `revisionHistoryLimit`, if they have no pods.
fn cleanup(ctx: &mut Ctx<'_>, d: &Value, old: &[Value]) {
    let Some(limit) = i64_at(d, "/spec/revisionHistoryLimit") else {
        return;
    };
    let namespace = namespace_of(d).to_owned();
    let mut cleanable: Vec<Value> = old
        .iter()
        .filter_map(|rs| ctx.store.get(Resource::ReplicaSet, &namespace, name_of(rs)))
        .filter(|rs| !is_terminating(rs))
        .cloned()
        .collect();
    let diff = cleanable.len() as i64 - limit;
    if diff <= 0 {
        return;
    }
    cleanable.sort_by_key(|rs| (revision(rs), created(rs)));
    for rs in cleanable.iter().take(diff as usize) {
        let observed = i64_at(rs, "/status/observedGeneration").unwrap_or(0);
        let generation = i64_at(rs, "/metadata/generation").unwrap_or(0);
        if status_count(rs, "replicas") != 0 || spec_replicas(rs) != 0 || generation > observed {
            continue;
        }
        let _ = registry::delete(
            ctx.store,
            Resource::ReplicaSet,
            &namespace,
            name_of(rs),
            &DeleteOptions::default(),
            ctx.now,
        );
    }
}

fn calculate_status(d: &Value, all: &[Value], new: Option<&Value>, now: DateTime<Utc>) -> Value {
    let sum = |field: &str| -> i64 { all.iter().map(|rs| status_count(rs, field)).sum() };
    let available = sum("availableReplicas");
    let total: i64 = all.iter().map(spec_replicas).sum();
    let unavailable = (total - available).max(0);
    let mut status = json!({});
    for (field, value) in [
        (
            "observedGeneration",
            i64_at(d, "/metadata/generation").unwrap_or(0),
        ),
        ("replicas", sum("replicas")),
        (
            "updatedReplicas",
            new.map_or(0, |rs| status_count(rs, "replicas")),
        ),
        ("readyReplicas", sum("readyReplicas")),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ] {
        if value != 0 {
            status[field] = json!(value);
        }
    }
    if let Some(count) = d.pointer("/status/collisionCount") {
        status["collisionCount"] = count.clone();
    }
    if let Some(conditions) = d.pointer("/status/conditions") {
        status["conditions"] = conditions.clone();
    }
    let now = format_time(now);
    let condition = if available >= replicas(d) - max_unavailable(d) {
        new_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            &now,
        )
    } else {
        new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            &now,
        )
    };
    set_condition(&mut status, condition);
    status
}

fn deployment_complete(d: &Value, status: &Value) -> bool {
    let desired = replicas(d);
    status_count_of(status, "updatedReplicas") == desired
        && status_count_of(status, "replicas") == desired
        && status_count_of(status, "availableReplicas") == desired
        && status_count_of(status, "observedGeneration")
            >= i64_at(d, "/metadata/generation").unwrap_or(0)
}

fn status_count_of(status: &Value, field: &str) -> i64 {
    status.get(field).and_then(Value::as_i64).unwrap_or(0)
}

fn deployment_progressing(old: &Value, new: &Value) -> bool {
    let count = status_count_of;
    let old_old = count(old, "replicas") - count(old, "updatedReplicas");
    let new_old = count(new, "replicas") - count(new, "updatedReplicas");
    count(new, "updatedReplicas") > count(old, "updatedReplicas")
        || new_old < old_old
        || count(new, "readyReplicas") > count(old, "readyReplicas")
        || count(new, "availableReplicas") > count(old, "availableReplicas")
}

fn deployment_timed_out(d: &Value, status: &Value, now: DateTime<Utc>) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(condition) = get_condition(status, "Progressing") else {
        return false;
    };
    match condition["reason"].as_str() {
        Some("NewReplicaSetAvailable") => return false,
        Some("ProgressDeadlineExceeded") => return true,
        _ => {}
    }
    let Some(from) = condition["lastUpdateTime"].as_str().and_then(parse_time) else {
        return false;
    };
    let deadline = i64_at(d, "/spec/progressDeadlineSeconds").unwrap_or(600);
    from + chrono::Duration::seconds(deadline) < now
}

fn sync_rollout_status(ctx: &mut Ctx<'_>, d: &mut Value) {
    let namespace = namespace_of(d).to_owned();
    let rs_list = owned(ctx.store, Resource::ReplicaSet, &namespace, uid_of(d));
    let (new, old) = split_fresh(d, &rs_list);
    let all: Vec<Value> = old.into_iter().chain(new.clone()).collect();
    let old_status = d.get("status").cloned().unwrap_or(json!({}));
    let mut status = calculate_status(d, &all, new.as_ref(), ctx.now);
    if !has_progress_deadline(d) {
        remove_condition(&mut status, "Progressing");
    }
    let current = get_condition(&old_status, "Progressing").cloned();
    let complete_before = status_count_of(&status, "replicas")
        == status_count_of(&status, "updatedReplicas")
        && current
            .as_ref()
            .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
    let now = format_time(ctx.now);
    let rs_name = new.as_ref().map(|rs| name_of(rs).to_owned());
    if has_progress_deadline(d) && !complete_before {
        if deployment_complete(d, &status) {
            let message = match &rs_name {
                Some(name) => format!("ReplicaSet \"{name}\" has successfully progressed."),
                None => format!("Deployment \"{}\" has successfully progressed.", name_of(d)),
            };
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    message,
                    &now,
                ),
            );
        } else if deployment_progressing(&old_status, &status) {
            let message = match &rs_name {
                Some(name) => format!("ReplicaSet \"{name}\" is progressing."),
                None => format!("Deployment \"{}\" is progressing.", name_of(d)),
            };
            let mut condition =
                new_condition("Progressing", "True", "ReplicaSetUpdated", message, &now);
            if let Some(current) = &current {
                if current["status"] == "True" {
                    condition["lastTransitionTime"] = current["lastTransitionTime"].clone();
                }
                remove_condition(&mut status, "Progressing");
            }
            set_condition(&mut status, condition);
        } else if deployment_timed_out(d, &status, ctx.now) {
            let message = match &rs_name {
                Some(name) => format!("ReplicaSet \"{name}\" has timed out progressing."),
                None => format!("Deployment \"{}\" has timed out progressing.", name_of(d)),
            };
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    message,
                    &now,
                ),
            );
        }
    }
    if normalized(&status) != normalized(&old_status) {
        d["status"] = status;
        write_status(ctx, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let d = |replicas: i64, surge: Value, unavailable: Value| {
            json!({"spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
        };
        assert_eq!(
            resolve_fenceposts(&d(3, json!("25%"), json!("25%"))),
            (1, 0)
        );
        assert_eq!(
            resolve_fenceposts(&d(10, json!("25%"), json!("25%"))),
            (3, 2)
        );
        assert_eq!(resolve_fenceposts(&d(4, json!(0), json!("10%"))), (0, 1));
        assert_eq!(resolve_fenceposts(&d(4, json!(2), json!(1))), (2, 1));
    }

    #[test]
    fn template_hashes_are_stable_and_ignore_empty_fields() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
        let b = json!({"metadata": {"labels": {"app": "web"}, "annotations": {}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
        assert_eq!(compute_hash(&a, None), compute_hash(&b, None));
        assert_ne!(compute_hash(&a, None), compute_hash(&a, Some(1)));
        let hash = compute_hash(&a, None);
        assert!(
            hash.len() >= 8 && hash.chars().all(|c| c.is_ascii_alphanumeric()),
            "{hash}"
        );
    }

    #[test]
    fn rollbacks_keep_the_revision_history() {
        let d = json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "undo", REVISION: "2"}}, "spec": {"replicas": 3}});
        let mut rs = json!({"metadata": {"annotations": {REVISION: "1"}}});
        assert!(set_new_replica_set_annotations(&d, &mut rs, 3, true));
        assert_eq!(annotation(&rs, REVISION), Some("3"));
        assert_eq!(annotation(&rs, REVISION_HISTORY), Some("1"));
        assert_eq!(annotation(&rs, "kubernetes.io/change-cause"), Some("undo"));
        assert!(set_new_replica_set_annotations(&d, &mut rs, 5, true));
        assert_eq!(annotation(&rs, REVISION_HISTORY), Some("1,3"));
    }
}
