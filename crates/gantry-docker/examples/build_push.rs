//! Prints how long building and pushing a small image takes through this crate
//! (`build_image` + `push_image`) next to `docker build` + `docker push` by hand, with the same
//! context, the same engine (classic builder on both sides) and the same registry: the test
//! kit's `docker-registry` on 127.0.0.1 with Basic auth.
//!
//! Every iteration builds fresh content (a file of its own in the context) under a fresh tag,
//! so both sides build one new layer and push it for real, while the base image's layers are
//! in the registry already for both. The two sides take turns going first. Filling the
//! workspace volume and writing the directory for the CLI are not timed: an earlier stage or
//! the checkout did that; reading the context back out of the volume is timed, as it is part
//! of Gantry's build.
//!
//! `cargo run --release -p gantry-docker --example build_push [iterations]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry_docker::{BuildSpec, Docker, PullPolicy, RegistryAuth, RunLabels, StageSpec};
use gantry_testkit::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
const REPOSITORY: &str = "bench/app";
const TARGET_RATIO: f64 = 1.05;

/// The context, apart from the per-iteration file.
const FILES: &[(&str, &str)] = &[
    (
        "Dockerfile",
        "FROM local/busybox\nCOPY . /app/\nCMD [\"cat\", \"/app/nonce\"]\n",
    ),
    (".dockerignore", "*.tmp\n"),
    ("app/main.sh", "#!/bin/sh\necho hello from the benchmark\n"),
    ("app/config.ini", "[server]\nport = 8080\n"),
    ("scratch.tmp", "left out\n"),
];

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10);
    let docker = Docker::connect().await?;
    if !Registry::available() {
        return Err("docker-registry or htpasswd is missing: run `cargo xtask provision`".into());
    }
    let registry = Registry::start(&[(USER, PASSWORD)]);
    let image = registry.image(REPOSITORY);
    let auth = RegistryAuth {
        name: "bench".into(),
        address: registry.address(),
        username: USER.into(),
        password: PASSWORD.into(),
    };
    // The CLI logs in to a configuration of its own, not the user's.
    let docker_config = tempfile::tempdir()?;
    cli_login(docker_config.path(), &registry)?;
    let context_dir = tempfile::tempdir()?;

    let mut gantry = Timings::default();
    let mut cli = Timings::default();
    // One warm-up round, not counted.
    for round in 0..=iterations {
        let nonce = format!("{}-{round}", std::process::id());
        let gantry_first = round % 2 == 0;
        for gantry_turn in [gantry_first, !gantry_first] {
            if gantry_turn {
                let (build, push) = gantry_round(&docker, &image, &auth, &nonce, round).await?;
                if round > 0 {
                    gantry.record(build, push);
                }
            } else {
                let (build, push) = cli_round(
                    docker_config.path(),
                    context_dir.path(),
                    &image,
                    &nonce,
                    round,
                )?;
                if round > 0 {
                    cli.record(build, push);
                }
            }
        }
    }

    println!("iterations: {iterations} (medians)");
    println!("{:<32} {:>9} {:>9} {:>9}", "", "build", "push", "total");
    let cli_total = cli.print("docker build + docker push");
    let gantry_total = gantry.print("build_image + push_image");
    let ratio = gantry_total.as_secs_f64() / cli_total.as_secs_f64();
    println!("ratio: {ratio:.3}× (target ≤ {TARGET_RATIO}×)");
    Ok(())
}

#[derive(Default)]
struct Timings {
    build: Vec<Duration>,
    push: Vec<Duration>,
    total: Vec<Duration>,
}

impl Timings {
    fn record(&mut self, build: Duration, push: Duration) {
        self.build.push(build);
        self.push.push(push);
        self.total.push(build + push);
    }

    fn print(&mut self, label: &str) -> Duration {
        let total = median(&mut self.total);
        println!(
            "{label:<32} {:>6.1} ms {:>6.1} ms {:>6.1} ms",
            ms(median(&mut self.build)),
            ms(median(&mut self.push)),
            ms(total)
        );
        total
    }
}

