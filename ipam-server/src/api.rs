//! The JSON API under `/v1`: one route per engine operation, with request
//! and response types whose field names are the API's stable schema
//! (camelCase; pool specs and the IPAM config in Calico's own field names).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::{AllowedUse, BlockCidr, HandleId, NodeName, PoolName, PoolSpec};
use ipam_service::LocalService;
use ipam_store::{Datastore, Ipam};
use serde::Deserialize;

/// The wire types live in ipam-api, shared with the clients.
pub use ipam_api::*;

pub use crate::body::Body;
use crate::error::ApiError;
use ipam_api::names::{
    check_attributes, check_handle, check_handle_prefix, check_node, check_pool,
};

/// What every handler shares.
pub struct ApiState {
    /// The `/v1` operations on the engine: each handler checks what its
    /// request carries and leaves the rest to this.
    pub service: LocalService,
    /// The engine, for the operations only the server offers.
    pub engine: Arc<Ipam<dyn Datastore>>,
    /// Most addresses of each family one request may ask for.
    pub max_addresses_per_request: u32,
}

/// The state every handler extracts.
pub type Shared = State<Arc<ApiState>>;

/// `Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct Params<T>(pub T);

/// `Path` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct Segment<T>(pub T);

fn invalid(field: &str, value: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidValue, format!("{field}: {value:?} {why}"))
}

// ----- assignment ------------------------------------------------------------

/// Calico's IPAMConfig keeps `maxBlocksPerHost` in an int32 (its CRD says
/// `maximum: 2147483647`); a larger number could be stored on no datastore.
fn check_int32(field: &str, value: u32) -> Result<(), ApiError> {
    if i32::try_from(value).is_err() {
        return Err(invalid(
            field,
            &value.to_string(),
            "is over 2147483647, Calico's maximum (an int32)",
        ));
    }
    Ok(())
}

/// LoadBalancer addresses are claimed for Calico's one virtual owner,
/// `load-balancer` (its blocks are `virtual:load-balancer`): a request for
/// them names that owner, so that its blocks are found again whoever asks.
/// Another node is a well-formed request no pool can serve (422).
fn check_virtual_owner(node: &str, intended_use: Option<AllowedUse>) -> Result<(), ApiError> {
    if intended_use == Some(AllowedUse::LoadBalancer) && node != LOAD_BALANCER_OWNER {
        return Err(ApiError::new(
            ErrorCode::Unsatisfiable,
            format!(
                "node: {node:?} cannot take LoadBalancer addresses: they are held by \
                 {LOAD_BALANCER_OWNER:?}, the virtual owner"
            ),
        ));
    }
    Ok(())
}

