//! `gantry rollback`, `gantry deployments` and `gantry rollout history`: the deploy history and
//! manual rollbacks, done by the server, which holds the clusters' credentials.

use clap::{Args, Subcommand};

use super::api::{Error, path_segment};
use super::{ClientArgs, Ctx, exit, model, render};

/// Which Deployment, where: what `rollback` and `rollout history` share.
#[derive(Args)]
pub struct Target {
    /// The Deployment's name (e.g. backend).
    deployment: String,
    /// Its namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// A [[cluster]] of the server's gantry.toml, or 'default': the server's default kubeconfig.
    #[arg(long, default_value = "default")]
    cluster: String,
}

impl Target {
    /// `/deployments/{cluster}/{namespace}/{name}`
    fn path(&self) -> String {
        format!(
            "/deployments/{}/{}/{}",
            path_segment(&self.cluster),
            path_segment(&self.namespace),
            path_segment(&self.deployment)
        )
    }
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: Target,
    /// The revision to go back to, as 'gantry rollout history' lists them (default: the one
    /// before the current).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    to_revision: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct DeploymentsArgs {
    /// Only this cluster's deployments.
    #[arg(long)]
    cluster: Option<String>,
    /// At most this many entries.
    #[arg(long)]
    limit: Option<u32>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// List a Deployment's revisions with their change causes and images, like 'kubectl rollout
    /// history'.
    History {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Rolls back and waits for the rollback's rollout to end: 0 when it completed, 1 when it
/// failed, timed out or was cancelled.
pub fn rollback(args: RollbackArgs) -> Result<u8, Error> {
    let ctx = Ctx::new(args.client)?;
    let body = args
        .to_revision
        .map(|revision| serde_json::json!({ "to_revision": revision }));
    let reply = ctx
        .api
        .post_and_wait(&format!("{}/rollback", args.target.path()), body.as_ref())?;
    let answer: model::RolledBack = ctx.parse(&reply.body)?;
    ctx.print_or(&reply.body, |_: serde_json::Value| {
        format!("{}\n", render::rollback_line(&answer))
    })?;
    Ok(match answer.entry.rollout.result.as_str() {
        "complete" => 0,
        _ => exit::FAILURE,
    })
}

pub fn deployments(args: DeploymentsArgs) -> Result<u8, Error> {
    let ctx = Ctx::new(args.client)?;
    let query = [
        ("cluster", args.cluster),
        ("limit", args.limit.map(|n| n.to_string())),
    ];
    let reply = ctx.api.get("/deployments", &query)?;
    ctx.print_or(&reply.body, |list: model::DeploymentList| {
        render::deployments_table(&list.deployments, &ctx.view)
    })
}

pub fn rollout(command: RolloutCommand) -> Result<u8, Error> {
    match command {
        RolloutCommand::History { target, client } => {
            let ctx = Ctx::new(client)?;
            let reply = ctx.api.get(&format!("{}/history", target.path()), &[])?;
            let name = format!("{}/{}", target.namespace, target.deployment);
            ctx.print_or(&reply.body, |list: model::RevisionList| {
                render::rollout_history(&name, &target.cluster, &list.revisions, &ctx.view)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_encoded_in_paths() {
        let target = Target {
            deployment: "backend".into(),
            namespace: "shop".into(),
            cluster: "eu west".into(),
        };
        assert_eq!(target.path(), "/deployments/eu%20west/shop/backend");
    }
}
