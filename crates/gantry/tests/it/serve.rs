//! `gantry serve` as a process: the CLI against it, and a `kill -9` in the
//! middle of a run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_testkit::FixtureRepo;
use gantry_testkit::webhook::{Push, sign};
use serde_json::Value;

use crate::support::{Run, docker_available, docker_objects, gantry_bin};

const TOKEN: &str = "serve-test-token";
const SECRET: &str = "serve-test-secret";

pub(crate) struct Served {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    /// `DOCKER_HOST` for the server, when not the machine's engine.
    docker_host: Option<String>,
}

impl Served {
    fn start(dir: &Path, clone_url: &str) -> Served {
        Served::start_with(dir, clone_url, "")
    }

    /// With `extra` appended to gantry.toml (`[[cluster]]`, `[[registry]]`).
    pub(crate) fn start_with(dir: &Path, clone_url: &str, extra: &str) -> Served {
        Served::launch(dir, clone_url, extra, None)
    }

    /// With its Docker engine at `docker_host`.
    fn start_on_engine(dir: &Path, clone_url: &str, docker_host: &str) -> Served {
        Served::launch(dir, clone_url, "", Some(docker_host.to_owned()))
    }

    fn launch(dir: &Path, clone_url: &str, extra: &str, docker_host: Option<String>) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let data = dir.join("data");
        let config = dir.join("gantry.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[[project]]\nname = \"demo/app\"\nclone_url = \"{clone_url}\"\nwebhook_secret = \"{SECRET}\"\n{extra}",
                data.display()
            ),
        )
        .expect("config");
        let mut served = Served {
            child: None,
            port,
            config,
            docker_host,
        };
        served.spawn();
        served
    }

    fn spawn(&mut self) {
        let mut command = Command::new(gantry_bin());
        if let Some(host) = &self.docker_host {
            command.env("DOCKER_HOST", host);
        }
        let child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("GANTRY_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gantry serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "gantry serve did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// The server's `/metrics` page.
    pub(crate) fn metrics(&self) -> String {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        agent
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    pub(crate) fn cli(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(gantry_bin())
                .args(args)
                .env("GANTRY_SERVER", format!("http://127.0.0.1:{}", self.port))
                .env("GANTRY_TOKEN", TOKEN)
                .env("NO_COLOR", "1")
                .output()
                .expect("run the CLI"),
        )
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let r = self.cli(&with_json);
        assert_eq!(r.code, Some(0), "{}", r.debug());
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.debug()))
    }

    pub(crate) fn push(&self, guid: &str, sha: &str, clone_url: &str) -> u16 {
        let body = Push {
            repository: "demo/app",
            clone_url,
            git_ref: "refs/heads/main",
            before: &"0".repeat(40),
            after: sha,
            message: "m",
            deleted: false,
        }
        .to_json()
        .to_string();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        agent
            .post(format!("http://127.0.0.1:{}/hooks/github", self.port))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", guid)
            .header("X-Hub-Signature-256", sign(SECRET, body.as_bytes()))
            .send(body.as_bytes())
            .expect("webhook")
            .status()
            .as_u16()
    }

    pub(crate) fn wait(&self, id: &str, what: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let run = self.json(&["show", id]);
            if what(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never got there: {run:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("success" | "failure" | "cancelled" | "error")
    )
}

#[test]
fn cli_triggers_follows_cancels_and_reruns() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let repo = FixtureRepo::new();
    repo.write(".gantry.yml", "stages:\n  - { name: hello, image: local/busybox, commands: [\"echo hello from $GANTRY_EVENT\"] }\n");
    repo.commit("first");
    let served = Served::start(dir.path(), &repo.file_url());

    let r = served.cli(&["trigger", "demo/app", "--branch", "main", "--follow"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(r.stdout.contains("hello from manual"), "{}", r.debug());
    let r = served.cli(&["runs"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(
        r.stdout.contains("demo/app") && r.stdout.contains("success"),
        "{}",
        r.debug()
    );

    // A long run, cancelled from the CLI, then re-run.
    repo.write(".gantry.yml", "stages:\n  - { name: long, image: local/busybox, commands: [\"echo started\", \"sleep 300\"] }\n");
    repo.commit("long");
    let run = served.json(&["trigger", "demo/app", "--branch", "main"]);
    let id = run["id"].to_string();
    served.wait(&id, |r| r["stages"][0]["status"] == "running");
    let r = served.cli(&["cancel", &id]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    let run = served.wait(&id, finished);
    assert_eq!(run["status"], "cancelled");
    let r = served.cli(&["rerun", &id]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert!(
        r.stdout.contains(&format!("rerun of run {id}")),
        "{}",
        r.debug()
    );
    let r = served.cli(&["show", "999"]);
    assert_eq!(r.code, Some(3), "not found: {}", r.debug());
    let newest = served.json(&["runs", "--limit", "1"]);
    let rerun_id = newest["runs"][0]["id"].to_string();
    served.wait(&rerun_id, |r| r["stages"][0]["status"] == "running");
    served.cli(&["cancel", &rerun_id]);
    served.wait(&rerun_id, finished);
}

/// `gantry logs` prints a log longer than one answer of the API, whole and in order, once and
/// when following.
#[test]
fn logs_longer_than_one_answer_are_printed_whole() {
    const LINES: usize = 120_000;
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let repo = FixtureRepo::new();
    repo.write(
        ".gantry.yml",
        format!(
            "stages:\n  - {{ name: long, image: local/busybox, commands: [\"seq 1 {LINES}\"] }}\n"
        ),
    );
    repo.commit("a long log");
    let served = Served::start(dir.path(), &repo.file_url());
    let followed = served.cli(&["trigger", "demo/app", "--branch", "main", "--follow"]);
    assert_eq!(followed.code, Some(0), "{}", followed.debug());
    let id = served.json(&["runs", "--limit", "1"])["runs"][0]["id"].to_string();
    let once = served.cli(&["logs", &id]);
    assert_eq!(once.code, Some(0), "{}", once.debug());
    for printed in [&followed.stdout, &once.stdout] {
        let numbers: Vec<&str> = printed
            .lines()
            .filter_map(|l| l.strip_prefix("long | "))
            .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert_eq!(
            numbers.len(),
            LINES,
            "{}",
            &printed[printed.len().saturating_sub(500)..]
        );
        assert_eq!(numbers.first(), Some(&"1"));
        assert_eq!(numbers.last().copied(), Some(LINES.to_string().as_str()));
    }
}

/// A restart (here the harshest, `kill -9`) logs no browser out; a logout outlives it too.
#[test]
fn browser_sessions_outlive_a_restart_and_so_do_logouts() {
    let dir = tempfile::tempdir().expect("dir");
    let repo = FixtureRepo::new();
    let mut served = Served::start(dir.path(), &repo.file_url());
    let base = format!("http://127.0.0.1:{}", served.port);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut login = agent
        .post(format!("{base}/auth/login"))
        .send_json(serde_json::json!({ "token": TOKEN }))
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let csrf = login.body_mut().read_json::<Value>().expect("json")["csrf_token"]
        .as_str()
        .expect("a CSRF token")
        .to_owned();
    let session = || {
        let mut answer = agent
            .get(format!("{base}/auth/session"))
            .header("Cookie", &cookie)
            .call()
            .expect("session");
        let status = answer.status().as_u16();
        let body: Value = answer.body_mut().read_json().unwrap_or_default();
        (status, body["csrf_token"].as_str().map(str::to_owned))
    };
    assert_eq!(session(), (200, Some(csrf.clone())));

    served.kill9();
    served.spawn();
    assert_eq!(session(), (200, Some(csrf.clone())), "still logged in");
    let runs = agent
        .get(format!("{base}/api/v1/runs"))
        .header("Cookie", &cookie)
        .call()
        .expect("runs");
    assert_eq!(runs.status().as_u16(), 200);

    let logout = agent
        .post(format!("{base}/auth/logout"))
        .header("Cookie", &cookie)
        .header("Origin", &base)
        .header("X-CSRF-Token", &csrf)
        .send_empty()
        .expect("logout");
    assert_eq!(logout.status().as_u16(), 204);
    assert_eq!(session().0, 401);
    served.kill9();
    served.spawn();
    assert_eq!(session().0, 401, "still logged out");
}

#[test]
fn kill_9_during_a_run_loses_nothing_and_leaves_no_container() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let repo = FixtureRepo::new();
    repo.write(".gantry.yml", "on: { push: { branches: [main] } }\nstages:\n  - { name: long, image: local/busybox, commands: [\"echo started\", \"sleep 300\"] }\n");
    let long = repo.commit("long");
    let mut served = Served::start(dir.path(), &repo.file_url());

    assert_eq!(served.push("before-crash", &long, &repo.file_url()), 202);
    let interrupted = served.wait_delivery_run("before-crash");
    served.wait(&interrupted, |r| r["stages"][0]["status"] == "running");
    // The stage's container is up; a few more deliveries arrive, then the server dies.
    repo.write(".gantry.yml", "on: { push: { branches: [main] } }\nstages:\n  - { name: quick, image: local/busybox, commands: [\"echo quick\"] }\n");
    let quick = repo.commit("quick");
    for i in 0..3 {
        assert_eq!(
            served.push(&format!("racing-{i}"), &quick, &repo.file_url()),
            202
        );
    }
    served.kill9();
    assert!(
        !docker_objects("container", "label=gantry.owner").is_empty(),
        "the stage's container outlived the server"
    );
    // As a crash between packing a working tree and unpacking it would leave it.
    let stale = dir
        .path()
        .join("data/workspaces/gantry-workspace-crashed.tar");
    std::fs::write(&stale, b"half an archive").expect("a stale archive");

    served.spawn();
    let run = served.wait(&interrupted, finished);
    assert_eq!(run["status"], "error", "{run:#}");
    assert_eq!(run["reason"], "interrupted by server restart");
    assert_eq!(run["stages"][0]["status"], "cancelled");
    assert!(!stale.exists(), "the restart removes archives a crash left");
    for i in 0..3 {
        let id = served.wait_delivery_run(&format!("racing-{i}"));
        let run = served.wait(&id, finished);
        // Accepted before the crash, each ends as a finished run: it ran after the
        // restart, or it was already running and was marked as interrupted.
        let ok = run["status"] == "success"
            || (run["status"] == "error" && run["reason"] == "interrupted by server restart");
        assert!(ok, "delivery racing-{i}: {run:#}");
    }
    // Nothing of the interrupted run is left in Docker: its containers carry
    // `gantry.run = <owner>-<run id>`.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                "label=gantry.run",
                "--format",
                "{{.Label \"gantry.run\"}}",
            ])
            .output()
            .expect("docker");
        let suffix = format!("-{interrupted}");
        let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|run| run.starts_with("server-") && run.ends_with(&suffix))
            .map(String::from)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "containers left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Served {
    pub(crate) fn wait_delivery_run(&self, guid: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.json(&["deliveries"]);
            if let Some(d) = list["deliveries"]
                .as_array()
                .and_then(|a| a.iter().find(|d| d["guid"] == guid))
                && !d["run_id"].is_null()
            {
                return d["run_id"].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "delivery {guid} made no run: {list:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The README's main command: `gantry serve` with no configuration at all starts on SQLite in
/// `./gantry-data`, writes a fresh admin token there (mode 0600) and says where; a bad
/// `./gantry.toml` stops it before it listens, with the file and line.
#[test]
fn serve_without_configuration_and_with_a_bad_one() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = Command::new(gantry_bin())
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("GANTRY_ADMIN_TOKEN")
        .env_remove("GANTRY_DATA_DIR")
        .env_remove("GANTRY_DATABASE_URL")
        .env("GANTRY_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gantry serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut said = String::new();
    while !said.contains("admin token: ") {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("stderr") == 0 {
            break;
        }
        said.push_str(&line);
    }
    let token_file = dir.path().join("gantry-data/admin-token");
    let token = std::fs::read_to_string(&token_file).unwrap_or_default();
    let mode = std::fs::metadata(&token_file).map(|m| m.permissions().mode() & 0o777);
    let health = ureq::get(format!("http://127.0.0.1:{port}/healthz")).call();
    let runs = ureq::get(format!("http://127.0.0.1:{port}/api/v1/runs"))
        .header("Authorization", format!("Bearer {}", token.trim()))
        .call();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let ended = child.wait().expect("wait");
    assert!(
        said.contains(&format!("gantry listening on http://127.0.0.1:{port}")),
        "{said}"
    );
    assert!(
        said.contains("admin token: gantry-data/admin-token"),
        "{said}"
    );
    assert!(token.trim().len() >= 32, "a generated token: {token:?}");
    assert_eq!(mode.ok(), Some(0o600));
    assert!(dir.path().join("gantry-data/gantry.db").exists());
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    assert_eq!(runs.map(|r| r.status().as_u16()).ok(), Some(200));
    assert!(ended.success(), "a clean stop on SIGTERM: {ended:?}");

    std::fs::write(
        dir.path().join("gantry.toml"),
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_parallel_runs = 0\n",
    )
    .expect("config");
    let refused = Command::new(gantry_bin())
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("GANTRY_LISTEN")
        .output()
        .expect("gantry serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gantry.toml:3:21: max_parallel_runs must be at least 1, not 0")
            && stderr.contains("the server did not start"),
        "{stderr}"
    );
}

/// Without a Docker engine the server still starts, is not ready (`/readyz` 503, naming the
/// engine), and a run ends in `error` saying where it looked.
#[test]
fn without_docker_the_server_is_not_ready_and_runs_say_why() {
    let dir = tempfile::tempdir().expect("dir");
    let repo = FixtureRepo::new();
    repo.write(
        ".gantry.yml",
        "stages:\n  - { name: a, image: local/busybox, commands: [true] }\n",
    );
    repo.commit("first");
    let host = "unix:///nonexistent/docker.sock";
    let served = Served::start_on_engine(dir.path(), &repo.file_url(), host);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut ready = agent
        .get(format!("http://127.0.0.1:{}/readyz", served.port))
        .call()
        .expect("readyz");
    let status = ready.status().as_u16();
    let body: Value =
        serde_json::from_str(&ready.body_mut().read_to_string().expect("body")).expect("JSON");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (body["ready"].as_bool(), body["database"].as_str()),
        (Some(false), Some("ok"))
    );
    assert!(
        body["docker"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("cannot reach Docker at {host}")),
        "{body}"
    );

    let run = served.json(&["trigger", "demo/app", "--branch", "main"]);
    let run = served.wait(&run["id"].to_string(), finished);
    assert_eq!(run["status"], "error", "{run:#}");
    assert!(
        run["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("cannot reach Docker at {host}")),
        "{run:#}"
    );
}
