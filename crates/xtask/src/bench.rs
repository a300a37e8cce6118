//! Benchmarks: programs that print figures and ratios, not tests with time limits.
//!
//! `run` compares a one-stage pipeline under `gantry run` with the floor, a bare
//! `docker run --rm local/busybox sh -c 'echo ok'`; `floor` measures the floor alone.

use std::fs;
use std::path::PathBuf;
use std::process;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::args::Args;
use crate::cmd::{self, Cmd};
use crate::images;

const WARMUPS: usize = 2;
const DEFAULT_ITERATIONS: usize = 15;
const RUN_TARGET_RATIO: f64 = 1.15;

const ONE_STAGE_PIPELINE: &str = r#"stages:
  - name: hello
    image: local/busybox
    commands: [ "echo ok" ]
"#;

pub const USAGE: &str =
    "    bench run [--iterations N]    `gantry run` of a one-stage pipeline against `docker run`
    bench floor [--iterations N]  the `docker run --rm local/busybox` floor alone
    bench server [--iterations N] `gantry serve`: webhook to finished run, a burst of 40,
                                  ingestion rate and latency, memory (vs git clone + docker run)
    bench web                     the web UI in Chromium: a 1,000,000-line log, line delay
                                  from container to page, 10 live viewers of a 200 MB stage
    bench image [--iterations N]  a build-and-push stage vs `docker build` + `docker push`
    bench deploy                  per injected fault, first failing pod -> rollback patch sent
    bench search                  log search on 1,000,000-line stages vs a plain SQL LIKE
    bench logs                    log appends and ranged reads on a 1,000,000-line stage";

pub fn main(mut args: Args) -> Result<()> {
    let name = args
        .subcommand()
        .context("which benchmark? see `cargo xtask help`")?;
    let iterations = match args.value("--iterations")? {
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("--iterations {n}: not a positive number"))?,
        None => DEFAULT_ITERATIONS,
    };
    args.finish()?;
    match name.as_str() {
        "run" => run(iterations),
        "floor" => floor(iterations),
        "server" => server(iterations),
        "image" => example("gantry-docker", "build_push", &[iterations.to_string()]),
        "deploy" => example("gantry-kube", "fault_detection", &[]),
        "search" => example("gantry-store", "search_bench", &[]),
        "logs" => example("gantry-store", "log_bench", &[]),
        "web" => web(),
        other => {
            bail!(
                "no benchmark named `{other}`; there are: run, floor, server, web, image, deploy, search, logs"
            )
        }
    }
}

/// The server benchmark is a Rust program of its own (it signs webhooks and
/// speaks HTTP, which xtask keeps out of its dependencies).
fn server(iterations: usize) -> Result<()> {
    require_busybox()?;
    eprintln!("==> building gantry and the server benchmark in release mode");
    for args in [
        &["-p", "gantry"][..],
        &["-p", "gantry-server", "--example", "server_bench"],
    ] {
        cmd::cargo()
            .args(["build", "--release"])
            .args(args.iter().copied())
            .run()
            .context("building the server benchmark failed")?;
    }
    Cmd::new(target_dir().join("release/examples/server_bench"))
        .arg(iterations.to_string())
        .env("GANTRY_BIN", target_dir().join("release/gantry"))
        .run()
        .context("the server benchmark failed")
}

/// The web benchmark drives Chromium and a server in-process, as the integration tests do.
fn web() -> Result<()> {
    require_busybox()?;
    if !images::exists(images::PYTHON) {
        bail!(
            "image {} is missing; build it with `cargo xtask images`",
            images::PYTHON
        );
    }
    eprintln!("==> building the web benchmark in release mode");
    cmd::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "gantry-server",
            "--example",
            "web_bench",
        ])
        .run()
        .context("building the web benchmark failed")?;
    Cmd::new(target_dir().join("release/examples/web_bench"))
        .run()
        .context("the web benchmark failed; `cargo xtask provision` installs Chromium")
}

/// Benchmarks that are example programs of the crate they measure.
fn example(package: &str, name: &str, args: &[String]) -> Result<()> {
    require_busybox()?;
    eprintln!("==> building {package}'s {name} in release mode");
    cmd::cargo()
        .args(["build", "--release", "-p", package, "--example", name])
        .run()
        .with_context(|| format!("building the {name} benchmark failed"))?;
    Cmd::new(target_dir().join("release/examples").join(name))
        .args(args.iter())
        .run()
        .with_context(|| format!("the {name} benchmark failed"))
}

/// A command under measurement, built afresh for every iteration.
struct Subject<'a> {
    label: &'static str,
    cmd: Box<dyn Fn() -> Cmd + 'a>,
}

