//! The client commands (`gantry runs`, `show`, `trigger`, `logs`, ...) as a
//! user runs them: the real binary against a fake API server in this process
//! that serves canned JSON, refuses wrong tokens, and grows a log between polls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use expect_test::expect;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-admin-token-0123456789";

/// The fake server: on its own runtime, stopped when dropped.
struct Fake {
    addr: SocketAddr,
    state: Arc<FakeState>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Default)]
struct FakeState {
    /// How often run 12 was fetched: it finishes at the third time.
    polls: AtomicU32,
    /// The query string of the last `GET /runs`.
    runs_query: Mutex<Option<String>>,
    /// The body of the last `POST /runs`.
    trigger_body: Mutex<Option<Value>>,
}

impl Fake {
    fn start() -> Fake {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/api/v1/projects", get(projects))
            .route("/api/v1/runs", get(runs).post(trigger))
            .route("/api/v1/runs/{id}", get(run))
            .route("/api/v1/runs/{id}/stages/{stage}/log", get(log))
            .route("/api/v1/runs/{id}/cancel", post(cancel))
            .route("/api/v1/runs/{id}/rerun", post(rerun))
            .route("/api/v1/deliveries", get(deliveries))
            .layer(middleware::from_fn(auth))
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Fake {
            addr,
            state,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn gantry(&self, args: &[&str]) -> Output {
        gantry(&self.url(), Some(TOKEN), args)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn auth(request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match given.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(token) if token == TOKEN => next.run(request).await,
        // Echoes the wrong token, so the test sees the client hide it.
        Some(token) => error(
            StatusCode::UNAUTHORIZED,
            &format!("invalid token '{token}'"),
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "missing 'Authorization: Bearer <token>' header",
        ),
    }
}

fn stage(name: &str, status: &str, exit_code: Option<i64>, seconds: Option<(u32, u32)>) -> Value {
    let time = |s: u32| format!("2024-05-01T11:{:02}:{:02}Z", 50 + s / 60, s % 60);
    json!({
        "name": name, "status": status, "attempt": if seconds.is_some() { 1 } else { 0 },
        "exit_code": exit_code, "reason": if status == "failure" { Some("exit code 1") } else { None },
        "started_at": seconds.map(|(from, _)| time(from)),
        "finished_at": seconds.filter(|_| status != "running").map(|(_, to)| time(to)),
    })
}

/// Run 12 after `polls` fetches: running twice, then failed.
fn run_12(polls: u32) -> Value {
    let finished = polls >= 3;
    json!({
        "id": 12, "project": "demo/backend", "number": 3,
        "status": if finished { "failure" } else { "running" },
        "event": "push", "branch": "main", "tag": null,
        "commit_sha": "0123456789abcdef0123456789abcdef01234567",
        "commit_message": "Fix the login form\n\nIt forgot the password.",
        "reason": if finished { Some("stage 'test' failed") } else { None },
        "created_at": "2024-05-01T11:50:00Z",
        "started_at": "2024-05-01T11:50:02Z",
        "finished_at": if finished { Some("2024-05-01T11:51:07Z") } else { None },
        "rerun_of": null,
        "stages": [
            stage("build", "success", Some(0), Some((2, 14))),
            if finished { stage("test", "failure", Some(1), Some((14, 67))) } else { stage("test", "running", None, Some((14, 0))) },
            stage("deploy", if finished { "skipped" } else { "pending" }, None, None),
        ],
        "a_field_from_the_future": [1, 2, 3],
    })
}

fn run_11() -> Value {
    json!({
        "id": 11, "project": "demo/frontend", "number": 7, "status": "success", "event": "tag",
        "branch": null, "tag": "v1.0.0", "commit_sha": "89abcdef0123456789abcdef0123456789abcdef",
        "commit_message": "Release 1.0: the long awaited release with every feature we promised",
        "reason": null, "created_at": "2024-04-30T08:00:00Z", "started_at": "2024-04-30T08:00:01Z",
        "finished_at": "2024-04-30T08:12:31Z", "rerun_of": null, "stages": [],
    })
}

async fn projects() -> Json<Value> {
    Json(json!({ "projects": [
        { "name": "demo/backend", "clone_url": "https://***@git.example.com/demo/backend.git", "pipeline": ".gantry.yml" },
        { "name": "demo/frontend", "clone_url": "file:///srv/git/frontend", "pipeline": "ci/.gantry.yml" },
    ]}))
}

async fn runs(
    State(state): State<Arc<FakeState>>,
    RawQuery(raw): RawQuery,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    *state.runs_query.lock().expect("lock") = raw;
    let runs: Vec<Value> = [run_12(3), run_11()]
        .into_iter()
        .filter(|r| query.get("status").is_none_or(|s| r["status"] == *s))
        .collect();
    Json(json!({ "runs": runs }))
}

async fn run(State(state): State<Arc<FakeState>>, Path(id): Path<u64>) -> Response {
    match id {
        12 => Json(run_12(state.polls.fetch_add(1, Ordering::SeqCst) + 1)).into_response(),
        // Keys deliberately out of order, to see `--json` keep them so.
        11 => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"success","id":11,"stages":[],"project":"demo/frontend","number":7,"note":"keys in the server's order, \"quotes\", {braces}: kept"}"#,
        )
            .into_response(),
        _ => error(StatusCode::NOT_FOUND, &format!("run {id} not found")),
    }
}

#[derive(serde::Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn log(
    State(state): State<Arc<FakeState>>,
    Path((id, stage)): Path<(u64, String)>,
    Query(Since { since }): Query<Since>,
) -> Response {
    let polls = state.polls.load(Ordering::SeqCst);
    let lines: Vec<(u64, &str)> = match (id, stage.as_str()) {
        (12, "build") => vec![(1, "compiling"), (2, "done")],
        // One more line each time the run is fetched.
        (12, "test") => [(11, "test 1 ok"), (12, "test 2 ok"), (13, "test 3 FAILED")]
            .into_iter()
            .take(polls as usize)
            .collect(),
        (12, "deploy") => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a stage that never started has no log to ask for",
            );
        }
        _ => return error(StatusCode::NOT_FOUND, "no such stage"),
    };
    let since = since.unwrap_or(0);
    let new: Vec<_> = lines.into_iter().filter(|(seq, _)| *seq > since).collect();
    let last = new.last().map(|(seq, _)| *seq).unwrap_or(since);
    let text: String = new.iter().map(|(_, line)| format!("{line}\n")).collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-gantry-last-seq", HeaderValue::from(last));
    (headers, text).into_response()
}

