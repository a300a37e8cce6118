use std::collections::BTreeSet;

use expect_test::expect;
use gantry_store::{Error, NewRun, Run, RunFilter, RunStatus, StageRecord, StageStatus, Store};

use crate::{TestDb, at, new_delivery, new_run};

fn stage(position: i64, name: &str, status: StageStatus) -> StageRecord {
    StageRecord {
        position,
        name: name.to_owned(),
        status,
        attempt: 1,
        exit_code: None,
        reason: None,
        started_at: None,
        finished_at: None,
    }
}

#[tokio::test]
async fn runs_are_numbered_per_project() {
    let db = TestDb::new().await;
    let delivery = db.store.record_delivery(new_delivery("g")).await.unwrap();

    let first = db
        .store
        .create_run(NewRun {
            delivery_id: Some(delivery.delivery().id),
            ..new_run("acme/web")
        })
        .await
        .unwrap();
    let second = db.store.create_run(new_run("acme/web")).await.unwrap();
    let other = db.store.create_run(new_run("acme/api")).await.unwrap();
    let rerun = db
        .store
        .create_run(NewRun {
            rerun_of: Some(first.id),
            ..new_run("acme/web")
        })
        .await
        .unwrap();

    let numbers: Vec<_> = [&first, &second, &other, &rerun]
        .iter()
        .map(|run| (run.project.as_str(), run.number))
        .collect();
    assert_eq!(
        numbers,
        [
            ("acme/web", 1),
            ("acme/web", 2),
            ("acme/api", 1),
            ("acme/web", 3)
        ]
    );
    assert_eq!(first.status, RunStatus::Queued);
    assert_eq!(first.delivery_id, Some(delivery.delivery().id));
    assert_eq!(first.started_at, None);
    assert_eq!(first.finished_at, None);
    assert!(first.stages.is_empty());
    assert_eq!(rerun.rerun_of, Some(first.id));
    assert_eq!(
        db.store.get_run(first.id).await.unwrap().as_ref(),
        Some(&first)
    );
    assert_eq!(db.store.get_run(rerun.id + 1).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_run_never_repeats_a_number() {
    let db = TestDb::new().await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move { store.create_run(new_run("acme/web")).await.unwrap() })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        assert!(numbers.insert(task.await.unwrap().number));
    }
    assert_eq!(numbers, (1..=50).collect());
}

/// Two stores on one file stand for two processes: they meet on SQLite's lock, not in a pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_run_from_two_processes_never_repeats_a_number() {
    let db = TestDb::new().await;
    let other = db.reopen().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { store.create_run(new_run("acme/web")).await.unwrap() })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        assert!(numbers.insert(task.await.unwrap().number));
    }
    assert_eq!(numbers, (1..=50).collect());
}

