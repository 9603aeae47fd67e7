//! Chaos: three ipam-server processes on one real etcd, 64 simulated nodes
//! assigning and releasing through the HTTP API at high concurrency, while
//! a server is SIGKILLed and restarted every two seconds and etcd itself
//! is restarted once. The test keeps its own ledger of what the API
//! acknowledged and fails the moment an address is acknowledged to a
//! second live handle. At the end the store must hold exactly the ledger,
//! the consistency check may find nothing but what an interrupted request
//! leaves (a handle counting an address its block never got, only for
//! handles whose request was cut; an affinity left pending by a killed
//! claim), and after releasing everything the
//! ledger holds, the pool must be empty and `ipamctl check` clean. The
//! checks are ipamctl's own (`ipam_cli::run` with `check -o FILE`, straight
//! on etcd), the code the `ipamctl` binary runs.
//!
//! Bounded in time and count: 20 s by default (CI's short form); longer
//! with `CHAOS_SECONDS`, e.g.
//! `CHAOS_SECONDS=300 cargo nextest run -p ipam-server --test chaos --no-capture`.

mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ipam_core::check::{CheckReport, FindingKind};
use ipam_core::{Pool, PoolSpec};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::{Datastore, Ipam};
use process::{command, free_port, start_with, Server};
use serde_json::{json, Value};
use testkit::etcd::EtcdServer;

const SERVERS: usize = 3;
const NODES: usize = 64;
const WORKERS: usize = 48;
const POOL: &str = "198.18.0.0/16";

#[derive(Default)]
struct Ledger {
    /// Live handles and the address the API acknowledged for each.
    live: BTreeMap<String, IpAddr>,
    /// Who holds each acknowledged address.
    holder: BTreeMap<IpAddr, String>,
    /// Handles one of whose requests was cut (no answer, 5xx).
    interrupted: BTreeSet<String>,
    violations: Vec<String>,
    assigns: u64,
    releases: u64,
    retries: u64,
}

impl Ledger {
    fn acknowledge(&mut self, handle: &str, address: IpAddr) {
        self.assigns += 1;
        if let Some(other) = self.holder.get(&address) {
            if other != handle {
                self.violations.push(format!(
                    "{address} acknowledged to {handle} while {other} holds it"
                ));
            }
        }
        self.holder.insert(address, handle.to_string());
        self.live.insert(handle.to_string(), address);
    }

    fn released(&mut self, handle: &str) {
        self.releases += 1;
        if let Some(address) = self.live.remove(handle) {
            self.holder.remove(&address);
        }
    }
}

struct Cluster {
    ports: Vec<u16>,
    client: reqwest::Client,
    deadline: Instant,
}

enum Answer {
    Done(Value),
    Refused(u16, Value),
}

impl Cluster {
    /// Sends to random servers until one answers for sure: a 2xx, or a
    /// 4xx that is not a conflict. No answer, a 5xx or a 409 (conflicts
    /// ran out) means "try again": assign and release by handle are
    /// idempotent, so a repeat is safe.
    async fn until_answered(
        &self,
        rng: &mut fastrand::Rng,
        handle: &str,
        ledger: &Mutex<Ledger>,
        send: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        loop {
            assert!(
                Instant::now() < self.deadline,
                "{handle}: no server answered in time"
            );
            let base = format!(
                "http://127.0.0.1:{}",
                self.ports[rng.usize(..self.ports.len())]
            );
            let sent = send(&self.client, &base).send().await;
            let answer = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    Some((status, body))
                }
                Err(_) => None,
            };
            match answer {
                Some((status, body)) if (200..300).contains(&status) => return Answer::Done(body),
                Some((status, body)) if (400..500).contains(&status) && status != 409 => {
                    return Answer::Refused(status, body)
                }
                _ => {
                    let mut ledger = ledger.lock().unwrap();
                    ledger.retries += 1;
                    ledger.interrupted.insert(handle.to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(20 + rng.u64(..80))).await;
        }
    }
}

async fn worker(id: usize, cluster: Arc<Cluster>, ledger: Arc<Mutex<Ledger>>, until: Instant) {
    let mut rng = fastrand::Rng::with_seed(id as u64);
    let mut owned: Vec<String> = Vec::new();
    let mut next = 0u64;
    while Instant::now() < until {
        if owned.len() < 3 || (owned.len() < 40 && rng.bool()) {
            let handle = format!("chaos.w{id}-{next}");
            next += 1;
            let node = format!("node-{}", rng.usize(..NODES));
            let body = json!({"handle": handle, "node": node, "ipv4": 1,
                              "attributes": {"node": node, "pod": handle, "namespace": "chaos"}});
            let answer = cluster
                .until_answered(&mut rng, &handle, &ledger, |client, base| {
                    client.post(format!("{base}/v1/assign")).json(&body)
                })
                .await;
            match answer {
                Answer::Done(got) => {
                    let text = got["ipv4"][0].as_str().unwrap();
                    let address: IpAddr = text.split('/').next().unwrap().parse().unwrap();
                    ledger.lock().unwrap().acknowledge(&handle, address);
                    owned.push(handle);
                }
                Answer::Refused(status, body) => panic!("assign {handle}: {status} {body}"),
            }
        } else {
            let handle = owned.swap_remove(rng.usize(..owned.len()));
            let answer = cluster
                .until_answered(&mut rng, &handle, &ledger, |client, base| {
                    client.delete(format!("{base}/v1/handles/{handle}"))
                })
                .await;
            match answer {
                Answer::Done(_) => ledger.lock().unwrap().released(&handle),
                Answer::Refused(status, body) => panic!("release {handle}: {status} {body}"),
            }
        }
    }
}

