//! The IPAM the plugin talks to: ipam-server over HTTP (server mode) or the
//! allocation engine in-process on the cluster's datastore (direct mode, as
//! Calico's calico-ipam does). Both send the same `/v1` requests and fail
//! with the same API codes; the codes become CNI error codes in one place,
//! [`CniError::from_ipam`](crate::error::CniError::from_ipam).
//!
//! Server mode calls ipam-client's [`Client`] itself, not through
//! ipam-service's `IpamService`: that crate is the engine's side, and
//! reaching it from server mode linked the datastores (redb, the etcd
//! client, kube, rustls) into a binary that does not use them. Direct mode
//! is the `direct` feature (on by default); without it the plugin speaks
//! server mode only (the crate docs say what that buys at start-up).

use std::net::IpAddr;
use std::time::Duration;

use ipam_api::{AssignBody, AssignIpBody, AssignedAddress, ErrorCode, ReleaseBody, ReleaseItem};
use ipam_client::{read_token_file, Client, ClientError};
use ipam_core::Holding;
use ipnet::IpNet;

use crate::config::Backend;
use crate::error::{CniError, REFUSED};

/// A connected IPAM.
pub struct Connection {
    ipam: Ipam,
}

enum Ipam {
    Server(Client),
    #[cfg(feature = "direct")]
    Direct(direct::Direct),
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
        let ipam = match backend {
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
                Ipam::Server(client)
            }
            #[cfg(feature = "direct")]
            Backend::Etcd { endpoints } => Ipam::Direct(
                direct::Direct::open(direct::DatastoreSettings::Etcd {
                    endpoints: endpoints.clone(),
                    options: direct::EtcdOptions {
                        timeout,
                        ..direct::EtcdOptions::default()
                    },
                })
                .await?,
            ),
            #[cfg(feature = "direct")]
            Backend::Kubernetes {
                kubeconfig,
                api_root,
            } => Ipam::Direct(
                direct::Direct::open(direct::DatastoreSettings::Kubernetes {
                    kubeconfig: kubeconfig.clone(),
                    api_root: api_root.clone(),
                })
                .await?,
            ),
            #[cfg(not(feature = "direct"))]
            _ => {
                return Err(CniError::invalid_config(
                    "this calico-ipam is built without direct mode (ipam-cni's `direct` feature): set ipam.server, or install the build with both modes",
                ))
            }
        };
        Ok(Connection { ipam })
    }

    /// Every pool's name and CIDR, for resolving pool names.
    pub async fn pools(&self) -> Result<Vec<(String, IpNet)>, CniError> {
        let pools = match &self.ipam {
            Ipam::Server(client) => client.pools().await.map_err(from_client)?,
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => direct.pools().await?,
        };
        Ok(pools.into_iter().map(|p| (p.name, p.spec.cidr)).collect())
    }

    /// Auto-assigns, all or nothing; a retried request gets the handle's
    /// addresses back. Returns the addresses, IPv4 first.
    pub async fn assign(&self, body: AssignBody) -> Result<Vec<Granted>, CniError> {
        let got = match &self.ipam {
            Ipam::Server(client) => client.assign(&body).await.map_err(from_client)?,
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => direct.assign(body).await?,
        };
        if got.assigned.is_empty() {
            // An ipam-server from before `assigned`.
            return Ok(got.ipv4.into_iter().chain(got.ipv6).map(bare).collect());
        }
        Ok(got.assigned.into_iter().map(Granted::from).collect())
    }

    /// Assigns one chosen address to a handle.
    pub async fn assign_ip(&self, body: AssignIpBody) -> Result<Granted, CniError> {
        let requested = bare(IpNet::from(body.address));
        let got = match &self.ipam {
            Ipam::Server(client) => client.assign_ip(&body).await.map_err(from_client)?,
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => direct.assign_ip(body).await?,
        };
        Ok(got.assigned.map_or(requested, Granted::from))
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
        let body = ReleaseBody {
            addresses: vec![ReleaseItem {
                address,
                handle: Some(handle.to_string()),
                sequence_number,
            }],
        };
        let released = match &self.ipam {
            Ipam::Server(client) => match client.release(&body).await {
                Ok(out) => out.released,
                Err(e) if e.api_code() == Some(&ErrorCode::AllocationChanged) => return Ok(false),
                Err(e) => return Err(from_client(e)),
            },
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => match direct.release(body).await? {
                Some(out) => out.released,
                None => return Ok(false),
            },
        };
        Ok(released.contains(&address))
    }

    /// Releases a handle; an unknown one releases nothing. Returns the
    /// addresses freed.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>, CniError> {
        let out = match &self.ipam {
            Ipam::Server(client) => client.release_handle(handle).await.map_err(from_client)?,
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => direct.release_handle(handle).await?,
        };
        Ok(out.released)
    }

    /// The addresses a handle holds.
    pub async fn addresses_of(&self, handle: &str) -> Result<Vec<IpNet>, CniError> {
        let held = match &self.ipam {
            Ipam::Server(client) => client.handle_addresses(handle).await.map_err(from_client)?,
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => direct.handle_addresses(handle).await?,
        };
        Ok(held.map(|h| h.addresses).unwrap_or_default())
    }

    /// The handles recorded for `node` whose id starts with `prefix`.
    pub async fn handles_on_node(
        &self,
        node: &str,
        prefix: &str,
    ) -> Result<Vec<HandleAddresses>, CniError> {
        let handles = match &self.ipam {
            Ipam::Server(client) => client
                .handles_on_node(node, prefix)
                .await
                .map_err(from_client)?,
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => direct.handles_on_node(node, prefix).await?,
        };
        Ok(handles
            .into_iter()
            .map(|h| (h.handle, h.addresses))
            .collect())
    }

    /// Whether an ADD could be served now: the server answers ready, or
    /// the datastore answers a read.
    pub async fn ready(&self) -> Result<(), CniError> {
        match &self.ipam {
            Ipam::Server(client) => client.ready().await.map_err(from_client),
            #[cfg(feature = "direct")]
            Ipam::Direct(direct) => direct.ready().await,
        }
    }
}

