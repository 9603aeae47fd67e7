//! Load benchmark: durable auto-assign + release pairs through the HTTP
//! API, on the embedded store (every acknowledged write fsynced), at
//! several concurrencies, spread over 64 nodes.
//!
//! Each worker loops: `POST /v1/assign` (one IPv4 address for a new
//! handle on its node) then `DELETE /v1/handles/{handle}`. Reported per
//! concurrency: pairs per second, allocations per second, p50 and p99
//! latency of each request kind, and durable commits per allocation.
//!
//! Run: `cargo bench -p ipam-server --bench load -- [SECONDS] [CONCURRENCY...]`
//! (defaults: 10 s at 1, 64 and 256). The server runs in this process,
//! on 127.0.0.1 with a temp data dir; the table goes to stderr.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_core::{IpamConfig, Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::embedded::EmbeddedStore;
use ipam_store::{Datastore, Ipam};

const NODES: usize = 64;

// The same allocator as the ipam-server binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Run {
    pairs: u64,
    elapsed: Duration,
    assign: Vec<Duration>,
    release: Vec<Duration>,
    commits: u64,
    writes: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn run(concurrency: usize, seconds: u64) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open embedded store"));
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store.clone() as Arc<dyn Datastore>));
    engine
        .set_config(IpamConfig {
            strict_affinity: true,
            max_blocks_per_host: 1000,
            ..IpamConfig::default()
        })
        .await
        .unwrap();
    let spec = PoolSpec {
        block_size: Some(26),
        node_selector: "all()".to_string(),
        ..PoolSpec::new("10.0.0.0/12".parse().unwrap())
    };
    engine
        .create_pool(Pool::new("bench", spec).unwrap())
        .await
        .unwrap();
    let app = router(engine, AppConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    // Warm up: every node claims its first block.
    for node in 0..NODES {
        let handle = format!("warm-{node}");
        let body = serde_json::json!({"handle": handle, "node": format!("node-{node}"), "ipv4": 1});
        let r = client
            .post(format!("{base}/v1/assign"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let commits_before = store.commits();
    let writes_before = store.round_trips().writes;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            tokio::spawn(async move {
                let node = format!("node-{}", worker % NODES);
                let (mut assign, mut release) = (Vec::new(), Vec::new());
                let mut serial = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    serial += 1;
                    let handle = format!("k8s-pod-network.w{worker}-{serial}");
                    let body = serde_json::json!({"handle": handle, "node": node, "ipv4": 1});
                    let t = Instant::now();
                    let r = client
                        .post(format!("{base}/v1/assign"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                    r.bytes().await.unwrap();
                    assign.push(t.elapsed());
                    let t = Instant::now();
                    let r = client
                        .delete(format!("{base}/v1/handles/{handle}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                    r.bytes().await.unwrap();
                    release.push(t.elapsed());
                }
                (assign, release)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut assign, mut release) = (Vec::new(), Vec::new());
    for worker in workers {
        let (a, r) = worker.await.unwrap();
        assign.extend(a);
        release.extend(r);
    }
    let elapsed = started.elapsed();
    server.abort();
    assign.sort();
    release.sort();
    Run {
        pairs: assign.len() as u64,
        elapsed,
        assign,
        release,
        commits: store.commits() - commits_before,
        writes: store.round_trips().writes - writes_before,
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let seconds: u64 = args.next().map_or(10, |s| s.parse().expect("SECONDS"));
    let mut levels: Vec<usize> = args.map(|s| s.parse().expect("CONCURRENCY")).collect();
    if levels.is_empty() {
        levels = vec![1, 64, 256];
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!("| concurrency | pairs | pairs/s | allocations/s | assign p50 | assign p99 | release p50 | release p99 | commits per allocation | writes per allocation |");
    eprintln!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for concurrency in levels {
        let r = runtime.block_on(run(concurrency, seconds));
        let rate = r.pairs as f64 / r.elapsed.as_secs_f64();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        eprintln!(
            "| {concurrency} | {} | {rate:.0} | {rate:.0} | {} | {} | {} | {} | {:.3} | {:.3} |",
            r.pairs,
            ms(percentile(&r.assign, 0.5)),
            ms(percentile(&r.assign, 0.99)),
            ms(percentile(&r.release, 0.5)),
            ms(percentile(&r.release, 0.99)),
            r.commits as f64 / r.pairs as f64,
            r.writes as f64 / r.pairs as f64,
        );
    }
}
