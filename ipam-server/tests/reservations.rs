//! An IP reservation created through `/v1/reservations` of the
//! `ipam-server` binary, on every datastore: its addresses are never
//! handed out, and it is stored as Calico stores it, so that Calico's own
//! IPAM honours it too: on Kubernetes an IPReservation custom resource
//! (crd.projectcalico.org/v1) that the API server holds, on etcd Calico's
//! key `/calico/resources/v3/projectcalico.org/ipreservations/<name>` with
//! a projectcalico.org/v3 IPReservation (libcalico-go's etcdv3 backend);
//! on the embedded store, one that outlives a restart.

mod process;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam_store::etcd::{EtcdKv, EtcdOptions};
use ipnet::IpNet;
use process::{command, start_with, Server};
use serde_json::{json, Value};
use testkit::apiserver::ApiServer;
use testkit::etcd::EtcdServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    etcd: Option<EtcdServer>,
    api: Option<ApiServer>,
    dir: tempfile::TempDir,
}

async fn serve(
    datastore: Datastore,
    dir: &std::path::Path,
    etcd: Option<&EtcdServer>,
    api: Option<&ApiServer>,
) -> Server {
    let mut cmd = command(dir, "127.0.0.1:0");
    cmd.env("NO_DEFAULT_POOLS", "true");
    match datastore {
        Datastore::Memory => {
            cmd.args(["--datastore", "memory"]);
        }
        Datastore::Embedded => {}
        Datastore::Etcd => {
            let endpoint = etcd.expect("an etcd").endpoint();
            cmd.args(["--datastore", "etcd", "--etcd-endpoints", &endpoint]);
        }
        Datastore::Kubernetes => {
            let api = api.expect("an API server");
            cmd.args(["--datastore", "kubernetes", "--no-gc", "--kubeconfig"])
                .arg(api.kubeconfig());
        }
    }
    start_with(cmd).await
}

async fn start(datastore: Datastore) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let etcd = match datastore {
        Datastore::Etcd => Some(EtcdServer::start().await.unwrap()),
        _ => None,
    };
    let api = match datastore {
        Datastore::Kubernetes => Some(ApiServer::start().await),
        _ => None,
    };
    let server = serve(datastore, dir.path(), etcd.as_ref(), api.as_ref()).await;
    Running {
        server,
        client: reqwest::Client::new(),
        etcd,
        api,
        dir,
    }
}

impl Running {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.server.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Assigns `count` IPv4 addresses to `handle`: the addresses, or the
    /// error answer's code.
    async fn assign(&self, handle: &str, count: u32) -> Result<BTreeSet<IpAddr>, String> {
        let body = json!({"handle": handle, "node": "n", "ipv4": count,
                          "attributes": {"node": "n"}});
        match self.post("/v1/assign", body).await {
            (200, answer) => Ok(answer["ipv4"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().parse::<IpNet>().unwrap().addr())
                .collect()),
            (_, answer) => Err(answer["code"].as_str().unwrap_or_default().to_string()),
        }
    }
}

