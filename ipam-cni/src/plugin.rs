//! What each CNI command does, given a checked invocation and network
//! configuration. Matches calico-ipam (Calico v3.32.1,
//! cni-plugin/pkg/ipamplugin/ipam_plugin.go) where Calico defines the
//! behaviour: handle `<network>.<container id>`, attributes `node`,
//! `namespace`, `pod`, `timestamp`, DEL by handle then by the legacy
//! workload id. CHECK, GC and STATUS are ours (Calico's CHECK is a no-op
//! and it implements neither GC nor STATUS).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipam_api::{AssignBody, AssignIpBody};
use ipam_core::holder;
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::config::{NetConfig, PoolRef, ResultPrefix};
use crate::connection::{Connection, Granted};
use crate::env::{Command, Invocation};
use crate::error::{
    CniError, ALLOCATION_MISSING, INVALID_NETWORK_CONFIG, IO_FAILURE, PLUGIN_NOT_AVAILABLE,
    REFUSED, TRY_AGAIN_LATER,
};
use crate::result::add_result;
use crate::state::{Assignment, HeldAddress, PendingRelease, StateDir};
use crate::version::CniVersion;
use ipam_core::pool::subnet_edges;

/// The answer to VERSION.
pub fn version_info(requested: Option<&str>) -> Value {
    // Answer in the version asked about when it is one of ours.
    let version = requested
        .and_then(|v| CniVersion::parse(v).ok())
        .unwrap_or(CniVersion::LATEST);
    json!({
        "cniVersion": version.as_str(),
        "supportedVersions": CniVersion::ALL.map(CniVersion::as_str),
    })
}

/// Runs ADD, DEL, CHECK, GC or STATUS within the configuration's time
/// bound; returns what goes on stdout (nothing for DEL, CHECK, GC and
/// STATUS).
pub async fn execute(
    invocation: &Invocation,
    config: &NetConfig,
) -> Result<Option<Value>, CniError> {
    let command = invocation.command;
    let version = config.cni_version;
    let needs = |allowed: bool, since: &str| {
        if allowed {
            Ok(())
        } else {
            Err(CniError::incompatible_version(format!(
                "{} needs cniVersion {since} or later; the config says {version}",
                command.as_str()
            )))
        }
    };
    match command {
        Command::Check => needs(version.has_check(), "0.4.0")?,
        Command::Gc | Command::Status => needs(version.has_gc_and_status(), "1.1.0")?,
        _ => {}
    }
    let bound = config.timeout;
    let state = StateDir::new(&config.state_dir);
    let work = async {
        let connection = Connection::open(&config.backend, bound).await?;
        // Every run first makes the releases earlier DELs could not; an
        // ADD must not reuse a container id whose release is pending.
        let own = (command == Command::Add).then(|| handle_id(config, &invocation.container_id));
        if let Err(error) = replay_journal(&state, &connection, own.as_deref()).await {
            if own.is_some() {
                return Err(error);
            }
            // Only an ADD depends on the journal; the rest go on.
            tracing::warn!(details = %error.details, "the journal was not replayed");
        }
        match command {
            Command::Add => add(invocation, config, &connection, &state).await.map(Some),
            Command::Del => del(invocation, config, &connection, &state)
                .await
                .map(|_| None),
            Command::Check => check(invocation, config, &connection).await.map(|_| None),
            Command::Gc => gc(config, &connection, &state).await.map(|_| None),
            Command::Status => connection.ready().await.map(|_| None),
            Command::Version => Ok(Some(version_info(Some(version.as_str())))),
        }
    };
    let outcome = match tokio::time::timeout(bound, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(CniError::try_again(format!(
            "{} did not finish within {bound:?} (ipam.timeout_seconds)",
            command.as_str()
        ))),
    };
    if command == Command::Del {
        if let Err(error) = outcome {
            return Err(journal_failed_del(invocation, config, &state, error));
        }
    }
    if command == Command::Status {
        // STATUS reports unavailability with the spec's code 50.
        return outcome
            .map_err(|e| CniError::new(PLUGIN_NOT_AVAILABLE, "plugin not available", e.details));
    }
    outcome
}

