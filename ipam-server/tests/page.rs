//! The usage page end to end: a server in-process with two pools (one
//! IPv6), three nodes and a borrowed address, Debian's headless Chromium
//! loading the page, and every figure the page shows held against what
//! `/v1/usage` and `/v1/blocks` say.
//!
//! Chromium prints the DOM after the page's script ran (`--dump-dom`); the
//! page keeps its figures in `data-*` attributes, which these tests read
//! back. Needs `chromium` (`apt-get install chromium`, as `.ci/run` does):
//! without it the tests are skipped, and fail under
//! `IPAM_TEST_REQUIRE_ALL=1` (`testkit::require`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_core::AutoAssignRequest;
use ipam_core::{HandleId, NodeName};
use ipam_server::api::{BlockDetail, UsageResponse};
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam};
use ipnet::IpNet;
use serde_json::json;
use tokio::net::TcpListener;

/// Longest one Chromium run may take before it is killed.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// A pod name that is markup: the page must show it as text.
const HOSTILE_POD: &str = "web-<img src=x onerror=alert(1)>";

async fn serve(config: AppConfig) -> SocketAddr {
    serve_engine(config).await.0
}

/// The server and its engine, for data the API would refuse.
async fn serve_engine(config: AppConfig) -> (SocketAddr, Arc<Ipam<dyn Datastore>>) {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(engine.clone(), config);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, engine)
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: serde_json::Value) {
        let response = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "{method} {path} {body}: {status} {}",
            response.text().await.unwrap()
        );
    }

    async fn pool(&self, name: &str, cidr: &str, block_size: u8) {
        let spec = json!({"name": name, "spec": {"cidr": cidr, "blockSize": block_size}});
        self.send(reqwest::Method::POST, "/v1/pools", spec).await;
    }

    async fn pod(&self, node: &str, namespace: &str, pod: &str, ipv6: u32) {
        let body = json!({
            "handle": format!("k8s-pod-network.{node}-{pod}"),
            "node": node, "ipv4": 1, "ipv6": ipv6,
            "attributes": {"node": node, "namespace": namespace, "pod": pod},
        });
        self.send(reqwest::Method::POST, "/v1/assign", body).await;
    }

    async fn usage(&self) -> UsageResponse {
        let url = format!("{}/v1/usage", self.base);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn block(&self, cidr: IpNet) -> BlockDetail {
        let url = format!("{}/v1/blocks", self.base);
        let query = [("cidr", cidr.to_string())];
        let request = self.client.get(url).query(&query);
        request.send().await.unwrap().json().await.unwrap()
    }
}

