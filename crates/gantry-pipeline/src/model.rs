//! The validated pipeline, and the conditions that decide what runs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// A validated `.gantry.yml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: Option<String>,
    pub on: Triggers,
    /// Raw values, in file order; `${VAR}` is not yet interpolated.
    pub env: Vec<(String, String)>,
    /// In file order. The `needs` graph over them is acyclic.
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// The index of the stage called `name`.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|stage| stage.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    /// Indices into [`Pipeline::stages`]. A stage without a `needs` key needs
    /// the stage before it (the first stage needs nothing).
    pub needs: Vec<usize>,
    pub kind: StageKind,
    /// Raw values, in file order; `${VAR}` is not yet interpolated.
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    pub services: Vec<Service>,
    pub timeout: Option<Duration>,
    pub retry: u32,
    /// In bytes.
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pull: PullPolicy,
    pub allow_failure: bool,
    pub when: When,
}

impl Stage {
    /// `"commands"`, `"build"` or `"deploy"`: the key that says what the
    /// stage does, for messages and the UI.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            StageKind::Commands { .. } => "commands",
            StageKind::Build(_) => "build",
            StageKind::Deploy(_) => "deploy",
        }
    }
}

/// What a stage does.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum StageKind {
    /// Runs `commands` with `sh -e` in a container of `image`.
    Commands {
        image: String,
        commands: Vec<String>,
    },
    /// Builds an image from a Dockerfile in the workspace and pushes it.
    Build(BuildSpec),
    /// Rolls a new image out to a Kubernetes Deployment.
    Deploy(DeploySpec),
}

/// A `build:` stage, values as written: `${VAR}` is not yet interpolated
/// ([`resolve_build`](crate::resolve_build) does that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The build context, a directory relative to the workspace; `.` by
    /// default.
    pub context: String,
    /// The Dockerfile, relative to the workspace. `None` means `Dockerfile`
    /// in the context.
    pub dockerfile: Option<String>,
    /// The multi-stage target to build; `None` builds the last stage.
    pub target: Option<String>,
    /// Build args, in file order; values may hold `${VAR}`.
    pub args: Vec<(String, String)>,
    /// The repository, without a tag; may hold `${VAR}`.
    pub image: String,
    /// At least one; each may hold `${VAR}`. `["${GANTRY_SHORT_SHA}"]` by
    /// default.
    pub tags: Vec<String>,
    /// The name of a `[[registry]]` in `gantry.toml` whose credentials push
    /// the image; `None` pushes anonymously.
    pub registry: Option<String>,
    /// `false` builds the image and leaves it on the Docker host.
    pub push: bool,
}

impl BuildSpec {
    /// The tags when `tags` is not given.
    pub const DEFAULT_TAGS: [&str; 1] = ["${GANTRY_SHORT_SHA}"];
}

/// A `deploy:` stage, values as written: `${VAR}` in `image` is not yet
/// interpolated ([`resolve_deploy`](crate::resolve_deploy) does that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySpec {
    /// The name of a `[[cluster]]` in `gantry.toml`; `None` means the
    /// default kubeconfig.
    pub cluster: Option<String>,
    /// `default` unless given.
    pub namespace: String,
    pub deployment: String,
    /// The container whose image is replaced; `None` means the Deployment's
    /// only container.
    pub container: Option<String>,
    /// The image to roll out, usually `${stages.NAME.digest}`.
    pub image: String,
    /// How long the rollout may take to complete; 5 minutes unless given.
    pub timeout: Duration,
    pub rollback: Rollback,
    /// When the new pods' state fails the rollout before `timeout`.
    pub fail_fast: FailFast,
}