/// The handle calico-ipam uses: `<network name>.<container id>`.
pub fn handle_id(config: &NetConfig, container_id: &str) -> String {
    format!("{}.{container_id}", config.name)
}

/// The node the addresses are for: `nodename`, else the file Calico's node
/// writes (`nodename_file`, default /var/lib/calico/nodename), else the
/// host name, lower-cased (Calico's utils.DetermineNodename).
pub fn node_name(config: &NetConfig) -> Result<String, CniError> {
    if let Some(name) = &config.nodename {
        return Ok(name.clone());
    }
    if let Some(name) = read_trimmed(&config.nodename_file) {
        return Ok(name);
    }
    read_trimmed(Path::new("/proc/sys/kernel/hostname"))
        .map(|h| h.to_ascii_lowercase())
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "nodename is not set, {} is missing and the host name cannot be read",
                config.nodename_file.display()
            ))
        })
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Go's `time.Now().UTC().String()`, the form of Calico's `timestamp`
/// attribute: `2026-11-23 03:33:38.123456789 +0000 UTC` (trailing zeros of
/// the fraction dropped).
pub fn go_timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let rfc3339 = ipam_core::timestamp::format_rfc3339(since.as_secs() as i64);
    let date_time = rfc3339.trim_end_matches('Z').replacen('T', " ", 1);
    let nanos = since.subsec_nanos();
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!("{date_time}{fraction} +0000 UTC")
}

fn attributes(invocation: &Invocation, node: &str) -> BTreeMap<String, String> {
    let mut attributes = BTreeMap::from([
        (holder::NODE.to_string(), node.to_string()),
        ("timestamp".to_string(), go_timestamp(SystemTime::now())),
    ]);
    if let Some((namespace, pod)) = invocation.args.pod() {
        attributes.insert(holder::NAMESPACE.into(), namespace.into());
        attributes.insert(holder::POD.into(), pod.into());
    }
    attributes
}

async fn add(
    invocation: &Invocation,
    config: &NetConfig,
    connection: &Connection,
    state: &StateDir,
) -> Result<Value, CniError> {
    let node = node_name(config)?;
    let handle = handle_id(config, &invocation.container_id);
    let attributes = attributes(invocation, &node);
    if let Some(address) = invocation.args.ip {
        // A pool prefix needs the pool before anything is taken, to refuse
        // an address no host of that subnet can use.
        let pool = match config.result_prefix {
            ResultPrefix::Pool => requested_pool(connection, address).await?,
            ResultPrefix::Block | ResultPrefix::Host => None,
        };
        refuse_unusable(config, address, pool)?;
        tracing::info!(%handle, %node, %address, "assigning the requested address");
        let granted = connection
            .assign_ip(AssignIpBody {
                handle: handle.clone(),
                node,
                address,
                attributes,
                intended_use: None,
            })
            .await?;
        record_assignment(state, &handle, &[granted]);
        let reported = match config.result_prefix {
            // Calico reports a chosen address as a host route
            // (cni-plugin/pkg/ipamplugin/ipam_plugin.go, cmdAdd with
            // `ipamArgs.IP`); so does "host".
            ResultPrefix::Block | ResultPrefix::Host => IpNet::from(address),
            // On the bridge like every other address of its pool.
            ResultPrefix::Pool => reported(
                ResultPrefix::Pool,
                &Granted {
                    pool: granted.pool.or(pool),
                    ..granted
                },
            )?,
        };
        return Ok(add_result(config.cni_version, &[reported], config.gateways));
    }
    let (ipv4_pools, ipv6_pools) = resolve_pools(config, connection).await?;
    tracing::info!(%handle, %node, ipv4 = config.assign_ipv4, ipv6 = config.assign_ipv6, "auto-assigning");
    let granted = connection
        .assign(AssignBody {
            handle: handle.clone(),
            node,
            ipv4: u32::from(config.assign_ipv4),
            ipv6: u32::from(config.assign_ipv6),
            ipv4_pools,
            ipv6_pools,
            attributes,
            // The IPAM reads them where Calico does, in either mode (the
            // server's datastore, or this plugin's: ipam-service's labels).
            node_labels: None,
            namespace_labels: None,
            intended_use: None,
            max_blocks_per_host: 0,
            // A container holding its own gateway's address is cut off
            // whatever the prefix: the gateways are never handed out.
            exclude: gateways(config).into_iter().map(IpNet::from).collect(),
            usable_with_pool_prefix: config.result_prefix == ResultPrefix::Pool,
            pod_annotations: config.pod_annotations,
            // Only beside podAnnotations, the one reader of it: an older
            // server, which refuses unknown fields, is not sent it
            // otherwise.
            pod_uid: invocation
                .args
                .pod_uid
                .clone()
                .filter(|_| config.pod_annotations),
        })
        .await?;
    record_assignment(state, &handle, &granted);
    let addresses = granted
        .iter()
        .map(|g| reported(config.result_prefix, g))
        .collect::<Result<Vec<IpNet>, CniError>>()?;
    tracing::info!(%handle, ?addresses, "assigned");
    Ok(add_result(config.cni_version, &addresses, config.gateways))
}

