//! Allocations per second and datastore round trips per allocation, for
//! each backend, in two scenarios:
//!
//! - `one-node`: one node allocating one address at a time, sequentially.
//!   Every 64th allocation claims a new /26 block; the others are the
//!   steady state (an affine block with room), reported separately.
//! - `64-nodes`: 64 nodes allocating concurrently from fresh, so that every
//!   node claims new blocks as it goes.
//!
//! Run: `cargo bench -p ipam-store --bench engine -- [BACKEND...]` with
//! backends `memory`, `embedded`, `etcd`, `kubernetes` (default: all).
//! `kubernetes` is testkit's in-process API server on loopback, reached
//! through kube's client as a cluster's API server would be: its figures
//! count round trips exactly, and its allocations/s measure our client's
//! path plus that server, not a real cluster's. Prints a Markdown table
//! (to stderr, as the workspace keeps stdout for results of tools).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_core::{AutoAssignRequest, IpamConfig, Pool, PoolSpec};
use ipam_core::{HandleId, NodeName};
use ipam_store::embedded::EmbeddedStore;
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, RoundTrips};
use testkit::apiserver::ApiServer;
use testkit::etcd::EtcdServer;

/// A started backend and whatever must outlive it (temp dir, etcd process).
type Started = (Arc<dyn Datastore>, Box<dyn std::any::Any>);

struct Figures {
    allocations: u64,
    elapsed: Duration,
    trips: RoundTrips,
    steady: Option<(u64, RoundTrips)>,
}

fn per(n: u64, count: u64) -> f64 {
    n as f64 / count as f64
}

async fn engine(store: Arc<dyn Datastore>) -> Arc<Ipam<dyn Datastore>> {
    let engine = Ipam::new(store);
    // Calico caps a host at 20 blocks unless told otherwise; the one-node
    // run needs hundreds.
    let config = IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 1_000_000,
        ..IpamConfig::default()
    };
    engine.set_config(config).await.unwrap();
    let spec = PoolSpec {
        block_size: Some(26),
        node_selector: "all()".to_string(),
        ..PoolSpec::new("10.0.0.0/12".parse().unwrap())
    };
    engine
        .create_pool(Pool::new("bench", spec).unwrap())
        .await
        .unwrap();
    Arc::new(engine)
}

async fn one_node(store: Arc<dyn Datastore>, count: u64) -> Figures {
    let engine = engine(store.clone()).await;
    engine
        .auto_assign(&AutoAssignRequest::new(
            HandleId::new("warm-up"),
            NodeName::new("node-0"),
            1,
            0,
        ))
        .await
        .unwrap();
    let start_trips = store.round_trips();
    let mut steady = (0, RoundTrips::default());
    let started = Instant::now();
    for i in 0..count {
        let before = store.round_trips();
        let got = engine
            .auto_assign(&AutoAssignRequest::new(
                HandleId::new(format!("pod-{i}")),
                NodeName::new("node-0"),
                1,
                0,
            ))
            .await
            .unwrap();
        assert_eq!(got.ipv4.addresses.len(), 1);
        let spent = store.round_trips().since(before);
        // A claim writes the pending affinity, the block and the
        // confirmation besides the handle; the steady state writes two
        // (the handle, the block), or one batch of both where the store
        // has batches.
        if spent.writes <= 2 {
            steady.0 += 1;
            steady.1.reads += spent.reads;
            steady.1.writes += spent.writes;
        }
    }
    Figures {
        allocations: count,
        elapsed: started.elapsed(),
        trips: store.round_trips().since(start_trips),
        steady: Some(steady),
    }
}

async fn many_nodes(store: Arc<dyn Datastore>, nodes: u64, per_node: u64) -> Figures {
    let engine = engine(store.clone()).await;
    let start_trips = store.round_trips();
    let started = Instant::now();
    let tasks: Vec<_> = (0..nodes)
        .map(|n| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for i in 0..per_node {
                    let request = AutoAssignRequest::new(
                        HandleId::new(format!("n{n}-pod-{i}")),
                        NodeName::new(format!("node-{n}")),
                        1,
                        0,
                    );
                    let got = engine.auto_assign(&request).await.unwrap();
                    assert_eq!(got.ipv4.addresses.len(), 1);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Figures {
        allocations: nodes * per_node,
        elapsed: started.elapsed(),
        trips: store.round_trips().since(start_trips),
        steady: None,
    }
}

fn row(backend: &str, scenario: &str, f: &Figures) {
    let rate = f.allocations as f64 / f.elapsed.as_secs_f64();
    let steady = match f.steady {
        Some((n, t)) if n > 0 => format!(
            "{:.2} ({:.2} reads + {:.2} writes, {n} allocations)",
            per(t.total(), n),
            per(t.reads, n),
            per(t.writes, n)
        ),
        _ => "-".to_string(),
    };
    eprintln!(
        "| {backend} | {scenario} | {} | {:.3} s | {rate:.0} | {:.3} ({:.3} reads + {:.3} writes) | {steady} |",
        f.allocations,
        f.elapsed.as_secs_f64(),
        per(f.trips.total(), f.allocations),
        per(f.trips.reads, f.allocations),
        per(f.trips.writes, f.allocations),
    );
}

async fn start(backend: &str) -> Started {
    match backend {
        "memory" => (Arc::new(MemoryStore::new()), Box::new(())),
        "embedded" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
            (Arc::new(store), Box::new(dir))
        }
        "etcd" => {
            let etcd = EtcdServer::start()
                .await
                .unwrap_or_else(|e| panic!("starting etcd: {e}"));
            let store = EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
                .await
                .unwrap_or_else(|e| panic!("connecting to {}: {e}", etcd.endpoint()));
            (Arc::new(store), Box::new(etcd))
        }
        "kubernetes" => {
            let api = ApiServer::start().await;
            let store = KubernetesStore::connect(Some(api.kubeconfig()))
                .await
                .unwrap_or_else(|e| panic!("connecting to {}: {e}", api.url()));
            (Arc::new(store), Box::new(api))
        }
        other => panic!("unknown backend {other:?}: use memory, embedded, etcd or kubernetes"),
    }
}

/// Allocations per scenario: fewer where every write is a disk flush or a
/// network round trip, so that the whole run stays in minutes.
fn sizes(backend: &str) -> (u64, u64) {
    match backend {
        "memory" => (20_000, 160),
        _ => (2_000, 32),
    }
}

fn main() {
    let mut backends: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if backends.is_empty() {
        backends = ["memory", "embedded", "etcd", "kubernetes"]
            .map(String::from)
            .to_vec();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!("| backend | scenario | allocations | time | allocations/s | round trips per allocation | steady state round trips per allocation |");
    eprintln!("| --- | --- | --- | --- | --- | --- | --- |");
    for backend in &backends {
        let (sequential, per_node) = sizes(backend);
        runtime.block_on(async {
            let (store, _guard) = start(backend).await;
            row(backend, "one-node", &one_node(store, sequential).await);
            let (store, _guard) = start(backend).await;
            row(backend, "64-nodes", &many_nodes(store, 64, per_node).await);
        });
    }
}
