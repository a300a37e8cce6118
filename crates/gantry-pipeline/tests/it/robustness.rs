//! Hostile or broken input: a pipeline file comes from a pushed commit, and
//! parsing it must never panic, overflow the stack or exhaust memory.

use std::path::Path;

/// Parses `source` on a thread with the stack of a tokio worker (2 MiB).
fn parse_on_small_stack(source: String) -> Result<(), Vec<String>> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(
            move || match gantry_pipeline::parse(".gantry.yml", &source) {
                Ok(_) => Ok(()),
                Err(diagnostics) => Err(diagnostics.0.into_iter().map(|d| d.message).collect()),
            },
        )
        .expect("a thread starts")
        .join()
        .expect("parsing does not panic")
}

#[test]
fn every_prefix_of_every_corpus_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    for entry in std::fs::read_dir(dir).expect("tests/corpus exists") {
        let path = entry.expect("readable directory").path();
        if path.extension().is_none_or(|ext| ext != "yml") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("readable corpus file");
        for (end, _) in source.char_indices() {
            // Rendering touches every span: it must hold for any input.
            if let Err(diagnostics) = gantry_pipeline::parse(".gantry.yml", &source[..end]) {
                let _ = diagnostics.to_string();
            }
        }
    }
}

#[test]
fn deep_block_nesting_is_refused() {
    let errors = parse_on_small_stack(format!("stages:\n  {}x\n", "- ".repeat(100_000)))
        .expect_err("too deep");
    assert_eq!(
        errors,
        ["this line is nested too deeply (more than 120 columns)"]
    );
    let staircase: String = (0..3000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let errors = parse_on_small_stack(staircase).expect_err("too deep");
    assert_eq!(
        errors,
        ["this line is nested too deeply (more than 120 columns)"]
    );
}

#[test]
fn the_deepest_nesting_allowed_fits_a_small_stack() {
    // 60 levels of indentation, each holding 250 levels of flow lists.
    let mut source = String::new();
    for level in 0..60 {
        source.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
    }
    source.push_str(&format!(
        "{}k: {}{}\n",
        "  ".repeat(60),
        "[".repeat(250),
        "]".repeat(250)
    ));
    let errors = parse_on_small_stack(source).expect_err("not a pipeline");
    assert_eq!(errors[0], "unknown key 'k0' at the top level");
}

#[test]
fn flow_nesting_is_capped_by_the_scanner() {
    let errors =
        parse_on_small_stack(format!("stages: {}", "[".repeat(1000))).expect_err("too deep");
    assert_eq!(errors, ["invalid YAML: recursion limit exceeded"]);
}

#[test]
fn alias_bombs_are_refused() {
    let mut source = String::from("x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        source.push_str(&format!("x-a{level}: &a{level} [{items}]\n"));
    }
    source.push_str("stages: *a9\n");
    let errors = parse_on_small_stack(source).expect_err("too big");
    assert_eq!(errors[0], "aliases expand to more than 10000 values");
}
