//! Pull policies. No registry is reachable here, so every pull fails, which is the point.

use gantry_docker::{Error, PullPolicy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{BUSYBOX, TestRun, containers_of, docker, run_stage};

const MISSING: &str = "local/gantry-missing-image:1";

#[tokio::test]
async fn present_image_needs_no_pull() {
    let Some(docker) = docker().await else { return };
    let (log, _receiver) = mpsc::channel(16);
    for policy in [PullPolicy::Never, PullPolicy::IfNotPresent] {
        docker.ensure_image(BUSYBOX, policy, &log).await.unwrap();
    }
}

#[tokio::test]
async fn pull_never_with_missing_image() {
    let Some(docker) = docker().await else { return };
    let (log, _receiver) = mpsc::channel(16);
    let err = docker
        .ensure_image(MISSING, PullPolicy::Never, &log)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("image '{MISSING}' is not present locally and pull policy is 'never'")
    );

    let run = TestRun::new(&docker, "never");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "build", "true");
    spec.image = MISSING.into();
    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;
    assert!(matches!(finished.result, Err(Error::ImageMissing { .. })));
}

#[tokio::test]
async fn failing_pull_reports_the_registry_message() {
    let Some(docker) = docker().await else { return };
    let (log, mut receiver) = mpsc::channel(16);
    let err = docker
        .ensure_image(MISSING, PullPolicy::IfNotPresent, &log)
        .await
        .unwrap_err();
    eprintln!("{err}");
    let Error::Pull { image, message } = &err else {
        panic!("expected a pull error, got {err:?}")
    };
    assert_eq!(image, MISSING);
    assert!(!message.is_empty());
    assert!(
        err.to_string()
            .starts_with(&format!("could not pull image '{MISSING}': "))
    );
    let first = receiver.recv().await.unwrap();
    assert_eq!(
        first.bytes,
        format!("Pulling image '{MISSING}'\n").as_bytes()
    );

    // The same through a stage, which then leaves nothing behind.
    let run = TestRun::new(&docker, "pull");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "build", "true");
    spec.image = MISSING.into();
    spec.pull = PullPolicy::IfNotPresent;
    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;
    assert!(matches!(finished.result, Err(Error::Pull { .. })));
    assert_eq!(containers_of(run.id()).await, Vec::<String>::new());
}

#[tokio::test]
async fn pull_always_pulls_even_a_present_image() {
    let Some(docker) = docker().await else { return };
    let (log, _receiver) = mpsc::channel(16);
    let err = docker
        .ensure_image(BUSYBOX, PullPolicy::Always, &log)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Pull { .. }), "{err:?}");
}
