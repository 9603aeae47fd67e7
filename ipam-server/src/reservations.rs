//! `/v1/reservations`: Calico's IPReservations (addresses automatic
//! assignment never hands out) created, listed, read and deleted, like
//! pools. The rules a reservation keeps are ipam-api's
//! ([`ipam_api::reservations`], after Calico's validator); the object is
//! stored as Calico stores it on each datastore (an IPReservation custom
//! resource on Kubernetes, Calico's key and value on etcd).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ipam_api::names::check_object_name;
use ipam_api::reservations::ReservationError;
use ipam_api::{ErrorBody, ErrorCode, ReservationBody};

use crate::api::{Body, Segment, Shared};
use crate::error::ApiError;

impl From<ReservationError> for ApiError {
    fn from(error: ReservationError) -> ApiError {
        ApiError::new(ErrorCode::from(&error), error.to_string())
    }
}

/// Every IP reservation, by name.
#[utoipa::path(get, path = "/v1/reservations", tag = "reservations",
    responses(
        (status = 200, description = "The reservations", body = Vec<ReservationBody>),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn list_reservations(
    State(state): Shared,
) -> Result<Json<Vec<ReservationBody>>, ApiError> {
    Ok(Json(state.service.reservations().await?))
}

/// One IP reservation.
#[utoipa::path(get, path = "/v1/reservations/{name}", tag = "reservations",
    params(("name" = String, Path, description = "The reservation's name")),
    responses(
        (status = 200, description = "The reservation", body = ReservationBody),
        (status = 404, description = "No such reservation (`reservation_not_found`)", body = ErrorBody),
    ))]
pub async fn get_reservation(
    State(state): Shared,
    Segment(name): Segment<String>,
) -> Result<Json<ReservationBody>, ApiError> {
    check_object_name("name", &name)?;
    state
        .service
        .reservation(&name)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ReservationNotFound,
                format!("no IP reservation named {name:?}"),
            )
        })
}

/// Creates an IP reservation: from then on automatic assignment hands out
/// none of its addresses (those in use stay). Entries are CIDRs or bare
/// addresses, host bits allowed (Calico's `cidrs` rule); a bare address is
/// stored as /32 or /128.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations", request_body = ReservationBody,
    responses(
        (status = 201, description = "Created, as stored", body = ReservationBody),
        (status = 400, description = "An entry is neither a CIDR nor an address (`invalid_cidr`), repeats an earlier one's range, or there are too many (`invalid_value`); the message names the entry and its place", body = ErrorBody),
        (status = 409, description = "The name is taken (`already_exists`); the reservation there is unchanged", body = ErrorBody),
    ))]
pub async fn create_reservation(
    State(state): Shared,
    Body(body): Body<ReservationBody>,
) -> Result<(StatusCode, Json<ReservationBody>), ApiError> {
    let spec = body.check()?;
    let stored = state.service.create_reservation(&body.name, spec).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Deletes an IP reservation: its addresses may be handed out again.
#[utoipa::path(delete, path = "/v1/reservations/{name}", tag = "reservations",
    params(("name" = String, Path, description = "The reservation's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such reservation (`not_found`)", body = ErrorBody),
    ))]
pub async fn delete_reservation(
    State(state): Shared,
    Segment(name): Segment<String>,
) -> Result<StatusCode, ApiError> {
    check_object_name("name", &name)?;
    state.service.delete_reservation(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
