//! Just enough of Helm's template language to render the chart's templates for given values,
//! since no helm binary exists here: Go's text/template (whitespace trimming, `if`/`else`,
//! `range`, `with`, `define`, variables, pipelines) and the few Sprig and Helm functions the
//! chart calls. Whatever it does not know it refuses with a panic, so a template that outgrows
//! it fails its test instead of rendering wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub struct Chart {
    dir: PathBuf,
    root: Value,
    defines: HashMap<String, Vec<Node>>,
}

impl Chart {
    /// The chart in `dir`, released as `gantry` in the namespace `ci`, with `values`.
    pub fn new(dir: &Path, values: Value) -> Chart {
        let meta: Value = yaml_serde::from_str(&read(&dir.join("Chart.yaml"))).expect("Chart.yaml");
        let root = json!({
            "Values": values,
            "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]},
            "Release": {"Name": "gantry", "Namespace": "ci", "Service": "Helm"},
            "Template": {"BasePath": "templates"},
        });
        let mut defines = HashMap::new();
        parse(&read(&dir.join("templates/_helpers.tpl")), &mut defines);
        Chart {
            dir: dir.to_path_buf(),
            root,
            defines,
        }
    }

    /// Renders the chart's file `path` (`templates/configmap.yaml`).
    pub fn render(&self, path: &str) -> String {
        self.render_str(&read(&self.dir.join(path)))
    }

    pub fn render_str(&self, template: &str) -> String {
        let nodes = parse(template, &mut HashMap::new());
        let mut out = String::new();
        self.exec(
            &nodes,
            &self.root,
            &mut vec![("$".into(), self.root.clone())],
            &mut out,
        );
        out
    }

