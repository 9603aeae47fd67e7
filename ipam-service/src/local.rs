//! The `/v1` operations on the engine: the one place a wire request
//! becomes the engine's request (every field of it) and the engine's
//! answer becomes the wire answer. ipam-server's handlers call this after
//! checking what the request carries; the direct modes of the CNI plugin
//! and ipamctl call it in-process. It is also the one place an
//! assignment's missing labels are read, from its [`LabelSource`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use ipam_api::labels::NodeLabelsResponse;
use ipam_api::{
    AddressInfo, AffinityListItem, AllocationBody, AssignBody, AssignIpBody, AssignIpResponse,
    AssignResponse, AssignedAddress, BlockDetail, CheckResponse, ConfigBody, HandleAddresses,
    PoolBody, PoolSpecBody, ReleaseBody, ReleaseResponse, ReservationBody, SplitBody,
    SplitResponse, UsageResponse,
};
use ipam_core::block::{Attribute, BlockOwner};
use ipam_core::check::{check, Liveness};
use ipam_core::holder;
use ipam_core::reservation::ReservationSpec;
use ipam_core::split::SplitTarget;
use ipam_core::{
    AllowedUse, AssignIpRequest, AutoAssignRequest, BlockCidr, HandleId, NodeName, Now, Pool,
    PoolName, ReleaseRequest,
};
use ipam_store::{Datastore, Ipam, IpamError, Labels, MemoryNodeLabels, Reservation, StoreError};
use ipnet::IpNet;

use crate::annotations::{Found, PodAnnotations, Wishes};
use crate::labels::{LabelSource, StoredLabels};
use crate::{code_of, ErrorCode, IpamService, ServiceError};

/// The engine on a datastore, answering as ipam-server would.
#[derive(Clone)]
pub struct LocalService {
    engine: Arc<Ipam<dyn Datastore>>,
    labels: Arc<dyn LabelSource>,
}

impl LocalService {
    /// The operations on `engine`, with node labels kept in memory by this
    /// service (for tests; [`crate::open`] gives each datastore's own
    /// source, for [`LocalService::with_labels`]).
    pub fn new(engine: Arc<Ipam<dyn Datastore>>) -> LocalService {
        let labels = Arc::new(StoredLabels::new(Arc::new(MemoryNodeLabels::default())));
        LocalService::with_labels(engine, labels)
    }

    /// The operations on `engine`, reading labels from `labels`.
    pub fn with_labels(
        engine: Arc<Ipam<dyn Datastore>>,
        labels: Arc<dyn LabelSource>,
    ) -> LocalService {
        LocalService { engine, labels }
    }

    /// Where assignments read labels they do not carry.
    pub fn labels(&self) -> &Arc<dyn LabelSource> {
        &self.labels
    }

    /// The engine, for what the API does not offer (a whole snapshot).
    pub fn engine(&self) -> &Arc<Ipam<dyn Datastore>> {
        &self.engine
    }