/// Assigns addresses. All or nothing: when a family cannot be satisfied in
/// full the answer is 422 and the addresses taken for the other family are
/// released. A block claimed for them stays affine to the node, as in
/// Calico (calico-ipam releases them with ReleaseIPs, which keeps the
/// block: cni-plugin/pkg/ipamplugin/ipam_plugin.go): the node's next
/// allocation uses it.
#[utoipa::path(post, path = "/v1/assign", tag = "assignment", request_body = AssignBody,
    responses(
        (status = 200, description = "Assigned (or already held)", body = AssignResponse),
        (status = 400, description = "Bad request or too many addresses", body = ErrorBody),
        (status = 422, description = "Pools exhausted or no pool for the node", body = ErrorBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn assign(
    State(state): Shared,
    Body(body): Body<AssignBody>,
) -> Result<Json<AssignResponse>, ApiError> {
    check_handle("handle", &body.handle)?;
    check_node("node", &body.node)?;
    check_attributes("attributes", &body.attributes)?;
    if let Some(labels) = &body.node_labels {
        ipam_api::labels::check_labels("nodeLabels", labels)?;
    }
    if let Some(labels) = &body.namespace_labels {
        ipam_api::labels::check_labels("namespaceLabels", labels)?;
    }
    check_virtual_owner(&body.node, body.intended_use)?;
    if body.ipv4 == 0 && body.ipv6 == 0 {
        return Err(ApiError::new(
            ErrorCode::MissingValue,
            "ipv4 and ipv6 are both 0: ask for at least one address",
        ));
    }
    // Per family, so that the OpenAPI document can state the bound as a
    // maximum on each field (a sum it could not).
    for (field, asked) in [("ipv4", body.ipv4), ("ipv6", body.ipv6)] {
        if asked > state.max_addresses_per_request {
            return Err(ApiError::new(
                ErrorCode::TooManyAddresses,
                format!(
                    "{field}: {asked} addresses: at most {} of a family per request",
                    state.max_addresses_per_request
                ),
            ));
        }
    }
    check_int32("maxBlocksPerHost", body.max_blocks_per_host)?;
    Ok(Json(state.service.assign(body).await?))
}

/// Assigns one chosen address (a pod's `IP=` or an annotation).
#[utoipa::path(post, path = "/v1/assign-ip", tag = "assignment", request_body = AssignIpBody,
    responses(
        (status = 200, description = "Assigned (or already this handle's)", body = AssignIpResponse),
        (status = 400, description = "Not in any pool, or bad request", body = ErrorBody),
        (status = 409, description = "Held by another handle", body = ErrorBody),
        (status = 422, description = "The node may not take it: its block is another node's under strict affinity, or the node's block limit is reached (`unsatisfiable`)", body = ErrorBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn assign_ip(
    State(state): Shared,
    Body(body): Body<AssignIpBody>,
) -> Result<Json<AssignIpResponse>, ApiError> {
    check_handle("handle", &body.handle)?;
    check_node("node", &body.node)?;
    check_attributes("attributes", &body.attributes)?;
    check_virtual_owner(&body.node, body.intended_use)?;
    Ok(Json(state.service.assign_ip(body).await?))
}

// ----- release ---------------------------------------------------------------

/// Releases addresses. Free ones are reported, not refused.
#[utoipa::path(post, path = "/v1/release", tag = "release", request_body = ReleaseBody,
    responses(
        (status = 200, description = "Released", body = ReleaseResponse),
        (status = 400, description = "Bad request or too many addresses", body = ErrorBody),
        (status = 409, description = "An expectation (handle, sequence number) no longer holds; nothing released", body = ErrorBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn release(
    State(state): Shared,
    Body(body): Body<ReleaseBody>,
) -> Result<Json<ReleaseResponse>, ApiError> {
    let count = body.addresses.len();
    if count as u64 > u64::from(state.max_addresses_per_request) {
        return Err(ApiError::new(
            ErrorCode::TooManyAddresses,
            format!(
                "addresses: {count} given, at most {} per request",
                state.max_addresses_per_request
            ),
        ));
    }
    for (index, item) in body.addresses.iter().enumerate() {
        if let Some(handle) = &item.handle {
            check_handle(&format!("addresses[{index}].handle"), handle)?;
        }
    }
    Ok(Json(state.service.release(body).await?))
}

/// Releases every address of a handle and the handle. An unknown handle
/// releases nothing and is not an error.
#[utoipa::path(delete, path = "/v1/handles/{handle}", tag = "release",
    params(("handle" = String, Path, description = "The handle id")),
    responses(
        (status = 200, description = "Released", body = ReleaseResponse),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn release_handle(
    State(state): Shared,
    Segment(handle): Segment<String>,
) -> Result<Json<ReleaseResponse>, ApiError> {
    check_handle("handle", &handle)?;
    let handle = HandleId::new(handle);
    Ok(Json(state.service.release_handle(&handle).await?))
}

/// The addresses a handle holds.
#[utoipa::path(get, path = "/v1/handles/{handle}", tag = "queries",
    params(("handle" = String, Path, description = "The handle id")),
    responses(
        (status = 200, description = "Its addresses", body = HandleAddresses),
        (status = 404, description = "The handle holds no address", body = ErrorBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn handle_addresses(
    State(state): Shared,
    Segment(handle): Segment<String>,
) -> Result<Json<HandleAddresses>, ApiError> {
    check_handle("handle", &handle)?;
    match state
        .service
        .handle_addresses(&HandleId::new(handle.as_str()))
        .await?
    {
        Some(held) => Ok(Json(held)),
        None => Err(ApiError::new(
            ErrorCode::HandleNotFound,
            format!("handle {handle:?} holds no address"),
        )),
    }
}

/// Query of `GET /v1/handles`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HandlesQuery {
    /// The node the addresses were recorded for (their `node` attribute).
    pub node: String,
    /// Only handles whose id starts with this (`k8s-pod-network.`).
    #[serde(default)]
    #[param(required = false)]
    pub prefix: String,
}

/// The handles recorded for a node, read fresh: what a CNI GC of that
/// node's network compares with the runtime's valid attachments.
#[utoipa::path(get, path = "/v1/handles", tag = "queries", params(HandlesQuery),
    responses(
        (status = 200, description = "The node's handles, by id", body = Vec<HandleAddresses>),
        (status = 400, description = "No node given", body = ErrorBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn handles_on_node(
    State(state): Shared,
    Params(query): Params<HandlesQuery>,
) -> Result<Json<Vec<HandleAddresses>>, ApiError> {
    check_node("node", &query.node)?;
    check_handle_prefix("prefix", &query.prefix)?;
    Ok(Json(
        state
            .service
            .handles_on_node(&NodeName::new(query.node), &query.prefix)
            .await?,
    ))
}

// ----- queries ---------------------------------------------------------------

/// Who holds an address, read fresh.
#[utoipa::path(get, path = "/v1/addresses/{address}", tag = "queries",
    params(("address" = String, Path, description = "An IPv4 or IPv6 address")),
    responses(
        (status = 200, description = "Its state", body = AddressInfo),
        (status = 400, description = "Not an address", body = ErrorBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn address_info(
    State(state): Shared,
    Segment(address): Segment<String>,
) -> Result<Json<AddressInfo>, ApiError> {
    let ip: IpAddr = address
        .parse()
        .map_err(|_| invalid("address", &address, "is not an IPv4 or IPv6 address"))?;
    Ok(Json(state.service.address_with_attribute(ip).await?.0))
}

// ----- pools -----------------------------------------------------------------

/// A pool from a request: its name checked, its spec free of fields the
/// API does not know (a pool's fields from a newer Calico are kept by
/// [`update_pool`], never taken from a client).
fn check_pool_body(name: &str, spec: &PoolSpec) -> Result<(), ApiError> {
    check_pool("name", name)?;
    if let Some(field) = spec.unknown.keys().next() {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("spec: unknown field `{field}`"),
        ));
    }
    Ok(())
}

/// Every pool, by name.
#[utoipa::path(get, path = "/v1/pools", tag = "pools",
    responses(
        (status = 200, description = "The pools", body = Vec<PoolBody>),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn list_pools(State(state): Shared) -> Result<Json<Vec<PoolBody>>, ApiError> {
    Ok(Json(state.service.pools().await?))
}

/// One pool.
#[utoipa::path(get, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "The pool's name")),
    responses(
        (status = 200, description = "The pool", body = PoolBody),
        (status = 404, description = "No such pool", body = ErrorBody),
    ))]
pub async fn get_pool(
    State(state): Shared,
    Segment(name): Segment<String>,
) -> Result<Json<PoolBody>, ApiError> {
    check_pool("name", &name)?;
    let pools = state.service.pools().await?;
    pools
        .into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::PoolNotFound, format!("no pool named {name:?}")))
}

/// Creates a pool; refused when it overlaps another or is invalid.
#[utoipa::path(post, path = "/v1/pools", tag = "pools", request_body = PoolBody,
    responses(
        (status = 201, description = "Created", body = PoolBody),
        (status = 400, description = "Invalid CIDR, block size or selector", body = ErrorBody),
        (status = 409, description = "Overlaps a pool, or the name is taken", body = ErrorBody),
    ))]
pub async fn create_pool(
    State(state): Shared,
    Body(body): Body<PoolBody>,
) -> Result<(StatusCode, Json<PoolBody>), ApiError> {
    check_pool_body(&body.name, &body.spec)?;
    Ok((
        StatusCode::CREATED,
        Json(state.service.create_pool(body).await?),
    ))
}

/// Replaces a pool's spec (its CIDR and block size cannot change).
#[utoipa::path(put, path = "/v1/pools/{name}", tag = "pools", request_body = PoolSpecBody,
    params(("name" = String, Path, description = "The pool's name")),
    responses(
        (status = 200, description = "Updated", body = PoolBody),
        (status = 400, description = "Invalid spec, or a change of cidr or blockSize", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "Changed meanwhile", body = ErrorBody),
    ))]
pub async fn update_pool(
    State(state): Shared,
    Segment(name): Segment<String>,
    Body(body): Body<PoolSpecBody>,
) -> Result<Json<PoolBody>, ApiError> {
    check_pool_body(&name, &body.spec)?;
    Ok(Json(
        state
            .service
            .update_pool(&PoolName::new(name), body)
            .await?,
    ))
}

/// Deletes a pool as Calico does: disabled, its affinities released (empty
/// blocks deleted), then removed. Addresses in use stay allocated.
#[utoipa::path(delete, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "The pool's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pool", body = ErrorBody),
    ))]