fn gateways(config: &NetConfig) -> Vec<IpAddr> {
    let v4 = config.gateways.ipv4.map(IpAddr::from);
    let v6 = config.gateways.ipv6.map(IpAddr::from);
    v4.into_iter().chain(v6).collect()
}

fn with_prefix(address: IpAddr, prefix: u8) -> IpNet {
    IpNet::new(address, prefix).expect("a pool's prefix fits its family")
}

// An address as `ipam.result_prefix` says to report it.
fn reported(prefix: ResultPrefix, granted: &Granted) -> Result<IpNet, CniError> {
    let address = granted.address.addr();
    match prefix {
        ResultPrefix::Block => Ok(granted.address),
        ResultPrefix::Host => Ok(IpNet::from(address)),
        ResultPrefix::Pool => match granted.pool {
            Some(pool) => Ok(with_prefix(address, pool.prefix_len())),
            None => Err(CniError::new(
                REFUSED,
                "refused by the IPAM",
                format!(
                    "{address} was assigned but the IPAM did not say its pool, which ipam.result_prefix \"pool\" reports (an ipam-server older than this plugin?)"
                ),
            )),
        },
    }
}

// The pool a requested `IP=` is in, when it is in one.
async fn requested_pool(
    connection: &Connection,
    address: IpAddr,
) -> Result<Option<IpNet>, CniError> {
    Ok(connection
        .pools()
        .await?
        .into_iter()
        .map(|(_, cidr)| cidr)
        .find(|cidr| cidr.contains(&address)))
}

// A requested `IP=` that the container could not use: a gateway, or under
// "pool" the pool's network or broadcast address.
fn refuse_unusable(
    config: &NetConfig,
    address: IpAddr,
    pool: Option<IpNet>,
) -> Result<(), CniError> {
    let why = if gateways(config).contains(&address) {
        let key = if address.is_ipv4() {
            "ipv4_gateway"
        } else {
            "ipv6_gateway"
        };
        Some(format!("it is the gateway (ipam.{key})"))
    } else {
        pool.filter(|p| subnet_edges(*p).iter().any(|e| e.addr() == address))
            .map(|p| format!("it is the network or broadcast address of pool {p}, unusable with ipam.result_prefix \"pool\""))
    };
    match why {
        Some(why) => Err(CniError::invalid_environment(format!(
            "CNI_ARGS IP={address}: {why}"
        ))),
        None => Ok(()),
    }
}

// The ADD record lets a DEL that cannot reach the IPAM release exactly
// these allocations later. Losing it is not fatal (the release then goes
// by handle), so a failure to write it does not fail the ADD.
fn record_assignment(state: &StateDir, handle: &str, granted: &[Granted]) {
    let assignment = Assignment {
        handle: handle.to_string(),
        addresses: granted
            .iter()
            .map(|g| HeldAddress {
                address: g.address.addr(),
                sequence_number: g.sequence_number,
            })
            .collect(),
    };
    if let Err(error) = state.record_assignment(&assignment) {
        tracing::warn!(%handle, %error, "could not record the assignment; a DEL during an outage will release by handle");
    }
}