async fn gantry_round(
    docker: &Docker,
    image: &str,
    auth: &RegistryAuth,
    nonce: &str,
    round: usize,
) -> Result<(Duration, Duration), Error> {
    let run = RunLabels {
        run_id: format!("bench-build-{}-{round}", std::process::id()),
        owner: "gantry-bench".into(),
        pid: Some(std::process::id()),
    };
    let workspace = docker.create_workspace(&run, context_tar(nonce)?).await?;
    // The run's first stage fills the volume; not timed.
    let stage = StageSpec {
        run: run.clone(),
        stage: "checkout".into(),
        attempt: 1,
        image: "local/busybox".into(),
        pull: PullPolicy::Never,
        script: "true".into(),
        env: Vec::new(),
        workspace: workspace.clone(),
        memory_bytes: None,
        nano_cpus: None,
        timeout: None,
        services: Vec::new(),
    };
    docker
        .run_stage(&stage, drain(), CancellationToken::new())
        .await?;

    let spec = BuildSpec {
        run: run.clone(),
        stage: "image".into(),
        workspace,
        context: ".".into(),
        dockerfile: None,
        target: None,
        args: Vec::new(),
        labels: vec![("org.opencontainers.image.revision".into(), nonce.into())],
        image: image.into(),
        tags: vec![format!("gantry-{round}")],
    };
    let started = Instant::now();
    let built = docker
        .build_image(&spec, drain(), CancellationToken::new())
        .await?;
    let built_at = Instant::now();
    docker
        .push_image(
            &built.references[0],
            Some(auth),
            drain(),
            CancellationToken::new(),
        )
        .await?;
    let pushed_at = Instant::now();

    docker.remove_run(&run.run_id).await?;
    remove_image(&built.references[0])?;
    Ok((built_at - started, pushed_at - built_at))
}

fn cli_round(
    docker_config: &Path,
    context_dir: &Path,
    image: &str,
    nonce: &str,
    round: usize,
) -> Result<(Duration, Duration), Error> {
    write_context(context_dir, nonce)?;
    let reference = format!("{image}:cli-{round}");
    let started = Instant::now();
    let mut build = Command::new("docker");
    build
        .env("DOCKER_CONFIG", docker_config)
        // The classic builder, as Gantry uses it against API 1.41 engines.
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-t", &reference])
        .args([
            "--label",
            &format!("org.opencontainers.image.revision={nonce}"),
        ])
        .arg(context_dir);
    run(&mut build)?;
    let built_at = Instant::now();
    let mut push = Command::new("docker");
    push.env("DOCKER_CONFIG", docker_config)
        .args(["push", &reference]);
    run(&mut push)?;
    let pushed_at = Instant::now();
    remove_image(&reference)?;
    Ok((built_at - started, pushed_at - built_at))
}

fn cli_login(docker_config: &Path, registry: &Registry) -> Result<(), Error> {
    use std::io::Write;
    let mut login = Command::new("docker")
        .env("DOCKER_CONFIG", docker_config)
        .args(["login", "--username", USER, "--password-stdin"])
        .arg(registry.address())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    login
        .stdin
        .take()
        .ok_or("no stdin for docker login")?
        .write_all(PASSWORD.as_bytes())?;
    let output = login.wait_with_output()?;
    if !output.status.success() {
        return Err(format!(
            "docker login failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

fn context_tar(nonce: &str) -> Result<Vec<u8>, Error> {
    let mut builder = tar::Builder::new(Vec::new());
    let nonce_line = format!("{nonce}\n");
    for (path, content) in FILES
        .iter()
        .copied()
        .chain([("nonce", nonce_line.as_str())])
    {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, content.as_bytes())?;
    }
    Ok(builder.into_inner()?)
}

fn write_context(dir: &Path, nonce: &str) -> Result<(), Error> {
    for (path, content) in FILES {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    std::fs::write(dir.join("nonce"), format!("{nonce}\n"))?;
    Ok(())
}

fn remove_image(reference: &str) -> Result<(), Error> {
    run(Command::new("docker").args(["image", "rm", reference]))
}

fn run(command: &mut Command) -> Result<(), Error> {
    let output = command.stdin(Stdio::null()).output()?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

/// An output channel whose receiver reads everything and throws it away.
fn drain() -> mpsc::Sender<gantry_docker::Output> {
    let (sender, mut receiver) = mpsc::channel(64);
    tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    sender
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
