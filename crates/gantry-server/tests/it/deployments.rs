//! Deploy stages and manual rollbacks against the Kubernetes API emulator: the history they
//! leave (`/api/v1/deployments`), the run object's `deploy`, the rollback and history endpoints,
//! and what they refuse. kubectl checks that the cluster agrees.

use std::time::Duration;

use gantry_testkit::kube::{Emulator, Kubectl, Resource};
use serde_json::{Value, json};

use crate::support::*;

pub const NS: &str = "shop";
pub const NAME: &str = "backend";
pub const ROLLBACK: &str = "/api/v1/deployments/prod/shop/backend/rollback";
const HISTORY: &str = "/api/v1/deployments/prod/shop/backend/history";

/// An emulator where `shop/backend` went through `images`, one revision each.
pub fn shop_backend(images: &[&str]) -> Emulator {
    let emulator = Emulator::start();
    for image in images {
        emulator.apply_deployment(NS, NAME, image, 2);
        emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    }
    emulator
}

fn cluster(name: &str, emulator: &Emulator) -> gantry_config::Cluster {
    gantry_config::Cluster {
        name: name.into(),
        kubeconfig: Some(emulator.kubeconfig_path().to_path_buf()),
        context: None,
        in_cluster: false,
    }
}

/// A server whose cluster `prod` is `emulator`.
pub fn server_for(projects: Vec<gantry_config::Project>, emulator: &Emulator) -> TestServer {
    let prod = cluster("prod", emulator);
    TestServer::start_configured(projects, 4, move |config| config.clusters.push(prod))
}

fn deploy_pipeline(image: &str) -> String {
    format!(
        "stages:\n  - name: ship\n    deploy: {{ cluster: prod, namespace: {NS}, deployment: {NAME}, image: \"{image}\", timeout: 60s }}\n"
    )
}

