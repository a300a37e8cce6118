//! What the API server does to an object on its way into the store: the create, update, patch
//! and delete semantics (preconditions, conflicts, generation, the status subresource), and each
//! resource's defaults and validation, as `k8s.io/kubernetes/pkg/registry` and the `apps/v1` and
//! `core/v1` defaulting functions do them.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::meta::{
    ApiError, format_time, i64_at, name_of, normalized, semantic_eq, set_path, str_at, uid_of,
};
use super::patch;
use super::resource::Resource;
use super::selector::LabelSelector;
use super::store::Store;

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subresource {
    Main,
    Status,
}

/// A PATCH body's format, named by its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (JSON bodies only), simplified: see [`patch`].
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    #[default]
    Background,
    Foreground,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body and the query parameters that mirror it.
    pub fn parse(body: &Value, query: &[(String, String)]) -> Result<DeleteOptions, ApiError> {
        let mut options = DeleteOptions {
            grace_period_seconds: i64_at(body, "/gracePeriodSeconds"),
            propagation: None,
            precondition_uid: str_at(body, "/preconditions/uid").map(str::to_owned),
            precondition_rv: str_at(body, "/preconditions/resourceVersion").map(str::to_owned),
            dry_run: body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| !d.is_empty()),
        };
        let mut propagation = str_at(body, "/propagationPolicy").map(str::to_owned);
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            propagation = Some("Orphan".to_owned());
        }
        for (key, value) in query {
            match key.as_str() {
                "gracePeriodSeconds" => {
                    options.grace_period_seconds = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid gracePeriodSeconds {value:?}"))
                    })?);
                }
                "propagationPolicy" => propagation = Some(value.clone()),
                "orphanDependents" if value == "true" => propagation = Some("Orphan".to_owned()),
                "dryRun" => options.dry_run = true,
                _ => {}
            }
        }
        options.propagation = match propagation.as_deref() {
            None => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: \"{other}\": supported values: \
                     \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        };
        Ok(options)
    }
}

/// The outcome of a delete.
pub(crate) enum Deleted {
    /// The object is gone.
    Gone(Value),
    /// The object is terminating: graceful pod deletion, finalizers, foreground deletion.
    Pending(Value),
}