fn run(iterations: usize) -> Result<()> {
    require_busybox()?;
    eprintln!("==> building gantry in release mode");
    cmd::cargo()
        .args(["build", "--release", "-p", "gantry"])
        .run()
        .context("building gantry failed; fix the compile errors above and re-run")?;
    let gantry = target_dir().join("release/gantry");
    let project = BenchDir::new("run")?;
    fs::write(project.0.join(".gantry.yml"), ONE_STAGE_PIPELINE)
        .context("could not write .gantry.yml")?;
    let subjects = [
        Subject {
            label: "gantry run",
            cmd: Box::new(|| Cmd::new(&gantry).arg("run").current_dir(&project.0)),
        },
        floor_subject(),
    ];
    let samples = measure(&subjects, iterations)?;
    print_table(&subjects, &samples);
    let ratio = median(&samples[0]) / median(&samples[1]);
    println!("ratio of medians: {ratio:.2}x (target <= {RUN_TARGET_RATIO:.2}x)");
    Ok(())
}

fn floor(iterations: usize) -> Result<()> {
    require_busybox()?;
    let subjects = [floor_subject()];
    let samples = measure(&subjects, iterations)?;
    print_table(&subjects, &samples);
    Ok(())
}

fn floor_subject() -> Subject<'static> {
    Subject {
        label: "docker run (floor)",
        cmd: Box::new(|| {
            Cmd::new("docker").args(["run", "--rm", "local/busybox", "sh", "-c", "echo ok"])
        }),
    }
}

fn require_busybox() -> Result<()> {
    if !images::exists(images::BUSYBOX) {
        bail!(
            "image {} is missing; build it with `cargo xtask images`",
            images::BUSYBOX
        );
    }
    Ok(())
}

/// Runs the subjects in turn, so they share the machine's noise, after warm-up rounds.
fn measure(subjects: &[Subject], iterations: usize) -> Result<Vec<Vec<Duration>>> {
    let labels: Vec<_> = subjects.iter().map(|subject| subject.label).collect();
    eprintln!(
        "==> measuring {} ({WARMUPS} warm-ups, {iterations} runs each)",
        labels.join(" and ")
    );
    let mut samples = vec![Vec::with_capacity(iterations); subjects.len()];
    for round in 0..WARMUPS + iterations {
        for (subject, samples) in subjects.iter().zip(&mut samples) {
            let cmd = (subject.cmd)();
            let started = Instant::now();
            cmd.run_quiet()
                .with_context(|| format!("{} failed in round {}", subject.label, round + 1))?;
            if round >= WARMUPS {
                samples.push(started.elapsed());
            }
        }
    }
    Ok(samples)
}

fn print_table(subjects: &[Subject], samples: &[Vec<Duration>]) {
    println!(
        "{:<20} {:>8} {:>8} {:>8} {:>8}  (ms, {} runs)",
        "",
        "min",
        "median",
        "p90",
        "max",
        samples[0].len()
    );
    for (subject, samples) in subjects.iter().zip(samples) {
        let s = Summary::of(samples);
        println!(
            "{:<20} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            subject.label, s.min, s.median, s.p90, s.max
        );
    }
}

/// Milliseconds.
#[derive(Debug, PartialEq)]
struct Summary {
    min: f64,
    median: f64,
    p90: f64,
    max: f64,
}

impl Summary {
    fn of(samples: &[Duration]) -> Summary {
        let ms = sorted_ms(samples);
        Summary {
            min: ms[0],
            median: median(samples),
            p90: percentile(&ms, 90),
            max: ms[ms.len() - 1],
        }
    }
}

fn sorted_ms(samples: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|sample| sample.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn median(samples: &[Duration]) -> f64 {
    let ms = sorted_ms(samples);
    let mid = ms.len() / 2;
    if ms.len().is_multiple_of(2) {
        (ms[mid - 1] + ms[mid]) / 2.0
    } else {
        ms[mid]
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], percent: usize) -> f64 {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::workspace_root().join("target"), PathBuf::from)
}

/// The project directory `gantry run` runs in; removed when dropped.
struct BenchDir(PathBuf);

impl BenchDir {
    fn new(name: &str) -> Result<BenchDir> {
        let path = std::env::temp_dir().join(format!("gantry-bench-{name}-{}", process::id()));
        fs::create_dir_all(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        Ok(BenchDir(path))
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn summary_of_an_odd_count() {
        let summary = Summary::of(&ms(&[50, 10, 40, 20, 30]));
        assert_eq!(
            summary,
            Summary {
                min: 10.0,
                median: 30.0,
                p90: 50.0,
                max: 50.0
            }
        );
    }

    #[test]
    fn summary_of_an_even_count() {
        let summary = Summary::of(&ms(&[100, 10, 20, 30, 40, 50, 60, 70, 80, 90]));
        assert_eq!(
            summary,
            Summary {
                min: 10.0,
                median: 55.0,
                p90: 90.0,
                max: 100.0
            }
        );
    }

    #[test]
    fn summary_of_one_sample() {
        assert_eq!(
            Summary::of(&ms(&[7])),
            Summary {
                min: 7.0,
                median: 7.0,
                p90: 7.0,
                max: 7.0
            }
        );
    }
}
