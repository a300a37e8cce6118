//! `deploy/`: what can be checked without helm, a cluster or Grafana. The chart's values and
//! templates parse (templates after a naive substitution of their `{{ ... }}`), the Service and
//! the ServiceMonitor agree on the port, the Role grants only what deploys need, the chart's
//! copies of the rules and the dashboard equal the originals, and the dashboard and the rules
//! refer only to metrics Gantry exports. The ConfigMap, the Secret and the StatefulSet are also
//! rendered for real (`template`), and the gantry.toml they make is read by gantry-config.

mod template;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::repository_root;
use template::Chart as Templates;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document in `text`, as JSON values; empty documents are left out.
fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{what} is not YAML: {e}\n{text}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// A Helm template made parseable without Helm:
/// - a line that is a single action ending in `indent N` (`include`, `toYaml`) becomes a
///   placeholder key at indentation N, except `.Files.Get "F" | nindent N`, which becomes the
///   chart file F indented by N, as Helm would render it;
/// - any other line that is a single action (`if`, `range`, `end`, `with`, comments) goes away;
/// - an action inside a line becomes `x`.
///
/// Both branches of an `if` stay, so the templates avoid `else` branches that would repeat keys.
fn naive_render(template: &str, chart: &Path) -> String {
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim();
        let single = trimmed.starts_with("{{")
            && trimmed.ends_with("}}")
            && trimmed.matches("{{").count() == 1;
        if !single {
            out.push_str(&replace_actions(line));
            out.push('\n');
            continue;
        }
        let action = trimmed
            .trim_start_matches("{{")
            .trim_start_matches('-')
            .trim_end_matches("}}")
            .trim_end_matches('-')
            .trim();
        let indent = action
            .rsplit_once("indent ")
            .and_then(|(_, n)| n.trim().parse::<usize>().ok());
        if let Some(n) = indent {
            let pad = " ".repeat(n);
            if let Some(file) = action
                .strip_prefix(".Files.Get \"")
                .and_then(|rest| rest.split_once('"'))
                .map(|(file, _)| file)
            {
                for file_line in read(&chart.join(file)).lines() {
                    out.push_str(&pad);
                    out.push_str(file_line);
                    out.push('\n');
                }
            } else {
                out.push_str(&format!("{pad}templated: x\n"));
            }
        }
    }
    out
}

