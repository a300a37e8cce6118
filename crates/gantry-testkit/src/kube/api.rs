//! The HTTP face of the emulator: discovery, the REST verbs on collections and objects, the
//! `status`, `scale` and `log` subresources, watches, and content negotiation (`Table`,
//! `PartialObjectMetadata`), answering errors with `Status` objects.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::meta::{ApiError, i64_at, name_of, namespace_of, str_at, uid_of};
use super::registry::{self, DeleteOptions, Deleted, PatchType, Subresource};
use super::resource::{self, Resource};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Change, key_of};
use super::table::{self, IncludeObject};
use super::{ApiRequest, Shared};

/// Where a request goes.
#[derive(Debug)]
enum Target {
    Root,
    Version,
    Health,
    OpenApiIndex,
    OpenApi(&'static str),
    NoOpenApi,
    CoreVersions,
    Groups,
    AppsGroup,
    GroupVersion(&'static str),
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Object {
        resource: Resource,
        namespace: String,
        name: String,
        subresource: Option<String>,
    },
}

fn route(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        [] => return Some(Target::Root),
        ["version"] => return Some(Target::Version),
        ["healthz" | "livez" | "readyz", ..] => return Some(Target::Health),
        ["openapi", "v3"] => return Some(Target::OpenApiIndex),
        ["openapi", "v3", "api", "v1"] => return Some(Target::OpenApi("")),
        ["openapi", "v3", "apis", "apps", "v1"] => return Some(Target::OpenApi("apps")),
        ["openapi", ..] | ["swagger.json"] | ["swaggerapi", ..] => return Some(Target::NoOpenApi),
        ["api"] => return Some(Target::CoreVersions),
        ["api", "v1"] => return Some(Target::GroupVersion("")),
        ["apis"] => return Some(Target::Groups),
        ["apis", "apps"] => return Some(Target::AppsGroup),
        ["apis", "apps", "v1"] => return Some(Target::GroupVersion("apps")),
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", "apps", "v1", rest @ ..] => ("apps", rest),
        _ => return None,
    };
    let resource = |plural: &str| Resource::from_path(group, plural);
    match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let resource = resource(plural).filter(|r| r.namespaced())?;
            match tail {
                [] => Some(Target::Collection {
                    resource,
                    namespace: Some((*ns).to_owned()),
                }),
                [name] => Some(Target::Object {
                    resource,
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                    subresource: None,
                }),
                [name, sub] => Some(Target::Object {
                    resource,
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                    subresource: Some((*sub).to_owned()),
                }),
                _ => None,
            }
        }
        [plural] => Some(Target::Collection {
            resource: resource(plural)?,
            namespace: None,
        }),
        [plural, name, tail @ ..] if tail.len() <= 1 => {
            let resource = resource(plural).filter(|r| !r.namespaced())?;
            Some(Target::Object {
                resource,
                namespace: String::new(),
                name: (*name).to_owned(),
                subresource: tail.first().map(|s| (*s).to_owned()),
            })
        }
        _ => None,
    }
}

/// What the client asked to get back (`Accept`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Object,
    Table,
    Metadata,
}

fn format_of(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Clients list what they accept in order of preference.
    for media in accept.split(',') {
        if media.contains("as=Table") {
            return Format::Table;
        }
        if media.contains("as=PartialObjectMetadata") {
            return Format::Metadata;
        }
        if media.trim().starts_with("application/json") || media.trim().starts_with("*/*") {
            return Format::Object;
        }
    }
    Format::Object
}

struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| !v.is_empty())
    }
}

fn json_response(code: u16, value: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.code, &error.to_status())
}

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let received = Instant::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let params = Params(
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default(),
    );
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = serve(
        &shared,
        &parts.method,
        parts.uri.path(),
        &params,
        &parts.headers,
        &content_type,
        &body,
    );
    shared.record(ApiRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: response.status().as_u16(),
        at: std::time::SystemTime::now(),
        since_start: received.duration_since(shared.started),
    });
    response
}

fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
    content_type: &Option<String>,
    body: &Bytes,
) -> Response {
    let Some(target) = route(path) else {
        return error_response(&ApiError::path_not_found());
    };
    let read_only = matches!(
        target,
        Target::Root
            | Target::Version
            | Target::Health
            | Target::OpenApiIndex
            | Target::OpenApi(_)
            | Target::NoOpenApi
            | Target::CoreVersions
            | Target::Groups
            | Target::AppsGroup
            | Target::GroupVersion(_)
    );
    if read_only && method != Method::GET {
        return error_response(&ApiError::method_not_allowed());
    }
    match target {
        Target::Root => json_response(
            200,
            &json!({"paths": ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1",
                "/healthz", "/livez", "/readyz", "/version"]}),
        ),
        Target::Version => json_response(200, &resource::version()),
        Target::Health => (StatusCode::OK, "ok").into_response(),
        Target::OpenApiIndex => json_response(200, &resource::openapi_v3_index()),
        Target::OpenApi(group) => json_response(200, &resource::openapi_v3(group)),
        // No OpenAPI v2: kubectl asks for it only when v3 fails.
        Target::NoOpenApi => error_response(&ApiError::path_not_found()),
        Target::CoreVersions => {
            json_response(200, &resource::core_versions(&shared.addr.to_string()))
        }
        Target::Groups => json_response(200, &resource::group_list()),
        Target::AppsGroup => json_response(200, &resource::apps_group_doc()),
        Target::GroupVersion(group) => json_response(200, &resource::resource_list(group)),
        Target::Collection {
            resource,
            namespace,
        } => {
            let result = match *method {
                Method::GET if params.flag("watch") => {
                    return watch(shared, resource, namespace, params, format_of(headers));
                }
                Method::GET => list(
                    shared,
                    resource,
                    namespace.as_deref(),
                    params,
                    format_of(headers),
                ),
                Method::POST => {
                    check_content_type(content_type.as_deref()).and_then(|()| match namespace {
                        Some(ns) => create(shared, resource, &ns, params, body),
                        None if !resource.namespaced() => {
                            create(shared, resource, "", params, body)
                        }
                        None => Err(ApiError::method_not_allowed()),
                    })
                }
                Method::DELETE => {
                    delete_collection(shared, resource, namespace.as_deref(), params, body)
                }
                _ => Err(ApiError::method_not_allowed()),
            };
            match result {
                Ok((code, value)) => json_response(code, &value),
                Err(error) => error_response(&error),
            }
        }
        Target::Object {
            resource,
            namespace,
            name,
            subresource,
        } => {
            if subresource.as_deref() == Some("log") && resource == Resource::Pod {
                return match (method, log(shared, &namespace, &name, params)) {
                    (&Method::GET, Ok(text)) => {
                        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text)
                            .into_response()
                    }
                    (&Method::GET, Err(error)) => error_response(&error),
                    _ => error_response(&ApiError::method_not_allowed()),
                };
            }
            let sub = match subresource.as_deref() {
                None => Sub::Main,
                Some("status") if resource.has_status() => Sub::Status,
                Some("scale") if resource.has_scale() => Sub::Scale,
                Some(_) => return error_response(&ApiError::path_not_found()),
            };
            let object = ObjectRef {
                resource,
                namespace,
                name,
                sub,
            };
            let result = match *method {
                Method::GET => get(shared, &object, params, format_of(headers)),
                Method::PUT => check_content_type(content_type.as_deref())
                    .and_then(|()| replace(shared, &object, params, body)),
                Method::PATCH => patch(shared, &object, params, content_type.as_deref(), body),
                Method::DELETE if sub == Sub::Main => delete(shared, &object, params, body),
                _ => Err(ApiError::method_not_allowed()),
            };
            match result {
                Ok((code, value)) => json_response(code, &value),
                Err(error) => error_response(&error),
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    Main,
    Status,
    Scale,
}

struct ObjectRef {
    resource: Resource,
    namespace: String,
    name: String,
    sub: Sub,
}

type Answer = Result<(u16, Value), ApiError>;

/// Bodies of POST and PUT must be JSON: the emulator does not decode protobuf (which kubectl's
/// typed clients send for `kubectl create namespace|deployment|...`) or YAML.
fn check_content_type(content_type: Option<&str>) -> Result<(), ApiError> {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media == "application/json" || media == "*/*" || media.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - the Kubernetes API emulator \
             accepts application/json only (got {media}); for kubectl, use `kubectl create -f` \
             or `kubectl apply -f` instead of generators such as `kubectl create namespace`"
        ),
    ))
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e} (YAML and protobuf are \
             not supported by the emulator)"
        ))
    })
}

