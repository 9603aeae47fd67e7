//! The invariants that must hold under any interleaving (issue 21), through
//! the `ipam-server` binary on every datastore: memory, embedded, etcd (a
//! real etcd from testkit) and Kubernetes (testkit's API server). Each race
//! is run as a client would run it, many requests at once over HTTP, and
//! judged by what the server says afterwards (`/v1/check`, the handle's
//! addresses, the pools, the affinities), never by timing.

mod process;

use std::collections::BTreeSet;

use process::{command, start_with, Server};
use serde_json::{json, Value};
use testkit::apiserver::ApiServer;
use testkit::etcd::EtcdServer;

#[derive(Debug, Clone, Copy)]
enum Datastore {
    Memory,
    Embedded,
    Etcd,
    Kubernetes,
}

/// A server on one datastore, with what that datastore needs kept alive.
struct Running {
    server: Server,
    client: reqwest::Client,
    _etcd: Option<EtcdServer>,
    _api: Option<ApiServer>,
    _dir: tempfile::TempDir,
}

async fn start(datastore: Datastore) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), "127.0.0.1:0");
    let (mut etcd, mut api) = (None, None);
    match datastore {
        Datastore::Memory => {
            cmd.args(["--datastore", "memory"]);
        }
        Datastore::Embedded => {}
        Datastore::Etcd => {
            let server = EtcdServer::start().await.unwrap();
            cmd.args([
                "--datastore",
                "etcd",
                "--etcd-endpoints",
                &server.endpoint(),
            ]);
            etcd = Some(server);
        }
        Datastore::Kubernetes => {
            let server = ApiServer::start().await;
            // No collector: it would take node "n", which no Node object
            // backs, for a deleted node and release its addresses.
            cmd.args(["--datastore", "kubernetes", "--no-gc", "--kubeconfig"])
                .arg(server.kubeconfig());
            api = Some(server);
        }
    }
    Running {
        server: start_with(cmd).await,
        client: reqwest::Client::new(),
        _etcd: etcd,
        _api: api,
        _dir: dir,
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/assign` of one IPv4 address: the addresses answered.
    async fn assign(&self, handle: &str) -> BTreeSet<String> {
        let body = json!({"handle": handle, "node": "n", "ipv4": 1});
        let (status, answer) = self
            .send(self.client.post(self.url("/v1/assign")).json(&body))
            .await;
        assert_eq!(status, 200, "assign {handle}: {answer}");
        addresses(&answer["ipv4"])
    }

    async fn release(&self, handle: &str) {
        let (status, answer) = self
            .send(
                self.client
                    .delete(self.url(&format!("/v1/handles/{handle}"))),
            )
            .await;
        assert_eq!(status, 200, "release {handle}: {answer}");
    }

    /// What the handle holds, as `GET /v1/handles/{handle}` says.
    async fn held(&self, handle: &str) -> BTreeSet<String> {
        match self.get(&format!("/v1/handles/{handle}")).await {
            (200, body) => addresses(&body["addresses"]),
            (404, _) => BTreeSet::new(),
            (status, body) => panic!("GET handle {handle}: {status} {body}"),
        }
    }

    /// `/v1/check` must find nothing at all.
    async fn assert_clean(&self, context: &str) {
        let (status, body) = self.get("/v1/check").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (&body["consistent"], &body["report"]["findings"]),
            (&json!(true), &json!([])),
            "{context}: {body:#}"
        );
    }
}

fn addresses(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// One test per datastore for each case.
macro_rules! on_every_datastore {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                use super::Datastore;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$case(Datastore::Memory).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$case(Datastore::Embedded).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn etcd() {
                    if !testkit::require::etcd() {
                        return;
                    }
                    super::$case(Datastore::Etcd).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn kubernetes() {
                    super::$case(Datastore::Kubernetes).await;
                }
            }
        )*
    };
}

on_every_datastore!(
    one_handle_assigned_and_released_at_once_holds_what_was_answered,
    concurrent_creates_of_overlapping_pools_create_one,
    concurrent_claims_of_one_block_leave_one_confirmed_affinity_and_none_pending,
);

/// A CNI ADD retried while kubelet sends DEL: 30 rounds of 4 assignments of
/// one handle interleaved with 4 releases of it. After each round the
/// datastore agrees with itself (no address without its handle, no handle
/// counting what its blocks do not hold), and the handle holds at most the
/// one address it asked for, one an assignment answered. Then, one request
/// at a time, the last answer is what the handle holds.
async fn one_handle_assigned_and_released_at_once_holds_what_was_answered(datastore: Datastore) {
    const ROUNDS: usize = 30;
    let s = std::sync::Arc::new(start(datastore).await);
    for round in 0..ROUNDS {
        let handle = format!("mix{round}");
        let mut assigns = Vec::new();
        let mut releases = Vec::new();
        for _ in 0..4 {
            let (server, h) = (s.clone(), handle.clone());
            assigns.push(tokio::spawn(async move { server.assign(&h).await }));
            let (server, h) = (s.clone(), handle.clone());
            releases.push(tokio::spawn(async move { server.release(&h).await }));
        }
        let mut answered = BTreeSet::new();
        for task in assigns {
            answered.extend(task.await.unwrap());
        }
        for task in releases {
            task.await.unwrap();
        }
        s.assert_clean(&format!("{datastore:?}, round {round}"))
            .await;
        let held = s.held(&handle).await;
        assert!(
            held.len() <= 1 && held.is_subset(&answered),
            "{datastore:?}: {handle} holds {held:?}, the assignments answered {answered:?}"
        );
    }
    // Sequentially, the last answer is the truth.
    for round in 0..ROUNDS {
        let handle = format!("mix{round}");
        let got = s.assign(&handle).await;
        assert_eq!(got.len(), 1);
        assert_eq!(s.held(&handle).await, got, "{handle}: the last answer");
        s.release(&handle).await;
        assert!(s.held(&handle).await.is_empty(), "{handle}: released");
    }
    s.assert_clean(&format!("{datastore:?}, after releasing everything"))
        .await;
}

/// 16 pools created at once over one range, half of them with the range's
/// CIDR, half with one /24 inside it, 5 rounds: exactly one is created, the
/// others are refused as overlapping, and the check finds no overlap.
async fn concurrent_creates_of_overlapping_pools_create_one(datastore: Datastore) {
    let s = std::sync::Arc::new(start(datastore).await);
    for round in 0..5u8 {
        let range: ipnet::IpNet = format!("10.{}.0.0/16", 96 + round).parse().unwrap();
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let cidr = if i % 2 == 0 {
                range.to_string()
            } else {
                format!("10.{}.7.0/24", 96 + round)
            };
            let body = json!({"name": format!("r{round}-{i}"), "spec": {"cidr": cidr}});
            let server = s.clone();
            tasks.push(tokio::spawn(async move {
                server
                    .send(server.client.post(server.url("/v1/pools")).json(&body))
                    .await
            }));
        }
        let mut created = 0;
        for task in tasks {
            match task.await.unwrap() {
                (201, _) => created += 1,
                (409, body) => assert_eq!(body["code"], "pool_overlap", "{body}"),
                (status, body) => panic!("{datastore:?}: {status} {body}"),
            }
        }
        let (_, pools) = s.get("/v1/pools").await;
        let inside: Vec<&Value> = pools
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                let cidr: ipnet::IpNet = p["spec"]["cidr"].as_str().unwrap().parse().unwrap();
                range.contains(&cidr.network())
            })
            .collect();
        assert_eq!(
            (created, inside.len()),
            (1, 1),
            "{datastore:?}, round {round}: {inside:#?}"
        );
        assert_ne!(
            inside[0]["spec"]["disabled"],
            json!(true),
            "the pool created is the one asked for: {inside:#?}"
        );
        s.assert_clean(&format!("{datastore:?}, round {round}"))
            .await;
    }
}

/// 16 nodes claim one block at once (`POST /v1/nodes/cN/affinities`), 5
/// rounds: one claims it, the 15 that lost take their pending affinities
/// back, and the check finds nothing.
async fn concurrent_claims_of_one_block_leave_one_confirmed_affinity_and_none_pending(
    datastore: Datastore,
) {
    let s = std::sync::Arc::new(start(datastore).await);
    for round in 0..5u8 {
        let cidr = format!("192.168.{round}.0/26");
        let mut tasks = Vec::new();
        for node in 0..16 {
            let (server, cidr) = (s.clone(), cidr.clone());
            tasks.push(tokio::spawn(async move {
                let url = server.url(&format!("/v1/nodes/c{node}/affinities"));
                let answer = server
                    .send(server.client.post(url).json(&json!({"cidr": cidr})))
                    .await;
                (format!("c{node}"), answer)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (node, (status, body)) = task.await.unwrap();
            assert_eq!(status, 200, "{datastore:?}: {node}: {body}");
            if body["claimed"] == json!([cidr]) {
                winners.push(node);
            } else {
                assert_eq!(body["failed"], json!([cidr]), "{node}: {body}");
            }
        }
        assert_eq!(winners.len(), 1, "{datastore:?}: {winners:?}");
        let (_, affinities) = s.get("/v1/affinities").await;
        let of_block: Vec<(String, String)> = affinities
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["cidr"] == json!(cidr))
            .map(|a| {
                (
                    a["node"].as_str().unwrap().to_string(),
                    a["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            of_block,
            [(winners[0].clone(), "confirmed".to_string())],
            "{datastore:?}, round {round}"
        );
        s.assert_clean(&format!("{datastore:?}, round {round}"))
            .await;
    }
}