/// Reserve part of a one-block pool, take every address left, and check
/// no reserved one was given; then check the stored object.
async fn a_reservation_is_honoured_and_stored_as_calico_stores_it(datastore: Datastore) {
    let mut running = start(datastore).await;
    let pool = json!({"name": "pool", "spec": {"cidr": "10.0.0.0/26", "blockSize": 26}});
    assert_eq!(running.post("/v1/pools", pool).await.0, 201);
    let reservation = json!({"name": "gateways",
                             "spec": {"reservedCIDRs": ["10.0.0.1", "10.0.0.35/28"]}});
    let (status, created) = running.post("/v1/reservations", reservation).await;
    assert_eq!(status, 201, "{created}");
    let stored = json!(["10.0.0.1/32", "10.0.0.35/28"]);
    assert_eq!(created["spec"]["reservedCIDRs"], stored);

    // 64 addresses, 17 reserved (10.0.0.1 and 10.0.0.32/28 whole).
    let reserved = |a: &IpAddr| {
        *a == "10.0.0.1".parse::<IpAddr>().unwrap()
            || "10.0.0.32/28".parse::<IpNet>().unwrap().contains(a)
    };
    let got = running.assign("k8s-pod-network.a", 47).await.unwrap();
    assert_eq!(got.len(), 47);
    let given: Vec<&IpAddr> = got.iter().filter(|a| reserved(a)).collect();
    assert!(given.is_empty(), "{datastore:?} handed out {given:?}");
    assert_eq!(
        running.assign("k8s-pod-network.b", 1).await,
        Err("pool_exhausted".to_string()),
        "{datastore:?}: only reserved addresses are left"
    );

    match datastore {
        Datastore::Memory => {}
        Datastore::Embedded => {
            // Stored durably: a restarted server still has it, and still
            // keeps its addresses.
            running.server.child.kill().unwrap();
            running.server.child.wait().unwrap();
            running.server = serve(datastore, running.dir.path(), None, None).await;
            let (status, again) = running
                .send(reqwest::Method::GET, "/v1/reservations/gateways", None)
                .await;
            assert_eq!((status, &again["spec"]["reservedCIDRs"]), (200, &stored));
            assert_eq!(
                running.assign("k8s-pod-network.b", 1).await,
                Err("pool_exhausted".to_string())
            );
        }
        Datastore::Etcd => {
            let endpoint = running.etcd.as_ref().unwrap().endpoint();
            let kv = EtcdKv::new(&[endpoint], &EtcdOptions::default()).unwrap();
            let key = "/calico/resources/v3/projectcalico.org/ipreservations/gateways";
            let value = kv
                .get(key.as_bytes())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{key} is not stored"))
                .value;
            let object: Value = serde_json::from_slice(&value).unwrap();
            assert_eq!(object["kind"], "IPReservation", "{object}");
            assert_eq!(object["apiVersion"], "projectcalico.org/v3", "{object}");
            assert_eq!(object["metadata"]["name"], "gateways", "{object}");
            assert!(object["metadata"]["uid"].is_string(), "{object}");
            assert!(
                object["metadata"]["creationTimestamp"].is_string(),
                "{object}"
            );
            assert_eq!(object["spec"], json!({"reservedCIDRs": stored}), "{object}");
        }
        Datastore::Kubernetes => {
            let api = running.api.as_ref().unwrap();
            let object = api
                .object("ipreservations", "gateways")
                .expect("an IPReservation named gateways");
            assert_eq!(object["kind"], "IPReservation", "{object}");
            assert_eq!(object["apiVersion"], "crd.projectcalico.org/v1", "{object}");
            assert_eq!(object["spec"], json!({"reservedCIDRs": stored}), "{object}");
        }
    }

    // Deleted, its addresses are handed out again, and nothing is stored.
    let (status, _) = running
        .send(reqwest::Method::DELETE, "/v1/reservations/gateways", None)
        .await;
    assert_eq!(status, 204);
    let freed = running.assign("k8s-pod-network.b", 17).await.unwrap();
    assert!(freed.iter().all(reserved), "{freed:?}");
    if let Some(api) = &running.api {
        assert!(api.object("ipreservations", "gateways").is_none());
    }
}

mod a_reservation_is_honoured_and_stored_as_calico_stores_it {
    use super::Datastore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory() {
        super::a_reservation_is_honoured_and_stored_as_calico_stores_it(Datastore::Memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::a_reservation_is_honoured_and_stored_as_calico_stores_it(Datastore::Embedded).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd() {
        if !testkit::require::etcd() {
            return;
        }
        super::a_reservation_is_honoured_and_stored_as_calico_stores_it(Datastore::Etcd).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubernetes() {
        super::a_reservation_is_honoured_and_stored_as_calico_stores_it(Datastore::Kubernetes)
            .await;
    }
}
