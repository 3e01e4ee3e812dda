//! Every suite in the repository's top-level `tests/` runs: each file there
//! is a `[[test]]` target of this crate (cargo does not discover files
//! outside the crate, so an unregistered one would silently never run).

use std::path::Path;

#[test]
fn every_top_level_test_file_is_a_registered_target() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let tests_dir = crate_dir.join("../../tests");
    let mut missing = Vec::new();
    for e in std::fs::read_dir(&tests_dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".rs") && !manifest.contains(&format!("path = \"../../tests/{name}\"")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{missing:?} never run: add a [[test]] for each to {}",
        crate_dir.join("Cargo.toml").display()
    );
}