    /// `POST /v1/assign`. An assignment whose pools are a CNI config's
    /// follows its pod's and namespace's Calico annotations where they
    /// are read ([`crate::annotations`]): pod, then namespace, then the
    /// body's pools, then every pool that selects the node; and the
    /// families, pod, then namespace, then the body's counts.
    pub async fn assign(&self, mut body: AssignBody) -> Result<AssignResponse, ServiceError> {
        let read = self.annotations_for(&body).await?;
        let (node_labels, namespace_labels) = self
            .labels_for(&body, read.as_ref().map(|(_, r)| &r.namespace_labels))
            .await?;
        let wishes = read.map(|(wishes, _)| wishes).unwrap_or_default();
        // Calico's plugin parses the pools annotations, then ipFamilies,
        // before it reads ipAddrs (k8s.go, CmdAddK8s, 238-297 and 313).
        for pools in [&wishes.ipv4_pools, &wishes.ipv6_pools]
            .into_iter()
            .flatten()
        {
            pools.list()?;
        }
        let families = wishes
            .ip_families
            .as_ref()
            .map(Found::families)
            .transpose()?;
        if let Some(found) = &wishes.ip_addrs {
            // calico-ipam never resolves the pools, nor counts families,
            // for an `IP=` (ipam_plugin.go: the IP branch returns before
            // ResolvePools and the request counts).
            return self.assign_annotated(&body, found).await;
        }
        if let Some(families) = families {
            // assign_ipv4/assign_ipv6, one address of a family or none
            // (ipam_plugin.go 296-305).
            body.ipv4 = u32::from(families.ipv4);
            body.ipv6 = u32::from(families.ipv6);
        }
        if wishes.ipv4_pools.is_some() || wishes.ipv6_pools.is_some() {
            let known: BTreeMap<String, IpNet> = self
                .engine
                .pools()
                .await?
                .iter()
                .map(|p| (p.name().to_string(), p.cidr()))
                .collect();
            if let Some(found) = &wishes.ipv4_pools {
                body.ipv4_pools = found.pools(&known, true)?;
            }
            if let Some(found) = &wishes.ipv6_pools {
                body.ipv6_pools = found.pools(&known, false)?;
            }
        }
        let mut request = AutoAssignRequest::new(
            HandleId::new(body.handle.as_str()),
            NodeName::new(body.node.as_str()),
            body.ipv4,
            body.ipv6,
        );
        request.ipv4_pools = body.ipv4_pools;
        request.ipv6_pools = body.ipv6_pools;
        request.attributes = body.attributes;
        request.node_labels = node_labels;
        request.namespace_labels = namespace_labels;
        request.intended_use = body.intended_use.unwrap_or(AllowedUse::Workload);
        request.max_blocks_per_host = body.max_blocks_per_host;
        request.exclude = body.exclude;
        request.usable_with_pool_prefix = body.usable_with_pool_prefix;
        let got = match self.engine.auto_assign_all(&request).await {
            Ok(got) => got,
            // Pools and families annotations chose that cannot serve the
            // request are refused naming the annotations.
            Err(e @ IpamError::Refused(_)) => {
                let named: Vec<&Found> =
                    [&wishes.ipv4_pools, &wishes.ipv6_pools, &wishes.ip_families]
                        .into_iter()
                        .flatten()
                        .collect();
                return Err(Found::refusal_of(&named, code_of(&e), e));
            }
            Err(e) => return Err(e.into()),
        };
        let addresses: Vec<IpAddr> = got
            .ipv4
            .addresses
            .iter()
            .chain(&got.ipv6.addresses)
            .map(|a| a.addr())
            .collect();
        let holdings = self.engine.holdings(&body.handle, &addresses).await?;
        Ok(AssignResponse {
            handle: body.handle,
            ipv4: got.ipv4.addresses,
            ipv6: got.ipv6.addresses,
            existing: got.existing,
            assigned: holdings.into_iter().flatten().map(Into::into).collect(),
        })
    }

    /// What the pod's and namespace's annotations ask of `body`, and what
    /// was read, when `body` takes them (a workload's, with its pools from
    /// a CNI config, naming its pod) and the label source reads pods.
    async fn annotations_for(
        &self,
        body: &AssignBody,
    ) -> Result<Option<(Wishes, PodAnnotations)>, StoreError> {
        let workload = matches!(body.intended_use, None | Some(AllowedUse::Workload));
        let named = |key| body.attributes.get(key).filter(|v| !v.is_empty());
        let (Some(namespace), Some(pod), true, true) = (
            named(holder::NAMESPACE),
            named(holder::POD),
            body.pod_annotations,
            workload,
        ) else {
            return Ok(None);
        };
        let uid = body.pod_uid.as_deref().filter(|uid| !uid.is_empty());
        let read = self.labels.pod_annotations(namespace, pod, uid).await?;
        Ok(read.map(|read| (Wishes::of(namespace, pod, &read), read)))
    }

    /// The `ipAddrs` annotation's addresses for `body`'s handle, each
    /// assigned as calico-ipam assigns an `IP=` (Calico's main plugin
    /// calls it once per address, ipAddrsResult) and answered as it
    /// answers one (ipam_plugin.go: a /32 or /128). All or nothing: what
    /// this request took is given back when a later address is refused.
    async fn assign_annotated(
        &self,
        body: &AssignBody,
        found: &Found,
    ) -> Result<AssignResponse, ServiceError> {
        let addresses = found.addresses()?;
        self.refuse_unusable(body, found, &addresses).await?;
        let before = self.engine.holdings(&body.handle, &addresses).await?;
        let mut taken = Vec::new();
        for (address, held) in addresses.iter().zip(&before) {
            let request = AssignIpRequest {
                handle: HandleId::new(body.handle.as_str()),
                node: NodeName::new(body.node.as_str()),
                address: *address,
                attributes: body.attributes.clone(),
            };
            if let Err(e) = self
                .engine
                .assign_ip_for(&request, AllowedUse::Workload)
                .await
            {
                self.give_back(&body.handle, &taken).await;
                return Err(found.refusal(code_of(&e), e));
            }
            if held.is_none() {
                taken.push(*address);
            }
        }
        let held = self.engine.holdings(&body.handle, &addresses).await?;
        let host = |a: &IpAddr| IpNet::from(*a);
        Ok(AssignResponse {
            handle: body.handle.clone(),
            ipv4: addresses.iter().filter(|a| a.is_ipv4()).map(host).collect(),
            ipv6: addresses.iter().filter(|a| a.is_ipv6()).map(host).collect(),
            existing: before.iter().all(Option::is_some),
            assigned: held
                .into_iter()
                .flatten()
                .map(|h| AssignedAddress {
                    address: host(&h.address.addr()),
                    pool: h.pool,
                    sequence_number: h.sequence_number,
                })
                .collect(),
        })
    }

