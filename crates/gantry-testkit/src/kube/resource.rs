//! The resource types the emulator serves, and the discovery documents that describe them.

use serde_json::{Value, json};

/// A kind of object the emulator stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Namespace,
    Pod,
    Event,
    Deployment,
    ReplicaSet,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Namespace,
        Resource::Pod,
        Resource::Event,
        Resource::Deployment,
        Resource::ReplicaSet,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespace => "Namespace",
            Resource::Pod => "Pod",
            Resource::Event => "Event",
            Resource::Deployment => "Deployment",
            Resource::ReplicaSet => "ReplicaSet",
        }
    }

    /// The URL segment, e.g. `deployments`.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespace => "namespaces",
            Resource::Pod => "pods",
            Resource::Event => "events",
            Resource::Deployment => "deployments",
            Resource::ReplicaSet => "replicasets",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Resource::Namespace => "namespace",
            Resource::Pod => "pod",
            Resource::Event => "event",
            Resource::Deployment => "deployment",
            Resource::ReplicaSet => "replicaset",
        }
    }

    /// The API group: `""` for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Resource::Namespace | Resource::Pod | Resource::Event => "",
            Resource::Deployment | Resource::ReplicaSet => "apps",
        }
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "" => "v1",
            _ => "apps/v1",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Resource::Namespace
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Namespace => &["ns"],
            Resource::Pod => &["po"],
            Resource::Event => &["ev"],
            Resource::Deployment => &["deploy"],
            Resource::ReplicaSet => &["rs"],
        }
    }

    /// The name errors use, as the API server writes it: `deployments.apps`, `pods`.
    pub(crate) fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The resource at `/api/v1/<plural>` (group `""`) or `/apis/<group>/v1/<plural>`.
    pub(crate) fn from_path(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.plural() == plural)
    }

    /// Whether writes to the object's `spec` bump `metadata.generation`.
    pub(crate) fn has_generation(self) -> bool {
        matches!(self, Resource::Deployment | Resource::ReplicaSet)
    }

    pub(crate) fn has_status(self) -> bool {
        self != Resource::Event
    }

    pub(crate) fn has_scale(self) -> bool {
        matches!(self, Resource::Deployment | Resource::ReplicaSet)
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn apps_group() -> Value {
    json!({
        "name": "apps",
        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
    })
}

/// `/apis`.
pub(crate) fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps_group()]})
}

/// `/apis/apps`.
pub(crate) fn apps_group_doc() -> Value {
    let mut group = apps_group();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    group
}

/// `/api/v1` or `/apis/apps/v1`.
pub(crate) fn resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for resource in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        let mut entry = json!({
            "name": resource.plural(),
            "singularName": resource.singular(),
            "namespaced": resource.namespaced(),
            "kind": resource.kind(),
            "verbs": VERBS,
            "shortNames": resource.short_names(),
        });
        if matches!(
            resource,
            Resource::Pod | Resource::Deployment | Resource::ReplicaSet
        ) {
            entry["categories"] = json!(["all"]);
        }
        if resource == Resource::Namespace {
            entry["verbs"] = json!([
                "create", "delete", "get", "list", "patch", "update", "watch"
            ]);
        }
        resources.push(entry);
        if resource.has_scale() {
            resources.push(json!({
                "name": format!("{}/scale", resource.plural()),
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if resource.has_status() {
            resources.push(json!({
                "name": format!("{}/status", resource.plural()),
                "singularName": "",
                "namespaced": resource.namespaced(),
                "kind": resource.kind(),
                "verbs": ["get", "patch", "update"],
            }));
        }
        if resource == Resource::Pod {
            resources.push(json!({
                "name": "pods/log",
                "singularName": "",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["get"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// `/openapi/v3`: the index of the group versions' documents.
pub(crate) fn openapi_v3_index() -> Value {
    json!({"paths": {
        "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=emulator-1"},
        "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=emulator-1"},
    }})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/apps/v1`: the operations, without schemas. It
/// tells `kubectl` that writes take the `fieldValidation` parameter, which is all it asks of
/// the document before `apply`; without schemas it computes patches from its built-in types.
pub(crate) fn openapi_v3(group: &str) -> Value {
    let prefix = if group.is_empty() {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{group}/v1")
    };
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
    let mut paths = serde_json::Map::new();
    for resource in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        let gvk = json!({"group": group, "version": "v1", "kind": resource.kind()});
        let (collection, object) = if resource.namespaced() {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", resource.plural()),
                format!(
                    "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                    resource.plural()
                ),
            )
        } else {
            (
                format!("{prefix}/{}", resource.plural()),
                format!("{prefix}/{}/{{name}}", resource.plural()),
            )
        };
        let operation = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(
            collection,
            json!({"post": operation("post"), "get": operation("list")}),
        );
        paths.insert(
            object,
            json!({
                "get": operation("get"),
                "put": operation("put"),
                "patch": operation("patch"),
                "delete": operation("delete"),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}
