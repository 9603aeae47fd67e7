//! The OpenAPI document is the contract (issue 21): openapi-spec-validator
//! accepts it, and schemathesis — every check, stateful links included —
//! finds the server binary keeps it, on the memory and on the embedded
//! store, with a token and without one. Each store and each token setting
//! is run once (memory with a token, embedded without): the token is
//! checked in front of the handlers and the store behind them, so neither
//! changes what the other sees, and each run costs a minute or more of a
//! CI machine's two cores.
//!
//! The Python tools are pinned (tests/schemathesis/requirements.txt) and
//! installed from PyPI into a virtualenv under target/tmp, made once and
//! reused while the pins are unchanged. Without python3, its venv module
//! or PyPI, the tests skip and say why — unless `IPAM_TEST_REQUIRE_ALL=1`.
//! The figures of each run are printed (`--no-capture` shows them).

mod process;
mod tools;

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use process::{command, start_with};

const REQUIREMENTS: &str = include_str!("schemathesis/requirements.txt");

fn schemathesis_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}

/// The virtualenv's python with the pinned tools, or why there is none.
fn python_tools() -> Result<PathBuf, String> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    REQUIREMENTS.hash(&mut hasher);
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let venv = base.join(format!("python-tools-{:016x}", hasher.finish()));
    let python = venv.join("bin/python");
    let installed = venv.join(".installed");
    // One test process builds it; the others wait, then reuse it.
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let lock = File::create(base.join("python-tools.lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| format!("locking the venv: {e}"))?;
    if installed.exists() {
        return Ok(python);
    }
    let python3 = tools::on_path("python3").ok_or("python3 is not on PATH")?;
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new(&python3)
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("python3 -m venv: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv failed (Debian: apt-get install python3-venv): {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).map_err(|e| e.to_string())?;
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !pip.status.success() {
        return Err(format!(
            "pip could not install the pinned tools from PyPI: {}",
            String::from_utf8_lossy(&pip.stderr).trim()
        ));
    }
    std::fs::write(&installed, REQUIREMENTS).map_err(|e| e.to_string())?;
    Ok(python)
}

/// Runs the venv's python in `cwd` (a temp dir: schemathesis writes a
/// cache there), with the hooks importable and no bytecode written into the
/// source tree.
fn run(python: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(python)
        .args(args)
        .current_dir(cwd)
        .env("PYTHONPATH", schemathesis_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("the venv's python runs")
}

#[test]
fn openapi_spec_validator_accepts_both_documents() {
    let python = match python_tools() {
        Ok(python) => python,
        Err(reason) => return tools::skip(&reason),
    };
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.json");
    std::fs::write(&open, ipam_server::openapi::open_openapi_json()).unwrap();
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    for document in [checked_in.as_path(), open.as_path()] {
        let out = run(
            &python,
            &[
                "-m",
                "openapi_spec_validator",
                "--validation-errors",
                "all",
                document.to_str().unwrap(),
            ],
            dir.path(),
        );
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.contains(": OK"),
            "{}: {said}",
            document.display()
        );
    }
}

/// Starts the binary on `datastore` (with a token when `token`) and runs
/// schemathesis against it, printing its figures.
async fn schemathesis(datastore: &str, token: bool) {
    let python = match python_tools() {
        Ok(python) => python,
        Err(reason) => return tools::skip(&reason),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&dir.path().join("data"), "127.0.0.1:0");
    cmd.args(["--datastore", datastore]);
    let secret = "schemathesis-token";
    if token {
        let file = dir.path().join("token");
        std::fs::write(&file, secret).unwrap();
        cmd.arg("--token-file").arg(&file);
    }
    let server = start_with(cmd).await;
    let url = format!("{}/openapi.json", server.base);
    let config = schemathesis_dir().join("schemathesis.toml");
    let mut args = vec![
        "-m",
        "schemathesis.cli",
        "--config-file",
        config.to_str().unwrap(),
        "run",
        &url,
        "--checks",
        "all",
        "--workers",
        "1",
        "--no-color",
    ];
    let header = format!("Authorization: Bearer {secret}");
    if token {
        args.extend(["--header", &header]);
    }
    let started = Instant::now();
    // Blocking: schemathesis is a child process and the server another.
    let out = tokio::task::block_in_place(|| run(&python, &args, dir.path()));
    let elapsed = started.elapsed();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let figures: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("Selected:") || l.contains(" generated, ") || l.starts_with("Seed:")
        })
        .collect();
    eprintln!(
        "schemathesis on {datastore}, token {token}: {} in {:.0} s",
        figures.join("; "),
        elapsed.as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis on {datastore} (token: {token}) failed:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_passes_on_the_memory_store_with_a_token() {
    schemathesis("memory", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_passes_on_the_embedded_store_without_a_token() {
    schemathesis("embedded", false).await;
}
