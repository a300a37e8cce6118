//! `POST /hooks/github`: verification, durability, and what a push turns into.

use gantry_testkit::webhook::{Push, ping, sign};
use gantry_testkit::{FixtureRepo, GitHttpServer};
use serde_json::json;

use crate::support::*;

#[test]
fn a_push_to_main_runs_the_pipeline_and_succeeds() {
    if !docker_available() {
        return;
    }
    let (repo, sha) = repo_with(ECHO_PIPELINE);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (status, body) = server.push(
        "guid-1",
        "demo/app",
        &repo.file_url(),
        "refs/heads/main",
        &sha,
    );
    assert_eq!(status, 202, "{body}");
    let delivery = server.wait_delivery("guid-1");
    assert_eq!(delivery["outcome"], "run #1 queued");
    let run = server.wait_finished(delivery["run_id"].as_i64().expect("run id"));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(
        (
            run["number"].as_i64(),
            run["event"].as_str(),
            run["branch"].as_str()
        ),
        (Some(1), Some("push"), Some("main"))
    );
    assert_eq!(run["commit_sha"], sha.as_str());
    assert_eq!(run["commit_message"], "a change");
    assert_eq!(run["stages"][0]["name"], "hello");
    assert_eq!(run["stages"][0]["status"], "success");
    assert_eq!(run["stages"][0]["exit_code"], 0);
    for key in ["created_at", "started_at", "finished_at"] {
        let t = run[key].as_str().unwrap_or_default();
        assert!(chrono_like(t), "{key} = {t:?} is RFC 3339");
    }
    let (status, log, last) = server.text(&format!("/api/v1/runs/{}/stages/hello/log", run["id"]));
    assert_eq!(status, 200);
    assert!(
        log.contains("+ echo ok from $GANTRY_BRANCH\nok from main\n"),
        "{log}"
    );
    let last: i64 = last
        .and_then(|l| l.parse().ok())
        .expect("X-Gantry-Last-Seq");
    let (_, rest, _) = server.text(&format!(
        "/api/v1/runs/{}/stages/hello/log?since={last}",
        run["id"]
    ));
    assert_eq!(rest, "", "nothing after the last line");
    let (_, tail, _) = server.text(&format!(
        "/api/v1/runs/{}/stages/hello/log?since=1",
        run["id"]
    ));
    assert!(
        !tail.starts_with("+ echo"),
        "since skips what was read: {tail}"
    );
    // The workspace is gone once the run ended (keep_workspaces = 0).
    assert!(
        !server
            .data
            .path()
            .join("workspaces")
            .join(run["id"].to_string())
            .exists()
    );
}

fn chrono_like(t: &str) -> bool {
    t.len() >= 20
        && t.as_bytes()[4] == b'-'
        && t.contains('T')
        && (t.ends_with('Z') || t.contains('+'))
}

#[test]
fn a_push_to_another_branch_makes_no_run_and_says_why() {
    let (repo, _) = repo_with(ECHO_PIPELINE);
    repo.branch("feature-x");
    repo.checkout("feature-x");
    repo.write("x.txt", "x");
    let sha = repo.commit("on a branch");
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let (status, _) = server.push(
        "guid-b",
        "demo/app",
        &repo.file_url(),
        "refs/heads/feature-x",
        &sha,
    );
    assert_eq!(status, 202);
    let delivery = server.wait_delivery("guid-b");
    assert_eq!(
        delivery["outcome"],
        "branch 'feature-x' not in on.push.branches [main]"
    );
    assert!(delivery["run_id"].is_null());
    assert!(server.runs().is_empty());
}

#[test]
fn signatures_are_checked_before_anything_is_stored() {
    let (repo, sha) = repo_with(ECHO_PIPELINE);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let body = Push {
        repository: "demo/app",
        clone_url: &repo.file_url(),
        git_ref: "refs/heads/main",
        before: ZERO,
        after: &sha,
        message: "m",
        deleted: false,
    }
    .to_json()
    .to_string();
    let (status, answer) = server.post_hook("push", "g-nosig", body.as_bytes(), None);
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "missing X-Hub-Signature-256 header");
    let (status, answer) = server.post_hook(
        "push",
        "g-bad",
        body.as_bytes(),
        Some(&sign("wrong-secret", body.as_bytes())),
    );
    assert_eq!(status, 401);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("does not match"),
        "{answer}"
    );
    // Signed for another body: a tampered payload.
    let (status, _) = server.post_hook(
        "push",
        "g-tampered",
        body.as_bytes(),
        Some(&sign(WEBHOOK_SECRET, b"{}")),
    );
    assert_eq!(status, 401);
    assert!(server.deliveries().is_empty(), "nothing stored");
    assert!(server.runs().is_empty());
}