struct Filter {
    resource: Resource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn parse(
        resource: Resource,
        namespace: Option<String>,
        params: &Params,
    ) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let fields =
            FieldSelector::parse(params.get("fieldSelector").unwrap_or_default(), resource)
                .map_err(ApiError::bad_request)?;
        Ok(Filter {
            resource,
            namespace,
            labels,
            fields,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| namespace_of(object) == ns)
            && self.labels.matches_object(object)
            && self.fields.matches(self.resource, object)
    }
}

/// List items carry no `kind` and `apiVersion`, as the API server sends them.
fn list_item(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(o) = item.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    item
}

fn encode_continue(rv: u64, start: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    Some((value["rv"].as_u64()?, value["start"].as_str()?.to_owned()))
}

fn list(
    shared: &Shared,
    resource: Resource,
    namespace: Option<&str>,
    params: &Params,
    format: Format,
) -> Answer {
    let filter = Filter::parse(resource, namespace.map(str::to_owned), params)?;
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let resume = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token).ok_or_else(|| {
            ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        })?),
        None => None,
    };
    let cluster = shared.lock();
    let current = cluster.store.rv();
    if params.get("resourceVersionMatch") == Some("Exact")
        && let Some(rv) = params.get("resourceVersion")
        && rv != current.to_string()
    {
        return Err(ApiError::expired(format!(
            "too old resource version: {rv} ({current}); the emulator serves only the current \
             state"
        )));
    }
    let list_rv = resume.as_ref().map_or(current, |(rv, _)| *rv);
    let mut items: Vec<&Value> = cluster
        .store
        .list(resource, namespace)
        .filter(|o| filter.matches(o))
        .filter(|o| {
            resume.as_ref().is_none_or(|(_, start)| {
                let (_, ns, name) = key_of(resource, o);
                format!("{ns}/{name}").as_str() > start.as_str()
            })
        })
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        if let Some(last) = items.last() {
            let (_, ns, name) = key_of(resource, last);
            metadata["continue"] = json!(encode_continue(list_rv, &format!("{ns}/{name}")));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let objects: Vec<Value> = items.into_iter().cloned().collect();
    drop(cluster);
    let body = match format {
        Format::Table => {
            let mut t = table::table(
                resource,
                &objects,
                &list_rv.to_string(),
                IncludeObject::parse(params.get("includeObject")),
                true,
                Utc::now(),
            );
            t["metadata"] = metadata;
            t
        }
        Format::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": objects.iter().map(table::partial_metadata).collect::<Vec<_>>(),
        }),
        Format::Object => json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": objects.iter().map(list_item).collect::<Vec<_>>(),
        }),
    };
    Ok((200, body))
}

fn render(object: &Value, resource: Resource, format: Format, params: &Params) -> Value {
    match format {
        Format::Object => object.clone(),
        Format::Metadata => table::partial_metadata(object),
        Format::Table => table::table(
            resource,
            std::slice::from_ref(object),
            str_at(object, "/metadata/resourceVersion").unwrap_or_default(),
            IncludeObject::parse(params.get("includeObject")),
            true,
            Utc::now(),
        ),
    }
}

