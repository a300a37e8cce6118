//! The CLI client: `gantry runs`, `show`, `trigger`, `logs`, `cancel`,
//! `rerun`, `deliveries`, `projects`, `secret`, `deployments`, `rollback` and
//! `rollout history` talk to `gantry serve` over its REST API (`/api/v1`,
//! bearer token).
//!
//! `api` is the only module that speaks HTTP; `render` turns answers into
//! text without IO, so the tables are tested as plain strings; `logs` prints
//! and follows stage logs. With `--json`, every command prints the server's
//! JSON as it came (indented) instead.

mod api;
mod deploy;
mod logs;
mod model;
mod render;
mod secret;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use chrono::Offset;
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

use api::{Api, Error};
use model::Run;
use render::View;

/// Exit codes of the client commands: those of `gantry run`, and one more.
pub mod exit {
    /// The followed run failed or was cancelled; `ERROR`: Gantry could not do
    /// its job (bad arguments, server unreachable, token refused, server error).
    pub use crate::exit::{ERROR, FAILURE};
    /// The run, stage, project or secret does not exist.
    pub const NOT_FOUND: u8 = 3;
}

const RUN_STATUSES: [&str; 6] = [
    "queued",
    "running",
    "success",
    "failure",
    "cancelled",
    "error",
];

