//! What a test needs from the machine beyond Rust — root, a real etcd,
//! Chromium, Debian's CNI plugins — asked for in one place, so that every
//! test that needs one says so the same way.
//!
//! Each function returns whether the prerequisite is there. When it is
//! not, the test should return at once, and the function has already said
//! why on stderr: `skipped: <test> needs <what> (<why>)`. So a developer
//! without etcd or root runs `cargo test --workspace` green, with the
//! skipped tests named. With `IPAM_TEST_REQUIRE_ALL=1` (CI sets it) a
//! missing prerequisite panics instead, naming it and the Debian package
//! that provides it: on a machine meant to run everything, nothing is
//! skipped silently.
//!
//! ```no_run
//! #[test]
//! fn needs_etcd() {
//!     if !testkit::require::etcd() {
//!         return;
//!     }
//!     // ... start testkit::etcd::EtcdServer ...
//! }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

/// The variable that turns a missing prerequisite into a failure.
pub const REQUIRE_ALL: &str = "IPAM_TEST_REQUIRE_ALL";

/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// The Debian plugins the end-to-end tests run beside calico-ipam.
pub const CNI_PLUGINS: [&str; 3] = ["bridge", "ptp", "host-local"];

/// Whether the test runs as root, which creating network namespaces
/// (`ip netns add`) and moving links between them need.
pub fn root() -> bool {
    check(
        effective_uid() == Some(0),
        "root",
        "it creates network namespaces",
        "run the tests as root, as CI does",
    )
}

/// Whether `etcd` is on the PATH ([`crate::etcd::EtcdServer`] starts it).
pub fn etcd() -> bool {
    command("etcd", "etcd-server")
}

/// Whether `chromium` is on the PATH, for tests that load a page in it.
pub fn chromium() -> bool {
    command("chromium", "chromium")
}

/// Whether Debian's CNI plugins (`bridge`, `ptp`, `host-local`) are in
/// [`DEBIAN_CNI_DIR`].
pub fn cni_plugins() -> bool {
    let dir = Path::new(DEBIAN_CNI_DIR);
    let missing: Vec<&str> = CNI_PLUGINS
        .into_iter()
        .filter(|plugin| !dir.join(plugin).is_file())
        .collect();
    check(
        missing.is_empty(),
        "Debian's CNI plugins",
        &format!("{} not in {DEBIAN_CNI_DIR}", missing.join(", ")),
        "install Debian's containernetworking-plugins",
    )
}

/// Whether the program `name` is on the PATH; `package` is the Debian
/// package that installs it, for the message when it is not.
pub fn command(name: &str, package: &str) -> bool {
    check(
        find(name).is_some(),
        name,
        &format!("`{name}` is not on the PATH"),
        &format!("install Debian's {package}"),
    )
}

/// Whether `path` is a statically linked program, for a test that copies
/// it into a container image holding nothing else; `package` is the Debian
/// package that installs it.
pub fn static_program(path: &str, package: &str) -> bool {
    let linked_statically = Path::new(path).is_file()
        && std::process::Command::new("ldd")
            .arg(path)
            .output()
            .is_ok_and(|out| {
                let text =
                    String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
                text.contains("not a dynamic executable") || text.contains("statically linked")
            });
    check(
        linked_statically,
        path,
        "a statically linked program is needed, and it is missing or dynamically linked",
        &format!("install Debian's {package}"),
    )
}

/// The first `name` on the PATH that is an executable file.
pub fn find(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

// Says what is missing and what to do about it (`remedy`), then lets the
// test go on (`present`), return early, or fail, as IPAM_TEST_REQUIRE_ALL
// says.
fn check(present: bool, what: &str, why: &str, remedy: &str) -> bool {
    if present {
        return true;
    }
    let require_all = std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1");
    match missing(&current_test(), what, why, remedy, require_all) {
        Missing::Skip(message) => {
            // Straight to the process's stderr: libtest captures what a
            // passing test prints with `eprintln!`, and a skip must show.
            let _ = writeln!(std::io::stderr(), "{message}");
            false
        }
        Missing::Fail(message) => panic!("{message}"),
    }
}

/// What to do about a missing prerequisite, and the words for it.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    Skip(String),
    Fail(String),
}

fn missing(test: &str, what: &str, why: &str, remedy: &str, require_all: bool) -> Missing {
    if require_all {
        Missing::Fail(format!(
            "{test} needs {what} ({why}) and {REQUIRE_ALL}=1 forbids skipping it: {remedy}"
        ))
    } else {
        Missing::Skip(format!("skipped: {test} needs {what} ({why}; {remedy})"))
    }
}

// libtest and nextest run each test on a thread named after it.
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "this test".to_string(),
    }
}

// The effective uid: /proc/self/status's `Uid:` line holds the real,
// effective, saved and filesystem ids.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_read_from_proc() {
        let uid = effective_uid().expect("Linux has /proc/self/status");
        // The owner of a file just made is the effective uid.
        let file = tempfile::NamedTempFile::new().unwrap();
        let owner = std::os::unix::fs::MetadataExt::uid(&file.as_file().metadata().unwrap());
        assert_eq!(uid, owner);
    }

    #[test]
    fn a_program_is_found_on_the_path_and_a_missing_one_is_not() {
        assert!(find("sh").is_some_and(|p| p.is_absolute()));
        assert_eq!(find("no-such-program-ipam-test"), None);
    }

    #[test]
    fn the_current_test_is_named_by_its_thread() {
        assert!(current_test().ends_with("the_current_test_is_named_by_its_thread"));
    }

    #[test]
    fn a_missing_prerequisite_skips_or_fails_as_the_environment_says() {
        let say = |require_all| {
            missing(
                "t",
                "etcd",
                "not on the PATH",
                "install Debian's etcd-server",
                require_all,
            )
        };
        assert_eq!(
            say(false),
            Missing::Skip(
                "skipped: t needs etcd (not on the PATH; install Debian's etcd-server)".into()
            )
        );
        assert_eq!(
            say(true),
            Missing::Fail(
                "t needs etcd (not on the PATH) and IPAM_TEST_REQUIRE_ALL=1 forbids skipping it: \
                 install Debian's etcd-server"
                    .into()
            )
        );
    }

    #[test]
    fn present_prerequisites_neither_skip_nor_fail() {
        // `sh` is everywhere; a present prerequisite never consults the
        // environment, so this holds with IPAM_TEST_REQUIRE_ALL=1 too.
        assert!(command("sh", "dash"));
    }
}
