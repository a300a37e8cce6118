//! Small parse cases: what is accepted and how it reads, and the exact
//! wording of single diagnostics. Bigger bad files live in `tests/corpus`.

use expect_test::expect;

use super::check;

#[test]
fn minimal() {
    check(
        r#"
        stages:
          - name: test
            image: local/busybox
            commands: [ "true" ]
        "#,
        expect![[r#"
            on: push=Any tag=Never
            stage test needs []
              image local/busybox
              $ true
              pull if-not-present
        "#]],
    );
}

#[test]
fn a_single_string_is_a_list_of_one() {
    check(
        r#"
        on:
          push: { branches: main }
        stages:
          - name: a
            image: local/busybox
            commands: make
          - name: b
            needs: a
            image: local/busybox
            commands: make
            secrets: TOKEN
            when: { branch: main, event: manual }
        "#,
        expect![[r#"
            on: push=Matching(Patterns(["main"])) tag=Never
            stage a needs []
              image local/busybox
              $ make
              pull if-not-present
            stage b needs ["a"]
              image local/busybox
              $ make
              secrets ["TOKEN"]
              pull if-not-present
              when branch=Some("[main]") tag=None event=Some([Manual])
        "#]],
    );
}

#[test]
fn scalars_are_kept_as_written() {
    // Numbers and booleans in `env` are strings, exactly as written: YAML's
    // `1.10` must not become `1.1`.
    check(
        r#"
        env:
          VERSION: 1.10
          PORT: 5432
          DEBUG: true
          HEX: 0x1F
          QUOTED: "007"
          EMPTY: ""
        stages:
          - name: test
            image: local/busybox
            commands: [ "true" ]
            retry: "2"
            allow_failure: True
        "#,
        expect![[r#"
            on: push=Any tag=Never
            env VERSION="1.10"
            env PORT="5432"
            env DEBUG="true"
            env HEX="0x1F"
            env QUOTED="007"
            env EMPTY=""
            stage test needs []
              image local/busybox
              $ true
              retry 2
              pull if-not-present
              allow_failure
        "#]],
    );
}

#[test]
fn block_scalars_and_multiline_commands() {
    check(
        r#"
        stages:
          - name: test
            image: local/busybox
            commands:
              - |
                for f in a b; do
                  echo "$f"
                done
              - >-
                echo folded
                onto one line
        "#,
        expect![[r#"
            on: push=Any tag=Never
            stage test needs []
              image local/busybox
              $ for f in a b; do
              echo "$f"
            done

              $ echo folded onto one line
              pull if-not-present
        "#]],
    );
}

#[test]
fn triggers() {
    check(
        r#"
        on: {}
        stages:
          - { name: test, image: local/busybox, commands: [ "true" ] }
        "#,
        expect![[r#"
            on: push=Never tag=Never
            stage test needs []
              image local/busybox
              $ true
              pull if-not-present
        "#]],
    );
    check(
        r#"
        on:
          push:
          tag:
        stages:
          - { name: test, image: local/busybox, commands: [ "true" ] }
        "#,
        expect![[r#"
            on: push=Any tag=Any
            stage test needs []
              image local/busybox
              $ true
              pull if-not-present
        "#]],
    );
    check(
        r#"
        on:
          tag: { tags: ["v*.*.*"] }
        stages:
          - { name: test, image: local/busybox, commands: [ "true" ] }
        "#,
        expect![[r#"
            on: push=Never tag=Matching(Patterns(["v*.*.*"]))
            stage test needs []
              image local/busybox
              $ true
              pull if-not-present
        "#]],
    );
}

#[test]
fn anchors_and_x_keys() {
    // Top-level `x-` keys are ignored, so they can hold anchors.
    check(
        r#"
        x-image: &image local/python:3.11
        x-env: &env { PIP_NO_CACHE_DIR: "1" }
        stages:
          - name: a
            image: *image
            env: *env
            commands: [ "true" ]
          - name: b
            image: *image
            env: *env
            commands: [ "true" ]
        "#,
        expect![[r#"
            on: push=Any tag=Never
            stage a needs []
              image local/python:3.11
              $ true
              env PIP_NO_CACHE_DIR="1"
              pull if-not-present
            stage b needs ["a"]
              image local/python:3.11
              $ true
              env PIP_NO_CACHE_DIR="1"
              pull if-not-present
        "#]],
    );
}

#[test]
fn resources() {
    check(
        r#"
        stages:
          - name: test
            image: local/busybox
            commands: [ "true" ]
            timeout: 1h30m
            memory: 1G
            cpus: 0.5
            pull: never
            services:
              - name: cache
                image: redis:7
                commands: [ "redis-server --save ''" ]
        "#,
        expect![[r#"
            on: push=Any tag=Never
            stage test needs []
              image local/busybox
              $ true
              service cache image=redis:7 env=[] commands=["redis-server --save ''"]
              timeout 5400s
              memory 1073741824
              cpus 0.5
              pull never
        "#]],
    );
}

#[test]
fn unknown_key_in_stage() {
    check(
        r#"
        stages:
          - name: test
            image: local/busybox
            comands: [ "pytest" ]
            commands: [ "pytest" ]
        "#,
        expect![[r#"
            error: unknown key 'comands' in stage 'test'
             --> .gantry.yml:4:5
              |
            4 |     comands: [ "pytest" ]
              |     ^^^^^^^
              = help: did you mean 'commands'?

            error: could not validate `.gantry.yml` due to 1 previous error"#]],
    );
}

#[test]
fn empty_stages() {
    check(
        "stages: []",
        expect![[r#"
            error: `stages` is empty
             --> .gantry.yml:1:9
              |
            1 | stages: []
              |         ^^
              = help: a pipeline needs at least one stage

            error: could not validate `.gantry.yml` due to 1 previous error"#]],
    );
}

#[test]
fn null_stages() {
    check(
        "stages:",
        expect![[r#"
            error: `stages` has no value
             --> .gantry.yml:1:1
              |
            1 | stages:
              | ^^^^^^
              = help: `stages` must be a list of stages

            error: could not validate `.gantry.yml` due to 1 previous error"#]],
    );
}

#[test]
fn error_in_a_stage_does_not_hide_errors_in_the_next() {
    check(
        r#"
        stages:
          - name: a
            image: local/busybox
            commands: [ "true" ]
            retry: 20
          - name: b
            image: local/busybox
            commands: [ "true" ]
            cpus: -1
        "#,
        expect![[r#"
            error: `retry` in stage 'a' must be a whole number from 0 to 10, found '20'
             --> .gantry.yml:5:12
              |
            5 |     retry: 20
              |            ^^

            error: `cpus` in stage 'b' must be a number greater than 0, like `1.5`, found '-1'
             --> .gantry.yml:9:11
              |
            9 |     cpus: -1
              |           ^^

            error: could not validate `.gantry.yml` due to 2 previous errors"#]],
    );
}

#[test]
fn columns_count_characters_and_tabs_line_up() {
    check(
        "stages:\n  - name: tést\n    image: \"é\té x\"\n    commands: [ \"true\" ]\n    pul: never\n",
        expect![[r#"
            error: invalid stage name 'tést'
             --> .gantry.yml:2:11
              |
            2 |   - name: tést
              |           ^^^^
              = help: a stage name has only letters, digits, '_', '.' and '-'

            error: invalid image 'é	é x' in stage 'tést'
             --> .gantry.yml:3:12
              |
            3 |     image: "é    é x"
              |            ^^^^^^^^^^
              = help: an image looks like `postgres:15` or `registry.example.com/team/app:1.2`

            error: unknown key 'pul' in stage 'tést'
             --> .gantry.yml:5:5
              |
            5 |     pul: never
              |     ^^^
              = help: did you mean 'pull'?

            error: could not validate `.gantry.yml` due to 3 previous errors"#]],
    );
}

#[test]
fn json() {
    let Err(diagnostics) = gantry_pipeline::parse(
        "ci/.gantry.yml",
        "stages:\n  - name: test\n    image: local/busybox\n    comands: [x]\n",
    ) else {
        panic!("the file is invalid");
    };
    expect![[r#"
        [
          {
            "column": 5,
            "file": "ci/.gantry.yml",
            "help": "add `commands:` with the shell commands to run",
            "line": 2,
            "message": "stage 'test' has no `commands`"
          },
          {
            "column": 5,
            "file": "ci/.gantry.yml",
            "help": "did you mean 'commands'?",
            "line": 4,
            "message": "unknown key 'comands' in stage 'test'"
          }
        ]"#]]
    .assert_eq(&serde_json::to_string_pretty(&diagnostics.to_json()).expect("json"));
}

#[test]
fn diagnostics_are_an_error() {
    let Err(diagnostics) = gantry_pipeline::parse(".gantry.yml", "stages: 3") else {
        panic!("the file is invalid");
    };
    let error: Box<dyn std::error::Error> = Box::new(diagnostics);
    assert!(
        error
            .to_string()
            .starts_with("error: `stages` must be a list")
    );
}