fn scale_of(resource: Resource, object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector")
        .and_then(LabelSelector::from_object)
        .map(|s| s.to_query())
        .unwrap_or_default();
    let mut metadata = json!({
        "name": name_of(object),
        "namespace": namespace_of(object),
        "uid": uid_of(object),
        "resourceVersion": str_at(object, "/metadata/resourceVersion").unwrap_or_default(),
        "creationTimestamp": str_at(object, "/metadata/creationTimestamp").unwrap_or_default(),
    });
    if resource == Resource::Deployment {
        metadata["annotations"] = object
            .pointer("/metadata/annotations")
            .cloned()
            .unwrap_or(json!({}));
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": i64_at(object, "/spec/replicas").unwrap_or(0)},
        "status": {
            "replicas": i64_at(object, "/status/replicas").unwrap_or(0),
            "selector": selector,
        },
    })
}

fn get(shared: &Shared, target: &ObjectRef, params: &Params, format: Format) -> Answer {
    let cluster = shared.lock();
    let object = cluster
        .store
        .get(target.resource, &target.namespace, &target.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(target.resource, &target.name))?;
    drop(cluster);
    Ok((
        200,
        match target.sub {
            Sub::Scale => scale_of(target.resource, &object),
            Sub::Main | Sub::Status => render(&object, target.resource, format, params),
        },
    ))
}

fn create(
    shared: &Shared,
    resource: Resource,
    namespace: &str,
    params: &Params,
    body: &Bytes,
) -> Answer {
    let object = parse_body(body)?;
    let mut cluster = shared.lock();
    let created = registry::create(
        &mut cluster.store,
        resource,
        namespace,
        object,
        params.dry_run(),
        Utc::now(),
    )?;
    drop(cluster);
    shared.wake.notify_one();
    Ok((201, created))
}

fn sub_of(sub: Sub) -> Subresource {
    match sub {
        Sub::Status => Subresource::Status,
        Sub::Main | Sub::Scale => Subresource::Main,
    }
}

/// Sets `spec.replicas` from a `Scale`, with its resource version as a precondition.
fn apply_scale(shared: &Shared, target: &ObjectRef, scale: &Value, dry_run: bool) -> Answer {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::invalid(
                target.resource,
                &target.name,
                vec![("spec.replicas".into(), "Required value".into())],
            )
        })?;
    let mut cluster = shared.lock();
    let mut object = cluster
        .store
        .get(target.resource, &target.namespace, &target.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(target.resource, &target.name))?;
    if let Some(rv) = str_at(scale, "/metadata/resourceVersion").filter(|rv| !rv.is_empty()) {
        object["metadata"]["resourceVersion"] = json!(rv);
    }
    object["spec"]["replicas"] = json!(replicas);
    let updated = registry::update(
        &mut cluster.store,
        target.resource,
        &target.namespace,
        &target.name,
        object,
        Subresource::Main,
        dry_run,
    )?;
    drop(cluster);
    shared.wake.notify_one();
    Ok((200, scale_of(target.resource, &updated)))
}

fn replace(shared: &Shared, target: &ObjectRef, params: &Params, body: &Bytes) -> Answer {
    let object = parse_body(body)?;
    if target.sub == Sub::Scale {
        return apply_scale(shared, target, &object, params.dry_run());
    }
    let mut cluster = shared.lock();
    let updated = registry::update(
        &mut cluster.store,
        target.resource,
        &target.namespace,
        &target.name,
        object,
        sub_of(target.sub),
        params.dry_run(),
    )?;
    drop(cluster);
    shared.wake.notify_one();
    Ok((200, updated))
}