pub async fn delete_pool(
    State(state): Shared,
    Segment(name): Segment<String>,
) -> Result<StatusCode, ApiError> {
    check_pool("name", &name)?;
    state.service.delete_pool(&PoolName::new(name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- config ----------------------------------------------------------------

/// The IPAM configuration.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses(
        (status = 200, description = "The configuration", body = ConfigBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn get_config(State(state): Shared) -> Result<Json<ConfigBody>, ApiError> {
    Ok(Json(state.service.config().await?))
}

/// Replaces the IPAM configuration (Calico's rules: strictAffinity and
/// autoAllocateBlocks not both false; maxBlocksPerHost needs strictAffinity;
/// ipCooldownSeconds at most 1200).
#[utoipa::path(put, path = "/v1/config", tag = "config", request_body = ConfigBody,
    responses(
        (status = 200, description = "Stored", body = ConfigBody),
        (status = 400, description = "Breaks Calico's rules", body = ErrorBody),
    ))]
pub async fn set_config(
    State(state): Shared,
    Body(body): Body<ConfigBody>,
) -> Result<Json<ConfigBody>, ApiError> {
    check_int32("maxBlocksPerHost", body.max_blocks_per_host)?;
    Ok(Json(state.service.set_config(body).await?))
}

// ----- nodes and affinities ----------------------------------------------------

/// The block a `cidr` query names. Host bits are dropped, as Calico drops
/// them from a pool's CIDR (`10.0.0.70/26` names the block
/// `10.0.0.64/26`); the prefix must be a block's (IPv4 /20 to /32, IPv6
/// /116 to /128, ipam-core's `BlockCidr`).
fn block_cidr(text: &str) -> Result<BlockCidr, ApiError> {
    let net: ipnet::IpNet = text
        .parse()
        .map_err(|_| invalid("cidr", text, "is not a CIDR"))?;
    BlockCidr::new(net.trunc())
        .map_err(|e| invalid("cidr", text, format!("is not a block CIDR: {e}")))
}

/// A node's block affinities.
#[utoipa::path(get, path = "/v1/nodes/{node}/affinities", tag = "nodes",
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "Its affinities, in block order", body = Vec<AffinityBody>),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn node_affinities(
    State(state): Shared,
    Segment(node): Segment<String>,
) -> Result<Json<Vec<AffinityBody>>, ApiError> {
    check_node("node", &node)?;
    let affinities = state.engine.affinities_of(&node).await?;
    Ok(Json(
        affinities
            .into_iter()
            .map(|a| AffinityBody {
                cidr: a.cidr.net(),
                state: a.state.as_str().to_string(),
            })
            .collect(),
    ))
}

/// Every affinity of every node, read fresh: with the blocks' owners, what
/// a check of nodes that no longer exist needs.
#[utoipa::path(get, path = "/v1/affinities", tag = "nodes",
    responses(
        (status = 200, description = "Every affinity, by node and block", body = Vec<AffinityListItem>),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn list_affinities(
    State(state): Shared,
) -> Result<Json<Vec<AffinityListItem>>, ApiError> {
    Ok(Json(state.service.affinities().await?))
}

/// Most blocks one claim may cover, as a power of two: a /16 of /26
/// blocks.
const MAX_CLAIM_BITS: u8 = 10;

/// Claims every block of a CIDR for a node (Calico's ClaimAffinity), at
/// most 1024 blocks at once.
#[utoipa::path(post, path = "/v1/nodes/{node}/affinities", tag = "nodes", request_body = ClaimBody,
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "Claimed", body = ClaimResponse),
        (status = 400, description = "Not whole blocks of one pool (`claim_outside_pool`, `cidr_not_aligned`), or more than 1024 of them (`invalid_value`)", body = ErrorBody),
    ))]