#[test]
fn a_redelivery_gets_the_same_answer_and_no_second_run() {
    let (repo, sha) = repo_with(
        "on: { push: { branches: [nothing-matches] } }\nstages:\n  - { name: a, image: local/busybox, commands: [true] }\n",
    );
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let first = server.push(
        "guid-same",
        "demo/app",
        &repo.file_url(),
        "refs/heads/main",
        &sha,
    );
    let again = server.push(
        "guid-same",
        "demo/app",
        &repo.file_url(),
        "refs/heads/main",
        &sha,
    );
    assert_eq!(first.0, 202);
    assert_eq!(again.0, 202);
    assert_eq!(first.1["delivery"], again.1["delivery"]);
    assert_eq!(again.1["duplicate"], true);
    server.wait_delivery("guid-same");
    assert_eq!(server.deliveries().len(), 1);
}

#[test]
fn branch_deletions_make_no_run() {
    let (repo, _) = repo_with(ECHO_PIPELINE);
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let body = Push {
        repository: "demo/app",
        clone_url: &repo.file_url(),
        git_ref: "refs/heads/main",
        before: "1111111111111111111111111111111111111111",
        after: ZERO,
        message: "",
        deleted: true,
    }
    .to_json()
    .to_string();
    let (status, _) = server.post_hook(
        "push",
        "g-del",
        body.as_bytes(),
        Some(&sign(WEBHOOK_SECRET, body.as_bytes())),
    );
    assert_eq!(status, 202);
    assert_eq!(
        server.wait_delivery("g-del")["outcome"],
        "branch main deleted: no run"
    );
    assert!(server.runs().is_empty());
}

#[test]
fn unknown_repositories_malformed_and_oversized_bodies() {
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    let body = ping("someone/else").to_string();
    let (status, answer) = server.post_hook(
        "ping",
        "g1",
        body.as_bytes(),
        Some(&sign(WEBHOOK_SECRET, body.as_bytes())),
    );
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        answer["error"],
        "repository 'someone/else' is not configured in Gantry"
    );

    let (status, answer) = server.post_hook(
        "push",
        "g2",
        b"{not json",
        Some(&sign(WEBHOOK_SECRET, b"{not json")),
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("the body is not valid JSON"),
        "{answer}"
    );

    let (status, answer) = oversized_post(&server.base, 26 * 1024 * 1024);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("\"error\""), "errors are JSON: {answer}");

    let (status, answer) = server.request("POST", "/hooks/github", Some(json!({})), None);
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "missing X-GitHub-Event header");
    assert!(server.deliveries().is_empty());
}

#[test]
fn ping_answers_200_and_other_events_are_recorded_and_ignored() {
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    let body = ping("demo/app").to_string();
    let (status, _) = server.post_hook(
        "ping",
        "g-ping",
        body.as_bytes(),
        Some(&sign(WEBHOOK_SECRET, body.as_bytes())),
    );
    assert_eq!(status, 200);
    let (status, _) = server.post_hook(
        "issues",
        "g-issue",
        body.as_bytes(),
        Some(&sign(WEBHOOK_SECRET, body.as_bytes())),
    );
    assert_eq!(status, 202);
    let outcomes: Vec<String> = server
        .deliveries()
        .iter()
        .map(|d| format!("{} {}", d["event"], d["outcome"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            "\"issues\" \"ignored: Gantry does not act on 'issues' events\"",
            "\"ping\" \"ping: pong\""
        ]
    );
}

#[test]
fn an_invalid_pipeline_gives_a_run_in_error_with_the_diagnostics() {
    let (repo, sha) =
        repo_with("stages:\n  - name: test\n    image: local/busybox\n    comands: [true]\n");
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    server.push(
        "g-invalid",
        "demo/app",
        &repo.file_url(),
        "refs/heads/main",
        &sha,
    );
    let delivery = server.wait_delivery("g-invalid");
    let run = server.wait_finished(delivery["run_id"].as_i64().expect("a run"));
    assert_eq!(run["status"], "error");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("unknown key 'comands' in stage 'test'"),
        "{reason}"
    );
    assert!(reason.contains(".gantry.yml:4:5"), "{reason}");
}

