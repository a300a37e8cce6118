//! kubectl and Gantry agree: on the undo patch, on the history, on the rollout status.
//!
//! These run the real `kubectl` against the emulator. Without kubectl they skip with a note,
//! except under `CI=true`, where a missing kubectl is a failure.

use std::process::Command;

use gantry_kube::{Outcome, Revision};
use gantry_testkit::kube::Emulator;
use serde_json::Value;

use crate::support::{self, NAME, NS, Setup, request, setup};

/// Runs kubectl against the emulator; None (after a note) when kubectl is not installed.
fn kubectl(emulator: &Emulator, args: &[&str]) -> Option<String> {
    let output = match Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(emulator.kubeconfig_path())
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: cannot run kubectl: {err}");
            return None;
        }
        Err(err) => panic!("kubectl is needed under CI=true: {err}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(stdout)
}

/// `kubectl rollout history` as (revision, change cause) pairs.
fn kubectl_history(emulator: &Emulator) -> Option<Vec<(i64, Option<String>)>> {
    let text = kubectl(
        emulator,
        &[
            "rollout",
            "history",
            &format!("deployment/{NAME}"),
            "-n",
            NS,
        ],
    )?;
    // deployment.apps/backend
    // REVISION  CHANGE-CAUSE
    // 1         <none>
    let rows = text
        .lines()
        .skip_while(|line| !line.starts_with("REVISION"))
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (revision, cause) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let cause = cause.trim();
            (
                revision.parse().unwrap(),
                (cause != "<none>").then(|| cause.to_owned()),
            )
        })
        .collect();
    Some(rows)
}

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
    let Some(said) = kubectl(
        &emulator,
        &[
            "rollout",
            "undo",
            &format!("deployment/{NAME}"),
            "-n",
            NS,
            "--dry-run=server",
        ],
    ) else {
        return;
    };
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
    let Some(theirs) = kubectl_history(&emulator) else {
        return;
    };
    assert_eq!(ours, theirs);
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
    let Some(said) = kubectl(
        &emulator,
        &[
            "rollout",
            "status",
            &format!("deployment/{NAME}"),
            "-n",
            NS,
            "--watch=false",
        ],
    ) else {
        return;
    };
    assert_eq!(
        said.trim(),
        "deployment \"backend\" successfully rolled out"
    );
}
