//! `cargo xtask bench web`: figures for the web UI and live logs, printed, not asserted.
//!
//! - a 1,000,000-line stage log in headless Chromium: time to the first screen painted (from the
//!   start of navigation), to the last line painted after "End", and frame times while scrolling;
//! - the delay from a line printed in a container to it appearing in the page (median, p99);
//! - a stage printing 200 MB with 0 and with 10 live SSE viewers: its wall time, the ratio, and
//!   the server's resident memory (this process: the viewers only read and discard).
//!
//! Needs Docker with `local/busybox` and `local/python:3.11`, and Chromium with chromedriver.
//! An argument `log`, `latency` or `viewers` runs only that part.

use std::io::Read;
use std::time::{Duration, Instant};

use gantry_config::{Config, Project, Secret, ServerConfig};
use gantry_testkit::FixtureRepo;
use gantry_testkit::webdriver::Browser;
use serde_json::{Value, json};

#[path = "../tests/common/huge_log.rs"]
mod huge_log;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const TOKEN: &str = "bench-admin-token";
const HUGE_LINES: i64 = 1_000_000;
const REPEATS: usize = 5;
const TICKS: usize = 300;
const VIEWERS: usize = 10;
/// Runs of the 200 MB stage with and without viewers, alternating, to share the noise.
const ROUNDS: usize = 3;