pub async fn claim_affinity(
    State(state): Shared,
    Segment(node): Segment<String>,
    Body(body): Body<ClaimBody>,
) -> Result<Json<ClaimResponse>, ApiError> {
    check_node("node", &node)?;
    // The claim visits every block of the range: a /64 of /122 blocks
    // would be 2^58 of them.
    let pools = state.engine.pools().await?;
    if let Some(pool) = pools.iter().find(|p| p.cidr().contains(&body.cidr)) {
        let bits = pool.block_size().saturating_sub(body.cidr.prefix_len());
        if bits > MAX_CLAIM_BITS {
            return Err(invalid(
                "cidr",
                &body.cidr.to_string(),
                format!(
                    "covers 2^{bits} blocks of pool {}: claim at most {} at once",
                    pool.name(),
                    1u32 << MAX_CLAIM_BITS
                ),
            ));
        }
    }
    let claim = state.engine.claim_affinity(&node, body.cidr).await?;
    Ok(Json(ClaimResponse {
        claimed: claim.claimed.iter().map(BlockCidr::net).collect(),
        failed: claim.failed.iter().map(BlockCidr::net).collect(),
    }))
}

/// Query of `DELETE /v1/nodes/{node}/affinities`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseAffinityQuery {
    /// The block.
    pub cidr: String,
    /// Refuse when the block still has addresses in use.
    #[serde(default)]
    #[param(required = false)]
    pub require_empty: bool,
}

