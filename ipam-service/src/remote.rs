//! The `/v1` operations through a running ipam-server.

use std::net::IpAddr;

use async_trait::async_trait;
use ipam_api::labels::{NodeLabelsBody, NodeLabelsResponse};
use ipam_api::{
    AddressInfo, AffinityListItem, AssignBody, AssignIpBody, AssignIpResponse, AssignResponse,
    BlockDetail, CheckResponse, ConfigBody, HandleAddresses, PoolBody, PoolSpecBody, ReleaseBody,
    ReleaseResponse, ReservationBody, SplitBody, SplitResponse, UsageResponse,
};
use ipam_client::Client;
use ipam_core::{BlockCidr, HandleId, NodeName, PoolName};
use ipam_store::Labels;

use crate::{IpamService, ServiceError};

#[async_trait]
impl IpamService for Client {
    async fn assign(&self, body: AssignBody) -> Result<AssignResponse, ServiceError> {
        Ok(Client::assign(self, &body).await?)
    }

    async fn assign_ip(&self, body: AssignIpBody) -> Result<AssignIpResponse, ServiceError> {
        Ok(Client::assign_ip(self, &body).await?)
    }

    async fn release(&self, body: ReleaseBody) -> Result<ReleaseResponse, ServiceError> {
        Ok(Client::release(self, &body).await?)
    }

    async fn release_handle(&self, handle: &HandleId) -> Result<ReleaseResponse, ServiceError> {
        Ok(Client::release_handle(self, handle).await?)
    }

    async fn handle_addresses(
        &self,
        handle: &HandleId,
    ) -> Result<Option<HandleAddresses>, ServiceError> {
        Ok(Client::handle_addresses(self, handle).await?)
    }

    async fn handles_on_node(
        &self,
        node: &NodeName,
        prefix: &str,
    ) -> Result<Vec<HandleAddresses>, ServiceError> {
        Ok(Client::handles_on_node(self, node, prefix).await?)
    }

    async fn address(&self, address: IpAddr) -> Result<AddressInfo, ServiceError> {
        Ok(Client::address(self, address).await?)
    }

    async fn pools(&self) -> Result<Vec<PoolBody>, ServiceError> {
        Ok(Client::pools(self).await?)
    }

    async fn create_pool(&self, pool: PoolBody) -> Result<PoolBody, ServiceError> {
        Ok(Client::create_pool(self, &pool).await?)
    }

    async fn update_pool(
        &self,
        name: &PoolName,
        spec: PoolSpecBody,
    ) -> Result<PoolBody, ServiceError> {
        Ok(Client::update_pool(self, name, &spec).await?)
    }

    async fn delete_pool(&self, name: &PoolName) -> Result<(), ServiceError> {
        Ok(Client::delete_pool(self, name).await?)
    }

    async fn reservations(&self) -> Result<Vec<ReservationBody>, ServiceError> {
        Ok(Client::reservations(self).await?)
    }

    async fn reservation(&self, name: &str) -> Result<Option<ReservationBody>, ServiceError> {
        Ok(Client::reservation(self, name).await?)
    }

    async fn create_reservation(
        &self,
        reservation: ReservationBody,
    ) -> Result<ReservationBody, ServiceError> {
        Ok(Client::create_reservation(self, &reservation).await?)
    }

    async fn delete_reservation(&self, name: &str) -> Result<(), ServiceError> {
        Ok(Client::delete_reservation(self, name).await?)
    }

    async fn split_pool(&self, body: SplitBody) -> Result<SplitResponse, ServiceError> {
        Ok(Client::split_pool(self, &body).await?)
    }

    async fn config(&self) -> Result<ConfigBody, ServiceError> {
        Ok(Client::config(self).await?)
    }

    async fn set_config(&self, config: ConfigBody) -> Result<ConfigBody, ServiceError> {
        Ok(Client::set_config(self, &config).await?)
    }

    async fn usage(&self) -> Result<UsageResponse, ServiceError> {
        Ok(Client::usage(self).await?)
    }

    async fn block(&self, cidr: BlockCidr) -> Result<Option<BlockDetail>, ServiceError> {
        Ok(Client::block(self, cidr.net()).await?)
    }

    async fn affinities(&self) -> Result<Vec<AffinityListItem>, ServiceError> {
        Ok(Client::affinities(self).await?)
    }

    async fn check(&self) -> Result<CheckResponse, ServiceError> {
        Ok(Client::check(self).await?)
    }

    async fn ready(&self) -> Result<(), ServiceError> {
        Ok(Client::ready(self).await?)
    }

    async fn node_labels(&self, node: &NodeName) -> Result<NodeLabelsResponse, ServiceError> {
        Ok(Client::node_labels(self, node.as_str()).await?)
    }

    async fn set_node_labels(
        &self,
        node: &NodeName,
        labels: Labels,
    ) -> Result<NodeLabelsResponse, ServiceError> {
        let body = NodeLabelsBody { labels };
        Ok(Client::set_node_labels(self, node.as_str(), &body).await?)
    }
}
