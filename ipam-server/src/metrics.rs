//! `/metrics` in the exposition format the client asks for: the classic
//! Prometheus text format 0.0.4 by default (what `promtool check metrics`,
//! older Prometheus servers and most scrapers read), OpenMetrics 1.0.0 when
//! the `Accept` header prefers it (Prometheus 2.x and later ask for it
//! first). prometheus-client encodes OpenMetrics only, so the classic text
//! is converted from it ([`to_classic`]).
//!
//! What it reports:
//! - pool and node figures under the names Calico's kube-controllers
//!   exports (`ipam_ippool_size`, `ipam_allocations_in_use`,
//!   `ipam_allocations_borrowed`, `ipam_blocks`) and with its label values
//!   for the odd cases (`no_ippool`, `no_affinity`, `unknown_node`), plus
//!   `ipam_ippool_free`, which agrees with `/v1/usage` and `ipamctl show`,
//!   and `ipam_ippool_released`, the released addresses not yet deallocated
//!   (IP cooldown), in use as `ipamctl show` counts them but nobody's, so
//!   not in `ipam_allocations_in_use` (kube-controllers tracks no
//!   allocation without a handle);
//! - HTTP requests and their latency by route template, never by raw path;
//! - datastore round trips, compare-and-swap conflicts and retries, read
//!   from the store and the engine while the scrape is encoded;
//! - the build;
//! - connections open, refused at the caps and closed by the timeouts, when
//!   the server runs its own accept loop ([`crate::connections`]);
//! - the garbage collector's candidates, reclamations, passes and
//!   leadership, when it runs ([`crate::gc`]).
//!
//! Pool figures need a full read of the datastore, so they are cached for
//! [`POOL_FIGURES_MAX_AGE`] and read by one scrape at a time. A failed or
//! slow read leaves the previous figures in place and says so
//! (`ipam_pool_figures_read_errors_total`, `ipam_pool_figures_age_seconds`):
//! `/metrics` keeps answering when the datastore does not, which is when its
//! request figures matter most. Nothing here writes to the datastore.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipam_core::{BlockCidr, BlockOwner, Holder, Snapshot};
use ipam_store::{Datastore, Ipam};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::connections::ConnectionMetrics;
use crate::gc::GcMetrics;

/// How long pool figures are served before the datastore is read again.
/// A read lists every block and handle, so a burst of scrapes (several
/// Prometheus replicas, someone refreshing a browser) must not repeat it;
/// Prometheus scrapes every 15 s or more by default, so 5 s costs no
/// freshness in practice.
const POOL_FIGURES_MAX_AGE: Duration = Duration::from_secs(5);

/// Longest a scrape waits for the pool figures before it serves the previous
/// ones: below Prometheus's default scrape timeout of 10 s.
const POOL_FIGURES_READ_LIMIT: Duration = Duration::from_secs(5);

/// Calico's label for blocks that no pool covers.
const NO_POOL: &str = "no_ippool";
/// Calico's label for blocks affine to no host.
const NO_AFFINITY: &str = "no_affinity";
/// Calico's label for allocations without a `node` attribute (or with an
/// empty one, see [`ipam_core::holder`]).
const UNKNOWN_NODE: &str = "unknown_node";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// The registry, the request figures the middleware records into, and the
/// pool figures the scrape refreshes.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    engine: Arc<Ipam<dyn Datastore>>,
    pools: Arc<PoolCache>,
}

impl Metrics {
    /// Registers every metric, reporting on `engine`, and the garbage
    /// collector's figures when one runs.
    pub fn new(
        engine: Arc<Ipam<dyn Datastore>>,
        gc: Option<&GcMetrics>,
        connections: Option<Arc<ConnectionMetrics>>,
    ) -> Metrics {
        let mut metrics =
            Metrics::with_limits(engine, POOL_FIGURES_MAX_AGE, POOL_FIGURES_READ_LIMIT);
        if let Some(gc) = gc {
            gc.register(&mut metrics.registry);
        }
        if let Some(connections) = connections {
            metrics
                .registry
                .register_collector(Box::new(Connections(connections)));
        }
        metrics
    }

