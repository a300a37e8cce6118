//! Prometheus metrics: `GET /metrics`, the middleware that counts HTTP
//! requests, and the small API the rest of the server records through
//! (`app.metrics.run_finished(..)`, `app.metrics.deploy(..)`, ...).
//!
//! Each `App` owns its recorder, and the `metrics` macros are pointed at it
//! with `with_local_recorder`: no global recorder, so several servers in one
//! process (the integration tests) never share or fight over one.
//!
//! Every label value is bounded: projects come from the configuration,
//! statuses and results from fixed lists, routes are axum's route templates
//! (never the raw path), and values that arrive in requests (the webhook's
//! event header, the HTTP method) are folded into a short list first.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gantry_store::RunStatus;
use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::state::App;

pub const RUNS_TOTAL: &str = "gantry_runs_total";
pub const RUN_DURATION: &str = "gantry_run_duration_seconds";
pub const STAGE_DURATION: &str = "gantry_stage_duration_seconds";
pub const QUEUE_DEPTH: &str = "gantry_queue_depth";
pub const RUNS_RUNNING: &str = "gantry_runs_running";
pub const WEBHOOK_DELIVERIES: &str = "gantry_webhook_deliveries_total";
pub const IMAGE_PUSHES: &str = "gantry_image_pushes_total";
pub const DEPLOYS: &str = "gantry_deploys_total";
pub const DEPLOY_DURATION: &str = "gantry_deploy_duration_seconds";
pub const ROLLBACKS: &str = "gantry_rollbacks_total";
pub const ROLLBACK_DURATION: &str = "gantry_rollback_duration_seconds";
pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family Gantry exports: what `/metrics` may show, and what the
/// docs, the dashboard and the alert rules may refer to.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn family(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        labels,
        help,
    }
}

/// Every family, the process ones included.
pub const FAMILIES: &[Family] = &[
    family(
        RUNS_TOTAL,
        Kind::Counter,
        &["project", "status"],
        "Runs that reached a final status.",
    ),
    family(
        RUN_DURATION,
        Kind::Histogram,
        &["project", "status"],
        "How long runs took, from start to final status.",
    ),
    family(
        STAGE_DURATION,
        Kind::Histogram,
        &["status"],
        "How long stages took, all attempts included, by final status.",
    ),
    family(QUEUE_DEPTH, Kind::Gauge, &[], "Runs waiting in the queue."),
    family(RUNS_RUNNING, Kind::Gauge, &[], "Runs in progress."),
    family(
        WEBHOOK_DELIVERIES,
        Kind::Counter,
        &["event", "result"],
        "Webhook deliveries received, by event and what became of them.",
    ),
    family(
        IMAGE_PUSHES,
        Kind::Counter,
        &["registry", "result"],
        "Image pushes, one per pushed tag, by the registry's name in gantry.toml (`anonymous` without credentials) and result.",
    ),
    family(
        DEPLOYS,
        Kind::Counter,
        &["cluster", "result"],
        "Deploys (Kubernetes rollouts), by cluster and result.",
    ),
    family(
        DEPLOY_DURATION,
        Kind::Histogram,
        &["cluster", "result"],
        "How long deploys took, until rolled out, failed or rolled back.",
    ),
    family(
        ROLLBACKS,
        Kind::Counter,
        &["cluster", "trigger", "result"],
        "Rollbacks, by cluster, trigger (`automatic` after a failed rollout, `manual` from the CLI, API or UI) and whether the previous revision came back.",
    ),
    family(
        ROLLBACK_DURATION,
        Kind::Histogram,
        &["cluster", "trigger", "result"],
        "How long rollbacks took, from the undo patch until the previous revision was rolled out or the rollback failed.",
    ),
    family(
        HTTP_REQUESTS,
        Kind::Counter,
        &["method", "route", "status"],
        "HTTP requests answered, by route template.",
    ),
    family(
        HTTP_DURATION,
        Kind::Histogram,
        &["method", "route"],
        "How long HTTP requests took until the response started.",
    ),
    family(
        process::RESIDENT_MEMORY,
        Kind::Gauge,
        &[],
        "Resident memory size in bytes.",
    ),
    family(
        process::VIRTUAL_MEMORY,
        Kind::Gauge,
        &[],
        "Virtual memory size in bytes.",
    ),
    family(
        process::CPU_SECONDS,
        Kind::Counter,
        &[],
        "Total user and system CPU time spent in seconds.",
    ),
    family(
        process::OPEN_FDS,
        Kind::Gauge,
        &[],
        "Number of open file descriptors.",
    ),
    family(
        process::MAX_FDS,
        Kind::Gauge,
        &[],
        "Maximum number of open file descriptors.",
    ),
    family(
        process::START_TIME,
        Kind::Gauge,
        &[],
        "Start time of the process since unix epoch in seconds.",
    ),
];

