//! Node labels on the embedded store, through the ipam-server binary:
//! set with `ipamctl node label` (through the server, and straight on the
//! data dir while no server holds it), kept across `kill -9`, read by
//! assignments that carry no labels, and overridden by those that do.

mod process;

use std::path::Path;

use clap::Parser;
use process::{command, start_with, Server};
use serde_json::{json, Value};

async fn start(data_dir: &Path) -> Server {
    let mut command = command(data_dir, "127.0.0.1:0");
    command.env("NO_DEFAULT_POOLS", "true");
    start_with(command).await
}

/// `ipamctl ARGS...` in-process, and what it printed.
async fn ipamctl(args: &[&str]) -> Result<String, ipam_cli::CliError> {
    let cli = ipam_cli::Cli::try_parse_from(std::iter::once("ipamctl").chain(args.iter().copied()))
        .unwrap();
    let mut out = Vec::new();
    ipam_cli::run(&cli, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

async fn call(method: reqwest::Method, url: String, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The pool an assignment's first IPv4 address is in.
async fn assigned_pool(server: &Server, body: Value) -> String {
    let (status, got) = call(
        reqwest::Method::POST,
        format!("{}/v1/assign", server.base),
        body,
    )
    .await;
    assert_eq!(status, 200, "{got}");
    got["assigned"][0]["pool"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_set_with_ipamctl_survive_kill_9_and_choose_the_pool_unless_the_request_has_its_own()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data).await;
    for (name, cidr, selector) in [
        ("in-zone", "10.0.0.0/24", r#"foo == "bar""#),
        ("out-of-zone", "20.0.0.0/24", r#"foo != "bar""#),
    ] {
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{}/v1/pools", server.base),
            json!({"name": name, "spec": {"cidr": cidr, "blockSize": 26, "nodeSelector": selector}}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let through_server = ["--server", server.base.as_str()];
    let labelled = ipamctl(
        &[
            &through_server[..],
            &["node", "label", "node-a", "foo=bar", "rack=r1"],
        ]
        .concat(),
    )
    .await
    .unwrap();
    assert_eq!(labelled, "Labelled node node-a.\nfoo=bar\nrack=r1\n");
    let pod = |handle: &str| json!({"handle": handle, "node": "node-a", "ipv4": 1});
    assert_eq!(assigned_pool(&server, pod("h1")).await, "10.0.0.0/24");

    // Durable: the write was committed before ipamctl heard back.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // Straight on the data dir while no server holds it: KEY- removes.
    let direct = [
        "--datastore",
        "embedded",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let shown = ipamctl(&[&direct[..], &["node", "label", "node-a", "rack-"]].concat())
        .await
        .unwrap();
    assert_eq!(shown, "Labelled node node-a.\nfoo=bar\n");

    let server = start(&data).await;
    let (status, got) = call(
        reqwest::Method::GET,
        format!("{}/v1/nodes/node-a/labels", server.base),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({"node": "node-a", "labels": {"foo": "bar"}, "origin": "ipam"})
    );
    assert_eq!(assigned_pool(&server, pod("h2")).await, "10.0.0.0/24");
    // A request's own labels win, even none at all.
    let mut own = pod("h3");
    own["nodeLabels"] = json!({});
    assert_eq!(assigned_pool(&server, own).await, "20.0.0.0/24");
    let mut own = json!({"handle": "h4", "node": "node-b", "ipv4": 1});
    own["nodeLabels"] = json!({"foo": "bar"});
    assert_eq!(assigned_pool(&server, own).await, "10.0.0.0/24");

    // Labels Kubernetes would not store are refused, naming the label.
    let (status, got) = call(
        reqwest::Method::PUT,
        format!("{}/v1/nodes/node-a/labels", server.base),
        json!({"labels": {"foo": "not a value"}}),
    )
    .await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(got["code"], "invalid_value");
    assert!(
        got["message"].as_str().unwrap().starts_with("labels.foo: "),
        "{got}"
    );
    let refused = ipamctl(
        &[
            &["--server", server.base.as_str()][..],
            &["node", "label", "node-a", "bad key=x"],
        ]
        .concat(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.exit_code(), 2, "{refused}");
    let shown = ipamctl(&[
        "--server",
        server.base.as_str(),
        "node",
        "labels",
        "node-a",
        "-o",
        "json",
    ])
    .await
    .unwrap();
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["labels"], json!({"foo": "bar"}), "unchanged");
}

/// The block (`GET /v1/blocks?cidr=`) as the server answers it: status and
/// body.
async fn block(server: &Server, cidr: &str) -> (u16, Value) {
    call(
        reqwest::Method::GET,
        format!("{}/v1/blocks?cidr={cidr}", server.base),
        Value::Null,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_after_the_node_is_relabelled_gives_up_its_emptied_block_through_the_binary() {
    // The engine the binary runs reads the stored labels when a release
    // empties a block of a pool with a nodeSelector (Calico's
    // ensureConsistentAffinity): without that wiring the block would stay
    // affine until the node's next assignment.
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data")).await;
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{}/v1/pools", server.base),
        json!({"name": "zone-a", "spec": {"cidr": "10.0.0.0/24", "blockSize": 26, "nodeSelector": r#"zone == "a""#}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let label = |value: &'static str| {
        call(
            reqwest::Method::PUT,
            format!("{}/v1/nodes/node-a/labels", server.base),
            json!({"labels": {"zone": value}}),
        )
    };
    assert_eq!(label("a").await.0, 200);
    let (status, got) = call(
        reqwest::Method::POST,
        format!("{}/v1/assign", server.base),
        json!({"handle": "pod-1", "node": "node-a", "ipv4": 1}),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    let assigned = got["assigned"][0]["address"].as_str().unwrap();
    let address: std::net::Ipv4Addr = assigned.split('/').next().unwrap().parse().unwrap();
    let cidr = format!("{}/26", std::net::Ipv4Addr::from(u32::from(address) & !63));
    let (status, held) = block(&server, &cidr).await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["affinity"], "host:node-a", "{held}");

    assert_eq!(label("b").await.0, 200);
    let (status, got) = call(
        reqwest::Method::DELETE,
        format!("{}/v1/handles/pod-1", server.base),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{got}");
    let (status, gone) = block(&server, &cidr).await;
    assert_eq!(status, 404, "the emptied block stayed: {gone}");
    let (status, affinities) = call(
        reqwest::Method::GET,
        format!("{}/v1/nodes/node-a/affinities", server.base),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(affinities.as_array().map(Vec::len), Some(0), "{affinities}");
}
