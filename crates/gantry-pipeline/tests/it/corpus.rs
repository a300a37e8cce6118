//! Every `tests/corpus/NAME.yml` is parsed and its rendered diagnostics (or
//! pipeline summary) compared with `NAME.stderr` beside it.

use std::path::Path;

#[test]
fn corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/corpus exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus went missing");
    for path in files {
        let source = std::fs::read_to_string(&path).expect("readable corpus file");
        let rendered = super::render(&source);
        expect_test::expect_file![path.with_extension("stderr")]
            .assert_eq(&format!("{rendered}\n"));
    }
}
