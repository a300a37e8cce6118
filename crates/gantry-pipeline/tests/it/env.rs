//! `${VAR}` interpolation and the environment of a resolved stage.

use expect_test::{Expect, expect};
use gantry_pipeline::{Event, ResolvedStage, RunContext, interpolate, resolve_stage};

use super::pipeline;

fn check_interpolate(template: &str, expect: Expect) {
    let lookup = |name: &str| match name {
        "A" => Some("alpha".to_owned()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("${A}".to_owned()),
        _ => None,
    };
    let rendered = match interpolate(template, &lookup) {
        Ok(value) => format!("ok {value:?}"),
        Err(err) => format!("err {err}"),
    };
    expect.assert_eq(&rendered);
}

#[test]
fn interpolation() {
    check_interpolate("plain", expect![[r#"ok "plain""#]]);
    check_interpolate("${A}", expect![[r#"ok "alpha""#]]);
    check_interpolate("x-${A}-${A}-y", expect![[r#"ok "x-alpha-alpha-y""#]]);
    check_interpolate("[${EMPTY}]", expect![[r#"ok "[]""#]]);
    check_interpolate("${DOLLAR}", expect![[r#"ok "${A}""#]]);
    check_interpolate("$${A}", expect![[r#"ok "${A}""#]]);
    check_interpolate("$$${A}", expect![[r#"ok "$${A}""#]]);
    check_interpolate("$A $ $$ ${A}$", expect![[r#"ok "$A $ $$ alpha$""#]]);
    check_interpolate("é${A}é", expect![[r#"ok "éalphaé""#]]);
    check_interpolate("${B}", expect!["err unknown variable ${B}"]);
    check_interpolate("${A", expect!["err unterminated ${ (missing '}')"]);
    check_interpolate("${}", expect!["err invalid variable reference ${}"]);
    check_interpolate("${A-B}", expect!["err invalid variable reference ${A-B}"]);
}

fn ctx() -> RunContext {
    RunContext {
        event: Event::Push,
        branch: Some("main".to_owned()),
        tag: None,
        commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        run_number: 42,
        repo: "acme/backend".to_owned(),
    }
}

const FILE: &str = r#"
    env:
      REGISTRY: registry.local
      APP_ENV: test
      TAGGED: "${REGISTRY}/app:${GANTRY_SHORT_SHA}"
    stages:
      - name: test
        image: ${REGISTRY}/python:${PY}
        commands: [ "pytest" ]
        env:
          PY: "3.11"
          APP_ENV: "ci-${APP_ENV}"
          DATABASE_URL: "postgres://postgres@db/${APP_ENV}"
          LITERAL: "$${NOT_A_VAR}"
        secrets: [ TOKEN ]
        services:
          - name: db
            image: postgres:${PG_VERSION}
            env:
              PG_VERSION: "15"
              POSTGRES_DB: "${APP_ENV}"
    "#;

/// The resolved stage, one line per variable.
fn render(stage: &ResolvedStage) -> String {
    let mut lines = vec![format!("image {}", stage.image)];
    lines.extend(stage.env.iter().map(|(k, v)| format!("{k}={v}")));
    for service in &stage.services {
        lines.push(format!(
            "service {} image {} env {:?}",
            service.name, service.image, service.env
        ));
    }
    lines.join("\n")
}

#[test]
fn service_image_can_not_use_its_own_env() {
    // A service's `image` sees the stage's variables only.
    let Err(diagnostics) = gantry_pipeline::parse(".gantry.yml", &super::dedent(FILE)) else {
        panic!("PG_VERSION is not visible to the service image");
    };
    let messages: Vec<String> = diagnostics.0.into_iter().map(|d| d.message).collect();
    expect!["unknown variable ${PG_VERSION} in service 'db' of stage 'test'"]
        .assert_eq(&messages.join("\n"));
}

#[test]
fn resolve_orders_and_overrides() {
    let fixed = FILE.replace("postgres:${PG_VERSION}", "postgres:${PY}");
    let pipeline = pipeline(&fixed);
    let extra = vec![
        ("TOKEN".to_owned(), "s3cr${et}".to_owned()),
        ("APP_ENV".to_owned(), "manual".to_owned()),
    ];
    let stage = resolve_stage(&pipeline, 0, &ctx(), &extra).expect("resolves");
    // Built-ins first, then the pipeline's env, the stage's, and the extra
    // variables; a later value replaces an earlier one in place. Extra
    // values are literal. Services see the stage's complete environment.
    expect![[r#"
        image registry.local/python:3.11
        CI=true
        GANTRY_COMMIT_SHA=0123456789abcdef0123456789abcdef01234567
        GANTRY_SHORT_SHA=01234567
        GANTRY_BRANCH=main
        GANTRY_TAG=
        GANTRY_EVENT=push
        GANTRY_RUN_NUMBER=42
        GANTRY_REPO=acme/backend
        REGISTRY=registry.local
        APP_ENV=manual
        TAGGED=registry.local/app:01234567
        PY=3.11
        DATABASE_URL=postgres://postgres@db/ci-test
        LITERAL=${NOT_A_VAR}
        TOKEN=s3cr${et}
        service db image postgres:3.11 env [("PG_VERSION", "15"), ("POSTGRES_DB", "manual")]"#]]
    .assert_eq(&render(&stage));
}

#[test]
fn resolve_an_unknown_stage() {
    let pipeline = pipeline(&FILE.replace("postgres:${PG_VERSION}", "postgres:15"));
    assert_eq!(
        resolve_stage(&pipeline, 3, &ctx(), &[]),
        Err("no stage #3: the pipeline has 1 stages".to_owned())
    );
}

#[test]
fn resolve_reports_a_variable_it_cannot_find() {
    // Validation makes this impossible for a parsed file; a hand-made
    // pipeline can still hold one.
    let mut pipeline = pipeline(&FILE.replace("postgres:${PG_VERSION}", "postgres:15"));
    pipeline
        .env
        .push(("BROKEN".to_owned(), "${MISSING}".to_owned()));
    assert_eq!(
        resolve_stage(&pipeline, 0, &ctx(), &[]),
        Err("stage 'test': env BROKEN: unknown variable ${MISSING}".to_owned())
    );
}
