//! Starting the server: open the datastore the flags name, create the
//! default pools on the datastore's first start, refuse to listen beyond this machine without a token,
//! start the garbage collector on the Kubernetes datastore, serve until
//! SIGTERM or SIGINT, then finish in-flight requests and give the
//! collector's Lease up.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipam_core::IpamConfig;
use ipam_service::{open, DatastoreSettings, Opened};
use ipam_store::etcd::EtcdOptions;
use ipam_store::{Datastore, Ipam, IpamError, Key, StoreError, Value};
use tokio::net::{TcpListener, UnixListener};

use crate::app::{router, AppConfig};
use crate::args::{Args, DatastoreKind, Listen};
use crate::clock::SystemClock;
use crate::connections::{self, ConnectionMetrics};
use crate::defaults::default_pools;
use crate::gc::{Collector, GcMetrics, Watched};
use crate::loadbalancer::Controller;
use crate::node_labels::CachedKubernetesLabels;

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

/// Opens the datastore the flags choose (with the Kubernetes client when
/// it is the Kubernetes datastore: the garbage collector watches through
/// it).
pub async fn open_store(args: &Args) -> Result<Opened, StartError> {
    let settings = match args.datastore {
        DatastoreKind::Memory => DatastoreSettings::Memory,
        DatastoreKind::Embedded => DatastoreSettings::Embedded {
            data_dir: args.data_dir.clone(),
        },
        DatastoreKind::Etcd if args.etcd_endpoints.is_empty() => {
            return Err(StartError::Flags(
                "--datastore etcd needs --etcd-endpoints URLS (or IPAM_ETCD_ENDPOINTS)".to_string(),
            ))
        }
        DatastoreKind::Etcd => DatastoreSettings::Etcd {
            endpoints: args.etcd_endpoints.clone(),
            options: EtcdOptions::default(),
        },
        DatastoreKind::Kubernetes => DatastoreSettings::Kubernetes {
            kubeconfig: args.kubeconfig.clone(),
            api_root: None,
        },
    };
    Ok(open(&settings).await?)
}

