//! What the plugin's cross-process tests share: an IPAM to allocate from
//! (the engine on a store, served by ipam-server's router on a unix socket
//! or loopback TCP, on a runtime of its own), a CNI_PATH holding our binary
//! (and, for the end-to-end tests, Debian's plugins beside it), and running
//! a plugin the way a runtime does.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ipam_client::{Client, Endpoint};

use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::embedded::EmbeddedStore;
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::{Datastore, Ipam};
use ipnet::IpNet;
use serde_json::Value;
use tempfile::TempDir;

/// The pool every test allocates from: a benchmarking range (RFC 2544)
/// that no real network uses.
pub const POOL: &str = "198.18.0.0/16";

/// An IPAM: the engine on a store, and a runtime that serves it.
pub struct TestIpam {
    /// The engine, for checking what the plugin did.
    pub engine: Arc<Ipam<dyn Datastore>>,
    /// Runs the server and the test's own engine calls.
    pub runtime: tokio::runtime::Runtime,
    /// Keeps the data and the socket.
    pub dir: TempDir,
}

/// An IPAM whose engine runs on the embedded store in a temp dir.
pub fn embedded_ipam() -> TestIpam {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Datastore> =
        Arc::new(EmbeddedStore::open(&dir.path().join("data")).unwrap());
    with_store(store, dir)
}

/// An IPAM whose engine runs on etcd at `endpoint`.
pub fn etcd_ipam(endpoint: &str) -> TestIpam {
    let runtime = runtime();
    let store = runtime
        .block_on(EtcdStore::connect(
            &[endpoint.to_string()],
            EtcdOptions::default(),
        ))
        .unwrap();
    with_runtime(Arc::new(store), tempfile::tempdir().unwrap(), runtime)
}

/// A real etcd (testkit) and the runtime that started it; ask
/// `testkit::require::etcd()` first.
pub fn started_etcd() -> (tokio::runtime::Runtime, testkit::etcd::EtcdServer) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime
        .block_on(testkit::etcd::EtcdServer::start())
        .unwrap();
    (runtime, etcd)
}

/// A multi-threaded runtime of its own, for a test's blocking calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn with_store(store: Arc<dyn Datastore>, dir: TempDir) -> TestIpam {
    with_runtime(store, dir, runtime())
}

fn with_runtime(
    store: Arc<dyn Datastore>,
    dir: TempDir,
    runtime: tokio::runtime::Runtime,
) -> TestIpam {
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new(POOL.parse().unwrap())
    };
    runtime
        .block_on(engine.create_pool(Pool::new("test-pool", spec).unwrap()))
        .unwrap();
    TestIpam {
        engine,
        runtime,
        dir,
    }
}

impl TestIpam {
    /// Serves the API on a unix socket; returns `unix:PATH`.
    pub fn serve_unix(&self) -> String {
        self.serve_unix_with(AppConfig::default())
    }

    /// Serves the API on a unix socket with `config`.
    pub fn serve_unix_with(&self, config: AppConfig) -> String {
        let path = self
            .dir
            .path()
            .join(format!("ipam-{}.sock", fastrand_suffix()));
        let app = router(self.engine.clone(), config);
        let listener = {
            let _entered = self.runtime.enter();
            tokio::net::UnixListener::bind(&path).unwrap()
        };
        self.runtime
            .spawn(async move { axum::serve(listener, app).await });
        format!("unix:{}", path.display())
    }

    /// Serves the API on loopback TCP; returns `http://127.0.0.1:PORT`.
    pub fn serve_tcp(&self, config: AppConfig) -> String {
        let app = router(self.engine.clone(), config);
        let listener = {
            let _entered = self.runtime.enter();
            let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std.set_nonblocking(true).unwrap();
            tokio::net::TcpListener::from_std(std).unwrap()
        };
        let url = format!("http://{}", listener.local_addr().unwrap());
        self.runtime
            .spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// Serves the API on a unix socket that the test can stop and start
    /// again: an ipam-server outage.
    pub fn serve_switchable(&self) -> Switchable<'_> {
        let path = self
            .dir
            .path()
            .join(format!("ipam-{}.sock", fastrand_suffix()));
        let mut switch = Switchable {
            ipam: self,
            path,
            task: None,
        };
        switch.start();
        switch
    }

    /// Every allocated address and its handle, read fresh.
    pub fn allocations(&self) -> BTreeMap<std::net::IpAddr, String> {
        let snapshot = self.runtime.block_on(self.engine.snapshot()).unwrap();
        snapshot
            .blocks()
            .flat_map(|block| {
                block.allocations().map(move |(ordinal, attribute)| {
                    (
                        block.cidr().address(ordinal),
                        attribute.handle().unwrap_or_default().to_string(),
                    )
                })
            })
            .collect()
    }

    /// The addresses a handle holds.
    pub fn held_by(&self, handle: &str) -> Vec<IpNet> {
        self.runtime
            .block_on(self.engine.addresses_of_handle(handle))
            .unwrap()
    }

    /// The attributes recorded with an address.
    pub fn attributes_of(&self, address: std::net::IpAddr) -> BTreeMap<String, String> {
        self.runtime
            .block_on(self.engine.attributes_of(address))
            .unwrap()
            .map(|a| a.secondary().to_map())
            .unwrap_or_default()
    }
}