/// Triggers a run of `main` and waits for its end.
fn run_to_end(server: &TestServer) -> Value {
    let (status, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    assert_eq!(status, 201, "{run}");
    server.wait_finished(run["id"].as_i64().expect("a run id"))
}

pub fn image(emulator: &Emulator) -> String {
    let deployment = emulator
        .get(Resource::Deployment, NS, NAME)
        .expect("the deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("an image")
        .to_owned()
}

pub fn deployments(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/api/v1/deployments{query}"));
    assert_eq!(status, 200, "{body}");
    body["deployments"].as_array().cloned().unwrap_or_default()
}

/// An entry's `kind result image_before->image_after revision_before->revision_after`.
fn summary(entry: &Value) -> String {
    let text = |key: &str| entry[key].as_str().unwrap_or("-").to_owned();
    let number = |key: &str| {
        entry[key]
            .as_i64()
            .map_or("-".to_owned(), |n| n.to_string())
    };
    format!(
        "{} {} {}->{} {}->{}",
        text("kind"),
        text("result"),
        text("image_before"),
        text("image_after"),
        number("revision_before"),
        number("revision_after"),
    )
}

/// The value of the `/metrics` sample written exactly as `series`, if present.
fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let (status, text, _) = server.text("/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `kubectl rollout history` as (revision, change cause or `<none>`); None (after a note)
/// without kubectl.
fn kubectl_history(emulator: &Emulator) -> Option<Vec<(i64, String)>> {
    let kubectl = Kubectl::new(emulator)?;
    let rows = kubectl.rollout_history(NS, NAME);
    Some(
        rows.into_iter()
            .map(|(revision, cause)| (revision, cause.unwrap_or_else(|| "<none>".to_owned())))
            .collect(),
    )
}

/// The API's history as (revision, change cause or `<none>`), like kubectl's.
fn api_history(server: &TestServer, path: &str) -> Vec<(i64, String)> {
    let (status, body) = server.get(path);
    assert_eq!(status, 200, "{body}");
    body["revisions"]
        .as_array()
        .expect("revisions")
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().expect("a revision"),
                r["change_cause"].as_str().unwrap_or("<none>").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_deploy_stage_rolls_out_and_is_recorded() {
    if !docker_available() {
        return;
    }
    let emulator = shop_backend(&["backend:1"]);
    let (repo, sha) = repo_with(&deploy_pipeline("backend:2"));
    let server = server_for(vec![project("demo/app", &repo.file_url())], &emulator);

    let run = run_to_end(&server);
    assert_eq!(run["status"], "success", "{run:#}");
    let stage = &run["stages"][0];
    assert_eq!(stage["outputs"], json!({}), "{run:#}");
    assert_eq!(
        stage["deploy"],
        json!({
            "cluster": "prod", "namespace": NS, "deployment": NAME,
            "image_before": "backend:1", "image_after": "backend:2",
            "revision_before": 1, "revision_after": 2, "result": "complete",
        })
    );
    assert_eq!(image(&emulator), "backend:2");

    // The runs list shows the same stage.
    let listed = server.runs();
    assert_eq!(listed[0]["stages"][0]["deploy"], stage["deploy"]);
    assert_eq!(listed[0]["stages"][0]["outputs"], json!({}));

    let history = deployments(&server, "");
    assert_eq!(history.len(), 1, "{history:#?}");
    let entry = &history[0];
    assert_eq!(summary(entry), "deploy complete backend:1->backend:2 1->2");
    assert_eq!(
        (&entry["run_id"], &entry["stage"], &entry["cluster"]),
        (&run["id"], &json!("ship"), &json!("prod"))
    );
    assert!(entry["cause"].is_null(), "{entry}");
    let cause = format!("gantry demo/app #1 {}", &sha[..7]);
    assert_eq!(
        api_history(&server, HISTORY),
        [(1, "<none>".to_owned()), (2, cause)]
    );
    assert!(deployments(&server, "?cluster=staging").is_empty());
}

#[test]
fn a_crashing_image_is_rolled_back_and_both_are_recorded() {
    if !docker_available() {
        return;
    }
    let emulator = shop_backend(&["backend:1"]);
    let (repo, _) = repo_with(&deploy_pipeline("backend:crash"));
    let server = server_for(vec![project("demo/app", &repo.file_url())], &emulator);

    let run = run_to_end(&server);
    assert_eq!(run["status"], "failure", "{run:#}");
    let stage = &run["stages"][0];
    let reason = stage["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("rolled back to revision 1: ") && reason.contains("CrashLoopBackOff"),
        "{run:#}"
    );
    assert_eq!(stage["deploy"]["result"], "rolled_back", "{run:#}");
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    assert_eq!(image(&emulator), "backend:1");

    // Newest first: the revert, then the failed rollout.
    let history = deployments(&server, "?cluster=prod");
    let summaries: Vec<String> = history.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            "rollback complete backend:crash->backend:1 2->1",
            "deploy rolled_back backend:1->backend:crash 1->2",
        ]
    );
    let cause = history[1]["cause"].as_str().unwrap_or_default();
    assert!(reason.ends_with(cause), "{cause} / {reason}");
    assert_eq!(history[0]["cause"], "automatic rollback");
    assert!(history.iter().all(|e| e["run_id"] == run["id"]));
    let automatic = r#"{cluster="prod",trigger="automatic",result="success"}"#;
    assert_eq!(
        metric(&server, &format!("gantry_rollbacks_total{automatic}")),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &server,
            &format!("gantry_rollback_duration_seconds_count{automatic}")
        ),
        Some(1.0)
    );
}

#[test]
fn a_deploy_that_cannot_start_is_in_the_history_with_its_cause() {
    if !docker_available() {
        return;
    }
    let emulator = shop_backend(&["backend:1"]);
    let pipeline =
        deploy_pipeline("backend:2").replace("deployment: backend", "deployment: frontend");
    let (repo, _) = repo_with(&pipeline);
    let server = server_for(vec![project("demo/app", &repo.file_url())], &emulator);

    let run = run_to_end(&server);
    assert_eq!(run["status"], "failure", "{run:#}");
    let reason = run["stages"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("deploy of shop/frontend failed: "),
        "{reason}"
    );
    let history = deployments(&server, "");
    assert_eq!(
        history.iter().map(summary).collect::<Vec<_>>(),
        ["deploy failed -->backend:2 -->-"]
    );
    let cause = history[0]["cause"].as_str().unwrap_or_default();
    assert!(
        reason.ends_with(cause) && cause.contains("frontend"),
        "{cause} / {reason}"
    );
    assert_eq!(history[0]["run_id"], run["id"]);
    assert_eq!(
        metric(
            &server,
            r#"gantry_deploys_total{cluster="prod",result="failure"}"#
        ),
        Some(1.0)
    );
}

/// The restart count in a reason like `... CrashLoopBackOff (exit code 1), restarted 4 times`.
fn restarts_in(reason: &str) -> u32 {
    let (_, after) = reason
        .rsplit_once("restarted ")
        .unwrap_or_else(|| panic!("no restart count in {reason:?}"));
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no restart count in {reason:?}"))
}

#[test]
fn the_stage_fail_fast_sets_how_many_crashes_fail_the_rollout() {
    if !docker_available() {
        return;
    }
    // A crashing container restarts every 500 ms: seeing 3 restarts at the first look would
    // take a second's lag, and the default threshold (1) fails at the first crash.
    let emulator = Emulator::builder()
        .restart_every(Duration::from_millis(500))
        .start();
    emulator.apply_deployment(NS, NAME, "backend:1", 2);
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    let pipeline = deploy_pipeline("backend:crash").replace(
        " timeout: 60s }",
        " timeout: 60s, fail_fast: { crash_loop_restarts: 3 } }",
    );
    let (repo, _) = repo_with(&pipeline);
    let server = server_for(vec![project("demo/app", &repo.file_url())], &emulator);

    let run = run_to_end(&server);
    let reason = run["stages"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("rolled back to revision 1: ") && reason.contains("CrashLoopBackOff"),
        "{run:#}"
    );
    assert!(restarts_in(reason) >= 3, "{reason}");
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(10));
    assert_eq!(image(&emulator), "backend:1");
}

