//! The IPAM the plugin talks to: ipam-server over HTTP (server mode) or the
//! allocation engine in-process on the cluster's datastore (direct mode, as
//! Calico's calico-ipam does). Both answer the same few questions, and
//! their failures become CNI error codes here: unreachable or timed out is
//! 11 (try again later), no free address 100, address taken 101.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipam_api::{AssignBody, AssignIpBody, AssignedAddress, ReleaseBody, ReleaseItem};
use ipam_client::{read_token_file, Client, ClientError};
use ipam_core::{AssignIpRequest, Holding, ReleaseRequest};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam, IpamError, StoreError};
use ipnet::IpNet;

use crate::config::Backend;
use crate::error::{CniError, ADDRESS_IN_USE, POOL_EXHAUSTED, REFUSED};

/// A connected IPAM.
pub enum Connection {
    /// ipam-server.
    Server(Client),
    /// The engine on the datastore.
    Direct(Arc<Ipam<dyn Datastore>>),
}

/// A handle and the addresses it holds.
pub type HandleAddresses = (String, Vec<IpNet>);

/// An address the IPAM gave: what the plugin reports and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The address with its block's prefix length.
    pub address: IpNet,
    /// Its pool, when the IPAM said.
    pub pool: Option<IpNet>,
    /// The block's sequence number for it, when the IPAM said (an older
    /// ipam-server does not).
    pub sequence_number: Option<u64>,
}

impl From<AssignedAddress> for Granted {
    fn from(assigned: AssignedAddress) -> Granted {
        Granted {
            address: assigned.address,
            pool: assigned.pool,
            sequence_number: Some(assigned.sequence_number),
        }
    }
}

impl From<Holding> for Granted {
    fn from(holding: Holding) -> Granted {
        Granted::from(AssignedAddress::from(holding))
    }
}

// An address as the assignment listed it, when nothing more is known.
fn bare(address: IpNet) -> Granted {
    Granted {
        address,
        pool: None,
        sequence_number: None,
    }
}

impl Connection {
    /// Connects as the configuration says; every network call of the
    /// connection ends within `timeout`.
    pub async fn open(backend: &Backend, timeout: Duration) -> Result<Connection, CniError> {
        match backend {
            Backend::Server {
                endpoint,
                token_file,
            } => {
                let mut client = Client::new(endpoint.clone(), timeout);
                if let Some(path) = token_file {
                    let token = read_token_file(path).map_err(|e| {
                        CniError::invalid_config(format!("ipam.server_token_file: {e}"))
                    })?;
                    client = client.with_token(token);
                }
                Ok(Connection::Server(client))
            }
            Backend::Etcd { endpoints } => {
                let options = EtcdOptions {
                    timeout,
                    ..EtcdOptions::default()
                };
                let store = EtcdStore::connect(endpoints, options)
                    .await
                    .map_err(from_store)?;
                Ok(Connection::direct(Arc::new(store)))
            }
            Backend::Kubernetes {
                kubeconfig,
                api_root,
            } => {
                let store = match (kubeconfig, api_root) {
                    (None, Some(url)) => KubernetesStore::connect_url(url),
                    (path, _) => KubernetesStore::connect(path.as_deref()).await,
                }
                .map_err(from_store)?;
                Ok(Connection::direct(Arc::new(store)))
            }
        }
    }

    fn direct(store: Arc<dyn Datastore>) -> Connection {
        Connection::Direct(Arc::new(Ipam::new(store)))
    }

    /// Every pool's name and CIDR, for resolving pool names.
    pub async fn pools(&self) -> Result<Vec<(String, IpNet)>, CniError> {
        match self {
            Connection::Server(client) => Ok(client
                .pools()
                .await
                .map_err(from_client)?
                .into_iter()
                .map(|p| (p.name, p.spec.cidr))
                .collect()),
            Connection::Direct(engine) => Ok(engine
                .pools()
                .await
                .map_err(from_engine)?
                .iter()
                .map(|p| (p.name().to_string(), p.cidr()))
                .collect()),
        }
    }

