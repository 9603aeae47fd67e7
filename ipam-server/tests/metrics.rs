//! `/metrics`: exact figures after known traffic, route templates as
//! labels, the exposition format, the token, and a datastore that is down.

mod support;
mod tools;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::Flaky;

use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, Value as Object};
use serde_json::json;

async fn serve(token: Option<&str>) -> (String, reqwest::Client) {
    serve_with(AppConfig {
        token: token.map(str::to_string),
        ..AppConfig::default()
    })
    .await
}

async fn serve_with(config: AppConfig) -> (String, reqwest::Client) {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    let spec = PoolSpec {
        block_size: Some(26),
        node_selector: "all()".to_string(),
        ..PoolSpec::new("10.0.0.0/16".parse().unwrap())
    };
    store
        .create(&Object::Pool(Pool::new("pool-a", spec).unwrap()))
        .await
        .unwrap();
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(engine, config);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, reqwest::Client::new())
}

/// The value of the series `name{labels}` in an exposition text.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_pools_nodes_requests_and_round_trips() {
    let (base, client) = serve(None).await;
    for (handle, node) in [
        ("a1", "node-1"),
        ("a2", "node-1"),
        ("a3", "node-1"),
        ("b1", "node-2"),
    ] {
        let body = json!({"handle": handle, "node": node, "ipv4": 1,
                          "attributes": {"node": node}});
        let r = client
            .post(format!("{base}/v1/assign"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client
        .get(format!("{base}/v1/handles/a1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{base}/v1/handles/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .get(format!("{base}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert_eq!(
        value(&text, r#"ipam_ippool_size{ippool="pool-a"}"#),
        65536.0
    );
    assert_eq!(
        value(&text, r#"ipam_ippool_free{ippool="pool-a"}"#),
        65532.0
    );
    assert_eq!(
        value(
            &text,
            r#"ipam_allocations_in_use{ippool="pool-a",node="node-1"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            r#"ipam_allocations_in_use{ippool="pool-a",node="node-2"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"ipam_blocks{ippool="pool-a",node="node-1"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"ipam_blocks{ippool="pool-a",node="node-2"}"#),
        1.0
    );
    // Nobody borrowed, and each node says so rather than saying nothing.
    for node in ["node-1", "node-2"] {
        assert_eq!(
            value(
                &text,
                &format!(r#"ipam_allocations_borrowed{{ippool="pool-a",node="{node}"}}"#)
            ),
            0.0
        );
    }
    assert_eq!(
        value(
            &text,
            r#"ipam_http_requests_total{method="POST",route="/v1/assign",status="200"}"#
        ),
        4.0
    );
    // Handles are labelled by the route's template, never by name.
    assert_eq!(
        value(
            &text,
            r#"ipam_http_requests_total{method="GET",route="/v1/handles/{handle}",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"ipam_http_requests_total{method="GET",route="/v1/handles/{handle}",status="404"}"#
        ),
        1.0
    );
    assert!(!text.contains("a1\""), "a handle name became a label");
    assert_eq!(
        value(
            &text,
            r#"ipam_http_request_duration_seconds_count{method="POST",route="/v1/assign"}"#
        ),
        4.0
    );
    assert!(value(&text, r#"ipam_datastore_round_trips_total{kind="write"}"#) >= 8.0);
    assert!(value(&text, r#"ipam_datastore_round_trips_total{kind="read"}"#) >= 1.0);
    assert_eq!(value(&text, "ipam_cas_conflicts_total"), 0.0);
    assert_eq!(value(&text, "ipam_retries_total"), 0.0);
    assert_eq!(value(&text, "ipam_pool_figures_read_errors_total"), 0.0);
    assert!(value(&text, "ipam_pool_figures_age_seconds") < 5.0);
    assert_eq!(
        value(
            &text,
            &format!(
                r#"ipam_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // A path no route matches is counted under one label, whatever it is.
    assert_eq!(
        value(
            &text,
            r#"ipam_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        1.0
    );
    // Every line is a comment or `name{labels} value`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, number) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(number.parse::<f64>().is_ok(), "{line}");
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_borrowed_address_is_counted_for_the_borrowing_node() {
    let (base, client) = serve(None).await;
    let body =
        json!({"handle": "own", "node": "node-1", "ipv4": 1, "attributes": {"node": "node-1"}});
    client
        .post(format!("{base}/v1/assign"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (_, usage): (u16, serde_json::Value) = {
        let r = client.get(format!("{base}/v1/usage")).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    };
    let block = usage["pools"][0]["blocks"][0]["cidr"]
        .as_str()
        .unwrap()
        .to_string();
    let base_address: std::net::Ipv4Addr = block.split('/').next().unwrap().parse().unwrap();
    let address = std::net::Ipv4Addr::from(u32::from(base_address) + 9).to_string();
    let body = json!({"handle": "guest", "node": "node-7", "address": address,
                      "attributes": {"node": "node-7"}});
    let r = client
        .post(format!("{base}/v1/assign-ip"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        value(
            &text,
            r#"ipam_allocations_borrowed{ippool="pool-a",node="node-7"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let (base, client) = serve(Some("secret")).await;
    let bare = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let with = client
        .get(format!("{base}/metrics"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let text = with.text().await.unwrap();
    assert_eq!(
        value(
            &text,
            r#"ipam_http_requests_total{method="GET",route="/metrics",status="401"}"#
        ),
        1.0,
        "refused requests are counted too"
    );
}

#[tokio::test]
async fn metrics_answer_while_the_datastore_is_down_and_count_timeouts() {
    let store = Arc::new(Flaky::default());
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = AppConfig {
        request_timeout: Duration::from_millis(300),
        ..AppConfig::default()
    };
    let app = router(engine, config);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();

    store.slow.store(true, Ordering::SeqCst);
    let r = client.get(format!("{base}/v1/pools")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    store.slow.store(false, Ordering::SeqCst);
    store.down.store(true, Ordering::SeqCst);
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the datastore being down is no reason to refuse"
    );
    let text = r.text().await.unwrap();
    assert_eq!(
        value(
            &text,
            r#"ipam_http_requests_total{method="GET",route="/v1/pools",status="503"}"#
        ),
        1.0,
        "a request cut short by the time limit is counted"
    );
    assert_eq!(value(&text, "ipam_pool_figures_read_errors_total"), 1.0);
    assert!(
        !text.contains("ipam_ippool_size{"),
        "no figures were ever read, so none are made up"
    );
}

/// Prometheus 2.42's scrape `Accept` header.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Runs `promtool` with `args` and `stdin`: (success, stdout + stderr).
fn promtool(promtool: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn both_exposition_formats_pass_prometheus_own_parsers() {
    let Some(promtool_path) = tools::on_path("promtool") else {
        tools::skip("promtool is not on PATH (Debian package `prometheus`)");
        return;
    };
    // The collector's families too, so that every family is linted.
    let (base, client) = serve_with(AppConfig {
        gc_metrics: Some(Arc::new(ipam_server::gc::GcMetrics::default())),
        ..AppConfig::default()
    })
    .await;
    let body =
        json!({"handle": "h1", "node": "node-1", "ipv4": 1, "attributes": {"node": "node-1"}});
    let r = client
        .post(format!("{base}/v1/assign"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    client.get(format!("{base}/nowhere")).send().await.unwrap();

    // No Accept header: the classic text, which `promtool check metrics`
    // lints (HELP on every family, counters ending in _total, names).
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = r.text().await.unwrap();
    assert!(
        classic.contains("# TYPE ipam_retries_total counter"),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE ipam_build_info gauge"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    let (ok, said) = promtool(&promtool_path, &["check", "metrics"], &classic);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{classic}"
    );
    let asked = client
        .get(format!("{base}/metrics"))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    assert_eq!(
        asked.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    // What Prometheus asks for: OpenMetrics. `promtool check metrics` (2.42)
    // reads only the classic format: it refuses the `info` type and takes
    // a counter's `_total` samples for a family of their own, so it cannot
    // judge this format. promtool's backfill reads it with the parser
    // Prometheus scrapes OpenMetrics with (types, UNIT suffixes, the EOF
    // marker); backfilling needs a timestamp on every sample, so one is
    // appended to each.
    let r = client
        .get(format!("{base}/metrics"))
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(r.headers()["vary"], "accept");
    let openmetrics = r.text().await.unwrap();
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(
        openmetrics.contains("# TYPE ipam_build info"),
        "{openmetrics}"
    );
    assert!(
        openmetrics.contains("# TYPE ipam_retries counter"),
        "{openmetrics}"
    );
    let mut samples = 0;
    let stamped: String = openmetrics
        .lines()
        .map(|line| {
            if line.starts_with('#') {
                format!("{line}\n")
            } else {
                samples += 1;
                format!("{line} 1700000000\n")
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("metrics.om");
    std::fs::write(&input, &stamped).unwrap();
    let (ok, said) = promtool(
        &promtool_path,
        &[
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            input.to_str().unwrap(),
            dir.path().join("blocks").to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "promtool's OpenMetrics parser:\n{said}\n{openmetrics}");
    // Every sample became a series: none was dropped as unreadable.
    let series: usize = said
        .lines()
        .filter_map(|line| line.split_whitespace().nth(6)?.parse::<usize>().ok())
        .sum();
    assert_eq!(series, samples, "{said}");
}
