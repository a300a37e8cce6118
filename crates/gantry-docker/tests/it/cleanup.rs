//! Leftovers and remove_run.

use gantry_docker::{Leftover, Termination};
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{
    BUSYBOX, TestRun, containers_of, docker, owner, raw_client, resources_of, run_stage,
};

/// Starts a labelled container the way a stage would, then forgets about it.
async fn crashed_stage_container(run: &gantry_docker::RunLabels) {
    use bollard::models::ContainerCreateBody;
    let client = raw_client().await;
    let labels = HashMap::from([
        ("gantry.run".to_owned(), run.run_id.clone()),
        ("gantry.owner".to_owned(), run.owner.clone()),
    ]);
    let created = client
        .create_container(
            None,
            ContainerCreateBody {
                image: Some(BUSYBOX.into()),
                cmd: Some(vec!["sleep".into(), "600".into()]),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client.start_container(&created.id, None).await.unwrap();
}

/// Polls until `condition` holds, for at most `limit`.
async fn eventually<F: Future<Output = bool>>(
    limit: Duration,
    mut condition: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn remove_run_leaves_nothing() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "remove");
    let workspace = run.workspace(&[("a.txt", "a")]).await;
    let mut spec = run.stage(&workspace, "test", "true");
    spec.services = vec![gantry_docker::ServiceSpec {
        name: "idle".into(),
        image: BUSYBOX.into(),
        pull: gantry_docker::PullPolicy::Never,
        env: Vec::new(),
        commands: vec!["sleep 600".into()],
    }];
    let finished = run_stage(&docker, &spec, CancellationToken::new()).await;
    assert_eq!(finished.termination(), &Termination::Exited(0));
    // A run that crashed mid-stage leaves a running container behind.
    crashed_stage_container(&run.labels).await;
    let left = resources_of(run.id()).await;
    assert!(left.iter().any(|r| r.starts_with("network")), "{left:?}");
    assert!(left.iter().any(|r| r.starts_with("volume")), "{left:?}");
    let leftovers = docker.leftovers(&owner()).await.unwrap();
    assert!(
        leftovers.contains(&Leftover {
            run_id: run.id().to_owned(),
            pid: Some(std::process::id())
        }),
        "{leftovers:?}"
    );

    docker.remove_run(run.id()).await.unwrap();

    assert_eq!(resources_of(run.id()).await, Vec::<String>::new());
    let leftovers = docker.leftovers(&owner()).await.unwrap();
    assert!(
        !leftovers.iter().any(|l| l.run_id == run.id()),
        "{leftovers:?}"
    );
    // Removing again is fine.
    docker.remove_run(run.id()).await.unwrap();
}

#[tokio::test]
async fn leftovers_of_another_owner_are_not_listed() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "owner");
    run.workspace(&[]).await;
    let leftovers = docker.leftovers("gantry-it-nobody").await.unwrap();
    assert!(!leftovers.iter().any(|l| l.run_id == run.id()));
}

#[tokio::test]
async fn dropping_run_stage_still_removes_its_containers() {
    let Some(docker) = docker().await else { return };
    let run = TestRun::new(&docker, "dropped");
    let workspace = run.workspace(&[]).await;
    let spec = run.stage(&workspace, "long", "sleep 600");
    let stage = tokio::spawn({
        let docker = docker.clone();
        async move { run_stage(&docker, &spec, CancellationToken::new()).await }
    });
    let id = run.id().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !containers_of(&id).await.is_empty()
        })
        .await
    );

    stage.abort();

    assert!(
        eventually(Duration::from_secs(5), || async {
            containers_of(&id).await.is_empty()
        })
        .await,
        "{:?}",
        containers_of(&id).await
    );
}