/// Creates the default pools the environment asks for on a datastore's
/// first start only, so that a default pool an operator deleted is not
/// created again ([`crate::defaults`] says how this differs from
/// calico-node).
///
/// The IPAMConfig `default` marks a datastore as set up: this writes it
/// (with Calico's defaults) after the pools, as calico-node's startup does
/// since Calico 3.33 (node/pkg/lifecycle/startup/startup.go,
/// `ensureDefaultIPAMConfigExists` after `configureIPPools`), and
/// `calicoctl ipam configure` and `PUT /v1/config` write it too. While it
/// exists, nothing is created. Written last, a start that dies half-way
/// leaves the next one to finish: the pools it made are there, so their
/// family gets none again.
pub async fn ensure_default_pools(
    engine: &Ipam<dyn Datastore>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), StartError> {
    match engine.store().get(&Key::Config).await {
        Ok(_) => return Ok(()),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let existing = engine.pools().await?;
    for pool in default_pools(env, &existing)? {
        tracing::info!(pool = pool.name(), cidr = %pool.cidr(), "creating default pool");
        match engine.create_pool(pool).await {
            // Another replica starting at the same moment made it (or one
            // in its place): either way the family has its pool.
            Err(IpamError::Store(StoreError::AlreadyExists { .. }))
            | Err(IpamError::Refused(ipam_core::Error::PoolsOverlap { .. }))
            | Ok(()) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match engine
        .store()
        .create(&Value::Config(IpamConfig::default()))
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
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
    let mut opened = open_store(&args).await?;
    let gc = opened.kubernetes.clone().zip(args.gc());
    // The collector's watches hold every Node and pod: assignments read
    // labels and pods' annotations from them, and so do the engine's
    // releases (affinity consistency), so they start before the engine.
    let watched = gc.as_ref().map(|(client, _)| Watched::start(client));
    if let Some(client) = &opened.kubernetes {
        opened.labels = Arc::new(CachedKubernetesLabels::new(
            watched.as_ref(),
            client.clone(),
        ));
    }
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(opened.engine());
    ensure_default_pools(&engine, |name| std::env::var(name).ok()).await?;
    let gc_metrics = Arc::new(GcMetrics::default());
    let connection_metrics = Arc::new(ConnectionMetrics::default());
    let (stop_gc, gc_stopped) = tokio::sync::watch::channel(false);
    let (stop_lb, lb_stopped) = tokio::sync::watch::channel(false);
    let load_balancer = match (&opened.kubernetes, args.loadbalancer()) {
        (Some(client), Some(options)) => {
            let controller = Controller::new(
                client.clone(),
                engine.clone(),
                options,
                Arc::new(SystemClock),
            );
            Some(tokio::spawn(controller.run(lb_stopped)))
        }
        _ => None,
    };
    let labels = opened.labels;
    let collector = gc.zip(watched).map(|((client, options), watched)| {
        Collector::new(
            client,
            engine.clone(),
            options,
            gc_metrics.clone(),
            Arc::new(SystemClock),
            watched,
        )
    });
    let collector = collector.map(|c| tokio::spawn(c.run(gc_stopped)));
    let app = router(
        engine,
        AppConfig {
            token,
            max_addresses_per_request: args.max_addresses_per_request,
            max_body_bytes: args.max_body_bytes,
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            rate_limit: args.rate_limit(),
            gc_metrics: collector.is_some().then_some(gc_metrics),
            connection_metrics: Some(connection_metrics.clone()),
            labels: Some(labels),
        },
    );
    let served = serve(&args, app, connection_metrics, shutdown).await;
    if let Some(task) = load_balancer {
        // Its Lease is given up too, for another replica to take over.
        let _ = stop_lb.send(true);
        let _ = task.await;
    }
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
    metrics: Arc<ConnectionMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let io = |what: String| move |source| StartError::Io { what, source };
    let limits = args.connection_limits();
    match &args.listen {
        Listen::Tcp(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(io(format!("listening on {address}")))?;
            // The bound address, not the one asked for: with port 0 (a
            // test's, or an operator's who wants any free port) this line
            // is how the caller learns where to connect.
            let bound = listener
                .local_addr()
                .map_err(io(format!("reading the address bound for {address}")))?;
            tracing::info!(listen = %args.listen, address = %bound, datastore = ?args.datastore, "ipam-server ready");
            connections::serve(listener, app, limits, metrics, shutdown).await;
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
            connections::serve(listener, app, limits, metrics, shutdown).await;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use ipam_store::memory::MemoryStore;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    async fn pool_names(engine: &Ipam<dyn Datastore>) -> Vec<String> {
        let pools = engine.pools().await.unwrap();
        pools.iter().map(|p| p.name().to_string()).collect()
    }

    #[tokio::test]
    async fn default_pools_are_created_on_the_first_start_only() {
        let engine: Ipam<dyn Datastore> = Ipam::new(Arc::new(MemoryStore::new()));
        ensure_default_pools(&engine, no_env).await.unwrap();
        assert_eq!(pool_names(&engine).await, ["default-ipv4-ippool"]);
        // The marker: Calico's default IPAMConfig, stored.
        let stored = engine.store().get(&Key::Config).await.unwrap();
        assert_eq!(stored.value, Value::Config(IpamConfig::default()));

        engine.delete_pool("default-ipv4-ippool").await.unwrap();
        ensure_default_pools(&engine, no_env).await.unwrap();
        assert!(
            pool_names(&engine).await.is_empty(),
            "an operator's delete stands"
        );
    }

    #[tokio::test]
    async fn a_datastore_set_up_before_gets_no_default_pool() {
        // An IPAMConfig written by calicoctl or an earlier start, no pool.
        let engine: Ipam<dyn Datastore> = Ipam::new(Arc::new(MemoryStore::new()));
        let config = IpamConfig {
            strict_affinity: true,
            ..IpamConfig::default()
        };
        engine.set_config(config.clone()).await.unwrap();
        ensure_default_pools(&engine, no_env).await.unwrap();
        assert!(pool_names(&engine).await.is_empty());
        assert_eq!(engine.config().await.unwrap(), config, "left as it was");
    }

    #[tokio::test]
    async fn a_start_that_died_before_the_marker_is_finished_without_a_second_pool() {
        // Pools from Calico (or a start that died), no IPAMConfig yet.
        let engine: Ipam<dyn Datastore> = Ipam::new(Arc::new(MemoryStore::new()));
        let spec = ipam_core::PoolSpec::new("10.9.0.0/16".parse().unwrap());
        engine
            .create_pool(ipam_core::Pool::new("operators-pool", spec).unwrap())
            .await
            .unwrap();
        ensure_default_pools(&engine, no_env).await.unwrap();
        assert_eq!(pool_names(&engine).await, ["operators-pool"]);
        assert!(engine.store().get(&Key::Config).await.is_ok());
    }
}
