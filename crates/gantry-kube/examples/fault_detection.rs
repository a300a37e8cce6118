//! How fast Gantry undoes a bad image, next to what `kubectl rollout status` would do.
//!
//! For each fault the emulator can inject (by image name), with default thresholds: roll out
//! the bad image with auto-rollback and measure the time from the first failing pod status
//! (seen by polling the emulator's store every 5 ms) to the moment Gantry sent the rollback
//! patch. `kubectl rollout status` reports failure only when `progressDeadlineSeconds` (600 s by
//! default) runs out, and rolls nothing back.
//!
//! The emulated node moves at a real kubelet's pace: pods start after 1 s, and a crashing
//! container is restarted every 10 s (the kubelet's first back-off).
//!
//! Run with `cargo run -p gantry-kube --example fault_detection`; it takes about a minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry_kube::{Cluster, ClusterConfig, Outcome, RolloutRequest, Thresholds};
use gantry_testkit::kube::{Emulator, Resource};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NS: &str = "bench";
/// kubectl's default `progressDeadlineSeconds`.
const KUBECTL_DEADLINE: Duration = Duration::from_secs(600);

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let thresholds = Thresholds::default();
    println!(
        "Gantry fault detection: time from the first failing pod status to the rollback patch"
    );
    println!(
        "thresholds: crash_loop_restarts {}, image_pull_grace {:?}, config_error_grace {:?}, unschedulable_grace {:?}",
        thresholds.crash_loop_restarts,
        thresholds.image_pull_grace,
        thresholds.config_error_grace,
        thresholds.unschedulable_grace
    );
    println!("emulated kubelet: pods start after 1 s, crashing containers restart every 10 s\n");
    println!(
        "{:<14} {:>13} {:>13} {:>9} {:>8}  cause",
        "fault", "to detection", "to rollback", "kubectl", "faster"
    );
    let mut figures = Vec::new();
    for fault in ["crash", "oom", "missing", "unschedulable", "configerror"] {
        let figure = measure(fault, &thresholds).await?;
        println!(
            "{:<14} {:>13} {:>13} {:>9} {:>8}  {}",
            fault,
            human(figure.to_detection),
            human(figure.to_rollback),
            human(KUBECTL_DEADLINE),
            ratio(figure.to_rollback),
            figure.cause
        );
        figures.push(figure);
    }
    let worst = figures
        .iter()
        .map(|f| f.to_rollback)
        .max()
        .unwrap_or_default();
    println!(
        "\nslowest: {} to the rollback patch; `kubectl rollout status` fails after {} and rolls nothing back",
        human(worst),
        human(KUBECTL_DEADLINE)
    );
    Ok(())
}

fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

/// How many times sooner than kubectl's deadline; below 10 ms the ratio says nothing useful.
fn ratio(duration: Duration) -> String {
    if duration < Duration::from_millis(10) {
        ">60000x".to_owned()
    } else {
        format!(
            "{:.0}x",
            KUBECTL_DEADLINE.as_secs_f64() / duration.as_secs_f64()
        )
    }
}

struct Figure {
    to_detection: Duration,
    to_rollback: Duration,
    cause: String,
}

async fn measure(fault: &str, thresholds: &Thresholds) -> Result<Figure, Error> {
    let emulator = Arc::new(
        Emulator::builder()
            .pod_ready_after(Duration::from_secs(1))
            .restart_every(Duration::from_secs(10))
            .start(),
    );
    let name = "backend";
    emulator.apply_deployment(NS, name, "backend:1", 3);
    emulator.wait_for_rollout(NS, name, Duration::from_secs(30));
    let cluster = Cluster::connect(&ClusterConfig {
        name: "emulator".into(),
        kubeconfig: Some(emulator.kubeconfig_path().to_owned()),
        context: None,
        in_cluster: false,
    })
    .await?;

    let image = format!("backend:{fault}");
    let done = Arc::new(AtomicBool::new(false));
    let first_failing = tokio::task::spawn_blocking({
        let (emulator, done, image) = (Arc::clone(&emulator), Arc::clone(&done), image.clone());
        move || {
            while !done.load(Ordering::Relaxed) {
                let pods = emulator.list(Resource::Pod, Some(NS));
                if pods.iter().any(|pod| failing(pod, &image)) {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        }
    });

    let request = RolloutRequest {
        namespace: NS.into(),
        deployment: name.into(),
        container: None,
        image,
        change_cause: format!("fault_detection {fault}"),
        timeout: Duration::from_secs(300),
        auto_rollback: true,
        thresholds: thresholds.clone(),
    };
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let report = cluster
        .rollout(&request, tx, CancellationToken::new())
        .await?;
    done.store(true, Ordering::Relaxed);
    drain.await?;
    let first_failing = first_failing
        .await?
        .ok_or("no failing pod status was seen")?;

    let Outcome::RolledBack { cause, .. } = &report.outcome else {
        return Err(format!("{fault}: expected a rollback, got: {}", report.outcome).into());
    };
    let detected = report.failure_detected_at.ok_or("no detection time")?;
    let sent = report.rollback_sent_at.ok_or("no rollback time")?;
    Ok(Figure {
        to_detection: detected.saturating_duration_since(first_failing),
        to_rollback: sent.saturating_duration_since(first_failing),
        cause: cause.clone(),
    })
}

/// Whether a pod running `image` shows a failure in its status, whatever Gantry's thresholds.
fn failing(pod: &Value, image: &str) -> bool {
    let runs_image = pod["spec"]["containers"]
        .as_array()
        .is_some_and(|containers| containers.iter().any(|c| c["image"] == image));
    if !runs_image {
        return false;
    }
    let unschedulable = pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
            })
        });
    let container_failing = pod["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|statuses| {
            statuses.iter().any(|s| {
                let waiting = s["state"]["waiting"]["reason"].as_str().unwrap_or_default();
                let killed = [&s["state"]["terminated"], &s["lastState"]["terminated"]]
                    .iter()
                    .any(|t| {
                        t["reason"] == "OOMKilled"
                            || t["exitCode"].as_i64().is_some_and(|code| code != 0)
                    });
                killed
                    || matches!(
                        waiting,
                        "CrashLoopBackOff"
                            | "ErrImagePull"
                            | "ImagePullBackOff"
                            | "InvalidImageName"
                            | "CreateContainerConfigError"
                    )
            })
        });
    unschedulable || container_failing
}
