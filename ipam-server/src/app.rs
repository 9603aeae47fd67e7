//! The HTTP application: routes, the bearer-token check, body and time
//! limits, health probes, the usage page and the OpenAPI document.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ipam_store::{Datastore, Ipam, IpamError, Key, StoreError};
use subtle::ConstantTimeEq;

use crate::api::{self, ApiState};
use crate::connections::ConnectionMetrics;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::gc::GcMetrics;
use crate::metrics::{self, Metrics};
use crate::ratelimit::{self, Limiter, RateLimit};
use crate::{node_labels, openapi, page, reservations, split};

/// How the application is set up. Its `Debug` leaves the token out, so
/// that logging the configuration never leaks the secret.
#[derive(Clone)]
pub struct AppConfig {
    /// The bearer token clients must send, when one is required.
    pub token: Option<String>,
    /// Most addresses of each family one request may ask for.
    pub max_addresses_per_request: u32,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may run.
    pub request_timeout: Duration,
    /// Requests a second each client may make on `/v1`, when limited.
    pub rate_limit: Option<RateLimit>,
    /// The garbage collector's figures, served on `/metrics`, when it runs.
    pub gc_metrics: Option<Arc<GcMetrics>>,
    /// The connection counts, served on `/metrics`, when the server counts
    /// them ([`crate::connections`]).
    pub connection_metrics: Option<Arc<ConnectionMetrics>>,
    /// Where assignments read node and namespace labels: the datastore's
    /// own ([`crate::server`] sets it); absent, labels set through the API
    /// are kept in memory.
    pub labels: Option<Arc<dyn ipam_service::labels::LabelSource>>,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a field added later must be listed here.
        let AppConfig {
            token,
            max_addresses_per_request,
            max_body_bytes,
            request_timeout,
            rate_limit,
            gc_metrics,
            connection_metrics,
            labels,
        } = self;
        f.debug_struct("AppConfig")
            .field("token", &token.as_ref().map(|_| "<redacted>"))
            .field("max_addresses_per_request", max_addresses_per_request)
            .field("max_body_bytes", max_body_bytes)
            .field("request_timeout", request_timeout)
            .field("rate_limit", rate_limit)
            .field("gc_metrics", &gc_metrics.is_some())
            .field("connection_metrics", &connection_metrics.is_some())
            .field("labels", &labels.as_ref().map(|l| l.origin()))
            .finish()
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            token: None,
            max_addresses_per_request: 128,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
            rate_limit: None,
            gc_metrics: None,
            connection_metrics: None,
            labels: None,
        }
    }
}

/// Builds the application over an engine.
pub fn router(engine: Arc<Ipam<dyn Datastore>>, config: AppConfig) -> Router {
    let metrics = Arc::new(Metrics::new(
        engine.clone(),
        config.gc_metrics.as_deref(),
        config.connection_metrics,
    ));
    let state = Arc::new(ApiState {
        service: match config.labels {
            Some(labels) => ipam_service::LocalService::with_labels(engine.clone(), labels),
            None => ipam_service::LocalService::new(engine.clone()),
        },
        engine,
        max_addresses_per_request: config.max_addresses_per_request,
    });
    let v1 = Router::new()
        .route("/v1/assign", post(api::assign))
        .route("/v1/assign-ip", post(api::assign_ip))
        .route("/v1/release", post(api::release))
        .route(
            "/v1/handles/{handle}",
            get(api::handle_addresses).delete(api::release_handle),
        )
        .route("/v1/handles", get(api::handles_on_node))
        .route("/v1/addresses/{address}", get(api::address_info))
        .route("/v1/pools", get(api::list_pools).post(api::create_pool))
        .route(
            "/v1/pools/{name}",
            get(api::get_pool)
                .put(api::update_pool)
                .delete(api::delete_pool),
        )
        .route(
            "/v1/reservations",
            get(reservations::list_reservations).post(reservations::create_reservation),
        )
        .route(
            "/v1/reservations/{name}",
            get(reservations::get_reservation).delete(reservations::delete_reservation),
        )
        .route("/v1/pool-splits", post(split::split_pool))
        .route("/v1/config", get(api::get_config).put(api::set_config))
        .route(
            "/v1/nodes/{node}/affinities",
            get(api::node_affinities)
                .post(api::claim_affinity)
                .delete(api::release_affinity),
        )
        .route(
            "/v1/nodes/{node}/labels",
            get(node_labels::get_node_labels).put(node_labels::set_node_labels),
        )
        .route("/v1/nodes/{node}", axum::routing::delete(api::release_node))
        .route("/v1/affinities", get(api::list_affinities))
        .route("/v1/usage", get(api::usage_summary))
        .route("/v1/blocks", get(api::block_detail))
        .route("/v1/check", get(api::check_report))
        .route(
            "/openapi.json",
            get(serve_openapi).with_state(config.token.is_some()),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state.clone())
        // Behind the token like the API: Prometheus sends one when its
        // scrape config has `authorization: {credentials_file: ...}`.
        .route("/metrics", get(metrics::scrape).with_state(metrics.clone()));
    let timeout = config.request_timeout;
    let token = config.token.map(Arc::new);
    // Probes stay open: kubelet sends no token.
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    // The usage page stays open too: a browser cannot add the token to a
    // page load, and the page holds no data. Its script reads /v1, which
    // keeps the token check, and explains a 401 when it gets one.
    let page = Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::app_js))
        .route("/style.css", get(page::style_css));
    let v1 = v1.layer(middleware::from_fn_with_state(token, require_token));
    // Outside the token check: a client flooding without the token is
    // slowed down too.
    let v1 = match config.rate_limit {
        Some(limit) => v1.layer(middleware::from_fn_with_state(
            Arc::new(Limiter::new(limit)),
            ratelimit::limit_rate,
        )),
        None => v1,
    };
    v1.merge(probes)
        .merge(page)
        // After every route is registered: it applies to those present.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, limit_time))
        // Before the time limit, the token check and the handlers: a body
        // announced too long is refused before a byte of it is read.
        .layer(middleware::from_fn_with_state(
            config.max_body_bytes,
            refuse_long_bodies,
        ))
        // Outermost, so that requests cut short by the time limit or
        // refused for want of the token are counted too.
        .layer(middleware::from_fn_with_state(metrics, metrics::record))
}