#[tokio::test]
async fn the_queue_is_first_in_first_out() {
    let db = TestDb::new().await;
    let mut queued = Vec::new();
    for project in ["a", "b", "a"] {
        queued.push(db.store.create_run(new_run(project)).await.unwrap().id);
    }

    let mut claimed = Vec::new();
    while let Some(run) = db.store.claim_next_queued().await.unwrap() {
        assert_eq!(run.status, RunStatus::Running);
        assert!(run.started_at.is_some());
        claimed.push(run.id);
    }
    assert_eq!(claimed, queued);
    assert_eq!(
        db.store
            .count_runs_with_status(RunStatus::Queued)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        db.store
            .count_runs_with_status(RunStatus::Running)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_hand_out_each_run_once() {
    let db = TestDb::new().await;
    let other_process = db.reopen().await;
    let mut queued = BTreeSet::new();
    for i in 0..60 {
        let run = db
            .store
            .create_run(new_run(&format!("p{}", i % 4)))
            .await
            .unwrap();
        queued.insert(run.id);
    }

    let claimers: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                other_process.clone()
            };
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(run) = store.claim_next_queued().await.unwrap() {
                    mine.push(run.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = BTreeSet::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            assert!(claimed.insert(id), "run {id} was claimed twice");
        }
    }
    assert_eq!(claimed, queued);
}

#[tokio::test]
async fn runs_learn_their_commit_and_finish() {
    let db = TestDb::new().await;
    let manual = db
        .store
        .create_run(NewRun {
            event: "manual".to_owned(),
            commit_sha: String::new(),
            commit_message: None,
            ..new_run("acme/web")
        })
        .await
        .unwrap();
    assert_eq!(manual.commit_sha, "");

    db.store
        .set_run_commit(manual.id, "fedcba9876543210", Some("Release 1.2"))
        .await
        .unwrap();
    db.store
        .finish_run(manual.id, RunStatus::Failure, Some("stage test failed"))
        .await
        .unwrap();

    let run = db.store.get_run(manual.id).await.unwrap().unwrap();
    assert_eq!(run.commit_sha, "fedcba9876543210");
    assert_eq!(run.commit_message.as_deref(), Some("Release 1.2"));
    assert_eq!(run.status, RunStatus::Failure);
    assert_eq!(run.reason.as_deref(), Some("stage test failed"));
    assert!(run.finished_at.is_some());

    let missing = manual.id + 1;
    let error = db
        .store
        .finish_run(missing, RunStatus::Success, None)
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), format!("run {missing} does not exist"));
    let error = db
        .store
        .set_run_commit(missing, "abc", None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotFound { what: "run", .. }));
    let error = db
        .store
        .finish_run(manual.id, RunStatus::Running, None)
        .await
        .unwrap_err();
    expect![[
        r#"invalid final run status "running"; expected one of: success, failure, cancelled, error"#
    ]]
    .assert_eq(&error.to_string());
}

#[tokio::test]
async fn list_runs_filters_limits_and_shows_stages() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for project in ["web", "api", "web", "web", "api"] {
        ids.push(db.store.create_run(new_run(project)).await.unwrap().id);
    }
    // web#1 succeeded, api#1 is running, the rest are queued.
    db.store
        .finish_run(ids[0], RunStatus::Success, None)
        .await
        .unwrap();
    db.store
        .upsert_stage(ids[0], &stage(1, "test", StageStatus::Success))
        .await
        .unwrap();
    db.store
        .upsert_stage(ids[0], &stage(0, "build", StageStatus::Success))
        .await
        .unwrap();
    db.store
        .upsert_stage(ids[3], &stage(0, "build", StageStatus::Pending))
        .await
        .unwrap();

    let list = async |project: Option<&str>, status: Option<RunStatus>, limit: i64| {
        let filter = RunFilter {
            project: project.map(str::to_owned),
            status,
            limit,
        };
        db.store.list_runs(&filter).await.unwrap()
    };
    let ids_of = |runs: &[Run]| -> Vec<i64> { runs.iter().map(|run| run.id).collect() };

    let all = list(None, None, 100).await;
    assert_eq!(ids_of(&all), [ids[4], ids[3], ids[2], ids[1], ids[0]]);
    let stage_names =
        |run: &Run| -> Vec<String> { run.stages.iter().map(|stage| stage.name.clone()).collect() };
    assert_eq!(stage_names(&all[4]), ["build", "test"], "pipeline order");
    assert_eq!(stage_names(&all[1]), ["build"]);
    assert!(all[0].stages.is_empty());

    assert_eq!(ids_of(&list(None, None, 2).await), [ids[4], ids[3]]);
    assert_eq!(
        ids_of(&list(Some("web"), None, 100).await),
        [ids[3], ids[2], ids[0]]
    );
    assert_eq!(ids_of(&list(Some("web"), None, 1).await), [ids[3]]);
    assert_eq!(
        ids_of(&list(None, Some(RunStatus::Queued), 100).await),
        [ids[4], ids[3], ids[2], ids[1]]
    );
    let succeeded = list(Some("web"), Some(RunStatus::Success), 100).await;
    assert_eq!(ids_of(&succeeded), [ids[0]]);
    assert_eq!(stage_names(&succeeded[0]), ["build", "test"]);
    assert!(
        list(Some("api"), Some(RunStatus::Success), 100)
            .await
            .is_empty()
    );
    assert!(list(Some("nope"), None, 100).await.is_empty());
    assert!(list(None, None, 0).await.is_empty());
}

