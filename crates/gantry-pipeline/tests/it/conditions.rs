//! `on` triggers and stage `when` conditions.

use expect_test::{Expect, expect};
use gantry_pipeline::{Event, RunContext, Trigger, Triggers};

use super::pipeline;

/// Runs `Triggers::matches` for each case: `event branch-or-tag`.
fn check_triggers(on: &str, cases: &[(Event, Option<&str>, Option<&str>)], expect: Expect) {
    let source =
        format!("{on}\nstages:\n  - {{ name: t, image: local/busybox, commands: [ \"true\" ] }}\n");
    let triggers = pipeline(&source).on;
    let rendered: Vec<String> = cases
        .iter()
        .map(|&(event, branch, tag)| {
            let verdict = match triggers.matches(event, branch, tag) {
                Ok(()) => "runs".to_owned(),
                Err(reason) => reason,
            };
            format!("{event} {}: {verdict}", branch.or(tag).unwrap_or("-"))
        })
        .collect();
    expect.assert_eq(&rendered.join("\n"));
}

const PUSH: Event = Event::Push;
const TAG: Event = Event::Tag;
const MANUAL: Event = Event::Manual;

#[test]
fn without_on_every_branch_push_runs_and_no_tag() {
    assert_eq!(Triggers::default().push, Trigger::Any);
    check_triggers(
        "",
        &[
            (PUSH, Some("main"), None),
            (PUSH, Some("feature/x"), None),
            (TAG, None, Some("v1.0.0")),
            (MANUAL, Some("main"), None),
        ],
        expect![[r#"
            push main: runs
            push feature/x: runs
            tag v1.0.0: tags do not trigger this pipeline (`on` has no `tag`)
            manual main: runs"#]],
    );
}

#[test]
fn branch_and_tag_patterns() {
    check_triggers(
        r#"on:
  push: { branches: [main, "release/*", "team/**"] }
  tag: { tags: ["v*"] }"#,
        &[
            (PUSH, Some("main"), None),
            (PUSH, Some("feature-x"), None),
            (PUSH, Some("release/1.2"), None),
            (PUSH, Some("release/1.2/hotfix"), None),
            (PUSH, Some("team/a/b"), None),
            (PUSH, None, None),
            (TAG, None, Some("v1.0.0")),
            (TAG, None, Some("nightly")),
            (TAG, None, None),
            (MANUAL, Some("feature-x"), None),
        ],
        expect![[r#"
            push main: runs
            push feature-x: branch 'feature-x' not in on.push.branches [main, release/*, team/**]
            push release/1.2: runs
            push release/1.2/hotfix: branch 'release/1.2/hotfix' not in on.push.branches [main, release/*, team/**]
            push team/a/b: runs
            push -: no branch given, so on.push.branches [main, release/*, team/**] does not match
            tag v1.0.0: runs
            tag nightly: tag 'nightly' not in on.tag.tags [v*]
            tag -: no tag given, so on.tag.tags [v*] does not match
            manual feature-x: runs"#]],
    );
}

#[test]
fn only_tags() {
    check_triggers(
        "on: { tag: }",
        &[(PUSH, Some("main"), None), (TAG, None, Some("anything"))],
        expect![[r#"
            push main: pushes do not trigger this pipeline (`on` has no `push`)
            tag anything: runs"#]],
    );
}

fn ctx(event: Event, branch: Option<&str>, tag: Option<&str>) -> RunContext {
    RunContext {
        event,
        branch: branch.map(str::to_owned),
        tag: tag.map(str::to_owned),
        commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        run_number: 7,
        repo: "acme/backend".to_owned(),
    }
}

/// Runs `When::matches` of a stage with `when` for each context.
fn check_when(when: &str, cases: &[RunContext], expect: Expect) {
    let source = format!(
        "stages:\n  - {{ name: t, image: local/busybox, commands: [ \"true\" ], when: {when} }}\n"
    );
    let when = pipeline(&source).stages.remove(0).when;
    let rendered: Vec<String> = cases
        .iter()
        .map(|ctx| {
            let verdict = match when.matches(ctx) {
                Ok(()) => "runs".to_owned(),
                Err(reason) => format!("skipped: {reason}"),
            };
            let name = ctx.branch.as_deref().or(ctx.tag.as_deref()).unwrap_or("-");
            format!("{} {name}: {verdict}", ctx.event)
        })
        .collect();
    expect.assert_eq(&rendered.join("\n"));
}

#[test]
fn when_branch_and_event() {
    check_when(
        "{ branch: [main], event: [push, manual] }",
        &[
            ctx(PUSH, Some("main"), None),
            ctx(PUSH, Some("dev"), None),
            ctx(MANUAL, Some("main"), None),
            ctx(TAG, None, Some("v1")),
        ],
        expect![[r#"
            push main: runs
            push dev: skipped: when.branch [main] does not match branch 'dev'
            manual main: runs
            tag v1: skipped: when.event [push, manual] does not match event 'tag'"#]],
    );
}

#[test]
fn when_tag() {
    check_when(
        r#"{ tag: ["v*"] }"#,
        &[
            ctx(TAG, None, Some("v1.2")),
            ctx(TAG, None, Some("nightly")),
            ctx(PUSH, Some("main"), None),
        ],
        expect![[r#"
            tag v1.2: runs
            tag nightly: skipped: when.tag [v*] does not match tag 'nightly'
            push main: skipped: when.tag [v*] does not match: the run has no tag"#]],
    );
}

#[test]
fn when_branch_on_a_tag_run() {
    check_when(
        "{ branch: main }",
        &[ctx(TAG, None, Some("v1"))],
        expect!["tag v1: skipped: when.branch [main] does not match: the run has no branch"],
    );
}

#[test]
fn an_empty_when_always_matches() {
    let when = gantry_pipeline::When::default();
    assert!(when.is_always());
    assert_eq!(when.matches(&ctx(TAG, None, Some("x"))), Ok(()));
}

#[test]
fn events_parse_and_print() {
    for name in ["push", "tag", "manual"] {
        let event: Event = name.parse().expect("a known event");
        assert_eq!(event.to_string(), name);
    }
    assert_eq!(
        "pull_request".parse::<Event>(),
        Err("unknown event 'pull_request'".to_owned())
    );
}

#[test]
fn builtin_env() {
    let rendered: Vec<String> = ctx(PUSH, Some("main"), None)
        .builtin_env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    expect![[r#"
        CI=true
        GANTRY_COMMIT_SHA=0123456789abcdef0123456789abcdef01234567
        GANTRY_SHORT_SHA=01234567
        GANTRY_BRANCH=main
        GANTRY_TAG=
        GANTRY_EVENT=push
        GANTRY_RUN_NUMBER=7
        GANTRY_REPO=acme/backend"#]]
    .assert_eq(&rendered.join("\n"));
}