fn replace_actions(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push('x');
                rest = &rest[start + end + 2..];
            }
            None => panic!("unclosed action in: {line}"),
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn naive_render_keeps_structure() {
    let chart = repository_root().join("deploy/helm/gantry");
    let template = "\
{{- if .Values.on }}
metadata:
  name: {{ include \"gantry.fullname\" . }}-x
  labels:
    {{- include \"gantry.labels\" . | nindent 4 }}
spec:
  {{- range .Values.items }}
  - {{ . | quote }}
  {{- end }}
{{- end }}
";
    assert_eq!(
        naive_render(template, &chart),
        "metadata:\n  name: x-x\n  labels:\n    templated: x\nspec:\n  - x\n"
    );
}

struct Chart {
    values: Value,
    /// (template file, kind, document)
    objects: Vec<(String, String, Value)>,
}

fn chart() -> Chart {
    let dir = repository_root().join("deploy/helm/gantry");
    let meta = yaml_documents(&read(&dir.join("Chart.yaml")), "Chart.yaml");
    assert_eq!(meta[0]["apiVersion"], "v2");
    assert_eq!(meta[0]["name"], "gantry");
    let values = yaml_documents(&read(&dir.join("values.yaml")), "values.yaml").remove(0);
    let mut objects = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir.join("templates"))
        .expect("templates")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    for name in names {
        let rendered = naive_render(&read(&dir.join("templates").join(&name)), &dir);
        for doc in yaml_documents(&rendered, &name) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            assert!(
                doc["apiVersion"].is_string()
                    && !kind.is_empty()
                    && doc["metadata"]["name"].is_string(),
                "{name}: every object has apiVersion, kind and metadata.name: {doc:#}"
            );
            objects.push((name.clone(), kind, doc));
        }
    }
    Chart { values, objects }
}

impl Chart {
    fn one(&self, kind: &str) -> &Value {
        let found: Vec<_> = self.objects.iter().filter(|(_, k, _)| k == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}");
        &found[0].2
    }
}

#[test]
fn the_chart_parses_and_its_parts_agree() {
    let chart = chart();
    let kinds: BTreeSet<&str> = chart.objects.iter().map(|(_, k, _)| k.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "ConfigMap",
        "Ingress",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "StatefulSet",
    ]
    .into();
    assert_eq!(kinds, expected);

    // Scraped by port name: the Service's port, the container's port and the ServiceMonitor's
    // endpoint are all `http`.
    let service = chart.one("Service");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["name"], "http");
    assert_eq!(service_port["targetPort"], "http");
    let monitor = chart.one("ServiceMonitor");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service_port["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
    assert_eq!(
        chart.values["metrics"]["serviceMonitor"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        chart.values["metrics"]["prometheusRule"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        chart.values["metrics"]["dashboard"]["labels"]["grafana_dashboard"],
        "1"
    );

    let set = chart.one("StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    assert_eq!(set["spec"]["replicas"], 1, "SQLite: one writer");
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    assert_eq!(chart.values["podSecurityContext"]["runAsNonRoot"], true);
    assert_eq!(chart.values["podSecurityContext"]["runAsUser"], 10001);

    // The Role: deployments read and patched; replicasets, pods and events watched; nothing else.
    let role = chart.one("Role");
    let rules: Vec<(String, String, String)> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|rule| {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(|v| v.as_str().expect("a string").to_string())
                    .collect()
            };
            let (groups, resources, verbs) = (list("apiGroups"), list("resources"), list("verbs"));
            let mut all = Vec::new();
            for g in &groups {
                for r in &resources {
                    for v in &verbs {
                        all.push((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
            all
        })
        .collect();
    let mut granted: Vec<String> = rules
        .iter()
        .map(|(g, r, v)| format!("{g}/{r}:{v}"))
        .collect();
    granted.sort();
    assert_eq!(
        granted,
        [
            "/events:list",
            "/events:watch",
            "/pods:list",
            "/pods:watch",
            "apps/deployments:get",
            "apps/deployments:list",
            "apps/deployments:patch",
            "apps/deployments:watch",
            "apps/replicasets:list",
            "apps/replicasets:watch",
        ]
    );
    let binding = chart.one("RoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");

    // SSE through nginx: no buffering.
    assert_eq!(
        chart.values["ingress"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"],
        "off"
    );
    let ingress = chart.one("Ingress");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"],
        "http"
    );

    // The PrometheusRule carries the rules file as its spec.
    let rules = yaml_documents(
        &read(&repository_root().join("deploy/prometheus/gantry-rules.yml")),
        "gantry-rules.yml",
    )
    .remove(0);
    assert_eq!(chart.one("PrometheusRule")["spec"], rules);
    // And the dashboard's ConfigMap its JSON.
    let dashboard = chart
        .objects
        .iter()
        .find(|(file, _, _)| file == "dashboard.yaml")
        .map(|(_, _, doc)| doc)
        .expect("the dashboard ConfigMap");
    let json: Value = serde_json::from_str(
        dashboard["data"]["gantry-dashboard.json"]
            .as_str()
            .expect("the dashboard as a string"),
    )
    .expect("the dashboard in the ConfigMap is JSON");
    assert_eq!(json["uid"], "gantry");
}

#[test]
fn the_charts_copies_equal_the_originals() {
    let root = repository_root();
    for (original, copy) in [
        (
            "deploy/prometheus/gantry-rules.yml",
            "deploy/helm/gantry/files/gantry-rules.yml",
        ),
        (
            "deploy/grafana/gantry-dashboard.json",
            "deploy/helm/gantry/files/gantry-dashboard.json",
        ),
    ] {
        assert!(
            read(&root.join(original)) == read(&root.join(copy)),
            "{copy} differs from {original}: copy it over (`cp {original} {copy}`)"
        );
    }
}

/// The metric names a PromQL expression mentions: every identifier that is not a function, a
/// keyword, a label (inside `{...}` or `by (...)`) or inside a range's `[...]`.
fn metric_names(promql: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        // Aggregations: followed by `by (...)` as often as by `(`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let (mut braces, mut brackets) = (0, 0);
    // For each open parenthesis: whether it holds a `by (...)`/`without (...)` label list.
    let mut parens: Vec<bool> = Vec::new();
    let mut chars = promql.char_indices().peekable();
    let mut previous_word = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '(' => parens.push(matches!(
                previous_word.as_str(),
                "by" | "without" | "on" | "ignoring"
            )),
            ')' => {
                parens.pop();
            }
            '"' => {
                // Skip a string.
                for (_, c) in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                }
            }
            c if ident(c) && !c.is_ascii_digit() => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !ident(d) {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                let word = &promql[i..end];
                let function = promql[end..].trim_start().starts_with('(');
                let label = braces > 0 || brackets > 0 || parens.last() == Some(&true);
                if !function && !label && !KEYWORDS.contains(&word) {
                    names.push(word.to_string());
                }
                previous_word = word.to_string();
                continue;
            }
            c if c.is_ascii_digit() => {
                // A number or a duration: skip its letters too (`10m`, `1e6`).
                while chars.peek().is_some_and(|&(_, d)| ident(d) || d == '.') {
                    chars.next();
                }
            }
            _ => {}
        }
        if !c.is_whitespace() {
            previous_word.clear();
        }
    }
    names
}

fn exported(name: &str) -> bool {
    use gantry_server::metrics::{FAMILIES, Kind};
    if name == "up" || name == "ALERTS" {
        return true;
    }
    FAMILIES.iter().any(|f| {
        f.name == name
            || (f.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{}{suffix}", f.name)))
    })
}

#[test]
fn metric_names_in_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="gantry"}[5m])))"#
        ),
        ["http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(r#"up{job="gantry"} == 0 or absent(up{job="gantry"})"#),
        ["up", "up"]
    );
    assert_eq!(
        metric_names(
            "sum by (cluster) (gantry_rollbacks_total unless gantry_rollbacks_total offset 10m) > 0"
        ),
        ["gantry_rollbacks_total", "gantry_rollbacks_total"]
    );
    assert!(exported("gantry_run_duration_seconds_bucket"));
    assert!(!exported("gantry_runs_total_bucket"));
    assert!(!exported("gantry_made_up_total"));
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_and_the_rules_use_only_exported_metrics() {
    let root = repository_root();
    let dashboard: Value =
        serde_json::from_str(&read(&root.join("deploy/grafana/gantry-dashboard.json")))
            .expect("the dashboard is JSON");
    let rules = yaml_documents(
        &read(&root.join("deploy/prometheus/gantry-rules.yml")),
        "gantry-rules.yml",
    )
    .remove(0);
    let mut all = Vec::new();
    for (what, doc) in [("dashboard", &dashboard), ("rules", &rules)] {
        let mut found = Vec::new();
        exprs(doc, &mut found);
        assert!(found.len() >= 5, "{what} has expressions");
        for expr in &found {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{what}: no metric found in {expr}");
            for name in names {
                assert!(
                    exported(&name),
                    "{what} uses {name}, which Gantry does not export: {expr}"
                );
                all.push(name);
            }
        }
    }
    // What the dashboard must show.
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for title in [
        "Runs per status",
        "Run duration",
        "Stage duration",
        "Queue",
        "Deploys and rollbacks",
        "Webhook deliveries",
        "HTTP latency p95",
    ] {
        assert!(titles.contains(&title), "panel {title} in {titles:?}");
    }
    let mut dashboard_exprs = Vec::new();
    exprs(&dashboard, &mut dashboard_exprs);
    assert!(
        dashboard_exprs
            .iter()
            .any(|e| e.starts_with("histogram_quantile(0.5,")),
        "p50"
    );
    assert!(
        dashboard_exprs
            .iter()
            .any(|e| e.starts_with("histogram_quantile(0.95,")),
        "p95"
    );
}

#[test]
fn compose_file_and_dockerfile() {
    let root = repository_root();
    let compose_text = read(&root.join("deploy/docker-compose.yml"));
    let compose = yaml_documents(&compose_text, "docker-compose.yml").remove(0);
    let gantry = &compose["services"]["gantry"];
    let volumes: Vec<&str> = gantry["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        volumes.contains(&"gantry-data:/var/lib/gantry"),
        "{volumes:?}"
    );
    assert!(
        volumes.contains(&"/var/run/docker.sock:/var/run/docker.sock"),
        "{volumes:?}"
    );
    assert!(
        compose_text.contains("root on the host"),
        "the socket's risk is spelled out"
    );
    assert!(compose["services"]["registry"]["image"].is_string());

    let dockerfile = read(&root.join("deploy/Dockerfile"));
    for needle in [
        "ARG RUNTIME_IMAGE=debian:bookworm-slim",
        "ARG BUILDER_IMAGE=rust:1.95-slim-bookworm",
        "AS runtime-prebuilt",
        "AS runtime\n",
        "USER 10001:10001",
        "ca-certificates git",
    ] {
        assert!(
            dockerfile.contains(needle),
            "deploy/Dockerfile has {needle:?}"
        );
    }
    // `--target runtime-prebuilt` must not need the builder image: it comes after.
    let prebuilt = dockerfile.find("AS runtime-prebuilt").unwrap_or(usize::MAX);
    let builder = dockerfile.find("AS builder").unwrap_or(0);
    assert!(
        prebuilt < builder,
        "runtime-prebuilt comes before the builder stage"
    );
}

fn chart_dir() -> PathBuf {
    repository_root().join("deploy/helm/gantry")
}

/// values.yaml with `overrides` merged in, as `helm install -f overrides.yaml` does: maps
/// merge, everything else is replaced.
fn values_with(overrides: &str) -> Value {
    fn merge(base: &mut Value, over: Value) {
        match (base, over) {
            (Value::Object(base), Value::Object(over)) => {
                for (key, value) in over {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
            (base, over) => *base = over,
        }
    }
    let mut values =
        yaml_documents(&read(&chart_dir().join("values.yaml")), "values.yaml").remove(0);
    for doc in yaml_documents(overrides, "the overrides") {
        merge(&mut values, doc);
    }
    values
}

/// What the cluster makes of a release: the rendered objects, and Gantry's environment as
/// Kubernetes sets it from the StatefulSet's `env` and the Secrets it names.
struct Release {
    config_map: String,
    statefulset: Value,
    /// The chart's Secret's `stringData`; None with `existingSecret`.
    secret: Option<serde_json::Map<String, Value>>,
    env: HashMap<String, String>,
}

/// Installs the chart with `values`; `existing` holds the Secrets the user made beforehand.
fn install(values: Value, existing: &[(&str, Value)]) -> Release {
    let templates = Templates::new(&chart_dir(), values);
    let config_map = templates.render("templates/configmap.yaml");
    let statefulset = yaml_documents(
        &templates.render("templates/statefulset.yaml"),
        "statefulset.yaml",
    )
    .remove(0);
    let secret = yaml_documents(&templates.render("templates/secret.yaml"), "secret.yaml")
        .pop()
        .map(|s| {
            assert_eq!(s["metadata"]["name"], "gantry");
            s["stringData"].as_object().cloned().unwrap_or_default()
        });
    let mut secrets: HashMap<&str, serde_json::Map<String, Value>> = existing
        .iter()
        .map(|(name, data)| (*name, data.as_object().expect("a Secret's data").clone()))
        .collect();
    if let Some(data) = &secret {
        secrets.insert("gantry", data.clone());
    }
    let mut env = HashMap::new();
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("an env name").to_string();
        let reference = &var["valueFrom"]["secretKeyRef"];
        if reference.is_null() {
            env.insert(name, var["value"].as_str().expect("a value").to_string());
            continue;
        }
        let (secret_name, key) = (
            reference["name"].as_str().expect("a Secret"),
            reference["key"].as_str().expect("a key"),
        );
        let data = secrets.get(secret_name).unwrap_or_else(|| {
            panic!("{name} reads the Secret {secret_name}, which does not exist")
        });
        match data.get(key) {
            Some(value) => {
                env.insert(name, value.as_str().expect("a string").to_string());
            }
            None if reference["optional"] == true => {}
            None => panic!(
                "{name} reads key {key} of the Secret {secret_name}, which has only {:?}",
                data.keys().collect::<Vec<_>>()
            ),
        }
    }
    Release {
        config_map,
        statefulset,
        secret,
        env,
    }
}

impl Release {
    fn gantry_toml(&self) -> String {
        let doc = yaml_documents(&self.config_map, "configmap.yaml").remove(0);
        doc["data"]["gantry.toml"]
            .as_str()
            .expect("gantry.toml")
            .to_string()
    }

    /// gantry.toml as Gantry reads it in the pod.
    fn config(&self) -> gantry_config::Config {
        gantry_config::parse("gantry.toml", &self.gantry_toml(), &|name| {
            self.env.get(name).cloned()
        })
        .unwrap_or_else(|e| {
            panic!(
                "Gantry refuses the chart's gantry.toml:\n{e}\n\n{}",
                self.gantry_toml()
            )
        })
    }
}

#[test]
fn the_template_renderer_follows_helm() {
    let templates = Templates::new(
        &chart_dir(),
        json!({"items": ["a", "b"], "on": true, "zero": 0}),
    );
    let template = "\
list:
  {{- range $i, $item := .Values.items }}
  - {{ $i }}={{ $item | quote }}
  {{- end }}
{{- if .Values.zero }}
zero
{{- else if .Values.on }}
name: {{ include \"gantry.fullname\" . }}-{{ default \"d\" .Values.missing }}
{{- end }}
";
    assert_eq!(
        templates.render_str(template),
        "list:\n  - 0=\"a\"\n  - 1=\"b\"\nname: gantry-d\n"
    );
}

/// Every kind of secret the chart takes, through the Secret, the StatefulSet's environment and
/// the ConfigMap's ${VAR}s into what gantry-config reads.
#[test]
fn the_charts_gantry_toml_is_read_by_gantry_config() {
    let release = install(
        values_with(
            r#"
adminToken: admin-s3cret
projects:
  - name: demo/backend
    cloneUrl: https://github.com/demo/backend.git
    webhookSecret: hook-s3cret
    gitToken: git-s3cret
    secrets:
      - { name: PYPI_TOKEN, value: pypi-s3cret }
      - { name: SIGNING_KEY, value: signing-s3cret }
  - name: demo/frontend
    cloneUrl: git@github.com:demo/frontend.git
    webhookSecret: hook2-s3cret
    pipeline: ci/.gantry.yml
    sshSecret: frontend-ssh
registries:
  - { name: nexus, kind: nexus, address: "nexus.example.com:8083", username: ci, password: nexus-s3cret }
  - { name: ghcr, kind: ghcr, username: bot, password: ghcr-s3cret }
clusters:
  - { name: in-cluster, inCluster: true }
  - { name: prod, kubeconfigSecret: prod-kubeconfig, context: prod-admin }
"#,
        ),
        &[],
    );
    assert_eq!(
        release.gantry_toml(),
        r#"[server]
max_parallel_runs = 4
keep_workspaces = 0
stage_timeout = "1h"

[[project]]
name = "demo/backend"
clone_url = "https://github.com/demo/backend.git"
pipeline = ".gantry.yml"
webhook_secret = "${GANTRY_PROJECT_0_WEBHOOK_SECRET}"
git_token = "${GANTRY_PROJECT_0_GIT_TOKEN}"

[project.secrets]
"PYPI_TOKEN" = "${GANTRY_PROJECT_0_SECRET_PYPI_TOKEN}"
"SIGNING_KEY" = "${GANTRY_PROJECT_0_SECRET_SIGNING_KEY}"

[[project]]
name = "demo/frontend"
clone_url = "git@github.com:demo/frontend.git"
pipeline = "ci/.gantry.yml"
webhook_secret = "${GANTRY_PROJECT_1_WEBHOOK_SECRET}"
# The Secret sshSecret, mounted by the StatefulSet.
ssh_key = "/etc/gantry-ssh/1/ssh-privatekey"
known_hosts = "/etc/gantry-ssh/1/known_hosts"

[[registry]]
name = "nexus"
kind = "nexus"
address = "nexus.example.com:8083"
username = "ci"
password = "${GANTRY_REGISTRY_0_PASSWORD}"

[[registry]]
name = "ghcr"
kind = "ghcr"
username = "bot"
password = "${GANTRY_REGISTRY_1_PASSWORD}"

[[cluster]]
name = "in-cluster"
in_cluster = true

[[cluster]]
name = "prod"
# The Secret kubeconfigSecret, mounted by the StatefulSet.
kubeconfig = "/etc/gantry-clusters/1/kubeconfig"
context = "prod-admin"
"#
    );
    // Nothing secret in the ConfigMap.
    let secret = release.secret.as_ref().expect("the chart's Secret");
    assert_eq!(secret.len(), 8, "{secret:?}");
    for value in secret.values() {
        let value = value.as_str().expect("a string");
        assert!(
            !release.config_map.contains(value),
            "{value} is in the ConfigMap"
        );
    }

    let config = release.config();
    assert_eq!(
        config.server.stage_timeout,
        std::time::Duration::from_secs(3600)
    );
    let backend = config.project("demo/backend").expect("demo/backend");
    assert_eq!(backend.webhook_secret.expose(), "hook-s3cret");
    assert_eq!(
        backend.git_token.as_ref().map(|t| t.expose()),
        Some("git-s3cret")
    );
    let secrets: Vec<(&str, &str)> = backend
        .secrets
        .iter()
        .map(|(name, value)| (name.as_str(), value.expose()))
        .collect();
    assert_eq!(
        secrets,
        [
            ("PYPI_TOKEN", "pypi-s3cret"),
            ("SIGNING_KEY", "signing-s3cret")
        ]
    );
    let frontend = config.project("demo/frontend").expect("demo/frontend");
    assert_eq!(frontend.pipeline, "ci/.gantry.yml");
    assert!(frontend.git_token.is_none() && frontend.secrets.is_empty());
    let registries: Vec<_> = config
        .registries
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.kind,
                r.address.as_str(),
                r.username.as_str(),
                r.password.expose(),
            )
        })
        .collect();
    use gantry_config::RegistryKind::{Ghcr, Nexus};
    assert_eq!(
        registries,
        [
            (
                "nexus",
                Nexus,
                "nexus.example.com:8083",
                "ci",
                "nexus-s3cret"
            ),
            ("ghcr", Ghcr, "ghcr.io", "bot", "ghcr-s3cret"),
        ]
    );
    assert_eq!(
        config.server.admin_token.as_ref().map(|t| t.expose()),
        Some("admin-s3cret")
    );

    // The clusters: the ServiceAccount, and a kubeconfig where the StatefulSet mounts its Secret.
    assert_eq!(config.clusters.len(), 2);
    assert!(config.clusters[0].in_cluster && config.clusters[0].kubeconfig.is_none());
    let prod = &config.clusters[1];
    assert_eq!((prod.name.as_str(), prod.in_cluster), ("prod", false));
    assert_eq!(prod.context.as_deref(), Some("prod-admin"));
    let pod = &release.statefulset["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == "prod-kubeconfig")
        .expect("a volume of the kubeconfig's Secret");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "kubeconfig", "path": "kubeconfig"}])
    );
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the kubeconfig's volume is mounted");
    assert_eq!(
        prod.kubeconfig.as_deref(),
        Some(
            Path::new(mount["mountPath"].as_str().expect("a path"))
                .join("kubeconfig")
                .as_path()
        )
    );

    // The SSH project: its Secret's two keys, where gantry.toml looks for them.
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == "frontend-ssh")
        .expect("a volume of the deploy key's Secret");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the deploy key's volume is mounted");
    let dir = Path::new(mount["mountPath"].as_str().expect("a path"));
    let items = volume["secret"]["items"].as_array().expect("items");
    let files: Vec<std::path::PathBuf> = items
        .iter()
        .map(|item| dir.join(item["path"].as_str().expect("a path")))
        .collect();
    assert_eq!(
        files,
        [
            frontend.ssh_key.clone().expect("ssh_key"),
            frontend.known_hosts.clone().expect("known_hosts")
        ]
    );
    assert!(backend.ssh_key.is_none() && backend.known_hosts.is_none());
}

