//! `gantry.toml`: the server's configuration, with `${VAR}` read from the
//! environment and every error located at file:line:column.
//!
//! Pure: the caller passes the file's text and a lookup for environment
//! variables, so every rule is tested without touching the process environment.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "gantry-data";
pub const DEFAULT_PIPELINE: &str = ".gantry.yml";

/// A value that must not be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub projects: Vec<Project>,
    /// Credentials for `build` stages, by `registry:` name.
    pub registries: Vec<Registry>,
    /// Where `deploy` stages roll out, by `cluster:` name.
    pub clusters: Vec<Cluster>,
}

/// A container registry (`[[registry]]`): Nexus, GHCR or any other speaking
/// the registry v2 protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub name: String,
    pub kind: RegistryKind,
    /// `host[:port]`; `ghcr.io` for GHCR unless given.
    pub address: String,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    Nexus,
    Ghcr,
    Generic,
}

/// A Kubernetes cluster (`[[cluster]]`): a kubeconfig (and context), or the
/// service account Gantry runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub in_cluster: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: SQLite in `data_dir`.
    pub database_url: Option<String>,
    pub max_parallel_runs: usize,
    /// Keep the workspaces of the last N finished runs, for debugging.
    pub keep_workspaces: usize,
    pub admin_token: Option<Secret>,
    /// How long a stage without a `timeout` of its own may run (GitLab's and Woodpecker's
    /// default is the same hour): a hung test or a wedged Docker engine ends the run in time.
    pub stage_timeout: Duration,
}

/// `[server] stage_timeout` when it is not set.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The GitHub repository's `full_name`, e.g. `demo/backend`.
    pub name: String,
    pub clone_url: String,
    pub webhook_secret: Secret,
    pub git_token: Option<Secret>,
    pub ssh_key: Option<PathBuf>,
    /// An OpenSSH `known_hosts` file for ssh clone URLs; `None`: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub pipeline: String,
    pub secrets: Vec<(String, Secret)>,
}

impl Config {
    pub fn project(&self, name: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// The configuration with no file at all: the README's main command.
    pub fn empty(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Errors> {
        parse("(defaults)", "", env)
    }
}

/// Every problem found, rendered one per line as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Errors(pub Vec<String>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    project: Vec<RawProject>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    #[serde(default)]
    cluster: Vec<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    name: Spanned<String>,
    kind: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    username: Spanned<String>,
    password: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    kubeconfig: Option<Spanned<String>>,
    context: Option<Spanned<String>>,
    #[serde(default)]
    in_cluster: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    database_url: Option<Spanned<String>>,
    max_parallel_runs: Option<Spanned<i64>>,
    keep_workspaces: Option<Spanned<i64>>,
    admin_token: Option<Spanned<String>>,
    stage_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: Spanned<String>,
    clone_url: Spanned<String>,
    webhook_secret: Spanned<String>,
    git_token: Option<Spanned<String>>,
    ssh_key: Option<Spanned<String>>,
    known_hosts: Option<Spanned<String>>,
    pipeline: Option<Spanned<String>>,
    #[serde(default)]
    secrets: std::collections::BTreeMap<String, Spanned<toml::Value>>,
}

/// Reads `path`, or `./gantry.toml` when present, or nothing; then applies the
/// `GANTRY_*` environment overrides.
pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Errors> {
    let default = Path::new("gantry.toml");
    let path = match path {
        Some(p) => Some(p),
        None if default.exists() => Some(default),
        None => None,
    };
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Errors(vec![format!(
                    "{}: cannot read the configuration: {e}",
                    path.display()
                )])
            })?;
            parse(&path.display().to_string(), &text, env)
        }
        None => Config::empty(env),
    }
}