/// A server holding what an operator would look at: pods on three nodes in
/// an IPv4 and an IPv6 pool, one address borrowed from another node's
/// block, a pod name that is markup, and a pool with no blocks yet.
async fn populated() -> (SocketAddr, Api) {
    let (address, engine) = serve_engine(AppConfig::default()).await;
    let api = Api {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
    };
    api.pool("pods-v4", "10.20.0.0/24", 26).await;
    api.pool("pods-v6", "fd00:20::/64", 122).await;
    for (node, pods) in [("node-a", 3), ("node-b", 2), ("node-c", 1)] {
        for i in 0..pods {
            let ipv6 = u32::from(node != "node-c");
            api.pod(node, "shop", &format!("web-{i}"), ipv6).await;
        }
    }
    // The API refuses such a name; a client writing to the datastore
    // directly (ipamctl --datastore, Calico itself on etcd) does not, and
    // the page must still show it as text.
    let mut hostile = AutoAssignRequest::new(
        HandleId::new(format!("k8s-pod-network.node-b-{HOSTILE_POD}")),
        NodeName::new("node-b"),
        1,
        0,
    );
    hostile.attributes = [
        ("node", "node-b"),
        ("namespace", "evil"),
        ("pod", HOSTILE_POD),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    engine.auto_assign_all(&hostile).await.unwrap();
    // node-c takes an address in node-a's block: a borrowed address.
    let usage = api.usage().await;
    let block_a = usage.pools[0]
        .blocks
        .iter()
        .find(|b| b.node.as_deref() == Some("node-a"))
        .unwrap()
        .cidr;
    let IpAddr::V4(base) = block_a.network() else {
        unreachable!("pods-v4 is IPv4")
    };
    let borrowed = IpAddr::from(std::net::Ipv4Addr::from(u32::from(base) + 40));
    let body = json!({
        "handle": "k8s-pod-network.node-c-borrower", "node": "node-c", "address": borrowed,
        "attributes": {"node": "node-c", "namespace": "shop", "pod": "borrower"},
    });
    api.send(reqwest::Method::POST, "/v1/assign-ip", body).await;
    // Created last, so that no pod took an address from it.
    api.pool("spare", "10.99.0.0/24", 26).await;
    // Services' addresses (issue 20): the page marks the pool.
    let lb = json!({"name": "services-lb", "spec": {"cidr": "172.30.0.0/28", "blockSize": 30, "allowedUses": ["LoadBalancer"]}});
    api.send(reqwest::Method::POST, "/v1/pools", lb).await;
    (address, api)
}

// ----- Chromium -------------------------------------------------------------

fn chromium_binary() -> PathBuf {
    testkit::require::find("chromium")
        .expect("every test asks testkit::require::chromium() before it runs Chromium")
}

/// Runs headless Chromium with `extra` arguments on `url` and returns what
/// it printed; kills it when it takes longer than [`CHROMIUM_LIMIT`].
async fn chromium(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium_binary());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Virtual time runs the page's script to its end, fetches included,
        // before Chromium dumps or shoots the page.
        .arg("--virtual-time-budget=5000")
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Dropping the child, which a timeout does, kills Chromium.
        .kill_on_drop(true);
    let started = Instant::now();
    let child = command.spawn().expect("starting chromium");
    let output = tokio::time::timeout(CHROMIUM_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!("chromium on {url} ran longer than {CHROMIUM_LIMIT:?} and was killed")
        })
        .expect("waiting for chromium");
    eprintln!("chromium {extra:?} {url}: {:.1?}", started.elapsed());
    assert!(
        output.status.success(),
        "chromium on {url} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the DOM is UTF-8")
}

/// The page's DOM once its script has finished (`<body data-state>` is no
/// longer `loading`).
async fn dom(url: &str) -> Dom {
    let text = chromium(url, &["--dump-dom".to_string()]).await;
    let dom = Dom(text);
    let body = dom.one("body", "data-state");
    assert_ne!(
        body.attr("data-state"),
        "loading",
        "the page did not finish loading {url}:\n{}",
        dom.0
    );
    dom
}

// ----- reading the dumped DOM -----------------------------------------------

/// Chromium's serialisation of a DOM: well-formed, attributes in double
/// quotes, so start tags can be read without an HTML parser.
struct Dom(String);

/// One element: its tag, attributes and the markup inside it.
#[derive(Debug)]
struct Element {
    attrs: BTreeMap<String, String>,
    inner: String,
}

impl Element {
    fn attr(&self, name: &str) -> &str {
        self.attrs
            .get(name)
            .unwrap_or_else(|| panic!("no {name} on {self:?}"))
    }