    fn with_limits(
        engine: Arc<Ipam<dyn Datastore>>,
        max_age: Duration,
        read_limit: Duration,
    ) -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to about 16 s: an allocation from a warm cache takes
            // well under a millisecond, one behind a slow store seconds.
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let pools = Arc::new(PoolCache {
            max_age,
            read_limit,
            read_started: tokio::sync::Mutex::new(None),
            current: Mutex::new(None),
            read_errors: AtomicU64::new(0),
        });
        let mut registry = Registry::default();
        registry.register(
            "ipam_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "ipam_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            latency.clone(),
        );
        registry.register(
            "ipam_build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(Live {
            engine: engine.clone(),
            pools: pools.clone(),
        }));
        Metrics {
            registry,
            requests,
            latency,
            engine,
            pools,
        }
    }

    /// Records one answered request.
    fn record(&self, method: &'static str, route: String, status: u16, elapsed: Duration) {
        self.latency
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// The OpenMetrics exposition, with pool figures at most
    /// [`POOL_FIGURES_MAX_AGE`] old when the datastore answers.
    async fn render(&self) -> String {
        self.pools.refresh(&self.engine).await;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The exposition in `format`.
    async fn render_as(&self, format: Format) -> String {
        let openmetrics = self.render().await;
        match format {
            Format::OpenMetrics => openmetrics,
            Format::Classic => to_classic(&openmetrics),
        }
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's text format 0.0.4.
    Classic,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header prefers: OpenMetrics only when it is
    /// asked for with a higher quality than the classic text (Prometheus
    /// sends `application/openmetrics-text;version=1.0.0,...,
    /// text/plain;version=0.0.4;q=0.5,*/*;q=0.1`); the classic text
    /// otherwise, also without a header or when nothing offered matches, as
    /// Prometheus's own client libraries fall back to it.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut classic) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let (mut quality, mut version) = (1.0_f32, None);
            for parameter in parts {
                let Some((key, value)) = parameter.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    // An unreadable weight counts as 0: not acceptable.
                    "q" => quality = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_string()),
                    _ => {}
                }
            }
            let version = version.as_deref();
            match media.as_str() {
                // 0.0.1 is OpenMetrics' draft, which 1.0.0 text satisfies.
                "application/openmetrics-text"
                    if matches!(version, None | Some("1.0.0" | "0.0.1")) =>
                {
                    openmetrics = openmetrics.max(quality);
                }
                "application/*" => openmetrics = openmetrics.max(quality),
                "text/plain" if matches!(version, None | Some("0.0.4")) => {
                    classic = classic.max(quality);
                }
                "text/*" | "*/*" => classic = classic.max(quality),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics > classic {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Prometheus metrics: the classic text format 0.0.4, or OpenMetrics
/// 1.0.0 when the `Accept` header prefers it.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses(
        (status = 200, description = "The exposition", content(
            (String = "text/plain"),
            (String = "application/openmetrics-text"),
        )),
        (status = 401, description = "The server has a token and the request does not carry it (`unauthorized`)", body = crate::error::ErrorBody),
        (status = 503, description = "The request took longer than --request-timeout-seconds (`timeout`)", body = crate::error::ErrorBody),
    ))]
pub async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            // Caches between Prometheus and the server must not hand one
            // format to a client that asked for the other.
            (header::VARY, "accept"),
        ],
        metrics.render_as(format).await,
    )
        .into_response()
}

