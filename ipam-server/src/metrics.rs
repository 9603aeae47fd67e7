//! `/metrics`, for Prometheus to scrape: what the pools hold, how the API is
//! used, and how hard the engine works the datastore.
//!
//! - Pool and node figures, under the names Calico's kube-controllers
//!   exports where it has one: `ipam_ippool_size{ippool}`,
//!   `ipam_ippool_free{ippool}`, `ipam_allocations_in_use{ippool,node}`,
//!   `ipam_allocations_borrowed{ippool,node}`, `ipam_blocks{ippool,node}`.
//!   These come from a full read of the datastore at scrape time, cached
//!   for [`POOL_FIGURES_MAX_AGE`].
//! - `ipam_http_requests_total{method,route,status}` and
//!   `ipam_http_request_duration_seconds{method,route}`, recorded by
//!   [`record`] around the `/v1` routes, with the route's template as label.
//! - `ipam_datastore_round_trips_total{kind}`, `ipam_cas_conflicts_total`
//!   and `ipam_retries_total`, read from the store and the engine at
//!   scrape time.
//!
//! The exposition is the OpenMetrics text format of `prometheus-client`,
//! which Prometheus reads.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipam_core::usage::usage;
use ipam_core::Snapshot;
use ipam_store::{Datastore, Ipam};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::Mutex;

use crate::error::ApiError;