/// `fail_fast:` of a `deploy` stage: how much of each pod failure the rollout tolerates before
/// it fails (and, with `rollback: auto`, is undone). `None` keeps the runner's default, so the
/// defaults live in one place (gantry-kube's `Thresholds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailFast {
    /// Restarts of a container in `CrashLoopBackOff` that fail the rollout.
    pub crash_loop_restarts: Option<u32>,
    /// How long a container may stay in `ErrImagePull`/`ImagePullBackOff`.
    pub image_pull_grace: Option<Duration>,
    /// How long a container may stay in `CreateContainerConfigError`.
    pub config_error_grace: Option<Duration>,
    /// How long a pod may stay unschedulable.
    pub unschedulable_grace: Option<Duration>,
}

impl FailFast {
    /// The most restarts `crash_loop_restarts` may ask for.
    pub const MAX_CRASH_LOOP_RESTARTS: u32 = 100;
}

impl DeploySpec {
    /// The rollout timeout when `timeout` is not given.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// The namespace when `namespace` is not given.
    pub const DEFAULT_NAMESPACE: &str = "default";
}

/// What a `deploy` stage does when its rollout fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rollback {
    /// Undo the rollout (like `kubectl rollout undo`), then fail the stage.
    #[default]
    Auto,
    /// Leave the failed rollout as it is and fail the stage.
    Never,
}

impl Rollback {
    pub(crate) const NAMES: [&str; 2] = ["auto", "never"];
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rollback::Auto => "auto",
            Rollback::Never => "never",
        })
    }
}

impl FromStr for Rollback {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Rollback::Auto),
            "never" => Ok(Rollback::Never),
            _ => Err(format!("unknown rollback policy '{s}'")),
        }
    }
}

/// A container started next to a stage and reachable by `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub image: String,
    /// Raw values, in file order; `${VAR}` is not yet interpolated.
    pub env: Vec<(String, String)>,
    /// Empty means the image's default command.
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub(crate) const NAMES: [&str; 3] = ["always", "if-not-present", "never"];
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        })
    }
}

impl FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "if-not-present" => Ok(PullPolicy::IfNotPresent),
            "never" => Ok(PullPolicy::Never),
            _ => Err(format!("unknown pull policy '{s}'")),
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Push,
    Tag,
    Manual,
}

impl Event {
    pub(crate) const NAMES: [&str; 3] = ["push", "tag", "manual"];
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Event::Push => "push",
            Event::Tag => "tag",
            Event::Manual => "manual",
        })
    }
}

impl FromStr for Event {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "push" => Ok(Event::Push),
            "tag" => Ok(Event::Tag),
            "manual" => Ok(Event::Manual),
            _ => Err(format!("unknown event '{s}'")),
        }
    }
}

/// The facts about one run that conditions and built-in variables use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    pub event: Event,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit_sha: String,
    pub run_number: u64,
    /// E.g. `acme/backend`.
    pub repo: String,
}

impl RunContext {
    /// The names of [`RunContext::builtin_env`], in its order.
    pub const BUILTIN_NAMES: [&str; 8] = [
        "CI",
        "GANTRY_COMMIT_SHA",
        "GANTRY_SHORT_SHA",
        "GANTRY_BRANCH",
        "GANTRY_TAG",
        "GANTRY_EVENT",
        "GANTRY_RUN_NUMBER",
        "GANTRY_REPO",
    ];

    /// The variables every stage gets. An absent branch or tag is an empty
    /// string, so that `${GANTRY_TAG}` always interpolates.
    pub fn builtin_env(&self) -> Vec<(String, String)> {
        let values = [
            "true".to_owned(),
            self.commit_sha.clone(),
            self.commit_sha.chars().take(8).collect(),
            self.branch.clone().unwrap_or_default(),
            self.tag.clone().unwrap_or_default(),
            self.event.to_string(),
            self.run_number.to_string(),
            self.repo.clone(),
        ];
        Self::BUILTIN_NAMES
            .iter()
            .map(|name| name.to_string())
            .zip(values)
            .collect()
    }
}