/// How to reach the server; every client command takes these.
#[derive(Args)]
pub struct ClientArgs {
    /// The Gantry server's address.
    #[arg(long, env = "GANTRY_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The API token: the admin token 'gantry serve' prints at first start.
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// List the server's runs, newest first.
    Runs {
        /// Only this project's runs (e.g. demo/backend).
        #[arg(long)]
        project: Option<String>,
        /// Only runs in this state.
        #[arg(long, value_parser = RUN_STATUSES)]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a run and its stages.
    Show {
        /// The run's id (the RUN column of 'gantry runs').
        #[arg(value_name = "RUN")]
        run: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a run of a project on the server.
    Trigger {
        /// The project (e.g. demo/backend).
        project: String,
        /// The branch to run: its tip when the run starts.
        #[arg(long, conflicts_with = "sha", required_unless_present = "sha")]
        branch: Option<String>,
        /// The commit to run (40 hex digits).
        #[arg(long)]
        sha: Option<String>,
        /// Print the run's logs until it finishes, and exit with its result.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a run's stage logs.
    Logs {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: u64,
        /// Only this stage's log.
        #[arg(long)]
        stage: Option<String>,
        /// Keep printing new lines until the run finishes, and exit with its result.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a queued or running run.
    Cancel {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a new run of the same project, commit and ref as a finished one.
    Rerun {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List recent webhook deliveries and what became of them.
    Deliveries {
        /// At most this many deliveries.
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the projects the server builds.
    Projects {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage a project's secrets on the server: set (from standard input), list, rm.
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// List the deploy history: every rollout and rollback Gantry made, newest first.
    Deployments(deploy::DeploymentsArgs),
    /// Roll a Deployment back to its previous revision (or --to-revision), like 'kubectl
    /// rollout undo', and wait for that rollout to end.
    Rollback(deploy::RollbackArgs),
    /// Inspect a Deployment's rollouts: 'gantry rollout history'.
    Rollout {
        #[command(subcommand)]
        command: deploy::RolloutCommand,
    },
}

pub fn main(command: ClientCommand) -> ExitCode {
    match run(command) {
        Ok(code) => ExitCode::from(code),
        Err(Error::StdoutClosed) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(command: ClientCommand) -> Result<u8, Error> {
    use ClientCommand as C;
    match command {
        C::Runs {
            project,
            status,
            limit,
            client,
        } => {
            let ctx = Ctx::new(client)?;
            let query = [
                ("project", project),
                ("status", status),
                ("limit", limit.map(|n| n.to_string())),
            ];
            let reply = ctx.api.get("/runs", &query)?;
            ctx.print_or(&reply.body, |list: model::RunList| {
                render::runs_table(&list.runs, &ctx.view)
            })
        }
        C::Show { run, client } => {
            let ctx = Ctx::new(client)?;
            let (run, body) = ctx.run(run)?;
            ctx.print_or(&body, |_: serde_json::Value| {
                render::run_page(&run, &ctx.view)
            })
        }
        C::Trigger {
            project,
            branch,
            sha,
            follow,
            client,
        } => {
            let ctx = Ctx::new(client)?;
            trigger(&ctx, project, branch, sha, follow)
        }
        C::Logs {
            run,
            stage,
            follow,
            client,
        } => {
            let ctx = Ctx::new(client)?;
            let mode = if ctx.json {
                logs::Mode::JsonLines
            } else {
                logs::Mode::Text
            };
            let fetched = ctx.run(run)?;
            if !follow {
                logs::print_all(&ctx, &fetched.0, stage.as_deref(), mode)?;
                return Ok(0);
            }
            let (run, _) = logs::follow(&ctx, fetched, stage.as_deref(), mode)?;
            if mode == logs::Mode::Text {
                ctx.out(&format!("{}\n", render::final_line(&run, &ctx.view)))?;
            }
            Ok(result_code(&run))
        }
        C::Cancel { run, client } => {
            let ctx = Ctx::new(client)?;
            let reply = ctx
                .api
                .post(&format!("/runs/{run}/cancel"), None)
                .map_err(|e| e.not_found_as(format!("run {run}")))?;
            ctx.print_or(&reply.body, |after: Run| {
                let line = render::run_line(&after, &ctx.view);
                if after.is_finished() {
                    format!("{line}\n")
                } else {
                    format!("{line}, cancel requested\n")
                }
            })
        }
        C::Rerun { run, client } => {
            let ctx = Ctx::new(client)?;
            let reply = ctx
                .api
                .post(&format!("/runs/{run}/rerun"), None)
                .map_err(|e| e.not_found_as(format!("run {run}")))?;
            ctx.print_or(&reply.body, |new: Run| {
                format!(
                    "{}, rerun of run {run}\n",
                    render::run_line(&new, &ctx.view)
                )
            })
        }
        C::Deliveries { limit, client } => {
            let ctx = Ctx::new(client)?;
            let reply = ctx
                .api
                .get("/deliveries", &[("limit", limit.map(|n| n.to_string()))])?;
            ctx.print_or(&reply.body, |list: model::DeliveryList| {
                render::deliveries_table(&list.deliveries, &ctx.view)
            })
        }
        C::Projects { client } => {
            let ctx = Ctx::new(client)?;
            let reply = ctx.api.get("/projects", &[])?;
            ctx.print_or(&reply.body, |list: model::ProjectList| {
                render::projects_table(&list.projects, &ctx.view)
            })
        }
        C::Secret { command } => secret::run(command),
        C::Deployments(args) => deploy::deployments(args),
        C::Rollback(args) => deploy::rollback(args),
        C::Rollout { command } => deploy::rollout(command),
    }
}

fn trigger(
    ctx: &Ctx,
    project: String,
    branch: Option<String>,
    sha: Option<String>,
    follow: bool,
) -> Result<u8, Error> {
    let mut body = serde_json::json!({ "project": project });
    if let Some(branch) = branch {
        body["branch"] = branch.into();
    }
    if let Some(sha) = sha {
        body["commit_sha"] = sha.into();
    }
    let reply = ctx.api.post("/runs", Some(&body))?;
    let run: Run = ctx.parse(&reply.body)?;
    if !follow {
        return ctx.print_or(&reply.body, |_: serde_json::Value| {
            format!("{}\n", render::run_line(&run, &ctx.view))
        });
    }
    if ctx.json {
        // One JSON document for scripts: the run as it finished.
        let (run, body) = logs::follow(ctx, (run, reply.body), None, logs::Mode::Quiet)?;
        ctx.out(&format!("{}\n", render::pretty_json(&body)))?;
        return Ok(result_code(&run));
    }
    ctx.out(&format!("{}\n", render::run_line(&run, &ctx.view)))?;
    let (run, _) = logs::follow(ctx, (run, reply.body), None, logs::Mode::Text)?;
    ctx.out(&format!("{}\n", render::final_line(&run, &ctx.view)))?;
    Ok(result_code(&run))
}

/// The exit code of a followed run: 0 success, 1 failed or cancelled, 2 when
/// Gantry itself could not run it (status `error`).
fn result_code(run: &Run) -> u8 {
    match run.status.as_str() {
        "success" => 0,
        "error" => exit::ERROR,
        _ => exit::FAILURE,
    }
}

/// What every command needs: the server, the output mode and the view.
struct Ctx {
    api: Api,
    json: bool,
    view: View,
}

impl Ctx {
    fn new(args: ClientArgs) -> Result<Ctx, Error> {
        let colour = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let now = chrono::Utc::now();
        let offset = chrono::Local::now().offset().fix();
        Ok(Ctx {
            api: Api::new(&args.server, args.token)?,
            json: args.json,
            view: View {
                colour,
                now,
                offset,
            },
        })
    }

    /// `GET /runs/{id}`, parsed, with the body kept for `--json`.
    fn run(&self, id: u64) -> Result<(Run, String), Error> {
        let reply = self
            .api
            .get(&format!("/runs/{id}"), &[])
            .map_err(|e| e.not_found_as(format!("run {id}")))?;
        Ok((self.parse(&reply.body)?, reply.body))
    }

    fn parse<T: DeserializeOwned>(&self, body: &str) -> Result<T, Error> {
        serde_json::from_str(body).map_err(|e| Error::Protocol {
            url: self.api.base().to_string(),
            detail: format!("the JSON does not have the expected shape ({e}); is the client older than the server?"),
        })
    }

    /// With `--json`, the server's JSON indented; otherwise `render` of it.
    fn print_or<T: DeserializeOwned>(
        &self,
        body: &str,
        render: impl FnOnce(T) -> String,
    ) -> Result<u8, Error> {
        let text = if self.json {
            self.parse::<serde_json::Value>(body)?;
            format!("{}\n", render::pretty_json(body))
        } else {
            render(self.parse(body)?)
        };
        self.out(&text)?;
        Ok(0)
    }

    fn out(&self, text: &str) -> Result<(), Error> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => Error::StdoutClosed,
                _ => Error::Stdout(e),
            })
    }
}