#[test]
fn a_private_repository_over_http_with_a_token() {
    if !docker_available() {
        return;
    }
    let root = tempfile::tempdir().expect("dir");
    let repo = FixtureRepo::new_in(root.path(), "private.git");
    repo.write(".gantry.yml", ECHO_PIPELINE);
    let sha = repo.commit("first");
    let git = GitHttpServer::start(root.path(), Some(("x-access-token", "good-token-123")));
    let url = git.url("private.git");
    let mut good = project("demo/private", &url);
    good.git_token = Some(gantry_config::Secret::new("good-token-123"));
    let mut bad = project("demo/wrong", &url);
    bad.git_token = Some(gantry_config::Secret::new("wrong-token-456"));
    let server = TestServer::start(vec![good, bad]);

    server.push("g-good", "demo/private", &url, "refs/heads/main", &sha);
    let run = server.wait_finished(
        server.wait_delivery("g-good")["run_id"]
            .as_i64()
            .expect("run"),
    );
    assert_eq!(run["status"], "success", "{run:#}");

    server.push("g-wrong", "demo/wrong", &url, "refs/heads/main", &sha);
    let delivery = server.wait_delivery("g-wrong");
    let run = server.wait_finished(delivery["run_id"].as_i64().expect("an error run"));
    assert_eq!(run["status"], "error");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(
        !reason.contains("wrong-token-456"),
        "the token never shows: {reason}"
    );
    assert!(!delivery.to_string().contains("wrong-token-456"));
}

/// An ssh clone URL with a deploy key (`ssh_key`) and the project's `known_hosts`: the run
/// fetches over SSH; a project whose known_hosts lacks the host gets a run in error saying so.
#[test]
fn a_repository_over_ssh_with_a_deploy_key_and_known_hosts() {
    if !docker_available() {
        return;
    }
    let Some(sshd) = gantry_testkit::Sshd::start_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().expect("dir");
    let repo = FixtureRepo::new_in(root.path(), "app.git");
    repo.write(".gantry.yml", ECHO_PIPELINE);
    let sha = repo.commit("first");
    let url = sshd.url(&root.path().join("app.git"));
    let known_hosts = root.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).expect("write known_hosts");
    let empty = root.path().join("empty_known_hosts");
    std::fs::write(&empty, "").expect("write known_hosts");
    let mut good = project("demo/ssh", &url);
    good.ssh_key = Some(sshd.client_key());
    good.known_hosts = Some(known_hosts);
    let mut unknown = project("demo/unknown-host", &url);
    unknown.ssh_key = Some(sshd.client_key());
    unknown.known_hosts = Some(empty);
    let server = TestServer::start(vec![good, unknown]);

    server.push("s-good", "demo/ssh", &url, "refs/heads/main", &sha);
    let run = server.wait_finished(
        server.wait_delivery("s-good")["run_id"]
            .as_i64()
            .expect("run"),
    );
    assert_eq!(run["status"], "success", "{run:#}\n{}", sshd.log());

    server.push(
        "s-unknown",
        "demo/unknown-host",
        &url,
        "refs/heads/main",
        &sha,
    );
    let delivery = server.wait_delivery("s-unknown");
    let run = server.wait_finished(delivery["run_id"].as_i64().expect("an error run"));
    assert_eq!(run["status"], "error");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "the SSH host key of [127.0.0.1]:{} is not in",
            sshd.port()
        )),
        "{reason}"
    );
}

/// A forge that accepts connections and never answers holds up only its own project: another
/// project's push, delivered after, becomes a run at once. When the forge hangs up, the stalled
/// delivery gets its error run.
#[test]
fn a_stalled_forge_does_not_hold_up_other_projects() {
    if !docker_available() {
        return;
    }
    let stall = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stalled_url = format!(
        "http://{}/demo/slow.git",
        stall.local_addr().expect("address")
    );
    let (repo, sha) = repo_with(ECHO_PIPELINE);
    let fast_url = repo.file_url();
    let server = TestServer::start(vec![
        project("demo/slow", &stalled_url),
        project("demo/fast", &fast_url),
    ]);
    // After the server, so that a failing assertion drops them first: the server's shutdown
    // waits for the stalled fetch, which ends when the forge hangs up.
    let (hang_up, hung_up) = std::sync::mpsc::channel::<()>();
    let forge = std::thread::spawn(move || {
        // Accept (and hold) the fetch's connection, then close it when told.
        let (connection, _) = stall.accept().expect("accept");
        let _ = hung_up.recv();
        drop(connection);
    });

    server.push(
        "stalled",
        "demo/slow",
        &stalled_url,
        "refs/heads/main",
        &sha,
    );
    server.push("fast", "demo/fast", &fast_url, "refs/heads/main", &sha);
    let fast = server.wait_delivery("fast");
    assert!(
        fast["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("run #1 queued")),
        "{fast:#}"
    );
    let stalled = server
        .deliveries()
        .into_iter()
        .find(|d| d["guid"] == "stalled")
        .expect("the stalled delivery");
    assert!(stalled["outcome"].is_null(), "{stalled:#}");

    hang_up.send(()).expect("hang up");
    forge.join().expect("the forge thread");
    let stalled = server.wait_delivery("stalled");
    let run = server.wait_finished(stalled["run_id"].as_i64().expect("an error run"));
    assert_eq!(run["status"], "error", "{run:#}");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(&format!("cannot fetch {stalled_url}")),
        "{reason}"
    );
}

