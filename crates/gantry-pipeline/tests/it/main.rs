//! The one integration test binary of gantry-pipeline.

mod build_deploy;
mod conditions;
mod corpus;
mod docs;
mod env;
mod needs;
mod robustness;
mod script;
mod units;
mod validation;

use std::fmt::Write;

use gantry_pipeline::{FailFast, Pipeline, StageKind, When};

/// Removes the indentation common to all non-blank lines and the first
/// line break, so YAML can be written indented inside a test.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|line| line.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Parses `source` (dedented) and compares the rendered pipeline or
/// diagnostics with `expect`.
fn check(source: &str, expect: expect_test::Expect) {
    expect.assert_eq(&render(&dedent(source)));
}

/// Parses `source` and renders the pipeline or the diagnostics as text.
fn render(source: &str) -> String {
    match gantry_pipeline::parse(".gantry.yml", source) {
        Ok(pipeline) => summary(&pipeline),
        Err(diagnostics) => diagnostics.to_string(),
    }
}

/// A compact view of a pipeline: only what differs from the defaults.
fn summary(pipeline: &Pipeline) -> String {
    let mut out = String::new();
    if let Some(name) = &pipeline.name {
        let _ = writeln!(out, "name: {name}");
    }
    let _ = writeln!(
        out,
        "on: push={:?} tag={:?}",
        pipeline.on.push, pipeline.on.tag
    );
    for (key, value) in &pipeline.env {
        let _ = writeln!(out, "env {key}={value:?}");
    }
    for stage in &pipeline.stages {
        let needs: Vec<&str> = stage
            .needs
            .iter()
            .map(|&i| pipeline.stages[i].name.as_str())
            .collect();
        let _ = writeln!(out, "stage {} needs {needs:?}", stage.name);
        match &stage.kind {
            StageKind::Commands { image, commands } => {
                let _ = writeln!(out, "  image {image}");
                for command in commands {
                    let _ = writeln!(out, "  $ {command}");
                }
            }
            StageKind::Build(build) => {
                let _ = writeln!(
                    out,
                    "  build {} tags={:?} push={}",
                    build.image, build.tags, build.push
                );
                let _ = writeln!(
                    out,
                    "    context={:?} dockerfile={:?} target={:?} registry={:?}",
                    build.context, build.dockerfile, build.target, build.registry
                );
                for (key, value) in &build.args {
                    let _ = writeln!(out, "    arg {key}={value:?}");
                }
            }
            StageKind::Deploy(deploy) => {
                let _ = writeln!(
                    out,
                    "  deploy {} to {}/{} container={:?} cluster={:?}",
                    deploy.image,
                    deploy.namespace,
                    deploy.deployment,
                    deploy.container,
                    deploy.cluster
                );
                let _ = writeln!(
                    out,
                    "    timeout={:?} rollback={}",
                    deploy.timeout, deploy.rollback
                );
                if deploy.fail_fast != FailFast::default() {
                    let _ = writeln!(out, "    {:?}", deploy.fail_fast);
                }
            }
            other => {
                let _ = writeln!(out, "  {other:?}");
            }
        }
        for (key, value) in &stage.env {
            let _ = writeln!(out, "  env {key}={value:?}");
        }
        if !stage.secrets.is_empty() {
            let _ = writeln!(out, "  secrets {:?}", stage.secrets);
        }
        for service in &stage.services {
            let _ = writeln!(
                out,
                "  service {} image={} env={:?} commands={:?}",
                service.name, service.image, service.env, service.commands
            );
        }
        if let Some(timeout) = stage.timeout {
            let _ = writeln!(out, "  timeout {timeout:?}");
        }
        if stage.retry != 0 {
            let _ = writeln!(out, "  retry {}", stage.retry);
        }
        if let Some(memory) = stage.memory {
            let _ = writeln!(out, "  memory {memory}");
        }
        if let Some(cpus) = stage.cpus {
            let _ = writeln!(out, "  cpus {cpus}");
        }
        if matches!(stage.kind, StageKind::Commands { .. }) {
            let _ = writeln!(out, "  pull {}", stage.pull);
        }
        if stage.allow_failure {
            let _ = writeln!(out, "  allow_failure");
        }
        if stage.when != When::default() {
            let when = &stage.when;
            let branch = when.branch.as_ref().map(ToString::to_string);
            let tag = when.tag.as_ref().map(ToString::to_string);
            let _ = writeln!(
                out,
                "  when branch={branch:?} tag={tag:?} event={:?}",
                when.event
            );
        }
    }
    out
}

/// Parses a file (dedented) that must be valid.
fn pipeline(source: &str) -> Pipeline {
    match gantry_pipeline::parse(".gantry.yml", &dedent(source)) {
        Ok(pipeline) => pipeline,
        Err(diagnostics) => panic!("{diagnostics}"),
    }
}
