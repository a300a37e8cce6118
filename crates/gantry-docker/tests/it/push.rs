//! Pushes to a real registry (`docker-registry` from the test kit, Basic auth, plain HTTP on
//! 127.0.0.1): digests as the registry serves them, refused credentials, a registry that is
//! down or comes back.

use std::time::{Duration, Instant};

use gantry_docker::{BuiltImage, Docker, Error, Output, RegistryAuth};
use gantry_testkit::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::build::{Logged, RemoveImages, build_ok, build_spec, collect_output};
use crate::support::{TestRun, docker, raw_client};

const USER: &str = "ci";
const PASSWORD: &str = "correct-horse-battery";

fn auth(registry: &Registry, password: &str) -> RegistryAuth {
    RegistryAuth {
        name: "nexus".into(),
        address: registry.address(),
        username: USER.into(),
        password: password.into(),
    }
}

async fn push(docker: &Docker, reference: &str, auth: Option<&RegistryAuth>) -> Logged<String> {
    let (sender, collector) = collect_output();
    let result = docker
        .push_image(reference, auth, sender, CancellationToken::new())
        .await;
    let log = collector.await.unwrap();
    Logged { result, log }
}

/// The registry, and Docker, or `None` when either is missing (and not under CI).
async fn setup(users: &[(&str, &str)]) -> Option<(Docker, Registry)> {
    let docker = docker().await?;
    let registry = Registry::start_or_skip(users)?;
    Some((docker, registry))
}

/// Builds a small image of its own content for `registry`, tagged with `tags`.
async fn image_for(
    run: &TestRun,
    registry: &Registry,
    repository: &str,
    tags: &[&str],
) -> (BuiltImage, RemoveImages) {
    let workspace = run
        .workspace(&[
            ("Dockerfile", "FROM local/busybox\nCOPY id.txt /id.txt\n"),
            ("id.txt", run.id()),
        ])
        .await;
    let mut spec = build_spec(run, &workspace, &registry.image(repository));
    spec.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
    build_ok(&run.docker, &spec).await
}

#[tokio::test]
async fn pushed_digests_are_what_the_registry_serves() {
    let Some((docker, registry)) = setup(&[(USER, PASSWORD)]).await else {
        return;
    };
    let run = TestRun::new(&docker, "push");
    let (image, _cleanup) = image_for(&run, &registry, "pet/backend", &["1.0", "latest"]).await;
    let auth = auth(&registry, PASSWORD);

    let mut digests = Vec::new();
    // The second tag's layers are in the registry already.
    let layer_lines = [
        "Layers: 2 uploaded, 0 already in the registry",
        "Layers: 0 uploaded, 2 already in the registry",
    ];
    for (reference, layer_line) in image.references.iter().zip(layer_lines) {
        let pushed = push(&docker, reference, Some(&auth)).await;
        let digest = pushed
            .result
            .unwrap_or_else(|err| panic!("{err}\n{}", pushed.log));
        assert!(
            pushed.log.contains(&format!("Pushing '{reference}'")),
            "{}",
            pushed.log
        );
        assert!(!pushed.log.contains("push attempt"), "{}", pushed.log);
        assert!(
            pushed.log.lines().any(|line| line == layer_line),
            "{}",
            pushed.log
        );
        digests.push(digest);
    }

    let repository = registry.image("pet/backend");
    for (tag, digest) in ["1.0", "latest"].iter().zip(&digests) {
        let manifest = registry
            .manifest("pet/backend", tag)
            .unwrap_or_else(|| panic!("the registry has no manifest for {tag}"));
        assert_eq!(
            *digest,
            format!("{repository}@{}", manifest.digest),
            "{tag}"
        );
        assert_eq!(
            manifest.media_type,
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
    // Two tags of one image: one manifest.
    assert_eq!(digests[0], digests[1]);
    let inspected = raw_client()
        .await
        .inspect_image(&image.references[0])
        .await
        .unwrap();
    assert!(
        inspected
            .repo_digests
            .unwrap_or_default()
            .contains(&digests[0]),
        "{}",
        digests[0]
    );
}

#[tokio::test]
async fn an_anonymous_registry_needs_no_credentials() {
    let Some((docker, registry)) = setup(&[]).await else {
        return;
    };
    let run = TestRun::new(&docker, "push-anonymous");
    let (image, _cleanup) = image_for(&run, &registry, "open/app", &["v1"]).await;
    let pushed = push(&docker, &image.references[0], None).await;
    let digest = pushed
        .result
        .unwrap_or_else(|err| panic!("{err}\n{}", pushed.log));
    let manifest = registry.manifest("open/app", "v1").unwrap();
    assert_eq!(
        digest,
        format!("{}@{}", registry.image("open/app"), manifest.digest)
    );
}

#[tokio::test]
async fn refused_credentials_name_registry_and_user_and_are_not_retried() {
    let Some((docker, registry)) = setup(&[(USER, PASSWORD)]).await else {
        return;
    };
    let run = TestRun::new(&docker, "push-refused");
    let (image, _cleanup) = image_for(&run, &registry, "pet/backend", &["1.0"]).await;
    let wrong = "wrong-password-4711";

    let pushed = push(&docker, &image.references[0], Some(&auth(&registry, wrong))).await;

    let err = pushed.result.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "registry 'nexus' ({}) refused the credentials of user 'ci': \
             unauthorized: authentication required",
            registry.address()
        )
    );
    assert!(matches!(err, Error::RegistryAuth { .. }));
    // One attempt: no retry announced, and the engine began a push once (each push starts
    // with a `GET /v2/`), which the registry refused.
    assert!(!pushed.log.contains("push attempt"), "{}", pushed.log);
    let pings: Vec<u16> = registry
        .requests()
        .iter()
        .filter(|request| request.path == "/v2/")
        .map(|request| request.status)
        .collect();
    assert_eq!(pings, [401]);
    assert!(registry.refused_logins().iter().all(|user| user == USER));
    // The password shows up nowhere.
    for text in [&err.to_string(), &format!("{err:?}"), &pushed.log] {
        assert!(!text.contains(wrong), "{text}");
    }
    assert!(registry.manifest("pet/backend", "1.0").is_none());

    // Without credentials, the error says so.
    let pushed = push(&docker, &image.references[0], None).await;
    assert_eq!(
        pushed.result.unwrap_err().to_string(),
        format!(
            "registry {} refused an anonymous push: no basic auth credentials; \
             name a registry with credentials in the stage",
            registry.address()
        )
    );
}

