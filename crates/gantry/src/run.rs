//! `gantry run`: the pipeline on the local working tree, with the real executor.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use gantry_docker::Archive;
use gantry_engine::{RunLabels, RunPlan, RunStatus, StageSelection};
use gantry_pipeline::{Event, RunContext};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::exit;
use crate::output::Printer;

#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file.
    #[arg(long, short, default_value = ".gantry.yml")]
    file: PathBuf,
    /// Run only this stage (repeatable).
    #[arg(long = "stage", value_name = "NAME")]
    stages: Vec<String>,
    /// With --stage: also run the stages the named ones need.
    #[arg(long, requires = "stages")]
    with_needs: bool,
    /// An extra variable for every stage, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// A secret for the stages that list it, KEY=VALUE or KEY to read it from the
    /// environment (repeatable). Its value is printed as ***.
    #[arg(long = "secret", value_name = "KEY[=VALUE]", value_parser = parse_secret)]
    secrets: Vec<(String, String)>,
    /// The event the run pretends to be: push, tag or manual.
    #[arg(long, default_value = "push")]
    event: Event,
    /// The branch the run pretends to be on (default: the checked-out branch).
    #[arg(long)]
    branch: Option<String>,
    /// The tag, for --event tag.
    #[arg(long)]
    tag: Option<String>,
    /// How many independent stages may run at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Copy the whole working tree into the workspace, also what git ignores
    /// (by default, paths ignored by .gitignore and not tracked stay out, as with `act`).
    #[arg(long)]
    no_gitignore: bool,

    /// Registries and clusters for `build` and `deploy` stages (default:
    /// ./gantry.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn parse_pair(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{arg}'")),
    }
}

fn parse_secret(arg: &str) -> Result<(String, String), String> {
    if arg.contains('=') {
        return parse_pair(arg).map_err(|_| "expected KEY=VALUE or KEY".to_string());
    }
    match std::env::var(arg) {
        Ok(value) => Ok((arg.to_string(), value)),
        Err(_) => Err(format!(
            "--secret {arg}: the environment variable {arg} is not set"
        )),
    }
}