/// The document of this server: with the token's security requirement
/// when it has a token.
async fn serve_openapi(State(with_token): State<bool>) -> Response {
    // Built once: refining it walks the whole document.
    static GUARDED: LazyLock<String> = LazyLock::new(openapi::openapi_json);
    static OPEN: LazyLock<String> = LazyLock::new(openapi::open_openapi_json);
    let document = if with_token { &GUARDED } else { &OPEN };
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str(),
    )
        .into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NoSuchRoute,
        format!(
            "{} {} is not a route of this API (see /openapi.json)",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Process up (kubelet's liveness probe; open without the token).
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, description = "Up", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Datastore reachable: the IPAM config can be read, absent counting
/// (kubelet's readiness probe; open without the token).
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "The datastore is unreachable (`datastore_unavailable`)", body = ErrorBody),
        (status = 500, description = "The stored config cannot be read (`datastore_invalid`)", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    match state.engine.store().get(&Key::Config).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => ApiError::from(IpamError::Store(e)).into_response(),
    }
}

async fn require_token(
    State(token): State<Option<Arc<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    // Compared in constant time, so the answer's timing tells nothing of
    // how much of a guess was right.
    let matches = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
    if matches {
        next.run(request).await
    } else {
        ApiError::new(
            ErrorCode::Unauthorized,
            "send the server's token as `Authorization: Bearer <token>`",
        )
        .into_response()
    }
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme
/// is case-insensitive and separated by one or more spaces (RFC 9110
/// §11.1, §11.4; RFC 6750 §2.1), so `bearer x` and `BEARER  x` are both the
/// token `x`.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_matches(' ').split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

/// The answer to a method a route does not have: a JSON error like every
/// other (axum's own 405 has no body); axum adds the `Allow` header.
async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not a method of {} (the Allow header lists those it has)",
            request.method(),
            request.uri().path()
        ),
    )
}

/// 413 for a request whose `Content-Length` is over the body limit,
/// without reading the body (which the client might take minutes to send).
/// A body without a length (chunked) is cut at the limit as it is read.
async fn refuse_long_bodies(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(length) if length > limit as u64 => ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("Content-Length {length}: the body limit is {limit} bytes (--max-body-bytes)"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

async fn limit_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "the request took longer than {} s; the datastore may be slow or unreachable",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER   t0k", " bEaReR t0k "] {
            assert_eq!(bearer_credentials(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic t0k", "Bearert0k", "t0k", "Bearer", ""] {
            assert_eq!(bearer_credentials(value), None, "{value:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let config = AppConfig {
            token: Some("s3cret-token".to_string()),
            ..AppConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("token: Some(\"<redacted>\")"), "{shown}");
        let none = format!("{:?}", AppConfig::default());
        assert!(none.contains("token: None"), "{none}");
    }
}
