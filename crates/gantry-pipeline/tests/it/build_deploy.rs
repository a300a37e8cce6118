//! `build` and `deploy` stages: their defaults, stage outputs
//! (`${stages.NAME.KEY}`), and how `resolve_build`, `resolve_deploy` and
//! `resolve_stage_with` interpolate them. The bigger bad files live in
//! `tests/corpus/build-deploy-*.yml` and `stage-outputs.yml`.

use std::collections::HashMap;
use std::time::Duration;

use expect_test::{Expect, expect};
use gantry_pipeline::{
    BuildSpec, DeploySpec, Event, FailFast, Pipeline, ResolvedBuild, ResolvedDeploy, Rollback,
    RunContext, StageKind, StageOutputs, interpolate, resolve_build, resolve_deploy, resolve_stage,
    resolve_stage_with,
};

use super::{check, pipeline};

fn ctx(branch: &str) -> RunContext {
    RunContext {
        event: Event::Push,
        branch: Some(branch.to_owned()),
        tag: None,
        commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        run_number: 42,
        repo: "acme/backend".to_owned(),
    }
}

/// What the build stages `base` and `image` pushed.
fn outputs() -> HashMap<String, HashMap<String, String>> {
    let stage = |image: &str, digest: &str| {
        HashMap::from([
            ("image".to_owned(), image.to_owned()),
            ("digest".to_owned(), digest.to_owned()),
        ])
    };
    HashMap::from([
        (
            "base".to_owned(),
            stage(
                "registry.local/base:01234567",
                "registry.local/base@sha256:aaa",
            ),
        ),
        (
            "image".to_owned(),
            stage(
                "registry.local/pet/backend:01234567",
                "registry.local/pet/backend@sha256:bbb",
            ),
        ),
    ])
}

const FILE: &str = r#"
    env:
      REGISTRY: registry.local
    stages:
      - name: base
        build: { image: "${REGISTRY}/base", push: false }
      - name: image
        build:
          context: backend
          dockerfile: backend/Dockerfile
          target: runtime
          args:
            PYTHON_VERSION: "${PY}"
            BASE: "${stages.base.image}"
            LITERAL: "$${NOT_A_VAR}"
          image: ${REGISTRY}/pet/${APP}
          tags: ["${GANTRY_SHORT_SHA}", "${GANTRY_BRANCH}", main, latest]
          registry: nexus
        env:
          PY: "3.11"
          APP: backend
      - name: test
        image: ${stages.image.image}
        commands: [ "pytest" ]
        env:
          BUILT: "built ${stages.image.digest}"
      - name: deploy
        deploy:
          cluster: prod
          namespace: pet-project
          deployment: backend
          container: backend
          image: ${stages.image.digest}
          timeout: 90s
          rollback: never
          fail_fast: { crash_loop_restarts: 3, unschedulable_grace: 3m, image_pull_grace: 0s }
        env:
          NOTE: "${stages.image.image} from ${stages.base.image}"
      - name: minimal
        needs: []
        deploy: { deployment: app, image: "app:${GANTRY_SHORT_SHA}" }
    "#;

fn file() -> Pipeline {
    pipeline(FILE)
}

#[test]
fn the_model_keeps_raw_values_and_fills_in_defaults() {
    let pipeline = file();
    let kinds: Vec<&str> = pipeline.stages.iter().map(|s| s.kind_name()).collect();
    assert_eq!(kinds, ["build", "build", "commands", "deploy", "deploy"]);
    assert_eq!(
        pipeline.stages[0].kind,
        StageKind::Build(BuildSpec {
            context: ".".to_owned(),
            dockerfile: None,
            target: None,
            args: Vec::new(),
            image: "${REGISTRY}/base".to_owned(),
            tags: vec!["${GANTRY_SHORT_SHA}".to_owned()],
            registry: None,
            push: false,
        })
    );
    assert_eq!(
        pipeline.stages[4].kind,
        StageKind::Deploy(DeploySpec {
            cluster: None,
            namespace: "default".to_owned(),
            deployment: "app".to_owned(),
            container: None,
            image: "app:${GANTRY_SHORT_SHA}".to_owned(),
            timeout: Duration::from_secs(300),
            rollback: Rollback::Auto,
            fail_fast: FailFast::default(),
        })
    );
}