fn patch(
    shared: &Shared,
    target: &ObjectRef,
    params: &Params,
    content_type: Option<&str>,
    body: &Bytes,
) -> Answer {
    let patch_type = content_type
        .and_then(PatchType::from_content_type)
        .ok_or_else(|| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types \
                     include: application/json-patch+json, application/merge-patch+json, \
                     application/apply-patch+yaml, application/strategic-merge-patch+json \
                     (got {:?})",
                    content_type.unwrap_or_default()
                ),
            )
        })?;
    if patch_type == PatchType::Apply && params.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required \
             for apply patch",
        ));
    }
    let body = parse_body(body)?;
    if target.sub == Sub::Scale {
        let current = {
            let cluster = shared.lock();
            cluster
                .store
                .get(target.resource, &target.namespace, &target.name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(target.resource, &target.name))?
        };
        let scale = scale_of(target.resource, &current);
        let patched = match patch_type {
            PatchType::Json => super::patch::json_patch(&scale, &body)
                .map_err(|e| ApiError::new(422, "Invalid", e))?,
            PatchType::Merge => super::patch::merge_patch(&scale, &body),
            PatchType::Strategic | PatchType::Apply => {
                super::patch::strategic_merge_patch(&scale, &body).map_err(ApiError::bad_request)?
            }
        };
        return apply_scale(shared, target, &patched, params.dry_run());
    }
    let mut cluster = shared.lock();
    let existed = cluster
        .store
        .get(target.resource, &target.namespace, &target.name)
        .is_some();
    let updated = registry::patch(
        &mut cluster.store,
        target.resource,
        &target.namespace,
        &target.name,
        patch_type,
        &body,
        sub_of(target.sub),
        params.dry_run(),
        Utc::now(),
    )?;
    drop(cluster);
    shared.wake.notify_one();
    // Server-side apply creates what does not exist yet.
    Ok((if existed { 200 } else { 201 }, updated))
}

fn success_status(resource: Resource, object: &Value) -> Value {
    let mut details =
        json!({"name": name_of(object), "kind": resource.plural(), "uid": uid_of(object)});
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn delete(shared: &Shared, target: &ObjectRef, params: &Params, body: &Bytes) -> Answer {
    let options_body = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body)?
    };
    let options = DeleteOptions::parse(&options_body, &params.0)?;
    let mut cluster = shared.lock();
    let deleted = registry::delete(
        &mut cluster.store,
        target.resource,
        &target.namespace,
        &target.name,
        &options,
        Utc::now(),
    )?;
    drop(cluster);
    shared.wake.notify_one();
    Ok(match deleted {
        // Pods and namespaces answer with the object; the rest with a Status.
        Deleted::Gone(object) if matches!(target.resource, Resource::Pod | Resource::Namespace) => {
            (200, object)
        }
        Deleted::Gone(object) => (200, success_status(target.resource, &object)),
        Deleted::Pending(object) => (200, object),
    })
}

fn delete_collection(
    shared: &Shared,
    resource: Resource,
    namespace: Option<&str>,
    params: &Params,
    body: &Bytes,
) -> Answer {
    if resource == Resource::Namespace {
        return Err(ApiError::method_not_allowed());
    }
    let filter = Filter::parse(resource, namespace.map(str::to_owned), params)?;
    let options_body = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body)?
    };
    let options = DeleteOptions::parse(&options_body, &params.0)?;
    let mut cluster = shared.lock();
    let targets: Vec<(String, String)> = cluster
        .store
        .list(resource, namespace)
        .filter(|o| filter.matches(o))
        .map(|o| (namespace_of(o).to_owned(), name_of(o).to_owned()))
        .collect();
    let mut items = Vec::new();
    for (ns, name) in targets {
        match registry::delete(
            &mut cluster.store,
            resource,
            &ns,
            &name,
            &options,
            Utc::now(),
        )? {
            Deleted::Gone(object) | Deleted::Pending(object) => items.push(list_item(&object)),
        }
    }
    let rv = cluster.store.rv();
    drop(cluster);
    shared.wake.notify_one();
    Ok((
        200,
        json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    ))
}

