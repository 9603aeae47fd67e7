//! Every route of the `/v1` API, its answers and each error it documents,
//! against the application served in-process on a loopback port.

mod affinity;
mod assign;
mod contract;
mod load_balancer;
mod objects;
mod reports;
mod reservations;
mod split;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::Flaky;

use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, Value as Object};
use reqwest::Method;
use serde_json::{json, Value};

struct App {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl App {
    async fn over(store: Arc<dyn Datastore>, config: AppConfig) -> App {
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
        let token = config.token.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(engine, config);
        tokio::spawn(async move { axum::serve(listener, app).await });
        App {
            base,
            client: reqwest::Client::new(),
            token,
        }
    }

    /// An app over a memory store with one pool, 10.0.0.0/24 in /26 blocks.
    async fn with_pool(config: AppConfig) -> App {
        let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
        let spec = PoolSpec {
            block_size: Some(26),
            node_selector: "all()".to_string(),
            ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
        };
        store
            .create(&Object::Pool(Pool::new("pool-a", spec).unwrap()))
            .await
            .unwrap();
        App::over(store, config).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn assign(&self, handle: &str, node: &str, ipv4: u32) -> Value {
        let (status, body) = self
            .post(
                "/v1/assign",
                json!({"handle": handle, "node": node, "ipv4": ipv4,
                       "attributes": {"pod": handle, "namespace": "default", "node": node}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// An error answer: the status, the stable code and a fragment of the
/// message.
#[track_caller]
fn refused(answer: (u16, Value), status: u16, code: &str, says: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "message {message:?} lacks {says:?}");
}
