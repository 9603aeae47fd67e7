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