fn log(shared: &Shared, namespace: &str, name: &str, params: &Params) -> Result<String, ApiError> {
    let cluster = shared.lock();
    let pod = cluster
        .store
        .get(Resource::Pod, namespace, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(Resource::Pod, name))?;
    let text = cluster
        .node
        .logs(&pod, params.get("container"), params.flag("previous"))?;
    Ok(
        match params
            .get("tailLines")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(n);
                lines[start..].iter().map(|l| format!("{l}\n")).collect()
            }
            None => text,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Watches.

struct WatchSpec {
    filter: Filter,
    format: Format,
    include: IncludeObject,
    /// `None`: start with synthetic ADDED events for the current state.
    after: Option<u64>,
    send_initial_events: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
}

fn watch(
    shared: &Arc<Shared>,
    resource: Resource,
    namespace: Option<String>,
    params: &Params,
    format: Format,
) -> Response {
    let filter = match Filter::parse(resource, namespace, params) {
        Ok(filter) => filter,
        Err(error) => return error_response(&error),
    };
    let after = match params.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid resource version: {rv}"
                )));
            }
        },
    };
    let timeout = match params.get("timeoutSeconds") {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(s) => Some(Duration::from_secs(s)),
            Err(_) => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid timeoutSeconds {s:?}"
                )));
            }
        },
    };
    let spec = WatchSpec {
        filter,
        format,
        include: IncludeObject::parse(params.get("includeObject")),
        after,
        send_initial_events: params.flag("sendInitialEvents"),
        bookmarks: params.flag("allowWatchBookmarks"),
        timeout,
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(stream_events(Arc::clone(shared), tx, spec));
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|item| item.map(Ok::<_, Infallible>))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| error_response(&ApiError::path_not_found()))
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn bookmark(resource: Resource, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": resource.kind(), "apiVersion": resource.api_version(), "metadata": metadata}),
    )
}

fn expired_line(rv: u64, oldest: u64) -> Bytes {
    line(
        "ERROR",
        ApiError::expired(format!("too old resource version: {rv} ({oldest})")).to_status(),
    )
}

impl WatchSpec {
    fn render(&self, object: &Value, first: &mut bool) -> Value {
        match self.format {
            Format::Object => object.clone(),
            Format::Metadata => table::partial_metadata(object),
            Format::Table => {
                let t = table::table(
                    self.filter.resource,
                    std::slice::from_ref(object),
                    str_at(object, "/metadata/resourceVersion").unwrap_or_default(),
                    self.include,
                    *first,
                    Utc::now(),
                );
                *first = false;
                t
            }
        }
    }
}

