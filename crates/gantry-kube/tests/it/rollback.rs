//! `gantry rollback`: to the previous revision, to a given one, and the history it leaves.

use std::time::Duration;

use expect_test::expect;
use gantry_kube::{Error, Outcome, Revision};

use crate::support::{self, NAME, NS, Setup, image, request, setup};

/// `shop/backend` at revisions 1 (backend:1), 2 (backend:2) and 3 (backend:3), all by Gantry.
async fn three_revisions() -> Setup {
    let setup = setup("backend:1").await;
    for version in [2, 3] {
        let (report, lines) =
            support::rollout(&setup.cluster, &request(&format!("backend:{version}"))).await;
        assert_eq!(report.unwrap().outcome, Outcome::Complete, "{lines:#?}");
    }
    setup
}

fn render(history: &[Revision]) -> String {
    let lines: Vec<String> = history
        .iter()
        .map(|r| {
            format!(
                "{} {} {}{}",
                r.revision,
                r.change_cause.as_deref().unwrap_or("<none>"),
                r.images.join(","),
                if r.current { " (current)" } else { "" }
            )
        })
        .collect();
    lines.join("\n")
}

#[tokio::test]
async fn rollback_to_the_previous_revision() {
    let Setup { emulator, cluster } = three_revisions().await;
    expect![[r#"
        1 <none> backend:1
        2 gantry shop #7 backend:2 backend:2
        3 gantry shop #7 backend:3 backend:3 (current)"#]]
    .assert_eq(&render(&cluster.history(NS, NAME).await.unwrap()));

    let (report, lines) = support::rollback(&cluster, None).await;
    let report = report.unwrap();
    assert_eq!(
        report.outcome,
        Outcome::RolledBack {
            cause: "manual rollback".into(),
            revision: 2
        },
        "{lines:#?}"
    );
    assert_eq!(
        report.outcome.to_string(),
        "rolled back to revision 2: manual rollback"
    );
    assert_eq!(
        (
            report.revision_before,
            report.revision_after,
            report.rolled_back_to
        ),
        (Some(3), Some(4), Some(2))
    );
    assert_eq!(report.image_before.as_deref(), Some("backend:3"));
    assert_eq!(report.image_after, "backend:2");
    assert!(report.rollback_sent_at.is_some());
    assert_eq!(
        lines.first().map(String::as_str),
        Some("rolling back to revision 2")
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("rolled back to revision 2 (now revision 4)")
    );
    assert_eq!(image(&emulator), "backend:2");
    emulator.wait_for_rollout(NS, NAME, Duration::from_secs(5));
    // Revision 2's ReplicaSet is revision 4 now, with its change cause.
    expect![[r#"
        1 <none> backend:1
        3 gantry shop #7 backend:3 backend:3
        4 gantry shop #7 backend:2 backend:2 (current)"#]]
    .assert_eq(&render(&cluster.history(NS, NAME).await.unwrap()));
}

#[tokio::test]
async fn rollback_to_a_given_revision() {
    let Setup { emulator, cluster } = three_revisions().await;
    let (report, lines) = support::rollback(&cluster, Some(1)).await;
    let report = report.unwrap();
    assert_eq!(
        report.outcome,
        Outcome::RolledBack {
            cause: "manual rollback".into(),
            revision: 1
        },
        "{lines:#?}"
    );
    assert_eq!(image(&emulator), "backend:1");
    expect![[r#"
        2 gantry shop #7 backend:2 backend:2
        3 gantry shop #7 backend:3 backend:3
        4 <none> backend:1 (current)"#]]
    .assert_eq(&render(&cluster.history(NS, NAME).await.unwrap()));
    // The change cause went with the template: revision 1 had none.
    let d = support::deployment(&emulator);
    assert_eq!(
        d["metadata"]["annotations"].get("kubernetes.io/change-cause"),
        None
    );
}

#[tokio::test]
async fn rollback_to_an_unknown_revision_is_refused() {
    let Setup { emulator, cluster } = three_revisions().await;
    let (report, _) = support::rollback(&cluster, Some(7)).await;
    let err = report.unwrap_err();
    assert_eq!(
        err,
        Error::UnknownRevision {
            deployment: "shop/backend".into(),
            revision: 7,
            known: vec![1, 2, 3]
        }
    );
    expect!["deployment shop/backend has no revision 7 (revisions: 1, 2, 3)"]
        .assert_eq(&err.to_string());
    assert_eq!(image(&emulator), "backend:3");
}

#[tokio::test]
async fn rollback_to_the_current_revision_is_skipped() {
    let Setup { emulator, cluster } = three_revisions().await;
    emulator.clear_requests();
    let (report, lines) = support::rollback(&cluster, Some(3)).await;
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.rolled_back_to, None);
    assert_eq!(
        lines,
        ["skipped rollback (current template already matches revision 3)"]
    );
    assert!(support::writes(&emulator).is_empty());
}

#[tokio::test]
async fn rollback_without_history_is_refused() {
    let Setup {
        emulator: _emulator,
        cluster,
    } = setup("backend:1").await;
    let (report, _) = support::rollback(&cluster, None).await;
    expect!["an earlier revision of deployment shop/backend not found"]
        .assert_eq(&report.unwrap_err().to_string());
}