#[test]
fn the_default_values_give_the_in_cluster_cluster() {
    let values = values_with("");
    assert_eq!(values["projects"], json!([]));
    assert_eq!(values["registries"], json!([]));
    assert_eq!(
        values["clusters"],
        json!([{"name": "in-cluster", "inCluster": true}])
    );
    let release = install(values, &[]);
    let config = release.config();
    assert!(config.projects.is_empty() && config.registries.is_empty());
    assert_eq!(config.clusters.len(), 1);
    assert_eq!(config.clusters[0].name, "in-cluster");
    assert!(config.clusters[0].in_cluster);
    assert!(
        config.server.admin_token.is_none(),
        "generated at first start"
    );
}

/// With `existingSecret` the chart makes no Secret and reads the keys values.yaml documents.
#[test]
fn an_existing_secret_holds_the_keys_values_yaml_names() {
    let release = install(
        values_with(
            r#"
existingSecret: ci-secrets
projects:
  - name: demo/backend
    cloneUrl: https://github.com/demo/backend.git
    secrets: [{ name: PYPI_TOKEN }]
registries:
  - { name: nexus, address: "nexus.example.com:8083", username: ci }
"#,
        ),
        &[(
            "ci-secrets",
            json!({
                "project-0-webhook-secret": "hook-s3cret",
                "project-0-secret-PYPI_TOKEN": "pypi-s3cret",
                "registry-0-password": "nexus-s3cret",
            }),
        )],
    );
    assert!(release.secret.is_none(), "no Secret of the chart's own");
    let config = release.config();
    let project = &config.projects[0];
    assert_eq!(project.webhook_secret.expose(), "hook-s3cret");
    assert_eq!(project.secrets[0].1.expose(), "pypi-s3cret");
    assert_eq!(config.registries[0].password.expose(), "nexus-s3cret");
}