/// The API on a unix socket, up or down.
pub struct Switchable<'a> {
    ipam: &'a TestIpam,
    path: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Switchable<'_> {
    /// `unix:PATH`, for `ipam.server`.
    pub fn url(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    /// Stops serving: new connections are refused until [`start`].
    ///
    /// [`start`]: Switchable::start
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = self.ipam.runtime.block_on(task);
        }
    }

    /// Serves again on the same path.
    pub fn start(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.path);
        let app = router(self.ipam.engine.clone(), AppConfig::default());
        let listener = {
            let _entered = self.ipam.runtime.enter();
            tokio::net::UnixListener::bind(&self.path).unwrap()
        };
        self.task = Some(self.ipam.runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
}

impl Drop for Switchable<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The `calico-ipam` under test: `CALICO_IPAM_BIN` when set (the static
/// build of README's "Installing the plugin", say, run through the same
/// tests), else the one cargo built beside these tests.
pub fn calico_ipam() -> PathBuf {
    std::env::var_os("CALICO_IPAM_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_calico-ipam")),
        PathBuf::from,
    )
}

/// A CNI_PATH directory: our `calico-ipam`, and Debian's plugins when a
/// test runs them.
pub struct PluginDir {
    dir: TempDir,
}

impl PluginDir {
    /// Links our `calico-ipam` in.
    pub fn new() -> PluginDir {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(calico_ipam(), dir.path().join("calico-ipam")).unwrap();
        PluginDir { dir }
    }

    /// Links our `calico-ipam` and Debian's `bridge`, `ptp` and
    /// `host-local` in; ask `testkit::require::cni_plugins()` first.
    pub fn with_debian_plugins() -> PluginDir {
        let plugins = PluginDir::new();
        for plugin in testkit::require::CNI_PLUGINS {
            let source = Path::new(testkit::require::DEBIAN_CNI_DIR).join(plugin);
            std::os::unix::fs::symlink(&source, plugins.dir.path().join(plugin)).unwrap();
        }
        plugins
    }

    /// The directory, for CNI_PATH.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A plugin's path.
    pub fn plugin(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What a plugin run printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code.
    pub code: i32,
    /// Stdout, parsed as JSON (`Value::Null` when empty).
    pub output: Value,
    /// Stdout as it was.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Outcome {
    /// The CNI error code, when stdout holds an error object.
    pub fn error_code(&self) -> Option<u64> {
        self.output.get("code").and_then(Value::as_u64)
    }

    /// Panics unless the run succeeded.
    pub fn ok(self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.output
    }
}

/// Runs `binary` as a runtime would: a clean environment holding only
/// `env`, `config` on stdin. A config whose `ipam` names no `state_dir`
/// gets one in the binary's directory (a [`PluginDir`], removed with it),
/// so that no test writes the default one of the machine.
pub fn run_plugin(binary: &Path, env: &[(&str, String)], config: &Value) -> Outcome {
    let mut config = config.clone();
    if let Some(ipam) = config.get_mut("ipam").and_then(Value::as_object_mut) {
        let state = binary.parent().expect("a plugin dir").join("state");
        ipam.entry("state_dir")
            .or_insert_with(|| Value::String(state.display().to_string()));
    }
    run_plugin_raw(binary, env, config.to_string().as_bytes())
}

/// The state dir [`run_plugin`] gives a config run from `plugins`.
pub fn state_dir(plugins: &PluginDir) -> PathBuf {
    plugins.path().join("state")
}

/// Like [`run_plugin`], with any bytes on stdin. Stdout that is not JSON
/// leaves `output` null (and `stdout` as it was).
pub fn run_plugin_raw(binary: &Path, env: &[(&str, String)], stdin: &[u8]) -> Outcome {
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        output: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The environment of one attachment.
pub fn cni_env(
    command: &str,
    container: &str,
    netns: &str,
    cni_path: &Path,
    args: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", container.to_string()),
        ("CNI_NETNS", netns.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", cni_path.display().to_string()),
        ("CNI_ARGS", args.to_string()),
    ]
}

/// The addresses a result lists.
pub fn result_addresses(result: &Value) -> Vec<IpNet> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {result}"))
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// ipam-server started as its binary starts (`ipam_server::server::run`),
/// on a unix socket, until dropped.
pub struct Served {
    /// `unix:<socket>`, as `ipam.server` names it.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Starts it on the Kubernetes datastore `kubeconfig` reaches, its
    /// garbage collector (and so its Node and pod watches) on under the
    /// Lease identity `identity`.
    pub fn on_kubernetes(dir: &Path, kubeconfig: &Path, identity: &str) -> Served {
        Served::start(
            dir,
            &[
                "--datastore",
                "kubernetes",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--gc-lease-namespace",
                "calico-ipam-rs",
                "--gc-identity",
                identity,
            ],
        )
    }

    /// Starts it with `flags` after `--listen`, and waits until it is ready.
    pub fn start(dir: &Path, flags: &[&str]) -> Served {
        let socket = dir.join("ipam.sock");
        let listen = format!("unix:{}", socket.display());
        let args = ipam_server::args::Args::try_parse_from(
            ["ipam-server", "--listen", &listen, "--log-level", "warn"]
                .iter()
                .chain(flags),
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime()
                .block_on(ipam_server::server::run(args, async {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        let client = Client::new(Endpoint::Unix(socket), Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(30);
        let rt = runtime();
        while rt.block_on(client.ready()).is_err() {
            assert!(Instant::now() < deadline, "ipam-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served {
            url: listen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A client of it.
    pub fn client(&self) -> Client {
        let path = self.url.strip_prefix("unix:").unwrap();
        Client::new(Endpoint::Unix(PathBuf::from(path)), Duration::from_secs(5))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
