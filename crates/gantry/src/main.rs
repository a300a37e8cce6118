//! The `gantry` binary: argument parsing and wiring, nothing else.

mod client;
mod output;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "A self-hosted CI/CD runner: pipelines in Docker, deploys to Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline file and print every problem with its location.
    Lint {
        /// The pipeline file.
        #[arg(default_value = ".gantry.yml")]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Run the pipeline on the current directory's working tree, in Docker.
    Run(run::RunArgs),
    /// Start the server: GitHub webhooks, the run queue and the REST API.
    Serve {
        /// The configuration file (default: ./gantry.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Lint { file, format } => lint(&file, format),
        Command::Run(args) => run::main(args),
        Command::Serve { config } => serve::main(config.as_deref()),
        Command::Client(command) => client::main(command),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GANTRY_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("GANTRY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Exit codes scripts can rely on.
pub mod exit {
    /// The run or the check found a problem in the pipeline or its stages.
    pub const FAILURE: u8 = 1;
    /// Gantry could not do its job: a missing file, Docker unreachable, bad arguments.
    pub const ERROR: u8 = 2;
    /// Cancelled by SIGINT or SIGTERM.
    pub const CANCELLED: u8 = 130;
}

fn lint(file: &std::path::Path, format: Format) -> ExitCode {
    let source = match std::fs::read_to_string(file) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(exit::ERROR);
        }
    };
    match gantry_pipeline::parse(&file.display().to_string(), &source) {
        Ok(_) => {
            if let Format::Json = format {
                println!("[]");
            }
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            match format {
                Format::Human => eprint!("{diagnostics}"),
                Format::Json => println!("{}", diagnostics.to_json()),
            }
            ExitCode::from(exit::FAILURE)
        }
    }
}
