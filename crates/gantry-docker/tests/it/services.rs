//! Services: reachable by name from the stage, gone with it.

use gantry_docker::{PullPolicy, ServiceSpec, Termination};
use tokio_util::sync::CancellationToken;

use crate::support::{BUSYBOX, TestRun, containers_of, docker, resources_of, run_stage};

/// Polls until the service answers: it starts concurrently with the stage.
const FETCH: &str = r#"
for i in $(seq 1 100); do
  if wget -q -O - http://web:8080/ 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "service never answered" >&2
exit 1
"#;

fn web_service() -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        image: BUSYBOX.into(),
        pull: PullPolicy::Never,
        env: vec![("GREETING".into(), "hello from the service".into())],
        commands: vec![
            "mkdir -p /www".into(),
            r#"echo "$GREETING" > /www/index.html"#.into(),
            "exec httpd -f -p 8080 -h /www".into(),
        ],
    }
}

#[tokio::test]
async fn service_is_reachable_by_name() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "service");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "test", FETCH);
    spec.services = vec![web_service()];

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    assert_eq!(
        finished.termination(),
        &Termination::Exited(0),
        "stderr: {}",
        finished.text(gantry_docker::Stream::Stderr)
    );
    assert_eq!(finished.stdout(), "hello from the service\n");
    // The service went with the stage; the network stays for the run's next stages.
    assert_eq!(containers_of(run.id()).await, Vec::<String>::new());
    let left = resources_of(run.id()).await;
    assert!(left.iter().any(|r| r.starts_with("network")), "{left:?}");
}

#[tokio::test]
async fn two_stages_share_the_run_network() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "service-twice");
    let workspace = run.workspace(&[]).await;
    let mut first = run.stage(&workspace, "first", FETCH);
    first.services = vec![web_service()];
    let mut second = run.stage(&workspace, "second", FETCH);
    second.services = vec![web_service()];

    // In parallel: both look for the network at once, and only one may create it.
    let (a, b) = tokio::join!(
        run_stage(&docker, &first, CancellationToken::new()),
        run_stage(&docker, &second, CancellationToken::new()),
    );

    assert_eq!(a.termination(), &Termination::Exited(0));
    assert_eq!(b.termination(), &Termination::Exited(0));
    let networks = resources_of(run.id())
        .await
        .into_iter()
        .filter(|r| r.starts_with("network"))
        .count();
    assert_eq!(networks, 1);
}

#[tokio::test]
async fn missing_service_image_fails_and_cleans_up() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "service-missing");
    let workspace = run.workspace(&[]).await;
    let mut spec = run.stage(&workspace, "test", "true");
    spec.services = vec![
        web_service(),
        ServiceSpec {
            name: "db".into(),
            image: "local/not-there:1".into(),
            pull: PullPolicy::Never,
            env: Vec::new(),
            commands: Vec::new(),
        },
    ];

    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;

    let err = finished.result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "image 'local/not-there:1' is not present locally and pull policy is 'never'"
    );
    assert_eq!(containers_of(run.id()).await, Vec::<String>::new());
}