pub fn main(args: RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(status) => ExitCode::from(match status {
            RunStatus::Success => 0,
            RunStatus::Failure => exit::FAILURE,
            RunStatus::Cancelled => exit::CANCELLED,
            RunStatus::Error => exit::ERROR,
        }),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<RunStatus> {
    let source = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let pipeline = match gantry_pipeline::parse(&args.file.display().to_string(), &source) {
        Ok(pipeline) => pipeline,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return Ok(RunStatus::Error);
        }
    };
    let selection = if args.stages.is_empty() {
        StageSelection::All
    } else {
        StageSelection::Only {
            names: args.stages.clone(),
            with_needs: args.with_needs,
        }
    };
    if let Err(e) = selection.resolve(&pipeline) {
        bail!(e);
    }
    let dir = std::env::current_dir().context("cannot read the current directory")?;
    // The working tree's git facts and its tar, read while the engine is reached and swept of
    // what crashed runs left: the first libgit2 call alone loads OpenSSL's CA bundle (~40 ms).
    let local = {
        let tree = dir.clone();
        let whole = args.no_gitignore;
        tokio::task::spawn_blocking(move || {
            let head = gantry_git::local_head(&tree);
            let origin = gantry_git::origin_url(&tree);
            (head, origin, pack_tree(&tree, whole))
        })
    };

    let env = |name: &str| std::env::var(name).ok();
    let config = gantry_config::load(args.config.as_deref(), &env)
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let docker = gantry_docker::Docker::connect().await?;
    remove_dead_leftovers(&docker).await;
    let (head, origin, packed) = local.await?;
    let (archive, left_out) =
        packed.with_context(|| format!("cannot read the working tree {}", dir.display()))?;
    if !left_out.is_empty() {
        eprintln!("{}", left_out_note(&left_out));
    }
    let repo = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let context = RunContext {
        event: args.event,
        branch: args
            .branch
            .clone()
            .or_else(|| head.as_ref().and_then(|h| h.branch.clone())),
        tag: args.tag.clone(),
        commit_sha: head.map(|h| h.sha).unwrap_or_else(|| "0".repeat(40)),
        run_number: 1,
        // The repository, as the server's GANTRY_REPO is its project: here the directory.
        repo,
    };

    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));

    let names: Vec<String> = pipeline.stages.iter().map(|s| s.name.clone()).collect();
    let mut secrets: Vec<String> = args.secrets.iter().map(|(_, v)| v.clone()).collect();
    secrets.extend(
        config
            .registries
            .iter()
            .map(|r| r.password.expose().to_string()),
    );
    let plan = RunPlan {
        run: RunLabels {
            run_id: new_run_id(),
            owner: OWNER.to_string(),
            pid: Some(std::process::id()),
        },
        pipeline,
        context,
        extra_env: args.env,
        secrets: args.secrets,
        selection,
        max_parallel: args.parallel,
        // As the server would: `gantry run` shows what a push will do.
        stage_timeout: Some(config.server.stage_timeout),
        archive,
        registries: gantry_server::registry_auths(&config),
        deployer: Arc::new(gantry_server::kube_deployer(&config)),
        // Where the image's source lives: the origin remote (as the server gives the clone
        // URL), else the directory.
        source_url: origin.unwrap_or_else(|| dir.display().to_string()),
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let engine = tokio::spawn(gantry_engine::execute(Arc::new(docker), plan, tx, cancel));
    let mut printer = Printer::new(&names, &secrets);
    while let Some(event) = rx.recv().await {
        printer.event(&event);
    }
    let summary = engine.await.context("the run task failed")?;
    printer.summary(&summary);
    Ok(summary.status)
}

/// Containers of `gantry run` carry this owner label.
const OWNER: &str = "cli";

/// Removes what earlier `gantry run`s left behind when they were killed.
/// Runs of other live `gantry run` processes are left alone.
async fn remove_dead_leftovers(docker: &gantry_docker::Docker) {
    let Ok(leftovers) = docker.leftovers(OWNER).await else {
        return;
    };
    for leftover in leftovers {
        let alive = leftover
            .pid
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            tracing::info!(run_id = %leftover.run_id, "removing leftovers of a crashed run");
            let _ = docker.remove_run(&leftover.run_id).await;
        }
    }
}

fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("\ncancelling: stopping containers (press Ctrl-C again to quit at once)");
    cancel.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    std::process::exit(i32::from(exit::CANCELLED));
}

/// The working tree's tar, without what git ignores unless `whole`; and the top-most paths
/// left out.
fn pack_tree(tree: &Path, whole: bool) -> std::io::Result<(Archive, Vec<String>)> {
    let ignores = if whole {
        None
    } else {
        gantry_git::GitIgnores::open(tree)
    };
    let left_out = std::cell::RefCell::new(Vec::new());
    let archive = Archive::of_directory(tree, &std::env::temp_dir(), &|path, is_dir| {
        let ignored = ignores
            .as_ref()
            .is_some_and(|ignores| ignores.is_ignored(path, is_dir));
        if ignored {
            let slash = if is_dir { "/" } else { "" };
            left_out
                .borrow_mut()
                .push(format!("{}{slash}", path.display()));
        }
        ignored
    })?;
    Ok((archive, left_out.into_inner()))
}

/// One line telling what `.gitignore` kept out of the workspace.
fn left_out_note(left_out: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut shown = left_out[..left_out.len().min(SHOWN)].join(", ");
    if left_out.len() > SHOWN {
        shown.push_str(&format!(" and {} more", left_out.len() - SHOWN));
    }
    format!(
        "note: not copied into the workspace, as git ignores them: {shown} (--no-gitignore copies everything)"
    )
}