pub(crate) fn create(
    store: &mut Store,
    resource: Resource,
    namespace: &str,
    mut object: Value,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    check_shape(resource, &object)?;
    object["kind"] = json!(resource.kind());
    object["apiVersion"] = json!(resource.api_version());
    if resource.namespaced() {
        match str_at(&object, "/metadata/namespace") {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on \
                     the request",
                ));
            }
            _ => {}
        }
        object["metadata"]["namespace"] = json!(namespace);
        let live = store
            .get(Resource::Namespace, "", namespace)
            .is_some_and(|ns| ns.pointer("/metadata/deletionTimestamp").is_none());
        if !live {
            return Err(ApiError::namespace_not_found(namespace));
        }
    } else if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    if name_of(&object).is_empty() {
        let Some(prefix) = str_at(&object, "/metadata/generateName").map(str::to_owned) else {
            return Err(ApiError::invalid(
                resource,
                "",
                vec![(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        };
        let name = loop {
            let candidate = format!("{prefix}{}", store.suffix(5));
            if store.get(resource, namespace, &candidate).is_none() {
                break candidate;
            }
        };
        object["metadata"]["name"] = json!(name);
    }
    let name = name_of(&object).to_owned();
    let ns_key = if resource.namespaced() { namespace } else { "" };
    if store.get(resource, ns_key, &name).is_some() {
        return Err(ApiError::already_exists(resource, &name));
    }
    {
        let meta = object["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for system in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            meta.remove(system);
        }
    }
    object["metadata"]["uid"] = json!(store.uid());
    object["metadata"]["creationTimestamp"] = json!(format_time(now));
    if resource.has_generation() {
        object["metadata"]["generation"] = json!(1);
    }
    prepare_for_create(resource, &mut object);
    apply_defaults(resource, &mut object);
    validate(resource, &object, None)?;
    prune_metadata(&mut object);
    if dry_run {
        return Ok(object);
    }
    Ok(store.put(resource, object))
}

pub(crate) fn update(
    store: &mut Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    mut object: Value,
    subresource: Subresource,
    dry_run: bool,
) -> Result<Value, ApiError> {
    check_shape(resource, &object)?;
    let ns_key = if resource.namespaced() { namespace } else { "" };
    let old = store
        .get(resource, ns_key, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    match str_at(&object, "/metadata/name") {
        Some(body_name) if !body_name.is_empty() && body_name != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    if resource.namespaced() {
        match str_at(&object, "/metadata/namespace") {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on \
                     the request",
                ));
            }
            _ => {}
        }
    }
    let old_rv = str_at(&old, "/metadata/resourceVersion").unwrap_or_default();
    match str_at(&object, "/metadata/resourceVersion") {
        Some(rv) if !rv.is_empty() && rv != old_rv => {
            return Err(ApiError::conflict(resource, name));
        }
        _ => {}
    }
    if let Some(uid) = str_at(&object, "/metadata/uid")
        && !uid.is_empty()
        && uid != uid_of(&old)
    {
        return Err(ApiError::conflict_precondition(
            resource,
            name,
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                uid_of(&old)
            ),
        ));
    }
    object["kind"] = json!(resource.kind());
    object["apiVersion"] = json!(resource.api_version());
    object["metadata"]["name"] = json!(name);
    for system in [
        "uid",
        "creationTimestamp",
        "generation",
        "namespace",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        match old["metadata"].get(system) {
            Some(value) => object["metadata"][system] = value.clone(),
            None => {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove(system);
                }
            }
        }
    }
    if resource.has_status() {
        match subresource {
            Subresource::Main => match old.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(o) = object.as_object_mut() {
                        o.remove("status");
                    }
                }
            },
            Subresource::Status => {
                for field in ["spec", "data"] {
                    if let Some(value) = old.get(field) {
                        object[field] = value.clone();
                    }
                }
                match old.pointer("/metadata/labels") {
                    Some(labels) => object["metadata"]["labels"] = labels.clone(),
                    None => {
                        if let Some(meta) = object["metadata"].as_object_mut() {
                            meta.remove("labels");
                        }
                    }
                }
            }
        }
    }
    apply_defaults(resource, &mut object);
    validate(resource, &object, Some(&old))?;
    if resource.has_generation() && !semantic_eq(old.get("spec"), object.get("spec")) {
        let generation = i64_at(&old, "/metadata/generation").unwrap_or(0) + 1;
        object["metadata"]["generation"] = json!(generation);
    }
    prune_metadata(&mut object);
    // The API server skips writes that change nothing: the resource version stays.
    if normalized(&object) == normalized(&old) {
        return Ok(old);
    }
    let finalized = object.pointer("/metadata/deletionTimestamp").is_some()
        && object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    if dry_run {
        return Ok(object);
    }
    if finalized {
        return Ok(store.remove(resource, ns_key, name).unwrap_or(object));
    }
    Ok(store.put(resource, object))
}

/// Applies a patch and stores the result as an update would.
///
/// Server-side apply is simplified to "create if absent, else strategic merge": fields are not
/// owned by managers, so there are no apply conflicts and fields dropped from an applied
/// configuration are not removed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    store: &mut Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    patch_type: PatchType,
    body: &Value,
    subresource: Subresource,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let ns_key = if resource.namespaced() { namespace } else { "" };
    let Some(old) = store.get(resource, ns_key, name).cloned() else {
        if patch_type == PatchType::Apply && subresource == Subresource::Main {
            check_shape(resource, body)?;
            let mut object = body.clone();
            if object.get("metadata").is_none() {
                object["metadata"] = json!({});
            }
            object["metadata"]["name"] = json!(name);
            return create(store, resource, namespace, object, dry_run, now);
        }
        return Err(ApiError::not_found(resource, name));
    };
    let patched = match patch_type {
        PatchType::Merge => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "json merge patch must be a JSON object",
                ));
            }
            patch::merge_patch(&old, body)
        }
        PatchType::Json => {
            patch::json_patch(&old, body).map_err(|e| ApiError::new(422, "Invalid", e))?
        }
        PatchType::Strategic | PatchType::Apply => {
            patch::strategic_merge_patch(&old, body).map_err(ApiError::bad_request)?
        }
    };
    if !patched.is_object() {
        return Err(ApiError::bad_request(
            "the patched object is not a JSON object",
        ));
    }
    let old_rv = str_at(&old, "/metadata/resourceVersion").unwrap_or_default();
    let mut patched = patched;
    match str_at(&patched, "/metadata/resourceVersion") {
        // A patch that names a resource version makes it a precondition.
        Some(rv) if !rv.is_empty() && rv != old_rv => {
            return Err(ApiError::conflict(resource, name));
        }
        _ => set_path(
            &mut patched,
            &["metadata", "resourceVersion"],
            json!(old_rv),
        ),
    }
    update(
        store,
        resource,
        namespace,
        name,
        patched,
        subresource,
        dry_run,
    )
}

