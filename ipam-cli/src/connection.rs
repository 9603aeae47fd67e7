//! Where ipamctl reads and writes IPAM state: through a running
//! ipam-server (its `/v1` API, with ipam-client), or straight from a
//! datastore with the same engine the server runs. The flags name a
//! [`Backend`] (where state is); [`Connection`] is that backend opened.
//! Every command is written once against [`Connection`], which asks
//! ipam-service's [`IpamService`] in either mode, so that the two answer
//! with the same types and the same failures, and their output is the
//! same. Only reads the API has no single call for (a whole snapshot)
//! take a shorter way in direct mode.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipam_api::labels::NodeLabelsResponse;
use ipam_api::{
    AddressInfo, AddressState, AffinityListItem, BlockDetail, ConfigBody, ErrorCode, PoolBody,
    PoolSpecBody, ReleaseBody, ReleaseItem, SplitBody, SplitResponse, UsageResponse,
};
use ipam_client::{read_token_file, Client, Endpoint};
use ipam_core::block::{AttributeParts, BlockSpec};
use ipam_core::check::{check, CheckReport, Finding, FindingKind, Liveness, SkippedCheck};
use ipam_core::timestamp::parse_rfc3339;
use ipam_core::usage::{borrowed, classify, BorrowedAddress, Borrowing};
use ipam_core::{
    Affinity, AffinityState, Block, BlockCidr, HandleId, IpamConfig, NodeName, Now, Pool, PoolName,
    Snapshot,
};
use ipam_service::{open, DatastoreSettings, IpamService, LocalService, ServiceError};
use ipam_store::StoreError;
use ipnet::IpNet;

use crate::error::{CliError, DATASTORE_HINT, SERVER_DATASTORE_HINT};
use crate::progress::Progress;

/// The server ipamctl talks to when told nothing else.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9310";

/// A datastore ipamctl can open directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatastoreKind {
    /// ipam-server's embedded store in `--data-dir` (only while no server
    /// holds it).
    Embedded,
    /// etcd v3 in Calico's key layout (`--etcd-endpoints`).
    Etcd,
    /// Calico's custom resources in a Kubernetes cluster (`--kubeconfig`).
    Kubernetes,
}

/// Where IPAM state is, as the flags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Through ipam-server.
    Server {
        /// `http://HOST:PORT` or `unix:PATH`.
        url: String,
        /// File holding the bearer token.
        token_file: Option<PathBuf>,
        /// Longest any one call may take.
        timeout: Duration,
    },
    /// Straight to a datastore.
    Datastore(DatastoreSettings),
}

/// An open connection to IPAM state.
pub enum Connection {
    /// Straight to a datastore, through the engine.
    Direct(LocalService),
    /// Through ipam-server's API.
    Server(Client),
}

/// Who holds an address (`show --ip`): the API's answer, plus the
/// alternate owner's attributes Calico records during a KubeVirt live
/// migration (read only in direct mode: the API does not carry them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressReport {
    /// Status, pool, handle and attributes.
    #[serde(flatten)]
    pub info: AddressInfo,
    /// The alternate owner's attributes.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub alternate_attributes: std::collections::BTreeMap<String, String>,
}

/// Borrowed addresses (`show --show-borrowed`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Borrowed {
    /// The addresses, by block (in Calico's listing order) then address.
    pub addresses: Vec<BorrowedAddress>,
    /// Allocations without a `node` attribute, which cannot be classified.
    pub unclassified: u32,
}

/// What releasing one address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// It was allocated and is free now.
    Released,
    /// It was free already.
    AlreadyFree,
    /// Its handle or sequence number is no longer the expected one: it was
    /// released and handed out again since; nothing was changed.
    Changed,
}