/// Rewrites an OpenMetrics text exposition in the classic text format
/// 0.0.4, where the two differ
/// (<https://prometheus.io/docs/instrumenting/exposition_formats/> and
/// OpenMetrics 1.0 "Text format"):
/// - a counter family `x` has samples `x_total`; the classic format names
///   the family after its samples, so HELP and TYPE say `x_total` (without
///   that, a classic parser sees samples of an untyped family with no
///   HELP), and `x_created` samples, which it has no place for, go;
/// - an info family `x` (sample `x_info`, value 1) becomes the gauge
///   `x_info`, the classic convention for the same thing;
/// - `unknown` is `untyped`;
/// - `# UNIT` and `# EOF` lines go (the unit stays in the family name);
/// - HELP text escapes only backslash and newline, so `\"` becomes `"`;
/// - exemplars (` # {...} v`) go; timestamps turn from seconds into
///   milliseconds.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let mut counter = false;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            counter = kind == "counter";
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "unknown" => (family.to_string(), "untyped"),
                _ => (family.to_string(), kind),
            };
            if let Some((_, text)) = help.take().filter(|(named, _)| *named == family) {
                out.push_str("# HELP ");
                out.push_str(&name);
                out.push(' ');
                unescape_quotes(text, &mut out);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        // `# UNIT`, `# EOF` and any other comment.
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, rest) = split_series(line);
        if counter && series_name(series).ends_with("_created") {
            continue;
        }
        out.push_str(series);
        // What follows the series: ` value [timestamp] [# exemplar]`.
        let rest = rest.split(" # ").next().unwrap_or_default();
        let mut fields = rest.split_whitespace();
        if let Some(value) = fields.next() {
            out.push(' ');
            out.push_str(value);
        }
        if let Some(seconds) = fields.next().and_then(|t| t.parse::<f64>().ok()) {
            out.push(' ');
            out.push_str(&((seconds * 1000.0).round() as i64).to_string());
        }
        out.push('\n');
    }
    out
}

/// A sample line's series (`name{labels}`) and the rest of the line. Label
/// values may hold spaces, `}` and escaped quotes, so the end of the
/// labels is found by walking them.
fn split_series(line: &str) -> (&str, &str) {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    if !line[name_end..].starts_with('{') {
        return line.split_at(name_end);
    }
    let (mut quoted, mut escaped) = (false, false);
    for (at, c) in line.char_indices().skip(name_end) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return line.split_at(at + 1),
            _ => {}
        }
    }
    (line, "")
}

fn series_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// Appends OpenMetrics HELP text with `\"` turned into `"`; the other
/// escapes (`\\`, `\n`) are the classic format's too.
fn unescape_quotes(text: &str, out: &mut String) {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some(next) => {
                out.push('\\');
                out.push(next);
            }
            None => out.push('\\'),
        }
    }
}

/// Middleware recording every request: labelled by the route's template
/// (`/v1/handles/{handle}`), never the raw path, so that handle names and
/// addresses do not each make a new series; `unmatched` when no route
/// matched, and `other` for unusual methods, for the same reason.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record(method, route, response.status().as_u16(), started.elapsed());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Pool figures from the last datastore read that worked.
struct PoolCache {
    max_age: Duration,
    read_limit: Duration,
    /// When the last read started, whether it worked or not, so that a
    /// datastore that is down is not asked again by every scrape. Held
    /// across the read, so that concurrent scrapes wait for one read
    /// instead of each making their own.
    read_started: tokio::sync::Mutex<Option<Instant>>,
    /// The figures served and when their read started. Replaced whole, so
    /// that a scrape encodes one consistent set.
    current: Mutex<Option<(Instant, Arc<PoolFigures>)>>,
    read_errors: AtomicU64,
}

impl PoolCache {
    async fn refresh(&self, engine: &Ipam<dyn Datastore>) {
        let mut read_started = self.read_started.lock().await;
        if read_started.is_some_and(|at| at.elapsed() < self.max_age) {
            return;
        }
        let started = Instant::now();
        *read_started = Some(started);
        match tokio::time::timeout(self.read_limit, engine.snapshot()).await {
            Ok(Ok(snapshot)) => {
                let figures = Arc::new(PoolFigures::of(&snapshot));
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((started, figures));
            }
            Ok(Err(error)) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "metrics: reading the pools failed; serving the previous figures");
            }
            Err(_) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    limit_s = self.read_limit.as_secs_f64(),
                    "metrics: reading the pools took too long; serving the previous figures"
                );
            }
        }
    }

    fn current(&self) -> Option<(Instant, Arc<PoolFigures>)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Pool and node figures, computed as Calico's kube-controllers does
