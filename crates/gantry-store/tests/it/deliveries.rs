use std::time::Instant;

use gantry_store::{Delivery, DeliveryInsert, Error, NewDelivery, NewRun, Store};

use crate::{TestDb, new_delivery, new_run};

#[tokio::test]
async fn a_redelivered_guid_is_stored_once() {
    let db = TestDb::new().await;

    let first = db
        .store
        .record_delivery(new_delivery("guid-1"))
        .await
        .unwrap();
    let DeliveryInsert::Inserted(stored) = &first else {
        panic!("expected a new delivery, got {first:?}");
    };
    assert_eq!(stored.guid, "guid-1");
    assert_eq!(stored.event, "push");
    assert_eq!(stored.project.as_deref(), Some("acme/web"));
    assert_eq!(stored.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(stored.outcome, None);

    // GitHub redelivers with the same guid and perhaps a different body: the first one stays.
    let again = NewDelivery {
        payload: "{}".to_owned(),
        ..new_delivery("guid-1")
    };
    let second = db.store.record_delivery(again).await.unwrap();
    assert!(second.is_duplicate());
    assert_eq!(second.delivery(), stored);

    assert_eq!(db.store.list_deliveries(10).await.unwrap().len(), 1);
    assert_eq!(
        db.store
            .get_delivery_payload(stored.id)
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"delivery":"guid-1"}"#)
    );
    assert_eq!(
        db.store.get_delivery_payload(stored.id + 1).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for guid in ["a", "b", "c"] {
        let inserted = db.store.record_delivery(new_delivery(guid)).await.unwrap();
        ids.push(inserted.delivery().id);
    }
    let run = db.store.create_run(new_run("acme/web")).await.unwrap();
    db.store
        .set_delivery_outcome(ids[1], "queued", Some(run.id))
        .await
        .unwrap();
    // The server dies without closing anything; a new one opens the file.
    let TestDb { dir, store } = db;
    drop(store);
    let db = TestDb {
        store: Store::open_sqlite(&dir.path().join("gantry.db"))
            .await
            .unwrap(),
        dir,
    };

    let pending = db.store.pending_deliveries().await.unwrap();
    let guids: Vec<_> = pending.iter().map(|d| d.guid.as_str()).collect();
    assert_eq!(guids, ["a", "c"], "oldest first, decided ones left out");
    assert_eq!(
        db.store
            .get_delivery_payload(pending[1].id)
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"delivery":"c"}"#)
    );

    let listed = db.store.list_deliveries(10).await.unwrap();
    let decided = listed.iter().find(|d| d.id == ids[1]).unwrap();
    assert_eq!(decided.outcome.as_deref(), Some("queued"));
    assert_eq!(decided.run_id, Some(run.id));
}

#[tokio::test]
async fn set_delivery_outcome_checks_what_it_refers_to() {
    let db = TestDb::new().await;
    let id = db
        .store
        .record_delivery(new_delivery("a"))
        .await
        .unwrap()
        .delivery()
        .id;

    db.store
        .set_delivery_outcome(id, "ignored: tag push", None)
        .await
        .unwrap();
    let error = db
        .store
        .set_delivery_outcome(id + 1, "queued", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotFound {
                what: "delivery",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!("delivery {} does not exist", id + 1)
    );

    let error = db
        .store
        .set_delivery_outcome(id, "queued", Some(999))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "run 999 does not exist");
}

/// Outcomes written together are all written, or none.
#[tokio::test]
async fn outcomes_written_together_are_all_or_nothing() {
    let db = TestDb::new().await;
    let mut ids = Vec::new();
    for guid in ["a", "b", "c"] {
        let insert = db.store.record_delivery(new_delivery(guid)).await.unwrap();
        ids.push(insert.delivery().id);
    }
    let run = db.store.create_run(new_run("acme/web")).await.unwrap();
    db.store
        .set_delivery_outcomes(&[
            (ids[0], "branch x not in on.push.branches".to_owned(), None),
            (ids[1], "run #1 queued".to_owned(), Some(run.id)),
        ])
        .await
        .unwrap();
    let error = db
        .store
        .set_delivery_outcomes(&[
            (ids[2], "decided".to_owned(), None),
            (ids[2] + 100, "decided".to_owned(), None),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("delivery {} does not exist", ids[2] + 100)
    );
    let error = db
        .store
        .set_delivery_outcomes(&[(ids[2], "decided".to_owned(), Some(999))])
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "run 999 does not exist");

    let pending: Vec<i64> = db
        .store
        .pending_deliveries()
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(pending, [ids[2]], "the failed batches wrote nothing");
    let listed = db.store.list_deliveries(10).await.unwrap();
    let b = listed.iter().find(|d| d.id == ids[1]).unwrap();
    assert_eq!(
        (b.outcome.as_deref(), b.run_id),
        (Some("run #1 queued"), Some(run.id))
    );
    db.store.set_delivery_outcomes(&[]).await.unwrap();
}

