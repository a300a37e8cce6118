//! How `needs` resolves to stage indices.

use expect_test::{Expect, expect};

use super::pipeline;

/// Renders each stage with the names of the stages it needs.
fn check(source: &str, expect: Expect) {
    let pipeline = pipeline(source);
    let rendered: Vec<String> = pipeline
        .stages
        .iter()
        .map(|stage| {
            let needs: Vec<&str> = stage
                .needs
                .iter()
                .map(|&i| pipeline.stages[i].name.as_str())
                .collect();
            format!("{} <- [{}]", stage.name, needs.join(", "))
        })
        .collect();
    expect.assert_eq(&rendered.join("\n"));
}

const STAGE: &str = "image: local/busybox, commands: [ \"true\" ]";

fn stages(lines: &[&str]) -> String {
    let mut source = String::from("stages:\n");
    for line in lines {
        source.push_str(&format!("  - {{ {line}, {STAGE} }}\n"));
    }
    source
}

#[test]
fn without_needs_a_stage_waits_for_the_one_before() {
    check(
        &stages(&["name: a", "name: b", "name: c"]),
        expect![[r#"
            a <- []
            b <- [a]
            c <- [b]"#]],
    );
}

#[test]
fn empty_needs_starts_at_once() {
    check(
        &stages(&["name: a", "name: b, needs: []", "name: c"]),
        expect![[r#"
            a <- []
            b <- []
            c <- [b]"#]],
    );
}

#[test]
fn explicit_needs() {
    check(
        &stages(&[
            "name: build",
            "name: unit, needs: [build]",
            "name: lint, needs: [build]",
            "name: publish, needs: [unit, lint]",
        ]),
        expect![[r#"
            build <- []
            unit <- [build]
            lint <- [build]
            publish <- [unit, lint]"#]],
    );
}

#[test]
fn needs_may_name_a_later_stage() {
    check(
        &stages(&["name: test, needs: [build]", "name: build, needs: []"]),
        expect![[r#"
            test <- [build]
            build <- []"#]],
    );
}

#[test]
fn repeated_needs_count_once() {
    check(
        &stages(&["name: a", "name: b, needs: [a, a]"]),
        expect![[r#"
            a <- []
            b <- [a]"#]],
    );
}

#[test]
fn the_pipeline_finds_stages_by_name() {
    let pipeline = pipeline(&stages(&["name: a", "name: b"]));
    assert_eq!(pipeline.stage_index("b"), Some(1));
    assert_eq!(pipeline.stage_index("c"), None);
}

#[test]
fn cycles_are_reported_once_each_in_order() {
    let source = stages(&[
        "name: a, needs: [b]",
        "name: b, needs: [c]",
        "name: c, needs: [a]",
        "name: d, needs: [d]",
        "name: e, needs: [f]",
        "name: f",
    ]);
    let messages: Vec<String> = match gantry_pipeline::parse(".gantry.yml", &source) {
        Ok(_) => panic!("cycles must be rejected"),
        Err(diagnostics) => diagnostics.0.into_iter().map(|d| d.message).collect(),
    };
    expect![[r#"
        dependency cycle: a -> b -> c -> a
        stage 'd' needs itself
        dependency cycle: e -> f -> e"#]]
    .assert_eq(&messages.join("\n"));
}
