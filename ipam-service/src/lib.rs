//! The `/v1` operations, written once. [`IpamService`] is what ipam-server's
//! handlers, the CNI plugin and ipamctl call; it is answered either by the
//! engine on a datastore ([`LocalService`], what the server runs and what
//! the plugin's and ipamctl's direct modes run) or by a running ipam-server
//! ([`ipam_client::Client`]). Both take and give ipam-api's wire types and
//! fail with a [`ServiceError`] carrying the API's [`ErrorCode`], so the
//! two answer one request the same way, and the translation of a request
//! into the engine's terms exists only in [`LocalService`].
//!
//! [`open`] opens a datastore from [`DatastoreSettings`], the one
//! description of where state lives that the three binaries share.
//!
//! What this crate does not do: check names and sizes a request carries.
//! That is the HTTP boundary's job (ipam-server refuses what Calico's
//! Kubernetes datastore could not store); the direct modes build their
//! requests from their own validated configuration.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod annotations;
mod datastore;
mod error;
pub mod labels;
mod local;
mod remote;

use std::net::IpAddr;

use async_trait::async_trait;
use ipam_api::labels::NodeLabelsResponse;
use ipam_api::{
    AddressInfo, AffinityListItem, AssignBody, AssignIpBody, AssignIpResponse, AssignResponse,
    BlockDetail, CheckResponse, ConfigBody, HandleAddresses, PoolBody, PoolSpecBody, ReleaseBody,
    ReleaseResponse, ReservationBody, SplitBody, SplitResponse, UsageResponse,
};
use ipam_core::{BlockCidr, HandleId, NodeName, PoolName};
use ipam_store::Labels;

pub use datastore::{open, DatastoreSettings, Opened};
pub use error::{code_of, code_of_store, ServiceError};
pub use ipam_api::ErrorCode;
pub use local::LocalService;

/// The operations of ipam-server's `/v1` API that more than one of the
/// server, the CNI plugin and ipamctl use, each named after its route.
#[async_trait]
pub trait IpamService: Send + Sync {
    /// `POST /v1/assign`: all or nothing; a retried request gets the
    /// handle's addresses back.
    async fn assign(&self, body: AssignBody) -> Result<AssignResponse, ServiceError>;

    /// `POST /v1/assign-ip`: one chosen address.
    async fn assign_ip(&self, body: AssignIpBody) -> Result<AssignIpResponse, ServiceError>;

    /// `POST /v1/release`: free addresses are reported, not refused.
    async fn release(&self, body: ReleaseBody) -> Result<ReleaseResponse, ServiceError>;

    /// `DELETE /v1/handles/{handle}`: an unknown handle releases nothing.
    async fn release_handle(&self, handle: &HandleId) -> Result<ReleaseResponse, ServiceError>;

    /// `GET /v1/handles/{handle}`: `None` when the handle holds nothing.
    async fn handle_addresses(
        &self,
        handle: &HandleId,
    ) -> Result<Option<HandleAddresses>, ServiceError>;

    /// `GET /v1/handles?node=&prefix=`: the handles recorded for a node.
    async fn handles_on_node(
        &self,
        node: &NodeName,
        prefix: &str,
    ) -> Result<Vec<HandleAddresses>, ServiceError>;

    /// `GET /v1/addresses/{address}`: who holds an address.
    async fn address(&self, address: IpAddr) -> Result<AddressInfo, ServiceError>;

    /// `GET /v1/pools`: every pool, by name.
    async fn pools(&self) -> Result<Vec<PoolBody>, ServiceError>;

    /// `POST /v1/pools`.
    async fn create_pool(&self, pool: PoolBody) -> Result<PoolBody, ServiceError>;

    /// `PUT /v1/pools/{name}`: fields a newer Calico stored are kept.
    async fn update_pool(
        &self,
        name: &PoolName,
        spec: PoolSpecBody,
    ) -> Result<PoolBody, ServiceError>;

    /// `DELETE /v1/pools/{name}`.
    async fn delete_pool(&self, name: &PoolName) -> Result<(), ServiceError>;

    /// `GET /v1/reservations`: every IP reservation, by name.
    async fn reservations(&self) -> Result<Vec<ReservationBody>, ServiceError>;

    /// `GET /v1/reservations/{name}`: `None` when there is none.
    async fn reservation(&self, name: &str) -> Result<Option<ReservationBody>, ServiceError>;

    /// `POST /v1/reservations`: the reservation as stored (a bare address
    /// as /32 or /128). Its entries are checked here, being parsed here
    /// ([`ReservationBody::check`]), in both modes.
    async fn create_reservation(
        &self,
        reservation: ReservationBody,
    ) -> Result<ReservationBody, ServiceError>;

    /// `DELETE /v1/reservations/{name}`.
    async fn delete_reservation(&self, name: &str) -> Result<(), ServiceError>;

    /// `POST /v1/pool-splits`: the pool replaced by 2^k child pools that
    /// keep its blocks, affinities and addresses (calicoctl `ipam split`,
    /// atomic against concurrent allocations).
    async fn split_pool(&self, body: SplitBody) -> Result<SplitResponse, ServiceError>;

    /// `GET /v1/config`.
    async fn config(&self) -> Result<ConfigBody, ServiceError>;

    /// `PUT /v1/config`: fields a newer Calico stored are kept.
    async fn set_config(&self, config: ConfigBody) -> Result<ConfigBody, ServiceError>;

    /// `GET /v1/usage`.
    async fn usage(&self) -> Result<UsageResponse, ServiceError>;

    /// `GET /v1/blocks?cidr=`: `None` when there is no such block.
    async fn block(&self, cidr: BlockCidr) -> Result<Option<BlockDetail>, ServiceError>;

    /// `GET /v1/affinities`.
    async fn affinities(&self) -> Result<Vec<AffinityListItem>, ServiceError>;

    /// `GET /v1/check`: the checks that need no pods or nodes.
    async fn check(&self) -> Result<CheckResponse, ServiceError>;

    /// Whether an assignment could be served now (`GET /readyz`; on a
    /// datastore, one read of the config).
    async fn ready(&self) -> Result<(), ServiceError>;

    /// `GET /v1/nodes/{node}/labels`: the labels assignments for the node
    /// read, and where they come from.
    async fn node_labels(&self, node: &NodeName) -> Result<NodeLabelsResponse, ServiceError>;

    /// `PUT /v1/nodes/{node}/labels`: replaces them, where the IPAM keeps
    /// them (the embedded and memory stores).
    async fn set_node_labels(
        &self,
        node: &NodeName,
        labels: Labels,
    ) -> Result<NodeLabelsResponse, ServiceError>;
}