#[test]
fn manual_rollbacks_to_the_previous_and_to_a_given_revision() {
    let emulator = shop_backend(&["backend:1", "backend:2", "backend:3"]);
    let server = server_for(Vec::new(), &emulator);

    let (status, entry) = server.post(ROLLBACK, json!({}));
    assert_eq!(status, 200, "{entry}");
    assert_eq!(
        summary(&entry),
        "rollback complete backend:3->backend:2 3->2"
    );
    assert_eq!(entry["current_revision"], 4);
    assert_eq!(entry["cause"], "manual rollback");
    assert_eq!(
        metric(
            &server,
            r#"gantry_rollbacks_total{cluster="prod",trigger="manual",result="success"}"#
        ),
        Some(1.0)
    );
    assert!(entry["run_id"].is_null() && entry["id"].as_i64().is_some());
    assert_eq!(image(&emulator), "backend:2");
    let none = "<none>".to_owned();
    assert_eq!(
        api_history(&server, HISTORY),
        [(1, none.clone()), (3, none.clone()), (4, none.clone())]
    );
    if let Some(kubectl) = kubectl_history(&emulator) {
        assert_eq!(kubectl, api_history(&server, HISTORY));
    }

    // No body at all is the same as `{}`; here, a given revision.
    let (status, entry) = server.post(ROLLBACK, json!({"to_revision": 1}));
    assert_eq!(status, 200, "{entry}");
    assert_eq!(
        summary(&entry),
        "rollback complete backend:2->backend:1 4->1"
    );
    assert_eq!(entry["current_revision"], 5);
    assert_eq!(image(&emulator), "backend:1");
    let (status, body) = server.get(HISTORY);
    assert_eq!(status, 200);
    assert_eq!(
        body["revisions"],
        json!([
            {"revision": 3, "change_cause": null, "images": ["backend:3"], "current": false},
            {"revision": 4, "change_cause": null, "images": ["backend:2"], "current": false},
            {"revision": 5, "change_cause": null, "images": ["backend:1"], "current": true},
        ])
    );
    if let Some(kubectl) = kubectl_history(&emulator) {
        assert_eq!(kubectl, [(3, none.clone()), (4, none.clone()), (5, none)]);
    }
    let (status, entry) = server.request("POST", ROLLBACK, None, Some(TOKEN));
    assert_eq!(status, 200, "{entry}");
    assert_eq!(
        summary(&entry),
        "rollback complete backend:1->backend:2 5->4"
    );

    let history = deployments(&server, "?limit=2");
    let summaries: Vec<String> = history.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            "rollback complete backend:1->backend:2 5->4",
            "rollback complete backend:2->backend:1 4->1",
        ]
    );
    assert_eq!(deployments(&server, "?cluster=prod").len(), 3);
}

