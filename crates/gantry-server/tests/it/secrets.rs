//! The secret store through `/api/v1/projects/{project}/secrets`: set, list, delete; sealed at
//! rest; given to the stages that name them, masked in their logs.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::support::*;

/// `demo/app`, encoded as one path segment.
const SECRETS: &str = "/api/v1/projects/demo%2Fapp/secrets";

/// PUT and DELETE, which the shared helpers do not send.
fn send(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("{}{path}", server.base);
    let auth = format!("Bearer {TOKEN}");
    let result = match method {
        "PUT" => {
            let request = agent.put(&url).header("Authorization", &auth);
            match body {
                Some(body) => request.send_json(body),
                None => request.send_empty(),
            }
        }
        "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
        _ => panic!("unexpected method {method}"),
    };
    let mut response = result.expect("request");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn set(server: &TestServer, name: &str, value: &str) -> (u16, Value) {
    send(
        server,
        "PUT",
        &format!("{SECRETS}/{name}"),
        Some(json!({ "value": value })),
    )
}

fn names(server: &TestServer) -> Vec<String> {
    let (status, body) = server.get(SECRETS);
    assert_eq!(status, 200, "{body}");
    body["secrets"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// Every byte of the database: the main file and the write-ahead log.
fn database_bytes(server: &TestServer) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(server.data.path()).expect("data dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with("gantry.db") {
            bytes.extend(std::fs::read(entry.path()).expect("read database"));
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[test]
fn secrets_are_set_listed_and_removed_but_never_shown() {
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    let first = "first-plaintext-value-7d1e";
    let second = "second-plaintext-value-93a0";

    assert_eq!(names(&server), Vec::<String>::new());
    assert_eq!(set(&server, "DEPLOY_TOKEN", first), (204, json!("")));
    assert_eq!(set(&server, "A_KEY", "another-value-55c2").0, 204);
    let (status, listed) = server.get(SECRETS);
    assert_eq!(status, 200);
    let entry = &listed["secrets"][1];
    assert_eq!(entry["name"], "DEPLOY_TOKEN");
    let mut keys: Vec<_> = entry.as_object().expect("an object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["created_at", "name", "updated_at"], "never a value");
    assert_eq!(entry["created_at"], entry["updated_at"]);

    // Setting it again replaces it.
    assert_eq!(set(&server, "DEPLOY_TOKEN", second).0, 204);
    assert_eq!(names(&server), ["A_KEY", "DEPLOY_TOKEN"]);
    let (_, relisted) = server.get(SECRETS);
    let entry = &relisted["secrets"][1];
    assert_eq!(entry["created_at"], listed["secrets"][1]["created_at"]);
    assert_ne!(entry["updated_at"], entry["created_at"]);
    for text in [listed.to_string(), relisted.to_string()] {
        assert!(!text.contains(first) && !text.contains(second), "{text}");
    }

    // At rest: sealed in the database, under a key only the owner may read.
    let stored = database_bytes(&server);
    assert!(
        contains(&stored, "DEPLOY_TOKEN"),
        "the secret is in the file"
    );
    for plaintext in [first, second, "another-value-55c2"] {
        assert!(
            !contains(&stored, plaintext),
            "{plaintext} is stored in clear"
        );
    }
    let key_file = server.data.path().join("secret.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(
        send(&server, "DELETE", &format!("{SECRETS}/DEPLOY_TOKEN"), None),
        (204, json!(""))
    );
    assert_eq!(names(&server), ["A_KEY"]);
    assert_eq!(
        send(&server, "DELETE", &format!("{SECRETS}/DEPLOY_TOKEN"), None),
        (
            404,
            json!({"error": "project 'demo/app' has no secret DEPLOY_TOKEN"})
        )
    );
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let server = TestServer::start(vec![project("demo/app", "file:///nonexistent")]);
    let error = |(status, body): (u16, Value)| (status, body["error"].as_str().map(String::from));
    let message = |text: &str| Some(text.to_owned());

    assert_eq!(
        error(set(&server, "deploy-token", "v")),
        (
            400,
            message(
                "invalid secret name 'deploy-token': use upper-case letters, digits and '_', \
                 not starting with a digit (e.g. API_TOKEN)"
            )
        )
    );
    assert_eq!(error(set(&server, "1TOKEN", "v")).0, 400);
    assert_eq!(
        error(send(&server, "DELETE", &format!("{SECRETS}/lower"), None)).0,
        400
    );
    assert_eq!(
        error(set(&server, "TOKEN", "")),
        (400, message("the value of secret TOKEN is empty"))
    );
    let (status, body) = send(
        &server,
        "PUT",
        &format!("{SECRETS}/TOKEN"),
        Some(json!({"valeu": "x"})),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("valeu"),
        "{body}"
    );
    assert_eq!(
        error(send(&server, "PUT", &format!("{SECRETS}/TOKEN"), None)).0,
        400
    );

    let not_configured = (404, message("project 'nope/nope' is not configured"));
    assert_eq!(
        error(server.get("/api/v1/projects/nope%2Fnope/secrets")),
        not_configured
    );
    assert_eq!(
        error(send(
            &server,
            "PUT",
            "/api/v1/projects/nope%2Fnope/secrets/TOKEN",
            Some(json!({"value": "x"}))
        )),
        not_configured
    );
    assert_eq!(
        error(send(
            &server,
            "DELETE",
            "/api/v1/projects/nope%2Fnope/secrets/TOKEN",
            None
        )),
        not_configured
    );

    let (status, _) = server.request("GET", SECRETS, None, None);
    assert_eq!(status, 401, "the token is needed");
    assert!(names(&server).is_empty(), "nothing was stored");
}

#[test]
fn a_stage_sees_stored_secrets_and_its_log_masks_them() {
    if !docker_available() {
        return;
    }
    // `tr` prints the values changed, so the log shows that the container got them; echoing
    // them as they are shows the mask.
    let (repo, _) = repo_with(
        "stages:\n  - name: show\n    image: local/busybox\n    secrets: [DEPLOY_TOKEN, API_TOKEN]\n    commands:\n      - echo $DEPLOY_TOKEN\n      - echo \"$DEPLOY_TOKEN\" | tr a-z A-Z\n      - echo $API_TOKEN\n      - echo \"$API_TOKEN\" | tr a-z A-Z\n",
    );
    // The project's gantry.toml already has API_TOKEN; the stored one wins.
    let server = TestServer::start(vec![project("demo/app", &repo.file_url())]);
    assert_eq!(set(&server, "DEPLOY_TOKEN", "stored-deploy-value").0, 204);
    assert_eq!(set(&server, "API_TOKEN", "stored-api-override").0, 204);

    let (status, run) = server.post(
        "/api/v1/runs",
        json!({"project": "demo/app", "branch": "main"}),
    );
    assert_eq!(status, 201, "{run}");
    let run = server.wait_finished(run["id"].as_i64().expect("id"));
    assert_eq!(run["status"], "success", "{run:#}");
    let (status, log, _) = server.text(&format!("/api/v1/runs/{}/stages/show/log", run["id"]));
    assert_eq!(status, 200);
    assert!(
        log.contains("+ echo $DEPLOY_TOKEN\n***\n"),
        "the value is masked: {log}"
    );
    assert!(log.contains("\nSTORED-DEPLOY-VALUE\n"), "{log}");
    assert!(log.contains("+ echo $API_TOKEN\n***\n"), "{log}");
    assert!(
        log.contains("\nSTORED-API-OVERRIDE\n"),
        "the stored secret overrides gantry.toml's: {log}"
    );
    assert!(!log.contains("stored-deploy-value") && !log.contains("stored-api-override"));
    assert!(!contains(&database_bytes(&server), "stored-deploy-value"));
}