pub(crate) fn delete(
    store: &mut Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
    now: DateTime<Utc>,
) -> Result<Deleted, ApiError> {
    let ns_key = if resource.namespaced() { namespace } else { "" };
    let old = store
        .get(resource, ns_key, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    if let Some(uid) = &options.precondition_uid
        && uid != uid_of(&old)
    {
        return Err(ApiError::conflict_precondition(
            resource,
            name,
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                uid_of(&old)
            ),
        ));
    }
    let old_rv = str_at(&old, "/metadata/resourceVersion").unwrap_or_default();
    if let Some(rv) = &options.precondition_rv
        && rv != old_rv
    {
        return Err(ApiError::conflict_precondition(
            resource,
            name,
            format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in \
                 object meta: {old_rv}"
            ),
        ));
    }
    if options.dry_run {
        return Ok(Deleted::Gone(old));
    }
    let terminating = old.pointer("/metadata/deletionTimestamp").is_some();

    if resource == Resource::Pod {
        let scheduled = str_at(&old, "/spec/nodeName").is_some_and(|n| !n.is_empty());
        let grace = options
            .grace_period_seconds
            .or_else(|| i64_at(&old, "/spec/terminationGracePeriodSeconds"))
            .unwrap_or(30);
        // Unscheduled pods have no kubelet to stop them: they go at once.
        if scheduled && grace > 0 {
            if terminating {
                return Ok(Deleted::Pending(old));
            }
            let mut pod = old;
            pod["metadata"]["deletionTimestamp"] =
                json!(format_time(now + chrono::Duration::seconds(grace)));
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            return Ok(Deleted::Pending(store.put(resource, pod)));
        }
    }

    let propagation = options.propagation.unwrap_or(Propagation::Background);
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if terminating {
        return Ok(Deleted::Pending(old));
    }
    if propagation == Propagation::Foreground || has_finalizers {
        let mut object = old;
        object["metadata"]["deletionTimestamp"] = json!(format_time(now));
        object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if propagation == Propagation::Foreground {
            let finalizers = object["metadata"]
                .as_object_mut()
                .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
            if let Some(Value::Array(finalizers)) = finalizers
                && !finalizers.contains(&json!("foregroundDeletion"))
            {
                finalizers.push(json!("foregroundDeletion"));
            }
        }
        return Ok(Deleted::Pending(store.put(resource, object)));
    }
    if propagation == Propagation::Orphan {
        orphan_dependents(store, uid_of(&old));
    }
    if resource == Resource::Namespace {
        for inner in [
            Resource::Deployment,
            Resource::ReplicaSet,
            Resource::Pod,
            Resource::Event,
        ] {
            let names: Vec<String> = store
                .list(inner, Some(name))
                .map(|o| name_of(o).to_owned())
                .collect();
            for inner_name in names {
                store.remove(inner, name, &inner_name);
            }
        }
    }
    Ok(Deleted::Gone(
        store.remove(resource, ns_key, name).unwrap_or(old),
    ))
}

/// Removes the owner reference to `owner_uid` from every object that has one.
fn orphan_dependents(store: &mut Store, owner_uid: &str) {
    for resource in [Resource::ReplicaSet, Resource::Pod] {
        for mut object in store.list_owned(resource, None) {
            let Some(refs) = object
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            let before = refs.len();
            refs.retain(|r| str_at(r, "/uid") != Some(owner_uid));
            if refs.len() != before {
                prune_metadata(&mut object);
                store.put(resource, object);
            }
        }
    }
}

