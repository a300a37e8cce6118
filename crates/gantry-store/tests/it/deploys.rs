use chrono::Utc;
use gantry_store::{NewDeployment, StageRecord, StageStatus};

use crate::{TestDb, new_run};

fn deployment(cluster: &str, result: &str) -> NewDeployment {
    NewDeployment {
        id: 0,
        kind: "deploy".into(),
        run_id: None,
        stage: Some("deploy".into()),
        cluster: cluster.into(),
        namespace: "shop".into(),
        deployment: "backend".into(),
        image_before: Some("app:1".into()),
        image_after: Some("app:2".into()),
        revision_before: Some(4),
        revision_after: Some(5),
        result: result.into(),
        cause: None,
        started_at: Utc::now(),
        finished_at: Utc::now(),
    }
}

#[tokio::test]
async fn the_deploy_history_is_newest_first_and_filtered_by_cluster() {
    let db = TestDb::new().await;
    let a = db
        .store
        .record_deployment(&deployment("prod", "complete"))
        .await
        .unwrap();
    let b = db
        .store
        .record_deployment(&deployment("staging", "rolled_back"))
        .await
        .unwrap();
    let c = db
        .store
        .record_deployment(&deployment("prod", "failed"))
        .await
        .unwrap();
    let all: Vec<i64> = db
        .store
        .list_deployments(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(all, [c, b, a]);
    let prod = db.store.list_deployments(Some("prod"), 10).await.unwrap();
    assert_eq!(prod.iter().map(|d| d.id).collect::<Vec<_>>(), [c, a]);
    assert_eq!(prod[0].revision_after, Some(5));
    assert_eq!(db.store.list_deployments(None, 1).await.unwrap().len(), 1);
    // A result outside the known ones is refused by the schema.
    assert!(
        db.store
            .record_deployment(&deployment("prod", "weird"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn stage_outputs_are_kept_beside_the_stage() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("a")).await.unwrap();
    let stage = StageRecord {
        position: 0,
        name: "image".into(),
        status: StageStatus::Success,
        attempt: 1,
        exit_code: None,
        reason: None,
        started_at: None,
        finished_at: None,
    };
    db.store.upsert_stage(run.id, &stage).await.unwrap();
    let outputs = vec![
        ("image".to_string(), "r/app:1".to_string()),
        ("digest".to_string(), "r/app@sha256:ab".to_string()),
    ];
    db.store
        .set_stage_outputs(run.id, "image", &outputs)
        .await
        .unwrap();
    db.store.upsert_stage(run.id, &stage).await.unwrap();
    let read = db.store.stage_outputs(run.id).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, "image");
    let mut got = read[0].1.clone();
    got.sort();
    let mut want = outputs;
    want.sort();
    assert_eq!(got, want, "a later upsert keeps the outputs");
}

#[tokio::test]
async fn a_runs_deployments_are_found_by_its_id() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("a")).await.unwrap();
    let other = db.store.create_run(new_run("a")).await.unwrap();
    let of = |run_id: i64, kind: &str| NewDeployment {
        run_id: Some(run_id),
        kind: kind.into(),
        ..deployment("prod", "complete")
    };
    let deploy = db
        .store
        .record_deployment(&of(run.id, "deploy"))
        .await
        .unwrap();
    db.store
        .record_deployment(&of(other.id, "deploy"))
        .await
        .unwrap();
    db.store
        .record_deployment(&deployment("prod", "complete"))
        .await
        .unwrap();
    let rollback = db
        .store
        .record_deployment(&of(run.id, "rollback"))
        .await
        .unwrap();
    let found = db.store.run_deployments(run.id).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|d| (d.id, d.kind.as_str()))
            .collect::<Vec<_>>(),
        [(deploy, "deploy"), (rollback, "rollback")]
    );
    assert!(
        db.store
            .run_deployments(other.id + 1)
            .await
            .unwrap()
            .is_empty()
    );
}
