//! Every generated file is checked in as its source generates it now.

#[test]
fn checked_in_generated_files_are_what_their_sources_generate() {
    let root = xtask::workspace_root();
    let mut stale = Vec::new();
    for file in xtask::all().unwrap() {
        let on_disk = std::fs::read_to_string(root.join(&file.path)).unwrap_or_default();
        if on_disk != file.content {
            stale.push(file.path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files: {}; run `cargo xtask gen` and commit the result",
        stale.join(", ")
    );
}