fn kind_of_json(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What the JSON decoder of the API server would reject.
fn check_shape(resource: Resource, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    for field in ["metadata", "spec", "status"] {
        if let Some(value) = object.get(field)
            && !value.is_null()
            && !value.is_object()
        {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go struct field .{field} of type object",
                kind_of_json(value)
            )));
        }
    }
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && !kind.is_empty()
        && kind != resource.kind()
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind()
        )));
    }
    if let Some(version) = object.get("apiVersion").and_then(Value::as_str)
        && !version.is_empty()
        && version != resource.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({version}) does not match the expected API version \
             ({})",
            resource.api_version()
        )));
    }
    for map in ["labels", "annotations"] {
        if let Some(values) = object.pointer(&format!("/metadata/{map}")) {
            let ok = values.is_null()
                || values
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal into Go struct field ObjectMeta.metadata.{map} of \
                     type map[string]string"
                )));
            }
        }
    }
    for pointer in [
        "/spec/replicas",
        "/spec/revisionHistoryLimit",
        "/spec/progressDeadlineSeconds",
        "/spec/minReadySeconds",
    ] {
        if let Some(value) = object.pointer(pointer)
            && !value.is_null()
            && !value.is_i64()
        {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {value} into Go struct field of type int32 ({pointer})"
            )));
        }
    }
    Ok(())
}

fn prepare_for_create(resource: Resource, object: &mut Value) {
    let Some(o) = object.as_object_mut() else {
        return;
    };
    match resource {
        Resource::Deployment | Resource::ReplicaSet => {
            o.insert("status".into(), json!({}));
        }
        Resource::Pod => {
            let qos = qos_class(o.get("spec").unwrap_or(&Value::Null));
            o.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        Resource::Namespace => {
            o.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            o.insert("status".into(), json!({"phase": "Active"}));
            let name = o
                .get("metadata")
                .and_then(|m| m.get("name"))
                .cloned()
                .unwrap_or(Value::Null);
            set_path(
                object,
                &["metadata", "labels", "kubernetes.io/metadata.name"],
                name,
            );
        }
        Resource::Event => {}
    }
}

/// The pod's QoS class, from its containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for container in &containers {
        let limits = container.pointer("/resources/limits");
        let requests = container.pointer("/resources/requests").or(limits);
        let set = |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(|m| !m.is_empty());
        any |= set(limits) || set(requests);
        let full = |v: Option<&Value>| {
            v.and_then(Value::as_object)
                .is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
        };
        guaranteed &= full(limits) && limits == requests;
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

fn default_field(object: &mut Value, path: &[&str], value: Value) {
    let mut at = &*object;
    for key in path {
        match at.get(*key) {
            Some(next) => at = next,
            None => {
                set_path(object, path, value);
                return;
            }
        }
    }
    if at.is_null() {
        set_path(object, path, value);
    }
}

/// The `SetDefaults_*` functions of `apps/v1` and `core/v1`, for the fields the emulator's
/// resources have. Idempotent: applied on every write, as decoding does.
fn apply_defaults(resource: Resource, object: &mut Value) {
    match resource {
        Resource::Deployment => {
            default_field(object, &["spec", "replicas"], json!(1));
            default_field(
                object,
                &["spec", "strategy", "type"],
                json!("RollingUpdate"),
            );
            if str_at(object, "/spec/strategy/type") == Some("RollingUpdate") {
                default_field(
                    object,
                    &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                    json!("25%"),
                );
                default_field(
                    object,
                    &["spec", "strategy", "rollingUpdate", "maxSurge"],
                    json!("25%"),
                );
            }
            default_field(object, &["spec", "revisionHistoryLimit"], json!(10));
            default_field(object, &["spec", "progressDeadlineSeconds"], json!(600));
            default_template(object);
        }
        Resource::ReplicaSet => {
            default_field(object, &["spec", "replicas"], json!(1));
            default_template(object);
        }
        Resource::Pod => {
            if let Some(spec) = object.get_mut("spec") {
                default_pod_spec(spec, true);
            }
        }
        Resource::Namespace | Resource::Event => {}
    }
}

fn default_template(object: &mut Value) {
    let Some(template) = object.pointer_mut("/spec/template") else {
        return;
    };
    if !template.is_object() {
        return;
    }
    default_field(template, &["metadata", "creationTimestamp"], Value::Null);
    if let Some(spec) = template.get_mut("spec") {
        default_pod_spec(spec, false);
    }
}

fn default_pod_spec(spec: &mut Value, is_pod: bool) {
    if !spec.is_object() {
        return;
    }
    default_field(spec, &["restartPolicy"], json!("Always"));
    default_field(spec, &["terminationGracePeriodSeconds"], json!(30));
    default_field(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default_field(spec, &["securityContext"], json!({}));
    default_field(spec, &["schedulerName"], json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers {
                default_container(container, is_pod);
            }
        }
    }
    if is_pod {
        default_field(spec, &["enableServiceLinks"], json!(true));
        default_field(spec, &["preemptionPolicy"], json!("PreemptLowerPriority"));
        default_field(spec, &["priority"], json!(0));
        default_field(spec, &["serviceAccountName"], json!("default"));
        default_field(spec, &["serviceAccount"], json!("default"));
        // The DefaultTolerationSeconds admission plugin's tolerations.
        let tolerations = spec
            .as_object_mut()
            .map(|s| s.entry("tolerations").or_insert_with(|| json!([])));
        if let Some(Value::Array(tolerations)) = tolerations {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                if !tolerations.iter().any(|t| str_at(t, "/key") == Some(key)) {
                    tolerations.push(json!({
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }));
                }
            }
        }
    }
}