/// Branch or tag glob patterns, like GitHub's: `*` stays within one path
/// segment, `**` crosses `/`.
#[derive(Clone)]
pub struct Patterns {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    /// Compiles `patterns`; `Err` names the first bad one and why.
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        let mut builder = GlobSetBuilder::new();
        for pattern in &patterns {
            builder.add(compile(pattern)?);
        }
        let set = builder.build().map_err(|err| err.to_string())?;
        Ok(Patterns { patterns, set })
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

pub(crate) fn compile(pattern: &str) -> Result<globset::Glob, String> {
    if pattern.is_empty() {
        return Err("a pattern cannot be empty".to_owned());
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|err| err.kind().to_string())
}

impl PartialEq for Patterns {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Patterns").field(&self.patterns).finish()
    }
}

/// `[main, release/*]`
impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.patterns.join(", "))
    }
}

/// Which pushes start a run. Manual runs are always allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Triggers {
    /// Branch pushes (`on.push.branches`).
    pub push: Trigger,
    /// Tag pushes (`on.tag.tags`).
    pub tag: Trigger,
}

/// Without an `on` key, every push of every branch starts a run and tags
/// start none.
impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            push: Trigger::Any,
            tag: Trigger::Never,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Never,
    /// Every branch, or every tag.
    Any,
    Matching(Patterns),
}

impl Triggers {
    /// Whether a push of `branch` (or of `tag`) starts a run. `Err` says why
    /// not, for the run list and logs.
    pub fn matches(
        &self,
        event: Event,
        branch: Option<&str>,
        tag: Option<&str>,
    ) -> Result<(), String> {
        let (trigger, name, what, key) = match event {
            Event::Manual => return Ok(()),
            Event::Push => (&self.push, branch, "branch", "on.push.branches"),
            Event::Tag => (&self.tag, tag, "tag", "on.tag.tags"),
        };
        match (trigger, name) {
            (Trigger::Never, _) => Err(match event {
                Event::Tag => "tags do not trigger this pipeline (`on` has no `tag`)".to_owned(),
                _ => "pushes do not trigger this pipeline (`on` has no `push`)".to_owned(),
            }),
            (Trigger::Any, _) => Ok(()),
            (Trigger::Matching(patterns), Some(name)) if patterns.is_match(name) => Ok(()),
            (Trigger::Matching(patterns), Some(name)) => {
                Err(format!("{what} '{name}' not in {key} {patterns}"))
            }
            (Trigger::Matching(patterns), None) => Err(format!(
                "no {what} given, so {key} {patterns} does not match"
            )),
        }
    }
}

/// A stage's condition: every given part must match. The default matches
/// every run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct When {
    pub branch: Option<Patterns>,
    pub tag: Option<Patterns>,
    pub event: Option<Vec<Event>>,
}

impl When {
    /// `Err` says why the stage is skipped.
    pub fn matches(&self, ctx: &RunContext) -> Result<(), String> {
        if let Some(events) = &self.event
            && !events.contains(&ctx.event)
        {
            let list: Vec<String> = events.iter().map(Event::to_string).collect();
            return Err(format!(
                "when.event [{}] does not match event '{}'",
                list.join(", "),
                ctx.event
            ));
        }
        check_ref("branch", self.branch.as_ref(), ctx.branch.as_deref())?;
        check_ref("tag", self.tag.as_ref(), ctx.tag.as_deref())
    }

    pub fn is_always(&self) -> bool {
        self == &When::default()
    }
}

fn check_ref(what: &str, patterns: Option<&Patterns>, name: Option<&str>) -> Result<(), String> {
    match (patterns, name) {
        (None, _) => Ok(()),
        (Some(patterns), Some(name)) if patterns.is_match(name) => Ok(()),
        (Some(patterns), Some(name)) => Err(format!(
            "when.{what} {patterns} does not match {what} '{name}'"
        )),
        (Some(patterns), None) => Err(format!(
            "when.{what} {patterns} does not match: the run has no {what}"
        )),
    }
}