    /// Auto-assigns, all or nothing; a retried request gets the handle's
    /// addresses back. Returns the addresses, IPv4 first.
    pub async fn assign(&self, body: AssignBody) -> Result<Vec<Granted>, CniError> {
        match self {
            Connection::Server(client) => {
                let got = client.assign(&body).await.map_err(from_client)?;
                if got.assigned.is_empty() {
                    // An ipam-server from before `assigned`.
                    return Ok(got.ipv4.into_iter().chain(got.ipv6).map(bare).collect());
                }
                Ok(got.assigned.into_iter().map(Granted::from).collect())
            }
            Connection::Direct(engine) => {
                let mut request = ipam_core::AutoAssignRequest::new(
                    &body.handle,
                    &body.node,
                    body.ipv4,
                    body.ipv6,
                );
                request.ipv4_pools = body.ipv4_pools;
                request.ipv6_pools = body.ipv6_pools;
                request.attributes = body.attributes;
                request.exclude = body.exclude;
                request.usable_with_pool_prefix = body.usable_with_pool_prefix;
                let got = engine
                    .auto_assign_all(&request)
                    .await
                    .map_err(from_engine)?;
                let addresses: Vec<IpNet> = got
                    .ipv4
                    .addresses
                    .into_iter()
                    .chain(got.ipv6.addresses)
                    .collect();
                let plain: Vec<IpAddr> = addresses.iter().map(IpNet::addr).collect();
                let held = engine
                    .holdings(&body.handle, &plain)
                    .await
                    .map_err(from_engine)?;
                Ok(addresses
                    .into_iter()
                    .zip(held)
                    .map(|(address, held)| held.map_or_else(|| bare(address), Granted::from))
                    .collect())
            }
        }
    }

    /// Assigns one chosen address to a handle.
    pub async fn assign_ip(&self, body: AssignIpBody) -> Result<Granted, CniError> {
        let requested = bare(IpNet::from(body.address));
        match self {
            Connection::Server(client) => {
                let got = client.assign_ip(&body).await.map_err(from_client)?;
                Ok(got.assigned.map_or(requested, Granted::from))
            }
            Connection::Direct(engine) => {
                engine
                    .assign_ip(&AssignIpRequest {
                        handle: body.handle.clone(),
                        node: body.node,
                        address: body.address,
                        attributes: body.attributes,
                    })
                    .await
                    .map_err(from_engine)?;
                let held = engine
                    .holdings(&body.handle, &[body.address])
                    .await
                    .map_err(from_engine)?;
                Ok(held
                    .into_iter()
                    .flatten()
                    .next()
                    .map_or(requested, Granted::from))
            }
        }
    }

    /// Releases `address` only if `handle` still holds it, and with
    /// `sequence_number` when given: true when it was freed, false when it
    /// was free already or has been handed out again since.
    pub async fn release_if_unchanged(
        &self,
        handle: &str,
        address: IpAddr,
        sequence_number: Option<u64>,
    ) -> Result<bool, CniError> {
        match self {
            Connection::Server(client) => {
                let body = ReleaseBody {
                    addresses: vec![ReleaseItem {
                        address,
                        handle: Some(handle.to_string()),
                        sequence_number,
                    }],
                };
                match client.release(&body).await {
                    Ok(out) => Ok(out.released.contains(&address)),
                    Err(e) if e.api_code() == Some("allocation_changed") => Ok(false),
                    Err(e) => Err(from_client(e)),
                }
            }
            Connection::Direct(engine) => {
                let request = ReleaseRequest {
                    address,
                    handle: Some(handle.to_string()),
                    sequence_number,
                };
                match engine.release(&[request]).await {
                    Ok(out) => Ok(out.released.contains(&address)),
                    Err(IpamError::Refused(
                        ipam_core::Error::SequenceNumberMismatch { .. }
                        | ipam_core::Error::HandleMismatch { .. },
                    )) => Ok(false),
                    Err(e) => Err(from_engine(e)),
                }
            }
        }
    }