#[test]
fn rollbacks_that_cannot_be_done_are_refused_clearly() {
    let emulator = shop_backend(&["backend:1", "backend:2"]);
    let down = Emulator::start();
    down.set_unreachable(true);
    let prod = cluster("prod", &emulator);
    let unreachable = cluster("down", &down);
    let server = TestServer::start_configured(Vec::new(), 4, move |config| {
        config.clusters.extend([prod, unreachable]);
    });
    let error = |(status, body): (u16, Value)| {
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    };

    assert_eq!(
        error(server.post(ROLLBACK, json!({"to_revision": 7}))),
        (
            400,
            "deployment shop/backend has no revision 7 (revisions: 1, 2)".to_owned()
        )
    );
    assert_eq!(
        error(server.post(ROLLBACK, json!({"to_revision": 0}))),
        (
            400,
            "to_revision 0 is not a revision: revisions count from 1".to_owned()
        )
    );
    let (status, body) = server.post(ROLLBACK, json!({"revision": 1}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field `revision`"),
        "{body}"
    );
    assert_eq!(
        error(server.post("/api/v1/deployments/prod/shop/frontend/rollback", json!({}))),
        (404, "deployment shop/frontend not found".to_owned())
    );
    assert_eq!(
        error(server.get("/api/v1/deployments/prod/elsewhere/backend/history")),
        (404, "deployment elsewhere/backend not found".to_owned())
    );
    assert_eq!(
        error(server.post(
            "/api/v1/deployments/nowhere/shop/backend/rollback",
            json!({})
        )),
        (
            404,
            "cluster 'nowhere' is not configured (clusters: default, prod, down)".to_owned()
        )
    );
    let (status, message) =
        error(server.post("/api/v1/deployments/down/shop/backend/rollback", json!({})));
    assert_eq!(status, 502, "{message}");
    assert_eq!(
        message,
        format!(
            "cannot reach cluster 'down' at {}: connection refused",
            down.url()
        )
    );
    let (status, message) = error(server.get("/api/v1/deployments/down/shop/backend/history"));
    assert_eq!(status, 502, "{message}");

    emulator.patch_deployment(NS, NAME, &json!({"spec": {"paused": true}}));
    assert_eq!(
        error(server.post(ROLLBACK, json!({}))),
        (
            409,
            "deployment shop/backend is paused; resume it first (kubectl rollout resume deployment/backend -n shop)"
                .to_owned()
        )
    );
    assert_eq!(image(&emulator), "backend:2");
    // Like every change, a rollback needs the token.
    let (status, _) = server.request("POST", ROLLBACK, Some(json!({})), None);
    assert_eq!(status, 401);
    assert_eq!(
        error(server.get("/api/v1/deployments?limit=0")),
        (400, "limit must be between 1 and 1000".to_owned())
    );
    // Nothing was done, so nothing was recorded.
    assert!(deployments(&server, "").is_empty());
}
