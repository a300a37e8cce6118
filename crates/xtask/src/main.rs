//! Gantry's developer tasks, run as `cargo xtask <task>`: provisioning a CI machine, building the
//! offline test images, running the test suite as CI does, and benchmarks.

mod args;
mod bench;
mod cmd;
mod image;
mod images;
mod provision;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::args::Args;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
    ci                            provision, then `cargo test --workspace --all-targets --no-fail-fast`
                                  (what CI runs through .ci/run)
    provision                     install Debian packages, start dockerd, build the test images
    images [--tag-suffix S]       build the test images that are missing; a suffix like -try
                                  builds local/busybox:latest-try (...) instead, to test the build
    serve [ARGS...]               provision Docker and the images, then `gantry serve ARGS`
                                  (127.0.0.1:8080, SQLite in ./gantry-data unless configured)
    demo                          provision, then `gantry run` on pipelines/examples/hello
    image [--debug]               build Gantry's container image (deploy/Dockerfile) offline as
                                  gantry:dev, run it, check /healthz, report its size
";

fn main() -> ExitCode {
    match run(Args::new(std::env::args().skip(1))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Not `{err:?}`: that adds a backtrace whenever RUST_BACKTRACE is set.
            eprintln!("\nerror: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> Result<()> {
    let Some(task) = args.subcommand() else {
        args.finish()?;
        print_usage();
        return Ok(());
    };
    match task.as_str() {
        "ci" => {
            args.finish()?;
            provision()?;
            test()
        }
        "provision" => {
            args.finish()?;
            provision()
        }
        "images" => {
            let tag_suffix = args.value("--tag-suffix")?.unwrap_or_default();
            args.finish()?;
            images::ensure_all(&tag_suffix)
        }
        "serve" => {
            let mut rest = vec!["serve".to_string()];
            rest.extend(args.rest());
            provision()?;
            gantry(
                &rest,
                &std::env::current_dir().context("cannot read the current directory")?,
            )
        }
        "demo" => {
            args.finish()?;
            provision()?;
            gantry(
                &["run".to_string()],
                &workspace_root().join("pipelines/examples/hello"),
            )
        }
        "image" => image::main(args),
        "bench" => bench::main(args),
        "help" | "-h" | "--help" => {
            print_usage();
            Ok(())
        }
        other => bail!("no task named `{other}`; see `cargo xtask help`"),
    }
}

fn print_usage() {
    println!("{USAGE}{}", bench::USAGE);
}

fn provision() -> Result<()> {
    let started = Instant::now();
    provision::install_packages()?;
    provision::ensure_docker()?;
    provision::ensure_kubectl()?;
    images::ensure_all("")?;
    eprintln!("==> provisioned in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn test() -> Result<()> {
    eprintln!("==> running the test suite");
    // CI=true is inherited: under it, tests fail rather than skip when something is missing.
    // --no-fail-fast: every test binary runs, so one failure does not hide the others.
    cmd::cargo()
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .current_dir(&workspace_root())
        .run()
        .context(
            "the test suite failed: fix the test failures or compile errors above; \
             `cargo test -p CRATE NAME` re-runs a single test",
        )
}

/// Builds Gantry (release) and runs it with `args` in `dir`, passing its exit status on.
fn gantry(args: &[String], dir: &Path) -> Result<()> {
    eprintln!("==> building gantry (release)");
    cmd::cargo()
        .args(["build", "--release", "--quiet", "-p", "gantry"])
        .current_dir(&workspace_root())
        .run()
        .context("building gantry failed")?;
    let bin = workspace_root().join("target/release/gantry");
    eprintln!("==> gantry {}", args.join(" "));
    let status = std::process::Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if !status.success() {
        bail!("gantry {} exited with {status}", args.join(" "));
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
