//! A Deployment's revisions — the ReplicaSets it controls — and how to go back to one, exactly as
//! `kubectl rollout history` and `kubectl rollout undo` (`DeploymentRollbacker` in kubectl's
//! `rollback.go`) do.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::report::Revision;
use crate::{CHANGE_CAUSE_ANNOTATION, Error, Result};

/// The revision number the deployment controller writes on each ReplicaSet (and on the
/// Deployment: the revision of its newest ReplicaSet).
pub(crate) const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The label the controller adds to a ReplicaSet's selector and template to tell them apart.
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotations that describe a ReplicaSet or Deployment rather than a revision: kubectl keeps the
/// Deployment's own values for these when it rolls back.
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The `deployment.kubernetes.io/revision` annotation, if present and a number.
pub fn revision_of(meta: &ObjectMeta) -> Option<i64> {
    meta.annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)?
        .trim()
        .parse()
        .ok()
}

/// The ReplicaSets whose controller is `deployment` (by owner reference uid), as the deployment
/// controller and kubectl count them.
pub(crate) fn controlled<'a>(
    deployment: &Deployment,
    replica_sets: &'a [ReplicaSet],
) -> Vec<&'a ReplicaSet> {
    let Some(uid) = deployment.metadata.uid.as_deref() else {
        return Vec::new();
    };
    replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.controller == Some(true) && owner.uid == uid)
        })
        .collect()
}

/// The ReplicaSet running `deployment`'s current template: the oldest controlled one whose
/// template equals the Deployment's, ignoring `pod-template-hash` (the controller's
/// `FindNewReplicaSet`). None until the controller has created it.
pub fn new_replica_set<'a>(
    deployment: &Deployment,
    replica_sets: &'a [ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let template = normalized(Some(&deployment.spec.template))?;
    let mut matching: Vec<&ReplicaSet> = controlled(deployment, replica_sets)
        .into_iter()
        .filter(|rs| normalized(rs.spec.template.as_ref()).as_ref() == Some(&template))
        .collect();
    matching.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    });
    matching.first().copied()
}

/// What `kubectl rollout undo` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// Send `patch` (a JSON patch) to restore revision `revision`.
    Patch {
        revision: i64,
        patch: json_patch::Patch,
    },
    /// The Deployment already runs revision `revision`'s template: nothing to send ("skipped
    /// rollback" in kubectl's words).
    AlreadyCurrent { revision: i64 },
}

/// The JSON patch `kubectl rollout undo [--to-revision=N]` sends: `to_revision` None means the
/// newest revision but one. It replaces `/spec/template` with the revision's template (without
/// `pod-template-hash`) and `/metadata/annotations` with the revision's annotations, keeping the
/// Deployment's own values for the annotations kubectl skips.
pub fn undo_patch(
    deployment: &Deployment,
    replica_sets: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<Undo> {
    let what = describe(deployment);
    let owned = controlled(deployment, replica_sets);
    let numbered = || {
        owned
            .iter()
            .filter_map(|rs| Some((revision_of(&rs.metadata)?, *rs)))
    };
    let target = match to_revision {
        Some(revision) => numbered()
            .find(|(number, _)| *number == revision)
            .ok_or_else(|| {
                let mut known: Vec<i64> = numbered().map(|(number, _)| number).collect();
                known.sort_unstable();
                Error::UnknownRevision {
                    deployment: what.clone(),
                    revision,
                    known,
                }
            })?,
        None => {
            let mut all: Vec<(i64, &ReplicaSet)> = numbered().collect();
            all.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
            *all.get(1).ok_or_else(|| Error::NotFound {
                what: format!("an earlier revision of deployment {what}"),
            })?
        }
    };
    let (revision, replica_set) = target;
    if deployment.spec.paused == Some(true) {
        return Err(Error::Paused { deployment: what });
    }
    let mut template = replica_set.spec.template.clone().unwrap_or_default();
    let current = normalized(Some(&deployment.spec.template));
    if current.is_some() && normalized(Some(&template)) == current {
        return Ok(Undo::AlreadyCurrent { revision });
    }
    if let Some(labels) = template
        .metadata
        .as_mut()
        .and_then(|meta| meta.labels.as_mut())
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    let mut annotations = BTreeMap::new();
    let own = deployment.metadata.annotations.clone().unwrap_or_default();
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(value) = own.get(key) {
            annotations.insert(key.to_owned(), value.clone());
        }
    }
    for (key, value) in replica_set.metadata.annotations.iter().flatten() {
        if !ANNOTATIONS_TO_SKIP.contains(&key.as_str()) {
            annotations.insert(key.clone(), value.clone());
        }
    }
    let patch = serde_json::json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    let patch = serde_json::from_value(patch).map_err(|err| {
        Error::Api(format!(
            "cannot build the rollback patch for deployment {what}: {err}"
        ))
    })?;
    Ok(Undo::Patch { revision, patch })
}