/// (ipam.go, updateMetrics), keyed by (pool, node).
#[derive(Debug, Default, PartialEq)]
struct PoolFigures {
    /// Per pool: addresses in its range and addresses free, as `/v1/usage`
    /// counts them.
    size_and_free: BTreeMap<String, (u128, u128)>,
    /// Allocations by the node in their `node` attribute. Every node the
    /// snapshot names gets a zero in every pool, as Calico seeds every
    /// node, so that ratios read 0 rather than no data.
    in_use: BTreeMap<(String, String), u64>,
    /// Allocations whose node is not the host the block is affine to.
    borrowed: BTreeMap<(String, String), u64>,
    /// Blocks by the host they are affine to.
    blocks: BTreeMap<(String, String), u64>,
    /// Per pool: released addresses not yet deallocated.
    released: BTreeMap<String, u64>,
}

impl PoolFigures {
    fn of(snapshot: &Snapshot) -> PoolFigures {
        let mut figures = PoolFigures::default();
        // Blocks go to pools as `usage` places them, so that these figures
        // and `/v1/usage` never disagree.
        let usage = ipam_core::usage::usage(snapshot);
        let pool_of: BTreeMap<BlockCidr, &str> = usage
            .pools
            .iter()
            .flat_map(|pool| pool.blocks.iter().map(|b| (b.cidr, pool.name.as_str())))
            .collect();
        let mut nodes = BTreeSet::new();
        for block in snapshot.blocks() {
            let pool = pool_of.get(&block.cidr()).copied().unwrap_or(NO_POOL);
            let host = match block.owner() {
                Some(BlockOwner::Host(node)) => Some(node.as_str()),
                _ => None,
            };
            let key = |node: &str| (pool.to_string(), node.to_string());
            *figures
                .blocks
                .entry(key(host.unwrap_or(NO_AFFINITY)))
                .or_default() += 1;
            nodes.extend(host.map(str::to_string));
            for (_, attribute) in block.allocations() {
                if attribute.is_released() {
                    continue;
                }
                let node = Holder::of(attribute).node();
                *figures
                    .in_use
                    .entry(key(node.unwrap_or(UNKNOWN_NODE)))
                    .or_default() += 1;
                if let Some(node) = node {
                    if host != Some(node) {
                        *figures.borrowed.entry(key(node)).or_default() += 1;
                    }
                    nodes.insert(node.to_string());
                }
            }
        }
        for pool in &usage.pools {
            figures.size_and_free.insert(
                pool.name.clone(),
                (pool.capacity, pool.capacity - pool.in_use),
            );
            for node in &nodes {
                let key = (pool.name.clone(), node.clone());
                figures.in_use.entry(key.clone()).or_default();
                figures.borrowed.entry(key).or_default();
            }
        }
        figures.released = released_by_pool(&usage);
        figures
    }
}

/// Released addresses not yet deallocated, by pool (`no_ippool` for blocks
/// outside every pool, when they hold some); every pool is listed.
fn released_by_pool(usage: &ipam_core::usage::Usage) -> BTreeMap<String, u64> {
    let mut released: BTreeMap<String, u64> = usage
        .pools
        .iter()
        .map(|pool| (pool.name.clone(), pool.released as u64))
        .collect();
    let orphaned: u64 = usage
        .orphaned_blocks
        .iter()
        .map(|b| u64::from(b.released))
        .sum();
    if orphaned > 0 {
        released.insert(NO_POOL.to_string(), orphaned);
    }
    released
}

fn encode_released(
    encoder: &mut DescriptorEncoder,
    released: &BTreeMap<String, u64>,
) -> Result<(), fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "ipam_ippool_released",
        "Released addresses of the pool not yet free again (IP cooldown): in use, held by nobody",
        None,
        MetricType::Gauge,
    )?;
    for (pool, count) in released {
        ConstGauge::new(*count as i64).encode(metric.encode_family(&[("ippool", pool)])?)?;
    }
    Ok(())
}