fn default_container(container: &mut Value, is_pod: bool) {
    if !container.is_object() {
        return;
    }
    default_field(
        container,
        &["terminationMessagePath"],
        json!("/dev/termination-log"),
    );
    default_field(container, &["terminationMessagePolicy"], json!("File"));
    let image = str_at(container, "/image").unwrap_or_default();
    let tag = image
        .rsplit_once('/')
        .map_or(image, |(_, last)| last)
        .split_once(':')
        .map(|(_, tag)| tag);
    let pull = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
        "IfNotPresent"
    } else {
        "Always"
    };
    default_field(container, &["imagePullPolicy"], json!(pull));
    default_field(container, &["resources"], json!({}));
    if let Some(Value::Array(ports)) = container.get_mut("ports") {
        for port in ports {
            default_field(port, &["protocol"], json!("TCP"));
        }
    }
    if is_pod
        && let Some(limits) = container.pointer("/resources/limits").cloned()
        && let Some(limits) = limits.as_object()
    {
        for (resource, quantity) in limits {
            default_field(
                container,
                &["resources", "requests", resource],
                quantity.clone(),
            );
        }
    }
}

/// Drops what Go's `omitempty` would: empty label, annotation, finalizer and owner lists.
pub(crate) fn prune_metadata(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|key, value| {
            !(matches!(
                key.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences" | "managedFields"
            ) && (value.is_null()
                || value.as_object().is_some_and(Map::is_empty)
                || value.as_array().is_some_and(Vec::is_empty)))
        });
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn validate(resource: Resource, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = name_of(object);
    let mut causes: Vec<(String, String)> = Vec::new();
    if resource != Resource::Event && !is_dns_subdomain(name) {
        causes.push((
            "metadata.name".into(),
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower \
                 case alphanumeric characters, '-' or '.', and must start and end with an \
                 alphanumeric character"
            ),
        ));
    }
    match resource {
        Resource::Deployment | Resource::ReplicaSet => {
            validate_workload(resource, object, old, &mut causes);
        }
        Resource::Pod => {
            validate_containers(object.get("spec"), "spec", &mut causes);
        }
        Resource::Namespace | Resource::Event => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, name, causes))
    }
}

