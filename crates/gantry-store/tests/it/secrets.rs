use gantry_store::SealedSecret;

use crate::TestDb;

fn sealed(name: &str, nonce: u8, ciphertext: &[u8]) -> SealedSecret {
    SealedSecret {
        name: name.to_owned(),
        nonce: vec![nonce; 24],
        ciphertext: ciphertext.to_vec(),
    }
}

#[tokio::test]
async fn secrets_are_stored_listed_replaced_and_deleted() {
    let db = TestDb::new().await;
    let store = &db.store;
    assert!(store.list_secrets("demo/web").await.unwrap().is_empty());
    assert_eq!(store.get_secret("demo/web", "TOKEN").await.unwrap(), None);

    // Bytes that are not UTF-8, and a NUL, come back exactly.
    let token = sealed("TOKEN", 1, &[0xff, 0x00, 0xfe, 0x80]);
    assert!(
        store
            .put_secret("demo/web", "TOKEN", &token.nonce, &token.ciphertext)
            .await
            .unwrap(),
        "a new secret"
    );
    store
        .put_secret("demo/web", "A_KEY", &[2; 24], b"ciphertext a")
        .await
        .unwrap();
    assert_eq!(
        store.get_secret("demo/web", "TOKEN").await.unwrap(),
        Some(token.clone())
    );

    let listed = store.list_secrets("demo/web").await.unwrap();
    let names: Vec<_> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["A_KEY", "TOKEN"], "by name");
    let first = listed[1].clone();
    assert_eq!(first.created_at, first.updated_at);

    // Setting it again replaces the value and keeps the creation time.
    let replaced = sealed("TOKEN", 3, b"new ciphertext");
    assert!(
        !store
            .put_secret("demo/web", "TOKEN", &replaced.nonce, &replaced.ciphertext)
            .await
            .unwrap(),
        "an existing secret"
    );
    assert_eq!(
        store.get_secret("demo/web", "TOKEN").await.unwrap(),
        Some(replaced.clone())
    );
    let after = store.list_secrets("demo/web").await.unwrap();
    assert_eq!(after[1].created_at, first.created_at);
    assert!(after[1].updated_at > first.updated_at, "{after:?}");

    assert_eq!(
        store.all_secrets("demo/web").await.unwrap(),
        [sealed("A_KEY", 2, b"ciphertext a"), replaced]
    );

    assert!(store.delete_secret("demo/web", "TOKEN").await.unwrap());
    assert!(!store.delete_secret("demo/web", "TOKEN").await.unwrap());
    assert_eq!(store.get_secret("demo/web", "TOKEN").await.unwrap(), None);
    let names: Vec<_> = store
        .list_secrets("demo/web")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["A_KEY"]);
}

#[tokio::test]
async fn each_project_has_its_own_secrets() {
    let db = TestDb::new().await;
    let store = &db.store;
    store
        .put_secret("demo/web", "TOKEN", &[1; 24], b"web")
        .await
        .unwrap();
    store
        .put_secret("demo/api", "TOKEN", &[2; 24], b"api")
        .await
        .unwrap();
    assert_eq!(
        store.all_secrets("demo/web").await.unwrap(),
        [sealed("TOKEN", 1, b"web")]
    );
    assert!(store.delete_secret("demo/api", "TOKEN").await.unwrap());
    assert_eq!(
        store.get_secret("demo/web", "TOKEN").await.unwrap(),
        Some(sealed("TOKEN", 1, b"web")),
        "deleting another project's secret leaves this one"
    );
    assert!(store.list_secrets("demo/api").await.unwrap().is_empty());
    assert!(store.all_secrets("nope/nope").await.unwrap().is_empty());
}

#[tokio::test]
async fn secrets_survive_a_restart() {
    let db = TestDb::new().await;
    db.store
        .put_secret("demo/web", "TOKEN", &[9; 24], b"sealed")
        .await
        .unwrap();
    db.store.close().await;
    let store = db.reopen().await;
    assert_eq!(
        store.get_secret("demo/web", "TOKEN").await.unwrap(),
        Some(sealed("TOKEN", 9, b"sealed"))
    );
    assert_eq!(store.list_secrets("demo/web").await.unwrap().len(), 1);
}