#[tokio::test]
async fn a_stopped_registry_is_retried_then_reported() {
    let Some((docker, mut registry)) = setup(&[(USER, PASSWORD)]).await else {
        return;
    };
    let run = TestRun::new(&docker, "push-stopped");
    let (image, _cleanup) = image_for(&run, &registry, "pet/backend", &["1.0"]).await;
    registry.stop();

    let started = Instant::now();
    let pushed = push(
        &docker,
        &image.references[0],
        Some(&auth(&registry, PASSWORD)),
    )
    .await;
    let took = started.elapsed();

    let err = pushed.result.unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "could not push '{}' (3 attempts): ",
            image.references[0]
        )) && message.contains("connection refused"),
        "{message}"
    );
    assert!(matches!(err, Error::Push { attempts: 3, .. }));
    let retries: Vec<&str> = pushed
        .log
        .lines()
        .filter(|line| line.starts_with("push attempt"))
        .collect();
    assert_eq!(retries.len(), 2, "{}", pushed.log);
    assert!(
        retries[0].starts_with("push attempt 2 of 3 after: ")
            && retries[0].contains("connection refused"),
        "{}",
        retries[0]
    );
    assert!(
        retries[1].starts_with("push attempt 3 of 3 after: "),
        "{}",
        retries[1]
    );
    // The pauses between the attempts: 1 s, then 2 s.
    assert!(took >= Duration::from_secs(3), "took {took:?}");
    assert!(!message.contains(PASSWORD) && !pushed.log.contains(PASSWORD));
}

#[tokio::test]
async fn a_registry_that_comes_back_gets_the_push() {
    let Some((docker, mut registry)) = setup(&[(USER, PASSWORD)]).await else {
        return;
    };
    let run = TestRun::new(&docker, "push-back");
    let (image, _cleanup) = image_for(&run, &registry, "pet/backend", &["1.0"]).await;
    registry.stop();

    let (sender, mut receiver) = mpsc::channel::<Output>(64);
    let pushing = {
        let docker = docker.clone();
        let reference = image.references[0].clone();
        let auth = auth(&registry, PASSWORD);
        tokio::spawn(async move {
            docker
                .push_image(&reference, Some(&auth), sender, CancellationToken::new())
                .await
        })
    };
    let mut log = String::new();
    let mut restarted = false;
    while let Some(output) = receiver.recv().await {
        log.push_str(&String::from_utf8_lossy(&output.bytes));
        // The first retry is announced before its pause: time enough to come back.
        if !restarted && log.contains("push attempt 2 of 3 after: ") {
            registry.restart();
            restarted = true;
        }
    }
    let digest = pushing
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("{err}\n{log}"));
    assert!(restarted, "{log}");
    let manifest = registry.manifest("pet/backend", "1.0").unwrap();
    assert_eq!(
        digest,
        format!("{}@{}", registry.image("pet/backend"), manifest.digest)
    );
}

#[tokio::test]
async fn cancelling_stops_the_retries() {
    let Some((docker, mut registry)) = setup(&[]).await else {
        return;
    };
    let run = TestRun::new(&docker, "push-cancel");
    let (image, _cleanup) = image_for(&run, &registry, "pet/backend", &["1.0"]).await;
    registry.stop();
    let (sender, mut receiver) = mpsc::channel::<Output>(64);
    let cancel = CancellationToken::new();
    let pushing = {
        let docker = docker.clone();
        let reference = image.references[0].clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { docker.push_image(&reference, None, sender, cancel).await })
    };
    let mut log = String::new();
    while let Some(output) = receiver.recv().await {
        log.push_str(&String::from_utf8_lossy(&output.bytes));
        if log.contains("push attempt 2 of 3") {
            break;
        }
    }
    let cancelled_at = Instant::now();
    cancel.cancel();
    let result = pushing.await.unwrap();
    assert!(
        matches!(result, Err(Error::Cancelled { .. })),
        "{result:?}\n{log}"
    );
    // Well within the 1 s pause before the second attempt.
    assert!(cancelled_at.elapsed() < Duration::from_millis(900));
}
