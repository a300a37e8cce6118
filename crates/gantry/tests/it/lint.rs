use crate::support::Project;

#[test]
fn a_valid_file_prints_nothing_and_exits_0() {
    let p = Project::new("stages:\n  - { name: a, image: local/busybox, commands: [true] }\n");
    let r = p.run(&["lint"]);
    assert_eq!(r.code, Some(0), "{}", r.debug());
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr, "");
}

#[test]
fn every_problem_is_printed_with_its_location() {
    let p = Project::new(
        "stages:\n  - name: test\n    image: local/busybox\n    comands: [true]\n  - name: test\n    commands: [true]\n",
    );
    let r = p.run(&["lint"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    assert!(
        r.stderr.contains("unknown key 'comands' in stage 'test'"),
        "{}",
        r.debug()
    );
    assert!(r.stderr.contains(".gantry.yml:4:5"), "{}", r.debug());
    assert!(
        r.stderr.contains("did you mean 'commands'?"),
        "{}",
        r.debug()
    );
    assert!(
        r.stderr.contains("duplicate stage name 'test'") || r.stderr.contains("duplicate"),
        "{}",
        r.debug()
    );
    assert!(
        r.stderr.contains("image"),
        "missing image is reported too:\n{}",
        r.debug()
    );
}

#[test]
fn json_format_for_machines() {
    let p = Project::new("stages:\n  - { name: a, image: x, commands: [true], timeout: 10x }\n");
    let r = p.run(&["lint", "--format", "json"]);
    assert_eq!(r.code, Some(1), "{}", r.debug());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let first = &v[0];
    assert_eq!(first["file"], ".gantry.yml");
    assert_eq!(first["line"], 2);
    assert!(
        first["message"]
            .as_str()
            .unwrap_or_default()
            .contains("10x"),
        "{v}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let p = Project::new("");
    let r = p.run(&["lint", "nope.yml"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.starts_with("error: cannot read nope.yml:"),
        "{}",
        r.debug()
    );
}
