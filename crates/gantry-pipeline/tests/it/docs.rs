//! The complete examples in `docs/pipeline.md` are valid pipelines.

use std::path::Path;

#[test]
fn examples_in_the_reference_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipeline.md");
    let text = std::fs::read_to_string(path).expect("docs/pipeline.md exists");
    let mut checked = 0;
    for block in text.split("```yaml\n").skip(1) {
        let Some((yaml, _)) = block.split_once("```") else {
            continue;
        };
        // Fragments (a key alone, or elided with `...`) are not files.
        if !yaml.contains("stages:") || yaml.contains("...") {
            continue;
        }
        let yaml = super::dedent(yaml);
        if let Err(diagnostics) = gantry_pipeline::parse("docs/pipeline.md", &yaml) {
            panic!("{yaml}\n{diagnostics}");
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples found");
}