    // What the body says the container cannot use is refused as an
    // auto-assignment would never hand it out: an excluded address (the
    // gateway) and, for a pool's prefix, its pool's network or broadcast
    // address (what calico-ipam refuses of an `IP=` likewise).
    async fn refuse_unusable(
        &self,
        body: &AssignBody,
        found: &Found,
        addresses: &[IpAddr],
    ) -> Result<(), ServiceError> {
        let pools = if body.usable_with_pool_prefix {
            self.engine.pools().await?
        } else {
            Vec::new()
        };
        for address in addresses {
            let unusable = if body.exclude.iter().any(|e| e.contains(address)) {
                Some(format!(
                    "{address} is excluded from this request (a gateway)"
                ))
            } else {
                pools
                    .iter()
                    .filter(|p| p.contains(*address))
                    .find(|p| p.subnet_edges().iter().any(|e| e.addr() == *address))
                    .map(|p| {
                        format!(
                            "{address} is the network or broadcast address of pool {}, unusable with its prefix",
                            p.cidr()
                        )
                    })
            };
            if let Some(why) = unusable {
                return Err(found.refusal(ErrorCode::InvalidValue, why));
            }
        }
        Ok(())
    }

    // Releases what a refused annotated assignment took; a failure here
    // leaves the addresses to the handle, which the CNI DEL that follows a
    // failed ADD releases.
    async fn give_back(&self, handle: &str, taken: &[IpAddr]) {
        let requests: Vec<ReleaseRequest> = taken
            .iter()
            .map(|address| ReleaseRequest {
                address: *address,
                handle: Some(HandleId::new(handle)),
                sequence_number: None,
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        if let Err(error) = self.engine.release(&requests).await {
            tracing::warn!(%handle, %error, "giving back the addresses of a refused ipAddrs annotation");
        }
    }

    /// The node's and the namespace's labels for an assignment: those it
    /// carries, else those its datastore keeps (`read` when the Namespace
    /// was read already). A LoadBalancer address has
    /// no node: Calico gives it a virtual node without labels
    /// (libcalico-go/lib/ipam/ipam.go, prepareAffinityBlocksForHost). The
    /// namespace is the `namespace` attribute, the pod's, which Calico's
    /// plugin reads the Namespace of (ipam_plugin.go, cmdAdd).
    async fn labels_for(
        &self,
        body: &AssignBody,
        read: Option<&Labels>,
    ) -> Result<(Labels, Labels), IpamError> {
        let node = match &body.node_labels {
            Some(labels) => labels.clone(),
            None if body.intended_use == Some(AllowedUse::LoadBalancer) => Labels::new(),
            None => self.labels.node_labels(&body.node).await?,
        };
        let namespace = match (
            &body.namespace_labels,
            read,
            body.attributes.get(holder::NAMESPACE),
        ) {
            (Some(labels), _, _) | (None, Some(labels), _) => labels.clone(),
            (None, None, Some(namespace)) if !namespace.is_empty() => {
                self.labels.namespace_labels(namespace).await?
            }
            (None, None, _) => Labels::new(),
        };
        Ok((node, namespace))
    }

    /// `GET /v1/nodes/{node}/labels`.
    pub async fn node_labels(&self, node: &NodeName) -> Result<NodeLabelsResponse, ServiceError> {
        Ok(NodeLabelsResponse {
            node: node.to_string(),
            labels: self.labels.node_labels(node.as_str()).await?,
            origin: self.labels.origin(),
        })
    }

    /// `PUT /v1/nodes/{node}/labels`: where the IPAM keeps them.
    pub async fn set_node_labels(
        &self,
        node: &NodeName,
        labels: Labels,
    ) -> Result<NodeLabelsResponse, ServiceError> {
        self.labels.set_node_labels(node.as_str(), &labels).await?;
        Ok(NodeLabelsResponse {
            node: node.to_string(),
            labels,
            origin: self.labels.origin(),
        })
    }

    /// `POST /v1/assign-ip`.
    pub async fn assign_ip(&self, body: AssignIpBody) -> Result<AssignIpResponse, IpamError> {
        let request = AssignIpRequest {
            handle: HandleId::new(body.handle.as_str()),
            node: NodeName::new(body.node.as_str()),
            address: body.address,
            attributes: body.attributes.clone(),
        };
        let intended_use = body.intended_use.unwrap_or(AllowedUse::Workload);
        self.engine.assign_ip_for(&request, intended_use).await?;
        let held = self.engine.holdings(&body.handle, &[body.address]).await?;
        Ok(AssignIpResponse {
            handle: body.handle,
            node: body.node,
            address: body.address,
            attributes: body.attributes,
            assigned: held.into_iter().flatten().next().map(Into::into),
        })
    }

    /// `POST /v1/release`.
    pub async fn release(&self, body: ReleaseBody) -> Result<ReleaseResponse, IpamError> {
        let requests: Vec<ReleaseRequest> = body
            .addresses
            .into_iter()
            .map(|item| ReleaseRequest {
                address: item.address,
                handle: item.handle.map(HandleId::new),
                sequence_number: item.sequence_number,
            })
            .collect();
        let out = self.engine.release(&requests).await?;
        Ok(ReleaseResponse {
            released: out.released,
            already_free: out.already_free,
        })
    }

    /// `DELETE /v1/handles/{handle}`.
    pub async fn release_handle(&self, handle: &HandleId) -> Result<ReleaseResponse, IpamError> {
        Ok(ReleaseResponse {
            released: self.engine.release_by_handle(handle).await?,
            already_free: Vec::new(),
        })
    }

    /// `GET /v1/handles/{handle}`.
    pub async fn handle_addresses(
        &self,
        handle: &HandleId,
    ) -> Result<Option<HandleAddresses>, IpamError> {
        let addresses = self.engine.addresses_of_handle(handle).await?;
        Ok((!addresses.is_empty()).then(|| HandleAddresses {
            handle: handle.to_string(),
            addresses,
        }))
    }

    /// `GET /v1/handles?node=&prefix=`.
    pub async fn handles_on_node(
        &self,
        node: &NodeName,
        prefix: &str,
    ) -> Result<Vec<HandleAddresses>, IpamError> {
        let found = self.engine.handles_on_node(node, prefix).await?;
        Ok(found
            .into_iter()
            .map(|(handle, addresses)| HandleAddresses { handle, addresses })
            .collect())
    }

    /// `GET /v1/addresses/{address}`, and the attribute it was read from
    /// (ipamctl shows an alternate owner's, which the API does not carry).
    pub async fn address_with_attribute(
        &self,
        address: IpAddr,
    ) -> Result<(AddressInfo, Option<Attribute>), IpamError> {
        let attribute = self.engine.attributes_of(address).await?;
        let pools = self.engine.pools().await?;
        let pool = pools
            .iter()
            .find(|p| p.contains(address))
            .map(|p| p.name().to_string());
        let cooldown = self
            .engine
            .config()
            .await?
            .cooldown(Now::from(SystemTime::now()));
        let info = AddressInfo::of(address, attribute.as_ref(), pool, cooldown);
        Ok((info, attribute))
    }

    /// `GET /v1/pools`.
    pub async fn pools(&self) -> Result<Vec<PoolBody>, IpamError> {
        Ok(self
            .engine
            .pools()
            .await?
            .iter()
            .map(PoolBody::from)
            .collect())
    }

    /// `POST /v1/pools`: the CIDR normalised to its network as Calico does
    /// before storing (libcalico-go clientv3/ippool.go,
    /// validateAndSetDefaults: "Normalize the CIDR before persisting").
    pub async fn create_pool(&self, body: PoolBody) -> Result<PoolBody, IpamError> {
        let mut spec = body.spec;
        spec.cidr = spec.cidr.trunc();
        let pool = Pool::new(&body.name, spec)?;
        self.engine.create_pool(pool.clone()).await?;
        Ok(PoolBody::from(&pool))
    }

    /// `PUT /v1/pools/{name}`: normalised as [`LocalService::create_pool`];
    /// fields a newer Calico stored in the pool are kept, as
    /// [`LocalService::set_config`] keeps the config's.
    pub async fn update_pool(
        &self,
        name: &PoolName,
        body: PoolSpecBody,
    ) -> Result<PoolBody, IpamError> {
        let mut spec = body.spec;
        spec.cidr = spec.cidr.trunc();
        let stored = self.engine.pools().await?;
        if let Some(current) = stored.iter().find(|p| p.name() == name.as_str()) {
            spec.unknown = current.spec().unknown.clone();
        }
        let pool = Pool::new(name.as_str(), spec)?;
        self.engine.update_pool(pool.clone()).await?;
        Ok(PoolBody::from(&pool))
    }

    /// `DELETE /v1/pools/{name}`.
    pub async fn delete_pool(&self, name: &PoolName) -> Result<(), IpamError> {
        self.engine.delete_pool(name).await
    }

    /// `GET /v1/reservations`.
    pub async fn reservations(&self) -> Result<Vec<ReservationBody>, IpamError> {
        let stored = self.engine.reservations().await?;
        Ok(stored
            .iter()
            .map(|r| ReservationBody::of(&r.name, &r.spec))
            .collect())
    }

    /// `GET /v1/reservations/{name}`.
    pub async fn reservation(&self, name: &str) -> Result<Option<ReservationBody>, IpamError> {
        let stored = self.engine.reservation(name).await?;
        Ok(stored.map(|r| ReservationBody::of(&r.name, &r.spec)))
    }

    /// `POST /v1/reservations`, of a reservation checked by ipam-api's
    /// rules ([`ReservationBody::check`] gives `spec`): its entries are
    /// stored as ranges, as Calico's IPAM reads them (a bare address as /32
    /// or /128, a CIDR with its host bits as given).
    pub async fn create_reservation(
        &self,
        name: &str,
        spec: ReservationSpec,
    ) -> Result<ReservationBody, IpamError> {
        let stored = ReservationBody::of(name, &spec);
        self.engine
            .create_reservation(Reservation {
                name: name.to_string(),
                spec,
            })
            .await?;
        Ok(stored)
    }

    /// `DELETE /v1/reservations/{name}`.
    pub async fn delete_reservation(&self, name: &str) -> Result<(), IpamError> {
        self.engine.delete_reservation(name).await
    }

    /// `POST /v1/pool-splits`, once its body named one pool
    /// ([`SplitBody::target`]).
    pub async fn split_pool(
        &self,
        target: &SplitTarget,
        parts: u32,
    ) -> Result<SplitResponse, IpamError> {
        let split = self.engine.split_pool(target, parts).await?;
        Ok(SplitResponse::of(&split))
    }

    /// `GET /v1/config`.
    pub async fn config(&self) -> Result<ConfigBody, IpamError> {
        Ok(self.engine.config().await?.into())
    }

    /// `PUT /v1/config`: fields of a newer Calico stored in the config are
    /// kept.
    pub async fn set_config(&self, body: ConfigBody) -> Result<ConfigBody, IpamError> {
        let mut config = self.engine.config().await?;
        body.apply_to(&mut config);
        self.engine.set_config(config).await?;
        Ok(body)
    }

    /// `GET /v1/usage`.
    pub async fn usage(&self) -> Result<UsageResponse, IpamError> {
        Ok(UsageResponse::of(&self.engine.snapshot().await?))
    }

    /// `GET /v1/blocks?cidr=`.
    pub async fn block(&self, cidr: BlockCidr) -> Result<Option<BlockDetail>, IpamError> {
        let Some(block) = self.engine.block(cidr).await? else {
            return Ok(None);
        };
        let allocations = block
            .allocations()
            .map(|(ordinal, attribute)| AllocationBody::of(&block, ordinal, attribute))
            .collect();
        Ok(Some(BlockDetail {
            cidr: cidr.net(),
            node: block.owner().map(BlockOwner::name).map(str::to_string),
            affinity: block.owner().map(ToString::to_string),
            allocations,
        }))
    }

    /// `GET /v1/affinities`: by node, then block.
    pub async fn affinities(&self) -> Result<Vec<AffinityListItem>, IpamError> {
        let snapshot = self.engine.snapshot().await?;
        let mut affinities: Vec<AffinityListItem> = snapshot
            .affinities()
            .map(|a| AffinityListItem {
                node: a.node.clone(),
                cidr: a.cidr.net(),
                state: a.state.as_str().to_string(),
                affinity_type: a
                    .affinity_type
                    .clone()
                    .unwrap_or_else(|| "host".to_string()),
            })
            .collect();
        affinities.sort_by(|a, b| (&a.node, a.cidr).cmp(&(&b.node, b.cidr)));
        Ok(affinities)
    }

    /// `GET /v1/check`: no pods or nodes are known here, so those checks
    /// are listed as skipped.
    pub async fn check(&self) -> Result<CheckResponse, IpamError> {
        let snapshot = self.engine.snapshot().await?;
        let report = check(
            &snapshot,
            &Liveness::default(),
            Now::from(SystemTime::now()),
        );
        Ok(CheckResponse {
            consistent: report.is_consistent(),
            report,
        })
    }
}

#[async_trait]
impl IpamService for LocalService {
    async fn assign(&self, body: AssignBody) -> Result<AssignResponse, ServiceError> {
        LocalService::assign(self, body).await
    }

    async fn assign_ip(&self, body: AssignIpBody) -> Result<AssignIpResponse, ServiceError> {
        Ok(LocalService::assign_ip(self, body).await?)
    }

    async fn release(&self, body: ReleaseBody) -> Result<ReleaseResponse, ServiceError> {
        Ok(LocalService::release(self, body).await?)
    }

    async fn release_handle(&self, handle: &HandleId) -> Result<ReleaseResponse, ServiceError> {
        Ok(LocalService::release_handle(self, handle).await?)
    }

    async fn handle_addresses(
        &self,
        handle: &HandleId,
    ) -> Result<Option<HandleAddresses>, ServiceError> {
        Ok(LocalService::handle_addresses(self, handle).await?)
    }

    async fn handles_on_node(
        &self,
        node: &NodeName,
        prefix: &str,
    ) -> Result<Vec<HandleAddresses>, ServiceError> {
        Ok(LocalService::handles_on_node(self, node, prefix).await?)
    }

    async fn address(&self, address: IpAddr) -> Result<AddressInfo, ServiceError> {
        Ok(self.address_with_attribute(address).await?.0)
    }

    async fn pools(&self) -> Result<Vec<PoolBody>, ServiceError> {
        Ok(LocalService::pools(self).await?)
    }

    async fn create_pool(&self, pool: PoolBody) -> Result<PoolBody, ServiceError> {
        Ok(LocalService::create_pool(self, pool).await?)
    }

    async fn update_pool(
        &self,
        name: &PoolName,
        spec: PoolSpecBody,
    ) -> Result<PoolBody, ServiceError> {
        Ok(LocalService::update_pool(self, name, spec).await?)
    }

    async fn delete_pool(&self, name: &PoolName) -> Result<(), ServiceError> {
        Ok(LocalService::delete_pool(self, name).await?)
    }

    async fn reservations(&self) -> Result<Vec<ReservationBody>, ServiceError> {
        Ok(LocalService::reservations(self).await?)
    }

    async fn reservation(&self, name: &str) -> Result<Option<ReservationBody>, ServiceError> {
        Ok(LocalService::reservation(self, name).await?)
    }

    async fn create_reservation(
        &self,
        reservation: ReservationBody,
    ) -> Result<ReservationBody, ServiceError> {
        // The check is the parse of the entries, so it is made here in
        // direct mode too (the server makes it before calling the same).
        let spec = reservation.check().map_err(|e| ServiceError::Refused {
            code: ErrorCode::from(&e),
            message: e.to_string(),
        })?;
        Ok(LocalService::create_reservation(self, &reservation.name, spec).await?)
    }

    async fn delete_reservation(&self, name: &str) -> Result<(), ServiceError> {
        Ok(LocalService::delete_reservation(self, name).await?)
    }

    async fn split_pool(&self, body: SplitBody) -> Result<SplitResponse, ServiceError> {
        let target = body.target().map_err(|e| ServiceError::Refused {
            code: e.code(),
            message: e.to_string(),
        })?;
        Ok(LocalService::split_pool(self, &target, body.parts).await?)
    }

    async fn config(&self) -> Result<ConfigBody, ServiceError> {
        Ok(LocalService::config(self).await?)
    }

    async fn set_config(&self, config: ConfigBody) -> Result<ConfigBody, ServiceError> {
        Ok(LocalService::set_config(self, config).await?)
    }

    async fn usage(&self) -> Result<UsageResponse, ServiceError> {
        Ok(LocalService::usage(self).await?)
    }

    async fn block(&self, cidr: BlockCidr) -> Result<Option<BlockDetail>, ServiceError> {
        Ok(LocalService::block(self, cidr).await?)
    }

    async fn affinities(&self) -> Result<Vec<AffinityListItem>, ServiceError> {
        Ok(LocalService::affinities(self).await?)
    }

    async fn check(&self) -> Result<CheckResponse, ServiceError> {
        Ok(LocalService::check(self).await?)
    }

    async fn ready(&self) -> Result<(), ServiceError> {
        self.engine.config().await?;
        Ok(())
    }

    async fn node_labels(&self, node: &NodeName) -> Result<NodeLabelsResponse, ServiceError> {
        LocalService::node_labels(self, node).await
    }

    async fn set_node_labels(
        &self,
        node: &NodeName,
        labels: Labels,
    ) -> Result<NodeLabelsResponse, ServiceError> {
        LocalService::set_node_labels(self, node, labels).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ipam_api::labels::LabelOrigin;
    use ipam_core::PoolSpec;
    use ipam_store::memory::MemoryStore;
    use ipam_store::StoreError;

    use super::*;
    use crate::annotations::Annotations;
    use crate::labels::LabelError;

    /// Labels `zone=a` for every node and `team=blue` for every
    /// namespace, `pod`'s annotations for every pod when it reads pods,
    /// and a record of what was asked.
    #[derive(Default)]
    struct Recording {
        asked: Mutex<Vec<String>>,
        pod: Option<Annotations>,
    }

    #[async_trait]
    impl LabelSource for Recording {
        fn origin(&self) -> LabelOrigin {
            LabelOrigin::Ipam
        }

        async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
            self.asked.lock().unwrap().push(format!("node {node}"));
            Ok([("zone".to_string(), "a".to_string())].into())
        }

        async fn namespace_labels(&self, namespace: &str) -> Result<Labels, StoreError> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("namespace {namespace}"));
            Ok([("team".to_string(), "blue".to_string())].into())
        }

        async fn set_node_labels(&self, _: &str, _: &Labels) -> Result<(), LabelError> {
            unreachable!("assignments only read")
        }

        async fn pod_annotations(
            &self,
            namespace: &str,
            pod: &str,
            _uid: Option<&str>,
        ) -> Result<Option<PodAnnotations>, StoreError> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("pod {namespace}/{pod}"));
            Ok(self.pod.clone().map(|pod| PodAnnotations {
                namespace_labels: [("team".to_string(), "blue".to_string())].into(),
                namespace: Annotations::new(),
                pod,
            }))
        }
    }

    async fn service() -> (LocalService, Arc<Recording>) {
        service_reading(None).await
    }

    async fn service_reading(pod: Option<Annotations>) -> (LocalService, Arc<Recording>) {
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(Arc::new(MemoryStore::new())));
        for (name, cidr, node, namespace, uses) in [
            (
                "zone-a-blue",
                "10.0.0.0/24",
                "zone == 'a'",
                "team == 'blue'",
                vec![],
            ),
            ("other", "20.0.0.0/24", "zone != 'a'", "", vec![]),
            ("lb", "30.0.0.0/24", "", "", vec![AllowedUse::LoadBalancer]),
        ] {
            let spec = PoolSpec {
                node_selector: node.to_string(),
                namespace_selector: namespace.to_string(),
                allowed_uses: uses,
                ..PoolSpec::new(cidr.parse().unwrap())
            };
            engine
                .create_pool(Pool::new(name, spec).unwrap())
                .await
                .unwrap();
        }
        let recording = Arc::new(Recording {
            pod,
            ..Recording::default()
        });
        (
            LocalService::with_labels(engine, recording.clone()),
            recording,
        )
    }

    fn body(handle: &str, attributes: &[(&str, &str)]) -> AssignBody {
        serde_json::from_value(serde_json::json!({
            "handle": handle, "node": "n1", "ipv4": 1,
            "attributes": attributes.iter().copied().collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    fn pool_of(response: &AssignResponse) -> String {
        response.assigned[0].pool.unwrap().to_string()
    }

    #[tokio::test]
    async fn labels_a_request_lacks_are_read_for_its_node_and_its_pods_namespace() {
        let (service, recording) = service().await;
        let got = service
            .assign(body("h1", &[("namespace", "ns1"), ("pod", "p1")]))
            .await
            .unwrap();
        assert_eq!(pool_of(&got), "10.0.0.0/24");
        assert_eq!(
            *recording.asked.lock().unwrap(),
            ["node n1", "namespace ns1"]
        );
    }

    #[tokio::test]
    async fn a_requests_own_labels_win_and_nothing_is_read() {
        let (service, recording) = service().await;
        let mut own = body("h1", &[("namespace", "ns1"), ("pod", "p1")]);
        own.node_labels = Some(Labels::new());
        own.namespace_labels = Some(Labels::new());
        assert_eq!(pool_of(&service.assign(own).await.unwrap()), "20.0.0.0/24");
        assert!(recording.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_namespace_is_read_without_one_and_no_node_for_a_load_balancer() {
        let (service, recording) = service().await;
        // No namespace: `team == 'blue'` matches no labels, and the other
        // pool does not select zone a.
        let refused = service.assign(body("h1", &[])).await.unwrap_err();
        assert!(
            matches!(
                refused,
                ServiceError::Refused {
                    code: ErrorCode::Unsatisfiable,
                    ..
                }
            ),
            "{refused:?}"
        );
        let mut lb = body("h2", &[]);
        lb.intended_use = Some(AllowedUse::LoadBalancer);
        assert_eq!(pool_of(&service.assign(lb).await.unwrap()), "30.0.0.0/24");
        assert_eq!(*recording.asked.lock().unwrap(), ["node n1"]);
    }

    #[tokio::test]
    async fn a_pods_annotations_are_read_only_when_the_body_asks_and_a_pod_names_them() {
        let ip_addrs = Annotations::from([(
            crate::annotations::IP_ADDRS.to_string(),
            r#"["20.0.0.9"]"#.to_string(),
        )]);
        let (service, recording) = service_reading(Some(ip_addrs)).await;
        let pod = [("namespace", "ns1"), ("pod", "p1")];
        // Pools from elsewhere than a CNI config: not read.
        let got = service.assign(body("h1", &pod)).await.unwrap();
        assert_eq!(pool_of(&got), "10.0.0.0/24");
        // A LoadBalancer's, or one naming no pod: not read either.
        let mut lb = body("h2", &pod);
        lb.intended_use = Some(AllowedUse::LoadBalancer);
        lb.pod_annotations = true;
        service.assign(lb).await.unwrap();
        let mut podless = body("h3", &[("namespace", "ns1")]);
        podless.pod_annotations = true;
        service.assign(podless).await.unwrap();
        assert!(!recording
            .asked
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.starts_with("pod")));
        // A workload's from a CNI config: the pod's ipAddrs, as /32, with
        // the Namespace read once (for its labels and annotations).
        recording.asked.lock().unwrap().clear();
        let mut annotated = body("h4", &pod);
        annotated.pod_annotations = true;
        let got = service.assign(annotated).await.unwrap();
        assert_eq!(got.ipv4, ["20.0.0.9/32".parse::<IpNet>().unwrap()]);
        assert_eq!(pool_of(&got), "20.0.0.0/24");
        assert_eq!(*recording.asked.lock().unwrap(), ["pod ns1/p1", "node n1"]);
    }

    #[tokio::test]
    async fn without_a_source_of_pods_the_bodys_pools_stand() {
        let (service, recording) = service().await;
        let mut annotated = body("h1", &[("namespace", "ns1"), ("pod", "p1")]);
        annotated.pod_annotations = true;
        annotated.ipv4_pools = vec!["20.0.0.0/24".parse().unwrap()];
        // The body's pool, not the zone-a pool the labels select.
        let got = service.assign(annotated).await.unwrap();
        assert_eq!(pool_of(&got), "20.0.0.0/24");
        assert_eq!(
            *recording.asked.lock().unwrap(),
            ["pod ns1/p1", "node n1", "namespace ns1"]
        );
    }

    #[tokio::test]
    async fn an_ip_addrs_address_the_container_cannot_use_is_refused() {
        let (service, _) = service_reading(Some(Annotations::from([(
            crate::annotations::IP_ADDRS.to_string(),
            r#"["20.0.0.0"]"#.to_string(),
        )])))
        .await;
        let pod = [("namespace", "ns1"), ("pod", "p1")];
        let mut edge = body("h1", &pod);
        edge.pod_annotations = true;
        edge.usable_with_pool_prefix = true;
        let mut gateway = body("h2", &pod);
        gateway.pod_annotations = true;
        gateway.exclude = vec!["20.0.0.0/32".parse().unwrap()];
        for (refused, why) in [
            (edge, "network or broadcast address of pool 20.0.0.0/24"),
            (gateway, "excluded from this request"),
        ] {
            let handle = refused.handle.clone();
            let error = service.assign(refused).await.unwrap_err();
            assert!(
                error.to_string().starts_with(
                    r#"pod ns1/p1 annotation "cni.projectcalico.org/ipAddrs" = ["20.0.0.0"]: 20.0.0.0 is"#
                ) && error.to_string().contains(why),
                "{error}"
            );
            assert_eq!(error.code(), Some(&ErrorCode::InvalidValue));
            let handle = HandleId::new(handle.as_str());
            assert!(service.handle_addresses(&handle).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn beside_ip_addrs_the_pools_and_families_annotations_are_only_parsed() {
        let annotated = |key: &str, value: &str| {
            Annotations::from([
                (
                    crate::annotations::IP_ADDRS.to_string(),
                    r#"["20.0.0.9"]"#.to_string(),
                ),
                (key.to_string(), value.to_string()),
            ])
        };
        let pools = crate::annotations::IPV4_POOLS;
        let families = crate::annotations::IP_FAMILIES;
        let pod = [("namespace", "ns1"), ("pod", "p1")];
        for (key, value, ok) in [
            (pools, r#"["no-such-pool"]"#, true),
            (pools, "no-such-pool", false),
            // Only IPv6 asked, yet the IPv4 address of ipAddrs is given.
            (families, r#"["IPv6"]"#, true),
            (families, r#"["IPv5"]"#, false),
        ] {
            let (service, _) = service_reading(Some(annotated(key, value))).await;
            let mut body = body("h1", &pod);
            body.pod_annotations = true;
            let got = service.assign(body).await;
            assert_eq!(got.is_ok(), ok, "{key} = {value}: {got:?}");
        }
    }
}