#[tokio::test]
async fn list_deliveries_is_newest_first_and_limited() {
    let db = TestDb::new().await;
    for i in 0..5 {
        db.store
            .record_delivery(new_delivery(&format!("g{i}")))
            .await
            .unwrap();
    }
    let guids = |deliveries: Vec<Delivery>| -> Vec<String> {
        deliveries.into_iter().map(|d| d.guid).collect()
    };
    assert_eq!(
        guids(db.store.list_deliveries(3).await.unwrap()),
        ["g4", "g3", "g2"]
    );
    assert_eq!(guids(db.store.list_deliveries(100).await.unwrap()).len(), 5);
    assert!(db.store.list_deliveries(0).await.unwrap().is_empty());
    assert!(db.store.list_deliveries(-1).await.unwrap().is_empty());
}

/// Concurrent callers share group commits, and a guid sent by several of them at once (GitHub
/// redelivering while the first try is still in flight) is stored once: one caller is told it
/// inserted it, the others get the same row as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_in_one_commit_are_stored_once() {
    const GUIDS: usize = 8;
    const COPIES: usize = 8;
    let db = TestDb::new().await;
    let mut tasks = Vec::new();
    for copy in 0..COPIES {
        for guid in 0..GUIDS {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                let insert = store
                    .record_delivery(NewDelivery {
                        payload: format!(r#"{{"copy":{copy}}}"#),
                        ..new_delivery(&format!("g-{guid}"))
                    })
                    .await
                    .unwrap();
                (guid, insert)
            }));
        }
    }
    let mut inserted = vec![0; GUIDS];
    let mut ids = vec![std::collections::BTreeSet::new(); GUIDS];
    for task in tasks {
        let (guid, insert) = task.await.unwrap();
        if !insert.is_duplicate() {
            inserted[guid] += 1;
        }
        ids[guid].insert(insert.delivery().id);
    }
    assert_eq!(inserted, vec![1; GUIDS]);
    assert!(ids.iter().all(|ids| ids.len() == 1), "{ids:?}");
    assert_eq!(db.store.list_deliveries(100).await.unwrap().len(), GUIDS);
    // Durable: a fresh connection sees them all.
    let reopened = db.reopen().await;
    assert_eq!(reopened.pending_deliveries().await.unwrap().len(), GUIDS);
}

/// Prints how fast webhook ingestion is with 16 concurrent callers; a figure, not an assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_delivery_throughput_with_16_callers() {
    const CALLERS: usize = 16;
    const PER_CALLER: usize = 250;
    let db = TestDb::new().await;
    // A typical push payload is a few kilobytes.
    let payload = format!(r#"{{"commits":"{}"}}"#, "x".repeat(6_000));

    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let store = db.store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_CALLER {
                let delivery = NewDelivery {
                    payload: payload.clone(),
                    ..new_delivery(&format!("{caller}-{i}"))
                };
                let inserted = store.record_delivery(delivery).await.unwrap();
                assert!(!inserted.is_duplicate());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();

    let total = CALLERS * PER_CALLER;
    assert_eq!(db.store.pending_deliveries().await.unwrap().len(), total);
    println!(
        "record_delivery: {total} deliveries from {CALLERS} callers in {elapsed:.2?} = {:.0}/s",
        total as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn a_delivery_makes_at_most_one_run() {
    let db = TestDb::new().await;
    let DeliveryInsert::Inserted(delivery) = db
        .store
        .record_delivery(new_delivery("g-once"))
        .await
        .unwrap()
    else {
        panic!("a new guid is inserted");
    };
    assert_eq!(db.store.run_of_delivery(delivery.id).await.unwrap(), None);
    let run = db
        .store
        .create_run(NewRun {
            delivery_id: Some(delivery.id),
            ..new_run("acme/web")
        })
        .await
        .unwrap();
    // As after a crash before the outcome was recorded: the delivery is pending, its run made.
    let restarted = db.reopen().await;
    let pending = restarted.pending_deliveries().await.unwrap();
    assert_eq!(
        pending.iter().map(|d| d.id).collect::<Vec<_>>(),
        [delivery.id]
    );
    assert_eq!(
        restarted
            .run_of_delivery(delivery.id)
            .await
            .unwrap()
            .map(|r| r.id),
        Some(run.id)
    );
    // And the database refuses a second run for it.
    let second = restarted
        .create_run(NewRun {
            delivery_id: Some(delivery.id),
            ..new_run("acme/web")
        })
        .await;
    assert!(second.is_err(), "{second:?}");
    // Runs without a delivery (manual, re-runs) are not limited.
    restarted.create_run(new_run("acme/web")).await.unwrap();
    restarted.create_run(new_run("acme/web")).await.unwrap();
}
