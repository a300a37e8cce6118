//! `${VAR}` interpolation and the environment a stage runs with.
//!
//! Only `image`, `env` values, a service's `image` and `env` values, a
//! build's `args` values, `image` and `tags`, and a deploy's `image` are
//! interpolated; commands are not, because the shell expands `$VAR` from
//! the environment itself.
//!
//! Besides variables, a template can name a value a finished `build` stage
//! produced: `${stages.NAME.digest}` or `${stages.NAME.image}`. That is the
//! only form in which a name may contain dots, and stage names cannot clash
//! with variables, whose names never do.

use std::collections::HashMap;
use std::time::Duration;

use crate::model::{
    BuildSpec, DeploySpec, FailFast, Pipeline, Rollback, RunContext, Stage, StageKind,
};
use crate::names::{TAG_RULE, check_repository, check_tag};

/// A piece of a template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    /// A `${NAME}` reference; `at` is the byte offset of its `$`.
    Var {
        name: &'a str,
        at: usize,
    },
}

/// A syntax error in a template, at a byte offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub(crate) at: usize,
    pub(crate) len: usize,
    pub(crate) message: String,
    pub(crate) help: &'static str,
}

/// Splits a template into text and `${NAME}` references. `$${` is a
/// literal `${`; any other `$` is itself.
pub(crate) fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < bytes.len() {
        // Only a `$` (ASCII, so a char boundary) starts anything.
        if bytes[i] != b'$' {
            i += 1;
        } else if template[i..].starts_with("$${") {
            pieces.push(Piece::Text(&template[text_start..i]));
            pieces.push(Piece::Text("${"));
            i += 3;
            text_start = i;
        } else if template[i..].starts_with("${") {
            pieces.push(Piece::Text(&template[text_start..i]));
            let Some(close) = template[i..].find('}') else {
                return Err(TemplateError {
                    at: i,
                    len: 2,
                    message: "unterminated ${ (missing '}')".to_owned(),
                    help: "close it with '}', or write `$${` for a literal `${`",
                });
            };
            let name = &template[i + 2..i + close];
            if !is_var_name(name) && stage_output(name).is_none() {
                let help = if name.starts_with("stages.") {
                    "a stage output is written `${stages.NAME.digest}` or `${stages.NAME.image}`"
                } else {
                    "a variable name starts with a letter or '_' and has only letters, digits and '_'; write `$${` for a literal `${`"
                };
                return Err(TemplateError {
                    at: i,
                    len: close + 1,
                    message: format!("invalid variable reference ${{{name}}}"),
                    help,
                });
            }
            pieces.push(Piece::Var { name, at: i });
            i += close + 1;
            text_start = i;
        } else {
            i += 1;
        }
    }
    pieces.push(Piece::Text(&template[text_start..]));
    pieces.retain(|piece| piece != &Piece::Text(""));
    Ok(pieces)
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The keys a `build` stage's outputs have.
pub(crate) const OUTPUT_KEYS: [&str; 2] = ["digest", "image"];

/// Splits `stages.NAME.KEY` into the stage name and the key. A stage name
/// may itself contain dots, so the key is what follows the last one.
pub(crate) fn stage_output(name: &str) -> Option<(&str, &str)> {
    let (stage, key) = name.strip_prefix("stages.")?.rsplit_once('.')?;
    let stage_ok = !stage.is_empty()
        && stage
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (stage_ok && is_var_name(key)).then_some((stage, key))
}

/// Replaces every `${VAR}` in `template` with `lookup(VAR)`. `$${` escapes
/// to a literal `${`. An unknown variable is an error, never an empty string.
///
/// A stage output `${stages.NAME.KEY}` is looked up by its whole name,
/// `stages.NAME.KEY`.
pub fn interpolate(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template).map_err(|err| err.message)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var { name, .. } => match lookup(name) {
                Some(value) => out.push_str(&value),
                None if stage_output(name).is_some() => {
                    return Err(format!("unknown stage output ${{{name}}}"));
                }
                None => return Err(format!("unknown variable ${{{name}}}")),
            },
        }
    }
    Ok(out)
}

/// Values produced by finished stages, for `${stages.NAME.KEY}`.
pub trait StageOutputs {
    /// The value of output `key` (`digest` or `image`) of the stage called
    /// `stage`, if that stage produced it.
    fn output(&self, stage: &str, key: &str) -> Option<String>;
}

/// Outer key: the stage's name; inner key: `digest` or `image`.
impl StageOutputs for HashMap<String, HashMap<String, String>> {
    fn output(&self, stage: &str, key: &str) -> Option<String> {
        self.get(stage)?.get(key).cloned()
    }
}

/// For [`resolve_stage`], which has no outputs to offer.
struct NoOutputs;

impl StageOutputs for NoOutputs {
    fn output(&self, _stage: &str, _key: &str) -> Option<String> {
        None
    }
}

