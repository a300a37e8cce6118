//! kubectl and Gantry agree: on the undo patch, on the history, on the rollout status.
//!
//! These run the real `kubectl` against the emulator. Without kubectl they skip with a note,
//! except under `CI=true`, where a missing kubectl is a failure.

use gantry_kube::{Outcome, Revision};
use gantry_testkit::kube::Kubectl;
use serde_json::Value;

use crate::support::{self, NAME, NS, Setup, request, setup};

fn gantry_history(history: &[Revision]) -> Vec<(i64, Option<String>)> {
    history
        .iter()
        .map(|r| (r.revision, r.change_cause.clone()))
        .collect()
}

/// A JSON value without nulls and empty objects or arrays: Go's encoder writes
/// `"creationTimestamp": null` where Rust's leaves the field out; both mean the same.
fn pruned(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), pruned(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v == &Value::Object(Default::default())
                        || v == &Value::Array(vec![]))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(pruned).collect()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn gantry_sends_the_undo_patch_kubectl_sends() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    for version in [2, 3] {
        let (report, _) = support::rollout(&cluster, &request(&format!("backend:{version}"))).await;
        assert_eq!(report.unwrap().outcome, Outcome::Complete);
    }
    // kubectl sends its patch as a server-side dry run: the same request, nothing changes.
    emulator.clear_requests();
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    let said = kubectl.ok(&[
        "rollout",
        "undo",
        &format!("deployment/{NAME}"),
        "-n",
        NS,
        "--dry-run=server",
    ]);
    assert!(said.contains("rolled back"), "{said}");
    let theirs = emulator
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("kubectl's patch");
    assert_eq!(support::image(&emulator), "backend:3");

    emulator.clear_requests();
    let (report, _) = support::rollback(&cluster, None).await;
    assert_eq!(report.unwrap().rolled_back_to, Some(2));
    let ours = emulator
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("Gantry's patch");

    assert_eq!(ours.path, theirs.path);
    assert_eq!(ours.content_type, theirs.content_type);
    assert_eq!(
        ours.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    let (ours, theirs) = (
        pruned(&ours.json().unwrap()),
        pruned(&theirs.json().unwrap()),
    );
    assert_eq!(ours, theirs, "ours:\n{ours:#}\nkubectl's:\n{theirs:#}");
}

#[tokio::test]
async fn kubectl_shows_the_history_gantry_shows() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let (report, _) = support::rollout(&cluster, &request("backend:2")).await;
    assert_eq!(report.unwrap().outcome, Outcome::Complete);
    let (report, _) = support::rollout(&cluster, &request("backend:crash")).await;
    assert!(matches!(
        report.unwrap().outcome,
        Outcome::RolledBack { revision: 2, .. }
    ));
    let (report, _) = support::rollback(&cluster, Some(1)).await;
    assert!(matches!(
        report.unwrap().outcome,
        Outcome::RolledBack { revision: 1, .. }
    ));

    let ours = gantry_history(&cluster.history(NS, NAME).await.unwrap());
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    assert_eq!(ours, kubectl.rollout_history(NS, NAME));
    assert_eq!(
        ours,
        [
            (3, Some("gantry shop #7 backend:crash".to_owned())),
            (4, Some("gantry shop #7 backend:2".to_owned())),
            (5, None),
        ]
    );
}

#[tokio::test]
async fn kubectl_agrees_the_rollout_is_complete() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let (report, _) = support::rollout(&cluster, &request("backend:2")).await;
    assert_eq!(report.unwrap().outcome, Outcome::Complete);
    let Some(kubectl) = Kubectl::new(&emulator) else {
        return;
    };
    let said = kubectl.ok(&[
        "rollout",
        "status",
        &format!("deployment/{NAME}"),
        "-n",
        NS,
        "--watch=false",
    ]);
    assert_eq!(
        said.trim(),
        "deployment \"backend\" successfully rolled out"
    );
}
