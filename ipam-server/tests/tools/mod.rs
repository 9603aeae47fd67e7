//! Outside tools the tests drive (promtool, Python packages): found, or
//! the test is skipped with the reason printed — unless
//! `IPAM_TEST_REQUIRE_ALL=1` (CI sets it), when a missing tool fails it.

use std::path::PathBuf;

/// Whether a missing tool must fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("IPAM_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Ends a test that cannot run here: panics under `IPAM_TEST_REQUIRE_ALL=1`,
/// else prints why it is skipped. The caller returns right after.
pub fn skip(reason: &str) {
    assert!(
        !required(),
        "IPAM_TEST_REQUIRE_ALL=1, and this test cannot run: {reason}"
    );
    eprintln!("SKIPPED: {reason} (set IPAM_TEST_REQUIRE_ALL=1 to fail instead)");
}

/// The executable `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