async fn trigger(State(state): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    *state.trigger_body.lock().expect("lock") = Some(body.clone());
    if body["project"] != "demo/backend" {
        let message = format!(
            "project '{}' is not configured",
            body["project"].as_str().unwrap_or("?")
        );
        return error(StatusCode::NOT_FOUND, &message);
    }
    let mut run = run_12(0);
    run["status"] = "queued".into();
    run["event"] = "manual".into();
    run["started_at"] = Value::Null;
    (StatusCode::CREATED, Json(run)).into_response()
}

async fn cancel(Path(id): Path<u64>) -> Response {
    match id {
        12 => error(
            StatusCode::CONFLICT,
            "run 12 has already finished (failure)",
        ),
        _ => error(StatusCode::NOT_FOUND, &format!("run {id} not found")),
    }
}

async fn rerun(Path(id): Path<u64>) -> Response {
    if id != 12 {
        return error(StatusCode::NOT_FOUND, &format!("run {id} not found"));
    }
    let mut run = run_12(0);
    run["id"] = 13.into();
    run["number"] = 4.into();
    run["status"] = "queued".into();
    run["rerun_of"] = 12.into();
    (StatusCode::CREATED, Json(run)).into_response()
}

async fn deliveries() -> Json<Value> {
    Json(json!({ "deliveries": [
        { "id": 7, "guid": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "event": "push", "project": "demo/backend",
          "git_ref": "refs/heads/main", "after_sha": "0123456789abcdef0123456789abcdef01234567",
          "outcome": "run 12 queued", "run_id": 12, "received_at": "2024-05-01T11:49:59Z" },
        { "id": 6, "guid": "5f1b7c2a-cc78-11e3-81ab-4c9367dc0958", "event": "push", "project": null,
          "git_ref": "refs/tags/v1", "after_sha": null, "outcome": "ignored: unknown repository",
          "run_id": null, "received_at": "2024-04-30T10:00:00Z" },
    ]}))
}

#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `gantry` with a clean environment, and checks the token never shows.
fn gantry(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
    command
        .args(args)
        .env("GANTRY_SERVER", server)
        .env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_LOG");
    for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(proxy);
    }
    if let Some(token) = token {
        command.env("GANTRY_TOKEN", token);
    }
    let output = command.output().expect("run gantry");
    let output = Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    for secret in [TOKEN].into_iter().chain(token) {
        assert!(
            !output.stdout.contains(secret) && !output.stderr.contains(secret),
            "the token leaked: {output:#?}"
        );
    }
    output
}

