//! `/api/v1`: auth, manual runs, cancel and rerun, errors as JSON.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[test]
fn every_api_request_needs_the_token_and_errors_are_json() {
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    let (status, body) = server.request("GET", "/api/v1/runs", None, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing 'Authorization: Bearer <token>' header"))
    );
    let (status, body) = server.request("GET", "/api/v1/runs", None, Some("wrong"));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid token"))
    );
    let (status, body) = server.request("GET", "/api/v1/nope", None, Some(TOKEN));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no such endpoint"))
    );
    let (status, body) = server.get("/api/v1/runs/999");
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("run 999 not found"))
    );
    let (status, body) = server.get("/api/v1/runs?status=weird");
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("weird"),
        "{body}"
    );
    let (status, body) = server.post("/api/v1/runs", json!({"project": "demo/app"}));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("give exactly one of 'branch' and 'commit_sha'"))
    );
    let (status, body) = server.post(
        "/api/v1/runs",
        json!({"project": "nope/nope", "branch": "main"}),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.post("/api/v1/runs", json!({"projekt": "x"}));
    assert_eq!(status, 400);
    assert!(body["error"].is_string(), "{body}");
    // What axum refuses before a handler runs is JSON too.
    let (status, body) = server.get("/api/v1/runs/abc");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("abc")
            || body["error"].as_str().unwrap_or_default().contains("parse"),
        "{body}"
    );
    let (status, body) = server.get("/api/v1/runs/1/stages/test/lines?from=x");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = server.post("/api/v1/runs/1", json!({}));
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("/api/v1/runs/1 does not take POST"))
    );
    let (status, body) = server.request("GET", "/hooks/github", None, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("/hooks/github does not take GET"))
    );
    // Health needs no token.
    let (status, body) = server.request("GET", "/healthz", None, None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = server.get("/api/v1/projects");
    assert_eq!(status, 200);
    assert_eq!(body["projects"][0]["name"], "demo/app");
    assert!(
        !body.to_string().contains(WEBHOOK_SECRET),
        "no secret in the API"
    );
}

#[test]
fn readyz_reports_database_and_docker() {
    if !docker_available() {
        return;
    }
    let server = TestServer::start(vec![]);
    let (status, body) = server.request("GET", "/readyz", None, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ready": true, "database": "ok", "docker": "ok"})
    );
}

#[test]
fn manual_run_of_a_branch_then_rerun() {
    if !docker_available() {
        return;
    }
    let (repo, sha) = repo_with(ECHO_PIPELINE);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (status, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["event"], "manual");
    let run = server.wait_finished(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(
        run["commit_sha"],
        sha.as_str(),
        "the branch was resolved to its tip"
    );
    assert_eq!(run["commit_message"], "first");

    let (status, again) = server.post(&format!("/api/v1/runs/{}/rerun", run["id"]), json!({}));
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["rerun_of"], run["id"]);
    assert_eq!(again["number"], 2);
    let again = server.wait_finished(again["id"].as_i64().expect("id"));
    assert_eq!(again["status"], "success");
    assert_eq!(again["commit_sha"], sha.as_str());

    // A specific commit.
    let (status, by_sha) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "commit_sha": sha}),
    );
    assert_eq!(status, 201, "{by_sha}");
    assert_eq!(
        server.wait_finished(by_sha["id"].as_i64().expect("id"))["status"],
        "success"
    );
    let (status, body) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "commit_sha": "abc"}),
    );
    assert_eq!(status, 400, "{body}");

    let (_, listed) = server.get("/api/v1/runs?project=demo/app&status=success&limit=2");
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["runs"][0]["number"], 3, "newest first");
}

#[test]
fn cancel_a_running_run_and_nothing_is_left() {
    if !docker_available() {
        return;
    }
    let (repo, _) = repo_with(
        "stages:\n  - { name: long, image: local/busybox, commands: [\"echo started\", \"sleep 300\"] }\n  - { name: next, image: local/busybox, commands: [true] }\n",
    );
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (_, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    let id = run["id"].as_i64().expect("id");
    server.wait_run(id, 60, |r| r["stages"][0]["status"] == "running");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server
        .text(&format!("/api/v1/runs/{id}/stages/long/log"))
        .1
        .contains("\nstarted\n")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stage never printed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = std::time::Instant::now();
    let (status, run) = server.post(&format!("/api/v1/runs/{id}/cancel"), json!({}));
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(run["stages"][0]["status"], "cancelled");
    assert_eq!(run["stages"][1]["status"], "skipped");
    let (status, body) = server.post(&format!("/api/v1/runs/{id}/cancel"), json!({}));
    assert_eq!(status, 409, "{body}");
    let (_, log, _) = server.text(&format!("/api/v1/runs/{id}/stages/long/log"));
    assert!(log.contains("started"), "{log}");
}

/// With one slot taken, a second run waits in the queue; cancelling it there ends it at once and
/// no runner picks it up afterwards.
#[test]
fn cancel_a_queued_run() {
    if !docker_available() {
        return;
    }
    let (repo, _) =
        repo_with("stages:\n  - { name: long, image: local/busybox, commands: [\"sleep 300\"] }\n");
    let server = TestServer::start_with(vec![project("demo/app", &repo.file_url())], 1);
    let trigger = || {
        let (status, run) = server.post(
            "/api/v1/runs",
            json!({"project": "demo/app", "branch": "main"}),
        );
        assert_eq!(status, 201, "{run}");
        run["id"].as_i64().expect("id")
    };
    let first = trigger();
    server.wait_run(first, 60, |r| r["status"] == "running");
    let second = trigger();
    let (status, run) = server.post(&format!("/api/v1/runs/{second}/cancel"), json!({}));
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        (run["status"].as_str(), run["reason"].as_str()),
        (Some("cancelled"), Some("cancelled before it started")),
        "{run:#}"
    );
    // The slot frees up; the cancelled run stays as it is.
    let (status, _) = server.post(&format!("/api/v1/runs/{first}/cancel"), json!({}));
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let (_, run) = server.get(&format!("/api/v1/runs/{second}"));
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert!(run["started_at"].is_null(), "{run:#}");
}