/// A stage, ready to run: everything interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStage {
    pub image: String,
    /// Built-ins, then the pipeline's `env`, then the stage's `env`, then
    /// `extra_env`; a later entry replaces an earlier one with the same name
    /// (in place), so every name appears once.
    pub env: Vec<(String, String)>,
    pub services: Vec<ResolvedService>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedService {
    pub name: String,
    pub image: String,
    /// Only the service's own `env`: services do not get the built-ins,
    /// the pipeline's or the stage's variables, nor secrets.
    pub env: Vec<(String, String)>,
    /// Empty means the image's default command.
    pub commands: Vec<String>,
}

/// A `build` stage, ready to run: `args` values, `image` and `tags`
/// interpolated, every tag a valid Docker tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBuild {
    /// A directory relative to the workspace.
    pub context: String,
    /// Relative to the workspace; `None` means `Dockerfile` in the context.
    pub dockerfile: Option<String>,
    pub target: Option<String>,
    pub args: Vec<(String, String)>,
    /// The repository, without a tag.
    pub image: String,
    /// At least one, without duplicates.
    pub tags: Vec<String>,
    /// The name of a `[[registry]]` in `gantry.toml`; `None` is anonymous.
    pub registry: Option<String>,
    pub push: bool,
}

/// A `deploy` stage, ready to run: `image` interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDeploy {
    /// The name of a `[[cluster]]` in `gantry.toml`; `None` means the
    /// default kubeconfig.
    pub cluster: Option<String>,
    pub namespace: String,
    pub deployment: String,
    /// `None` means the Deployment's only container.
    pub container: Option<String>,
    pub image: String,
    pub timeout: Duration,
    pub rollback: Rollback,
    pub fail_fast: FailFast,
}

/// An environment under construction: later values replace earlier ones.
#[derive(Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }
}

/// A variable of `env`, or a stage output.
fn lookup(env: &Env, outputs: &dyn StageOutputs, name: &str) -> Option<String> {
    match stage_output(name) {
        Some((stage, key)) => outputs.output(stage, key),
        None => env.get(name),
    }
}

/// The stage at `index` and its complete environment: the built-ins, the
/// pipeline's `env`, the stage's `env` (each value interpolated against the
/// variables set before it and the stage outputs), then `extra_env`, taken
/// literally: a secret that contains `${` must not be rewritten.
fn stage_env<'p>(
    pipeline: &'p Pipeline,
    index: usize,
    ctx: &RunContext,
    extra_env: &[(String, String)],
    outputs: &dyn StageOutputs,
) -> Result<(&'p Stage, Env), String> {
    let Some(stage) = pipeline.stages.get(index) else {
        return Err(format!(
            "no stage #{index}: the pipeline has {} stages",
            pipeline.stages.len()
        ));
    };
    let mut env = Env(ctx.builtin_env());
    for (name, template) in pipeline.env.iter().chain(&stage.env) {
        let value = interpolate(template, &|var| lookup(&env, outputs, var))
            .map_err(|err| format!("stage '{}': env {name}: {err}", stage.name))?;
        env.set(name, value);
    }
    for (key, value) in extra_env {
        env.set(key, value.clone());
    }
    Ok((stage, env))
}

/// Builds the environment and image of `pipeline.stages[stage]` for a run,
/// without stage outputs: [`resolve_stage_with`] with none.
pub fn resolve_stage(
    pipeline: &Pipeline,
    stage: usize,
    ctx: &RunContext,
    extra_env: &[(String, String)],
) -> Result<ResolvedStage, String> {
    resolve_stage_with(pipeline, stage, ctx, extra_env, &NoOutputs)
}

/// Builds the environment and image of `pipeline.stages[stage]` for a run.
///
/// Each `env` value is interpolated against the variables set before it:
/// the built-ins, then the pipeline's `env` in order, then the stage's;
/// `${stages.NAME.KEY}` takes its value from `outputs`. The `extra_env`
/// values (secrets, manual-run variables) are taken literally: a secret
/// that contains `${` must not be rewritten. The image and the services see
/// the stage's complete environment.
///
/// A `build` or `deploy` stage gets its environment too, with an empty
/// `image`: its own fields are resolved by [`resolve_build`] and
/// [`resolve_deploy`].
pub fn resolve_stage_with(
    pipeline: &Pipeline,
    stage: usize,
    ctx: &RunContext,
    extra_env: &[(String, String)],
    outputs: &dyn StageOutputs,
) -> Result<ResolvedStage, String> {
    let (stage, env) = stage_env(pipeline, stage, ctx, extra_env, outputs)?;
    let name = &stage.name;
    let get = |var: &str| lookup(&env, outputs, var);
    let image = match &stage.kind {
        StageKind::Commands { image, .. } => {
            interpolate(image, &get).map_err(|err| format!("stage '{name}': image: {err}"))?
        }
        StageKind::Build(_) | StageKind::Deploy(_) => String::new(),
    };
    let mut services = Vec::with_capacity(stage.services.len());
    for service in &stage.services {
        let context = |err: String| format!("stage '{name}', service '{}': {err}", service.name);
        let image =
            interpolate(&service.image, &get).map_err(|err| context(format!("image: {err}")))?;
        let mut own = Env::default();
        for (key, template) in &service.env {
            let value = interpolate(template, &|var| own.get(var).or_else(|| get(var)))
                .map_err(|err| context(format!("env {key}: {err}")))?;
            own.set(key, value);
        }
        services.push(ResolvedService {
            name: service.name.clone(),
            image,
            env: own.0,
            commands: service.commands.clone(),
        });
    }
    Ok(ResolvedStage {
        image,
        env: env.0,
        services,
    })
}