#[test]
fn runs_table_and_filters() {
    let fake = Fake::start();
    let out = fake.gantry(&["runs"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    expect![[r#"
        RUN  PROJECT        #  STATUS   EVENT  REF         COMMIT    MESSAGE                                            STARTED     DURATION
        12   demo/backend   3  failure  push   main        01234567  Fix the login form                                 2024-05-01  1m 5s
        11   demo/frontend  7  success  tag    tag:v1.0.0  89abcdef  Release 1.0: the long awaited release with every…  2024-04-30  12m 30s
    "#]]
    .assert_eq(&out.stdout);

    let out = fake.gantry(&[
        "runs",
        "--project",
        "demo/backend",
        "--status",
        "success",
        "--limit",
        "5",
    ]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stdout.contains("demo/frontend") && !out.stdout.contains("demo/backend"),
        "{out:#?}"
    );
    assert_eq!(
        fake.state.runs_query.lock().expect("lock").as_deref(),
        Some("project=demo%2Fbackend&status=success&limit=5")
    );

    let out = fake.gantry(&["runs", "--status", "bogus"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains("invalid value 'bogus'"), "{out:#?}");
}

#[test]
fn json_is_the_servers_json_in_its_order() {
    let fake = Fake::start();
    let out = fake.gantry(&["runs", "--json"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let value: Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    assert_eq!(
        value["runs"][0]["a_field_from_the_future"],
        json!([1, 2, 3])
    );

    let out = fake.gantry(&["show", "11", "--json"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    expect![[r#"
        {
          "status": "success",
          "id": 11,
          "stages": [],
          "project": "demo/frontend",
          "number": 7,
          "note": "keys in the server's order, \"quotes\", {braces}: kept"
        }
    "#]]
    .assert_eq(&out.stdout);
}

#[test]
fn show_a_run() {
    let fake = Fake::start();
    // The third fetch: the run has finished.
    fake.state.polls.store(2, Ordering::SeqCst);
    let out = fake.gantry(&["show", "12"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    expect![[r#"
        run 12  demo/backend #3  failure
        event     push
        ref       main
        commit    01234567  Fix the login form
        reason    stage 'test' failed
        created   2024-05-01 11:50:00
        started   2024-05-01 11:50:02
        finished  2024-05-01 11:51:07
        duration  1m 5s

        STAGE   STATUS   ATTEMPT  EXIT  DURATION  REASON
        build   success  1        0     12s
        test    failure  1        1     53s       exit code 1
        deploy  skipped  -        -     -
    "#]]
    .assert_eq(&out.stdout);
}

#[test]
fn missing_things_exit_3() {
    let fake = Fake::start();
    for args in [
        &["show", "42"][..],
        &["logs", "42"],
        &["cancel", "42"],
        &["rerun", "42"],
    ] {
        let out = fake.gantry(args);
        assert_eq!(out.code, Some(3), "{args:?}: {out:#?}");
        assert_eq!(out.stderr, "error: run 42 not found\n", "{args:?}");
        assert_eq!(out.stdout, "");
    }
    let out = fake.gantry(&["logs", "12", "--stage", "lint"]);
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert_eq!(
        out.stderr,
        "error: stage 'lint' not found in run 12 (it has build, test, deploy)\n"
    );
    let out = fake.gantry(&["trigger", "nope", "--branch", "main"]);
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert_eq!(out.stderr, "error: project 'nope' is not configured\n");
}

#[test]
fn logs_once() {
    let fake = Fake::start();
    let out = fake.gantry(&["logs", "12"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    expect![[r#"
        build  | compiling
        build  | done
        test   | test 1 ok
    "#]]
    .assert_eq(&out.stdout);

    let out = fake.gantry(&["logs", "12", "--stage", "build", "--json"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    expect![[r#"
        {"stage":"build","line":"compiling"}
        {"stage":"build","line":"done"}
    "#]]
    .assert_eq(&out.stdout);
}

#[test]
fn logs_follow_until_the_run_finishes() {
    let fake = Fake::start();
    let out = fake.gantry(&["logs", "12", "-f"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    expect![[r#"
        build  | compiling
        build  | done
        test   | test 1 ok
        test   | test 2 ok
        test   | test 3 FAILED
        run 12 failure in 1m 5s: stage 'test' failed
    "#]]
    .assert_eq(&out.stdout);
    assert_eq!(fake.state.polls.load(Ordering::SeqCst), 3);

    let fake = Fake::start();
    let out = fake.gantry(&["logs", "12", "--follow", "--stage", "test"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    expect![[r#"
        test | test 1 ok
        test | test 2 ok
        test | test 3 FAILED
        run 12 failure in 1m 5s: stage 'test' failed
    "#]]
    .assert_eq(&out.stdout);
}

#[test]
fn trigger_and_follow() {
    let fake = Fake::start();
    let out = fake.gantry(&["trigger", "demo/backend", "--branch", "main"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "run 12 (demo/backend #3) queued\n");
    assert_eq!(
        fake.state.trigger_body.lock().expect("lock").clone(),
        Some(json!({ "project": "demo/backend", "branch": "main" }))
    );

    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let out = fake.gantry(&["trigger", "demo/backend", "--sha", sha, "--follow"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(
        fake.state.trigger_body.lock().expect("lock").clone(),
        Some(json!({ "project": "demo/backend", "commit_sha": sha }))
    );
    expect![[r#"
        run 12 (demo/backend #3) queued
        build  | compiling
        build  | done
        test   | test 1 ok
        test   | test 2 ok
        test   | test 3 FAILED
        run 12 failure in 1m 5s: stage 'test' failed
    "#]]
    .assert_eq(&out.stdout);

    // With --json, one document: the run as it finished.
    let fake = Fake::start();
    let out = fake.gantry(&[
        "trigger",
        "demo/backend",
        "--branch",
        "main",
        "-f",
        "--json",
    ]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let value: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(value["status"], "failure");

    let out = fake.gantry(&["trigger", "demo/backend"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.contains("--branch <BRANCH>"), "{out:#?}");
}

#[test]
fn cancel_and_rerun() {
    let fake = Fake::start();
    let out = fake.gantry(&["cancel", "12"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stderr, "error: run 12 has already finished (failure)\n");

    let out = fake.gantry(&["rerun", "12"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(
        out.stdout,
        "run 13 (demo/backend #4) queued, rerun of run 12\n"
    );
}

#[test]
fn deliveries_and_projects() {
    let fake = Fake::start();
    let out = fake.gantry(&["deliveries", "--limit", "2"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    expect![[r#"
        ID  GUID                                  EVENT  REPOSITORY    REF     OUTCOME                      RUN  RECEIVED
        7   72d3162e-cc78-11e3-81ab-4c9367dc0958  push   demo/backend  main    run 12 queued                12   2024-05-01
        6   5f1b7c2a-cc78-11e3-81ab-4c9367dc0958  push   -             tag:v1  ignored: unknown repository  -    2024-04-30
    "#]]
    .assert_eq(&out.stdout);

    let out = fake.gantry(&["projects"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    expect![[r#"
        NAME           CLONE URL                                     PIPELINE
        demo/backend   https://***@git.example.com/demo/backend.git  .gantry.yml
        demo/frontend  file:///srv/git/frontend                      ci/.gantry.yml
    "#]]
    .assert_eq(&out.stdout);
}

#[test]
fn a_refused_token_says_where_the_right_one_is() {
    let fake = Fake::start();
    let wrong = "wrong-token-abcdef";
    let out = gantry(&fake.url(), Some(wrong), &["projects"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stdout, "");
    expect![[r#"
        error: the server refused the token (401): invalid token '***'; set GANTRY_TOKEN to the admin token (printed by 'gantry serve' at first start, stored in <data_dir>/admin-token)
    "#]]
    .assert_eq(&out.stderr);

    let out = gantry(&fake.url(), None, &["runs"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr
            .starts_with("error: the server wants a token (401): missing"),
        "{out:#?}"
    );

    // --token works as well as GANTRY_TOKEN.
    let out = gantry(&fake.url(), None, &["projects", "--token", TOKEN]);
    assert_eq!(out.code, Some(0), "{out:#?}");
}

#[test]
fn an_unreachable_server_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let server = format!("http://127.0.0.1:{port}");
    let out = gantry(&server, Some(TOKEN), &["runs"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot reach Gantry at {server}: connection refused (is 'gantry serve' running? set GANTRY_SERVER)\n"
        )
    );
}

#[test]
fn a_server_that_is_not_gantry_is_named() {
    let fake = Fake::start();
    let server = format!("{}/not-gantry/", fake.url());
    let out = gantry(&server, Some(TOKEN), &["show", "12"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(
        out.stderr,
        format!(
            "error: unexpected answer from {}/not-gantry/api/v1/runs/12: 404 Not Found without a Gantry error; \
             is GANTRY_SERVER the address of 'gantry serve'?\n",
            fake.url()
        )
    );
}
