//! `cargo xtask image`: builds Gantry's container image from `deploy/Dockerfile`, runs it, checks
//! `/healthz` and `/metrics`, and reports its size.
//!
//! No base image can be pulled here, so it builds the Dockerfile's `runtime-prebuilt` target on
//! `local/debian:bookworm` (debootstrap's minbase with ca-certificates and git: what the
//! runtime stage installs on debian:bookworm-slim) around a binary built on this host, which is
//! Debian 12 like the image.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::args::Args;
use crate::cmd::{self, Cmd};
use crate::images::{self, ScratchDir};

pub const TAG: &str = "gantry:dev";
pub const BASE: &str = "local/debian:bookworm";
const BASE_PACKAGES: &str = "ca-certificates,git";
const STARTUP: Duration = Duration::from_secs(30);
const SLIM: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/lib/apt/lists",
];

pub fn main(mut args: Args) -> Result<()> {
    let debug = args.flag("--debug");
    args.finish()?;
    let root = crate::workspace_root();
    let profile = if debug { "debug" } else { "release" };
    let mut build = cmd::cargo().args(["build", "-p", "gantry"]);
    if !debug {
        build = build.arg("--release");
    }
    build
        .current_dir(&root)
        .run()
        .context("building the gantry binary failed")?;
    ensure_base()?;

    // A small context: the Dockerfile and the binary, not the whole target directory.
    let context = ScratchDir::new("image")?;
    fs::copy(
        root.join("deploy/Dockerfile"),
        context.path().join("Dockerfile"),
    )
    .context("could not copy deploy/Dockerfile")?;
    fs::copy(
        root.join("target").join(profile).join("gantry"),
        context.path().join("gantry"),
    )
    .context("could not copy the gantry binary")?;
    Cmd::new("docker")
        .args(["build", "--target", "runtime-prebuilt", "--build-arg"])
        .arg(format!("RUNTIME_IMAGE={BASE}"))
        .args(["--build-arg", "GANTRY_BINARY=gantry", "-t", TAG])
        .arg(context.path())
        .run()
        .context("docker build failed")?;
    check(TAG)?;
    let size: f64 = Cmd::new("docker")
        .args(["image", "inspect", "--format", "{{.Size}}", TAG])
        .read()?
        .trim()
        .parse()
        .context("docker image inspect printed no size")?;
    let base: f64 = Cmd::new("docker")
        .args(["image", "inspect", "--format", "{{.Size}}", BASE])
        .read()?
        .trim()
        .parse()
        .context("docker image inspect printed no size")?;
    let binary = fs::metadata(context.path().join("gantry"))?.len() as f64;
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    eprintln!(
        "==> {TAG}: {:.1} MiB ({BASE} {:.1} MiB + the {profile} binary {:.1} MiB)",
        mib(size),
        mib(base),
        mib(binary)
    );
    Ok(())
}

/// Builds the offline runtime base unless it exists.
fn ensure_base() -> Result<()> {
    if images::exists(BASE) {
        eprintln!("==> image {BASE} present");
        return Ok(());
    }
    eprintln!("==> building image {BASE}");
    let rootfs = ScratchDir::new("debian")?;
    let mirror = images::configured_mirror();
    let debootstrap = Cmd::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={BASE_PACKAGES}"),
            "bookworm",
        ])
        .arg(rootfs.path())
        .arg(&mirror);
    eprintln!("$ {debootstrap}  (about a minute)");
    debootstrap
        .run_quiet()
        .with_context(|| format!("debootstrap from {mirror} failed; is the mirror reachable?"))?;
    images::remove_files_in(&rootfs.path().join("var/cache/apt/archives"), ".deb")?;
    // What debian:bookworm-slim leaves out too, so the size compares: documentation, manual
    // pages, translations and apt's package lists (some 115 MiB).
    for dir in SLIM {
        let dir = rootfs.path().join(dir);
        for entry in
            fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?
        {
            let path = entry?.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    images::import(
        rootfs.path(),
        BASE,
        &[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "CMD [\"bash\"]",
        ],
    )
}

/// Runs the image with a published port and checks that it serves, as the user it should.
fn check(tag: &str) -> Result<()> {
    let id = Cmd::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "-p",
            "127.0.0.1::8080",
            "-e",
            "GANTRY_ADMIN_TOKEN=xtask-image-check",
            tag,
        ])
        .read()?
        .trim()
        .to_owned();
    let result = check_container(&id);
    if result.is_err() {
        let _ = Cmd::new("docker").args(["logs", &id]).run();
    }
    let _ = Cmd::new("docker").args(["rm", "-f", &id]).run_quiet();
    result
}

fn check_container(id: &str) -> Result<()> {
    let user = Cmd::new("docker")
        .args(["exec", id, "id", "-u"])
        .read()?
        .trim()
        .to_owned();
    if user == "0" {
        bail!("the container runs as root");
    }
    let port = Cmd::new("docker").args(["port", id, "8080"]).read()?;
    let addr = port
        .lines()
        .next()
        .context("docker port printed nothing")?
        .trim()
        .to_owned();
    let started = Instant::now();
    let health = loop {
        match get(&addr, "/healthz") {
            Ok(answer) if answer.starts_with("HTTP/1.1 200") => break answer,
            _ if started.elapsed() < STARTUP => std::thread::sleep(Duration::from_millis(200)),
            Ok(answer) => bail!("/healthz answered:\n{answer}"),
            Err(e) => return Err(e).context("/healthz never answered"),
        }
    };
    eprintln!(
        "==> /healthz after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        health.lines().last().unwrap_or_default()
    );
    let metrics = get(&addr, "/metrics")?;
    if !metrics.contains("process_resident_memory_bytes") {
        bail!("/metrics lacks the process metrics:\n{metrics}");
    }
    let rss = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap_or("?");
    eprintln!("==> runs as uid {user}; /metrics answers; resident memory idle: {rss} bytes");
    Ok(())
}

/// A plain HTTP/1.1 GET, enough for a health check without an HTTP client dependency.
fn get(addr: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