/// Sends a body larger than GitHub's limit over a raw socket: the server may
/// answer and close before the body is written, which an HTTP client reports as
/// a broken pipe instead of the answer.
fn oversized_post(base: &str, size: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: big\r\nX-Hub-Signature-256: sha256=00\r\nContent-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write head");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// A crash after the dispatcher committed a delivery's run and before it recorded the outcome:
/// the restarted server finds the delivery pending, and its run already made.
#[test]
fn a_delivery_whose_run_was_made_before_a_crash_makes_no_second_run() {
    let (repo, sha) = repo_with(ECHO_PIPELINE);
    let data = tempfile::tempdir().expect("temp dir");
    let payload = Push {
        repository: "demo/app",
        clone_url: &repo.file_url(),
        git_ref: "refs/heads/main",
        before: ZERO,
        after: &sha,
        message: "a change",
        deleted: false,
    }
    .to_json()
    .to_string();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store = gantry_store::Store::open_sqlite(&data.path().join("gantry.db"))
                .await
                .expect("store");
            let gantry_store::DeliveryInsert::Inserted(delivery) = store
                .record_delivery(gantry_store::NewDelivery {
                    guid: "g-crash".into(),
                    event: "push".into(),
                    project: Some("demo/app".into()),
                    git_ref: Some("refs/heads/main".into()),
                    after_sha: Some(sha.clone()),
                    payload,
                })
                .await
                .expect("delivery")
            else {
                panic!("a new delivery");
            };
            let run = store
                .create_run(gantry_store::NewRun {
                    project: "demo/app".into(),
                    event: "push".into(),
                    branch: Some("main".into()),
                    tag: None,
                    commit_sha: sha.clone(),
                    commit_message: Some("a change".into()),
                    delivery_id: Some(delivery.id),
                    rerun_of: None,
                })
                .await
                .expect("run");
            // The crash: the run is cancelled so that the restart leaves it alone.
            store
                .finish_run(run.id, gantry_store::RunStatus::Cancelled, Some("crashed"))
                .await
                .expect("finish");
        });
    let dir = data.path().to_path_buf();
    let server = TestServer::start_configured(
        vec![project("demo/app", &repo.file_url())],
        4,
        move |config| config.server.data_dir = dir,
    );
    let delivery = server.wait_delivery("g-crash");
    assert_eq!(delivery["outcome"], "run #1 queued", "{delivery:#}");
    let runs = server.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["id"], delivery["run_id"]);
}

/// A tag push is the event `tag`, matched against `on.tag.tags`; the run sees its tag.
#[test]
fn a_tag_push_runs_as_a_tag_event() {
    if !docker_available() {
        return;
    }
    let (repo, _) = repo_with(
        "on: { push: { branches: [main] }, tag: { tags: [\"v*\"] } }\nstages:\n  - { name: hello, image: local/busybox, commands: [\"echo event=$GANTRY_EVENT tag=$GANTRY_TAG branch=$GANTRY_BRANCH\"] }\n",
    );
    repo.tag("v1.2.0");
    repo.tag("nightly");
    let sha = repo.rev_parse("HEAD");
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    let push = |guid: &str, git_ref: &str| {
        let (status, body) = server.push(guid, "demo/app", &repo.file_url(), git_ref, &sha);
        assert_eq!(status, 202, "{body}");
        server.wait_delivery(guid)
    };
    let delivery = push("g-tag", "refs/tags/v1.2.0");
    assert_eq!(delivery["outcome"], "run #1 queued", "{delivery:#}");
    let run = server.wait_finished(delivery["run_id"].as_i64().expect("a run"));
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(
        (
            run["event"].as_str(),
            run["tag"].as_str(),
            run["branch"].as_str()
        ),
        (Some("tag"), Some("v1.2.0"), None),
        "{run:#}"
    );
    let (_, log, _) = server.text(&format!("/api/v1/runs/{}/stages/hello/log", run["id"]));
    assert!(log.contains("event=tag tag=v1.2.0 branch=\n"), "{log}");

    let delivery = push("g-other-tag", "refs/tags/nightly");
    assert_eq!(
        delivery["outcome"], "tag 'nightly' not in on.tag.tags [v*]",
        "{delivery:#}"
    );
    assert!(delivery["run_id"].is_null());
}
