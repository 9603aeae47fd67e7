//! `POST /v1/pool-splits`: calicoctl's `ipam split` over HTTP. The engine
//! does the split (ipam-store's `engine/split.rs` says why it is atomic
//! without Calico's datastore lock); this checks what the body carries.

use axum::extract::State;
use axum::Json;
use ipam_api::names::check_pool;
use ipam_api::{ErrorBody, SplitBody, SplitResponse};

use crate::api::{ApiState, Body};
use crate::error::ApiError;

/// Splits a pool into 2, 4, 8, ... equal child pools named
/// `split-<pool>-<i>`, with the pool's settings, enabled (as calicoctl
/// makes them); its blocks, affinities and addresses stay, each block now
/// in one child. Name the pool by `name` or by exact `cidr`, not both.
/// Running a split that was cut short again finishes it.
#[utoipa::path(post, path = "/v1/pool-splits", tag = "pools", request_body = SplitBody,
    responses(
        (status = 200, description = "Split: the pool as it was, and its children", body = SplitResponse),
        (status = 400, description = "parts is not a power of two from 2 to 1024, the children would be smaller than a block or than an address, neither or both of name and cidr", body = ErrorBody),
        (status = 404, description = "No pool has that name, or exactly that CIDR", body = ErrorBody),
        (status = 409, description = "Another pool overlaps it, a child's name is taken, or a split into another number of parts was begun", body = ErrorBody),
        (status = 422, description = "A block of another size would straddle two children", body = ErrorBody),
    ))]
pub async fn split_pool(
    State(state): State<std::sync::Arc<ApiState>>,
    Body(body): Body<SplitBody>,
) -> Result<Json<SplitResponse>, ApiError> {
    if let Some(name) = &body.name {
        check_pool("name", name)?;
    }
    let target = body
        .target()
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    Ok(Json(state.service.split_pool(&target, body.parts).await?))
}