fn chaos_duration() -> Duration {
    let seconds = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(seconds)
}

/// `ipamctl --datastore etcd check -o FILE`, and the report it wrote.
async fn ipamctl_check(etcd: &str, dir: &std::path::Path) -> CheckReport {
    let report = dir.join("check.json");
    let argv = [
        "ipamctl",
        "--datastore",
        "etcd",
        "--etcd-endpoints",
        etcd,
        "check",
        "-o",
        report.to_str().unwrap(),
    ];
    let cli = ipam_cli::args::Cli::try_parse_from(argv).unwrap();
    let mut summary = Vec::new();
    ipam_cli::run(&cli, &mut summary)
        .await
        .unwrap_or_else(|e| panic!("ipamctl check: {e}"));
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

async fn start_server(dir: &std::path::Path, port: u16, etcd: &str) -> Server {
    let mut cmd = command(dir, &format!("127.0.0.1:{port}"));
    cmd.args(["--datastore", "etcd", "--etcd-endpoints", etcd])
        .env("NO_DEFAULT_POOLS", "true");
    // A fixed port: the clients keep each server's address across its
    // kills and restarts.
    start_with(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_address_is_acknowledged_twice_through_kills_and_an_etcd_restart() {
    if !testkit::require::etcd() {
        return;
    }
    let run_for = chaos_duration();
    let mut etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let store: Arc<dyn Datastore> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&endpoint), EtcdOptions::default())
            .await
            .unwrap(),
    );
    let engine = Ipam::new(store.clone());
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new(POOL.parse().unwrap())
    };
    engine
        .create_pool(Pool::new("chaos", spec).unwrap())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..SERVERS).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for port in &ports {
        servers.push(start_server(dir.path(), *port, &endpoint).await);
    }
    let started = Instant::now();
    let until = started + run_for;
    let cluster = Arc::new(Cluster {
        ports: ports.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        deadline: until + Duration::from_secs(120),
    });
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| tokio::spawn(worker(id, cluster.clone(), ledger.clone(), until)))
        .collect();

    // Faults: a server killed and restarted every two seconds, etcd
    // restarted once half-way.
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut kills, mut etcd_restarts) = (0u32, 0u32);
    while Instant::now() + Duration::from_secs(2) < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if etcd_restarts == 0 && started.elapsed() >= run_for / 2 {
            etcd.stop();
            tokio::time::sleep(Duration::from_millis(500)).await;
            etcd.restart().await.unwrap();
            etcd_restarts += 1;
            continue;
        }
        let victim = rng.usize(..SERVERS);
        servers[victim].child.kill().unwrap();
        servers[victim].child.wait().unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        servers[victim] = start_server(dir.path(), ports[victim], &endpoint).await;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(ledger.violations.is_empty(), "{:#?}", ledger.violations);

    // The store holds exactly what the ledger says.
    let fresh = Ipam::new(store.clone());
    let snapshot = fresh.snapshot().await.unwrap();
    let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
    for block in snapshot.blocks() {
        for (ordinal, attribute) in block.allocations() {
            held.insert(
                block.cidr().address(ordinal),
                attribute.handle().unwrap_or_default().to_string(),
            );
        }
    }
    assert_eq!(held, ledger.holder, "the store and the ledger disagree");
    let report = ipamctl_check(&endpoint, dir.path()).await;
    for finding in &report.findings {
        let allowed = match finding.kind {
            FindingKind::HandleCountMismatch | FindingKind::HandleWithoutAllocations => finding
                .handle
                .as_ref()
                .is_some_and(|h| ledger.interrupted.contains(h)),
            // A claim cut between its pending affinity and its block, by a
            // kill or by etcd's restart (it could not take it back).
            FindingKind::StalePendingAffinity => kills + etcd_restarts > 0,
            _ => false,
        };
        assert!(allowed, "{finding:?}");
    }
    let leftovers = report.findings.len();

    // Release everything the ledger holds: the pool is empty after, and
    // the check clean.
    for handle in ledger.live.keys() {
        fresh.release_by_handle(handle).await.unwrap();
    }
    let after = fresh.snapshot().await.unwrap();
    let in_use: u32 = after.blocks().map(|b| b.allocated_count()).sum();
    assert_eq!(in_use, 0, "addresses left after releasing the ledger");
    let stray: Vec<String> = after.handles().map(|h| h.id().to_string()).collect();
    let final_report = ipamctl_check(&endpoint, dir.path()).await;
    assert!(
        final_report.is_consistent(),
        "{:?}\nhandles left: {stray:?}",
        final_report.findings
    );

    eprintln!(
        "chaos for {:?}: {} assigns and {} releases acknowledged by {SERVERS} servers over {NODES} nodes \
         ({WORKERS} workers), {} retries, {kills} servers SIGKILLed, {etcd_restarts} etcd restart; \
         {} live at the end, store = ledger, {} interrupted handles, {leftovers} check findings \
         (over-counts of interrupted handles, killed claims), 0 double acknowledgements, pool empty and \
         ipamctl check clean after release",
        run_for,
        ledger.assigns,
        ledger.releases,
        ledger.retries,
        ledger.live.len(),
        ledger.interrupted.len(),
    );
}