/// Pool figures are read from the datastore at most this often. Computing
/// them takes a full read of the datastore (every pool and block), so a
/// storm of scrapes (several Prometheus replicas, someone reloading the
/// page) answers from the figures of the last read instead of repeating it.
const POOL_FIGURES_MAX_AGE: Duration = Duration::from_secs(5);

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    ippool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolNodeLabels {
    ippool: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TripLabel {
    kind: &'static str,
}

/// The registry and the engine it reports on.
pub struct Metrics {
    engine: Arc<Ipam<dyn Datastore>>,
    registry: Registry,
    pool_size: Family<PoolLabel, FloatGauge>,
    pool_free: Family<PoolLabel, FloatGauge>,
    in_use: Family<PoolNodeLabels, Gauge>,
    borrowed: Family<PoolNodeLabels, Gauge>,
    blocks: Family<PoolNodeLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    round_trips: Family<TripLabel, Counter>,
    conflicts: Counter,
    retries: Counter,
    /// When the pool figures were last read. Held for a whole scrape, so
    /// concurrent scrapes neither read the datastore twice, nor see the
    /// pool families half rewritten, nor add a counter's catch-up twice.
    pools_read_at: Mutex<Option<Instant>>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(engine: Arc<Ipam<dyn Datastore>>) -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            engine,
            registry: Registry::default(),
            pool_size: Family::default(),
            pool_free: Family::default(),
            in_use: Family::default(),
            borrowed: Family::default(),
            blocks: Family::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                // 0.5 ms to about 16 s.
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            round_trips: Family::default(),
            conflicts: Counter::default(),
            retries: Counter::default(),
            pools_read_at: Mutex::new(None),
        };
        registry.register(
            "ipam_ippool_size",
            "Addresses in the pool",
            metrics.pool_size.clone(),
        );
        registry.register(
            "ipam_ippool_free",
            "Addresses of the pool not in use",
            metrics.pool_free.clone(),
        );
        registry.register(
            "ipam_allocations_in_use",
            "Addresses in use, by pool and by the node they were assigned for",
            metrics.in_use.clone(),
        );
        registry.register(
            "ipam_allocations_borrowed",
            "Addresses a node holds in blocks affine to another node",
            metrics.borrowed.clone(),
        );
        registry.register(
            "ipam_blocks",
            "Blocks affine to a node",
            metrics.blocks.clone(),
        );
        registry.register(
            "ipam_http_requests",
            "HTTP requests answered, by route template and status",
            metrics.requests.clone(),
        );
        registry.register(
            "ipam_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            metrics.latency.clone(),
        );
        registry.register(
            "ipam_datastore_round_trips",
            "Datastore calls made (reads: get, list; writes: create, update, delete)",
            metrics.round_trips.clone(),
        );
        registry.register(
            "ipam_cas_conflicts",
            "Compare-and-swap failures the engine recovered from by re-reading",
            metrics.conflicts.clone(),
        );
        registry.register(
            "ipam_retries",
            "Operation attempts after the first",
            metrics.retries.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records one answered request.
    fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Brings the counters that mirror the engine and the store up to
    /// date. They only grow, so adding the difference keeps them counters.
    fn catch_up(&self) {
        let catch = |counter: &Counter, now: u64| {
            counter.inc_by(now.saturating_sub(counter.get()));
        };
        let trips = self.engine.store().round_trips();
        catch(
            &self.round_trips.get_or_create(&TripLabel { kind: "read" }),
            trips.reads,
        );
        catch(
            &self.round_trips.get_or_create(&TripLabel { kind: "write" }),
            trips.writes,
        );
        let stats = self.engine.stats();
        catch(&self.conflicts, stats.conflicts);
        catch(&self.retries, stats.retries);
    }

    /// Refreshes the pool and node figures from a fresh read of the
    /// datastore, unless they are younger than [`POOL_FIGURES_MAX_AGE`].
    async fn refresh_pools(&self, read_at: &mut Option<Instant>) -> Result<(), ApiError> {
        if read_at.is_some_and(|at| at.elapsed() < POOL_FIGURES_MAX_AGE) {
            return Ok(());
        }
        let snapshot = self.engine.snapshot().await?;
        self.set_pool_figures(&snapshot);
        *read_at = Some(Instant::now());
        Ok(())
    }

    /// Sets the pool and node figures. Pools, their sizes and what is free
    /// come from [`usage`], so they agree with `/v1/usage` and `calicoctl
    /// ipam show` (a block counts under the first pool, by name, holding
    /// it; reserved addresses count as used). Per node: an address counts
    /// for the node in its `node` attribute, else for its block's owner,
    /// and is borrowed when that node is not the block's owner.
    fn set_pool_figures(&self, snapshot: &Snapshot) {
        // Pools and nodes that went away must not linger with old values.
        for family in [&self.in_use, &self.borrowed, &self.blocks] {
            family.clear();
        }
        self.pool_size.clear();
        self.pool_free.clear();
        let mut in_use: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut borrowed: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut blocks: BTreeMap<(String, String), i64> = BTreeMap::new();
        for pool in usage(snapshot).pools {
            let label = PoolLabel {
                ippool: pool.name.clone(),
            };
            self.pool_size
                .get_or_create(&label)
                .set(pool.capacity as f64);
            self.pool_free
                .get_or_create(&label)
                .set((pool.capacity - pool.in_use) as f64);
            for figures in &pool.blocks {
                if let Some(owner) = &figures.owner {
                    *blocks
                        .entry((pool.name.clone(), owner.clone()))
                        .or_default() += 1;
                }
                let Some(block) = snapshot.block(&figures.cidr) else {
                    continue;
                };
                for (_, attribute) in block.allocations() {
                    let node = attribute
                        .secondary
                        .get("node")
                        .or(figures.owner.as_deref())
                        .unwrap_or_default()
                        .to_string();
                    if figures.owner.as_deref().is_some_and(|o| o != node) {
                        *borrowed
                            .entry((pool.name.clone(), node.clone()))
                            .or_default() += 1;
                    }
                    *in_use.entry((pool.name.clone(), node)).or_default() += 1;
                }
            }
        }
        for (family, figures) in [
            (&self.in_use, in_use),
            (&self.borrowed, borrowed),
            (&self.blocks, blocks),
        ] {
            for ((ippool, node), value) in figures {
                family
                    .get_or_create(&PoolNodeLabels { ippool, node })
                    .set(value);
            }
        }
    }

    /// The exposition text.
    async fn render(&self) -> Result<String, ApiError> {
        let mut read_at = self.pools_read_at.lock().await;
        self.refresh_pools(&mut read_at).await?;
        self.catch_up();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        Ok(text)
    }
}

/// `GET /metrics`.
pub async fn scrape(State(metrics): State<Arc<Metrics>>) -> Result<Response, ApiError> {
    let text = metrics.render().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Middleware recording every request it wraps: labelled by the route's
/// template (`/v1/handles/{handle}`), never the raw path, so that handle
/// names and addresses do not each make a new series. A request no route
/// matched (the fallback's 404) counts under `route="unmatched"`.
///
/// Add it with `Router::layer`, not `route_layer`: it then runs after
/// routing, where [`MatchedPath`] is set, and wraps the fallback too.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
