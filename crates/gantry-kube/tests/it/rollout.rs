//! Rollouts: a good one, each fault caught with its cause and undone, and the ways a rollout
//! ends without a diagnosis (timeout, progress deadline, cancellation).

use std::time::Duration;

use expect_test::{Expect, expect};
use gantry_kube::{Outcome, RolloutRequest};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{self, NAME, NS, Setup, deployment, image, masked, request, setup, writes};

#[tokio::test]
async fn a_good_rollout_completes() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let (report, lines) = support::rollout(&cluster, &request("backend:2")).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{lines:#?}");
    assert_eq!(report.image_before.as_deref(), Some("backend:1"));
    assert_eq!(report.image_after, "backend:2");
    assert_eq!(
        (report.revision_before, report.revision_after),
        (Some(1), Some(2))
    );
    assert_eq!(report.rolled_back_to, None);
    assert_eq!(report.failure_detected_at, None);
    assert_eq!(image(&emulator), "backend:2");
    let d = deployment(&emulator);
    assert_eq!(
        d["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "gantry shop #7 backend:2"
    );
    assert_eq!(
        lines.first().map(String::as_str),
        Some("deployment shop/backend: container backend backend:1 → backend:2 (revision 1)")
    );
    assert_eq!(lines.last().map(String::as_str), Some("rollout complete"));
    assert!(
        lines.iter().any(|l| l.contains(" of 2 updated, ")),
        "{lines:#?}"
    );

    // One write: the strategic merge patch of the image and the change cause, with the
    // resource version read just before as its precondition.
    let writes = writes(&emulator);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let patch = &writes[0];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        "/apis/apps/v1/namespaces/shop/deployments/backend"
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(patch.param("fieldManager").as_deref(), Some("gantry"));
    let mut body = patch.json().unwrap();
    assert!(body["metadata"]["resourceVersion"].is_string());
    body["metadata"]["resourceVersion"] = json!("<rv>");
    expect![[r#"
        {
          "metadata": {
            "annotations": {
              "kubernetes.io/change-cause": "gantry shop #7 backend:2"
            },
            "resourceVersion": "<rv>"
          },
          "spec": {
            "template": {
              "spec": {
                "containers": [
                  {
                    "image": "backend:2",
                    "name": "backend"
                  }
                ]
              }
            }
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&body).unwrap());

    // The watches are watches, not a polling loop.
    let requests = emulator.requests();
    let watches = requests.iter().filter(|r| r.is_watch()).count();
    let gets = requests
        .iter()
        .filter(|r| r.method == "GET" && !r.is_watch())
        .count();
    assert!(watches >= 3, "{requests:#?}");
    assert!(
        gets <= 5,
        "a rollout should read a handful of times, not poll: {requests:#?}"
    );
}

/// Rolls out `fault_image`, expects it caught and undone, and checks the cause.
async fn check_fault(fault_image: &str, expected: Expect) {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let (report, lines) = support::rollout(&cluster, &request(fault_image)).await;
    let report = report.unwrap();
    let Outcome::RolledBack { cause, revision } = &report.outcome else {
        panic!("expected a rollback, got {:?}\n{lines:#?}", report.outcome);
    };
    assert_eq!(*revision, 1);
    expected.assert_eq(&masked(&report.outcome.to_string()));
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("rollout failed: {cause}")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "rolling back to revision 1"),
        "{lines:#?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("rolled back to revision 1 (now revision 3)")
    );
    assert_eq!(
        (
            report.revision_before,
            report.revision_after,
            report.rolled_back_to
        ),
        (Some(1), Some(2), Some(1))
    );
    let detected = report.failure_detected_at.unwrap();
    let sent = report.rollback_sent_at.unwrap();
    assert!(detected <= sent && sent <= report.finished_at);

    // The cluster runs the old template again, as revision 3.
    assert_eq!(image(&emulator), "backend:1");
    let d = deployment(&emulator);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(5));
    let history: Vec<(i64, Vec<String>)> = cluster
        .history(NS, NAME)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.revision, r.images))
        .collect();
    assert_eq!(
        history,
        [
            (2, vec![fault_image.to_owned()]),
            (3, vec!["backend:1".to_owned()])
        ]
    );
}

#[tokio::test]
async fn crash_loop_is_caught_and_rolled_back() {
    check_fault(
        "backend:crash",
        expect!["rolled back to revision 1: pod <pod> CrashLoopBackOff (exit code 1), restarted <n> time"],
    )
    .await;
}

#[tokio::test]
async fn oom_kill_is_caught_and_rolled_back() {
    check_fault(
        "backend:oom",
        expect!["rolled back to revision 1: pod <pod> OOMKilled (memory limit 128Mi), restarted <n> time"],
    )
    .await;
}