// ipam-server's error answer carries the API code; no answer at all is
// worth a retry when the server is down or slow, else a refusal.
fn from_client(error: ClientError) -> CniError {
    match error.api_code() {
        Some(code) => CniError::from_ipam(code, error.to_string()),
        None if error.is_unavailable() => CniError::try_again(error.to_string()),
        None => CniError::new(REFUSED, "refused by the IPAM", error.to_string()),
    }
}

/// Direct mode: ipam-service's engine on the datastore, in this process.
#[cfg(feature = "direct")]
mod direct {
    use std::sync::Arc;

    use ipam_api::{
        AssignBody, AssignIpBody, AssignIpResponse, AssignResponse, ErrorCode, HandleAddresses,
        PoolBody, ReleaseBody, ReleaseResponse,
    };
    use ipam_core::{HandleId, NodeName};
    pub use ipam_service::DatastoreSettings;
    use ipam_service::{open, IpamService, LocalService, ServiceError};
    pub use ipam_store::etcd::EtcdOptions;
    use ipam_store::StoreError;

    use crate::error::CniError;

    /// The engine on the datastore the config names.
    pub struct Direct {
        service: Box<dyn IpamService>,
    }

    impl Direct {
        /// Opens the datastore `settings` name.
        pub async fn open(settings: DatastoreSettings) -> Result<Direct, CniError> {
            let opened = open(&settings).await.map_err(from_store)?;
            let engine = Arc::new(opened.engine());
            // Labels where the datastore keeps them: the Node and the
            // Namespace on Kubernetes, as Calico's plugin reads them.
            Ok(Direct {
                service: Box::new(LocalService::with_labels(engine, opened.labels)),
            })
        }

        pub async fn pools(&self) -> Result<Vec<PoolBody>, CniError> {
            self.service.pools().await.map_err(from_service)
        }

        pub async fn assign(&self, body: AssignBody) -> Result<AssignResponse, CniError> {
            self.service.assign(body).await.map_err(from_service)
        }

        pub async fn assign_ip(&self, body: AssignIpBody) -> Result<AssignIpResponse, CniError> {
            self.service.assign_ip(body).await.map_err(from_service)
        }

        /// `None` when the allocation changed since (see
        /// [`super::Connection::release_if_unchanged`]).
        pub async fn release(
            &self,
            body: ReleaseBody,
        ) -> Result<Option<ReleaseResponse>, CniError> {
            match self.service.release(body).await {
                Ok(out) => Ok(Some(out)),
                Err(e) if e.code() == Some(&ErrorCode::AllocationChanged) => Ok(None),
                Err(e) => Err(from_service(e)),
            }
        }

        pub async fn release_handle(&self, handle: &str) -> Result<ReleaseResponse, CniError> {
            self.service
                .release_handle(&HandleId::new(handle))
                .await
                .map_err(from_service)
        }

        pub async fn handle_addresses(
            &self,
            handle: &str,
        ) -> Result<Option<HandleAddresses>, CniError> {
            self.service
                .handle_addresses(&HandleId::new(handle))
                .await
                .map_err(from_service)
        }

        pub async fn handles_on_node(
            &self,
            node: &str,
            prefix: &str,
        ) -> Result<Vec<HandleAddresses>, CniError> {
            self.service
                .handles_on_node(&NodeName::new(node), prefix)
                .await
                .map_err(from_service)
        }

        pub async fn ready(&self) -> Result<(), CniError> {
            self.service.ready().await.map_err(from_service)
        }
    }

    fn from_service(error: ServiceError) -> CniError {
        match error {
            ServiceError::Refused { code, message } => CniError::from_ipam(&code, message),
            ServiceError::Unanswered(error) => super::from_client(error),
        }
    }

    // Opening fails on what the config says (an endpoint that is not a
    // URL, a kubeconfig that cannot be read) unless the datastore is
    // merely down.
    fn from_store(error: StoreError) -> CniError {
        if error.is_retryable() {
            CniError::try_again(error.to_string())
        } else {
            CniError::invalid_config(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Built without direct mode, a datastore config is the config's fault
    // (code 7), said so, never a fallback to something else.
    #[cfg(not(feature = "direct"))]
    #[test]
    fn without_direct_mode_a_datastore_config_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let backend = Backend::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
        };
        let error = runtime
            .block_on(Connection::open(&backend, Duration::from_secs(1)))
            .err()
            .unwrap();
        assert_eq!(error.code, crate::error::INVALID_NETWORK_CONFIG);
        assert!(error.details.contains("direct mode"), "{}", error.details);
    }

    // The server's error answer keeps its code; no answer is a retry.
    #[test]
    fn server_failures_become_the_cni_codes_the_runtime_acts_on() {
        let unreachable = ClientError::Unreachable {
            endpoint: "unix:/nonexistent".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(from_client(unreachable).code, crate::error::TRY_AGAIN_LATER);
    }
}