/// Run and stage durations: seconds to an hour.
const RUN_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Rollouts: seconds to the usual 10-minute progress deadline and beyond.
const DEPLOY_BUCKETS: &[f64] = &[5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0];
/// HTTP answers: milliseconds to seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The run statuses that end a run.
const FINAL_RUN_STATUSES: [RunStatus; 4] = [
    RunStatus::Success,
    RunStatus::Failure,
    RunStatus::Cancelled,
    RunStatus::Error,
];

/// What became of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    Accepted,
    Duplicate,
    BadSignature,
    UnknownRepository,
    Malformed,
    TooLarge,
    Error,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 7] = [
        WebhookResult::Accepted,
        WebhookResult::Duplicate,
        WebhookResult::BadSignature,
        WebhookResult::UnknownRepository,
        WebhookResult::Malformed,
        WebhookResult::TooLarge,
        WebhookResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::BadSignature => "bad_signature",
            WebhookResult::UnknownRepository => "unknown_repository",
            WebhookResult::Malformed => "malformed",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::Error => "error",
        }
    }
}

/// The `event` label: GitHub's event header folded into a fixed list, since
/// anyone can send any header before the signature is checked.
pub fn webhook_event(header: Option<&str>) -> &'static str {
    match header {
        Some("push") => "push",
        Some("ping") => "ping",
        Some(_) => "other",
        None => "none",
    }
}

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployResult {
    /// Rolled out and available.
    Success,
    /// Failed, and left as it was (no automatic rollback configured).
    Failure,
    /// Failed, and rolled back to the previous revision.
    RolledBack,
}

impl DeployResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployResult::Success => "success",
            DeployResult::Failure => "failure",
            DeployResult::RolledBack => "rolled_back",
        }
    }
}

/// What started a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTrigger {
    /// A deploy stage's failed rollout, with `rollback: auto`.
    Automatic,
    /// `gantry rollback`, the API or the Deployments page.
    Manual,
}

impl RollbackTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackTrigger::Automatic => "automatic",
            RollbackTrigger::Manual => "manual",
        }
    }
}