    /// Runs `nodes`; the variables they declare live until the end of the block.
    fn exec(&self, nodes: &[Node], dot: &Value, vars: &mut Vec<(String, Value)>, out: &mut String) {
        let depth = vars.len();
        for node in nodes {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Declare(name, pipe) => {
                    let value = self.eval(pipe, dot, vars);
                    vars.push((name.clone(), value));
                }
                Node::Output(pipe) => out.push_str(&print(&self.eval(pipe, dot, vars))),
                Node::If(branches, otherwise) => {
                    match branches
                        .iter()
                        .find(|(pipe, _)| truthy(&self.eval(pipe, dot, vars)))
                    {
                        Some((_, body)) => self.exec(body, dot, vars, out),
                        None => self.exec(otherwise, dot, vars, out),
                    }
                }
                Node::With(pipe, body) => {
                    let value = self.eval(pipe, dot, vars);
                    if truthy(&value) {
                        self.exec(body, &value, vars, out);
                    }
                }
                Node::Range(names, pipe, body) => {
                    let items: Vec<(Value, Value)> = match self.eval(pipe, dot, vars) {
                        Value::Array(items) => items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (json!(i), v))
                            .collect(),
                        // Go ranges over a map in key order.
                        Value::Object(map) => {
                            let mut items: Vec<_> =
                                map.into_iter().map(|(k, v)| (json!(k), v)).collect();
                            items.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
                            items
                        }
                        Value::Null => Vec::new(),
                        other => panic!("range over {other}"),
                    };
                    let before = vars.len();
                    for (key, item) in items {
                        match names.as_slice() {
                            [] => {}
                            [value] => vars.push((value.clone(), item.clone())),
                            [index, value] => {
                                vars.push((index.clone(), key));
                                vars.push((value.clone(), item.clone()));
                            }
                            _ => panic!("range declares {names:?}"),
                        }
                        self.exec(body, &item, vars, out);
                        vars.truncate(before);
                    }
                }
            }
        }
        vars.truncate(depth);
    }

    fn eval(&self, pipe: &[Command], dot: &Value, vars: &[(String, Value)]) -> Value {
        let mut piped: Option<Value> = None;
        for command in pipe {
            let (first, rest) = command.split_first().expect("an empty command");
            let value = match first {
                Arg::Function(name) => {
                    let mut args: Vec<Value> = rest
                        .iter()
                        .map(|arg| self.operand(arg, dot, vars))
                        .collect();
                    args.extend(piped.take());
                    self.call(name, args)
                }
                operand => {
                    assert!(
                        rest.is_empty() && piped.is_none(),
                        "arguments to a value: {command:?}"
                    );
                    self.operand(operand, dot, vars)
                }
            };
            piped = Some(value);
        }
        piped.unwrap_or(Value::Null)
    }

    fn operand(&self, arg: &Arg, dot: &Value, vars: &[(String, Value)]) -> Value {
        match arg {
            Arg::Literal(value) => value.clone(),
            Arg::Pipe(pipe) => self.eval(pipe, dot, vars),
            Arg::Function(name) => self.call(name, Vec::new()),
            Arg::Path(path) => {
                let (start, fields) = match path.strip_prefix('$') {
                    Some(rest) => {
                        let (name, fields) = rest.split_once('.').unwrap_or((rest, ""));
                        let name = format!("${name}");
                        let value = vars
                            .iter()
                            .rev()
                            .find(|(n, _)| *n == name)
                            .map(|(_, v)| v)
                            .unwrap_or_else(|| panic!("undefined variable {name}"));
                        (value, fields)
                    }
                    None => (dot, path.strip_prefix('.').unwrap_or(path)),
                };
                fields
                    .split('.')
                    .filter(|f| !f.is_empty())
                    .fold(start.clone(), |value, field| {
                        value.get(field).cloned().unwrap_or(Value::Null)
                    })
            }
        }
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Value {
        let text = |i: usize| print(&args[i]);
        let number = |i: usize| {
            args[i]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {} is not a count", args[i]))
                as usize
        };
        match (name, args.len()) {
            ("quote", 1) if args[0].is_null() => json!(""),
            ("quote", 1) => json!(format!("{:?}", text(0))),
            ("default", 2) => {
                if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                }
            }
            ("required", 2) => {
                assert!(
                    !args[1].is_null() && args[1] != json!(""),
                    "required: {}",
                    text(0)
                );
                args[1].clone()
            }
            ("not", 1) => json!(!truthy(&args[0])),
            ("printf", _) => {
                let mut rest = args[1..].iter();
                let mut out = String::new();
                let format = text(0);
                let mut chars = format.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '%' => match chars.next() {
                            Some('s' | 'd' | 'v') => {
                                out.push_str(&print(rest.next().expect("printf: an argument")))
                            }
                            other => panic!("printf: %{other:?}"),
                        },
                        c => out.push(c),
                    }
                }
                json!(out)
            }
            ("print", _) => json!(args.iter().map(print).collect::<String>()),
            ("include", 2) => {
                let name = text(0);
                let nodes = match self.defines.get(&name) {
                    Some(nodes) => nodes.clone(),
                    None => parse(&read(&self.dir.join(&name)), &mut HashMap::new()),
                };
                let mut out = String::new();
                self.exec(
                    &nodes,
                    &args[1],
                    &mut vec![("$".into(), args[1].clone())],
                    &mut out,
                );
                json!(out)
            }
            ("toYaml", 1) => {
                let yaml = yaml_serde::to_string(&args[0]).expect("toYaml");
                json!(yaml.trim_end_matches('\n'))
            }
            ("indent" | "nindent", 2) => {
                let pad = " ".repeat(number(0));
                let lines: Vec<String> = text(1).lines().map(|l| format!("{pad}{l}")).collect();
                let newline = if name == "nindent" { "\n" } else { "" };
                json!(format!("{newline}{}", lines.join("\n")))
            }
            ("sha256sum", 1) => json!(hex::encode(Sha256::digest(text(0)))),
            ("trunc", 2) => json!(text(1).chars().take(number(0)).collect::<String>()),
            ("trimSuffix", 2) => json!(text(1).strip_suffix(&text(0)).unwrap_or(&text(1))),
            ("contains", 2) => json!(text(1).contains(&text(0))),
            ("replace", 3) => json!(text(2).replace(&text(0), &text(1))),
            _ => panic!("unknown function {name} with {} arguments", args.len()),
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How Helm prints a value: missing ones as nothing.
fn print(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        other => panic!("printing a list or a map: {other}"),
    }
}

/// Go's truth: false, 0, nil and empty strings, lists and maps are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Output(Vec<Command>),
    /// `$name := pipeline`
    Declare(String, Vec<Command>),
    If(Vec<(Vec<Command>, Vec<Node>)>, Vec<Node>),
    With(Vec<Command>, Vec<Node>),
    /// The declared variables (`$i, $p`), the list and the body.
    Range(Vec<String>, Vec<Command>, Vec<Node>),
}

type Command = Vec<Arg>;

#[derive(Debug, Clone)]
enum Arg {
    Literal(Value),
    /// `.`, `.Values.x`, `$`, `$p.name`
    Path(String),
    Function(String),
    Pipe(Vec<Command>),
}

