//! From a YAML tree to a [`Pipeline`], collecting every problem on the way.
//!
//! Each function reads one part of the file and returns its best guess at
//! the value even when the part is wrong, so that reading goes on and later
//! problems are found too; [`parse`] returns the pipeline only when no
//! diagnostic was recorded.

use std::collections::HashMap;
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Diagnostics, Span};
use crate::interpolate::{OUTPUT_KEYS, Piece, is_var_name, pieces, stage_output};
use crate::model::{
    BuildSpec, DeploySpec, Event, FailFast, Patterns, Pipeline, PullPolicy, Rollback, RunContext,
    Service, Stage, StageKind, Trigger, Triggers, When, compile,
};
use crate::names::{
    DNS_LABEL_RULE, DNS_SUBDOMAIN_RULE, TAG_RULE, check_dns_label, check_dns_subdomain,
    check_repository, check_tag, check_workspace_path,
};
use crate::suggest::suggest;
use crate::units::{parse_duration, parse_size};
use crate::yaml::{self, Key, Node, NodeKind, Scalar, Source};

const TOP_KEYS: &[&str] = &["name", "on", "env", "stages"];
const STAGE_KEYS: &[&str] = &[
    "name",
    "needs",
    "image",
    "commands",
    "build",
    "deploy",
    "env",
    "secrets",
    "services",
    "timeout",
    "retry",
    "memory",
    "cpus",
    "pull",
    "allow_failure",
    "when",
];
/// The keys that say what a stage does; a stage has exactly one. Adding a
/// kind of stage means adding its arm to [`Validator::stage_kind`].
const KIND_KEYS: &[&str] = &["commands", "build", "deploy"];
/// The stage keys that only a `commands` stage takes (`commands` itself
/// aside, which is a kind).
const COMMANDS_ONLY_KEYS: &[&str] = &["image", "services", "memory", "cpus", "pull"];
const BUILD_KEYS: &[&str] = &[
    "context",
    "dockerfile",
    "target",
    "args",
    "image",
    "tags",
    "registry",
    "push",
];
const DEPLOY_KEYS: &[&str] = &[
    "cluster",
    "namespace",
    "deployment",
    "container",
    "image",
    "timeout",
    "rollback",
    "fail_fast",
];
const FAIL_FAST_KEYS: &[&str] = &[
    "crash_loop_restarts",
    "image_pull_grace",
    "config_error_grace",
    "unschedulable_grace",
];
const SERVICE_KEYS: &[&str] = &["name", "image", "env", "commands"];
const WHEN_KEYS: &[&str] = &["branch", "tag", "event"];
const ON_KEYS: &[&str] = &["push", "tag"];
const MAX_RETRY: u32 = 10;
/// Docker refuses a memory limit below 6 MiB.
const MIN_MEMORY: u64 = 6 << 20;

/// Helps for keys that are unknown for a reason worth explaining.
/// Each hint is the key, a key of the mappings where the hint applies (or
/// `None` for every mapping), and the help.
const KEY_HINTS: &[(&str, Option<&str>, &str)] = &[
    (
        "<<",
        None,
        "YAML merge keys are not supported; anchors and aliases (`&name`, `*name`) are",
    ),
    (
        "manual",
        Some("push"),
        "manual runs are always allowed: they need no trigger",
    ),
    (
        "replicas",
        Some("deployment"),
        "a `deploy` stage sets only the image; the rest of the Deployment comes from its manifest",
    ),
    (
        "kubeconfig",
        Some("cluster"),
        "name a `[[cluster]]` of gantry.toml in `cluster`: it holds the credentials",
    ),
];

/// Parses and validates a pipeline file. `file_name` is only used in the
/// diagnostics.
pub fn parse(file_name: &str, source: &str) -> Result<Pipeline, Diagnostics> {
    let mut validator = Validator {
        file: file_name,
        source: Source::new(source),
        diagnostics: Vec::new(),
        output_refs: Vec::new(),
    };
    let (root, yaml_errors) = yaml::parse(source);
    for error in yaml_errors {
        validator.error(error.span, error.message, error.help);
    }
    let pipeline = match &root {
        Some(root) => Some(validator.pipeline(root)),
        None if validator.diagnostics.is_empty() => {
            validator.error(
                Span {
                    line: 1,
                    column: 1,
                    len: 1,
                },
                "the file is empty",
                Some("a pipeline needs `stages`, each with a `name`, an `image` and `commands`"),
            );
            None
        }
        None => None,
    };
    let mut diagnostics = validator.diagnostics;
    match pipeline {
        Some(pipeline) if diagnostics.is_empty() => Ok(pipeline),
        _ => {
            diagnostics.sort_by_key(|d| (d.line, d.column));
            Err(Diagnostics(diagnostics))
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    source: Source<'a>,
    diagnostics: Vec<Diagnostic>,
    /// The `${stages.NAME.KEY}`s seen so far, checked once `needs` is
    /// resolved.
    output_refs: Vec<OutputRef>,
}

/// A `${stages.NAME.KEY}` in a stage, kept for [`Validator::check_output_refs`].
struct OutputRef {
    /// The stage it is written in.
    from: usize,
    /// `stages.NAME.KEY`.
    name: String,
    stage: String,
    key: String,
    span: Span,
    ctx: String,
}

/// One `key: value` entry of a mapping.
#[derive(Clone, Copy)]
struct Field<'n> {
    key: &'n Key,
    value: &'n Node,
}

impl Field<'_> {
    fn name(&self) -> &str {
        &self.key.text
    }
}

/// The entries of a mapping, without duplicates and unknown keys.
struct Fields<'n> {
    span: Span,
    entries: Vec<Field<'n>>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<Field<'n>> {
        self.entries.iter().find(|f| f.key.text == key).copied()
    }
}

/// A string from the file, with where it came from.
struct Located {
    text: String,
    span: Span,
}

/// What a stage is called in messages, and the facts the checks across
/// stages need.
struct StageDraft {
    label: String,
    name: Option<Located>,
    span: Span,
    /// `None` without a `needs` key.
    needs: Option<Vec<Located>>,
}

/// The variables a `${VAR}` may name at some place in the file.
#[derive(Clone)]
struct Scope {
    visible: Vec<String>,
    /// Set later in the same `env`: not visible yet.
    later: Vec<String>,
    /// The `env` entry being checked, which cannot use itself.
    current: Option<String>,
    secrets: Vec<String>,
    /// The stage whose values these are; `None` for the pipeline's `env`,
    /// where stage outputs cannot be used.
    stage: Option<usize>,
    /// What the stage does: `commands`, `build` or `deploy`.
    kind: &'static str,
}

impl Scope {
    fn builtins() -> Self {
        Scope {
            visible: RunContext::BUILTIN_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            later: Vec::new(),
            current: None,
            secrets: Vec::new(),
            stage: None,
            kind: "commands",
        }
    }
}

/// An `env` entry, kept with its locations for the interpolation checks.
struct EnvEntry<'n> {
    name: String,
    value: String,
    node: &'n Node,
}

