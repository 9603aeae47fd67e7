//! The real `ipamctl` binary against the embedded datastore, ipam-server's
//! API over the same data, a real etcd and the Kubernetes datastore: the tables
//! byte for byte against calicoctl's fixtures and our golden files, check
//! and release against injected leaks, and the exit codes.

mod admin;
mod all_ips;
mod check;
mod load_balancer;
mod reach;
mod reservation;
mod show;
mod split;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use std::sync::Arc;

use ipam_core::{AssignIpRequest, Handle};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam, Key, Value};
use serde_json::json;
use support::*;
use testkit::apiserver::ApiServer;
use testkit::etcd::EtcdServer;

/// Runs `check` against the embedded store in `dir` directly and then
/// through an ipam-server over the same directory.
fn in_both_modes(dir: &Path, mut check: impl FnMut(&str, &[String])) {
    check("direct", &embedded(dir));
    let server = Server::start(dir);
    check("server", &server.connection());
}

async fn seed_16_pool_with_13_in_use(dir: &Path) {
    seed_16_pool(&open_embedded(dir)).await;
}

async fn seed_16_pool(engine: &Ipam<dyn Datastore>) {
    engine
        .create_pool(pool("default-ipv4-ippool", "172.17.0.0/16", None))
        .await
        .unwrap();
    for i in 0..13 {
        let node = if i < 9 { "node-1" } else { "node-2" };
        let handle = format!("k8s-pod-network.c{i}");
        assign_pod(engine, &handle, node, &format!("web-{i}"), 1, 0).await;
    }
}