// Calico's ResolvePools: a CIDR is used as it is, a name is looked up.
async fn resolve_pools(
    config: &NetConfig,
    connection: &Connection,
) -> Result<(Vec<IpNet>, Vec<IpNet>), CniError> {
    let named = config
        .ipv4_pools
        .iter()
        .chain(&config.ipv6_pools)
        .any(|p| matches!(p, PoolRef::Name(_)));
    let known = if named {
        connection.pools().await?
    } else {
        Vec::new()
    };
    // Refusals start with Calico's words (cni-plugin/internal/pkg/utils/
    // utils.go, ResolvePools), as Go prints them.
    let resolve = |refs: &[PoolRef], key: &str, ipv6: bool| -> Result<Vec<IpNet>, CniError> {
        refs.iter()
            .map(|pool| match pool {
                PoolRef::Cidr(cidr) => Ok(*cidr),
                PoolRef::Name(name) => match known.iter().find(|(n, _)| n == name) {
                    Some((_, cidr)) if matches!(cidr, IpNet::V6(_)) == ipv6 => Ok(*cidr),
                    Some((_, cidr)) => {
                        let family = if ipv6 { "IPv6" } else { "IPv4" };
                        Err(CniError::invalid_config(format!(
                            "ipam.{key}: {:?} isn't a {family} address (pool {name:?} is {cidr}, not an {family} pool)",
                            cidr.network().to_string()
                        )))
                    }
                    None => Err(CniError::invalid_config(format!(
                        "ipam.{key}: error parsing pool {name:?}: invalid CIDR address: {name} (there is no pool named {name:?})"
                    ))),
                },
            })
            .collect()
    };
    Ok((
        resolve(&config.ipv4_pools, "ipv4_pools", false)?,
        resolve(&config.ipv6_pools, "ipv6_pools", true)?,
    ))
}

async fn del(
    invocation: &Invocation,
    config: &NetConfig,
    connection: &Connection,
    state: &StateDir,
) -> Result<(), CniError> {
    let handle = handle_id(config, &invocation.container_id);
    let released = connection.release_handle(&handle).await?;
    tracing::info!(%handle, ?released, "released by handle");
    let legacy = legacy_handle(invocation);
    let released = connection.release_handle(&legacy).await?;
    if !released.is_empty() {
        tracing::info!(handle = %legacy, ?released, "released by workload id");
    }
    // Released: the ADD record, and a journal entry of an earlier failed
    // DEL of the same container, are spent.
    settle(state, &handle);
    Ok(())
}

// Calico also releases the id addresses had before handles were named
// after containers (v2.x upgrades): `<namespace>.<pod>`.
fn legacy_handle(invocation: &Invocation) -> String {
    match invocation.args.pod() {
        Some((namespace, pod)) => format!("{namespace}.{pod}"),
        None => invocation.container_id.clone(),
    }
}

fn settle(state: &StateDir, handle: &str) {
    if let Err(error) = state.settle(handle) {
        tracing::warn!(%handle, %error, "could not remove the journal entry; the next run releases again, which is harmless");
    }
    if let Err(error) = state.forget_assignment(handle) {
        tracing::warn!(%handle, %error, "could not remove the assignment record");
    }
}