impl<'a> Validator<'a> {
    fn error(&mut self, span: Span, message: impl Into<String>, help: Option<impl Into<String>>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line: span.line,
            column: span.column,
            message: message.into(),
            help: help.map(Into::into),
            source_line: self.source.line(span.line).map(str::to_owned),
            span_len: span.len,
        });
    }

    /// Where to point for a problem with a value: the value itself when it
    /// is on the key's line, otherwise the key.
    fn value_span(&self, field: Field) -> Span {
        if field.value.is_null() || !field.value.is_inline(&self.source) {
            field.key.span
        } else {
            field.value.span
        }
    }

    /// "`retry` in stage 'test' must be a whole number, found 'x'"
    fn type_error(&mut self, field: Field, ctx: &str, expected: &str, help: Option<String>) {
        let span = self.value_span(field);
        let key = field.name();
        if field.value.is_null() {
            self.error(
                span,
                format!("`{key}`{ctx} has no value"),
                Some(help.unwrap_or_else(|| format!("`{key}` must be {expected}"))),
            );
        } else {
            let found = field.value.describe();
            self.error(
                span,
                format!("`{key}`{ctx} must be {expected}, found {found}"),
                help,
            );
        }
    }

    /// The entries of a mapping node, reporting unknown keys (when `allowed`
    /// is given) and duplicate keys.
    fn fields<'n>(&mut self, node: &'n Node, allowed: Option<&[&str]>, ctx: &str) -> Fields<'n> {
        let mut fields = Fields {
            span: node.span,
            entries: Vec::new(),
        };
        let NodeKind::Mapping(entries) = &node.kind else {
            return fields;
        };
        for (key, value) in entries {
            if let Some(first) = fields.get(&key.text) {
                self.error(
                    key.span,
                    format!("duplicate key '{}'{ctx}", key.text),
                    Some(format!(
                        "'{}' is already set on line {}; remove one of them",
                        key.text, first.key.span.line
                    )),
                );
                continue;
            }
            // Top-level `x-` keys are ignored, as in Docker Compose: they
            // hold YAML anchors for the stages to use.
            if ctx.is_empty() && key.text.starts_with("x-") {
                continue;
            }
            if let Some(allowed) = allowed
                && !allowed.contains(&key.text.as_str())
            {
                let place = if ctx.is_empty() {
                    " at the top level"
                } else {
                    ctx
                };
                let help = KEY_HINTS
                    .iter()
                    .find(|(hint_key, place, _)| {
                        *hint_key == key.text && place.is_none_or(|p| allowed.contains(&p))
                    })
                    .map(|(_, _, hint)| hint.to_string())
                    .or_else(|| suggest(&key.text, allowed).map(|s| format!("did you mean '{s}'?")))
                    .unwrap_or_else(|| format!("the keys here are: {}", allowed.join(", ")));
                self.error(
                    key.span,
                    format!("unknown key '{}'{place}", key.text),
                    Some(help),
                );
                continue;
            }
            fields.entries.push(Field { key, value });
        }
        fields
    }

    /// A mapping value, or a type error.
    fn mapping<'n>(
        &mut self,
        field: Field<'n>,
        allowed: Option<&[&str]>,
        ctx: &str,
        sub_ctx: &str,
        expected: &str,
    ) -> Option<Fields<'n>> {
        if matches!(field.value.kind, NodeKind::Mapping(_)) {
            Some(self.fields(field.value, allowed, sub_ctx))
        } else {
            self.type_error(field, ctx, expected, None);
            None
        }
    }

    fn scalar<'n>(&mut self, field: Field<'n>, ctx: &str, expected: &str) -> Option<&'n Scalar> {
        let scalar = field.value.as_scalar();
        if scalar.is_none() {
            self.type_error(field, ctx, expected, None);
        }
        scalar
    }

    fn string(&mut self, field: Field, ctx: &str) -> Option<String> {
        self.scalar(field, ctx, "a string").map(|s| s.text.clone())
    }

    /// A list of strings; a single string is a list of one.
    fn string_list(&mut self, field: Field, ctx: &str) -> Option<Vec<Located>> {
        let items: Vec<&Node> = match &field.value.kind {
            NodeKind::Sequence(items) => items.iter().collect(),
            NodeKind::Scalar(_) if !field.value.is_null() => vec![field.value],
            _ => {
                self.type_error(field, ctx, "a list of strings", None);
                return None;
            }
        };
        let mut list = Vec::with_capacity(items.len());
        let key = field.name();
        for item in items {
            match item.as_scalar() {
                Some(scalar) => list.push(Located {
                    text: scalar.text.clone(),
                    span: item.span,
                }),
                None => {
                    let mut help = matches!(item.kind, NodeKind::Mapping(_)).then(|| {
                        "YAML reads `a: b` as a mapping: quote the whole item, e.g. \"echo a: b\""
                            .to_owned()
                    });
                    let message = if item.is_null() {
                        help = Some("write the item, or remove the line".to_owned());
                        format!("an item of `{key}`{ctx} is empty")
                    } else {
                        format!(
                            "each item of `{key}`{ctx} must be a string, found {}",
                            item.describe()
                        )
                    };
                    self.error(item.span, message, help);
                }
            }
        }
        Some(list)
    }

    fn pipeline(&mut self, root: &Node) -> Pipeline {
        let mut pipeline = Pipeline {
            name: None,
            on: Triggers::default(),
            env: Vec::new(),
            stages: Vec::new(),
        };
        if !matches!(root.kind, NodeKind::Mapping(_)) {
            self.error(
                root.span,
                format!(
                    "the file must be a mapping with `stages`, found {}",
                    root.describe()
                ),
                Some("start the file with `stages:` and list the stages below it"),
            );
            return pipeline;
        }
        let fields = self.fields(root, Some(TOP_KEYS), "");
        if let Some(field) = fields.get("name") {
            pipeline.name = self.string(field, "");
        }
        if let Some(field) = fields.get("on") {
            pipeline.on = self.triggers(field);
        }
        let mut scope = Scope::builtins();
        if let Some(field) = fields.get("env") {
            let env_entries = self.env(field, "", " in `env`", true);
            self.check_env_templates(&env_entries, &mut scope, " in `env`");
            pipeline.env = env_entries
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect();
        }
        let Some(field) = fields.get("stages") else {
            self.error(
                fields.span,
                "the pipeline has no `stages`",
                Some("add `stages:` with at least one stage that has a `name`, an `image` and `commands`"),
            );
            return pipeline;
        };
        let NodeKind::Sequence(items) = &field.value.kind else {
            let help = matches!(field.value.kind, NodeKind::Mapping(_))
                .then(|| "write each stage as a list item: `- name: test`".to_owned());
            self.type_error(field, "", "a list of stages", help);
            return pipeline;
        };
        if items.is_empty() {
            self.error(
                self.value_span(field),
                "`stages` is empty",
                Some("a pipeline needs at least one stage"),
            );
            return pipeline;
        }
        let mut drafts = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let (stage, draft) = self.stage(index, item, &scope);
            pipeline.stages.push(stage);
            drafts.push(draft);
        }
        let needs = self.resolve_needs(&drafts);
        for (stage, needs) in pipeline.stages.iter_mut().zip(needs) {
            stage.needs = needs;
        }
        self.check_output_refs(&pipeline, &drafts);
        pipeline
    }

    fn triggers(&mut self, field: Field) -> Triggers {
        let mut triggers = Triggers {
            push: Trigger::Never,
            tag: Trigger::Never,
        };
        if field.value.is_null() {
            self.error(
                field.key.span,
                "`on` has no value",
                Some("omit `on` to run on every push of every branch; `on: {}` allows only manual runs"),
            );
            return triggers;
        }
        let Some(fields) = self.mapping(
            field,
            Some(ON_KEYS),
            "",
            " in `on`",
            "a mapping with `push` or `tag`",
        ) else {
            return triggers;
        };
        if let Some(push) = fields.get("push") {
            triggers.push = self.trigger(push, "branches", "branch");
        }
        if let Some(tag) = fields.get("tag") {
            triggers.tag = self.trigger(tag, "tags", "tag");
        }
        triggers
    }

    /// `push: { branches: [...] }` or `tag: { tags: [...] }`; an empty value
    /// matches every branch or tag.
    fn trigger(&mut self, field: Field, list_key: &str, what: &str) -> Trigger {
        if field.value.is_null() {
            return Trigger::Any;
        }
        let event = field.name().to_owned();
        let sub_ctx = format!(" in `on.{event}`");
        if !matches!(field.value.kind, NodeKind::Mapping(_)) {
            let help = format!(
                "write `{event}: {{ {list_key}: [...] }}`, or leave `{event}:` empty for every {what}"
            );
            self.type_error(field, " in `on`", "a mapping", Some(help));
            return Trigger::Never;
        }
        let fields = self.fields(field.value, Some(&[list_key]), &sub_ctx);
        match fields.get(list_key) {
            None => Trigger::Any,
            Some(list) => match self.patterns(list, &sub_ctx, what) {
                Some(patterns) => Trigger::Matching(patterns),
                None => Trigger::Never,
            },
        }
    }

    /// A list of glob patterns for branch or tag names.
    fn patterns(&mut self, field: Field, ctx: &str, what: &str) -> Option<Patterns> {
        let list = self.string_list(field, ctx)?;
        if list.is_empty() {
            self.error(
                self.value_span(field),
                format!("`{}`{ctx} is empty", field.name()),
                Some(format!(
                    "list at least one pattern, or omit `{}` to match every {what}",
                    field.name()
                )),
            );
            return None;
        }
        let mut ok = true;
        for pattern in &list {
            if let Err(reason) = compile(&pattern.text) {
                self.error(
                    pattern.span,
                    format!("invalid pattern '{}'{ctx}: {reason}", pattern.text),
                    Some("`*` matches within one `/`-separated part, `**` across them; `?`, `[abc]` and `{a,b}` work too"),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        match Patterns::new(list.iter().map(|p| p.text.clone())) {
            Ok(patterns) => Some(patterns),
            Err(reason) => {
                self.error(
                    self.value_span(field),
                    format!("invalid patterns{ctx}: {reason}"),
                    None::<String>,
                );
                None
            }
        }
    }

    /// The entries of an `env` mapping, values as written.
    fn env<'n>(
        &mut self,
        field: Field<'n>,
        ctx: &str,
        sub_ctx: &str,
        reserve_builtins: bool,
    ) -> Vec<EnvEntry<'n>> {
        let help = matches!(field.value.kind, NodeKind::Sequence(_))
            .then(|| "write `NAME: value` entries, not a list".to_owned());
        if !matches!(field.value.kind, NodeKind::Mapping(_)) {
            self.type_error(field, ctx, "a mapping of names to values", help);
            return Vec::new();
        }
        let fields = self.fields(field.value, None, sub_ctx);
        let mut entries = Vec::new();
        for entry in fields.entries {
            let name = entry.name();
            if !self.check_var_name(entry.key, sub_ctx, reserve_builtins) {
                continue;
            }
            let Some(value) = entry.value.as_scalar() else {
                let help = if entry.value.is_null() {
                    Some(format!("write `{name}: \"\"` for an empty value"))
                } else {
                    None
                };
                self.type_error(entry, sub_ctx, "a string", help);
                continue;
            };
            entries.push(EnvEntry {
                name: name.to_owned(),
                value: value.text.clone(),
                node: entry.value,
            });
        }
        entries
    }

    /// Reports a bad variable name; `true` if it is fine.
    fn check_var_name(&mut self, key: &Key, ctx: &str, reserve_builtins: bool) -> bool {
        if !is_var_name(&key.text) {
            self.error(
                key.span,
                format!("invalid variable name '{}'{ctx}", key.text),
                Some("a name starts with a letter or '_' and has only letters, digits and '_'"),
            );
            false
        } else if reserve_builtins && key.text.starts_with("GANTRY_") {
            self.error(
                key.span,
                format!("'{}'{ctx} uses the reserved prefix GANTRY_", key.text),
                Some("names starting with GANTRY_ are kept for Gantry's built-in variables"),
            );
            false
        } else {
            true
        }
    }

    /// Checks the `${VAR}`s of each entry against the variables set before
    /// it, then adds the entries to `scope`.
    fn check_env_templates(&mut self, entries: &[EnvEntry], scope: &mut Scope, ctx: &str) {
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        for (i, entry) in entries.iter().enumerate() {
            let mut here = scope.clone();
            here.later = names[i + 1..].iter().map(|s| s.to_string()).collect();
            here.later.retain(|name| !here.visible.contains(name));
            here.current = Some(entry.name.clone());
            self.check_template(entry.node.span, &entry.value, &here, ctx);
            scope.visible.push(entry.name.clone());
        }
    }

    /// Reports every bad or unknown `${VAR}` in `text`, the scalar at
    /// `span`. Stage outputs are only collected here: whether one is known
    /// depends on `needs`, which is resolved after every stage is read.
    fn check_template(&mut self, span: Span, text: &str, scope: &Scope, ctx: &str) {
        let vars = match pieces(text) {
            Ok(pieces) => pieces,
            Err(err) => {
                let needle = &text[err.at..err.at + err.len];
                let span = self.find_in_span(span, needle);
                self.error(span, format!("{}{ctx}", err.message), Some(err.help));
                return;
            }
        };
        for piece in vars {
            let Piece::Var { name, .. } = piece else {
                continue;
            };
            if let Some((stage, key)) = stage_output(name) {
                let span = self.find_in_span(span, &format!("${{{name}}}"));
                match scope.stage {
                    Some(from) => self.output_refs.push(OutputRef {
                        from,
                        name: name.to_owned(),
                        stage: stage.to_owned(),
                        key: key.to_owned(),
                        span,
                        ctx: ctx.to_owned(),
                    }),
                    None => self.error(
                        span,
                        format!("stage output ${{{name}}} cannot be used{ctx}"),
                        Some(format!(
                            "the pipeline's `env` is for every stage, also those that run before '{stage}': use the output in the `env` of a stage that needs '{stage}'"
                        )),
                    ),
                }
                continue;
            }
            if scope.visible.iter().any(|v| v == name) {
                continue;
            }
            let help = if scope.current.as_deref() == Some(name) {
                format!("'{name}' is not set before this value, and a value cannot use itself")
            } else if scope.later.iter().any(|v| v == name) {
                format!(
                    "'{name}' is set later in this `env`: a value can use only the variables set before it"
                )
            } else if scope.secrets.iter().any(|v| v == name) {
                match scope.kind {
                    "build" => "secrets are not interpolated: build args are kept in the image's history, where anyone who can pull the image reads them".to_owned(),
                    "deploy" => "secrets are not interpolated".to_owned(),
                    _ => format!(
                        "secrets are not interpolated: the commands see '{name}' as an environment variable"
                    ),
                }
            } else {
                let visible: Vec<&str> = scope.visible.iter().map(String::as_str).collect();
                match suggest(name, &visible) {
                    Some(s) => format!("did you mean ${{{s}}}?"),
                    None if scope.current.is_some() => "the variables here are CI, the GANTRY_* built-ins and the `env` entries set before this one".to_owned(),
                    None => "the variables here are CI, the GANTRY_* built-ins and the pipeline's and the stage's `env`".to_owned(),
                }
            };
            let span = self.find_in_span(span, &format!("${{{name}}}"));
            self.error(
                span,
                format!("unknown variable ${{{name}}}{ctx}"),
                Some(help),
            );
        }
    }

    /// The span of `needle` inside the source text of the scalar at `span`,
    /// or `span`.
    fn find_in_span(&self, span: Span, needle: &str) -> Span {
        let Some(line) = self.source.line(span.line) else {
            return span;
        };
        let Some((start, _)) = line.char_indices().nth(span.column - 1) else {
            return span;
        };
        match line[start..].find(needle) {
            Some(offset) => Span {
                line: span.line,
                column: span.column + line[start..start + offset].chars().count(),
                len: needle.chars().count(),
            },
            None => span,
        }
    }

    fn stage(&mut self, index: usize, node: &Node, pipeline_scope: &Scope) -> (Stage, StageDraft) {
        let mut stage = Stage {
            name: String::new(),
            needs: Vec::new(),
            kind: StageKind::Commands {
                image: String::new(),
                commands: Vec::new(),
            },
            env: Vec::new(),
            secrets: Vec::new(),
            services: Vec::new(),
            timeout: None,
            retry: 0,
            memory: None,
            cpus: None,
            pull: PullPolicy::default(),
            allow_failure: false,
            when: When::default(),
        };
        let mut draft = StageDraft {
            label: format!("stage #{}", index + 1),
            name: None,
            span: node.span,
            needs: None,
        };
        if !matches!(node.kind, NodeKind::Mapping(_)) {
            self.error(
                node.span,
                format!("each stage must be a mapping, found {}", node.describe()),
                Some("write a stage as `- name: test` with its `image` and `commands` below"),
            );
            return (stage, draft);
        }

        // The name comes first: every other message names the stage.
        if let NodeKind::Mapping(entries) = &node.kind
            && let Some((_, value)) = entries.iter().find(|(k, _)| k.text == "name")
            && let Some(name) = value.as_scalar()
        {
            draft.label = format!("stage '{}'", name.text);
        }
        let ctx = format!(" in {}", draft.label);
        let fields = self.fields(node, Some(STAGE_KEYS), &ctx);
        match fields.get("name") {
            Some(field) => {
                if let Some(name) = self.string(field, &ctx) {
                    self.check_stage_name(&name, field.value.span);
                    draft.name = Some(Located {
                        text: name.clone(),
                        span: field.value.span,
                    });
                    stage.name = name;
                }
            }
            None => self.error(
                fields.span,
                format!("{} has no `name`", draft.label),
                Some("add `name: <name>`; stage names are unique"),
            ),
        }

        // What the stage does decides which other keys it takes.
        let kinds: Vec<&'static str> = KIND_KEYS
            .iter()
            .copied()
            .filter(|key| fields.get(key).is_some())
            .collect();
        let kind = match kinds.as_slice() {
            [kind] => *kind,
            _ => "commands",
        };
        if kind != "commands" {
            self.commands_only_keys(&fields, kind, &draft.label);
        }

        // The variables a `${VAR}` may name in this stage.
        let mut scope = pipeline_scope.clone();
        scope.stage = Some(index);
        scope.kind = kind;
        let env_ctx = format!(" in `env` of {}", draft.label);
        let mut env_entries = Vec::new();
        if let Some(field) = fields.get("env") {
            env_entries = self.env(field, &ctx, &env_ctx, true);
            stage.env = env_entries
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect();
        }
        if let Some(field) = fields.get("secrets") {
            stage.secrets = self.secrets(field, &draft.label, &stage.env);
            scope.secrets = stage.secrets.clone();
        }
        self.check_env_templates(&env_entries, &mut scope, &env_ctx);

        stage.kind = self.stage_kind(&fields, &draft.label, &ctx, &scope);

        if let Some(field) = fields.get("needs") {
            draft.needs = self.string_list(field, &ctx).or(Some(Vec::new()));
        }
        if let Some(field) = fields.get("services")
            && kind == "commands"
        {
            stage.services = self.services(field, &draft.label, &ctx, &scope);
        }
        if let Some(field) = fields.get("timeout") {
            stage.timeout = self.duration(field, &ctx, "omit `timeout` for no limit");
        }
        if let Some(field) = fields.get("retry") {
            stage.retry = self.retry(field, &ctx);
        }
        if kind == "commands" {
            if let Some(field) = fields.get("memory") {
                stage.memory = self.memory(field, &ctx);
            }
            if let Some(field) = fields.get("cpus") {
                stage.cpus = self.cpus(field, &ctx);
            }
            if let Some(field) = fields.get("pull") {
                stage.pull = self.pull(field, &ctx);
            }
        }
        if let Some(field) = fields.get("allow_failure") {
            stage.allow_failure = self.boolean(field, &ctx);
        }
        if let Some(field) = fields.get("when") {
            stage.when = self.when(field, &draft.label, &ctx);
        }
        (stage, draft)
    }

    fn check_stage_name(&mut self, name: &str, span: Span) {
        if name.is_empty() {
            self.error(span, "empty stage name", Some("give the stage a name"));
            return;
        }
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            self.error(
                span,
                format!("invalid stage name '{name}'"),
                Some("a stage name has only letters, digits, '_', '.' and '-'"),
            );
        }
    }

    /// What the stage does: exactly one of [`KIND_KEYS`].
    fn stage_kind(&mut self, fields: &Fields, label: &str, ctx: &str, scope: &Scope) -> StageKind {
        let present: Vec<Field> = KIND_KEYS.iter().filter_map(|key| fields.get(key)).collect();
        let placeholder = StageKind::Commands {
            image: String::new(),
            commands: Vec::new(),
        };
        match present.as_slice() {
            [] => {
                let help = if fields.get("image").is_some() {
                    "add `commands:` with the shell commands to run"
                } else {
                    "add `commands:` with the shell commands to run, `build:` to build an image or `deploy:` to roll one out"
                };
                self.error(
                    fields.span,
                    format!("{label} has no `commands`"),
                    Some(help),
                );
                self.image(fields, label, ctx, scope);
                placeholder
            }
            [field] => match field.name() {
                "build" => StageKind::Build(self.build(*field, label, ctx, scope)),
                "deploy" => StageKind::Deploy(self.deploy(*field, label, ctx, scope)),
                _ => {
                    let image = self.image(fields, label, ctx, scope);
                    let commands = self.commands(*field, label, ctx);
                    StageKind::Commands { image, commands }
                }
            },
            [first, second, ..] => {
                let help = if first.name() == "commands" {
                    "a stage does exactly one of `commands`, `build` or `deploy`: move the commands to a stage of their own"
                } else {
                    "a stage does exactly one of `commands`, `build` or `deploy`"
                };
                self.error(
                    second.key.span,
                    format!(
                        "{label} has both `{}` and `{}`",
                        first.name(),
                        second.name()
                    ),
                    Some(help),
                );
                placeholder
            }
        }
    }

    /// Reports the keys a `build` or `deploy` stage does not take.
    fn commands_only_keys(&mut self, fields: &Fields, kind: &str, label: &str) {
        for key in COMMANDS_ONLY_KEYS {
            let Some(field) = fields.get(key) else {
                continue;
            };
            let help = match (*key, kind) {
                ("image", "build") => "`image` belongs inside `build:` as the repository to push",
                ("image", _) => {
                    "`image` belongs inside `deploy:` as the image to roll out, e.g. `image: ${stages.build.digest}`"
                }
                ("services", _) => "services run next to the commands of a `commands` stage",
                ("pull", "build") => "a build pulls the images its Dockerfile starts `FROM`",
                ("pull", _) => {
                    "the cluster pulls the image, as the Deployment's `imagePullPolicy` says"
                }
                (_, "build") => "a build uses the Docker engine's resources",
                _ => "the Deployment's manifest sets its containers' resources",
            };
            self.error(
                field.key.span,
                format!("`{key}` is only for `commands` stages, and {label} is a `{kind}` stage"),
                Some(help),
            );
        }
    }

    /// `build:`, the image to build and push.
    fn build(&mut self, field: Field, label: &str, ctx: &str, scope: &Scope) -> BuildSpec {
        let mut spec = BuildSpec {
            context: ".".to_owned(),
            dockerfile: None,
            target: None,
            args: Vec::new(),
            image: String::new(),
            tags: BuildSpec::DEFAULT_TAGS.map(str::to_owned).to_vec(),
            registry: None,
            push: true,
        };
        let sub_ctx = format!(" in `build` of {label}");
        let expected =
            "a mapping with the `image` to build, like `{ image: registry.example.com/team/app }`";
        let Some(fields) = self.mapping(field, Some(BUILD_KEYS), ctx, &sub_ctx, expected) else {
            return spec;
        };
        let sub_ctx = &sub_ctx;
        let interpolated = "in `build`, only `args`, `image` and `tags` are interpolated";
        if let Some(field) = fields.get("context") {
            let help =
                "`context` is a directory in the workspace (the repository's root), e.g. `backend`";
            if let Some(context) = self.workspace_path(field, sub_ctx, interpolated, help) {
                spec.context = context;
            }
        }
        if let Some(field) = fields.get("dockerfile") {
            let help = "`dockerfile` is a file in the workspace, e.g. `backend/Dockerfile`";
            spec.dockerfile = self.workspace_path(field, sub_ctx, interpolated, help);
        }
        if let Some(field) = fields.get("target") {
            let help = "`target` names a stage of the Dockerfile (`FROM ... AS <target>`)";
            spec.target = self.name_value(field, sub_ctx, interpolated, help);
        }
        if let Some(field) = fields.get("args") {
            let args_ctx = format!(" in `args` of `build` of {label}");
            let entries = self.env(field, sub_ctx, &args_ctx, false);
            // An arg sees the stage's complete environment, not the other
            // args: they are not variables.
            for entry in &entries {
                self.check_template(entry.node.span, &entry.value, scope, &args_ctx);
            }
            spec.args = entries.into_iter().map(|e| (e.name, e.value)).collect();
        }
        match fields.get("image") {
            Some(field) => {
                if let Some(image) = self.repository(field, sub_ctx, scope) {
                    spec.image = image;
                }
            }
            None => self.error(
                fields.span,
                format!("`build` in {label} has no `image`"),
                Some("add `image:`, the repository to push to without a tag, e.g. `image: registry.example.com/team/app`"),
            ),
        }
        if let Some(field) = fields.get("tags") {
            spec.tags = self.tags(field, sub_ctx, scope);
        }
        if let Some(field) = fields.get("registry") {
            let help =
                "`registry` names a `[[registry]]` of gantry.toml; omit it to push anonymously";
            spec.registry = self.name_value(field, sub_ctx, interpolated, help);
        }
        if let Some(field) = fields.get("push") {
            spec.push = self.boolean(field, sub_ctx);
        }
        spec
    }

    /// `build.image`: a repository without a tag, `${VAR}` allowed.
    fn repository(&mut self, field: Field, ctx: &str, scope: &Scope) -> Option<String> {
        let image = self.string(field, ctx)?;
        self.check_template(field.value.span, &image, scope, ctx);
        // Only the literal parts can be checked before the run.
        let Some(sample) = literal_sample(&image) else {
            return Some(image);
        };
        if let Err(reason) = check_repository(&sample) {
            let help = match reason.as_str() {
                "it has a tag" => {
                    "`image` is the repository: put the tag in `tags`, e.g. `tags: [\"1.0\"]`"
                }
                "it has a digest" => {
                    "the digest is what the build produces: later stages read it as `${stages.NAME.digest}`"
                }
                _ => {
                    "a repository looks like `registry.example.com:5000/team/app`: lowercase, without a tag"
                }
            };
            self.error(
                field.value.span,
                format!("invalid image '{image}'{ctx}: {reason}"),
                Some(help),
            );
            return None;
        }
        Some(image)
    }

    /// `build.tags`: at least one, each a Docker tag once interpolated.
    fn tags(&mut self, field: Field, ctx: &str, scope: &Scope) -> Vec<String> {
        let Some(list) = self.string_list(field, ctx) else {
            return Vec::new();
        };
        if list.is_empty() {
            self.error(
                self.value_span(field),
                format!("`tags`{ctx} is empty"),
                Some("list at least one tag, or omit `tags` for `[\"${GANTRY_SHORT_SHA}\"]`"),
            );
        }
        let mut tags: Vec<String> = Vec::with_capacity(list.len());
        for tag in list {
            if tags.contains(&tag.text) {
                self.error(
                    tag.span,
                    format!("tag '{}' is listed twice{ctx}", tag.text),
                    None::<String>,
                );
                continue;
            }
            self.check_template(tag.span, &tag.text, scope, ctx);
            if let Some(sample) = literal_sample(&tag.text)
                && let Err(reason) = check_tag(&sample)
            {
                self.error(
                    tag.span,
                    format!("invalid tag '{}'{ctx}: {reason}", tag.text),
                    Some(TAG_RULE),
                );
            }
            tags.push(tag.text);
        }
        tags
    }

    /// `deploy:`, the rollout.
    fn deploy(&mut self, field: Field, label: &str, ctx: &str, scope: &Scope) -> DeploySpec {
        let mut spec = DeploySpec {
            cluster: None,
            namespace: DeploySpec::DEFAULT_NAMESPACE.to_owned(),
            deployment: String::new(),
            container: None,
            image: String::new(),
            timeout: DeploySpec::DEFAULT_TIMEOUT,
            rollback: Rollback::default(),
            fail_fast: FailFast::default(),
        };
        let sub_ctx = format!(" in `deploy` of {label}");
        let expected = "a mapping with the `deployment` and the `image` to roll out";
        let Some(fields) = self.mapping(field, Some(DEPLOY_KEYS), ctx, &sub_ctx, expected) else {
            return spec;
        };
        let sub_ctx = &sub_ctx;
        let interpolated = "in `deploy`, only `image` is interpolated";
        if let Some(field) = fields.get("cluster") {
            let help = "`cluster` names a `[[cluster]]` of gantry.toml; omit it for the default kubeconfig";
            spec.cluster = self.name_value(field, sub_ctx, interpolated, help);
        }
        if let Some(field) = fields.get("namespace")
            && let Some(namespace) = self.kube_name(
                field,
                sub_ctx,
                interpolated,
                check_dns_label,
                DNS_LABEL_RULE,
            )
        {
            spec.namespace = namespace;
        }
        match fields.get("deployment") {
            Some(field) => {
                spec.deployment = self
                    .kube_name(
                        field,
                        sub_ctx,
                        interpolated,
                        check_dns_subdomain,
                        DNS_SUBDOMAIN_RULE,
                    )
                    .unwrap_or_default();
            }
            None => self.error(
                fields.span,
                format!("`deploy` in {label} has no `deployment`"),
                Some("add `deployment:`, the name of the Deployment whose image is replaced"),
            ),
        }
        if let Some(field) = fields.get("container") {
            spec.container = self.kube_name(
                field,
                sub_ctx,
                interpolated,
                check_dns_label,
                DNS_LABEL_RULE,
            );
        }
        match fields.get("image") {
            Some(field) => spec.image = self.image_value(field, sub_ctx, scope).unwrap_or_default(),
            None => self.error(
                fields.span,
                format!("`deploy` in {label} has no `image`"),
                Some("add `image:`, the image to roll out, usually `image: ${stages.NAME.digest}` of the `build` stage"),
            ),
        }
        if let Some(field) = fields.get("timeout")
            && let Some(timeout) =
                self.duration(field, sub_ctx, "omit `timeout` for the default of 5m")
        {
            spec.timeout = timeout;
        }
        if let Some(field) = fields.get("rollback") {
            spec.rollback = self.rollback(field, sub_ctx);
        }
        if let Some(field) = fields.get("fail_fast") {
            spec.fail_fast = self.fail_fast(field, sub_ctx);
        }
        spec
    }

    /// `fail_fast:` of a `deploy`, each key optional.
    fn fail_fast(&mut self, field: Field, ctx: &str) -> FailFast {
        let mut fail_fast = FailFast::default();
        let sub_ctx = format!(" in `fail_fast`{ctx}");
        let expected = "a mapping of `crash_loop_restarts` and the `*_grace` durations";
        let Some(fields) = self.mapping(field, Some(FAIL_FAST_KEYS), ctx, &sub_ctx, expected)
        else {
            return fail_fast;
        };
        if let Some(field) = fields.get("crash_loop_restarts") {
            let max = FailFast::MAX_CRASH_LOOP_RESTARTS;
            let expected = format!("a whole number from 1 to {max}");
            if let Some(scalar) = self.scalar(field, &sub_ctx, &expected) {
                match scalar.text.parse::<u32>() {
                    Ok(restarts) if (1..=max).contains(&restarts) => {
                        fail_fast.crash_loop_restarts = Some(restarts);
                    }
                    Ok(0) => self.error(
                        field.value.span,
                        format!("`crash_loop_restarts`{sub_ctx} must be at least 1"),
                        Some("a container is in CrashLoopBackOff only after it crashed and was restarted: 1 fails the rollout on the first crash"),
                    ),
                    _ => self.type_error(field, &sub_ctx, &expected, None),
                }
            }
        }
        fail_fast.image_pull_grace = fields
            .get("image_pull_grace")
            .and_then(|field| self.grace(field, &sub_ctx));
        fail_fast.config_error_grace = fields
            .get("config_error_grace")
            .and_then(|field| self.grace(field, &sub_ctx));
        fail_fast.unschedulable_grace = fields
            .get("unschedulable_grace")
            .and_then(|field| self.grace(field, &sub_ctx));
        fail_fast
    }

    /// A duration that may be zero (`0s`: no grace at all).
    fn grace(&mut self, field: Field, ctx: &str) -> Option<Duration> {
        self.any_duration(field, ctx, "a duration like `0s`, `30s` or `5m`")
    }

    fn rollback(&mut self, field: Field, ctx: &str) -> Rollback {
        let expected = "auto or never";
        let Some(scalar) = self.scalar(field, ctx, expected) else {
            return Rollback::default();
        };
        match scalar.text.parse() {
            Ok(rollback) => rollback,
            Err(_) => {
                let help = match scalar.text.to_ascii_lowercase().as_str() {
                    "false" | "no" | "off" | "none" | "manual" => {
                        Some("write `never` to leave a failed rollout as it is".to_owned())
                    }
                    "true" | "yes" | "on" | "undo" => {
                        Some("write `auto` to undo a failed rollout".to_owned())
                    }
                    _ => suggest(&scalar.text, &Rollback::NAMES)
                        .map(|s| format!("did you mean '{s}'?")),
                };
                self.type_error(field, ctx, expected, help);
                Rollback::default()
            }
        }
    }

    /// A string taken as written; `${` in it is an error, since it would
    /// not be interpolated.
    fn literal(&mut self, field: Field, ctx: &str, interpolated: &str) -> Option<String> {
        let text = self.string(field, ctx)?;
        if let Some(start) = text.find("${") {
            let end = text[start..]
                .find('}')
                .map_or(start + 2, |end| start + end + 1);
            let span = self.find_in_span(field.value.span, &text[start..end]);
            self.error(
                span,
                format!("`{}`{ctx} cannot use `${{...}}`", field.name()),
                Some(format!("{interpolated}; write the value itself")),
            );
            return None;
        }
        Some(text)
    }

    /// A name (a registry, a cluster, a Dockerfile target): not empty, no
    /// whitespace.
    fn name_value(
        &mut self,
        field: Field,
        ctx: &str,
        interpolated: &str,
        help: &str,
    ) -> Option<String> {
        let text = self.literal(field, ctx, interpolated)?;
        let key = field.name();
        if text.trim().is_empty() {
            self.error(
                self.value_span(field),
                format!("`{key}`{ctx} is empty"),
                Some(help),
            );
            return None;
        }
        if text.contains(char::is_whitespace) {
            self.error(
                self.value_span(field),
                format!("invalid `{key}` '{text}'{ctx}: it contains whitespace"),
                Some(help),
            );
            return None;
        }
        Some(text)
    }

    /// A path inside the workspace.
    fn workspace_path(
        &mut self,
        field: Field,
        ctx: &str,
        interpolated: &str,
        help: &str,
    ) -> Option<String> {
        let text = self.literal(field, ctx, interpolated)?;
        if let Err(reason) = check_workspace_path(&text) {
            self.error(
                self.value_span(field),
                format!("invalid `{}` '{text}'{ctx}: {reason}", field.name()),
                Some(help),
            );
            return None;
        }
        Some(text)
    }

    /// The name of a Kubernetes object.
    fn kube_name(
        &mut self,
        field: Field,
        ctx: &str,
        interpolated: &str,
        check: fn(&str) -> Result<(), String>,
        rule: &str,
    ) -> Option<String> {
        let text = self.literal(field, ctx, interpolated)?;
        if let Err(reason) = check(&text) {
            self.error(
                self.value_span(field),
                format!("invalid `{}` '{text}'{ctx}: {reason}", field.name()),
                Some(format!("a Kubernetes {} name is {rule}", field.name())),
            );
            return None;
        }
        Some(text)
    }

    fn image(&mut self, fields: &Fields, label: &str, ctx: &str, scope: &Scope) -> String {
        let Some(field) = fields.get("image") else {
            self.error(
                fields.span,
                format!("{label} has no `image`"),
                Some("add `image: <image>`, the container image the commands run in"),
            );
            return String::new();
        };
        self.image_value(field, ctx, scope).unwrap_or_default()
    }

    /// An image reference: a string without whitespace, `${VAR}` allowed.
    fn image_value(&mut self, field: Field, ctx: &str, scope: &Scope) -> Option<String> {
        let image = self.string(field, ctx)?;
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            self.error(
                field.value.span,
                format!("invalid image '{image}'{ctx}"),
                Some("an image looks like `postgres:15` or `registry.example.com/team/app:1.2`"),
            );
            return None;
        }
        self.check_template(field.value.span, &image, scope, ctx);
        Some(image)
    }

    /// A stage's commands: at least one.
    fn commands(&mut self, field: Field, label: &str, ctx: &str) -> Vec<String> {
        let commands = self.command_list(field, ctx);
        if matches!(&field.value.kind, NodeKind::Sequence(items) if items.is_empty()) {
            self.error(
                self.value_span(field),
                format!("`commands` in {label} is empty"),
                Some("list at least one shell command, e.g. `commands: [\"make test\"]`"),
            );
        }
        commands
    }

    /// Shell commands, none of them blank.
    fn command_list(&mut self, field: Field, ctx: &str) -> Vec<String> {
        let Some(list) = self.string_list(field, ctx) else {
            return Vec::new();
        };
        for command in &list {
            if command.text.trim().is_empty() {
                self.error(
                    command.span,
                    format!("empty command{ctx}"),
                    Some("remove it, or write the command"),
                );
            }
            self.check_outputs_in_command(command, ctx);
        }
        list.into_iter().map(|c| c.text).collect()
    }

    /// Commands are not interpolated, and to the shell `${stages.a.b}` is a
    /// "bad substitution": say so before the run, and how to pass it.
    fn check_outputs_in_command(&mut self, command: &Located, ctx: &str) {
        let text = &command.text;
        let mut from = 0;
        while let Some(offset) = text[from..].find("${stages.") {
            let start = from + offset;
            from = start + 2;
            let Some(end) = text[start..].find('}').map(|end| start + end) else {
                break;
            };
            let name = &text[start + 2..end];
            let Some((stage, key)) = stage_output(name) else {
                continue;
            };
            let var = format!(
                "{}_{}",
                stage.to_ascii_uppercase(),
                key.to_ascii_uppercase()
            )
            .replace(['.', '-'], "_");
            let span = self.find_in_span(command.span, &text[start..=end]);
            self.error(
                span,
                format!("stage output ${{{name}}} in a command{ctx}: commands are not interpolated"),
                Some(format!(
                    "set it in the stage's `env` (`{var}: ${{{name}}}`) and write `${var}` in the command"
                )),
            );
        }
    }

    fn secrets(&mut self, field: Field, label: &str, env: &[(String, String)]) -> Vec<String> {
        let ctx = &format!(" in {label}");
        let Some(list) = self.string_list(field, ctx) else {
            return Vec::new();
        };
        let mut secrets: Vec<String> = Vec::with_capacity(list.len());
        for secret in list {
            let key = Key {
                text: secret.text.clone(),
                span: secret.span,
            };
            let sub_ctx = format!(" in `secrets` of {label}");
            if !self.check_var_name(&key, &sub_ctx, true) {
                continue;
            }
            if secrets.contains(&secret.text) {
                self.error(
                    secret.span,
                    format!("secret '{}' is listed twice in {label}", secret.text),
                    None::<String>,
                );
                continue;
            }
            if env.iter().any(|(name, _)| *name == secret.text) {
                self.error(
                    secret.span,
                    format!(
                        "'{}' is in both `env` and `secrets` of {label}",
                        secret.text
                    ),
                    Some("a variable comes from one place: remove it from `env` or from `secrets`"),
                );
            }
            secrets.push(secret.text);
        }
        secrets
    }

    fn services(&mut self, field: Field, label: &str, ctx: &str, scope: &Scope) -> Vec<Service> {
        let NodeKind::Sequence(items) = &field.value.kind else {
            self.type_error(field, ctx, "a list of services", None);
            return Vec::new();
        };
        let mut services: Vec<(Service, Span)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if !matches!(item.kind, NodeKind::Mapping(_)) {
                self.error(
                    item.span,
                    format!(
                        "each service{ctx} must be a mapping, found {}",
                        item.describe()
                    ),
                    Some("write a service as `- { name: db, image: postgres:15 }`"),
                );
                continue;
            }
            let mut service_label = format!("service #{} of {label}", index + 1);
            if let NodeKind::Mapping(entries) = &item.kind
                && let Some(name) = entries
                    .iter()
                    .find(|(k, _)| k.text == "name")
                    .and_then(|(_, v)| v.as_scalar())
            {
                service_label = format!("service '{}' of {label}", name.text);
            }
            let service_ctx = format!(" in {service_label}");
            let fields = self.fields(item, Some(SERVICE_KEYS), &service_ctx);
            let mut service = Service {
                name: String::new(),
                image: String::new(),
                env: Vec::new(),
                commands: Vec::new(),
            };
            let mut name_span = fields.span;
            match fields.get("name") {
                Some(field) => {
                    if let Some(name) = self.string(field, &service_ctx) {
                        name_span = field.value.span;
                        self.check_service_name(&name, name_span, ctx);
                        if let Some((_, first)) = services.iter().find(|(s, _)| s.name == name) {
                            self.error(
                                name_span,
                                format!("duplicate service name '{name}'{ctx}"),
                                Some(format!(
                                    "the first service named '{name}' is on line {}; service names are unique within a stage",
                                    first.line
                                )),
                            );
                        }
                        service.name = name;
                    }
                }
                None => self.error(
                    fields.span,
                    format!("{service_label} has no `name`"),
                    Some("add `name: <name>`: the stage reaches the service at that host name"),
                ),
            }
            match fields.get("image") {
                Some(field) => {
                    service.image = self
                        .image_value(field, &service_ctx, scope)
                        .unwrap_or_default();
                }
                None => self.error(
                    fields.span,
                    format!("{service_label} has no `image`"),
                    Some("add `image: <image>`, e.g. `image: postgres:15`"),
                ),
            }
            if let Some(field) = fields.get("env") {
                let env_ctx = format!(" in `env` of {service_label}");
                let entries = self.env(field, &service_ctx, &env_ctx, false);
                let mut own_scope = scope.clone();
                self.check_env_templates(&entries, &mut own_scope, &env_ctx);
                service.env = entries.into_iter().map(|e| (e.name, e.value)).collect();
            }
            if let Some(field) = fields.get("commands") {
                service.commands = self.command_list(field, &service_ctx);
            }
            services.push((service, name_span));
        }
        services.into_iter().map(|(s, _)| s).collect()
    }

    /// Services are reached by host name, so their names are DNS labels.
    fn check_service_name(&mut self, name: &str, span: Span, ctx: &str) {
        let valid = (1..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !valid {
            self.error(
                span,
                format!("invalid service name '{name}'{ctx}"),
                Some("a service name is a host name: up to 63 lowercase letters, digits and '-', not starting or ending with '-'"),
            );
        }
    }

    /// A duration above zero; `zero_help` says what to write instead of 0.
    fn duration(&mut self, field: Field, ctx: &str, zero_help: &str) -> Option<Duration> {
        let duration = self.any_duration(field, ctx, "a duration like `90s`, `10m` or `1h30m`")?;
        if duration.is_zero() {
            self.error(
                field.value.span,
                format!("`{}`{ctx} must be greater than zero", field.name()),
                Some(zero_help),
            );
            return None;
        }
        Some(duration)
    }

    /// A duration, zero included.
    fn any_duration(&mut self, field: Field, ctx: &str, expected: &str) -> Option<Duration> {
        let text = &self.scalar(field, ctx, expected)?.text;
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(reason) => {
                self.type_error(
                    field,
                    ctx,
                    expected,
                    Some(format!(
                        "{reason}: write a number and a unit (ms, s, m, h, d)"
                    )),
                );
                None
            }
        }
    }

    fn retry(&mut self, field: Field, ctx: &str) -> u32 {
        let expected = format!("a whole number from 0 to {MAX_RETRY}");
        let Some(scalar) = self.scalar(field, ctx, &expected) else {
            return 0;
        };
        match scalar.text.parse::<u32>() {
            Ok(retry) if retry <= MAX_RETRY => retry,
            _ => {
                self.type_error(field, ctx, &expected, None);
                0
            }
        }
    }

    fn memory(&mut self, field: Field, ctx: &str) -> Option<u64> {
        let expected = "a size like `512m` or `1g`";
        let text = &self.scalar(field, ctx, expected)?.text;
        match parse_size(text) {
            Ok(bytes) if bytes < MIN_MEMORY => {
                self.error(
                    field.value.span,
                    format!("`memory`{ctx} must be at least 6m, found '{text}'"),
                    Some("Docker refuses memory limits below 6 MiB"),
                );
                None
            }
            Ok(bytes) => Some(bytes),
            Err(reason) => {
                self.type_error(
                    field,
                    ctx,
                    expected,
                    Some(format!(
                        "{reason}: the units are b, k, m and g (powers of 1024)"
                    )),
                );
                None
            }
        }
    }

    fn cpus(&mut self, field: Field, ctx: &str) -> Option<f64> {
        let expected = "a number greater than 0, like `1.5`";
        let scalar = self.scalar(field, ctx, expected)?;
        match scalar.text.parse::<f64>() {
            Ok(cpus) if cpus.is_finite() && cpus > 0.0 => Some(cpus),
            _ => {
                self.type_error(field, ctx, expected, None);
                None
            }
        }
    }

    fn pull(&mut self, field: Field, ctx: &str) -> PullPolicy {
        let expected = "always, if-not-present or never";
        let Some(scalar) = self.scalar(field, ctx, expected) else {
            return PullPolicy::default();
        };
        match scalar.text.parse() {
            Ok(policy) => policy,
            Err(_) => {
                let help = suggest(&scalar.text, &PullPolicy::NAMES)
                    .map(|s| format!("did you mean '{s}'?"));
                self.type_error(field, ctx, expected, help);
                PullPolicy::default()
            }
        }
    }

    fn boolean(&mut self, field: Field, ctx: &str) -> bool {
        let expected = "true or false";
        let Some(scalar) = self.scalar(field, ctx, expected) else {
            return false;
        };
        match (scalar.plain, scalar.text.as_str()) {
            (true, "true" | "True" | "TRUE") => true,
            (true, "false" | "False" | "FALSE") => false,
            (plain, text) => {
                let help = if !plain {
                    Some("remove the quotes: a quoted value is a string".to_owned())
                } else if matches!(
                    text.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "on" | "off"
                ) {
                    Some(format!(
                        "write `true` or `false`: in YAML 1.2, '{text}' is a string"
                    ))
                } else {
                    None
                };
                self.type_error(field, ctx, expected, help);
                false
            }
        }
    }

    fn when(&mut self, field: Field, label: &str, ctx: &str) -> When {
        let mut when = When::default();
        let sub_ctx = format!(" in `when` of {label}");
        let expected = "a mapping with `branch`, `tag` or `event`";
        let Some(fields) = self.mapping(field, Some(WHEN_KEYS), ctx, &sub_ctx, expected) else {
            return when;
        };
        if let Some(field) = fields.get("branch") {
            when.branch = self.patterns(field, &sub_ctx, "branch");
        }
        if let Some(field) = fields.get("tag") {
            when.tag = self.patterns(field, &sub_ctx, "tag");
        }
        if let Some(field) = fields.get("event") {
            when.event = self.events(field, &sub_ctx);
        }
        when
    }

    fn events(&mut self, field: Field, ctx: &str) -> Option<Vec<Event>> {
        let list = self.string_list(field, ctx)?;
        if list.is_empty() {
            self.error(
                self.value_span(field),
                format!("`event`{ctx} is empty"),
                Some("list at least one event, or omit `event` to match every event"),
            );
            return None;
        }
        let mut events = Vec::new();
        for item in list {
            match item.text.parse::<Event>() {
                Ok(event) if events.contains(&event) => {}
                Ok(event) => events.push(event),
                Err(_) => {
                    let help = match suggest(&item.text, &Event::NAMES) {
                        Some(s) => format!("did you mean '{s}'?"),
                        None => "the events are push, tag and manual".to_owned(),
                    };
                    self.error(
                        item.span,
                        format!("unknown event '{}'{ctx}", item.text),
                        Some(help),
                    );
                }
            }
        }
        Some(events)
    }

    /// Checks names across stages and resolves `needs` to indices: no key
    /// means the stage before. Reports duplicates, unknown names and cycles.
    fn resolve_needs(&mut self, drafts: &[StageDraft]) -> Vec<Vec<usize>> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, draft) in drafts.iter().enumerate() {
            let Some(name) = &draft.name else { continue };
            match index.get(name.text.as_str()) {
                Some(&first) => {
                    let first_line = drafts[first].name.as_ref().map_or(0, |n| n.span.line);
                    self.error(
                        name.span,
                        format!("duplicate stage name '{}'", name.text),
                        Some(format!(
                            "the first stage named '{}' is on line {first_line}; stage names are unique",
                            name.text
                        )),
                    );
                }
                None => {
                    index.insert(&name.text, i);
                }
            }
        }
        let names: Vec<&str> = index.keys().copied().collect();

        // Each edge remembers where it was written, for the cycle message.
        let mut edges: Vec<Vec<(usize, Option<Span>)>> = Vec::with_capacity(drafts.len());
        for (i, draft) in drafts.iter().enumerate() {
            let mut needs: Vec<(usize, Option<Span>)> = Vec::new();
            match &draft.needs {
                None if i > 0 => needs.push((i - 1, None)),
                None => {}
                Some(list) => {
                    for need in list {
                        let own = draft.name.as_ref().is_some_and(|n| n.text == need.text);
                        match index.get(need.text.as_str()) {
                            _ if own => self.error(
                                need.span,
                                format!("{} needs itself", draft.label),
                                Some("remove it from `needs`"),
                            ),
                            Some(&j) if needs.iter().any(|(k, _)| *k == j) => {}
                            Some(&j) => needs.push((j, Some(need.span))),
                            None => {
                                let mut sorted = names.clone();
                                sorted.sort_by_key(|name| index[name]);
                                let help = match suggest(&need.text, &sorted) {
                                    Some(s) => format!("did you mean '{s}'?"),
                                    None => format!("the stages are: {}", sorted.join(", ")),
                                };
                                self.error(
                                    need.span,
                                    format!("{} needs unknown stage '{}'", draft.label, need.text),
                                    Some(help),
                                );
                            }
                        }
                    }
                }
            }
            edges.push(needs);
        }

        let graph: Vec<Vec<usize>> = edges
            .iter()
            .map(|e| e.iter().map(|(j, _)| *j).collect())
            .collect();
        for cycle in cycles(&graph) {
            self.report_cycle(&cycle, drafts, &edges);
        }
        graph
    }

    /// `cycle` lists stages, each needing the next, the last needing the first.
    fn report_cycle(
        &mut self,
        cycle: &[usize],
        drafts: &[StageDraft],
        edges: &[Vec<(usize, Option<Span>)>],
    ) {
        let short = |i: usize| match &drafts[i].name {
            Some(name) => name.text.clone(),
            None => format!("#{}", i + 1),
        };
        let mut path: Vec<String> = cycle.iter().map(|&i| short(i)).collect();
        path.push(short(cycle[0]));
        let written = |from: usize, to: usize| {
            edges[from]
                .iter()
                .find(|(j, _)| *j == to)
                .and_then(|(_, span)| *span)
        };
        let first = cycle[0];
        let second = cycle.get(1).copied().unwrap_or(first);
        let span = written(first, second)
            .or_else(|| drafts[first].name.as_ref().map(|n| n.span))
            .unwrap_or(drafts[first].span);
        let implicit = cycle
            .iter()
            .zip(cycle.iter().cycle().skip(1))
            .find(|&(&from, &to)| written(from, to).is_none());
        let help = match implicit {
            Some((&from, &to)) => format!(
                "'{}' has no `needs`, so it waits for the stage before it ('{}'); give '{}' a `needs` list to break the cycle",
                short(from),
                short(to),
                short(from)
            ),
            None => "a stage waits for every stage it needs: remove one of these `needs` entries"
                .to_owned(),
        };
        self.error(
            span,
            format!("dependency cycle: {}", path.join(" -> ")),
            Some(help),
        );
    }
}