#[test]
fn resolve_build_interpolates_args_image_and_tags() {
    let extra = [("APP".to_owned(), "manual-app".to_owned())];
    let build = resolve_build(&file(), 1, &ctx("main"), &extra, &outputs());
    // The tags `${GANTRY_BRANCH}` and `main` come out the same: kept once.
    // Extra variables replace the stage's, as in `resolve_stage`.
    expect![[r#"
        Ok(
            ResolvedBuild {
                context: "backend",
                dockerfile: Some(
                    "backend/Dockerfile",
                ),
                target: Some(
                    "runtime",
                ),
                args: [
                    (
                        "PYTHON_VERSION",
                        "3.11",
                    ),
                    (
                        "BASE",
                        "registry.local/base:01234567",
                    ),
                    (
                        "LITERAL",
                        "${NOT_A_VAR}",
                    ),
                ],
                image: "registry.local/pet/manual-app",
                tags: [
                    "01234567",
                    "main",
                    "latest",
                ],
                registry: Some(
                    "nexus",
                ),
                push: true,
            },
        )
    "#]]
    .assert_debug_eq(&build);
}

#[test]
fn resolve_build_refuses_what_is_invalid_once_interpolated() {
    let check = |pipeline: &Pipeline, branch: &str, outputs: &dyn StageOutputs, expect: Expect| {
        let result = resolve_build(pipeline, 1, &ctx(branch), &[], outputs).map(|b| b.tags);
        expect.assert_eq(&format!("{result:?}"));
    };
    let file = file();
    check(
        &file,
        "feature/login",
        &outputs(),
        expect![[
            r#"Err("stage 'image': build.tags: '${GANTRY_BRANCH}' gives the invalid tag 'feature/login': '/' is not allowed in a tag (a tag has up to 128 letters, digits, '_', '.' and '-', and does not start with '.' or '-')")"#
        ]],
    );
    check(
        &file,
        "main",
        &HashMap::<String, HashMap<String, String>>::new(),
        expect![[
            r#"Err("stage 'image': build.args BASE: unknown stage output ${stages.base.image}")"#
        ]],
    );
    let uppercase = [("APP".to_owned(), "Backend".to_owned())];
    assert_eq!(
        resolve_build(&file, 1, &ctx("main"), &uppercase, &outputs()),
        Err("stage 'image': build.image: invalid repository 'registry.local/pet/Backend': repository names are lowercase".to_owned())
    );
}

#[test]
fn resolve_deploy_interpolates_the_image() {
    let deploy = resolve_deploy(&file(), 3, &ctx("main"), &[], &outputs());
    assert_eq!(
        deploy,
        Ok(ResolvedDeploy {
            cluster: Some("prod".to_owned()),
            namespace: "pet-project".to_owned(),
            deployment: "backend".to_owned(),
            container: Some("backend".to_owned()),
            image: "registry.local/pet/backend@sha256:bbb".to_owned(),
            timeout: Duration::from_secs(90),
            rollback: Rollback::Never,
            fail_fast: FailFast {
                crash_loop_restarts: Some(3),
                image_pull_grace: Some(Duration::ZERO),
                config_error_grace: None,
                unschedulable_grace: Some(Duration::from_secs(180)),
            },
        })
    );
    let minimal = resolve_deploy(&file(), 4, &ctx("main"), &[], &outputs());
    assert_eq!(minimal.map(|d| d.image), Ok("app:01234567".to_owned()));
}

#[test]
fn resolve_deploy_without_the_digest() {
    let mut outputs = outputs();
    outputs.get_mut("image").map(|image| image.remove("digest"));
    // The deploy stage's env needs only `image` outputs, so the error is
    // about `deploy.image`.
    assert_eq!(
        resolve_deploy(&file(), 3, &ctx("main"), &[], &outputs),
        Err("stage 'deploy': deploy.image: unknown stage output ${stages.image.digest}".to_owned())
    );
}

#[test]
fn each_resolver_wants_its_own_kind_of_stage() {
    let file = file();
    let outputs = outputs();
    assert_eq!(
        resolve_build(&file, 3, &ctx("main"), &[], &outputs),
        Err("stage 'deploy' is a `deploy` stage, not a `build` stage".to_owned())
    );
    assert_eq!(
        resolve_deploy(&file, 2, &ctx("main"), &[], &outputs),
        Err("stage 'test' is a `commands` stage, not a `deploy` stage".to_owned())
    );
    assert_eq!(
        resolve_deploy(&file, 9, &ctx("main"), &[], &outputs),
        Err("no stage #9: the pipeline has 5 stages".to_owned())
    );
}

/// The image and the variables from the pipeline's `env` on.
fn own_env(result: Result<gantry_pipeline::ResolvedStage, String>) -> String {
    match result {
        Ok(stage) => {
            let mut lines = vec![format!("image {:?}", stage.image)];
            lines.extend(
                stage
                    .env
                    .iter()
                    .skip(RunContext::BUILTIN_NAMES.len())
                    .map(|(k, v)| format!("{k}={v}")),
            );
            lines.join("\n")
        }
        Err(err) => format!("Err {err}"),
    }
}

#[test]
fn resolve_stage_with_outputs() {
    let file = file();
    let outputs = outputs();
    expect![[r#"
        image "registry.local/pet/backend:01234567"
        REGISTRY=registry.local
        BUILT=built registry.local/pet/backend@sha256:bbb"#]]
    .assert_eq(&own_env(resolve_stage_with(
        &file,
        2,
        &ctx("main"),
        &[],
        &outputs,
    )));
    // Without outputs, a stage that uses one cannot be resolved.
    expect!["Err stage 'test': env BUILT: unknown stage output ${stages.image.digest}"]
        .assert_eq(&own_env(resolve_stage(&file, 2, &ctx("main"), &[])));
}

#[test]
fn resolve_stage_of_build_and_deploy_stages() {
    // No image, and the environment as for any stage.
    let file = file();
    expect![[r#"
        image ""
        REGISTRY=registry.local
        PY=3.11
        APP=backend"#]]
    .assert_eq(&own_env(resolve_stage(&file, 1, &ctx("main"), &[])));
    expect![[r#"
        image ""
        REGISTRY=registry.local
        NOTE=registry.local/pet/backend:01234567 from registry.local/base:01234567"#]]
    .assert_eq(&own_env(resolve_stage_with(
        &file,
        3,
        &ctx("main"),
        &[],
        &outputs(),
    )));
}

#[test]
fn stage_outputs_in_interpolate() {
    let lookup = |name: &str| match name {
        "stages.image.digest" => Some("app@sha256:bbb".to_owned()),
        "stages.a.b.image" => Some("ab:1".to_owned()),
        _ => None,
    };
    let render = |template: &str| match interpolate(template, &lookup) {
        Ok(value) => format!("ok {value}"),
        Err(err) => format!("err {err}"),
    };
    let cases = [
        "${stages.image.digest}",
        // A stage name may hold dots: the key follows the last one.
        "${stages.a.b.image}",
        "$${stages.image.digest}",
        "${stages.image.image}",
        "${stages.image}",
        "${stages..digest}",
        "${stages.image.}",
        "${image.digest}",
        "${stages.im@ge.digest}",
    ];
    let rendered: Vec<String> = cases
        .iter()
        .map(|case| format!("{case} -> {}", render(case)))
        .collect();
    expect![[r#"
        ${stages.image.digest} -> ok app@sha256:bbb
        ${stages.a.b.image} -> ok ab:1
        $${stages.image.digest} -> ok ${stages.image.digest}
        ${stages.image.image} -> err unknown stage output ${stages.image.image}
        ${stages.image} -> err invalid variable reference ${stages.image}
        ${stages..digest} -> err invalid variable reference ${stages..digest}
        ${stages.image.} -> err invalid variable reference ${stages.image.}
        ${image.digest} -> err invalid variable reference ${image.digest}
        ${stages.im@ge.digest} -> err invalid variable reference ${stages.im@ge.digest}"#]]
    .assert_eq(&rendered.join("\n"));
}

#[test]
fn a_digest_through_needs() {
    // `deploy` needs `test` explicitly, which needs `image` through the
    // implicit "stage before".
    check(
        r#"
        stages:
          - name: image
            build: { image: registry.local/app }
          - name: test
            image: ${stages.image.image}
            commands: [ "true" ]
          - name: docs
            needs: []
            image: local/busybox
            commands: [ "true" ]
          - name: deploy
            needs: [docs, test]
            deploy: { deployment: app, image: "${stages.image.digest}" }
        "#,
        expect![[r#"
            on: push=Any tag=Never
            stage image needs []
              build registry.local/app tags=["${GANTRY_SHORT_SHA}"] push=true
                context="." dockerfile=None target=None registry=None
            stage test needs ["image"]
              image ${stages.image.image}
              $ true
              pull if-not-present
            stage docs needs []
              image local/busybox
              $ true
              pull if-not-present
            stage deploy needs ["docs", "test"]
              deploy ${stages.image.digest} to default/app container=None cluster=None
                timeout=300s rollback=auto
        "#]],
    );
}

#[test]
fn a_stage_before_the_build_it_uses() {
    check(
        r#"
        stages:
          - name: deploy
            deploy: { deployment: app, image: "${stages.image.digest}" }
          - name: image
            build: { image: registry.local/app }
        "#,
        expect![[r#"
            error: ${stages.image.digest} in `deploy` of stage 'deploy': stage 'deploy' does not need 'image', so its digest is not known yet
             --> .gantry.yml:3:40
              |
            3 |     deploy: { deployment: app, image: "${stages.image.digest}" }
              |                                        ^^^^^^^^^^^^^^^^^^^^^^
              = help: add `needs: [image]` to stage 'deploy'

            error: could not validate `.gantry.yml` due to 1 previous error"#]],
    );
}

#[test]
fn outputs_in_services() {
    // A service sees the stage's variables, so it may use outputs too.
    check(
        r#"
        stages:
          - name: image
            build: { image: registry.local/app }
          - name: tool
            needs: []
            build: { image: registry.local/tool }
          - name: test
            needs: [image]
            image: local/busybox
            commands: [ "true" ]
            services:
              - { name: app, image: "${stages.image.image}" }
              - name: tool
                image: local/busybox
                env: { TOOL: "${stages.tool.digest}" }
        "#,
        expect![[r#"
            error: ${stages.tool.digest} in `env` of service 'tool' of stage 'test': stage 'test' does not need 'tool', so its digest is not known yet
              --> .gantry.yml:15:23
               |
            15 |         env: { TOOL: "${stages.tool.digest}" }
               |                       ^^^^^^^^^^^^^^^^^^^^^
               = help: add 'tool' to the `needs` of stage 'test'

            error: could not validate `.gantry.yml` due to 1 previous error"#]],
    );
}

#[test]
fn outputs_along_a_cycle() {
    // The cycle is the error; checking the output must still end.
    check(
        r#"
        stages:
          - name: image
            needs: [test]
            build: { image: registry.local/app }
          - name: test
            image: ${stages.image.image}
            commands: [ "true" ]
          - name: other
            needs: [other2]
            image: ${stages.image.image}
            commands: [ "true" ]
          - name: other2
            image: local/busybox
            commands: [ "true" ]
        "#,
        expect![[r#"
            error: dependency cycle: image -> test -> image
             --> .gantry.yml:3:13
              |
            3 |     needs: [test]
              |             ^^^^
              = help: 'test' has no `needs`, so it waits for the stage before it ('image'); give 'test' a `needs` list to break the cycle

            error: dependency cycle: other -> other2 -> other
             --> .gantry.yml:9:13
              |
            9 |     needs: [other2]
              |             ^^^^^^
              = help: 'other2' has no `needs`, so it waits for the stage before it ('other'); give 'other2' a `needs` list to break the cycle

            error: ${stages.image.image} in stage 'other': stage 'other' does not need 'image', so its image is not known yet
              --> .gantry.yml:10:12
               |
            10 |     image: ${stages.image.image}
               |            ^^^^^^^^^^^^^^^^^^^^^
               = help: add 'image' to the `needs` of stage 'other'

            error: could not validate `.gantry.yml` due to 3 previous errors"#]],
    );
}

#[test]
fn secrets_are_allowed_on_build_and_deploy_stages() {
    let pipeline = pipeline(
        r#"
        stages:
          - name: image
            build: { image: registry.local/app }
            secrets: [ NPM_TOKEN ]
            env: { A: "1" }
            timeout: 30m
            retry: 2
            allow_failure: true
            when: { event: [manual] }
        "#,
    );
    let stage = &pipeline.stages[0];
    assert_eq!(stage.secrets, ["NPM_TOKEN"]);
    assert_eq!(stage.timeout, Some(Duration::from_secs(1800)));
    assert_eq!((stage.retry, stage.allow_failure), (2, true));
}

#[test]
fn resolved_build_is_plain_data() {
    // The engine hands these to the executors: they compare and clone.
    let build = ResolvedBuild {
        context: ".".to_owned(),
        dockerfile: None,
        target: None,
        args: Vec::new(),
        image: "app".to_owned(),
        tags: vec!["1".to_owned()],
        registry: None,
        push: true,
    };
    assert_eq!(build.clone(), build);
    assert_eq!("auto".parse::<Rollback>(), Ok(Rollback::Auto));
    assert_eq!(Rollback::Never.to_string(), "never");
}