/// The figures read while a scrape is encoded: engine and store counters
/// (read then, so they are exact and need no copy kept in step) and the
/// cached pool figures.
struct Live {
    engine: Arc<Ipam<dyn Datastore>>,
    pools: Arc<PoolCache>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let trips = self.engine.store().round_trips();
        let stats = self.engine.stats();
        let mut family = encoder.encode_descriptor(
            "ipam_datastore_round_trips",
            "Datastore calls made (read: get, list; write: create, update, delete)",
            None,
            MetricType::Counter,
        )?;
        for (kind, count) in [("read", trips.reads), ("write", trips.writes)] {
            ConstCounter::new(count).encode(family.encode_family(&[("kind", kind)])?)?;
        }
        counter(
            &mut encoder,
            "ipam_cas_conflicts",
            "Compare-and-swap failures the engine recovered from by re-reading",
            stats.conflicts,
        )?;
        counter(
            &mut encoder,
            "ipam_retries",
            "Operation attempts after the first",
            stats.retries,
        )?;
        counter(
            &mut encoder,
            "ipam_pool_figures_read_errors",
            "Datastore reads for the pool figures that failed or took too long",
            self.pools.read_errors.load(Ordering::Relaxed),
        )?;

        let Some((read_at, figures)) = self.pools.current() else {
            return Ok(());
        };
        let age = encoder.encode_descriptor(
            "ipam_pool_figures_age_seconds",
            "Age of the pool and node figures served",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(read_at.elapsed().as_secs_f64()).encode(age)?;
        // Sizes as floats, as Calico does: an IPv6 pool can hold 2^128.
        let mut size = encoder.encode_descriptor(
            "ipam_ippool_size",
            "Addresses in the pool",
            None,
            MetricType::Gauge,
        )?;
        for (pool, (capacity, _)) in &figures.size_and_free {
            ConstGauge::new(*capacity as f64).encode(size.encode_family(&[("ippool", pool)])?)?;
        }
        let mut free = encoder.encode_descriptor(
            "ipam_ippool_free",
            "Addresses of the pool not in use",
            None,
            MetricType::Gauge,
        )?;
        for (pool, (_, unused)) in &figures.size_and_free {
            ConstGauge::new(*unused as f64).encode(free.encode_family(&[("ippool", pool)])?)?;
        }
        by_pool_and_node(
            &mut encoder,
            "ipam_allocations_in_use",
            "Addresses in use, by pool and by the node in their node attribute",
            &figures.in_use,
        )?;
        by_pool_and_node(
            &mut encoder,
            "ipam_allocations_borrowed",
            "Addresses in use by a node in blocks not affine to it",
            &figures.borrowed,
        )?;
        by_pool_and_node(
            &mut encoder,
            "ipam_blocks",
            "Blocks, by pool and by the host they are affine to",
            &figures.blocks,
        )?;
        encode_released(&mut encoder, &figures.released)
    }
}

/// The connection counts, read while a scrape is encoded.
#[derive(Debug)]
struct Connections(Arc<ConnectionMetrics>);

impl Collector for Connections {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.0.encode(&mut encoder)
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn by_pool_and_node(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &BTreeMap<(String, String), u64>,
) -> Result<(), fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for ((pool, node), value) in values {
        let labels = [("ippool", pool.as_str()), ("node", node.as_str())];
        ConstGauge::new(*value as i64).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ipam_core::{Block, IpamConfig, Pool, PoolSpec};
    use ipam_store::memory::MemoryStore;
    use ipam_store::Value;

    use super::*;

    fn block(cidr: &str, host: Option<&str>, nodes: &[Option<&str>]) -> Block {
        let cidr = BlockCidr::new(cidr.parse().unwrap()).unwrap();
        let owner = host.map(|h| BlockOwner::Host(h.to_string()));
        let mut block = Block::new(cidr, owner, None, 1);
        for (ordinal, node) in nodes.iter().enumerate() {
            let attributes: BTreeMap<String, String> = node
                .iter()
                .map(|n| ("node".to_string(), n.to_string()))
                .collect();
            block
                .assign(ordinal as u32, &format!("h{ordinal}"), &attributes)
                .unwrap();
        }
        block
    }

    fn pool_a() -> Pool {
        let spec = PoolSpec {
            block_size: Some(26),
            node_selector: "all()".to_string(),
            ..PoolSpec::new("10.0.0.0/16".parse().unwrap())
        };
        Pool::new("pool-a", spec).unwrap()
    }

    fn key(pool: &str, node: &str) -> (String, String) {
        (pool.to_string(), node.to_string())
    }

    #[test]
    fn odd_blocks_and_allocations_get_calicos_labels() {
        let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool_a()], &[]);
        // n1's block, with one address n2 borrows and one of no node.
        snapshot.insert_block(block(
            "10.0.0.0/26",
            Some("n1"),
            &[Some("n1"), Some("n2"), None],
        ));
        // A block affine to nobody: every address in it is borrowed.
        snapshot.insert_block(block("10.0.0.64/26", None, &[Some("n3")]));
        // A block outside every pool.
        snapshot.insert_block(block("192.168.0.0/26", Some("n1"), &[Some("n1")]));