#[tokio::test]
async fn runs_with_status_are_oldest_first_for_recovery() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(db.store.create_run(new_run("web")).await.unwrap().id);
    }
    let first = db.store.claim_next_queued().await.unwrap().unwrap();
    db.store
        .upsert_stage(first.id, &stage(0, "build", StageStatus::Running))
        .await
        .unwrap();
    db.store.claim_next_queued().await.unwrap().unwrap();

    let running = db.store.runs_with_status(RunStatus::Running).await.unwrap();
    let running_ids: Vec<_> = running.iter().map(|run| run.id).collect();
    assert_eq!(running_ids, [ids[0], ids[1]]);
    assert_eq!(running[0].stages[0].status, StageStatus::Running);
    let queued = db.store.runs_with_status(RunStatus::Queued).await.unwrap();
    assert_eq!(
        queued.iter().map(|run| run.id).collect::<Vec<_>>(),
        [ids[2], ids[3]]
    );
    assert!(
        db.store
            .runs_with_status(RunStatus::Error)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        db.store
            .count_runs_with_status(RunStatus::Running)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.store
            .count_runs_with_status(RunStatus::Queued)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.store
            .count_runs_with_status(RunStatus::Success)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn upsert_stage_inserts_then_replaces_by_name() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("web")).await.unwrap();

    db.store
        .upsert_stage(run.id, &stage(1, "test", StageStatus::Pending))
        .await
        .unwrap();
    db.store
        .upsert_stage(run.id, &stage(0, "build", StageStatus::Pending))
        .await
        .unwrap();
    let finished_build = StageRecord {
        status: StageStatus::Failure,
        attempt: 2,
        exit_code: Some(101),
        reason: Some("cargo build exited with 101".to_owned()),
        started_at: Some(at(0)),
        finished_at: Some(at(42)),
        ..stage(0, "build", StageStatus::Failure)
    };
    db.store
        .upsert_stage(run.id, &finished_build)
        .await
        .unwrap();
    db.store
        .upsert_stage(run.id, &stage(1, "test", StageStatus::Skipped))
        .await
        .unwrap();

    let stored = db.store.get_run(run.id).await.unwrap().unwrap().stages;
    assert_eq!(
        stored,
        [finished_build, stage(1, "test", StageStatus::Skipped)]
    );

    let error = db
        .store
        .upsert_stage(run.id + 1, &stage(0, "build", StageStatus::Pending))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("run {} does not exist", run.id + 1)
    );
}