/// Text and actions, with `{{-` and `-}}` trimming applied and comments gone.
fn pieces(source: &str) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = source;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed action: {after}"));
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix("- ") {
            text = text.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix(" -") {
            trim_next = true;
            action = a;
        }
        out.push((false, text.to_string()));
        let action = action.trim();
        if !(action.starts_with("/*") && action.ends_with("*/")) {
            out.push((true, action.to_string()));
        }
        rest = &after[end + 2..];
    }
    out.push((
        false,
        if trim_next { rest.trim_start() } else { rest }.to_string(),
    ));
    out
}

/// The template's nodes; `define`d templates go into `defines`.
fn parse(source: &str, defines: &mut HashMap<String, Vec<Node>>) -> Vec<Node> {
    let mut pieces = pieces(source).into_iter();
    let (nodes, end) = parse_block(&mut pieces, defines);
    assert!(end.is_none(), "{{{{ {end:?} }}}} without its block");
    nodes
}

/// Nodes up to the `end` or `else` that closes the block (returned), or to the end of the text.
fn parse_block(
    pieces: &mut impl Iterator<Item = (bool, String)>,
    defines: &mut HashMap<String, Vec<Node>>,
) -> (Vec<Node>, Option<String>) {
    let mut nodes = Vec::new();
    while let Some((is_action, text)) = pieces.next() {
        if !is_action {
            nodes.push(Node::Text(text));
            continue;
        }
        let (keyword, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match keyword {
            "end" | "else" => return (nodes, Some(text)),
            "if" => {
                let mut branches = Vec::new();
                let mut condition = rest.to_string();
                let otherwise = loop {
                    let (body, end) = parse_block(pieces, defines);
                    branches.push((pipeline(&condition), body));
                    match end.as_deref() {
                        Some("end") => break Vec::new(),
                        Some("else") => {
                            let (body, end) = parse_block(pieces, defines);
                            assert_eq!(end.as_deref(), Some("end"), "if: {condition}");
                            break body;
                        }
                        Some(other) if other.starts_with("else if ") => {
                            condition = other["else if ".len()..].to_string();
                        }
                        other => panic!("if {condition} closed by {other:?}"),
                    }
                };
                nodes.push(Node::If(branches, otherwise));
            }
            "with" | "range" | "define" => {
                let (body, end) = parse_block(pieces, defines);
                assert_eq!(end.as_deref(), Some("end"), "{text}: no `else` here");
                match keyword {
                    "with" => nodes.push(Node::With(pipeline(rest), body)),
                    "define" => {
                        let name = rest.trim().trim_matches('"').to_string();
                        defines.insert(name, body);
                    }
                    _ => {
                        let (names, list) = match rest.split_once(":=") {
                            Some((names, list)) => (
                                names.split(',').map(|n| n.trim().to_string()).collect(),
                                list,
                            ),
                            None => (Vec::new(), rest),
                        };
                        nodes.push(Node::Range(names, pipeline(list), body));
                    }
                }
            }
            _ => match text.split_once(":=") {
                Some((name, value)) if name.trim().starts_with('$') => {
                    nodes.push(Node::Declare(name.trim().to_string(), pipeline(value)))
                }
                _ => nodes.push(Node::Output(pipeline(&text))),
            },
        }
    }
    (nodes, None)
}

/// `f a (g b) | h c`: commands separated by `|`, each a function and its arguments or a value.
fn pipeline(source: &str) -> Vec<Command> {
    let mut chars = source.trim().chars().peekable();
    let pipe = parse_pipe(&mut chars);
    assert!(chars.next().is_none(), "unbalanced parentheses: {source}");
    pipe
}

fn parse_pipe(chars: &mut std::iter::Peekable<std::str::Chars>) -> Vec<Command> {
    let mut pipe = vec![Vec::new()];
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            ')' => break,
            '|' => {
                chars.next();
                pipe.push(Vec::new());
            }
            '(' => {
                chars.next();
                let inner = parse_pipe(chars);
                assert_eq!(chars.next(), Some(')'), "unclosed parenthesis");
                pipe.last_mut().expect("a command").push(Arg::Pipe(inner));
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next().expect("unclosed string") {
                        '"' => break,
                        '\\' => s.push(chars.next().expect("an escape")),
                        c => s.push(c),
                    }
                }
                pipe.last_mut()
                    .expect("a command")
                    .push(Arg::Literal(json!(s)));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ' ' || c == ')' || c == '|' || c == '(' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                let arg = if word.starts_with('.') || word.starts_with('$') {
                    Arg::Path(word)
                } else if let Ok(n) = word.parse::<i64>() {
                    Arg::Literal(json!(n))
                } else if word == "true" || word == "false" {
                    Arg::Literal(json!(word == "true"))
                } else {
                    Arg::Function(word)
                };
                pipe.last_mut().expect("a command").push(arg);
            }
        }
    }
    pipe
}
