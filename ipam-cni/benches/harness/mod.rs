//! What the plugin benches share: starting an IPAM plugin binary as a
//! runtime does (CNI_* environment, the config on stdin, the result read
//! from stdout), and an ipam-server on its embedded store in the bench's
//! process, reached over a unix socket.

// Each bench uses its own part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::embedded::EmbeddedStore;
use ipam_store::{Datastore, Ipam};
use serde_json::Value;

/// Debian's host-local, the peer of every plugin bench.
pub const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// Our plugin: `CALICO_IPAM_BIN` when set (the static build README's
/// "Installing the plugin" gives, which is what a node runs), else the
/// one cargo built for the bench.
pub fn calico_ipam() -> PathBuf {
    std::env::var_os("CALICO_IPAM_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_calico-ipam")),
        PathBuf::from,
    )
}

/// A plugin binary and the network config it is given.
pub struct Plugin {
    /// How the tables name it.
    pub name: &'static str,
    /// The binary.
    pub binary: PathBuf,
    /// The network config written to its stdin.
    pub config: Value,
}

/// Runs `plugin` once for `command` on `container`; returns how long the
/// process took, start to exit. A plugin that fails stops the bench.
pub fn invoke(plugin: &Plugin, command: &str, container: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(&plugin.binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", "/run/netns/bench")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin.binary.parent().unwrap())
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the plugin");
    let written = child
        .stdin
        .take()
        .unwrap()
        .write_all(plugin.config.to_string().as_bytes());
    // A binary that reads no stdin (the no-op peer) may have exited first.
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{} {command} {container}: {}",
        plugin.name,
        String::from_utf8_lossy(&out.stdout)
    );
    elapsed
}

/// Fails the bench with what to install when host-local is missing.
pub fn require_host_local() {
    assert!(
        Path::new(HOST_LOCAL).exists(),
        "{HOST_LOCAL} is missing: apt-get install containernetworking-plugins"
    );
}

/// ipam-server's router on its embedded store in `dir`, with one pool,
/// served on `dir/ipam.sock` by `runtime`; returns the socket's path.
pub fn serve_embedded(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    cidr: &str,
    block_size: u8,
) -> PathBuf {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(&dir.join("ipam-data")).unwrap());
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
    let spec = PoolSpec {
        block_size: Some(block_size),
        ..PoolSpec::new(cidr.parse().unwrap())
    };
    runtime
        .block_on(engine.create_pool(Pool::new("bench", spec).unwrap()))
        .unwrap();
    let socket = dir.join("ipam.sock");
    let listener = {
        let _entered = runtime.enter();
        tokio::net::UnixListener::bind(&socket).unwrap()
    };
    let app = router(engine, AppConfig::default());
    runtime.spawn(async move { axum::serve(listener, app).await });
    socket
}

/// The bench's numeric arguments, in order, each or its default
/// (`cargo bench` adds flags such as `--bench`, which are skipped).
pub fn numbers_from_args<const N: usize>(defaults: [usize; N]) -> [usize; N] {
    let given: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    std::array::from_fn(|i| given.get(i).copied().unwrap_or(defaults[i]))
}

/// The runtime the in-process server runs on: two workers, as the
/// machine has two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Milliseconds, for the tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
