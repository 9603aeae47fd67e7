//! Starting the server: open the datastore the flags name, create the
//! default pools, refuse to listen beyond this machine without a token,
//! start the garbage collector on the Kubernetes datastore, serve until
//! SIGTERM or SIGINT, then finish in-flight requests and give the
//! collector's Lease up.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipam_store::embedded::EmbeddedStore;
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam};
use tokio::net::{TcpListener, UnixListener};

use crate::app::{router, AppConfig};
use crate::args::{Args, DatastoreKind, Listen};
use crate::clock::SystemClock;
use crate::defaults::default_pools;
use crate::gc::{Collector, GcMetrics};

/// Why the server did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Listening beyond loopback needs a token.
    #[error("listening on {listen} (not loopback, not a unix socket) requires a bearer token: pass --token-file PATH (or IPAM_TOKEN_FILE)")]
    TokenRequired {
        /// The address.
        listen: Listen,
    },
    /// The token file is unusable.
    #[error("--token-file {path}: {reason}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A flag is missing or wrong for the datastore chosen.
    #[error("{0}")]
    Flags(String),
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] ipam_store::StoreError),
    /// The engine refused (a default pool, for instance).
    #[error(transparent)]
    Ipam(#[from] ipam_store::IpamError),
    /// The default pools the environment asks for are invalid.
    #[error(transparent)]
    DefaultPools(#[from] crate::defaults::DefaultPoolError),
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn read_token(path: &Path) -> Result<String, StartError> {
    let token_error = |reason: String| StartError::Token {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| token_error(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(token_error("the file is empty".to_string()));
    }
    Ok(token.to_string())
}

/// The datastore the flags choose, and the Kubernetes client when it is
/// the Kubernetes datastore (the garbage collector watches through it).
pub struct Opened {
    /// The datastore.
    pub store: Arc<dyn Datastore>,
    /// The client, for the Kubernetes datastore.
    pub kubernetes: Option<kube::Client>,
}

/// Opens the datastore the flags choose.
pub async fn open_store(args: &Args) -> Result<Opened, StartError> {
    if args.datastore == DatastoreKind::Kubernetes {
        let store = KubernetesStore::connect(args.kubeconfig.as_deref()).await?;
        return Ok(Opened {
            kubernetes: Some(store.client().clone()),
            store: Arc::new(store),
        });
    }
    let store: Arc<dyn Datastore> = match args.datastore {
        DatastoreKind::Memory => Arc::new(MemoryStore::new()),
        DatastoreKind::Embedded => Arc::new(EmbeddedStore::open(&args.data_dir)?),
        DatastoreKind::Etcd => {
            if args.etcd_endpoints.is_empty() {
                return Err(StartError::Flags(
                    "--datastore etcd needs --etcd-endpoints URLS (or IPAM_ETCD_ENDPOINTS)"
                        .to_string(),
                ));
            }
            Arc::new(EtcdStore::connect(&args.etcd_endpoints, EtcdOptions::default()).await?)
        }
        DatastoreKind::Kubernetes => unreachable!("opened above"),
    };
    Ok(Opened {
        store,
        kubernetes: None,
    })
}

/// Creates the default pools the environment asks for, when their family
/// has none yet.
pub async fn ensure_default_pools(
    engine: &Ipam<dyn Datastore>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), StartError> {
    let existing = engine.pools().await?;
    for pool in default_pools(env, &existing)? {
        tracing::info!(pool = pool.name(), cidr = %pool.cidr(), "creating default pool");
        engine.create_pool(pool).await?;
    }
    Ok(())
}

/// Runs the server until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let token = match &args.token_file {
        Some(path) => Some(read_token(path)?),
        None if args.listen.is_local() => None,
        None => {
            return Err(StartError::TokenRequired {
                listen: args.listen.clone(),
            })
        }
    };
    let opened = open_store(&args).await?;
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(opened.store));
    ensure_default_pools(&engine, |name| std::env::var(name).ok()).await?;
    let gc_metrics = Arc::new(GcMetrics::default());
    let (stop_gc, gc_stopped) = tokio::sync::watch::channel(false);
    let collector = match (opened.kubernetes, args.gc()) {
        (Some(client), Some(options)) => {
            let collector = Collector::new(
                client,
                engine.clone(),
                options,
                gc_metrics.clone(),
                Arc::new(SystemClock),
            );
            Some(tokio::spawn(collector.run(gc_stopped)))
        }
        _ => None,
    };
    let app = router(
        engine,
        AppConfig {
            token,
            max_addresses_per_request: args.max_addresses_per_request,
            max_body_bytes: args.max_body_bytes,
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            rate_limit: args.rate_limit(),
            gc_metrics: collector.is_some().then_some(gc_metrics),
        },
    );
    let served = serve(&args, app, shutdown).await;
    if let Some(task) = collector {
        // The collector gives its Lease up before the process ends, so
        // another replica takes over at once; its watches end with it.
        let _ = stop_gc.send(true);
        let _ = task.await;
    }
    served
}

async fn serve(
    args: &Args,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let io = |what: String| move |source| StartError::Io { what, source };
    match &args.listen {
        Listen::Tcp(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(io(format!("listening on {address}")))?;
            tracing::info!(listen = %args.listen, datastore = ?args.datastore, "ipam-server ready");
            // The peer address is what the per-client rate limit keys on.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(io("serving".to_string()))
        }
        Listen::Unix(path) => {
            // A socket left by a killed server would make bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                std::fs::remove_file(path)
                    .map_err(io(format!("removing stale {}", path.display())))?;
            }
            let listener =
                UnixListener::bind(path).map_err(io(format!("listening on {}", path.display())))?;
            tracing::info!(listen = %args.listen, datastore = ?args.datastore, "ipam-server ready");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(io("serving".to_string()))
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server can only be killed; it still
        // serves.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
}