#[test]
fn run_json_has_the_api_field_names() {
    let run = Run {
        id: 7,
        project: "acme/web".to_owned(),
        number: 3,
        status: RunStatus::Running,
        event: "push".to_owned(),
        branch: Some("main".to_owned()),
        tag: None,
        commit_sha: "0123abc".to_owned(),
        commit_message: Some("Fix the build".to_owned()),
        reason: None,
        created_at: at(0),
        started_at: Some(at(1)),
        finished_at: None,
        rerun_of: None,
        delivery_id: Some(5),
        stages: vec![StageRecord {
            exit_code: Some(0),
            started_at: Some(at(1)),
            finished_at: Some(at(2)),
            ..stage(0, "build", StageStatus::Success)
        }],
    };
    expect![[r#"
        {
          "id": 7,
          "project": "acme/web",
          "number": 3,
          "status": "running",
          "event": "push",
          "branch": "main",
          "tag": null,
          "commit_sha": "0123abc",
          "commit_message": "Fix the build",
          "reason": null,
          "created_at": "2025-10-09T08:53:20.123456Z",
          "started_at": "2025-10-09T08:53:21.123456Z",
          "finished_at": null,
          "rerun_of": null,
          "stages": [
            {
              "name": "build",
              "status": "success",
              "attempt": 1,
              "exit_code": 0,
              "reason": null,
              "started_at": "2025-10-09T08:53:21.123456Z",
              "finished_at": "2025-10-09T08:53:22.123456Z"
            }
          ]
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&run).unwrap());
}

#[test]
fn statuses_read_and_write_their_lowercase_names() {
    for &status in RunStatus::ALL {
        assert_eq!(status.to_string().parse::<RunStatus>().unwrap(), status);
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
    }
    for &status in StageStatus::ALL {
        assert_eq!(status.to_string().parse::<StageStatus>().unwrap(), status);
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
    }
    let finished: Vec<_> = RunStatus::ALL.iter().filter(|s| s.is_finished()).collect();
    assert_eq!(
        finished,
        [
            &RunStatus::Success,
            &RunStatus::Failure,
            &RunStatus::Cancelled,
            &RunStatus::Error
        ]
    );
    let finished: Vec<_> = StageStatus::ALL
        .iter()
        .filter(|s| s.is_finished())
        .collect();
    assert_eq!(
        finished,
        [
            &StageStatus::Success,
            &StageStatus::Failure,
            &StageStatus::Skipped,
            &StageStatus::Cancelled
        ]
    );
    expect![[r#"invalid run status "Queued"; expected one of: queued, running, success, failure, cancelled, error"#]]
        .assert_eq(&"Queued".parse::<RunStatus>().unwrap_err().to_string());
    expect![[r#"invalid stage status "done"; expected one of: pending, running, success, failure, skipped, cancelled"#]]
        .assert_eq(&"done".parse::<StageStatus>().unwrap_err().to_string());
}

#[tokio::test]
async fn a_dropped_store_leaves_the_queue_intact() {
    let db = TestDb::new().await;
    let queued = db.store.create_run(new_run("web")).await.unwrap();
    let TestDb { dir, store } = db;
    drop(store);

    let store = Store::open_sqlite(&dir.path().join("gantry.db"))
        .await
        .unwrap();
    let claimed = store.claim_next_queued().await.unwrap().unwrap();
    assert_eq!(claimed.id, queued.id);
    assert_eq!(store.create_run(new_run("web")).await.unwrap().number, 2);
}

#[tokio::test]
async fn a_failed_run_is_numbered_but_never_queued() {
    let db = TestDb::new().await;
    let first = db.store.create_run(new_run("a")).await.unwrap();
    let failed = db
        .store
        .create_failed_run(new_run("a"), "invalid .gantry.yml")
        .await
        .unwrap();
    assert_eq!(failed.number, first.number + 1);
    assert_eq!(failed.status, RunStatus::Error);
    assert_eq!(failed.reason.as_deref(), Some("invalid .gantry.yml"));
    assert!(failed.finished_at.is_some());
    assert_eq!(
        db.store.claim_next_queued().await.unwrap().map(|r| r.id),
        Some(first.id)
    );
    assert_eq!(db.store.claim_next_queued().await.unwrap(), None);
}

#[tokio::test]
async fn only_a_queued_run_is_cancelled_as_queued() {
    let db = TestDb::new().await;
    let queued = db.store.create_run(new_run("acme/web")).await.unwrap();
    let claimed = db.store.create_run(new_run("acme/web")).await.unwrap();
    // The runner claims the oldest: `queued` is running now; `claimed` still waits.
    assert_eq!(
        db.store.claim_next_queued().await.unwrap().map(|r| r.id),
        Some(queued.id)
    );
    assert!(
        !db.store
            .cancel_queued_run(queued.id, "too late")
            .await
            .unwrap()
    );
    let running = db.store.get_run(queued.id).await.unwrap().unwrap();
    assert_eq!((running.status, running.reason), (RunStatus::Running, None));

    assert!(
        db.store
            .cancel_queued_run(claimed.id, "not wanted")
            .await
            .unwrap()
    );
    let cancelled = db.store.get_run(claimed.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.reason.as_deref(), Some("not wanted"));
    assert!(cancelled.finished_at.is_some());
    // Once only, and never a claim after it.
    assert!(
        !db.store
            .cancel_queued_run(claimed.id, "again")
            .await
            .unwrap()
    );
    assert_eq!(db.store.claim_next_queued().await.unwrap(), None);
}
