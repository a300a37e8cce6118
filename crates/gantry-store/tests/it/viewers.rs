//! What log viewers read: a run's stage graph, and search in a stage's log.

use gantry_store::{LogLine, StageRecord, StageStatus};

use crate::{TestDb, at, new_run};

fn stage(position: i64, name: &str, status: StageStatus) -> StageRecord {
    StageRecord {
        position,
        name: name.to_owned(),
        status,
        attempt: 0,
        exit_code: None,
        reason: None,
        started_at: None,
        finished_at: None,
    }
}

#[tokio::test]
async fn stage_needs_survive_status_updates() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("web")).await.unwrap();
    for (i, name) in ["build", "unit", "lint", "package"].iter().enumerate() {
        db.store
            .upsert_stage(run.id, &stage(i as i64, name, StageStatus::Pending))
            .await
            .unwrap();
    }
    let needs = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    db.store
        .set_stage_needs(run.id, "build", &[])
        .await
        .unwrap();
    db.store
        .set_stage_needs(run.id, "unit", &needs(&["build"]))
        .await
        .unwrap();
    db.store
        .set_stage_needs(run.id, "lint", &needs(&["build"]))
        .await
        .unwrap();
    db.store
        .set_stage_needs(run.id, "package", &needs(&["unit", "lint"]))
        .await
        .unwrap();
    // A status change rewrites the stage row but keeps its needs.
    db.store
        .upsert_stage(run.id, &stage(1, "unit", StageStatus::Running))
        .await
        .unwrap();
    assert_eq!(
        db.store.stage_needs(run.id).await.unwrap(),
        vec![
            ("build".to_owned(), needs(&[])),
            ("unit".to_owned(), needs(&["build"])),
            ("lint".to_owned(), needs(&["build"])),
            ("package".to_owned(), needs(&["unit", "lint"])),
        ]
    );
    assert!(db.store.stage_needs(run.id + 1).await.unwrap().is_empty());
}

#[tokio::test]
async fn search_ignores_ascii_case_and_takes_wildcards_literally() {
    let db = TestDb::new().await;
    let run = db.store.create_run(new_run("web")).await.unwrap();
    let texts = [
        "Compiling gantry",
        "error: 100% broken",
        "ERROR in module_a",
        "moduleXa is fine",
        "a back\\slash",
        "\x1b[31merror\x1b[0m in red",
    ];
    let lines: Vec<LogLine> = texts
        .iter()
        .zip(1..)
        .map(|(text, seq)| LogLine {
            seq,
            stream: "stdout".to_owned(),
            at: at(seq),
            text: (*text).to_owned(),
        })
        .collect();
    db.store.append_logs(run.id, "build", &lines).await.unwrap();
    let search = async |needle: &str, limit: i64| {
        db.store
            .search_logs(run.id, "build", needle, limit)
            .await
            .unwrap()
    };
    assert_eq!(search("error", 10).await, [2, 3, 6]);
    assert_eq!(search("error", 2).await, [2, 3]);
    assert_eq!(search("100%", 10).await, [2]);
    assert_eq!(search("module_a", 10).await, [3], "'_' is no wildcard");
    assert_eq!(search("back\\slash", 10).await, [5]);
    assert!(search("nowhere", 10).await.is_empty());
    assert!(
        db.store
            .search_logs(run.id, "other", "error", 10)
            .await
            .unwrap()
            .is_empty()
    );
}