fn result(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// One server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Metrics {
    /// A fresh registry. The series whose first increment matters to
    /// `increase()` (runs per configured project and final status, webhook
    /// deliveries) start at zero.
    pub fn new<'a>(projects: impl IntoIterator<Item = &'a str>) -> Metrics {
        let recorder = builder()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "invalid histogram buckets; falling back to summaries");
                PrometheusBuilder::new()
            })
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics { recorder, handle };
        metrics.with(|| {
            for f in FAMILIES {
                match f.kind {
                    Kind::Counter => metrics::describe_counter!(f.name, f.help),
                    Kind::Gauge => metrics::describe_gauge!(f.name, f.help),
                    Kind::Histogram => metrics::describe_histogram!(f.name, f.help),
                }
            }
            for project in projects {
                for status in FINAL_RUN_STATUSES {
                    metrics::counter!(RUNS_TOTAL, "project" => project.to_owned(), "status" => status.as_str()).absolute(0);
                }
            }
            for event in ["push", "ping"] {
                for result in WebhookResult::ALL {
                    metrics::counter!(WEBHOOK_DELIVERIES, "event" => event, "result" => result.as_str()).absolute(0);
                }
            }
            metrics::gauge!(QUEUE_DEPTH).set(0.0);
            metrics::gauge!(RUNS_RUNNING).set(0.0);
        });
        metrics
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// A run reached its final status; `duration` is `None` for runs that
    /// never started (an invalid pipeline, cancelled in the queue).
    pub fn run_finished(&self, project: &str, status: RunStatus, duration: Option<Duration>) {
        self.with(|| {
            let labels = [
                ("project", project.to_owned()),
                ("status", status.as_str().to_owned()),
            ];
            metrics::counter!(RUNS_TOTAL, &labels).increment(1);
            if let Some(d) = duration {
                metrics::histogram!(RUN_DURATION, &labels).record(d.as_secs_f64());
            }
        });
    }

    /// A stage that ran reached its final status (`success`, `failure`,
    /// `cancelled`), after all its attempts.
    pub fn stage_finished(&self, status: &'static str, duration: Duration) {
        self.with(|| {
            metrics::histogram!(STAGE_DURATION, "status" => status).record(duration.as_secs_f64())
        });
    }

    pub fn webhook_delivery(&self, event: &'static str, result: WebhookResult) {
        self.with(|| {
            metrics::counter!(WEBHOOK_DELIVERIES, "event" => event, "result" => result.as_str())
                .increment(1)
        });
    }

    /// The push of one tag with the credentials of `registry` (a `[[registry]]` name, or
    /// `anonymous`) ended.
    pub fn image_push(&self, registry: &str, ok: bool) {
        self.with(|| {
            metrics::counter!(IMAGE_PUSHES, "registry" => registry.to_owned(), "result" => result(ok))
                .increment(1)
        });
    }

    /// A deploy to `cluster` (its configured name) ended after `duration`.
    pub fn deploy(&self, cluster: &str, result: DeployResult, duration: Duration) {
        self.with(|| {
            let labels = [
                ("cluster", cluster.to_owned()),
                ("result", result.as_str().to_owned()),
            ];
            metrics::counter!(DEPLOYS, &labels).increment(1);
            metrics::histogram!(DEPLOY_DURATION, &labels).record(duration.as_secs_f64());
        });
    }

    /// A rollback on `cluster` ended after `duration`; `ok` says whether it brought the
    /// previous revision back.
    pub fn rollback(&self, cluster: &str, trigger: RollbackTrigger, ok: bool, duration: Duration) {
        self.with(|| {
            let labels = [
                ("cluster", cluster.to_owned()),
                ("trigger", trigger.as_str().to_owned()),
                ("result", result(ok).to_owned()),
            ];
            metrics::counter!(ROLLBACKS, &labels).increment(1);
            metrics::histogram!(ROLLBACK_DURATION, &labels).record(duration.as_secs_f64());
        });
    }

    pub fn http_request(&self, method: &'static str, route: &str, status: u16, duration: Duration) {
        self.with(|| {
            let route = route.to_owned();
            metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status.to_string())
                .increment(1);
            metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
                .record(duration.as_secs_f64());
        });
    }

    fn set_gauge(&self, name: &'static str, value: f64) {
        self.with(|| metrics::gauge!(name).set(value));
    }

    /// The registry in the text format, the process metrics appended.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        text.push_str(&process::render());
        text
    }

    /// Folds recorded histogram samples into their buckets. `render` does it
    /// too; this keeps memory flat when nobody scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn builder() -> Result<PrometheusBuilder, BuildError> {
    let buckets = |b: PrometheusBuilder, name: &str, values: &[f64]| {
        b.set_buckets_for_metric(Matcher::Full(name.to_owned()), values)
    };
    let b = buckets(PrometheusBuilder::new(), RUN_DURATION, RUN_BUCKETS)?;
    let b = buckets(b, STAGE_DURATION, RUN_BUCKETS)?;
    let b = buckets(b, DEPLOY_DURATION, DEPLOY_BUCKETS)?;
    let b = buckets(b, ROLLBACK_DURATION, DEPLOY_BUCKETS)?;
    buckets(b, HTTP_DURATION, HTTP_BUCKETS)
}

/// `GET /metrics`, without authentication like `/healthz`: Prometheus
/// scrapes it. The queue gauges are read at scrape time, so they are right
/// after a restart too.
pub async fn endpoint(State(app): State<Arc<App>>) -> Response {
    match app.store.count_runs_with_status(RunStatus::Queued).await {
        Ok(queued) => app.metrics.set_gauge(QUEUE_DEPTH, queued as f64),
        Err(e) => tracing::warn!(error = %e, "cannot count queued runs for /metrics"),
    }
    let running = app.running.load(Ordering::SeqCst);
    app.metrics.set_gauge(RUNS_RUNNING, running as f64);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics.render()).into_response()
}