impl Connection {
    /// Opens the backend the flags describe. A datastore that cannot be
    /// reached fails here (etcd and Kubernetes connect lazily, so their
    /// first call is made here), not half-way through a command.
    pub async fn open(backend: &Backend) -> Result<Connection, CliError> {
        let settings = match backend {
            Backend::Server {
                url,
                token_file,
                timeout,
            } => {
                let endpoint = url
                    .parse::<Endpoint>()
                    .map_err(|e| CliError::Usage(format!("--server: {e}")))?;
                let mut client = Client::new(endpoint, *timeout);
                if let Some(path) = token_file {
                    client = client.with_token(read_token_file(path)?);
                }
                return Ok(Connection::Server(client));
            }
            Backend::Datastore(settings) => settings,
        };
        match settings {
            // Opening creates a missing directory: a mistyped --data-dir
            // would show an empty store instead of an error.
            DatastoreSettings::Embedded { data_dir } if !data_dir.is_dir() => {
                return Err(CliError::NotFound(format!(
                    "--data-dir {}: no such directory (ipam-server creates its data dir on first \
                     start; pass the one it uses)",
                    data_dir.display()
                )))
            }
            DatastoreSettings::Etcd { endpoints, .. } if endpoints.is_empty() => {
                return Err(CliError::Usage(
                    "--datastore etcd needs --etcd-endpoints URL[,URL...] (or IPAM_ETCD_ENDPOINTS)"
                        .to_string(),
                ))
            }
            _ => {}
        }
        let opened = match (open(settings).await, settings) {
            (Ok(opened), _) => opened,
            (
                Err(error @ StoreError::Unavailable { .. }),
                DatastoreSettings::Embedded { data_dir },
            ) => {
                return Err(CliError::Unavailable {
                    message: error.to_string(),
                    hint: format!(
                        "an ipam-server using {} holds it while it runs: go through it with \
                         --server URL (default {DEFAULT_SERVER}) instead of --datastore embedded",
                        data_dir.display()
                    ),
                })
            }
            (Err(error), DatastoreSettings::Embedded { .. }) => return Err(error.into()),
            (Err(error), _) => return Err(flag_error(error)),
        };
        let engine = Arc::new(opened.engine());
        let connection = Connection::Direct(LocalService::with_labels(engine, opened.labels));
        // One read now, so that an unreachable datastore is reported as such
        // before anything else.
        connection
            .service()
            .ready()
            .await
            .map_err(|e| connection.error(e))?;
        Ok(connection)
    }

    /// The `/v1` operations, in whichever mode.
    pub(crate) fn service(&self) -> &dyn IpamService {
        match self {
            Connection::Direct(local) => local,
            Connection::Server(client) => client,
        }
    }

    /// What a failure means to the user: the same codes in both modes; the
    /// hint for an unreachable datastore says which process could not
    /// reach it.
    pub(crate) fn error(&self, error: ServiceError) -> CliError {
        let hint = match self {
            Connection::Direct(_) => DATASTORE_HINT,
            Connection::Server(_) => SERVER_DATASTORE_HINT,
        };
        match error {
            ServiceError::Refused { code, message } => CliError::refused(&code, message, hint),
            ServiceError::Unanswered(error) => error.into(),
        }
    }

    /// Per-pool and per-block usage (`GET /v1/usage`).
    pub async fn usage(&self) -> Result<UsageResponse, CliError> {
        self.service().usage().await.map_err(|e| self.error(e))
    }