/// Resolves the `build` of `pipeline.stages[stage]`: its `args` values,
/// `image` and `tags` are interpolated against the stage's complete
/// environment (as [`resolve_stage_with`] builds it) and `outputs`.
///
/// `Err` if the stage is not a `build` stage, a value cannot be
/// interpolated, or the image or a tag is invalid once interpolated (say,
/// `${GANTRY_BRANCH}` of the branch `feature/x`). Tags that come out equal
/// are kept once.
pub fn resolve_build(
    pipeline: &Pipeline,
    stage: usize,
    ctx: &RunContext,
    extra_env: &[(String, String)],
    outputs: &dyn StageOutputs,
) -> Result<ResolvedBuild, String> {
    let (stage, env) = stage_env(pipeline, stage, ctx, extra_env, outputs)?;
    let name = &stage.name;
    let StageKind::Build(spec) = &stage.kind else {
        return Err(format!(
            "stage '{name}' is a `{}` stage, not a `build` stage",
            stage.kind_name()
        ));
    };
    let BuildSpec {
        context,
        dockerfile,
        target,
        args,
        image,
        tags,
        registry,
        push,
    } = spec;
    let get = |var: &str| lookup(&env, outputs, var);
    let fail = |what: &str, err: String| format!("stage '{name}': build.{what}: {err}");
    let mut resolved_args = Vec::with_capacity(args.len());
    for (key, template) in args {
        let value = interpolate(template, &get).map_err(|err| fail(&format!("args {key}"), err))?;
        resolved_args.push((key.clone(), value));
    }
    let image = interpolate(image, &get).map_err(|err| fail("image", err))?;
    check_repository(&image)
        .map_err(|reason| fail("image", format!("invalid repository '{image}': {reason}")))?;
    let mut resolved_tags: Vec<String> = Vec::with_capacity(tags.len());
    for template in tags {
        let tag = interpolate(template, &get).map_err(|err| fail("tags", err))?;
        check_tag(&tag).map_err(|reason| {
            fail(
                "tags",
                format!("'{template}' gives the invalid tag '{tag}': {reason} ({TAG_RULE})"),
            )
        })?;
        if !resolved_tags.contains(&tag) {
            resolved_tags.push(tag);
        }
    }
    if resolved_tags.is_empty() {
        return Err(fail("tags", "no tags".to_owned()));
    }
    Ok(ResolvedBuild {
        context: context.clone(),
        dockerfile: dockerfile.clone(),
        target: target.clone(),
        args: resolved_args,
        image,
        tags: resolved_tags,
        registry: registry.clone(),
        push: *push,
    })
}

/// Resolves the `deploy` of `pipeline.stages[stage]`: its `image` is
/// interpolated against the stage's complete environment (as
/// [`resolve_stage_with`] builds it) and `outputs`; the other fields are
/// taken as written.
///
/// `Err` if the stage is not a `deploy` stage, or the image cannot be
/// interpolated or comes out empty or with whitespace.
pub fn resolve_deploy(
    pipeline: &Pipeline,
    stage: usize,
    ctx: &RunContext,
    extra_env: &[(String, String)],
    outputs: &dyn StageOutputs,
) -> Result<ResolvedDeploy, String> {
    let (stage, env) = stage_env(pipeline, stage, ctx, extra_env, outputs)?;
    let name = &stage.name;
    let StageKind::Deploy(spec) = &stage.kind else {
        return Err(format!(
            "stage '{name}' is a `{}` stage, not a `deploy` stage",
            stage.kind_name()
        ));
    };
    let DeploySpec {
        cluster,
        namespace,
        deployment,
        container,
        image,
        timeout,
        rollback,
        fail_fast,
    } = spec;
    let image = interpolate(image, &|var| lookup(&env, outputs, var))
        .map_err(|err| format!("stage '{name}': deploy.image: {err}"))?;
    if image.trim().is_empty() || image.contains(char::is_whitespace) {
        return Err(format!(
            "stage '{name}': deploy.image: invalid image '{image}'"
        ));
    }
    Ok(ResolvedDeploy {
        cluster: cluster.clone(),
        namespace: namespace.clone(),
        deployment: deployment.clone(),
        container: container.clone(),
        image,
        timeout: *timeout,
        rollback: *rollback,
        fail_fast: *fail_fast,
    })
}
