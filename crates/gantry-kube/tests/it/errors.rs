//! What Gantry refuses or cannot do, and how it says so.

use std::time::{Duration, Instant};

use expect_test::expect;
use gantry_kube::{Cluster, ClusterConfig, Error, Outcome, RolloutRequest};
use gantry_testkit::kube::Emulator;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{self, NAME, NS, Setup, image, request, setup, writes};

#[tokio::test]
async fn a_paused_deployment_is_refused_before_any_change() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    emulator.patch_deployment(NS, NAME, &json!({"spec": {"paused": true}}));
    emulator.clear_requests();
    let (report, _) = support::rollout(&cluster, &request("backend:2")).await;
    let err = report.unwrap_err();
    assert_eq!(
        err,
        Error::Paused {
            deployment: "shop/backend".into()
        }
    );
    expect!["deployment shop/backend is paused; resume it first (kubectl rollout resume deployment/backend -n shop)"]
        .assert_eq(&err.to_string());
    assert!(writes(&emulator).is_empty());
    assert_eq!(image(&emulator), "backend:1");
}

#[tokio::test]
async fn a_paused_deployment_cannot_be_rolled_back() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    let (report, _) = support::rollout(&cluster, &request("backend:2")).await;
    assert_eq!(report.unwrap().outcome, Outcome::Complete);
    emulator.patch_deployment(NS, NAME, &json!({"spec": {"paused": true}}));
    emulator.clear_requests();
    let (report, _) = support::rollback(&cluster, None).await;
    assert_eq!(
        report.unwrap_err(),
        Error::Paused {
            deployment: "shop/backend".into()
        }
    );
    assert!(writes(&emulator).is_empty());
}

#[tokio::test]
async fn a_missing_deployment_is_not_found() {
    let Setup {
        emulator: _emulator,
        cluster,
    } = setup("backend:1").await;
    let req = RolloutRequest {
        deployment: "frontend".into(),
        ..request("frontend:2")
    };
    let (report, _) = support::rollout(&cluster, &req).await;
    expect!["deployment shop/frontend not found"].assert_eq(&report.unwrap_err().to_string());
    let err = cluster.history("elsewhere", "backend").await.unwrap_err();
    assert_eq!(
        err,
        Error::NotFound {
            what: "deployment elsewhere/backend".into()
        }
    );
    let err = cluster
        .rollback(
            NS,
            "frontend",
            None,
            mpsc::channel(1).0,
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::NotFound {
            what: "deployment shop/frontend".into()
        }
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_named_with_its_address() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    emulator.set_unreachable(true);
    let started = Instant::now();
    let (report, _) = support::rollout(&cluster, &request("backend:2")).await;
    let err = report.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach cluster 'emulator' at {}: connection refused",
            emulator.url()
        )
    );
    let err = cluster.history(NS, NAME).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");

    // Back again, the same Cluster works.
    emulator.set_unreachable(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let history = loop {
        match cluster.history(NS, NAME).await {
            Err(Error::Unreachable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(history.len(), 1);
}

#[tokio::test]
async fn connect_does_not_need_the_server_but_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    // A port nothing listens on: bound, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: prod\n  context:\n    cluster: c\n    user: u\n\
             current-context: prod\n"
        ),
    )
    .unwrap();
    let config = ClusterConfig {
        name: "prod".into(),
        kubeconfig: Some(path.clone()),
        context: None,
        in_cluster: false,
    };
    let cluster = Cluster::connect(&config).await.unwrap();
    let err = cluster.history(NS, NAME).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot reach cluster 'prod' at http://127.0.0.1:{port}: connection refused")
    );

    let config = ClusterConfig {
        context: Some("staging".into()),
        ..config
    };
    let err = Cluster::connect(&config).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot configure cluster 'prod' from kubeconfig {}: ",
            path.display()
        )),
        "{err}"
    );

    let config = ClusterConfig {
        kubeconfig: Some(dir.path().join("nope")),
        ..config
    };
    let err = Cluster::connect(&config).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
