//! Load benchmark: durable auto-assign + release pairs through the HTTP
//! API, on the embedded store (every acknowledged write fsynced), at
//! several concurrencies, spread over 64 nodes; at each concurrency the
//! same run on the memory store follows, the ceiling the durable store is
//! measured against in the same session.
//!
//! Each worker loops: `POST /v1/assign` (one IPv4 address for a new
//! handle on its node) then `DELETE /v1/handles/{handle}`. Reported per
//! concurrency: pairs per second, allocations per second, p50 and p99
//! latency of each request kind, durable commits per allocation (the
//! embedded store's; the memory store has none), datastore writes per
//! allocation, and the process's CPU time per pair with the cores it kept
//! busy (server and load generator together): where the durable store's
//! cost goes, CPU or waiting.
//!
//! Run: `cargo bench -p ipam-server --bench load -- [SECONDS] [CONCURRENCY...]`
//! (defaults: 10 s at 1, 64 and 256). The server runs in this process,
//! on 127.0.0.1 with a temp data dir; the table goes to stderr.
//!
//! Each worker keeps one HTTP/1.1 keep-alive connection through hyper's
//! client connection (`hyper::client::conn::http1`, no pool), the stack
//! ipam-client uses: the load generator shares the two cores with the
//! server, so it must cost little, and the request path is the one real
//! clients take.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use ipam_core::{IpamConfig, Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::embedded::EmbeddedStore;
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam};
use tokio::net::TcpStream;

const NODES: usize = 64;

// The same allocator as the ipam-server binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(address: SocketAddr) -> Connection {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 connection");
        // Drives the socket; ends when the sender is dropped.
        tokio::spawn(connection);
        Connection { sender }
    }

    /// Sends a request and reads the whole answer: (status, body).
    async fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "bench")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(
                body.unwrap_or_default().as_bytes(),
            )))
            .expect("a valid request");
        self.sender.ready().await.expect("the connection is open");
        let response = self.sender.send_request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let answer = response
            .into_body()
            .collect()
            .await
            .expect("the whole answer")
            .to_bytes();
        (status, answer.to_vec())
    }
}

struct Run {
    pairs: u64,
    elapsed: Duration,
    assign: Vec<Duration>,
    release: Vec<Duration>,
    /// Durable commits, for the embedded store.
    commits: Option<u64>,
    writes: u64,
    /// CPU time of the whole process (all threads, user and system).
    cpu: Duration,
}

/// CPU time this process has used, from `/proc/self/stat` (utime and
/// stime, in the kernel's USER_HZ ticks, 100 per second on Linux): the
/// standard library has no getrusage, and ticks are fine enough over runs
/// of seconds.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold
    // spaces: the state is field 3, utime 14 and stime 15.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let mut ticks = || -> u64 {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .expect("a tick count")
    };
    let (user, system) = (ticks(), ticks());
    Duration::from_millis((user + system) * 10)
}

/// The datastore a run serves from, and what must outlive it.
enum Backing {
    Embedded {
        store: Arc<EmbeddedStore>,
        // Removed when the run's backing is dropped.
        _dir: tempfile::TempDir,
    },
    Memory(Arc<MemoryStore>),
}

impl Backing {
    fn open(name: &str) -> Backing {
        match name {
            "embedded" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
                Backing::Embedded {
                    store: Arc::new(store),
                    _dir: dir,
                }
            }
            "memory" => Backing::Memory(Arc::new(MemoryStore::new())),
            other => panic!("unknown store {other:?}"),
        }
    }

    fn store(&self) -> Arc<dyn Datastore> {
        match self {
            Backing::Embedded { store, .. } => store.clone(),
            Backing::Memory(store) => store.clone(),
        }
    }

    fn commits(&self) -> Option<u64> {
        match self {
            Backing::Embedded { store, .. } => Some(store.commits()),
            Backing::Memory(_) => None,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn run(backing: &Backing, concurrency: usize, seconds: u64) -> Run {
    let store = backing.store();
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store.clone()));
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
    let listener_address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let address = listener_address;
    // Warm up: every node claims its first block.
    let mut warm = Connection::open(address).await;
    for node in 0..NODES {
        let body = format!(r#"{{"handle":"warm-{node}","node":"node-{node}","ipv4":1}}"#);
        let (status, answer) = warm.send("POST", "/v1/assign", Some(&body)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    let commits_before = backing.commits();
    let writes_before = store.round_trips().writes;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = process_cpu();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut connection = Connection::open(address).await;
                let node = format!("node-{}", worker % NODES);
                let (mut assign, mut release) = (Vec::new(), Vec::new());
                let mut serial = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    serial += 1;
                    let handle = format!("k8s-pod-network.w{worker}-{serial}");
                    let body = format!(r#"{{"handle":"{handle}","node":"{node}","ipv4":1}}"#);
                    let t = Instant::now();
                    let (status, answer) = connection.send("POST", "/v1/assign", Some(&body)).await;
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                    assign.push(t.elapsed());
                    let t = Instant::now();
                    let path = format!("/v1/handles/{handle}");
                    let (status, answer) = connection.send("DELETE", &path, None).await;
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
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
    let cpu = process_cpu() - cpu_before;
    server.abort();
    assign.sort();
    release.sort();
    Run {
        pairs: assign.len() as u64,
        elapsed,
        assign,
        release,
        commits: backing.commits().zip(commits_before).map(|(a, b)| a - b),
        writes: store.round_trips().writes - writes_before,
        cpu,
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
    eprintln!("| store | concurrency | pairs | pairs/s | allocations/s | assign p50 | assign p99 | release p50 | release p99 | commits per allocation | writes per allocation | CPU per pair | cores busy |");
    eprintln!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut ratios = Vec::new();
    for concurrency in levels {
        let mut embedded_rate = 0.0;
        for name in ["embedded", "memory"] {
            let backing = Backing::open(name);
            let r = runtime.block_on(run(&backing, concurrency, seconds));
            let rate = r.pairs as f64 / r.elapsed.as_secs_f64();
            let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
            let commits = r.commits.map_or("-".to_string(), |c| {
                format!("{:.3}", c as f64 / r.pairs as f64)
            });
            eprintln!(
                "| {name} | {concurrency} | {} | {rate:.0} | {rate:.0} | {} | {} | {} | {} | {commits} | {:.3} | {:.0} µs | {:.2} |",
                r.pairs,
                ms(percentile(&r.assign, 0.5)),
                ms(percentile(&r.assign, 0.99)),
                ms(percentile(&r.release, 0.5)),
                ms(percentile(&r.release, 0.99)),
                r.writes as f64 / r.pairs as f64,
                r.cpu.as_secs_f64() * 1e6 / r.pairs as f64,
                r.cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
            );
            match name {
                "embedded" => embedded_rate = rate,
                _ => ratios.push((concurrency, embedded_rate / rate)),
            }
        }
    }
    for (concurrency, ratio) in ratios {
        eprintln!("pairs/s, embedded / memory, at concurrency {concurrency}: {ratio:.2}");
    }
}
