//! `.gantry.yml`: parsing, validation and the pipeline model.
//!
//! This crate does no IO and never touches tokio: [`parse`] turns the text of
//! a pipeline file into a [`Pipeline`] or into [`Diagnostics`] listing every
//! problem with its line and column; [`Triggers::matches`] and
//! [`When::matches`] decide what runs; [`resolve_stage_with`] builds a
//! stage's environment, [`render_script`] the shell script of a `commands`
//! stage, and [`resolve_build`] and [`resolve_deploy`] the image build and
//! the Kubernetes rollout of `build` and `deploy` stages, with the values
//! earlier stages produced (`${stages.NAME.digest}`, [`StageOutputs`]).
//!
//! # Why the YAML is read from `yaml-rust2` events
//!
//! Every diagnostic points at the key or value at fault, so the parser must
//! know where *every* node came from, not only where a syntax error is.
//!
//! - `yaml_serde` (serde_yaml's successor) locates only its own errors, and
//!   through serde it stops at the first one; it cannot say where a valid
//!   but wrong value such as `retry: 11` is.
//! - `marked-yaml` keeps a start mark on every node, but its mappings are
//!   hash maps: a duplicate key either fails the whole parse (so only the
//!   first is reported, and nothing else) or silently keeps the last value
//!   under the first key's position. It also rejects anchors and aliases.
//! - `yaml-rust2`, the parser under `marked-yaml`, emits events with marks.
//!   `yaml.rs` builds a small tree from them whose mappings keep
//!   every entry in order, so each duplicate key is reported, aliases are
//!   resolved, and scalars remember whether they were quoted (`"true"` is a
//!   string, `true` a boolean; `1.10` stays `1.10`, numbers are kept as
//!   written).
//!
//! The validator (`parse.rs`) then walks that tree by hand, building the model
//! and the diagnostics together. Each reader returns its best guess even for
//! a wrong value, so one mistake does not hide the next.
//!
//! A pipeline file comes from a pushed commit, so parsing must survive hostile
//! input: `yaml-rust2` nests block collections recursively, so lines indented
//! past 120 columns are refused before parsing (a few thousand levels of
//! `- - - ...` would overflow the stack and abort the process); flow nesting
//! is capped at 255 by its scanner; aliases may copy at most 10,000 nodes in
//! all ("billion laughs"). The size of the file is the caller's to limit.

mod diagnostic;
mod interpolate;
mod model;
mod names;
mod parse;
mod script;
mod suggest;
mod units;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use interpolate::{
    ResolvedBuild, ResolvedDeploy, ResolvedService, ResolvedStage, StageOutputs, interpolate,
    resolve_build, resolve_deploy, resolve_stage, resolve_stage_with,
};
pub use model::{
    BuildSpec, DeploySpec, Event, FailFast, Patterns, Pipeline, PullPolicy, Rollback, RunContext,
    Service, Stage, StageKind, Trigger, Triggers, When,
};
pub use parse::parse;
pub use script::render_script;
pub use units::{parse_duration, parse_size};