    /// Borrowed addresses. Through the server, every block is read one by
    /// one (`GET /v1/blocks`), with a progress bar on a terminal.
    pub async fn borrowed(&self) -> Result<Borrowed, CliError> {
        let (mut addresses, unclassified) = match self {
            Connection::Direct(local) => borrowed(&local.engine().snapshot().await?),
            Connection::Server(client) => {
                let cidrs = client.usage().await?.block_cidrs();
                let progress = Progress::bar(cidrs.len() as u64, "reading blocks");
                let mut found = Vec::new();
                let mut unclassified = 0;
                for cidr in cidrs {
                    progress.inc();
                    // A block deleted since the usage was read holds nothing.
                    let Some(detail) = client.block(cidr).await? else {
                        continue;
                    };
                    let block = block_cidr(detail.cidr)?;
                    let owner = detail.node.unwrap_or_default();
                    for allocation in &detail.allocations {
                        let attribute =
                            |key: &str| allocation.attributes.get(key).map(String::as_str);
                        match classify(allocation.address, block, &owner, attribute) {
                            Borrowing::Borrowed(b) => found.push(b),
                            Borrowing::Unclassified => unclassified += 1,
                            Borrowing::Own => {}
                        }
                    }
                }
                progress.finish();
                (found, unclassified)
            }
        };
        // calicoctl lists blocks as the datastore lists them: by object name.
        addresses.sort_by_cached_key(|b| (b.block.object_name(), address_order(b.address)));
        Ok(Borrowed {
            addresses,
            unclassified,
        })
    }

    /// The IPAM configuration.
    pub async fn config(&self) -> Result<ConfigBody, CliError> {
        self.service().config().await.map_err(|e| self.error(e))
    }

