use expect_test::expect;
use gantry_store::{Error, Store};

use crate::{TestDb, new_delivery};

#[tokio::test]
async fn migrations_apply_to_a_new_file_and_reopen_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gantry-data/nested/gantry.db");

    let store = Store::open_sqlite(&path).await.unwrap();
    store.ping().await.unwrap();
    store.record_delivery(new_delivery("a")).await.unwrap();
    store.close().await;

    // Opening again applies nothing new and finds the data.
    let store = Store::open_sqlite(&path).await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.list_deliveries(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn open_accepts_sqlite_urls_and_plain_paths() {
    let db = TestDb::new().await;
    db.store.record_delivery(new_delivery("a")).await.unwrap();
    let path = db.path().display().to_string();

    for url in [format!("sqlite://{path}"), format!("sqlite:{path}"), path] {
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.list_deliveries(10).await.unwrap().len(), 1, "{url}");
    }
}

#[tokio::test]
async fn postgres_urls_are_unsupported_for_now() {
    for url in [
        "postgres://gantry:secret@db/gantry",
        "postgresql://gantry@db/gantry",
    ] {
        let error = Store::open(url).await.unwrap_err();
        assert!(matches!(error, Error::Unsupported(_)));
        expect!["PostgreSQL support is not built yet; use SQLite"].assert_eq(&error.to_string());
    }
}

#[tokio::test]
async fn unusable_urls_say_why() {
    let check = async |url: &str| Store::open(url).await.unwrap_err().to_string();

    expect![[r#"database URLs starting with mysql:// are not supported; use sqlite://PATH or a file path"#]]
        .assert_eq(&check("mysql://root:hunter2@db/gantry").await);
    expect![[r#"database URL "sqlite::memory:" names no file; Gantry needs a file, e.g. sqlite://gantry-data/gantry.db"#]]
        .assert_eq(&check("sqlite::memory:").await);
    expect![[r#"database URL "sqlite://" names no file; Gantry needs a file, e.g. sqlite://gantry-data/gantry.db"#]]
        .assert_eq(&check("sqlite://").await);
}

#[tokio::test]
async fn open_errors_name_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();

    let error = Store::open_sqlite(&file.join("gantry.db"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot create directory {} for the database: ",
            file.display()
        )),
        "{message}"
    );

    // A file that is not a database.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    let error = Store::open_sqlite(&garbage).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot open database at {}: ", garbage.display()))
            || message.starts_with(&format!(
                "cannot apply migrations to database at {}: ",
                garbage.display()
            )),
        "{message}"
    );
}