impl Validator<'_> {
    /// Checks each `${stages.NAME.KEY}`: NAME must be a `build` stage that
    /// the stage using it needs, directly or through other stages, so that
    /// its outputs exist when the stage starts.
    fn check_output_refs(&mut self, pipeline: &Pipeline, drafts: &[StageDraft]) {
        let refs = std::mem::take(&mut self.output_refs);
        let build_stages: Vec<&str> = pipeline
            .stages
            .iter()
            .filter(|stage| matches!(stage.kind, StageKind::Build(_)))
            .map(|stage| stage.name.as_str())
            .collect();
        for output in refs {
            let OutputRef {
                from,
                name,
                stage,
                key,
                span,
                ctx,
            } = &output;
            let user = &drafts[*from].label;
            let Some(index) = pipeline.stage_index(stage) else {
                let help = match suggest(stage, &build_stages) {
                    Some(s) => format!("did you mean ${{stages.{s}.{key}}}?"),
                    None if build_stages.is_empty() => {
                        format!("there is no stage '{stage}', and no stage is a `build` stage")
                    }
                    None => format!(
                        "there is no stage '{stage}'; the `build` stages are: {}",
                        build_stages.join(", ")
                    ),
                };
                self.error(
                    *span,
                    format!("unknown stage output ${{{name}}}{ctx}"),
                    Some(help),
                );
                continue;
            };
            if !OUTPUT_KEYS.contains(&key.as_str()) {
                let help = match suggest(key, &OUTPUT_KEYS) {
                    Some(s) => format!("did you mean ${{stages.{stage}.{s}}}?"),
                    None => "a `build` stage's outputs are `digest` (the pushed image, `repository@sha256:...`) and `image` (`repository:tag`)".to_owned(),
                };
                self.error(
                    *span,
                    format!("unknown stage output ${{{name}}}{ctx}"),
                    Some(help),
                );
                continue;
            }
            let target = &pipeline.stages[index];
            let StageKind::Build(build) = &target.kind else {
                self.error(
                    *span,
                    format!("${{{name}}}{ctx}: stage '{stage}' is not a build stage"),
                    Some(format!(
                        "only `build` stages have outputs, and '{stage}' is a `{}` stage",
                        target.kind_name()
                    )),
                );
                continue;
            };
            if index == *from {
                self.error(
                    *span,
                    format!("${{{name}}}{ctx}: a stage cannot use its own {key}"),
                    Some("a stage's outputs are known only once it has finished"),
                );
                continue;
            }
            if !needs_transitively(pipeline, *from, index) {
                let help = match (&drafts[*from].needs, from.checked_sub(1)) {
                    (None, Some(before)) => {
                        let before = &pipeline.stages[before].name;
                        format!(
                            "{user} has no `needs`, so it waits only for the stage before it ('{before}'): write `needs: [{before}, {stage}]`"
                        )
                    }
                    (None, None) => format!("add `needs: [{stage}]` to {user}"),
                    (Some(_), _) => format!("add '{stage}' to the `needs` of {user}"),
                };
                self.error(
                    *span,
                    format!(
                        "${{{name}}}{ctx}: {user} does not need '{stage}', so its {key} is not known yet"
                    ),
                    Some(help),
                );
                continue;
            }
            if key == "digest" && !build.push {
                self.error(
                    *span,
                    format!(
                        "${{{name}}}{ctx}: stage '{stage}' does not push (push: false), so it has no digest"
                    ),
                    Some(format!(
                        "use ${{stages.{stage}.image}}, the image it leaves on the Docker host, or let it push"
                    )),
                );
            }
        }
    }
}

