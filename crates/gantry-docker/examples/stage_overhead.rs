//! Prints how long a one-stage run takes through this crate next to `docker run --rm` of the
//! same image and command: a run's first stage (which unpacks the working tree into the
//! workspace volume) and a later stage (which finds it there).
//!
//! `cargo run --release -p gantry-docker --example stage_overhead [iterations]`

use std::process::Command;
use std::time::{Duration, Instant};

use gantry_docker::{Docker, PullPolicy, RunLabels, StageSpec, Termination};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "local/busybox";
const SCRIPT: &str = "echo ok";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10);
    let docker = Docker::connect().await?;
    let archive = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        builder.append_data(&mut header, "README", &b"hi\n"[..])?;
        builder.into_inner()?
    };

    let mut docker_run = Vec::new();
    let mut workspace = Vec::new();
    let mut stage = Vec::new();
    let mut cleanup = Vec::new();
    let mut total = Vec::new();
    let mut later_stage = Vec::new();
    // One warm-up round of each, not counted.
    for round in 0..=iterations {
        let started = Instant::now();
        let status = Command::new("docker")
            .args(["run", "--rm", IMAGE, "sh", "-c", SCRIPT])
            .stdout(std::process::Stdio::null())
            .status()?;
        let cli = started.elapsed();
        assert!(status.success());

        let run = RunLabels {
            run_id: format!("bench-{}-{round}", std::process::id()),
            owner: "gantry-bench".into(),
            pid: Some(std::process::id()),
        };
        let started = Instant::now();
        let ws = docker.create_workspace(&run, archive.clone()).await?;
        let after_workspace = Instant::now();
        let spec = StageSpec {
            run: run.clone(),
            stage: "bench".into(),
            attempt: 1,
            image: IMAGE.into(),
            pull: PullPolicy::IfNotPresent,
            script: SCRIPT.into(),
            env: Vec::new(),
            workspace: ws,
            memory_bytes: None,
            nano_cpus: None,
            timeout: None,
            services: Vec::new(),
        };
        let (sender, mut receiver) = mpsc::channel(16);
        let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
        let ended = docker
            .run_stage(&spec, sender, CancellationToken::new())
            .await?;
        drain.await?;
        assert_eq!(ended, Termination::Exited(0));
        let after_stage = Instant::now();

        // A later stage of the run finds the workspace filled already.
        let second = StageSpec {
            stage: "second".into(),
            ..spec
        };
        let (sender, mut receiver) = mpsc::channel(16);
        let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
        let started_second = Instant::now();
        let ended = docker
            .run_stage(&second, sender, CancellationToken::new())
            .await?;
        let second_took = started_second.elapsed();
        drain.await?;
        assert_eq!(ended, Termination::Exited(0));

        let started_cleanup = Instant::now();
        docker.remove_run(&run.run_id).await?;
        let cleanup_took = started_cleanup.elapsed();

        if round > 0 {
            docker_run.push(cli);
            workspace.push(after_workspace - started);
            stage.push(after_stage - after_workspace);
            cleanup.push(cleanup_took);
            total.push(after_stage - started + cleanup_took);
            later_stage.push(second_took);
        }
    }

    let reference = median(&mut docker_run);
    println!("iterations: {iterations} (medians)");
    println!("{:<28} {:>7.1} ms", "docker run --rm", ms(reference));
    for (name, times) in [
        ("create_workspace", &mut workspace),
        ("first stage's run_stage", &mut stage),
        ("remove_run", &mut cleanup),
        ("one-stage run, all three", &mut total),
        ("later stage's run_stage", &mut later_stage),
    ] {
        let m = median(times);
        println!(
            "{name:<28} {:>7.1} ms  {:.2}x",
            ms(m),
            m.as_secs_f64() / reference.as_secs_f64()
        );
    }
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
