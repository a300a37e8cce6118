use chrono::{TimeDelta, Utc};

use crate::TestDb;

#[tokio::test]
async fn sessions_are_stored_found_expired_bounded_and_deleted() {
    let db = TestDb::new().await;
    let store = &db.store;
    let now = Utc::now();
    let long_ago = now - TimeDelta::days(1);
    let key = |n: u8| [n; 32];
    assert_eq!(store.session(&key(1)).await.unwrap(), None);

    store
        .create_session(
            &key(1),
            "csrf-1",
            long_ago,
            long_ago - TimeDelta::hours(1),
            10,
        )
        .await
        .unwrap();
    let (csrf, created) = store.session(&key(1)).await.unwrap().expect("stored");
    assert_eq!(csrf, "csrf-1");
    assert_eq!(created.timestamp_micros(), long_ago.timestamp_micros());

    // A new session sweeps out the ones created before `expired_before`.
    store
        .create_session(&key(2), "csrf-2", now, now - TimeDelta::hours(12), 10)
        .await
        .unwrap();
    assert_eq!(store.session(&key(1)).await.unwrap(), None, "expired");
    assert!(store.session(&key(2)).await.unwrap().is_some());

    // At most `max`: the oldest go first.
    for n in 3..=5u8 {
        let at = now + TimeDelta::seconds(i64::from(n));
        store
            .create_session(&key(n), &format!("csrf-{n}"), at, long_ago, 3)
            .await
            .unwrap();
    }
    let mut live = Vec::new();
    for n in 2..=5u8 {
        if store.session(&key(n)).await.unwrap().is_some() {
            live.push(n);
        }
    }
    assert_eq!(live, [3, 4, 5]);

    store.delete_session(&key(4)).await.unwrap();
    assert_eq!(store.session(&key(4)).await.unwrap(), None);
    assert!(store.session(&key(5)).await.unwrap().is_some());
    // Deleting what is not there is no error (a second logout).
    store.delete_session(&key(4)).await.unwrap();
}