async fn several_containers_need_a_name() {
    let Setup { emulator, cluster } = setup("backend:1").await;
    emulator.patch_deployment(
        NS,
        NAME,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy:1"}]}}}}),
    );
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    let (report, _) = support::rollout(&cluster, &request("backend:2")).await;
    expect!["deployment shop/backend has 2 containers (backend, proxy); name the one to update"]
        .assert_eq(&report.unwrap_err().to_string());
    let req = RolloutRequest {
        container: Some("web".into()),
        ..request("backend:2")
    };
    let (report, _) = support::rollout(&cluster, &req).await;
    expect!["deployment shop/backend has no container 'web' (containers: backend, proxy)"]
        .assert_eq(&report.unwrap_err().to_string());
    let req = RolloutRequest {
        container: Some("backend".into()),
        ..request("backend:2")
    };
    let (report, _) = support::rollout(&cluster, &req).await;
    assert_eq!(report.unwrap().outcome, Outcome::Complete);
    let d = support::deployment(&emulator);
    let images: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["backend:2", "envoy:1"]);
}

/// Makes `conflicts` concurrent changes, each between one of Gantry's reads of the Deployment
/// and its patch, and returns what the rollout came to.
///
/// Gantry announces the change after its read and before its patch. With the progress channel
/// full, that announcement waits until the test takes a line: the test changes the Deployment
/// first, so the patch's resource version is stale, deterministically.
async fn rollout_with_conflicts(
    conflicts: usize,
) -> (Emulator, gantry_kube::Result<gantry_kube::RolloutReport>) {
    let Setup { emulator, cluster } = setup("backend:1").await;
    emulator.clear_requests();
    let (tx, mut rx) = mpsc::channel(1);
    tx.send("(full)".to_owned()).await.unwrap();
    let run = tokio::spawn({
        let cluster = cluster.clone();
        async move {
            cluster
                .rollout(&request("backend:2"), tx, CancellationToken::new())
                .await
        }
    });
    let reads = |emulator: &Emulator| {
        emulator
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path == "/apis/apps/v1/namespaces/shop/deployments/backend"
            })
            .count()
    };
    for k in 1..=conflicts {
        // Not `Emulator::wait_for`: it sleeps, and Gantry runs on this thread too.
        let deadline = Instant::now() + Duration::from_secs(5);
        while reads(&emulator) < k {
            assert!(
                Instant::now() < deadline,
                "Gantry did not read the deployment"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        emulator.patch_deployment(
            NS,
            NAME,
            &json!({"metadata": {"annotations": {"team": format!("change {k}")}}}),
        );
        // The line before the announcement, then the announcement: the patch goes out.
        rx.recv().await.unwrap();
        rx.recv().await.unwrap();
    }
    while rx.recv().await.is_some() {}
    let report = run.await.unwrap();
    let patches = writes(&emulator)
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 409)
        .count();
    assert_eq!(patches, conflicts.min(3));
    (emulator, report)
}

#[tokio::test]
async fn a_conflict_is_retried_on_a_fresh_read() {
    let (emulator, report) = rollout_with_conflicts(1).await;
    assert_eq!(report.unwrap().outcome, Outcome::Complete);
    assert_eq!(image(&emulator), "backend:2");
    let d = support::deployment(&emulator);
    // The concurrent change survived.
    assert_eq!(d["metadata"]["annotations"]["team"], "change 1");
}

#[tokio::test]
async fn a_persisting_conflict_is_reported() {
    let (emulator, report) = rollout_with_conflicts(3).await;
    let err = report.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    expect![[r#"deployment shop/backend kept changing while Gantry updated its image (3 conflicts, the last: deployment shop/backend was changed by someone else: Operation cannot be fulfilled on deployments.apps "backend": the object has been modified; please apply your changes to the latest version and try again); try again"#]]
        .assert_eq(&err.to_string());
    assert_eq!(image(&emulator), "backend:1");
}