        let figures = PoolFigures::of(&snapshot);

        assert_eq!(
            figures.size_and_free,
            BTreeMap::from([("pool-a".to_string(), (65536, 65532))])
        );
        assert_eq!(
            figures.blocks,
            BTreeMap::from([
                (key("no_ippool", "n1"), 1),
                (key("pool-a", "n1"), 1),
                (key("pool-a", "no_affinity"), 1),
            ])
        );
        assert_eq!(
            figures.in_use,
            BTreeMap::from([
                (key("no_ippool", "n1"), 1),
                (key("pool-a", "n1"), 1),
                (key("pool-a", "n2"), 1),
                (key("pool-a", "n3"), 1),
                (key("pool-a", "unknown_node"), 1),
            ])
        );
        assert_eq!(
            figures.borrowed,
            BTreeMap::from([
                (key("pool-a", "n1"), 0),
                (key("pool-a", "n2"), 1),
                (key("pool-a", "n3"), 1),
            ])
        );
    }

    #[test]
    fn an_empty_node_is_unknown_node_as_usage_reads_it() {
        let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool_a()], &[]);
        let b = block("10.0.0.0/26", Some("n1"), &[Some("n1"), Some(""), None]);
        // Usage reads the empty node as no node too: nothing is borrowed.
        assert_eq!(ipam_core::usage::block_usage(&b).borrowed, 0);
        snapshot.insert_block(b);

        let figures = PoolFigures::of(&snapshot);

        assert_eq!(
            figures.in_use,
            BTreeMap::from([(key("pool-a", "n1"), 1), (key("pool-a", "unknown_node"), 2),])
        );
        assert_eq!(figures.borrowed, BTreeMap::from([(key("pool-a", "n1"), 0)]));
    }

    #[test]
    fn released_addresses_are_counted_per_pool_and_not_as_anyones() {
        let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool_a()], &[]);
        let mut b = block("10.0.0.0/26", Some("n1"), &[Some("n1"), Some("n1")]);
        b.release_by_handle("h1", None, Some(1_782_900_000));
        snapshot.insert_block(b);
        let mut outside = block("192.168.0.0/26", Some("n1"), &[Some("n1")]);
        outside.release_by_handle("h0", None, Some(1_782_900_000));
        snapshot.insert_block(outside);

        let figures = PoolFigures::of(&snapshot);

        assert_eq!(
            figures.released,
            BTreeMap::from([("no_ippool".to_string(), 1), ("pool-a".to_string(), 1)])
        );
        assert_eq!(
            figures.in_use,
            BTreeMap::from([(key("pool-a", "n1"), 1)]),
            "the released address is in no node's count"
        );
        // In use as `ipamctl show` counts it: two of the pool's addresses.
        assert_eq!(
            figures.size_and_free,
            BTreeMap::from([("pool-a".to_string(), (65536, 65534))])
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_classic_text() {
        // Prometheus 2.42's scrape Accept header.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let cases = [
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
            (None, Format::Classic),
            (Some(""), Format::Classic),
            (Some("*/*"), Format::Classic),
            (Some("text/plain;version=0.0.4"), Format::Classic),
            (Some("text/plain"), Format::Classic),
            (Some("application/json"), Format::Classic),
            // A version we do not write is not what was asked for.
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Format::Classic,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Classic),
            (
                Some("text/plain;version=0.0.4,application/openmetrics-text;q=0.5"),
                Format::Classic,
            ),
            (
                Some("text/plain;version=0.0.4;q=0.2,application/openmetrics-text;q=0.5"),
                Format::OpenMetrics,
            ),
            // Equal weights: the format every tool reads.
            (
                Some("application/openmetrics-text,text/plain"),
                Format::Classic,
            ),
        ];
        for (accept, expected) in cases {
            assert_eq!(Format::negotiate(accept), expected, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_converts_to_the_classic_text_family_by_family() {
        let openmetrics = concat!(
            "# HELP c Conflicts \\\"recovered\\\" \\\\ per\\nline.\n",
            "# TYPE c counter\n",
            "c_total{kind=\"a} # {\\\"\"} 3 # {trace=\"x\"} 1.0 1.5\n",
            "c_created 1700000000.5\n",
            "# HELP b The build.\n",
            "# TYPE b info\n",
            "b_info{version=\"1\"} 1\n",
            "# HELP d_seconds Age.\n",
            "# TYPE d_seconds gauge\n",
            "# UNIT d_seconds seconds\n",
            "d_seconds 1.5 1700000000.25\n",
            "# HELP u Whatever.\n",
            "# TYPE u unknown\n",
            "u 2\n",
            "# HELP h Latency.\n",
            "# TYPE h histogram\n",
            "h_bucket{le=\"+Inf\"} 1\n",
            "h_sum 0.5\n",
            "h_count 1\n",
            "# EOF\n",
        );
        let expected = concat!(
            "# HELP c_total Conflicts \"recovered\" \\\\ per\\nline.\n",
            "# TYPE c_total counter\n",
            "c_total{kind=\"a} # {\\\"\"} 3\n",
            "# HELP b_info The build.\n",
            "# TYPE b_info gauge\n",
            "b_info{version=\"1\"} 1\n",
            "# HELP d_seconds Age.\n",
            "# TYPE d_seconds gauge\n",
            "d_seconds 1.5 1700000000250\n",
            "# HELP u Whatever.\n",
            "# TYPE u untyped\n",
            "u 2\n",
            "# HELP h Latency.\n",
            "# TYPE h histogram\n",
            "h_bucket{le=\"+Inf\"} 1\n",
            "h_sum 0.5\n",
            "h_count 1\n",
        );
        assert_eq!(to_classic(openmetrics), expected);
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    /// Metrics over a fresh memory store holding pool-a, and the store.
    async fn over_pool_a() -> (Metrics, Arc<dyn Datastore>) {
        let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
        store.create(&Value::Pool(pool_a())).await.unwrap();
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store.clone()));
        let metrics =
            Metrics::with_limits(engine, Duration::from_secs(3600), Duration::from_secs(5));
        (metrics, store)
    }

    #[tokio::test]
    async fn concurrent_scrapes_share_one_datastore_read() {
        let (alone, store) = over_pool_a().await;
        let before = store.round_trips().reads;
        alone.render().await;
        let one_read = store.round_trips().reads - before;
        assert!(one_read > 0);

        let (crowded, store) = over_pool_a().await;
        let before = store.round_trips().reads;
        let texts = tokio::join!(
            crowded.render(),
            crowded.render(),
            crowded.render(),
            crowded.render()
        );
        assert_eq!(store.round_trips().reads - before, one_read);
        for text in [texts.0, texts.1, texts.2, texts.3] {
            assert!(
                text.contains("ipam_ippool_size{ippool=\"pool-a\"} 65536.0"),
                "{text}"
            );
        }
        crowded.render().await;
        assert_eq!(
            store.round_trips().reads - before,
            one_read,
            "figures younger than the maximum age are served from the cache"
        );
    }
}