/// Whether stage `from` needs stage `to`, directly or through others.
fn needs_transitively(pipeline: &Pipeline, from: usize, to: usize) -> bool {
    let mut seen = vec![false; pipeline.stages.len()];
    let mut stack = vec![from];
    while let Some(stage) = stack.pop() {
        for &need in &pipeline.stages[stage].needs {
            if need == to {
                return true;
            }
            if !seen[need] {
                seen[need] = true;
                stack.push(need);
            }
        }
    }
    false
}

/// `template` with each `${...}` replaced by `x`, a value valid in tags and
/// repositories, to check the literal parts; `None` if it does not parse
/// (which is reported elsewhere).
fn literal_sample(template: &str) -> Option<String> {
    let pieces = pieces(template).ok()?;
    Some(
        pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => *text,
                Piece::Var { .. } => "x",
            })
            .collect(),
    )
}

/// One cycle per strongly connected component of more than one stage (self
/// edges are reported elsewhere), as a path starting at its first stage.
fn cycles(graph: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for component in strongly_connected(graph) {
        if component.len() < 2 {
            continue;
        }
        let Some(&start) = component.iter().min() else {
            continue;
        };
        // Breadth-first from `start` inside the component, back to `start`.
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        while let Some(node) = queue.pop_front() {
            if graph[node].contains(&start) {
                last = Some(node);
                break;
            }
            for &next in &graph[node] {
                if component.contains(&next) && next != start && !parent.contains_key(&next) {
                    parent.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        let Some(mut node) = last else { continue };
        let mut path = vec![node];
        while let Some(&prev) = parent.get(&node) {
            path.push(prev);
            node = prev;
        }
        path.reverse();
        found.push(path);
    }
    found.sort();
    found
}

/// Tarjan's algorithm.
fn strongly_connected(graph: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'g> {
        graph: &'g [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.graph[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(index) if s.on_stack[w] => s.low[v] = s.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let n = graph.len();
    let mut state = State {
        graph,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if state.index[v].is_none() {
            visit(&mut state, v);
        }
    }
    state.components
}