// A DEL that could not release (the IPAM unreachable, or too slow) leaves
// its release in the journal, durably, and still fails with code 11 so
// that the runtime retries; whichever run comes first once the IPAM
// answers makes the release. Other failures are refusals a later replay
// would meet again: they are reported as they are.
fn journal_failed_del(
    invocation: &Invocation,
    config: &NetConfig,
    state: &StateDir,
    error: CniError,
) -> CniError {
    if error.code != TRY_AGAIN_LATER {
        return error;
    }
    let handle = handle_id(config, &invocation.container_id);
    let addresses = match state.assignment(&handle) {
        Ok(record) => record.map(|r| r.addresses),
        Err(error) => {
            tracing::warn!(%handle, %error, "the assignment record is unreadable; the release will go by handle");
            None
        }
    };
    let pending = PendingRelease {
        handle: handle.clone(),
        legacy_handle: Some(legacy_handle(invocation)),
        addresses,
        recorded_at: go_timestamp(SystemTime::now()),
    };
    match state.journal(&pending) {
        Ok(()) => {
            tracing::warn!(%handle, details = %error.details, "DEL recorded in the journal");
            CniError::try_again(format!(
                "{}; the release of {handle} is recorded in {} and will be made by the next run of the plugin that reaches the IPAM",
                error.details,
                state.root().join("journal").display()
            ))
        }
        Err(journal) => CniError::try_again(format!(
            "{}; recording the release of {handle} failed too: {journal}",
            error.details
        )),
    }
}

/// Makes the releases of the journal, oldest container ids first, under
/// the journal lock, and removes each entry once the IPAM has confirmed
/// it. Stops at the first failure that says the IPAM is unreachable. Fails
/// only when `own` (the handle an ADD is about to use) still has a pending
/// release: that ADD must wait for it, or the release would take the
/// container's new address.
async fn replay_journal(
    state: &StateDir,
    connection: &Connection,
    own: Option<&str>,
) -> Result<(), CniError> {
    let listed = state.pending_handles().map_err(journal_unreadable)?;
    if listed.is_empty() {
        return Ok(());
    }
    let _lock = state.lock_journal().await.map_err(journal_unreadable)?;
    let mut stopped = None;
    // Listed again under the lock: another run may have settled some.
    for handle in state.pending_handles().map_err(journal_unreadable)? {
        let pending = match state.pending(&handle) {
            Ok(Some(pending)) => pending,
            Ok(None) => continue,
            // Entries are written whole (rename), so this is a file that
            // is not ours; the name is still the handle, which is released
            // whole.
            Err(error) => {
                tracing::warn!(%handle, %error, "unreadable journal entry: releasing the handle whole");
                PendingRelease {
                    handle: handle.clone(),
                    legacy_handle: None,
                    addresses: None,
                    recorded_at: String::new(),
                }
            }
        };
        match replay(connection, &pending).await {
            Ok(()) => {
                tracing::info!(%handle, recorded_at = %pending.recorded_at, "made the release a DEL had recorded");
                settle(state, &handle);
            }
            Err(error) if matches!(error.code, TRY_AGAIN_LATER | INVALID_NETWORK_CONFIG) => {
                tracing::warn!(%handle, details = %error.details, "the journal waits for the IPAM");
                stopped = Some(error);
                break;
            }
            // A refusal would come again on every run: the entry goes, and
            // what it held is left to `ipamctl check`.
            Err(error) => {
                tracing::error!(%handle, details = %error.details, "the IPAM refused a recorded release; dropping it");
                settle(state, &handle);
            }
        }
    }
    let Some(own) = own else {
        return Ok(());
    };
    match state.pending(own) {
        Ok(None) => Ok(()),
        Ok(Some(_)) | Err(_) => Err(CniError::try_again(format!(
            "the release of {own} that an earlier DEL recorded in {} is not made yet ({}); the ADD of the same container waits for it",
            state.root().join("journal").display(),
            stopped.map_or_else(|| "see the log".to_string(), |e| e.details)
        ))),
    }
}

fn journal_unreadable(error: crate::state::StateError) -> CniError {
    CniError::new(
        IO_FAILURE,
        "I/O failure",
        format!("ipam.state_dir: {error}"),
    )
}