async fn stream_events(shared: Arc<Shared>, tx: mpsc::Sender<Bytes>, spec: WatchSpec) {
    let mut rv_rx = shared.rv_rx.clone();
    rv_rx.borrow_and_update();
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let resource = spec.filter.resource;
    let mut first = true;
    let start: Result<(u64, Vec<Value>), Bytes> = {
        let cluster = shared.lock();
        let too_old = spec.after.and_then(|rv| {
            cluster
                .store
                .changes_since(rv)
                .err()
                .map(|oldest| (rv, oldest))
        });
        match (too_old, spec.after) {
            (Some((rv, oldest)), _) => Err(expired_line(rv, oldest)),
            (None, Some(rv)) if !spec.send_initial_events => Ok((rv, Vec::new())),
            (None, _) => {
                let objects: Vec<Value> = cluster
                    .store
                    .list(resource, spec.filter.namespace.as_deref())
                    .filter(|o| spec.filter.matches(o))
                    .cloned()
                    .collect();
                Ok((cluster.store.rv(), objects))
            }
        }
    };
    let (mut last, initial) = match start {
        Ok(start) => start,
        Err(expired) => {
            let _ = tx.send(expired).await;
            return;
        }
    };
    for object in initial {
        let rendered = spec.render(&object, &mut first);
        if tx.send(line("ADDED", rendered)).await.is_err() {
            return;
        }
    }
    if spec.send_initial_events
        && spec.bookmarks
        && tx.send(bookmark(resource, last, true)).await.is_err()
    {
        return;
    }
    let mut bookmark_timer =
        tokio::time::interval(shared.timings.bookmark_every.max(Duration::from_millis(1)));
    bookmark_timer.tick().await;
    loop {
        let batch: Result<Vec<(Change, Value)>, u64> = {
            let cluster = shared.lock();
            match cluster.store.changes_since(last) {
                Err(oldest) => Err(oldest),
                Ok(changes) => {
                    let batch = changes
                        .filter(|e| e.resource == resource)
                        .filter_map(|e| {
                            let now = spec.filter.matches(&e.object);
                            let before = e.previous.as_ref().map(|p| spec.filter.matches(p));
                            match (e.change, before, now) {
                                (Change::Modified, Some(true), true) => {
                                    Some((Change::Modified, e.object.clone()))
                                }
                                (Change::Modified, Some(false), true) => {
                                    Some((Change::Added, e.object.clone()))
                                }
                                (Change::Modified, Some(true), false) => {
                                    // The previous content, at the resource version of the change.
                                    let mut gone = e.previous.clone().unwrap_or_default();
                                    gone["metadata"]["resourceVersion"] = json!(e.rv.to_string());
                                    Some((Change::Deleted, gone))
                                }
                                (Change::Added | Change::Deleted, _, true) => {
                                    Some((e.change, e.object.clone()))
                                }
                                _ => None,
                            }
                        })
                        .collect();
                    last = last.max(cluster.store.rv());
                    Ok(batch)
                }
            }
        };
        match batch {
            Err(oldest) => {
                let _ = tx.send(expired_line(last, oldest)).await;
                return;
            }
            Ok(batch) => {
                for (change, object) in batch {
                    let rendered = spec.render(&object, &mut first);
                    if tx.send(line(change.as_str(), rendered)).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            changed = rv_rx.changed() => if changed.is_err() { return },
            _ = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => return,
            _ = bookmark_timer.tick(), if spec.bookmarks => {
                if tx.send(bookmark(resource, last, false)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let check = |path: &str, expected: &str| {
            assert_eq!(format!("{:?}", route(path)), expected, "{path}");
        };
        check(
            "/apis/apps/v1/deployments",
            "Some(Collection { resource: Deployment, namespace: None })",
        );
        check(
            "/apis/apps/v1/namespaces/ns/deployments",
            "Some(Collection { resource: Deployment, namespace: Some(\"ns\") })",
        );
        check(
            "/apis/apps/v1/namespaces/ns/deployments/web/scale",
            "Some(Object { resource: Deployment, namespace: \"ns\", name: \"web\", subresource: Some(\"scale\") })",
        );
        check(
            "/api/v1/namespaces/ns",
            "Some(Object { resource: Namespace, namespace: \"\", name: \"ns\", subresource: None })",
        );
        check(
            "/api/v1/namespaces/ns/status",
            "Some(Object { resource: Namespace, namespace: \"\", name: \"ns\", subresource: Some(\"status\") })",
        );
        check(
            "/api/v1/namespaces/ns/pods/p/log",
            "Some(Object { resource: Pod, namespace: \"ns\", name: \"p\", subresource: Some(\"log\") })",
        );
        check("/api/v1/pods/p", "None");
        check("/apis/apps/v1/pods", "None");
        check("/apis/batch/v1/jobs", "None");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "default/web");
        assert_eq!(
            decode_continue(&token),
            Some((42, "default/web".to_owned()))
        );
        assert_eq!(decode_continue("nope"), None);
    }
}