#[tokio::test]
async fn missing_image_is_caught_and_rolled_back() {
    check_fault(
        "backend:missing",
        expect![[r#"rolled back to revision 1: pod <pod> cannot pull image backend:missing (ErrImagePull): rpc error: code = NotFound desc = failed to pull and unpack image "backend:missing": failed to resolve reference "backend:missing": backend:missing: not found"#]],
    )
    .await;
}

#[tokio::test]
async fn unschedulable_pods_are_caught_after_the_grace_period() {
    check_fault(
        "backend:unschedulable",
        expect!["rolled back to revision 1: pod <pod> unschedulable for 1s: 0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."],
    )
    .await;
}

#[tokio::test]
async fn config_error_is_caught_and_rolled_back() {
    check_fault(
        "backend:configerror",
        expect![[r#"rolled back to revision 1: pod <pod> CreateContainerConfigError: configmap "backend-config" not found"#]],
    )
    .await;
}

#[tokio::test]
async fn without_auto_rollback_a_failure_is_left_in_place() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let req = RolloutRequest {
        auto_rollback: false,
        ..request("backend:crash")
    };
    let (report, lines) = support::rollout(&cluster, &req).await;
    let report = report.unwrap();
    expect!["rollout failed: pod <pod> CrashLoopBackOff (exit code 1), restarted <n> time"]
        .assert_eq(&masked(&report.outcome.to_string()));
    assert!(
        matches!(report.outcome, Outcome::Failed { .. }),
        "{lines:#?}"
    );
    assert!(report.failure_detected_at.is_some());
    assert_eq!(
        (report.rollback_sent_at, report.rolled_back_to),
        (None, None)
    );
    assert_eq!(image(&emulator), "backend:crash");
    assert_eq!(writes(&emulator).len(), 1, "only the image patch");
}

#[tokio::test]
async fn a_rollout_that_never_becomes_ready_times_out() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let req = RolloutRequest {
        timeout: Duration::from_secs(2),
        auto_rollback: false,
        ..request("backend:slow")
    };
    let (report, lines) = support::rollout(&cluster, &req).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::TimedOut, "{lines:#?}");
    let took = report.duration();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(image(&emulator), "backend:slow");
}

#[tokio::test]
async fn with_auto_rollback_a_timeout_is_undone() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let req = RolloutRequest {
        timeout: Duration::from_secs(2),
        ..request("backend:slow")
    };
    let (report, lines) = support::rollout(&cluster, &req).await;
    let report = report.unwrap();
    expect!["rolled back to revision 1: rollout did not complete within 2s (1 of 2 updated, 2 available, 2 old pending termination)"]
        .assert_eq(&report.outcome.to_string());
    assert_eq!(image(&emulator), "backend:1", "{lines:#?}");
}

#[tokio::test]
async fn the_progress_deadline_fails_the_rollout() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    emulator.patch_deployment(NS, NAME, &json!({"spec": {"progressDeadlineSeconds": 1}}));
    let (report, lines) = support::rollout(&cluster, &request("backend:slow")).await;
    let report = report.unwrap();
    expect![[r#"rolled back to revision 1: deployment "backend" exceeded its progress deadline"#]]
        .assert_eq(&report.outcome.to_string());
    assert_eq!(image(&emulator), "backend:1", "{lines:#?}");
}

#[tokio::test]
async fn a_short_outage_during_the_watch_is_ridden_out() {
    let emulator = gantry_testkit::kube::Emulator::builder()
        .pod_ready_after(Duration::from_secs(2))
        .start();
    emulator.apply_deployment(NS, NAME, "backend:1", 1);
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    let cluster = support::connect(&emulator).await;
    let req = request("backend:2");
    let (tx, mut rx) = mpsc::channel(64);
    let run = tokio::spawn({
        let cluster = cluster.clone();
        async move { cluster.rollout(&req, tx, CancellationToken::new()).await }
    });
    // The first status line comes from the watch: Gantry is watching now.
    let mut lines = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    emulator.set_unreachable(true);
    tokio::time::sleep(Duration::from_millis(700)).await;
    emulator.set_unreachable(false);
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{lines:#?}");
}

#[tokio::test]
async fn cancellation_stops_watching_and_leaves_the_deployment() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(64);
    let run = tokio::spawn({
        let cluster = cluster.clone();
        let cancel = cancel.clone();
        async move { cluster.rollout(&request("backend:slow"), tx, cancel).await }
    });
    rx.recv().await.unwrap();
    cancel.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(image(&emulator), "backend:slow");
}
