//! Test support: run the real `ipamctl`, seed an embedded datastore with
//! the engine, start a real `ipam-server` on a free port over a data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ipam_core::{AutoAssignRequest, Pool, PoolSpec};
use ipam_store::embedded::EmbeddedStore;
use ipam_store::{Datastore, Ipam};

pub const IPAMCTL: &str = env!("CARGO_BIN_EXE_ipamctl");

/// What one run of ipamctl did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs ipamctl with `args`, none of the IPAM_* variables of the caller's
/// environment leaking in.
pub fn ipamctl(args: &[&str]) -> Run {
    let output = Command::new(IPAMCTL)
        .args(args)
        .env_remove("IPAM_SERVER")
        .env_remove("IPAM_DATASTORE")
        .env_remove("IPAM_DATA_DIR")
        .env_remove("IPAM_TOKEN_FILE")
        .env_remove("IPAM_ETCD_ENDPOINTS")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("ipamctl runs");
    Run {
        code: output.status.code().expect("ipamctl exits, not killed"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// Connection flags for the embedded store in `dir`.
pub fn embedded(dir: &Path) -> Vec<String> {
    vec![
        "--datastore".into(),
        "embedded".into(),
        "--data-dir".into(),
        dir.display().to_string(),
    ]
}

/// `connection` then `args`, as one argument list.
pub fn with(connection: &[String], args: &[&str]) -> Vec<String> {
    connection
        .iter()
        .cloned()
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

/// Runs ipamctl with connection flags.
pub fn ipamctl_with(connection: &[String], args: &[&str]) -> Run {
    let all = with(connection, args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    ipamctl(&refs)
}

/// The engine over the embedded store in `dir`; dropping it releases the
/// directory for ipamctl or ipam-server.
pub fn open_embedded(dir: &Path) -> Ipam<dyn Datastore> {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(dir).expect("embedded store"));
    Ipam::new(store)
}

/// A pool with Calico's defaults.
pub fn pool(name: &str, cidr: &str, block_size: Option<u8>) -> Pool {
    let mut spec = PoolSpec::new(cidr.parse().expect("a CIDR"));
    spec.block_size = block_size;
    Pool::new(name, spec).expect("a valid pool")
}

/// Assigns `count` addresses of `family` 4 or 6 to a pod on `node`,
/// recording node, namespace and pod as calico-ipam does.
pub async fn assign_pod(
    engine: &Ipam<dyn Datastore>,
    handle: &str,
    node: &str,
    pod: &str,
    v4: u32,
    v6: u32,
) {
    let mut request = AutoAssignRequest::new(handle, node, v4, v6);
    request.attributes.insert("node".into(), node.into());
    request
        .attributes
        .insert("namespace".into(), "default".into());
    request.attributes.insert("pod".into(), pod.into());
    let got = engine.auto_assign(&request).await.expect("assigned");
    assert_eq!(got.ipv4.addresses.len() as u32, v4, "{handle}");
    assert_eq!(got.ipv6.addresses.len() as u32, v6, "{handle}");
}

/// Compares with a golden file under tests/golden; with UPDATE_GOLDEN=1
/// writes it instead.
pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("writing the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    assert_eq!(actual, expected, "differs from {}", path.display());
}

/// A Calico fixture.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/calico")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ipam-server binary, built (or found up to date) once per test
/// process: a binary of another package has no CARGO_BIN_EXE_ variable.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = Path::new(IPAMCTL).parent().expect("ipamctl's directory");
        let mut build = Command::new(env!("CARGO"));
        build.args([
            "build",
            "--quiet",
            "-p",
            "ipam-server",
            "--bin",
            "ipam-server",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building ipam-server failed");
        dir.join("ipam-server")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A running ipam-server, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// Starts ipam-server on a free loopback port over the embedded store
    /// in `data_dir`, without default pools, and waits until it answers.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// The same with more flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(server_binary())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(flags)
            .env("NO_DEFAULT_POOLS", "true")
            .env_remove("CALICO_IPV4POOL_CIDR")
            .env_remove("CALICO_IPV6POOL_CIDR")
            .env_remove("IPAM_TOKEN_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ipam-server starts");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ipam-server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Connection flags for it.
    pub fn connection(&self) -> Vec<String> {
        vec!["--server".into(), self.url.clone()]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
