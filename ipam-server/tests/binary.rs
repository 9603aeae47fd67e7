//! The real `ipam-server` binary: durability across kill -9, refusing to
//! listen beyond loopback without a token, one process per data dir, unix
//! sockets, graceful SIGTERM, default pools from the environment.

mod process;

use process::{command, start_with, Server};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

async fn start(data_dir: &Path) -> Server {
    start_with(command(data_dir, "127.0.0.1:0")).await
}

/// Runs the binary to completion (it is expected to stop by itself).
fn run_to_end(mut command: Command) -> Output {
    let mut child = command.spawn().expect("ipam-server starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ipam-server should have stopped by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

async fn assign(client: &reqwest::Client, base: &str, handle: &str, node: &str) -> Option<Value> {
    let body = json!({"handle": handle, "node": node, "ipv4": 1});
    let response = client
        .post(format!("{base}/v1/assign"))
        .json(&body)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

async fn get_json(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Who holds each address, read block by block through the API.
async fn holders(client: &reqwest::Client, base: &str) -> BTreeMap<String, String> {
    let (_, usage) = get_json(client, format!("{base}/v1/usage")).await;
    let mut held = BTreeMap::new();
    for pool in usage["pools"].as_array().unwrap() {
        for block in pool["blocks"].as_array().unwrap() {
            let cidr = block["cidr"].as_str().unwrap();
            let (status, detail) = get_json(client, format!("{base}/v1/blocks?cidr={cidr}")).await;
            assert_eq!(status, 200, "{detail}");
            for allocation in detail["allocations"].as_array().unwrap() {
                held.insert(
                    allocation["address"].as_str().unwrap().to_string(),
                    allocation["handle"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_allocation_survives_twenty_kill_9s() {
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // handle -> the address it was acknowledged with.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut server = start(dir.path()).await;
    for round in 0..ROUNDS {
        let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
        let tasks: Vec<_> = (0..PER_ROUND)
            .map(|i| {
                let (client, base) = (client.clone(), server.base.clone());
                let answers = answers.clone();
                let handle = format!("k8s-pod-network.r{round}-{i}");
                tokio::spawn(async move {
                    let node = format!("node-{}", i % 8);
                    let answer = assign(&client, &base, &handle, &node).await;
                    let _ = answers.send(());
                    (handle, answer)
                })
            })
            .collect();
        drop(answers);
        // Kill it once a third of the requests are answered, so that the
        // others are in flight: what was answered must be there afterwards,
        // what was not may or may not be.
        for _ in 0..PER_ROUND / 3 {
            answered.recv().await.expect("every request answers");
        }
        server.child.kill().unwrap();
        let status = server.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        let mut acknowledged_now = 0;
        for task in tasks {
            let (handle, answer) = task.await.unwrap();
            if let Some(answer) = answer {
                let address = answer["ipv4"][0].as_str().unwrap();
                let address = address.split('/').next().unwrap().to_string();
                acknowledged.insert(handle, address);
                acknowledged_now += 1;
            }
        }
        assert!(
            acknowledged_now >= PER_ROUND / 3,
            "round {round}: {acknowledged_now} answers"
        );
        drop(server);
        server = start(dir.path()).await;
        let held = holders(&client, &server.base).await;
        for (handle, address) in &acknowledged {
            assert_eq!(
                held.get(address),
                Some(handle),
                "round {round}: {handle}'s {address} lost or changed after kill -9"
            );
        }
        // Every address in use belongs to a handle this test asked for.
        for (address, handle) in &held {
            assert!(
                handle.starts_with("k8s-pod-network.r"),
                "round {round}: {address} held by {handle:?}"
            );
        }
        // Blocks and handles agree, up to what a kill between a handle's
        // write and its block's write leaves: a handle, never acknowledged,
        // counting an address its block never got; and what a kill between
        // a claim's pending affinity and its block leaves: that affinity,
        // still pending. Never an address without a handle, never an
        // address twice, and every acknowledged handle fully consistent.
        let (_, check) = get_json(&client, format!("{}/v1/check", server.base)).await;
        for finding in check["report"]["findings"].as_array().unwrap() {
            let kind = finding["kind"].as_str().unwrap();
            if kind == "stalePendingAffinity" {
                continue;
            }
            assert!(
                matches!(kind, "handleCountMismatch" | "handleWithoutAllocations"),
                "round {round}: {finding}"
            );
            let handle = finding["handle"].as_str().unwrap();
            assert!(
                !acknowledged.contains_key(handle),
                "round {round}: acknowledged {handle} is inconsistent: {finding}"
            );
        }
    }
    eprintln!(
        "{ROUNDS} kill -9 rounds: {} allocations acknowledged, all present after every restart",
        acknowledged.len()
    );
}

#[test]
fn listening_beyond_loopback_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_to_end(command(dir.path(), "0.0.0.0:0"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("requires a bearer token"), "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");
}

#[tokio::test]
async fn a_token_file_makes_the_api_ask_for_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let mut cmd = command(&dir.path().join("data"), "127.0.0.1:0");
    cmd.arg("--token-file").arg(&token_file);
    let server = start_with(cmd).await;
    let client = reqwest::Client::new();
    let pools = format!("{}/v1/pools", server.base);
    assert_eq!(client.get(&pools).send().await.unwrap().status(), 401);
    let with_token = client.get(&pools).bearer_auth("s3cret-token").send().await;
    assert_eq!(with_token.unwrap().status(), 200);
    // An empty token file is refused at start.
    std::fs::write(&token_file, "\n").unwrap();
    let mut cmd = command(&dir.path().join("data2"), "127.0.0.1:0");
    cmd.arg("--token-file").arg(&token_file);
    let output = run_to_end(cmd);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("the file is empty"));
}

#[tokio::test]
async fn the_token_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-4711\n").unwrap();
    let mut cmd = command(&dir.path().join("data"), "127.0.0.1:0");
    cmd.arg("--token-file")
        .arg(&token_file)
        .arg("--log-level")
        .arg("trace");
    let mut server = start_with(cmd).await;
    let client = reqwest::Client::new();
    let pools = format!("{}/v1/pools", server.base);
    for token in ["s3cret-token-4711", "a-wrong-guess-0815"] {
        client.get(&pools).bearer_auth(token).send().await.unwrap();
    }
    let body = json!({"handle": "h", "node": "n", "ipv4": 1});
    let assigned = client
        .post(format!("{}/v1/assign", server.base))
        .bearer_auth("s3cret-token-4711")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(assigned.status(), 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let log = server.whole_log();
    assert!(log.contains("ready"), "the log is empty: {log}");
    assert!(
        !log.contains("s3cret-token-4711"),
        "the token was logged:\n{log}"
    );
    assert!(
        !log.contains("a-wrong-guess-0815"),
        "a guessed token was logged:\n{log}"
    );
}

#[tokio::test]
async fn each_client_gets_its_own_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), "127.0.0.1:0");
    cmd.args(["--rate-limit-per-client", "1", "--rate-limit-burst", "3"]);
    let server = start_with(cmd).await;
    let from = |source: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(source))
            .build()
            .unwrap()
    };
    let (first, second) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let pools = format!("{}/v1/pools", server.base);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(first.get(&pools).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let refused = first.get(&pools).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    // Another client is not held back, nor are the probes.
    assert_eq!(second.get(&pools).send().await.unwrap().status(), 200);
    let health = first.get(format!("{}/healthz", server.base)).send().await;
    assert_eq!(health.unwrap().status(), 200);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused_with_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path()).await;
    let output = run_to_end(command(dir.path(), "127.0.0.1:0"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("already in use by pid {}", first.child.id());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test]
async fn it_serves_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ipam.sock");
    let mut child = command(
        &dir.path().join("data"),
        &format!("unix:{}", socket.display()),
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "no socket at {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Plain HTTP/1.1 over the socket, no client library needed.
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream
            .write_all(b"GET /v1/pools HTTP/1.1\r\nHost: ipam\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("default-ipv4-ippool"), "{answer}");
}

#[tokio::test]
async fn sigterm_answers_the_request_in_flight_then_exits_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    // A request whose body is held back: `Expect: 100-continue` makes the
    // server say when the handler starts reading it, so the request is
    // known to be in flight before the signal.
    let body = r#"{"handle":"in-flight","node":"n","ipv4":1}"#;
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/assign HTTP/1.1\r\nHost: ipam\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed"
        );
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    // Once the signal is handled the server stops accepting connections;
    // it must not exit while our request is unanswered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(server.address).await.is_ok() {
        assert!(Instant::now() < deadline, "SIGTERM did not stop accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "it exited with a request in flight"
    );
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let assigned: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{status}");
    // Its data dir is free again and the answered allocation is there.
    let server = start(dir.path()).await;
    let client = reqwest::Client::new();
    let (status, held) = get_json(&client, format!("{}/v1/handles/in-flight", server.base)).await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["addresses"], assigned["ipv4"]);
}

#[tokio::test]
async fn default_pools_follow_calico_nodes_variables() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&dir.path().join("a"), "127.0.0.1:0");
    cmd.env("CALICO_IPV4POOL_CIDR", "10.44.0.0/16")
        .env("CALICO_IPV4POOL_BLOCK_SIZE", "28");
    let server = start_with(cmd).await;
    let pools: Value = client
        .get(format!("{}/v1/pools", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pools[0]["name"], "default-ipv4-ippool");
    assert_eq!(pools[0]["spec"]["cidr"], "10.44.0.0/16");
    assert_eq!(pools[0]["spec"]["blockSize"], 28);
    drop(server);

    let mut cmd = command(&dir.path().join("b"), "127.0.0.1:0");
    cmd.env("NO_DEFAULT_POOLS", "true");
    let server = start_with(cmd).await;
    let pools: Value = client
        .get(format!("{}/v1/pools", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pools, json!([]));
    drop(server);

    let mut cmd = command(&dir.path().join("c"), "127.0.0.1:0");
    cmd.env("CALICO_IPV4POOL_BLOCK_SIZE", "33");
    let output = run_to_end(cmd);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CALICO_IPV4POOL_BLOCK_SIZE=\"33\"") && stderr.contains("blockSize 33"),
        "{stderr}"
    );

    let mut cmd = command(&dir.path().join("d"), "127.0.0.1:0");
    cmd.env("CALICO_IPV4POOL_CIDR", "10.44.0.0/33");
    let output = run_to_end(cmd);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CALICO_IPV4POOL_CIDR=\"10.44.0.0/33\": not a CIDR"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_deleted_default_pool_stays_deleted_across_restarts() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let (_, pools) = get_json(&client, format!("{}/v1/pools", server.base)).await;
    assert_eq!(pools[0]["name"], "default-ipv4-ippool", "{pools}");
    let deleted = client
        .delete(format!("{}/v1/pools/default-ipv4-ippool", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    drop(server);

    // The README's "on first start": the same data dir, started again.
    let server = start(dir.path()).await;
    let (_, pools) = get_json(&client, format!("{}/v1/pools", server.base)).await;
    assert_eq!(pools, json!([]), "the operator's delete stands");
    let (_, config) = get_json(&client, format!("{}/v1/config", server.base)).await;
    assert_eq!(
        config,
        json!({"strictAffinity": false, "autoAllocateBlocks": true, "maxBlocksPerHost": 0, "ipCooldownSeconds": 0})
    );
}

#[tokio::test]
async fn the_connection_flags_reach_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), "127.0.0.1:0");
    cmd.args(["--idle-timeout", "1s", "--max-connections-per-client", "3"]);
    let server = start_with(cmd).await;
    // Silent: closed by the idle timeout.
    let mut silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 64])).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "a silent connection is closed: {read:?}"
    );
    // Three held, the fourth refused.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 15];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 OK");
        held.push(stream);
    }
    let mut fourth = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let mut said = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), fourth.read_to_end(&mut said)).await;
    let said = String::from_utf8_lossy(&said);
    assert!(said.contains("too_many_connections"), "{said}");
    drop(server);
}
