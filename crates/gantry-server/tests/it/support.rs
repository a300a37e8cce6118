//! A server on a loopback port with its own data directory.

use std::time::{Duration, Instant};

use gantry_config::{Config, Project, Secret, ServerConfig};
use gantry_testkit::FixtureRepo;
use gantry_testkit::webhook::{Push, sign};
use serde_json::Value;

pub const TOKEN: &str = "test-admin-token";
pub const WEBHOOK_SECRET: &str = "webhook-secret-value";
pub const ZERO: &str = "0000000000000000000000000000000000000000";

pub struct TestServer {
    pub base: String,
    pub data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    agent: ureq::Agent,
}

pub fn project(name: &str, clone_url: &str) -> Project {
    Project {
        name: name.into(),
        clone_url: clone_url.into(),
        webhook_secret: Secret::new(WEBHOOK_SECRET),
        git_token: None,
        ssh_key: None,
        known_hosts: None,
        pipeline: ".gantry.yml".into(),
        secrets: vec![("API_TOKEN".into(), Secret::new("server-side-secret-value"))],
    }
}

impl TestServer {
    pub fn start(projects: Vec<Project>) -> TestServer {
        Self::start_with(projects, 4)
    }

    pub fn start_with(projects: Vec<Project>, max_parallel_runs: usize) -> TestServer {
        Self::start_configured(projects, max_parallel_runs, |_| {})
    }

    /// With `configure` changing the configuration first (clusters, registries).
    pub fn start_configured(
        projects: Vec<Project>,
        max_parallel_runs: usize,
        configure: impl FnOnce(&mut Config),
    ) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            server: ServerConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                data_dir: data.path().to_path_buf(),
                database_url: None,
                max_parallel_runs,
                keep_workspaces: 0,
                admin_token: Some(Secret::new(TOKEN)),
                stage_timeout: gantry_config::DEFAULT_STAGE_TIMEOUT,
            },
            projects,
            registries: Vec::new(),
            clusters: Vec::new(),
        };
        configure(&mut config);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let server = gantry_server::Server::start(config)
                    .await
                    .expect("server starts");
                addr_tx.send(server.addr).expect("send addr");
                server
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server address");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        TestServer {
            base: format!("http://{addr}"),
            data,
            stop: Some(stop),
            thread: Some(thread),
            agent,
        }
    }

    pub fn post_hook(
        &self,
        event: &str,
        guid: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .agent
            .post(format!("{}/hooks/github", self.base))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", guid)
            .header("Content-Type", "application/json")
            .header("User-Agent", "GitHub-Hookshot/test");
        if let Some(sig) = signature {
            req = req.header("X-Hub-Signature-256", sig);
        }
        let mut resp = req.send(body).expect("request");
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// A push signed with the right secret.
    pub fn push(
        &self,
        guid: &str,
        repo: &str,
        clone_url: &str,
        git_ref: &str,
        after: &str,
    ) -> (u16, Value) {
        let body = Push {
            repository: repo,
            clone_url,
            git_ref,
            before: ZERO,
            after,
            message: "a change\n\nwith a body",
            deleted: false,
        }
        .to_json()
        .to_string();
        self.post_hook(
            "push",
            guid,
            body.as_bytes(),
            Some(&sign(WEBHOOK_SECRET, body.as_bytes())),
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, Some(TOKEN))
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(body), Some(TOKEN))
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some(b) => r.send_json(b),
                    None => r.send_empty(),
                }
            }
        }
        .expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn text(&self, path: &str) -> (u16, String, Option<String>) {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .expect("request");
        let last = resp
            .headers()
            .get("x-gantry-last-seq")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
            last,
        )
    }

    pub fn runs(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/v1/runs");
        assert_eq!(status, 200, "{body}");
        body["runs"].as_array().cloned().unwrap_or_default()
    }

    pub fn deliveries(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/v1/deliveries");
        assert_eq!(status, 200, "{body}");
        body["deliveries"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `check` holds for the run, or panics after `secs`.
    pub fn wait_run(&self, id: i64, secs: u64, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (_, run) = self.get(&format!("/api/v1/runs/{id}"));
            if check(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never got there: {run:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_finished(&self, id: i64) -> Value {
        self.wait_run(id, 120, |r| {
            matches!(
                r["status"].as_str(),
                Some("success" | "failure" | "cancelled" | "error")
            )
        })
    }

    /// Waits until the delivery has an outcome.
    pub fn wait_delivery(&self, guid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(d) = self
                .deliveries()
                .into_iter()
                .find(|d| d["guid"] == guid && !d["outcome"].is_null())
            {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {guid} never decided: {:#?}",
                self.deliveries()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A repository with a one-stage busybox pipeline on `main`.
pub fn repo_with(pipeline: &str) -> (FixtureRepo, String) {
    let repo = FixtureRepo::new();
    repo.write(".gantry.yml", pipeline)
        .write("README.md", "hello\n");
    let sha = repo.commit("first");
    (repo, sha)
}

pub const ECHO_PIPELINE: &str = "on: { push: { branches: [main] } }\nstages:\n  - { name: hello, image: local/busybox, commands: [\"echo ok from $GANTRY_BRANCH\"] }\n";

pub use gantry_testkit::docker_available;