fn validate_workload(
    resource: Resource,
    object: &Value,
    old: Option<&Value>,
    causes: &mut Vec<(String, String)>,
) {
    if let Some(replicas) = i64_at(object, "/spec/replicas")
        && replicas < 0
    {
        causes.push((
            "spec.replicas".into(),
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let selector = object.pointer("/spec/selector");
    match selector.map(LabelSelector::from_object) {
        None => causes.push(("spec.selector".into(), "Required value".into())),
        Some(None) => causes.push((
            "spec.selector".into(),
            "Invalid value: the selector is malformed".into(),
        )),
        Some(Some(parsed)) if parsed.is_empty() => causes.push((
            "spec.selector".into(),
            format!(
                "Invalid value: {}: empty selector is invalid for {}",
                selector.map(|s| s.to_string()).unwrap_or_default(),
                resource.singular()
            ),
        )),
        Some(Some(parsed)) => {
            let labels = object
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if !parsed.matches(&labels) {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        Value::Object(labels)
                    ),
                ));
            }
        }
    }
    if let Some(old) = old
        && !semantic_eq(old.pointer("/spec/selector"), selector)
    {
        causes.push((
            "spec.selector".into(),
            format!(
                "Invalid value: {}: field is immutable",
                selector.map(|s| s.to_string()).unwrap_or_default()
            ),
        ));
    }
    validate_containers(
        object.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
    if let Some(policy) = str_at(object, "/spec/template/spec/restartPolicy")
        && policy != "Always"
    {
        causes.push((
            "spec.template.spec.restartPolicy".into(),
            format!("Unsupported value: \"{policy}\": supported values: \"Always\""),
        ));
    }
    if resource == Resource::Deployment {
        match str_at(object, "/spec/strategy/type") {
            Some("RollingUpdate") => {
                let replicas = i64_at(object, "/spec/replicas").unwrap_or(1);
                let surge = object.pointer("/spec/strategy/rollingUpdate/maxSurge");
                let unavailable = object.pointer("/spec/strategy/rollingUpdate/maxUnavailable");
                match (
                    super::controller::int_or_percent(surge, replicas, true),
                    super::controller::int_or_percent(unavailable, replicas, false),
                ) {
                    (Some(0), Some(0)) if is_zero(surge) && is_zero(unavailable) => {
                        causes.push((
                            "spec.strategy.rollingUpdate.maxUnavailable".into(),
                            "Invalid value: 0: may not be 0 when `maxSurge` is 0".into(),
                        ));
                    }
                    (None, _) => causes.push((
                        "spec.strategy.rollingUpdate.maxSurge".into(),
                        format!(
                            "Invalid value: {}: must be an integer or a percentage",
                            surge.cloned().unwrap_or_default()
                        ),
                    )),
                    (_, None) => causes.push((
                        "spec.strategy.rollingUpdate.maxUnavailable".into(),
                        format!(
                            "Invalid value: {}: must be an integer or a percentage",
                            unavailable.cloned().unwrap_or_default()
                        ),
                    )),
                    _ => {}
                }
            }
            Some("Recreate") => {
                if object.pointer("/spec/strategy/rollingUpdate").is_some() {
                    causes.push((
                        "spec.strategy.rollingUpdate".into(),
                        "Forbidden: may not be specified when strategy `type` is 'Recreate'".into(),
                    ));
                }
            }
            other => causes.push((
                "spec.strategy.type".into(),
                format!(
                    "Unsupported value: {}: supported values: \"Recreate\", \"RollingUpdate\"",
                    Value::from(other.unwrap_or_default())
                ),
            )),
        }
    }
}

fn is_zero(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0" || s == "0%",
        _ => false,
    }
}