// One recorded release. With the ADD's record, each address is released
// only if the handle still holds it with the sequence number it was given
// (it may have been released and handed out again since); without one,
// the handle is released whole, which is safe because a handle names one
// container and an ADD of that container waits for this release.
async fn replay(connection: &Connection, pending: &PendingRelease) -> Result<(), CniError> {
    let handle = &pending.handle;
    match &pending.addresses {
        Some(addresses) => {
            for held in addresses {
                let freed = connection
                    .release_if_unchanged(handle, held.address, held.sequence_number)
                    .await?;
                if !freed {
                    tracing::info!(%handle, address = %held.address, "already free, or handed out again since: left alone");
                }
            }
        }
        None => {
            connection.release_handle(handle).await?;
        }
    }
    if let Some(legacy) = &pending.legacy_handle {
        connection.release_handle(legacy).await?;
    }
    Ok(())
}

async fn check(
    invocation: &Invocation,
    config: &NetConfig,
    connection: &Connection,
) -> Result<(), CniError> {
    let Some(expected) = &config.prev_addresses else {
        return Err(CniError::invalid_config(
            "prevResult is missing: CHECK verifies the result of an ADD",
        ));
    };
    let handle = handle_id(config, &invocation.container_id);
    let held: BTreeSet<IpAddr> = connection
        .addresses_of(&handle)
        .await?
        .iter()
        .map(IpNet::addr)
        .collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|a| !held.contains(&a.addr()))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        ALLOCATION_MISSING,
        "allocation missing",
        format!("handle {handle} no longer holds {}", missing.join(", ")),
    ))
}

async fn gc(config: &NetConfig, connection: &Connection, state: &StateDir) -> Result<(), CniError> {
    let Some(valid) = &config.valid_attachments else {
        return Err(CniError::invalid_config(
            "cni.dev/valid-attachments is missing: GC needs the attachments still in use",
        ));
    };
    let node = node_name(config)?;
    let prefix = handle_id(config, "");
    let keep: BTreeSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let mut failures = Vec::new();
    let mut failed = BTreeSet::new();
    let mut transient = false;
    for (handle, addresses) in connection.handles_on_node(&node, &prefix).await? {
        let container = &handle[prefix.len()..];
        if keep.contains(container) {
            continue;
        }
        // Keep going past a failure: the spec asks GC to remove as much as
        // it can and report what it could not.
        match connection.release_handle(&handle).await {
            Ok(_) => tracing::info!(%handle, ?addresses, "released by GC"),
            Err(error) => {
                transient |= error.code == crate::error::TRY_AGAIN_LATER;
                failures.push(format!("{handle}: {}", error.details));
                failed.insert(handle);
            }
        }
    }
    // ADD records of attachments no longer valid are spent, whether or not
    // the IPAM still held anything for them; those that failed stay. The
    // journal is left to the replay, which ran before.
    match state.assigned_handles() {
        Ok(recorded) => {
            for handle in recorded {
                let stale = handle
                    .strip_prefix(&prefix)
                    .is_some_and(|container| !keep.contains(container));
                if stale && !failed.contains(&handle) {
                    if let Err(error) = state.forget_assignment(&handle) {
                        tracing::warn!(%handle, %error, "could not remove the assignment record");
                    }
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not list the assignment records"),
    }
    if failures.is_empty() {
        return Ok(());
    }
    let details = format!("GC could not release {}", failures.join("; "));
    Err(if transient {
        CniError::try_again(details)
    } else {
        CniError::new(crate::error::REFUSED, "refused by the IPAM", details)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_like_gos_time_string() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(
            go_timestamp(at(1_779_507_218, 123_456_789)),
            "2026-05-23 03:33:38.123456789 +0000 UTC"
        );
        assert_eq!(
            go_timestamp(at(1_779_507_218, 500_000_000)),
            "2026-05-23 03:33:38.5 +0000 UTC"
        );
        assert_eq!(go_timestamp(at(0, 0)), "1970-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn version_answers_in_the_asked_version_when_supported() {
        assert_eq!(
            version_info(Some("0.4.0")),
            json!({"cniVersion": "0.4.0",
                   "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
        assert_eq!(version_info(Some("9.9.9"))["cniVersion"], "1.1.0");
        assert_eq!(version_info(None)["cniVersion"], "1.1.0");
    }
}
