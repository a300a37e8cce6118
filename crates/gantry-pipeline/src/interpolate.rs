//! `${VAR}` interpolation and the environment a stage runs with.
//!
//! Only `image`, `env` values and a service's `image` and `env` values are
//! interpolated; commands are not, because the shell expands `$VAR` from
//! the environment itself.

use crate::model::{Pipeline, RunContext, StageKind};

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
            if !is_var_name(name) {
                return Err(TemplateError {
                    at: i,
                    len: close + 1,
                    message: format!("invalid variable reference ${{{name}}}"),
                    help: "a variable name starts with a letter or '_' and has only letters, digits and '_'; write `$${` for a literal `${`",
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

/// Replaces every `${VAR}` in `template` with `lookup(VAR)`. `$${` escapes
/// to a literal `${`. An unknown variable is an error, never an empty string.
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
                None => return Err(format!("unknown variable ${{{name}}}")),
            },
        }
    }
    Ok(out)
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

    /// Adds `entries`, each value interpolated against the variables set
    /// before it.
    fn extend_interpolated(
        &mut self,
        entries: &[(String, String)],
        what: &str,
    ) -> Result<(), String> {
        for (name, template) in entries {
            let value = interpolate(template, &|var| self.get(var))
                .map_err(|err| format!("{what} {name}: {err}"))?;
            self.set(name, value);
        }
        Ok(())
    }
}

/// Builds the environment and image of `pipeline.stages[stage]` for a run.
///
/// Each `env` value is interpolated against the variables set before it:
/// the built-ins, then the pipeline's `env` in order, then the stage's. The
/// `extra_env` values (secrets, manual-run variables) are taken literally:
/// a secret that contains `${` must not be rewritten. The image and the
/// services see the stage's complete environment.
pub fn resolve_stage(
    pipeline: &Pipeline,
    stage: usize,
    ctx: &RunContext,
    extra_env: &[(String, String)],
) -> Result<ResolvedStage, String> {
    let Some(stage) = pipeline.stages.get(stage) else {
        return Err(format!(
            "no stage #{stage}: the pipeline has {} stages",
            pipeline.stages.len()
        ));
    };
    let name = &stage.name;
    let mut env = Env(ctx.builtin_env());
    env.extend_interpolated(&pipeline.env, "env")
        .map_err(|err| format!("stage '{name}': {err}"))?;
    env.extend_interpolated(&stage.env, "env")
        .map_err(|err| format!("stage '{name}': {err}"))?;
    for (key, value) in extra_env {
        env.set(key, value.clone());
    }
    let image = match &stage.kind {
        StageKind::Commands { image, .. } => interpolate(image, &|var| env.get(var))
            .map_err(|err| format!("stage '{name}': image: {err}"))?,
    };
    let mut services = Vec::with_capacity(stage.services.len());
    for service in &stage.services {
        let context = |err: String| format!("stage '{name}', service '{}': {err}", service.name);
        let image = interpolate(&service.image, &|var| env.get(var))
            .map_err(|err| context(format!("image: {err}")))?;
        let mut own = Env::default();
        for (key, template) in &service.env {
            let value = interpolate(template, &|var| own.get(var).or_else(|| env.get(var)))
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
