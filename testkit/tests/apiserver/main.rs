//! The test API server keeps the Kubernetes API's contract: these tests
//! talk to it over HTTP with kube's client, as the Kubernetes datastore
//! does, and check the answers a real API server gives.

mod core;
mod objects;
mod watch;

use axum::http::Request;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::Status;
use kube::{Client, Config};
use serde_json::{json, Value};
use testkit::apiserver::ApiServer;

const BLOCKS: &str = "/apis/crd.projectcalico.org/v1/ipamblocks";

async fn client(api: &ApiServer) -> Client {
    let config = Config::new(api.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

fn block(name: &str, cidr: &str) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPAMBlock",
        "metadata": {"name": name},
        "spec": {
            "cidr": cidr,
            "allocations": [null, null, null, null],
            "unallocated": [0, 1, 2, 3],
            "attributes": [],
            "strictAffinity": false
        }
    })
}

async fn send(client: &Client, method: &str, uri: &str, body: &Value) -> Result<Value, Status> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    match client.request::<Value>(request).await {
        Ok(value) => Ok(value),
        Err(kube::Error::Api(status)) => Err(*status),
        Err(other) => panic!("{method} {uri}: {other}"),
    }
}
