//! Sizes (`memory`) and durations (`timeout`).

use expect_test::{Expect, expect};
use gantry_pipeline::{parse_duration, parse_size};

fn check_sizes(inputs: &[&str], expect: Expect) {
    let rendered: Vec<String> = inputs
        .iter()
        .map(|input| match parse_size(input) {
            Ok(bytes) => format!("{input} = {bytes}"),
            Err(err) => format!("{input}: {err}"),
        })
        .collect();
    expect.assert_eq(&rendered.join("\n"));
}

#[test]
fn sizes() {
    check_sizes(
        &[
            "1024", "1024b", "100k", "16m", "512m", "512M", "1g", "1G", "2t", "512mb", "1GiB",
            "1.5g", "0",
        ],
        expect![[r#"
            1024 = 1024
            1024b = 1024
            100k = 102400
            16m = 16777216
            512m = 536870912
            512M = 536870912
            1g = 1073741824
            1G = 1073741824
            2t = 2199023255552
            512mb = 536870912
            1GiB = 1073741824
            1.5g = 1610612736
            0 = 0"#]],
    );
}

#[test]
fn bad_sizes() {
    check_sizes(
        &["512q", "m", "", "1.2.3m", ".5g", "-1m", "99999999999t"],
        expect![[r#"
            512q: unknown unit 'q'
            m: expected a number
            : expected a number
            1.2.3m: expected a number
            .5g: expected a number
            -1m: expected a number
            99999999999t: too large"#]],
    );
}

fn check_durations(inputs: &[&str], expect: Expect) {
    let rendered: Vec<String> = inputs
        .iter()
        .map(|input| match parse_duration(input) {
            Ok(duration) => format!("{input} = {duration:?}"),
            Err(err) => format!("{input}: {err}"),
        })
        .collect();
    expect.assert_eq(&rendered.join("\n"));
}

#[test]
fn durations() {
    check_durations(
        &[
            "90s", "10m", "1h30m", "1h 30m", "500ms", "2d", "10x", "600", "", "m",
        ],
        expect![[r#"
            90s = 90s
            10m = 600s
            1h30m = 5400s
            1h 30m = 5400s
            500ms = 500ms
            2d = 172800s
            10x: unknown unit 'x'
            600: a unit is needed
            : expected a number
            m: expected a number"#]],
    );
}