const PIPELINE: &str = "stages:
  - name: ticks
    image: local/python:3.11
    commands: [ \"python3 -u ticks.py\" ]
";

const TICKS_SCRIPT: &str = r#"import time
time.sleep(6)
for i in range(1, 301):
    print("tick %d %.4f" % (i, time.time()), flush=True)
    time.sleep(0.02)
"#;

/// 2,000,000 lines of 100 characters and a newline: 202 MB.
const FLOOD: &str = "stages:
  - name: flood
    image: local/busybox
    commands: [ \"yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 | head -n 2000000\" ]
";

struct Server {
    base: String,
    data: tempfile::TempDir,
    agent: ureq::Agent,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(project: Project) -> Result<Server> {
        let data = tempfile::tempdir()?;
        let config = Config {
            server: ServerConfig {
                listen: "127.0.0.1:0".parse()?,
                data_dir: data.path().to_path_buf(),
                database_url: None,
                max_parallel_runs: 4,
                keep_workspaces: 0,
                admin_token: Some(Secret::new(TOKEN)),
                stage_timeout: gantry_config::DEFAULT_STAGE_TIMEOUT,
            },
            projects: vec![project],
            registries: Vec::new(),
            clusters: Vec::new(),
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return;
            };
            runtime.block_on(async move {
                let server = match gantry_server::Server::start(config).await {
                    Ok(server) => server,
                    Err(e) => {
                        eprintln!("error: the server did not start: {e}");
                        return;
                    }
                };
                let _ = addr_tx.send(server.addr);
                let _ = server
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Server {
            base: format!("http://{addr}"),
            data,
            agent,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()?
            .body_mut()
            .read_json()?)
    }

    fn trigger(&self) -> Result<i64> {
        let run: Value = self
            .agent
            .post(format!("{}/api/v1/runs", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send_json(json!({"project": "bench/app", "branch": "main"}))?
            .body_mut()
            .read_json()?;
        run["id"]
            .as_i64()
            .ok_or_else(|| format!("no run: {run}").into())
    }

    fn wait_finished(&self, id: i64) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}"))?;
            if matches!(
                run["status"].as_str(),
                Some("success" | "failure" | "cancelled" | "error")
            ) {
                return Ok(run);
            }
            if Instant::now() > deadline {
                return Err(format!("run {id} did not finish: {run}").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn main() -> Result<()> {
    let repo = FixtureRepo::new();
    repo.write(".gantry.yml", PIPELINE)
        .write("ticks.py", TICKS_SCRIPT);
    repo.commit("bench");
    let project = Project {
        name: "bench/app".into(),
        clone_url: repo.file_url(),
        webhook_secret: Secret::new("unused"),
        git_token: None,
        ssh_key: None,
        known_hosts: None,
        pipeline: ".gantry.yml".into(),
        secrets: Vec::new(),
    };
    let only = std::env::args().nth(1).unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    let server = Server::start(project)?;
    println!(
        "web benchmark: Chromium headless, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if part("log") || part("latency") {
        let Some(browser) = Browser::start() else {
            return Err("the web benchmark needs chromium and chromium-driver".into());
        };
        browser.goto(&format!("{}/login", server.base));
        browser.wait_for(
            "the login form",
            "return document.querySelector('#token')",
            Duration::from_secs(30),
        );
        browser.type_into("#token", TOKEN);
        browser.click("form.login button[type=submit]");
        browser.wait_for(
            "the runs page",
            "return document.querySelector('table.runs')",
            Duration::from_secs(30),
        );
        if part("log") {
            huge_log(&server, &browser)?;
        }
        if part("latency") {
            latency(&server, &browser)?;
        }
    }
    if part("viewers") {
        viewers(&server, &repo)?;
    }
    Ok(())
}

fn huge_log(server: &Server, browser: &Browser) -> Result<()> {
    eprintln!("==> writing a {HUGE_LINES}-line log");
    let id = fill_huge_run(server)?;
    let mut first = Vec::new();
    let mut end = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..REPEATS {
        browser.goto(&format!("{}/runs/{id}", server.base));
        let painted = browser.wait_for(
            "the first screen",
            "const m = performance.getEntriesByName('gantry-log-first-screen')[0]; return m && m.startTime",
            Duration::from_secs(30),
        );
        first.push(painted.as_f64().unwrap_or_default());
        let took = browser.execute(
            &format!(
                "const t0 = performance.now();
                 document.querySelector('[data-action=end]').click();
                 return new Promise(resolve => {{
                   const check = () => {{
                     const a = [...document.querySelectorAll('.log-row:not([hidden]) .ln')].find(a => a.textContent === '{HUGE_LINES}');
                     if (a && a.parentElement.querySelector('.tx').textContent) requestAnimationFrame(() => resolve(performance.now() - t0));
                     else requestAnimationFrame(check);
                   }};
                   check();
                 }});"
            ),
            vec![],
        );
        end.push(took.as_f64().unwrap_or_default());
        // Scroll up through the log, 300 px a frame, timing the frames.
        let times = browser.execute(
            "const s = document.querySelector('.log-scroll');
             s.scrollTop = s.scrollHeight / 2;
             return new Promise(resolve => {
               const times = []; let last = performance.now(); let n = 0;
               const step = () => {
                 const now = performance.now(); times.push(now - last); last = now;
                 s.scrollTop -= 300;
                 if (++n < 120) requestAnimationFrame(step); else resolve(times.slice(1));
               };
               requestAnimationFrame(step);
             });",
            vec![],
        );
        frames.extend(
            times
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64),
        );
    }
    println!("{HUGE_LINES}-line log:");
    println!("  first screen painted   {}", summary(&first));
    println!("  'End' to last line     {}", summary(&end));
    println!("  scrolling frame time   {}", summary(&frames));
    Ok(())
}

fn fill_huge_run(server: &Server) -> Result<i64> {
    huge_log::fill_huge_run(
        &server.data.path().join("gantry.db"),
        "bench/app",
        HUGE_LINES,
        |seq| {
            if seq % 10 == 0 {
                format!(
                    "\x1b[32m[ok]\x1b[0m step {seq}: compiled module_{seq} in \x1b[1m{}ms\x1b[0m",
                    seq % 977
                )
            } else {
                format!(
                    "step {seq}: compiling module_{seq} (crate {} of many) ...",
                    seq % 311
                )
            }
        },
    )
}

fn latency(server: &Server, browser: &Browser) -> Result<()> {
    eprintln!("==> {TICKS} lines printed in a container, watched in the page");
    let id = server.trigger()?;
    browser.goto(&format!("{}/runs/{id}", server.base));
    browser.wait_for(
        "the stage",
        "return document.querySelector('[data-stage=ticks]')",
        Duration::from_secs(60),
    );
    browser.execute(
        "window.__seen = {};
         const look = () => {
           const now = Date.now() / 1000;
           for (const tx of document.querySelectorAll('.log-row .tx')) {
             const m = /^tick (\\d+) ([\\d.]+)$/.exec(tx.textContent);
             if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = now - Number(m[2]);
           }
         };
         new MutationObserver(look).observe(document.querySelector('#main'), { subtree: true, childList: true, characterData: true });",
        vec![],
    );
    let seen = browser.wait_for(
        "every tick",
        &format!("return Object.keys(window.__seen).length >= {TICKS} && window.__seen"),
        Duration::from_secs(120),
    );
    let delays: Vec<f64> = seen
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Value::as_f64)
        .map(|s| s * 1000.0)
        .collect();
    server.wait_finished(id)?;
    println!(
        "line printed in a container -> shown in the page ({} lines):",
        delays.len()
    );
    println!("  delay                  {}", summary(&delays));
    Ok(())
}

/// How the stage is watched in one configuration of the viewers benchmark.
struct Watching {
    label: &'static str,
    viewers: usize,
    /// Added to the events URL.
    query: &'static str,
}

const WATCHING: [Watching; 3] = [
    Watching {
        label: "no viewer",
        viewers: 0,
        query: "",
    },
    Watching {
        label: "10 web UI viewers",
        viewers: VIEWERS,
        query: "&tail=1",
    },
    Watching {
        label: "10 full-stream clients",
        viewers: VIEWERS,
        query: "",
    },
];

/// One run of the 200 MB stage.
struct Sample {
    wall: f64,
    server_cpu: f64,
    received: u64,
    rss: (u64, u64, u64),
}

fn viewers(server: &Server, repo: &FixtureRepo) -> Result<()> {
    repo.write(".gantry.yml", FLOOD);
    repo.commit("flood");
    let mut samples: Vec<Vec<Sample>> = WATCHING.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (watching, samples) in WATCHING.iter().zip(&mut samples) {
            eprintln!("==> 200 MB stage, {} (round {})", watching.label, round + 1);
            let sample = flood_once(server, watching)?;
            eprintln!(
                "    stage {:.1}s, server CPU {:.1}s, viewers received {:.0} MB, \
                 RSS {} -> peak {} -> {} MiB",
                sample.wall,
                sample.server_cpu,
                sample.received as f64 / 1e6,
                sample.rss.0,
                sample.rss.1,
                sample.rss.2
            );
            samples.push(sample);
        }
    }
    let median = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
    };
    let alone = median(samples[0].iter().map(|s| s.wall).collect());
    println!(
        "stage printing 200 MB (2,000,000 lines), median of {ROUNDS} (server CPU excludes the viewers' reading):"
    );
    for (watching, samples) in WATCHING.iter().zip(&samples) {
        let wall = median(samples.iter().map(|s| s.wall).collect());
        let cpu = median(samples.iter().map(|s| s.server_cpu).collect());
        let received = median(samples.iter().map(|s| s.received as f64 / 1e6).collect());
        println!(
            "  {:<24} wall {wall:>5.1} s  ratio {:.2}x  server CPU {cpu:>5.1} s  received {received:>5.0} MB",
            watching.label,
            wall / alone
        );
        if watching.viewers > 0 {
            let rss: Vec<String> = samples
                .iter()
                .map(|s| format!("{} -> {} -> {}", s.rss.0, s.rss.1, s.rss.2))
                .collect();
            println!(
                "  {:<24} server RSS before -> peak -> after (MiB): {}",
                "",
                rss.join(", ")
            );
        }
    }
    println!("  target: <= 1.10x with 10 viewers, memory flat");
    Ok(())
}

fn flood_once(server: &Server, watching: &Watching) -> Result<Sample> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let before = rss_mib();
    let cpu_before = cpu_seconds("self");
    let id = server.trigger()?;
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_mib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let readers: Vec<_> = (0..watching.viewers)
        .map(|_| {
            let url = format!(
                "{}/api/v1/runs/{id}/events?from=start{}",
                server.base, watching.query
            );
            std::thread::spawn(move || watch(&url))
        })
        .collect();
    let run = server.wait_finished(id)?;
    let (mut received, mut reading) = (0u64, 0.0);
    for reader in readers {
        let (bytes, cpu) = reader.join().map_err(|_| "a viewer panicked")??;
        received += bytes;
        reading += cpu;
    }
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    if run["status"] != "success" {
        return Err(format!("the flood run failed: {run}").into());
    }
    let stage = &run["stages"][0];
    Ok(Sample {
        wall: seconds(&stage["started_at"], &stage["finished_at"])?,
        // The process's CPU time, less what the viewer threads spent reading.
        server_cpu: cpu_seconds("self") - cpu_before - reading,
        received,
        rss: (before, peak.load(Ordering::Relaxed), rss_mib()),
    })
}

/// Reads a run's event stream to its end, as fast as it comes; returns the bytes read and the
/// CPU time this thread spent.
fn watch(url: &str) -> Result<(u64, f64), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let response = agent
        .get(url)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .map_err(|e| e.to_string())?;
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut tail = Vec::new();
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n as u64;
        tail = buf[n.saturating_sub(200)..n].to_vec();
    }
    if !String::from_utf8_lossy(&tail).contains("event: end") {
        return Err("a viewer's stream ended without its 'end' event".into());
    }
    Ok((total, cpu_seconds("thread-self")))
}

/// User and system CPU time of `/proc/{which}` (`self`, `thread-self`), in seconds.
fn cpu_seconds(which: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{which}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

fn seconds(start: &Value, end: &Value) -> Result<f64> {
    let parse = |v: &Value| -> Result<chrono::DateTime<chrono::Utc>> {
        Ok(v.as_str().ok_or("no time")?.parse()?)
    };
    Ok((parse(end)? - parse(start)?).as_seconds_f64())
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// `median 12.3 ms  p99 45.6 ms  max 78.9 ms  (n = 5)`.
fn summary(values: &[f64]) -> String {
    if values.is_empty() {
        return "no samples".into();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pick = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "median {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n = {})",
        pick(0.5),
        pick(0.99),
        v[v.len() - 1],
        v.len()
    )
}