    /// The text a reader sees, spaces collapsed.
    fn text(&self) -> String {
        let mut text = String::new();
        let mut in_tag = false;
        // <wbr> marks where a long handle may wrap, not a gap in it.
        for c in self.inner.replace("<wbr>", "").chars() {
            match c {
                '<' => in_tag = true,
                '>' if in_tag => {
                    in_tag = false;
                    text.push(' ');
                }
                _ if !in_tag => text.push(c),
                _ => {}
            }
        }
        unescape(&text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

impl Dom {
    /// Every `tag` element that carries attribute `with`. The inner markup
    /// runs to the next `</tag>`, so `tag` must not nest (tr, a, li, section).
    fn all(&self, tag: &str, with: &str) -> Vec<Element> {
        let open = format!("<{tag}");
        let close = format!("</{tag}>");
        let mut found = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(at) = rest.find(&open) {
            rest = &rest[at + open.len()..];
            if !rest.starts_with([' ', '>']) {
                continue;
            }
            let (attrs, after) = start_tag(rest);
            rest = after;
            if attrs.contains_key(with) {
                let inner = &rest[..rest.find(&close).unwrap_or(rest.len())];
                found.push(Element {
                    attrs,
                    inner: inner.to_string(),
                });
            }
        }
        found
    }

    fn one(&self, tag: &str, with: &str) -> Element {
        let mut all = self.all(tag, with);
        assert_eq!(all.len(), 1, "one <{tag} {with}> expected in:\n{}", self.0);
        all.remove(0)
    }

    /// The `tag` element whose attribute `name` is `value`.
    fn find(&self, tag: &str, name: &str, value: &str) -> Element {
        self.all(tag, name)
            .into_iter()
            .find(|e| e.attrs[name] == value)
            .unwrap_or_else(|| panic!("no <{tag} {name}={value:?}> in:\n{}", self.0))
    }

    fn has_id(&self, id: &str) -> bool {
        self.0.contains(&format!(" id=\"{id}\""))
    }
}

/// Reads the attributes of a start tag; returns them and what follows `>`.
fn start_tag(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut attrs = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('>') {
            return (attrs, after);
        }
        let name_end = rest
            .find(|c: char| c == '=' || c == '>' || c.is_whitespace())
            .expect("a start tag ends");
        let name = rest[..name_end].to_string();
        rest = &rest[name_end..];
        if let Some(after) = rest.strip_prefix("=\"") {
            let end = after.find('"').expect("a quoted attribute ends");
            attrs.insert(name, unescape(&after[..end]));
            rest = &after[end + 1..];
        } else {
            attrs.insert(name, String::new());
        }
    }
}

// ----- what the page should say ---------------------------------------------

/// The page's percentage: hundredths, rounded half up.
fn percent(in_use: u128, size: u128) -> String {
    let hundredths = (in_use * 10_000 + size / 2) / size;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

fn percent_text(in_use: u128, size: u128) -> String {
    match percent(in_use, size) {
        p if p == "0.00" && in_use > 0 => "<0.01%".to_string(),
        p => format!("{p}%"),
    }
}

/// Thousands separated, as the page writes counts.
fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn assert_pool_table_matches(dom: &Dom, usage: &UsageResponse) {
    let rows = dom.all("tr", "data-pool");
    let shown: Vec<&str> = rows.iter().map(|r| r.attr("data-pool")).collect();
    let names: Vec<&str> = usage.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(shown, names, "one row per pool, in the API's order");
    for pool in &usage.pools {
        let row = dom.find("tr", "data-pool", &pool.name);
        assert_eq!(row.attr("data-cidr"), pool.cidr.to_string());
        assert_eq!(
            row.attr("data-size"),
            pool.size.to_string(),
            "{}",
            pool.name
        );
        assert_eq!(row.attr("data-in-use"), pool.in_use.to_string());
        assert_eq!(row.attr("data-free"), pool.free.to_string());
        assert_eq!(row.attr("data-blocks"), pool.blocks.len().to_string());
        assert_eq!(row.attr("data-percent"), percent(pool.in_use, pool.size));
        assert_eq!(
            row.attr("data-load-balancer"),
            pool.load_balancer.to_string(),
            "{}",
            pool.name
        );
        let text = row.text();
        assert_eq!(
            text.contains("LoadBalancer"),
            pool.load_balancer,
            "a LoadBalancer pool, and only one, is tagged: {text:?}"
        );
        for shown in [
            percent_text(pool.in_use, pool.size),
            grouped(pool.in_use),
            format!("/{}", pool.block_size),
        ] {
            assert!(text.contains(&shown), "{shown:?} not in row {text:?}");
        }
    }
}

fn assert_grid_matches(dom: &Dom, pool: &ipam_server::api::PoolUsageBody) {
    let section = dom.one("section", "data-pool");
    assert_eq!(section.attr("data-pool"), pool.name);
    assert_eq!(section.attr("data-blocks"), pool.blocks.len().to_string());
    let prefix = pool.cidr.prefix_len();
    let possible = 1u128 << (pool.block_size - prefix);
    assert_eq!(section.attr("data-possible-blocks"), possible.to_string());
    let tiles = dom.all("a", "data-cidr");
    let cidrs: Vec<&str> = tiles.iter().map(|t| t.attr("data-cidr")).collect();
    let expected: Vec<String> = pool.blocks.iter().map(|b| b.cidr.to_string()).collect();
    assert_eq!(cidrs, expected, "one tile per block, in address order");
    for block in &pool.blocks {
        let tile = dom.find("a", "data-cidr", &block.cidr.to_string());
        assert_eq!(tile.attr("data-node"), block.node.as_deref().unwrap_or(""));
        assert_eq!(tile.attr("data-size"), block.size.to_string());
        assert_eq!(tile.attr("data-in-use"), block.in_use.to_string());
        assert_eq!(tile.attr("data-free"), block.free.to_string());
        assert_eq!(tile.attr("data-borrowed"), block.borrowed.to_string());
        let pct = percent(block.in_use.into(), block.size.into());
        assert_eq!(tile.attr("data-percent"), pct);
        assert!(tile.attr("title").contains(&format!("{pct}%")));
        assert!(tile
            .text()
            .contains(&format!("{}/{}", block.in_use, block.size)));
    }
    // The legend: every owning node once, each with its own colour.
    let legend = dom.all("li", "data-node");
    let nodes: BTreeSet<&str> = legend.iter().map(|l| l.attr("data-node")).collect();
    let owners: BTreeSet<&str> = pool
        .blocks
        .iter()
        .filter_map(|b| b.node.as_deref())
        .collect();
    assert_eq!(nodes, owners);
    let colours: BTreeSet<&str> = legend.iter().map(|l| l.attr("data-color")).collect();
    assert_eq!(colours.len(), legend.len(), "a colour per node: {legend:?}");
    for item in &legend {
        let node = item.attr("data-node");
        let blocks = pool
            .blocks
            .iter()
            .filter(|b| b.node.as_deref() == Some(node));
        assert_eq!(item.attr("data-blocks"), blocks.clone().count().to_string());
        let in_use: u32 = blocks.map(|b| b.in_use).sum();
        assert_eq!(item.attr("data-in-use"), in_use.to_string());
        assert!(item.text().contains(node));
    }
}

fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ----- tests ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_apis_figures_and_a_blocks_addresses() {
    if !testkit::require::chromium() {
        return;
    }
    let (address, api) = populated().await;
    let usage = api.usage().await;
    assert_eq!(
        usage
            .pools
            .iter()
            .filter(|p| p.load_balancer)
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["services-lb"]
    );
    let v4 = &usage.pools[0];
    let block = v4
        .blocks
        .iter()
        .find(|b| b.borrowed > 0)
        .expect("node-a's block lends an address");
    let detail = api.block(block.cidr).await;

    // A bookmarkable view: a pool and one of its blocks opened.
    let url = format!(
        "http://{address}/?pool={}&block={}",
        v4.name,
        block.cidr.to_string().replace('/', "%2F")
    );
    let dom = dom(&url).await;
    assert_eq!(dom.one("body", "data-state").attr("data-state"), "ready");
    assert_pool_table_matches(&dom, &usage);
    assert_grid_matches(&dom, v4);

    let panel = dom.find("section", "id", "block-detail");
    assert_eq!(panel.attr("data-cidr"), detail.cidr.to_string());
    assert_eq!(panel.attr("data-node"), detail.node.as_deref().unwrap());
    assert_eq!(
        panel.attr("data-allocations"),
        detail.allocations.len().to_string()
    );
    let rows = dom.all("tr", "data-address");
    assert_eq!(rows.len(), detail.allocations.len());
    for (row, allocation) in rows.iter().zip(&detail.allocations) {
        let attribute = |k: &str| allocation.attributes.get(k).cloned().unwrap_or_default();
        assert_eq!(row.attr("data-address"), allocation.address.to_string());
        assert_eq!(row.attr("data-ordinal"), allocation.ordinal.to_string());
        assert_eq!(
            row.attr("data-handle"),
            allocation.handle.as_deref().unwrap()
        );
        assert_eq!(row.attr("data-pod"), attribute("pod"));
        assert_eq!(row.attr("data-namespace"), attribute("namespace"));
        assert_eq!(row.attr("data-node"), attribute("node"));
        let borrowed = attribute("node") != *detail.node.as_ref().unwrap();
        assert_eq!(row.attr("data-borrowed"), borrowed.to_string());
        let text = row.text();
        for shown in [
            allocation.address.to_string(),
            allocation.handle.clone().unwrap(),
            attribute("pod"),
            attribute("namespace"),
            attribute("node"),
        ] {
            assert!(text.contains(&shown), "{shown:?} not in row {text:?}");
        }
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r.attr("data-borrowed") == "true")
            .count(),
        block.borrowed as usize
    );

    // The same view, as an operator sees it.
    let shot = artifact_dir().join("usage-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".to_string(),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 900));
    eprintln!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_pool_shows_its_exact_size_and_its_blocks() {
    if !testkit::require::chromium() {
        return;
    }
    let (address, api) = populated().await;
    let usage = api.usage().await;
    let v6 = usage.pools.iter().find(|p| p.name == "pods-v6").unwrap();
    assert_eq!(v6.size, 1 << 64, "larger than a JavaScript number holds");
    let dom = dom(&format!("http://{address}/?pool=pods-v6")).await;
    assert_pool_table_matches(&dom, &usage);
    assert_grid_matches(&dom, v6);
    assert!(dom
        .find("tr", "data-pool", "pods-v6")
        .text()
        .contains("2 64"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_is_shown_as_text_never_as_markup() {
    if !testkit::require::chromium() {
        return;
    }
    let (address, api) = populated().await;
    let usage = api.usage().await;
    let block = usage.pools[0]
        .blocks
        .iter()
        .find(|b| b.node.as_deref() == Some("node-b"))
        .unwrap();
    let url = format!(
        "http://{address}/?block={}",
        block.cidr.to_string().replace('/', "%2F")
    );
    let dom = dom(&url).await;
    // Opened by block alone, the page finds the block's pool.
    assert_eq!(dom.one("section", "data-pool").attr("data-pool"), "pods-v4");
    let row = dom.find("tr", "data-pod", HOSTILE_POD);
    assert!(row.text().contains(HOSTILE_POD));
    assert!(!dom.0.contains("<img"), "the pod name became an element");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_states_say_what_is_missing() {
    if !testkit::require::chromium() {
        return;
    }
    let (address, _api) = populated().await;
    let dom = dom(&format!("http://{address}/?pool=spare")).await;
    assert_eq!(dom.one("section", "data-pool").attr("data-blocks"), "0");
    assert!(dom.has_id("no-blocks"), "{}", dom.0);

    let bare = serve(AppConfig::default()).await;
    let dom = self::dom(&format!("http://{bare}/")).await;
    assert_eq!(dom.one("body", "data-state").attr("data-state"), "ready");
    assert!(dom.has_id("no-pools"), "{}", dom.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_of_a_deleted_pool_are_shown_apart() {
    if !testkit::require::chromium() {
        return;
    }
    let address = serve(AppConfig::default()).await;
    let api = Api {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
    };
    api.pool("old", "10.30.0.0/24", 26).await;
    api.pod("node-a", "shop", "web-0", 0).await;
    // Deleting a pool leaves its addresses in use, in blocks of no pool.
    api.send(reqwest::Method::DELETE, "/v1/pools/old", json!({}))
        .await;
    let usage = api.usage().await;
    assert_eq!(usage.orphaned_blocks.len(), 1);
    let orphan = &usage.orphaned_blocks[0];
    let dom = dom(&format!("http://{address}/")).await;
    assert!(dom.has_id("no-pools"), "{}", dom.0);
    let orphans = dom.find("section", "id", "orphans");
    assert!(!orphans.attrs.contains_key("hidden"));
    let tile = dom.find("a", "data-cidr", &orphan.cidr.to_string());
    assert_eq!(tile.attr("data-in-use"), orphan.in_use.to_string());
    assert_eq!(tile.attr("data-node"), orphan.node.as_deref().unwrap_or(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protected_api_is_explained_not_hidden() {
    if !testkit::require::chromium() {
        return;
    }
    let address = serve(AppConfig {
        token: Some("secret".to_string()),
        ..AppConfig::default()
    })
    .await;
    let dom = dom(&format!("http://{address}/")).await;
    assert_eq!(dom.one("body", "data-state").attr("data-state"), "error");
    let banner = dom.find("div", "id", "error");
    assert_eq!(banner.attr("data-status"), "401");
    let text = banner.text();
    assert!(
        text.contains("requires a bearer token") && text.contains("cannot send one"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_addresses_have_their_own_colour() {
    if !testkit::require::chromium() {
        return;
    }
    let address = serve(AppConfig::default()).await;
    let api = Api {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
    };
    api.pool("pods", "10.40.0.0/24", 26).await;
    let config =
        json!({"strictAffinity": false, "autoAllocateBlocks": true, "ipCooldownSeconds": 600});
    api.send(reqwest::Method::PUT, "/v1/config", config).await;
    for i in 0..3 {
        api.pod("node-a", "shop", &format!("web-{i}"), 0).await;
    }
    api.send(
        reqwest::Method::DELETE,
        "/v1/handles/k8s-pod-network.node-a-web-1",
        json!({}),
    )
    .await;
    let usage = api.usage().await;
    let pool = &usage.pools[0];
    assert_eq!((pool.in_use, pool.released), (3, 1));
    let block = &pool.blocks[0];
    let detail = api.block(block.cidr).await;
    let url = format!(
        "http://{address}/?pool=pods&block={}",
        block.cidr.to_string().replace('/', "%2F")
    );
    let dom = dom(&url).await;
    assert_eq!(
        dom.find("tr", "data-pool", "pods").attr("data-released"),
        "1"
    );
    let tile = dom.find("a", "data-cidr", &block.cidr.to_string());
    assert_eq!(tile.attr("data-released"), "1");
    assert_eq!(tile.attr("data-in-use"), "3");
    let bands = dom.all("span", "class");
    let bands = bands.iter().filter(|s| s.attr("class") == "block-released");
    assert_eq!(bands.count(), 1);
    let legend = dom.one("li", "data-released");
    assert_eq!(legend.attr("data-released"), "1");
    assert_eq!(legend.attr("class"), "legend-released");
    let rows = dom.all("tr", "data-address");
    let marked: Vec<&str> = rows
        .iter()
        .filter(|r| r.attr("data-released") == "true")
        .map(|r| r.attr("data-address"))
        .collect();
    let expected: Vec<String> = detail
        .allocations
        .iter()
        .filter(|a| a.released_at.is_some())
        .map(|a| a.address.to_string())
        .collect();
    assert_eq!(marked, expected);
    assert_eq!(expected.len(), 1);
    let row = dom.find("tr", "data-released", "true");
    assert_eq!(row.attr("class"), "address released");
    assert!(row.text().contains("released"), "{}", row.text());
}