fn validate_containers(spec: Option<&Value>, at: &str, causes: &mut Vec<(String, String)>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        causes.push((format!("{at}.containers"), "Required value".into()));
        return;
    };
    let mut names = Vec::new();
    for (i, container) in containers.iter().enumerate() {
        let name = str_at(container, "/name").unwrap_or_default();
        if name.is_empty() {
            causes.push((
                format!("{at}.containers[{i}].name"),
                "Required value".into(),
            ));
        } else if names.contains(&name) {
            causes.push((
                format!("{at}.containers[{i}].name"),
                format!("Duplicate value: \"{name}\""),
            ));
        }
        names.push(name);
        if str_at(container, "/image").unwrap_or_default().is_empty() {
            causes.push((
                format!("{at}.containers[{i}].image"),
                "Required value".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;

    fn store() -> Store {
        let mut store = Store::new(100, watch::channel(0).0);
        store.put(
            Resource::Namespace,
            json!({"kind": "Namespace", "metadata": {"name": "default"}}),
        );
        store
    }

    fn deployment(image: &str) -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                },
            },
        })
    }

    #[test]
    fn create_fills_in_metadata_and_defaults() {
        let mut store = store();
        let created = create(
            &mut store,
            Resource::Deployment,
            "default",
            deployment("web:1"),
            false,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(created["metadata"]["generation"], 1);
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(created["spec"]["replicas"], 1);
        assert_eq!(
            created["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            "25%"
        );
        assert_eq!(
            created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        let again = create(
            &mut store,
            Resource::Deployment,
            "default",
            deployment("web:1"),
            false,
            Utc::now(),
        );
        assert_eq!(again.unwrap_err().reason, "AlreadyExists");
        let elsewhere = create(
            &mut store,
            Resource::Deployment,
            "nowhere",
            deployment("web:1"),
            false,
            Utc::now(),
        );
        assert_eq!(
            elsewhere.unwrap_err().message,
            "namespaces \"nowhere\" not found"
        );
    }

    #[test]
    fn updates_bump_generation_only_on_spec_changes() {
        let mut store = store();
        let created = create(
            &mut store,
            Resource::Deployment,
            "default",
            deployment("web:1"),
            false,
            Utc::now(),
        )
        .unwrap();
        let rv = created["metadata"]["resourceVersion"].clone();
        // No change: no write.
        let same = update(
            &mut store,
            Resource::Deployment,
            "default",
            "web",
            created.clone(),
            Subresource::Main,
            false,
        )
        .unwrap();
        assert_eq!(same["metadata"]["resourceVersion"], rv);
        let mut annotated = created.clone();
        annotated["metadata"]["annotations"] = json!({"a": "b"});
        let annotated = update(
            &mut store,
            Resource::Deployment,
            "default",
            "web",
            annotated,
            Subresource::Main,
            false,
        )
        .unwrap();
        assert_eq!(annotated["metadata"]["generation"], 1);
        assert_ne!(annotated["metadata"]["resourceVersion"], rv);
        // A stale resource version conflicts.
        let stale = update(
            &mut store,
            Resource::Deployment,
            "default",
            "web",
            created,
            Subresource::Main,
            false,
        );
        assert_eq!(stale.unwrap_err().code, 409);
        let patched = patch(
            &mut store,
            Resource::Deployment,
            "default",
            "web",
            PatchType::Strategic,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}),
            Subresource::Main,
            false,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(patched["metadata"]["generation"], 2);
        assert_eq!(patched["metadata"]["annotations"]["a"], "b");
    }

    #[test]
    fn validation_names_the_fields() {
        let mut store = store();
        let mut bad = deployment("");
        bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        let error = create(
            &mut store,
            Resource::Deployment,
            "default",
            bad,
            false,
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(error.code, 422);
        assert!(
            error
                .message
                .contains("`selector` does not match template `labels`"),
            "{}",
            error.message
        );
        assert!(
            error
                .message
                .contains("spec.template.spec.containers[0].image: Required value"),
            "{}",
            error.message
        );
    }

    #[test]
    fn status_updates_leave_the_spec_alone() {
        let mut store = store();
        let created = create(
            &mut store,
            Resource::Deployment,
            "default",
            deployment("web:1"),
            false,
            Utc::now(),
        )
        .unwrap();
        let mut changed = created.clone();
        changed["spec"]["replicas"] = json!(5);
        changed["status"] = json!({"replicas": 3});
        let updated = update(
            &mut store,
            Resource::Deployment,
            "default",
            "web",
            changed.clone(),
            Subresource::Status,
            false,
        )
        .unwrap();
        assert_eq!(updated["spec"]["replicas"], 1);
        assert_eq!(updated["status"]["replicas"], 3);
        changed["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"].clone();
        changed["status"] = json!({});
        let updated = update(
            &mut store,
            Resource::Deployment,
            "default",
            "web",
            changed,
            Subresource::Main,
            false,
        )
        .unwrap();
        assert_eq!(updated["spec"]["replicas"], 5);
        assert_eq!(updated["status"]["replicas"], 3);
        assert_eq!(updated["metadata"]["generation"], 2);
    }
}
