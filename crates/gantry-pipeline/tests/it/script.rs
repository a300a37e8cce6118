//! The `sh -e` script of a `commands` stage.

use std::process::Command;

use expect_test::expect;
use gantry_pipeline::render_script;

fn commands(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| c.to_string()).collect()
}

/// Runs `script` like a stage does and returns its status and output.
fn run(script: &str) -> (bool, String) {
    let output = Command::new("sh")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn rendering() {
    let script = render_script(&commands(&["make test", "echo 'it''s' \"$HOME\""]));
    expect![[r#"
        printf '%s\n' '+ make test'
        make test
        printf '%s\n' '+ echo '\''it'\'''\''s'\'' "$HOME"'
        echo 'it''s' "$HOME"
    "#]]
    .assert_eq(&script);
}

#[test]
fn commands_are_echoed_before_they_run() {
    let (ok, output) = run(&render_script(&commands(&["echo one", "X=two; echo $X"])));
    assert!(ok);
    expect![[r#"
        + echo one
        one
        + X=two; echo $X
        two
    "#]]
    .assert_eq(&output);
}

#[test]
fn the_echo_cannot_run_anything() {
    // The echo line shows each command exactly as written; only the
    // command itself expands anything.
    let (ok, output) = run(&render_script(&commands(&[
        "echo '$(echo pwned)' `echo pwned` $(echo pwned)",
    ])));
    assert!(ok);
    expect![[r#"
        + echo '$(echo pwned)' `echo pwned` $(echo pwned)
        $(echo pwned) pwned pwned
    "#]]
    .assert_eq(&output);
    let (ok, output) = run(&render_script(&commands(&[
        "printf '%s\\n' \"a'b\" '; echo pwned'",
    ])));
    assert!(ok);
    expect![[r#"
        + printf '%s\n' "a'b" '; echo pwned'
        a'b
        ; echo pwned
    "#]]
    .assert_eq(&output);
}

#[test]
fn a_failing_command_stops_the_script() {
    let (ok, output) = run(&render_script(&commands(&[
        "echo before",
        "false",
        "echo after",
    ])));
    assert!(!ok);
    expect![[r#"
        + echo before
        before
        + false
    "#]]
    .assert_eq(&output);
}

#[test]
fn multi_line_commands() {
    let (ok, output) = run(&render_script(&commands(&[
        "for x in a b; do\n  echo \"$x\"\ndone\n",
        "echo done",
    ])));
    assert!(ok);
    expect![[r#"
        + for x in a b; do
          echo "$x"
        done

        a
        b
        + echo done
        done
    "#]]
    .assert_eq(&output);
}

#[test]
fn no_commands_is_an_empty_script() {
    assert_eq!(render_script(&[]), "");
}
