//! A fresh emulator per test, with a Deployment `shop/backend` already rolled out.

use std::time::Duration;

use gantry_kube::{Cluster, ClusterConfig, Result, RolloutReport, RolloutRequest, Thresholds};
use gantry_testkit::kube::{ApiRequest, Emulator, Resource};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const NS: &str = "shop";
pub const NAME: &str = "backend";

pub struct Setup {
    pub emulator: Emulator,
    pub cluster: Cluster,
}

/// An emulator with `shop/backend` (2 replicas) rolled out at `image` (revision 1), and a
/// cluster connected to it through its kubeconfig.
pub async fn setup(image: &str) -> Setup {
    let emulator = Emulator::start();
    emulator.apply_deployment(NS, NAME, image, 2);
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    let cluster = connect(&emulator).await;
    Setup { emulator, cluster }
}

pub async fn connect(emulator: &Emulator) -> Cluster {
    let config = ClusterConfig {
        name: "emulator".into(),
        kubeconfig: Some(emulator.kubeconfig_path().to_owned()),
        context: None,
        in_cluster: false,
    };
    Cluster::connect(&config).await.unwrap()
}

/// Thresholds for a fast emulator: the unschedulable grace is a second instead of 30.
pub fn fast() -> Thresholds {
    Thresholds {
        unschedulable_grace: Duration::from_secs(1),
        ..Thresholds::default()
    }
}

pub fn request(image: &str) -> RolloutRequest {
    RolloutRequest {
        namespace: NS.into(),
        deployment: NAME.into(),
        container: None,
        image: image.into(),
        change_cause: format!("gantry shop #7 {image}"),
        timeout: Duration::from_secs(30),
        auto_rollback: true,
        thresholds: fast(),
    }
}

/// Runs a rollout to its end, collecting its progress lines.
pub async fn rollout(
    cluster: &Cluster,
    req: &RolloutRequest,
) -> (Result<RolloutReport>, Vec<String>) {
    let (tx, rx) = mpsc::channel(16);
    let lines = tokio::spawn(collect(rx));
    let report = cluster.rollout(req, tx, CancellationToken::new()).await;
    (report, lines.await.unwrap())
}

pub async fn rollback(cluster: &Cluster, to: Option<i64>) -> (Result<RolloutReport>, Vec<String>) {
    let (tx, rx) = mpsc::channel(16);
    let lines = tokio::spawn(collect(rx));
    let report = cluster
        .rollback(NS, NAME, to, tx, CancellationToken::new())
        .await;
    (report, lines.await.unwrap())
}

async fn collect(mut rx: mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    lines
}

/// The stored Deployment's container image.
pub fn image(emulator: &Emulator) -> String {
    let deployment = emulator.get(Resource::Deployment, NS, NAME).unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn deployment(emulator: &Emulator) -> Value {
    emulator.get(Resource::Deployment, NS, NAME).unwrap()
}

/// The requests that changed something (not GET, LIST or WATCH).
pub fn writes(emulator: &Emulator) -> Vec<ApiRequest> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect()
}

/// `text` with generated pod names (`backend-<hash>-<suffix>`) and restart counts masked, so
/// that causes compare whatever the timing was.
pub fn masked(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let masked: Vec<&str> = words
        .iter()
        .enumerate()
        .map(|(i, word)| match i.checked_sub(1).map(|p| words[p]) {
            Some("pod") if word.starts_with("backend-") => "<pod>",
            Some("restarted") if word.parse::<u32>().is_ok() => "<n>",
            _ => word,
        })
        .collect();
    masked.join(" ")
}
