//! Test support: run the real `ipamctl`, seed an embedded datastore with
//! the engine, serve ipam-server's API over a data dir on a free port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ipam_core::{AutoAssignRequest, Pool, PoolSpec};
use ipam_core::{HandleId, NodeName};
use ipam_server::app::{router, AppConfig};
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
    let mut request = AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), v4, v6);
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

/// ipam-server's API over the embedded store in a data dir, served by its
/// router on a loopback port from a runtime of its own (so that it keeps
/// answering while the test waits for ipamctl). It holds the data dir as a
/// running server does. Stopped when dropped.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    pub url: String,
}

impl Server {
    /// Serves the embedded store in `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, AppConfig::default())
    }

    /// The same with the server's settings (a token, limits).
    pub fn start_with(data_dir: &Path, config: AppConfig) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let store: Arc<dyn Datastore> =
            Arc::new(EmbeddedStore::open(data_dir).expect("the server opens the data dir"));
        let app = router(Arc::new(Ipam::new(store)), config);
        let listener = {
            let _entered = runtime.enter();
            let std = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            std.set_nonblocking(true).expect("a non-blocking listener");
            tokio::net::TcpListener::from_std(std).expect("a tokio listener")
        };
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            runtime: Some(runtime),
            url,
        }
    }

    /// Serves the embedded store in `data_dir` on the unix socket `socket`.
    pub fn start_unix(data_dir: &Path, socket: &Path) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let store: Arc<dyn Datastore> =
            Arc::new(EmbeddedStore::open(data_dir).expect("the server opens the data dir"));
        let app = router(Arc::new(Ipam::new(store)), AppConfig::default());
        let listener = {
            let _entered = runtime.enter();
            tokio::net::UnixListener::bind(socket).expect("binding the socket")
        };
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            runtime: Some(runtime),
            url: format!("unix:{}", socket.display()),
        }
    }

    /// Connection flags for it.
    pub fn connection(&self) -> Vec<String> {
        vec!["--server".into(), self.url.clone()]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Tests drop it inside their own runtime, where a blocking
        // shutdown is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