/// Releases a node's affinity for one block.
#[utoipa::path(delete, path = "/v1/nodes/{node}/affinities", tag = "nodes",
    params(("node" = String, Path, description = "The node"), ReleaseAffinityQuery),
    responses(
        (status = 204, description = "Released"),
        (status = 400, description = "Not a block CIDR", body = ErrorBody),
        (status = 404, description = "The node has no such affinity", body = ErrorBody),
        (status = 409, description = "requireEmpty and the block is in use", body = ErrorBody),
    ))]
pub async fn release_affinity(
    State(state): Shared,
    Segment(node): Segment<String>,
    Params(query): Params<ReleaseAffinityQuery>,
) -> Result<StatusCode, ApiError> {
    check_node("node", &node)?;
    let cidr = block_cidr(&query.cidr)?;
    state
        .engine
        .release_affinity(&node, cidr, query.require_empty)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Releases every affinity of a node that is gone.
#[utoipa::path(delete, path = "/v1/nodes/{node}", tag = "nodes",
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "Released", body = ReleaseNodeResponse),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn release_node(
    State(state): Shared,
    Segment(node): Segment<String>,
) -> Result<Json<ReleaseNodeResponse>, ApiError> {
    check_node("node", &node)?;
    let blocks = state.engine.release_node(&node).await?;
    Ok(Json(ReleaseNodeResponse {
        node,
        blocks: blocks.iter().map(BlockCidr::net).collect(),
    }))
}

// ----- usage -----------------------------------------------------------------

/// Per-pool and per-block usage, read fresh.
#[utoipa::path(get, path = "/v1/usage", tag = "queries",
    responses(
        (status = 200, description = "Usage", body = UsageResponse),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn usage_summary(State(state): Shared) -> Result<Json<UsageResponse>, ApiError> {
    Ok(Json(state.service.usage().await?))
}

/// Query of `GET /v1/blocks`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BlockQuery {
    /// The block's CIDR (`10.0.0.64/26`).
    pub cidr: String,
}

/// One block and its allocations, read fresh.
#[utoipa::path(get, path = "/v1/blocks", tag = "queries", params(BlockQuery),
    responses(
        (status = 200, description = "The block", body = BlockDetail),
        (status = 400, description = "Not a block CIDR", body = ErrorBody),
        (status = 404, description = "No such block", body = ErrorBody),
    ))]
pub async fn block_detail(
    State(state): Shared,
    Params(query): Params<BlockQuery>,
) -> Result<Json<BlockDetail>, ApiError> {
    let cidr = block_cidr(&query.cidr)?;
    state
        .service
        .block(cidr)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::BlockNotFound, format!("no block {cidr}")))
}

// ----- check -----------------------------------------------------------------

/// Walks every block, handle and affinity and reports what disagrees
/// (Calico's `ipam check`). The server knows no pods or nodes, so those
/// checks are listed as skipped.
#[utoipa::path(get, path = "/v1/check", tag = "queries",
    responses(
        (status = 200, description = "The report", body = CheckResponse),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn check_report(State(state): Shared) -> Result<Json<CheckResponse>, ApiError> {
    Ok(Json(state.service.check().await?))
}
