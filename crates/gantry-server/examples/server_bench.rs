//! `cargo xtask bench server`: the server against the floor, the same work
//! done by hand with git and the docker CLI. Prints figures and ratios; it is
//! not a test and asserts nothing about time.
//!
//! (a) one webhook → run finished, one busybox stage, vs `git clone` + `docker run --rm`;
//! (b) 40 webhooks for 40 commits at once, max_parallel_runs = 8, vs the floor 8 at a time;
//! (c) webhook ingestion for a branch that builds nothing, 16 concurrent senders;
//! (d) the server's resident memory idle and right after (b).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_testkit::FixtureRepo;
use gantry_testkit::webhook::{Push, sign};
use serde_json::Value;

const SECRET: &str = "bench-secret";
const TOKEN: &str = "bench-token";
const PIPELINE: &str = "on: { push: { branches: [main] } }\nstages:\n  - { name: hello, image: local/busybox, commands: [\"echo ok\"] }\n";

fn main() {
    let bin = std::env::var("GANTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/gantry"));
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p gantry` (or set GANTRY_BIN)",
        bin.display()
    );
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(9);
    // Which parts to run, e.g. `c` for the ingestion figure alone; all by default.
    let parts = std::env::args().nth(2).unwrap_or_else(|| "abc".to_owned());

    let repo = FixtureRepo::new();
    repo.write(".gantry.yml", PIPELINE);
    repo.commit("pipeline");
    let work = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&bin, work.path(), &repo.file_url());
    let idle_rss = server.rss_kib();

    // (a) one run at a time.
    if parts.contains('a') {
        part_a(&server, &repo, work.path(), iterations);
    }
    let mut after_rss = 0;
    if parts.contains('b') {
        after_rss = part_b(&server, &repo, work.path(), iterations);
    }
    if parts.contains('c') {
        part_c(&server, &repo);
    }
    println!(
        "(d) resident memory: idle {:.1} MB (target <= 20 MB), right after (b) {:.1} MB (target <= 64 MB)",
        idle_rss as f64 / 1024.0,
        after_rss as f64 / 1024.0
    );
}

fn part_a(server: &Server, repo: &FixtureRepo, work: &Path, iterations: usize) {
    let mut gantry_a = Vec::new();
    let mut floor_a = Vec::new();
    for i in 0..iterations + 1 {
        repo.write("n.txt", i.to_string());
        let sha = repo.commit(&format!("commit {i}"));
        let started = Instant::now();
        let run = server.push(&format!("a-{i}"), "refs/heads/main", &sha);
        server.wait_finished(&[run]);
        let took = started.elapsed();
        let floor = floor_once(&repo.file_url(), work, &format!("a-{i}"));
        if i > 0 {
            // The first of each is a warm-up (mirror creation, page cache).
            gantry_a.push(took);
            floor_a.push(floor);
        }
    }
    report(
        "(a) webhook -> run finished, one stage",
        &gantry_a,
        &floor_a,
        1.1,
    );
}

/// Returns the server's resident memory right after the bursts, in KiB.
fn part_b(server: &Server, repo: &FixtureRepo, work: &Path, iterations: usize) -> u64 {
    // (b) 40 commits at once, a few rounds: one round is too noisy to compare.
    let rounds = iterations.clamp(1, 3);
    let mut gantry_b = Vec::new();
    let mut floor_b = Vec::new();
    let mut after_rss = 0;
    for round in 0..rounds {
        let mut shas = Vec::new();
        for i in 0..40 {
            repo.write("n.txt", format!("b{round}-{i}"));
            shas.push(repo.commit(&format!("burst {round} {i}")));
        }
        let started = Instant::now();
        let runs: Vec<i64> = std::thread::scope(|s| {
            let handles: Vec<_> = shas
                .iter()
                .enumerate()
                .map(|(i, sha)| {
                    let server = &server;
                    s.spawn(move || server.push(&format!("b-{round}-{i}"), "refs/heads/main", sha))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sender"))
                .collect()
        });
        server.wait_finished(&runs);
        gantry_b.push(started.elapsed());
        after_rss = after_rss.max(server.rss_kib());
        let started = Instant::now();
        let next = Arc::new(Mutex::new(0usize));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let next = next.clone();
                let url = repo.file_url();
                s.spawn(move || {
                    loop {
                        let i = {
                            let mut n = next.lock().expect("lock");
                            *n += 1;
                            *n
                        };
                        if i > 40 {
                            break;
                        }
                        floor_once(&url, work, &format!("b-{round}-{i}"));
                    }
                });
            }
        });
        floor_b.push(started.elapsed());
    }
    report(
        "(b) 40 webhooks at once, 8 in parallel",
        &gantry_b,
        &floor_b,
        1.2,
    );

    after_rss
}

fn part_c(server: &Server, repo: &FixtureRepo) {
    // (c) ingestion of pushes to a branch that builds nothing.
    repo.branch("nobuild");
    let sha = repo.rev_parse("HEAD");
    let per_sender = 250;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..16 {
            let latencies = latencies.clone();
            let server = &server;
            let sha = sha.clone();
            s.spawn(move || {
                let agent = agent();
                let mut mine = Vec::with_capacity(per_sender);
                for i in 0..per_sender {
                    let t0 = Instant::now();
                    let status = server
                        .push_with(&agent, &format!("c-{t}-{i}"), "refs/heads/nobuild", &sha)
                        .0;
                    mine.push(t0.elapsed());
                    assert_eq!(status, 202);
                }
                latencies.lock().expect("lock").extend(mine);
            });
        }
    });
    let elapsed = started.elapsed();
    let mut latencies = latencies.lock().expect("lock").clone();
    latencies.sort();
    let n = latencies.len();
    let rate = n as f64 / elapsed.as_secs_f64();
    let p50 = latencies[n / 2];
    let p99 = latencies[(n * 99 / 100).min(n - 1)];
    println!(
        "(c) ingestion, 16 concurrent senders: {n} deliveries in {:.2}s = {rate:.0}/s (target >= 2000/s); latency p50 {:.1} ms, p99 {:.1} ms (target <= 20 ms)",
        elapsed.as_secs_f64(),
        ms(p50),
        ms(p99)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn report(what: &str, gantry: &[Duration], floor: &[Duration], target: f64) {
    let (g, f) = (median(gantry), median(floor));
    println!(
        "{what}: gantry median {:.0} ms, floor median {:.0} ms, ratio {:.2}x (target <= {target:.2}x), {} samples",
        ms(g),
        ms(f),
        g.as_secs_f64() / f.as_secs_f64(),
        gantry.len()
    );
}

/// The same work by hand: a shallow clone and the stage's container.
fn floor_once(url: &str, work: &Path, name: &str) -> Duration {
    let dir = work.join(format!("floor-{name}"));
    let started = Instant::now();
    let ok = Command::new("git")
        .args(["clone", "--quiet", "--depth", "1", url])
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "git clone failed");
    let ok = Command::new("docker")
        .args(["run", "--rm", "local/busybox", "sh", "-c", "echo ok"])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "docker run failed");
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    took
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

struct Server {
    child: Child,
    base: String,
    clone_url: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(bin: &Path, work: &Path, clone_url: &str) -> Server {
        let port = gantry_testkit::free_port();
        let config = work.join("gantry.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nmax_parallel_runs = 8\n\n[[project]]\nname = \"bench/app\"\nclone_url = \"{clone_url}\"\nwebhook_secret = \"{SECRET}\"\n",
                work.join("data").display()
            ),
        )
        .expect("write config");
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("GANTRY_ADMIN_TOKEN", TOKEN)
            .env("GANTRY_LOG", "error")
            .stderr(Stdio::null())
            .spawn()
            .expect("start gantry serve");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            clone_url: clone_url.to_string(),
            agent: agent(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .agent
            .get(format!("{}/healthz", server.base))
            .call()
            .is_err()
        {
            assert!(Instant::now() < deadline, "gantry serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        server
    }

    fn push(&self, guid: &str, git_ref: &str, sha: &str) -> i64 {
        let (status, body) = self.push_with(&self.agent, guid, git_ref, sha);
        assert_eq!(status, 202, "{body}");
        let delivery = body["delivery"].as_i64().expect("delivery id");
        // The run id appears on the delivery once the dispatcher has decided.
        loop {
            let mut resp = self
                .agent
                .get(format!("{}/api/v1/deliveries?limit=1000", self.base))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .call()
                .expect("deliveries");
            let list: Value = resp.body_mut().read_json().expect("json");
            if let Some(d) = list["deliveries"]
                .as_array()
                .and_then(|a| a.iter().find(|d| d["id"] == delivery))
                && let Some(run) = d["run_id"].as_i64()
            {
                return run;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn push_with(&self, agent: &ureq::Agent, guid: &str, git_ref: &str, sha: &str) -> (u16, Value) {
        let body = Push {
            repository: "bench/app",
            clone_url: &self.clone_url,
            git_ref,
            before: "0000000000000000000000000000000000000000",
            after: sha,
            message: "bench",
            deleted: false,
        }
        .to_json()
        .to_string();
        let mut resp = agent
            .post(format!("{}/hooks/github", self.base))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", guid)
            .header("X-Hub-Signature-256", sign(SECRET, body.as_bytes()))
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .expect("webhook");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json().unwrap_or(Value::Null))
    }

    fn wait_finished(&self, runs: &[i64]) {
        for id in runs {
            loop {
                let mut resp = self
                    .agent
                    .get(format!("{}/api/v1/runs/{id}", self.base))
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .call()
                    .expect("run");
                let run: Value = resp.body_mut().read_json().expect("json");
                match run["status"].as_str() {
                    Some("success") => break,
                    Some("failure" | "error" | "cancelled") => {
                        panic!("run {id} did not succeed: {run}")
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