/// The Deployment's revisions, oldest first, as `kubectl rollout history` lists them.
pub fn history(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Vec<Revision> {
    let current = new_replica_set(deployment, replica_sets).and_then(|rs| rs.metadata.uid.clone());
    let mut revisions: Vec<Revision> = controlled(deployment, replica_sets)
        .into_iter()
        .filter_map(|rs| {
            let revision = revision_of(&rs.metadata)?;
            let images = rs
                .spec
                .template
                .as_ref()
                .and_then(|template| template.spec.as_ref())
                .map(|spec| {
                    spec.containers
                        .iter()
                        .filter_map(|c| c.image.clone())
                        .collect()
                })
                .unwrap_or_default();
            Some(Revision {
                revision,
                change_cause: rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHANGE_CAUSE_ANNOTATION))
                    .cloned(),
                images,
                replica_set: rs.metadata.name.clone().unwrap_or_default(),
                current: current.is_some() && rs.metadata.uid == current,
            })
        })
        .collect();
    revisions.sort_by_key(|revision| revision.revision);
    revisions
}

/// "namespace/name" of an object.
pub(crate) fn describe(deployment: &Deployment) -> String {
    format!(
        "{}/{}",
        deployment
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default"),
        deployment.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A template as JSON without `pod-template-hash` and without empty values, so that two
/// templates compare as Kubernetes' semantic equality does (nil and empty are equal).
fn normalized(template: Option<&PodTemplateSpec>) -> Option<Value> {
    let mut value = serde_json::to_value(template?).ok()?;
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    prune(&mut value);
    Some(value)
}

fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                prune(child);
            }
            map.retain(|_, child| !is_empty(child));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    const UID: &str = "4f0c-deploy";

    fn template(image: &str, hash: Option<&str>) -> Value {
        let mut labels = json!({"app": "backend"});
        if let (Some(hash), Some(map)) = (hash, labels.as_object_mut()) {
            map.insert(POD_TEMPLATE_HASH.into(), hash.into());
        }
        json!({
            "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {"containers": [{"name": "app", "image": image, "resources": {"limits": {"memory": "128Mi"}}}]}
        })
    }

    fn deployment(image: &str, annotations: Value, paused: bool) -> Deployment {
        from(json!({
            "metadata": {"name": "backend", "namespace": "pet-project", "uid": UID, "generation": 7, "annotations": annotations},
            "spec": {"replicas": 3, "paused": paused, "selector": {"matchLabels": {"app": "backend"}}, "template": template(image, None)}
        }))
    }

    fn replica_set(
        revision: i64,
        hash: &str,
        image: &str,
        cause: Option<&str>,
        owner: &str,
    ) -> ReplicaSet {
        let mut annotations = json!({
            REVISION_ANNOTATION: revision.to_string(),
            "deployment.kubernetes.io/desired-replicas": "3",
            "deployment.kubernetes.io/max-replicas": "4",
        });
        if let (Some(cause), Some(map)) = (cause, annotations.as_object_mut()) {
            map.insert(CHANGE_CAUSE_ANNOTATION.into(), cause.into());
        }
        from(json!({
            "metadata": {
                "name": format!("backend-{hash}"), "namespace": "pet-project", "uid": format!("rs-{hash}"),
                "creationTimestamp": format!("2025-01-01T00:00:0{revision}Z"),
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend", "uid": owner, "controller": true}]
            },
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "backend", POD_TEMPLATE_HASH: hash}}, "template": template(image, Some(hash))}
        }))
    }

    fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
        match serde_json::from_value(value) {
            Ok(object) => object,
            Err(err) => panic!("bad fixture: {err}"),
        }
    }

    /// Revisions 1–3 of backend (v1, v2, v3), v3 current, plus a ReplicaSet of another owner.
    fn three_revisions() -> Vec<ReplicaSet> {
        vec![
            replica_set(
                2,
                "66b8",
                "registry.local/backend:v2",
                Some("gantry pet-project #41 1a2b3c4"),
                UID,
            ),
            replica_set(1, "5f7c", "registry.local/backend:v1", None, UID),
            replica_set(
                3,
                "7d9f",
                "registry.local/backend:v3",
                Some("gantry pet-project #42 5d6e7f8"),
                UID,
            ),
            replica_set(9, "aaaa", "registry.local/other:v9", None, "someone-else"),
        ]
    }

    fn current_annotations() -> Value {
        json!({
            REVISION_ANNOTATION: "3",
            CHANGE_CAUSE_ANNOTATION: "gantry pet-project #42 5d6e7f8",
            "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}",
            "team": "pets"
        })
    }

    fn check(
        deployment: &Deployment,
        replica_sets: &[ReplicaSet],
        to: Option<i64>,
        expected: Expect,
    ) {
        let actual = match undo_patch(deployment, replica_sets, to) {
            Ok(Undo::Patch { revision, patch }) => match serde_json::to_string_pretty(&patch) {
                Ok(json) => format!("revision {revision}\n{json}"),
                Err(err) => panic!("{err}"),
            },
            Ok(Undo::AlreadyCurrent { revision }) => format!("already at revision {revision}"),
            Err(err) => format!("error: {err}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn undo_to_the_previous_revision() {
        let d = deployment("registry.local/backend:v3", current_annotations(), false);
        check(
            &d,
            &three_revisions(),
            None,
            expect![[r#"
            revision 2
            [
              {
                "op": "replace",
                "path": "/spec/template",
                "value": {
                  "metadata": {
                    "annotations": {
                      "prometheus.io/scrape": "true"
                    },
                    "labels": {
                      "app": "backend"
                    }
                  },
                  "spec": {
                    "containers": [
                      {
                        "image": "registry.local/backend:v2",
                        "name": "app",
                        "resources": {
                          "limits": {
                            "memory": "128Mi"
                          }
                        }
                      }
                    ]
                  }
                }
              },
              {
                "op": "replace",
                "path": "/metadata/annotations",
                "value": {
                  "deployment.kubernetes.io/revision": "3",
                  "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}",
                  "kubernetes.io/change-cause": "gantry pet-project #41 1a2b3c4"
                }
              }
            ]"#]],
        );
    }

    #[test]
    fn undo_to_a_given_revision_drops_a_change_cause_it_lacks() {
        let d = deployment("registry.local/backend:v3", current_annotations(), false);
        check(
            &d,
            &three_revisions(),
            Some(1),
            expect![[r#"
            revision 1
            [
              {
                "op": "replace",
                "path": "/spec/template",
                "value": {
                  "metadata": {
                    "annotations": {
                      "prometheus.io/scrape": "true"
                    },
                    "labels": {
                      "app": "backend"
                    }
                  },
                  "spec": {
                    "containers": [
                      {
                        "image": "registry.local/backend:v1",
                        "name": "app",
                        "resources": {
                          "limits": {
                            "memory": "128Mi"
                          }
                        }
                      }
                    ]
                  }
                }
              },
              {
                "op": "replace",
                "path": "/metadata/annotations",
                "value": {
                  "deployment.kubernetes.io/revision": "3",
                  "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}"
                }
              }
            ]"#]],
        );
    }

    #[test]
    fn undo_refusals() {
        let d = deployment("registry.local/backend:v3", current_annotations(), false);
        check(
            &d,
            &three_revisions(),
            Some(9),
            expect![[
                "error: deployment pet-project/backend has no revision 9 (revisions: 1, 2, 3)"
            ]],
        );
        check(
            &d,
            &three_revisions(),
            Some(3),
            expect!["already at revision 3"],
        );
        check(
            &d,
            &three_revisions()[2..],
            None,
            expect![["error: an earlier revision of deployment pet-project/backend not found"]],
        );
        let paused = deployment("registry.local/backend:v3", current_annotations(), true);
        check(
            &paused,
            &three_revisions(),
            None,
            expect![[
                "error: deployment pet-project/backend is paused; resume it first (kubectl rollout resume deployment/backend -n pet-project)"
            ]],
        );
        // kubectl looks the revision up before it looks at `paused`.
        check(
            &paused,
            &three_revisions(),
            Some(9),
            expect![[
                "error: deployment pet-project/backend has no revision 9 (revisions: 1, 2, 3)"
            ]],
        );
    }

    #[test]
    fn new_replica_set_ignores_the_hash_and_other_owners() {
        let replica_sets = three_revisions();
        let name = |image: &str| {
            let d = deployment(image, json!({}), false);
            new_replica_set(&d, &replica_sets).and_then(|rs| rs.metadata.name.clone())
        };
        assert_eq!(
            name("registry.local/backend:v2").as_deref(),
            Some("backend-66b8")
        );
        assert_eq!(name("registry.local/other:v9"), None);
        assert_eq!(name("registry.local/backend:v4"), None);
    }

    #[test]
    fn history_like_kubectl() {
        let d = deployment("registry.local/backend:v3", current_annotations(), false);
        let lines: Vec<String> = history(&d, &three_revisions())
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {:?}{}",
                    r.revision,
                    r.change_cause.as_deref().unwrap_or("<none>"),
                    r.replica_set,
                    r.images,
                    if r.current { " (current)" } else { "" }
                )
            })
            .collect();
        expect![[r#"
            1 <none> backend-5f7c ["registry.local/backend:v1"]
            2 gantry pet-project #41 1a2b3c4 backend-66b8 ["registry.local/backend:v2"]
            3 gantry pet-project #42 5d6e7f8 backend-7d9f ["registry.local/backend:v3"] (current)"#]]
        .assert_eq(&lines.join("\n"));
    }
}