/// Parses a configuration file's text.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Errors> {
    let locate = |span: Range<usize>| {
        let (line, column) = line_column(text, span.start);
        format!("{file}:{line}:{column}")
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let at = e.span().map(&locate).unwrap_or_else(|| file.to_string());
            return Err(Errors(vec![format!("{at}: {}", e.message().trim_end())]));
        }
    };
    let errors = std::cell::RefCell::new(Vec::new());
    let expand = |value: &Spanned<String>, what: &str| -> String {
        match expand_env(value.get_ref(), env) {
            Ok(v) => v,
            Err(name) => {
                errors.borrow_mut().push(format!(
                    "{}: {what} refers to ${{{name}}}, but the environment variable {name} is not set",
                    locate(value.span())
                ));
                String::new()
            }
        }
    };

    let s = &raw.server;
    let listen_text = env("GANTRY_LISTEN")
        .or_else(|| s.listen.as_ref().map(|v| expand(v, "server.listen")))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let data_dir = env("GANTRY_DATA_DIR")
        .or_else(|| s.data_dir.as_ref().map(|v| expand(v, "server.data_dir")))
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    let database_url = env("GANTRY_DATABASE_URL").or_else(|| {
        s.database_url
            .as_ref()
            .map(|v| expand(v, "server.database_url"))
    });
    let admin_token = env("GANTRY_ADMIN_TOKEN")
        .or_else(|| {
            s.admin_token
                .as_ref()
                .map(|v| expand(v, "server.admin_token"))
        })
        .filter(|t| !t.is_empty())
        .map(Secret);

    let mut projects = Vec::new();
    for p in &raw.project {
        let secrets = p
            .secrets
            .iter()
            .map(|(k, v)| match v.get_ref().as_str() {
                Some(text) => match expand_env(text, env) {
                    Ok(text) => (k.clone(), Secret(text)),
                    Err(name) => {
                        errors.borrow_mut().push(format!(
                            "{}: secret '{k}' of project '{}' refers to ${{{name}}}, but the environment variable {name} is not set",
                            locate(v.span()),
                            p.name.get_ref()
                        ));
                        (k.clone(), Secret::default())
                    }
                },
                None => {
                    errors.borrow_mut().push(format!(
                        "{}: secret '{k}' of project '{}' must be a string, found {}",
                        locate(v.span()),
                        p.name.get_ref(),
                        v.get_ref().type_str()
                    ));
                    (k.clone(), Secret::default())
                }
            })
            .collect();
        projects.push(Project {
            name: p.name.get_ref().clone(),
            clone_url: expand(&p.clone_url, "clone_url"),
            webhook_secret: Secret(expand(&p.webhook_secret, "webhook_secret")),
            git_token: p
                .git_token
                .as_ref()
                .map(|v| Secret(expand(v, "git_token")))
                .filter(|s| !s.0.is_empty()),
            ssh_key: p
                .ssh_key
                .as_ref()
                .map(|v| PathBuf::from(expand(v, "ssh_key"))),
            known_hosts: p
                .known_hosts
                .as_ref()
                .map(|v| PathBuf::from(expand(v, "known_hosts"))),
            pipeline: p
                .pipeline
                .as_ref()
                .map(|v| expand(v, "pipeline"))
                .unwrap_or_else(|| DEFAULT_PIPELINE.into()),
            secrets,
        });
    }

    let mut registries = Vec::new();
    let mut registry_problems = Vec::new();
    for r in &raw.registry {
        let name = r.name.get_ref().clone();
        let kind = match r.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("generic") => RegistryKind::Generic,
            Some("nexus") => RegistryKind::Nexus,
            Some("ghcr") => RegistryKind::Ghcr,
            Some(other) => {
                let at = r
                    .kind
                    .as_ref()
                    .map(|k| locate(k.span()))
                    .unwrap_or_default();
                registry_problems.push(format!(
                    "{at}: registry kind '{other}' is not one of nexus, ghcr, generic"
                ));
                RegistryKind::Generic
            }
        };
        let address = match (&r.address, kind) {
            (Some(a), _) => expand(a, "address"),
            (None, RegistryKind::Ghcr) => "ghcr.io".to_string(),
            (None, _) => {
                registry_problems.push(format!(
                    "{}: registry '{name}' has no address (host:port, e.g. nexus.example.com:8083)",
                    locate(r.name.span())
                ));
                String::new()
            }
        };
        if raw
            .registry
            .iter()
            .take_while(|q| !std::ptr::eq(*q, r))
            .any(|q| q.name.get_ref() == &name)
        {
            registry_problems.push(format!(
                "{}: registry '{name}' is configured twice",
                locate(r.name.span())
            ));
        }
        registries.push(Registry {
            name,
            kind,
            address,
            username: expand(&r.username, "username"),
            password: Secret(expand(&r.password, "password")),
        });
    }
    let mut clusters = Vec::new();
    for c in &raw.cluster {
        let name = c.name.get_ref().clone();
        if c.in_cluster && c.kubeconfig.is_some() {
            registry_problems.push(format!(
                "{}: cluster '{name}' has both in_cluster = true and a kubeconfig; choose one",
                locate(c.name.span())
            ));
        }
        if raw
            .cluster
            .iter()
            .take_while(|q| !std::ptr::eq(*q, c))
            .any(|q| q.name.get_ref() == &name)
        {
            registry_problems.push(format!(
                "{}: cluster '{name}' is configured twice",
                locate(c.name.span())
            ));
        }
        clusters.push(Cluster {
            name,
            kubeconfig: c
                .kubeconfig
                .as_ref()
                .map(|k| PathBuf::from(expand(k, "kubeconfig"))),
            context: c.context.as_ref().map(|k| expand(k, "context")),
            in_cluster: c.in_cluster,
        });
    }

    let mut errors = errors.into_inner();
    errors.extend(registry_problems);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            let at = s
                .listen
                .as_ref()
                .map(|v| locate(v.span()))
                .unwrap_or_else(|| "GANTRY_LISTEN".into());
            errors.push(format!(
                "{at}: listen address '{listen_text}' is not HOST:PORT (e.g. 127.0.0.1:8080)"
            ));
            None
        }
    };
    let count = |value: &Option<Spanned<i64>>,
                 default: usize,
                 min: i64,
                 what: &str,
                 errors: &mut Vec<String>| {
        match value {
            None => default,
            Some(v) if *v.get_ref() >= min => *v.get_ref() as usize,
            Some(v) => {
                errors.push(format!(
                    "{}: {what} must be at least {min}, not {}",
                    locate(v.span()),
                    v.get_ref()
                ));
                default
            }
        }
    };
    let max_parallel_runs = count(&s.max_parallel_runs, 4, 1, "max_parallel_runs", &mut errors);
    let keep_workspaces = count(&s.keep_workspaces, 0, 0, "keep_workspaces", &mut errors);
    let stage_timeout = match &s.stage_timeout {
        None => DEFAULT_STAGE_TIMEOUT,
        Some(v) => match gantry_pipeline::parse_duration(v.get_ref()) {
            Ok(limit) if !limit.is_zero() => limit,
            Ok(_) => {
                errors.push(format!(
                    "{}: stage_timeout must be above zero (a stage may set a longer `timeout` of its own)",
                    locate(v.span())
                ));
                DEFAULT_STAGE_TIMEOUT
            }
            Err(why) => {
                errors.push(format!(
                    "{}: stage_timeout '{}': {why} (e.g. \"1h\", \"90m\")",
                    locate(v.span()),
                    v.get_ref()
                ));
                DEFAULT_STAGE_TIMEOUT
            }
        },
    };

    for (i, p) in raw.project.iter().enumerate() {
        let name = p.name.get_ref();
        if !name.contains('/') || name.starts_with('/') || name.ends_with('/') {
            errors.push(format!(
                "{}: project name '{name}' must be the repository's full name, OWNER/REPO",
                locate(p.name.span())
            ));
        }
        if raw.project[..i].iter().any(|q| q.name.get_ref() == name) {
            errors.push(format!(
                "{}: project '{name}' is configured twice",
                locate(p.name.span())
            ));
        }
        if p.clone_url.get_ref().trim().is_empty() {
            errors.push(format!(
                "{}: clone_url of project '{name}' is empty",
                locate(p.clone_url.span())
            ));
        }
        if p.webhook_secret.get_ref().is_empty() {
            errors.push(format!(
                "{}: webhook_secret of project '{name}' is empty",
                locate(p.webhook_secret.span())
            ));
        }
    }

    match listen {
        Some(listen) if errors.is_empty() => Ok(Config {
            server: ServerConfig {
                listen,
                data_dir: PathBuf::from(data_dir),
                database_url,
                max_parallel_runs,
                keep_workspaces,
                admin_token,
                stage_timeout,
            },
            projects,
            registries,
            clusters,
        }),
        _ => Err(Errors(errors)),
    }
}