    /// Releases a handle; an unknown one releases nothing. Returns the
    /// addresses freed.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>, CniError> {
        match self {
            Connection::Server(client) => Ok(client
                .release_handle(handle)
                .await
                .map_err(from_client)?
                .released),
            Connection::Direct(engine) => {
                engine.release_by_handle(handle).await.map_err(from_engine)
            }
        }
    }

    /// The addresses a handle holds.
    pub async fn addresses_of(&self, handle: &str) -> Result<Vec<IpNet>, CniError> {
        match self {
            Connection::Server(client) => Ok(client
                .handle_addresses(handle)
                .await
                .map_err(from_client)?
                .map(|h| h.addresses)
                .unwrap_or_default()),
            Connection::Direct(engine) => engine
                .addresses_of_handle(handle)
                .await
                .map_err(from_engine),
        }
    }

    /// The handles recorded for `node` whose id starts with `prefix`.
    pub async fn handles_on_node(
        &self,
        node: &str,
        prefix: &str,
    ) -> Result<Vec<HandleAddresses>, CniError> {
        match self {
            Connection::Server(client) => Ok(client
                .handles_on_node(node, prefix)
                .await
                .map_err(from_client)?
                .into_iter()
                .map(|h| (h.handle, h.addresses))
                .collect()),
            Connection::Direct(engine) => Ok(engine
                .handles_on_node(node, prefix)
                .await
                .map_err(from_engine)?
                .into_iter()
                .collect()),
        }
    }

    /// Whether an ADD could be served now: the server answers ready, or
    /// the datastore answers a read.
    pub async fn ready(&self) -> Result<(), CniError> {
        match self {
            Connection::Server(client) => client.ready().await.map_err(from_client),
            Connection::Direct(engine) => {
                engine.config().await.map_err(from_engine)?;
                Ok(())
            }
        }
    }
}

fn from_client(error: ClientError) -> CniError {
    if error.is_unavailable() {
        return CniError::try_again(error.to_string());
    }
    match error.api_code() {
        Some("pool_exhausted" | "unsatisfiable") => {
            CniError::new(POOL_EXHAUSTED, "no address available", error.to_string())
        }
        Some("address_in_use") => {
            CniError::new(ADDRESS_IN_USE, "address in use", error.to_string())
        }
        Some("unauthorized") => CniError::invalid_config(format!(
            "ipam.server_token_file: the server refused the token: {error}"
        )),
        _ => CniError::new(REFUSED, "refused by the IPAM", error.to_string()),
    }
}

fn from_store(error: StoreError) -> CniError {
    if error.is_retryable() {
        CniError::try_again(error.to_string())
    } else {
        CniError::invalid_config(error.to_string())
    }
}

fn from_engine(error: IpamError) -> CniError {
    use ipam_core::Error as Refusal;
    let message = error.to_string();
    match error {
        IpamError::Store(store) => from_store(store),
        IpamError::RetriesExhausted { .. } => CniError::try_again(message),
        IpamError::Exhausted { .. }
        | IpamError::Refused(
            Refusal::NoPoolForNode { .. }
            | Refusal::RequestedPoolUnavailable { .. }
            | Refusal::AutoAllocateDisabled { .. }
            | Refusal::BlockLimitReached { .. }
            | Refusal::StrictAffinityViolation { .. },
        ) => CniError::new(POOL_EXHAUSTED, "no address available", message),
        IpamError::Refused(Refusal::AddressInUse { .. } | Refusal::AddressInCooldown { .. }) => {
            CniError::new(ADDRESS_IN_USE, "address in use", message)
        }
        _ => CniError::new(REFUSED, "refused by the IPAM", message),
    }
}