    /// Stores the IPAM configuration (validated as Calico validates it;
    /// fields of a newer Calico stored in the config are kept).
    pub async fn set_config(&self, config: &ConfigBody) -> Result<(), CliError> {
        self.service()
            .set_config(config.clone())
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Who holds an address, or that it is free, or in no pool.
    pub async fn address(&self, address: IpAddr) -> Result<AddressReport, CliError> {
        match self {
            Connection::Direct(local) => {
                let (info, attribute) = local.address_with_attribute(address).await?;
                let alternate_attributes = match (&info.status, attribute) {
                    (AddressState::InUse, Some(attribute)) => attribute.alternate_owner().to_map(),
                    _ => Default::default(),
                };
                Ok(AddressReport {
                    info,
                    alternate_attributes,
                })
            }
            Connection::Server(client) => Ok(AddressReport {
                info: client.address(address).await?,
                alternate_attributes: Default::default(),
            }),
        }
    }

    /// The consistency report; `live` says which pod and node checks run.
    /// Through the server, whose `GET /v1/check` knows neither, they run
    /// here over the blocks and affinities it lists (`GET /v1/blocks`,
    /// block by block, and `GET /v1/affinities`).
    pub async fn check(&self, live: &Liveness) -> Result<CheckReport, CliError> {
        match self {
            Connection::Direct(local) => {
                let progress = Progress::spinner("reading blocks, handles and affinities");
                let snapshot = local.engine().snapshot().await?;
                progress.message(&format!("checking {} blocks", snapshot.blocks().count()));
                let report = check(&snapshot, live, Now::from(SystemTime::now()));
                progress.finish();
                Ok(report)
            }
            Connection::Server(client) => {
                let progress = Progress::spinner("ipam-server is checking");
                let mut report = client.check().await?.report;
                progress.finish();
                if live.pods.is_some() || live.nodes.is_some() {
                    let found = liveness_findings(client, live).await?;
                    if live.pods.is_some() {
                        report.add_findings(SkippedCheck::PodLiveness, found.pods);
                    }
                    if live.nodes.is_some() {
                        report.add_findings(SkippedCheck::NodeLiveness, found.nodes);
                    }
                }
                Ok(report)
            }
        }
    }

    /// Releases one address, provided it still has the handle and sequence
    /// number given (when given).
    pub async fn release_one(&self, item: ReleaseItem) -> Result<ReleaseOutcome, CliError> {
        let address = item.address;
        let body = ReleaseBody {
            addresses: vec![item],
        };
        match self.service().release(body).await {
            Ok(out) if out.released.contains(&address) => Ok(ReleaseOutcome::Released),
            Ok(_) => Ok(ReleaseOutcome::AlreadyFree),
            Err(e) if e.code() == Some(&ErrorCode::AllocationChanged) => {
                Ok(ReleaseOutcome::Changed)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// The addresses a handle holds now.
    pub async fn handle_addresses(&self, handle: &str) -> Result<Vec<IpNet>, CliError> {
        Ok(self
            .service()
            .handle_addresses(&HandleId::new(handle))
            .await
            .map_err(|e| self.error(e))?
            .map(|h| h.addresses)
            .unwrap_or_default())
    }

    /// Releases a handle's addresses and deletes the handle.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>, CliError> {
        Ok(self
            .service()
            .release_handle(&HandleId::new(handle))
            .await
            .map_err(|e| self.error(e))?
            .released)
    }

    /// Every pool, by name.
    pub async fn pools(&self) -> Result<Vec<PoolBody>, CliError> {
        self.service().pools().await.map_err(|e| self.error(e))
    }

    /// Creates a pool; one that overlaps another is refused.
    pub async fn create_pool(&self, pool: Pool) -> Result<(), CliError> {
        self.service()
            .create_pool(PoolBody::from(&pool))
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Replaces a pool's spec (its CIDR and block size cannot change).
    pub async fn update_pool(&self, pool: Pool) -> Result<(), CliError> {
        let spec = PoolSpecBody {
            spec: pool.spec().clone(),
        };
        self.service()
            .update_pool(&PoolName::new(pool.name()), spec)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// A node's labels and where they are kept.
    pub async fn node_labels(&self, node: &NodeName) -> Result<NodeLabelsResponse, CliError> {
        self.service()
            .node_labels(node)
            .await
            .map_err(|e| self.error(e))
    }

    /// Replaces a node's labels, where the IPAM keeps them.
    pub async fn set_node_labels(
        &self,
        node: &NodeName,
        labels: BTreeMap<String, String>,
    ) -> Result<NodeLabelsResponse, CliError> {
        self.service()
            .set_node_labels(node, labels)
            .await
            .map_err(|e| self.error(e))
    }

    /// Splits a pool into 2^k child pools (calicoctl `ipam split`).
    pub async fn split_pool(&self, body: &SplitBody) -> Result<SplitResponse, CliError> {
        self.service()
            .split_pool(body.clone())
            .await
            .map_err(|e| self.error(e))
    }

    /// Deletes a pool as Calico does: disabled, its affinities released,
    /// then removed; addresses in use stay allocated until released.
    pub async fn delete_pool(&self, name: &str) -> Result<(), CliError> {
        self.service()
            .delete_pool(&PoolName::new(name))
            .await
            .map_err(|e| self.error(e))
    }
}

// While connecting, a refusal is about what the flags say (an endpoint
// that is not a URL, a kubeconfig that cannot be read): a usage error.
fn flag_error(error: StoreError) -> CliError {
    match error {
        StoreError::Invalid { .. } => CliError::Usage(error.to_string()),
        other => other.into(),
    }
}

// The podGone findings for the allocations ipam-server lists: ipam-core's
// check, run over the server's pools and blocks rebuilt in Calico's form
// (one attribute entry per allocation, which the check does not mind), so
// that the findings are exactly those a direct check makes.
/// What the server's check cannot know, found here: its blocks and
/// affinities rebuilt from `GET /v1/blocks` and `GET /v1/affinities`, and
/// ipam-core's check run over them with the live pods and nodes.
struct LivenessFindings {
    pods: Vec<Finding>,
    nodes: Vec<Finding>,
}

async fn liveness_findings(client: &Client, live: &Liveness) -> Result<LivenessFindings, CliError> {
    let pools = client
        .pools()
        .await?
        .into_iter()
        .map(|p| Pool::new(p.name, p.spec))
        .collect::<Result<Vec<_>, _>>()?;
    let cidrs = client.usage().await?.block_cidrs();
    let mut snapshot = Snapshot::new(IpamConfig::default(), pools, &[]);
    let progress = Progress::bar(cidrs.len() as u64, "reading blocks");
    for cidr in cidrs {
        progress.inc();
        if let Some(detail) = client.block(cidr).await? {
            snapshot.insert_block(rebuilt_block(&detail)?);
        }
    }
    progress.finish();
    if live.nodes.is_some() {
        for item in client.affinities().await? {
            snapshot.insert_affinity(rebuilt_affinity(&item)?);
        }
    }
    // Only the pod and node findings are kept: the time dates nothing here.
    let findings = check(&snapshot, live, Now::from(SystemTime::now())).findings;
    let (pods, rest): (Vec<Finding>, Vec<Finding>) = findings
        .into_iter()
        .partition(|f| f.kind == FindingKind::PodGone);
    let nodes = rest
        .into_iter()
        .filter(|f| {
            matches!(
                f.kind,
                FindingKind::BlockNodeGone
                    | FindingKind::AffinityNodeGone
                    | FindingKind::AllocationNodeGone
            )
        })
        .collect();
    Ok(LivenessFindings { pods, nodes })
}

// An affinity as Calico stores it, from what `GET /v1/affinities` says.
fn rebuilt_affinity(item: &AffinityListItem) -> Result<Affinity, CliError> {
    let state: AffinityState =
        serde_json::from_value(serde_json::Value::String(item.state.clone())).map_err(|e| {
            CliError::Refused(format!(
                "ipam-server listed an affinity of {}: {e}",
                item.node
            ))
        })?;
    let mut affinity = Affinity::new(item.node.clone(), block_cidr(item.cidr)?, state);
    affinity.affinity_type = Some(item.affinity_type.clone());
    Ok(affinity)
}

// A block as Calico stores it, from what `GET /v1/blocks` says of it.
fn rebuilt_block(detail: &BlockDetail) -> Result<Block, CliError> {
    let cidr = block_cidr(detail.cidr)?;
    let mut allocations = vec![None; cidr.size() as usize];
    let mut attributes = Vec::new();
    let mut sequence_numbers = BTreeMap::new();
    for allocation in &detail.allocations {
        let slot = allocations
            .get_mut(allocation.ordinal as usize)
            .ok_or_else(|| {
                CliError::Refused(format!(
                    "ipam-server listed ordinal {} in block {cidr}, which has {}",
                    allocation.ordinal,
                    cidr.size()
                ))
            })?;
        *slot = Some(attributes.len() as u32);
        let released_at = match &allocation.released_at {
            Some(text) => Some(parse_rfc3339(text).ok_or_else(|| {
                CliError::Refused(format!(
                    "ipam-server listed {} as released at {text:?}, which is not an RFC 3339 timestamp",
                    allocation.address
                ))
            })?),
            None => None,
        };
        attributes.push(
            AttributeParts {
                handle_id: allocation.handle.clone(),
                secondary: allocation.attributes.iter().collect(),
                released_at,
                ..AttributeParts::default()
            }
            .into(),
        );
        sequence_numbers.insert(allocation.ordinal.to_string(), allocation.sequence_number);
    }
    let unallocated = (0..cidr.size())
        .filter(|&o| allocations[o as usize].is_none())
        .collect();
    let spec = BlockSpec {
        cidr: cidr.to_string(),
        affinity: detail.affinity.clone(),
        affinity_claim_time: None,
        allocations,
        unallocated,
        attributes,
        sequence_number: sequence_numbers.values().max().map_or(0, |s| s + 1),
        sequence_number_for_allocation: sequence_numbers,
        deleted: false,
        strict_affinity: false,
        host_affinity: None,
        unknown: Default::default(),
    };
    Ok(Block::from_spec(spec)?)
}

fn block_cidr(net: IpNet) -> Result<BlockCidr, CliError> {
    BlockCidr::new(net).map_err(|e| {
        CliError::Refused(format!(
            "ipam-server listed {net}, which is not a block: {e}"
        ))
    })
}

// Addresses of one block sort numerically.
fn address_order(address: IpAddr) -> u128 {
    ipam_core::cidr::to_u128(address)
}