/// Middleware: counts and times every request by method, route template
/// (`/api/v1/runs/{id}`, or `unmatched`) and status.
pub async fn track_http(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_label(p.as_str()))
        .unwrap_or(UNMATCHED)
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics.http_request(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

const UNMATCHED: &str = "unmatched";

/// A route template as a label; a nested router's catch-all (axum's private
/// tail parameter) matched nothing the application defined.
fn route_label(template: &str) -> &str {
    if template.contains("__private__axum") {
        UNMATCHED
    } else {
        template
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Runs upkeep every few seconds until the server shuts down.
pub async fn upkeep(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => app.metrics.upkeep(),
            _ = app.shutdown.cancelled() => return,
        }
    }
}

/// The standard `process_*` metrics, read from `/proc/self` at scrape time
/// (the names and meanings of Prometheus' client libraries).
pub mod process {
    use super::*;

    pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    pub const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
    pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
    pub const OPEN_FDS: &str = "process_open_fds";
    pub const MAX_FDS: &str = "process_max_fds";
    pub const START_TIME: &str = "process_start_time_seconds";

    /// `/proc` counts CPU time and start times in USER_HZ ticks, which Linux
    /// fixes at 100 for userspace (Prometheus' Go procfs assumes the same).
    const TICKS_PER_SECOND: f64 = 100.0;

    #[derive(Debug, Default, PartialEq)]
    pub struct Stat {
        pub cpu_seconds: f64,
        pub virtual_bytes: f64,
        /// Seconds after boot.
        pub start_after_boot: f64,
    }

    /// Parses `/proc/self/stat`. The command name (field 2) may hold spaces and
    /// parentheses, so fields are counted from the last `)`.
    pub fn parse_stat(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name, fields[0] is field 3 (state): utime is 14, stime 15,
        // starttime 22, vsize 23.
        let number = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
        Some(Stat {
            cpu_seconds: (number(14)? + number(15)?) / TICKS_PER_SECOND,
            start_after_boot: number(22)? / TICKS_PER_SECOND,
            virtual_bytes: number(23)?,
        })
    }

    /// `VmRSS` from `/proc/self/status`, in bytes.
    pub fn parse_rss(status: &str) -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }

    /// `btime` from `/proc/stat`: the boot time in seconds since the epoch.
    pub fn parse_boot_time(stat: &str) -> Option<f64> {
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    /// The soft limit of `Max open files` in `/proc/self/limits`.
    pub fn parse_max_fds(limits: &str) -> Option<f64> {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The families that can be read here, in the text format; none on a
    /// system without `/proc`.
    pub fn render() -> String {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let mut values: Vec<(&str, &str, f64)> = Vec::new();
        if let Some(rss) = read("/proc/self/status").as_deref().and_then(parse_rss) {
            values.push((RESIDENT_MEMORY, "gauge", rss));
        }
        if let Some(stat) = read("/proc/self/stat").as_deref().and_then(parse_stat) {
            values.push((VIRTUAL_MEMORY, "gauge", stat.virtual_bytes));
            values.push((CPU_SECONDS, "counter", stat.cpu_seconds));
            if let Some(boot) = read("/proc/stat").as_deref().and_then(parse_boot_time) {
                values.push((START_TIME, "gauge", boot + stat.start_after_boot));
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            values.push((OPEN_FDS, "gauge", fds.count() as f64));
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(parse_max_fds) {
            values.push((MAX_FDS, "gauge", max));
        }
        let mut text = String::new();
        for (name, kind, value) in values {
            let help = FAMILIES
                .iter()
                .find(|f| f.name == name)
                .map_or("", |f| f.help);
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files() {
        // A command name with a space and a parenthesis, as `comm` allows.
        let stat = "4242 (gantry (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 987654321 5000 18446744073709551615";
        assert_eq!(
            process::parse_stat(stat),
            Some(process::Stat {
                cpu_seconds: 3.0,
                virtual_bytes: 987654321.0,
                start_after_boot: 1234.56,
            })
        );
        assert_eq!(process::parse_stat("garbage"), None);
        assert_eq!(
            process::parse_rss("Name:\tgantry\nVmRSS:\t   12345 kB\nThreads: 9\n"),
            Some(12345.0 * 1024.0)
        );
        assert_eq!(
            process::parse_boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000.0)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(process::parse_max_fds(limits), Some(1_048_576.0));
    }

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(webhook_event(Some("push")), "push");
        assert_eq!(webhook_event(Some("a-made-up-event-name")), "other");
        assert_eq!(webhook_event(None), "none");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(route_label("/api/v1/runs/{id}"), "/api/v1/runs/{id}");
        assert_eq!(
            route_label("/api/v1/{*__private__axum_nest_tail_param}"),
            "unmatched"
        );
    }

    #[test]
    fn two_registries_in_one_process() {
        let a = Metrics::new(["demo/a"]);
        let b = Metrics::new(["demo/b"]);
        a.run_finished("demo/a", RunStatus::Success, Some(Duration::from_secs(3)));
        a.image_push("nexus", true);
        let (a, b) = (a.render(), b.render());
        assert!(
            a.contains(r#"gantry_runs_total{project="demo/a",status="success"} 1"#),
            "{a}"
        );
        assert!(
            b.contains(r#"gantry_runs_total{project="demo/b",status="success"} 0"#),
            "{b}"
        );
        assert!(
            !b.contains("demo/a") && !b.contains("gantry_image_pushes_total"),
            "{b}"
        );
        assert!(
            a.contains(
                r#"gantry_run_duration_seconds_bucket{project="demo/a",status="success",le="5"} 1"#
            ),
            "{a}"
        );
        assert!(
            a.contains("# TYPE gantry_run_duration_seconds histogram"),
            "{a}"
        );
        assert!(
            a.contains("# HELP gantry_runs_total Runs that reached a final status."),
            "{a}"
        );
        assert!(
            a.contains("# TYPE process_resident_memory_bytes gauge"),
            "{a}"
        );
    }
}