/// Replaces `${NAME}` with the environment's value; `$${` is a literal `${`.
/// Returns the first unset name as the error.
pub fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${")
            && let Some(end) = after.find('}')
        {
            let name = &after[..end];
            out.push_str(&env(name).ok_or_else(|| name.to_string())?);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".into()),
            "TOKEN" => Some("tok".into()),
            _ => None,
        }
    }

    fn check_err(text: &str, expected: Expect) {
        match parse("gantry.toml", text, &env) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => expected.assert_eq(&e.to_string()),
        }
    }

    #[test]
    fn no_file_means_defaults() {
        let c = Config::empty(&|_| None).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.data_dir, PathBuf::from("gantry-data"));
        assert_eq!(c.server.max_parallel_runs, 4);
        assert!(c.projects.is_empty());
        assert!(c.server.admin_token.is_none());
        assert_eq!(c.server.stage_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn full_example() {
        let text = r#"
[server]
listen = "0.0.0.0:9000"
data_dir = "/var/lib/gantry"
max_parallel_runs = 8
keep_workspaces = 2
stage_timeout = "1h30m"

[[project]]
name = "demo/backend"
clone_url = "https://github.com/demo/backend.git"
webhook_secret = "${SECRET}"
git_token = "${TOKEN}"
ssh_key = "/etc/gantry/deploy_key"
known_hosts = "/etc/gantry/known_hosts"
pipeline = "ci/.gantry.yml"

[project.secrets]
PYPI_TOKEN = "pypi-${TOKEN}"
"#;
        let c = parse("gantry.toml", text, &env).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.server.max_parallel_runs, 8);
        assert_eq!(c.server.stage_timeout, Duration::from_secs(5400));
        let p = c.project("demo/backend").unwrap();
        assert_eq!(p.webhook_secret.expose(), "s3cr3t");
        assert_eq!(p.git_token.as_ref().map(Secret::expose), Some("tok"));
        assert_eq!(p.pipeline, "ci/.gantry.yml");
        assert_eq!(p.ssh_key, Some(PathBuf::from("/etc/gantry/deploy_key")));
        assert_eq!(
            p.known_hosts,
            Some(PathBuf::from("/etc/gantry/known_hosts"))
        );
        assert_eq!(
            p.secrets,
            vec![("PYPI_TOKEN".to_string(), Secret::new("pypi-tok"))]
        );
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "secrets never reach Debug output"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let over = |name: &str| match name {
            "GANTRY_LISTEN" => Some("127.0.0.1:1234".to_string()),
            "GANTRY_DATA_DIR" => Some("/tmp/x".to_string()),
            "GANTRY_ADMIN_TOKEN" => Some("admin".to_string()),
            _ => None,
        };
        let c = parse("gantry.toml", "[server]\nlisten = \"127.0.0.1:1\"\n", &over).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:1234");
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.server.admin_token, Some(Secret::new("admin")));
    }

    #[test]
    fn unknown_keys_are_located() {
        check_err(
            "[server]\nlisten = \"127.0.0.1:8080\"\nmax_paralel_runs = 3\n",
            expect![
                "gantry.toml:3:1: unknown field `max_paralel_runs`, expected one of `listen`, `data_dir`, `database_url`, `max_parallel_runs`, `keep_workspaces`, `admin_token`, `stage_timeout`"
            ],
        );
    }

    #[test]
    fn bad_values_and_unset_variables_are_all_reported() {
        check_err(
            r#"[server]
listen = "localhost"
max_parallel_runs = 0

[[project]]
name = "backend"
clone_url = "file:///srv/backend"
webhook_secret = "${MISSING}"
"#,
            expect![[r#"
                gantry.toml:8:18: webhook_secret refers to ${MISSING}, but the environment variable MISSING is not set
                gantry.toml:2:10: listen address 'localhost' is not HOST:PORT (e.g. 127.0.0.1:8080)
                gantry.toml:3:21: max_parallel_runs must be at least 1, not 0
                gantry.toml:6:8: project name 'backend' must be the repository's full name, OWNER/REPO"#]],
        );
    }

    #[test]
    fn project_secrets_are_located_too() {
        check_err(
            r#"[[project]]
name = "a/b"
clone_url = "file:///srv/b"
webhook_secret = "s"

[project.secrets]
PYPI_TOKEN = "${PYPI_UNSET}"
RETRIES = 3
"#,
            expect![[r#"
                gantry.toml:7:14: secret 'PYPI_TOKEN' of project 'a/b' refers to ${PYPI_UNSET}, but the environment variable PYPI_UNSET is not set
                gantry.toml:8:11: secret 'RETRIES' of project 'a/b' must be a string, found integer"#]],
        );
    }

    #[test]
    fn a_stage_timeout_needs_a_unit_and_must_be_above_zero() {
        check_err(
            "[server]\nstage_timeout = \"90\"\n",
            expect![[
                r#"gantry.toml:2:17: stage_timeout '90': a unit is needed (e.g. "1h", "90m")"#
            ]],
        );
        check_err(
            "[server]\nstage_timeout = \"0s\"\n",
            expect![
                "gantry.toml:2:17: stage_timeout must be above zero (a stage may set a longer `timeout` of its own)"
            ],
        );
        check_err(
            "[server]\nstage_timeout = 60\n",
            expect!["gantry.toml:2:17: invalid type: integer `60`, expected a string"],
        );
    }

    #[test]
    fn syntax_and_type_errors_are_located() {
        check_err(
            "[server\n",
            expect![[r#"gantry.toml:1:8: unclosed table, expected `]`"#]],
        );
        check_err(
            "[server]\nmax_parallel_runs = \"four\"\n",
            expect![[r#"gantry.toml:2:21: invalid type: string "four", expected i64"#]],
        );
        check_err(
            "[[project]]\nname = \"a/b\"\nclone_url = \"x\"\n",
            expect![[r#"gantry.toml:1:1: missing field `webhook_secret`"#]],
        );
    }

    #[test]
    fn registries_and_clusters() {
        let text = r#"
[[registry]]
name = "nexus"
kind = "nexus"
address = "127.0.0.1:5000"
username = "ci"
password = "${SECRET}"

[[registry]]
name = "ghcr"
kind = "ghcr"
username = "bot"
password = "${TOKEN}"

[[cluster]]
name = "prod"
kubeconfig = "/etc/gantry/kubeconfig"
context = "prod"

[[cluster]]
name = "here"
in_cluster = true
"#;
        let c = parse("gantry.toml", text, &env).unwrap();
        assert_eq!(c.registries[0].address, "127.0.0.1:5000");
        assert_eq!(c.registries[0].password.expose(), "s3cr3t");
        assert_eq!(
            (c.registries[1].kind, c.registries[1].address.as_str()),
            (RegistryKind::Ghcr, "ghcr.io")
        );
        assert_eq!(
            c.clusters[0].kubeconfig,
            Some(PathBuf::from("/etc/gantry/kubeconfig"))
        );
        assert!(c.clusters[1].in_cluster);
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_registries_and_clusters() {
        check_err(
            "[[registry]]\nname = \"x\"\nkind = \"quay\"\nusername = \"u\"\npassword = \"p\"\n[[cluster]]\nname = \"c\"\nin_cluster = true\nkubeconfig = \"/k\"\n",
            expect![[r#"
                gantry.toml:3:8: registry kind 'quay' is not one of nexus, ghcr, generic
                gantry.toml:2:8: registry 'x' has no address (host:port, e.g. nexus.example.com:8083)
                gantry.toml:7:8: cluster 'c' has both in_cluster = true and a kubeconfig; choose one"#]],
        );
    }

    #[test]
    fn duplicate_projects() {
        check_err(
            "[[project]]\nname = \"a/b\"\nclone_url = \"x\"\nwebhook_secret = \"s\"\n[[project]]\nname = \"a/b\"\nclone_url = \"y\"\nwebhook_secret = \"s\"\n",
            expect![[r#"gantry.toml:6:8: project 'a/b' is configured twice"#]],
        );
    }

    #[test]
    fn expansion() {
        assert_eq!(
            expand_env("a${TOKEN}b$${TOKEN}$x", &env),
            Ok("atokb${TOKEN}$x".to_string())
        );
        assert_eq!(expand_env("${NOPE}", &env), Err("NOPE".to_string()));
    }
}
