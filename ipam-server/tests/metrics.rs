//! `/metrics`: exact figures after known traffic, route templates as
//! labels, unmatched requests, the 5 s cache of the pool figures, the
//! exposition format, and the token.

use std::sync::Arc;

use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam};
use serde_json::json;

async fn serve(token: Option<&str>) -> (String, reqwest::Client) {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
    let spec = PoolSpec {
        block_size: Some(26),
        node_selector: "all()".to_string(),
        ..PoolSpec::new("10.0.0.0/16".parse().unwrap())
    };
    engine
        .create_pool(Pool::new("pool-a", spec).unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(
        engine,
        AppConfig {
            token: token.map(str::to_string),
            ..AppConfig::default()
        },
    );
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

/// `name value` or `name{label="value",...} value`, as Prometheus reads
/// them (label values here hold no quote, backslash or newline).
fn is_sample(line: &str) -> bool {
    let is_name = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let Some((series, number)) = line.rsplit_once(' ') else {
        return false;
    };
    if number.parse::<f64>().is_err() {
        return false;
    }
    let Some((name, labels)) = series.split_once('{') else {
        return is_name(series);
    };
    let Some(labels) = labels.strip_suffix('}') else {
        return false;
    };
    is_name(name)
        && labels.split("\",").all(|pair| {
            let pair = pair.strip_suffix('"').unwrap_or(pair);
            pair.split_once("=\"")
                .is_some_and(|(label, value)| is_name(label) && !value.contains('"'))
        })
}

#[test]
fn the_line_check_tells_samples_from_other_lines() {
    assert!(is_sample("ipam_retries_total 0"));
    assert!(is_sample(r#"ipam_blocks{ippool="p",node="n-1"} 2"#));
    assert!(is_sample(r#"x_count{route="/v1/handles/{handle}"} 2.5"#));
    assert!(!is_sample("ipam_retries_total"));
    assert!(!is_sample("ipam_retries_total zero"));
    assert!(!is_sample(r#"ipam_blocks{ippool="p" 2"#));
    assert!(!is_sample(r#"ipam_blocks{ippool=p} 2"#));
    assert!(!is_sample(r#"1ipam{a="b"} 2"#));
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
        let body = json!({"handle": handle, "node": node, "ipv4": 1});
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
        .get(format!("{base}/v1/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let scrape = || async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = scrape().await;

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
    assert!(
        !text.contains("ipam_allocations_borrowed{"),
        "nobody borrowed"
    );
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
    // A request no route matched counts under "unmatched", not its path.
    assert_eq!(
        value(
            &text,
            r#"ipam_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        1.0
    );
    assert!(
        !text.contains("/v1/no/such/route"),
        "a raw path became a label"
    );
    assert!(
        !text.contains(r#"route="/metrics""#),
        "scrapes were recorded"
    );
    assert_eq!(
        value(
            &text,
            r#"ipam_http_request_duration_seconds_count{method="POST",route="/v1/assign"}"#
        ),
        4.0
    );
    // Both GETs of a handle (200 and 404) share one template's histogram.
    assert_eq!(
        value(
            &text,
            r#"ipam_http_request_duration_seconds_count{method="GET",route="/v1/handles/{handle}"}"#
        ),
        2.0
    );
    assert!(value(&text, r#"ipam_datastore_round_trips_total{kind="write"}"#) >= 8.0);
    assert!(value(&text, r#"ipam_datastore_round_trips_total{kind="read"}"#) >= 1.0);
    assert_eq!(value(&text, "ipam_cas_conflicts_total"), 0.0);
    assert_eq!(value(&text, "ipam_retries_total"), 0.0);
    // Every line is a comment or `name{labels} value` or `name value`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(is_sample(line), "not `name{{labels}} value`: {line}");
    }

    // A second scrape within 5 s answers from the cached pool figures: it
    // reads nothing from the datastore.
    let again = scrape().await;
    let reads = r#"ipam_datastore_round_trips_total{kind="read"}"#;
    assert_eq!(value(&again, reads), value(&text, reads));
    assert_eq!(
        value(
            &again,
            r#"ipam_allocations_in_use{ippool="pool-a",node="node-1"}"#
        ),
        3.0
    );
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
}
