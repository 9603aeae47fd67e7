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
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::config::{NetConfig, PoolRef};
use crate::connection::Connection;
use crate::env::{Command, Invocation};
use crate::error::{CniError, ALLOCATION_MISSING, PLUGIN_NOT_AVAILABLE};
use crate::result::add_result;
use crate::version::CniVersion;

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
    let work = async {
        let connection = Connection::open(&config.backend, bound).await?;
        match command {
            Command::Add => add(invocation, config, &connection).await.map(Some),
            Command::Del => del(invocation, config, &connection).await.map(|_| None),
            Command::Check => check(invocation, config, &connection).await.map(|_| None),
            Command::Gc => gc(config, &connection).await.map(|_| None),
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
        ("node".to_string(), node.to_string()),
        ("timestamp".to_string(), go_timestamp(SystemTime::now())),
    ]);
    if let Some((namespace, pod)) = invocation.args.pod() {
        attributes.insert("namespace".into(), namespace.into());
        attributes.insert("pod".into(), pod.into());
    }
    attributes
}

async fn add(
    invocation: &Invocation,
    config: &NetConfig,
    connection: &Connection,
) -> Result<Value, CniError> {
    let node = node_name(config)?;
    let handle = handle_id(config, &invocation.container_id);
    let attributes = attributes(invocation, &node);
    if let Some(address) = invocation.args.ip {
        tracing::info!(%handle, %node, %address, "assigning the requested address");
        connection
            .assign_ip(AssignIpBody {
                handle,
                node,
                address,
                attributes,
            })
            .await?;
        // A chosen address is reported as a host route (Calico).
        let full = if address.is_ipv4() { 32 } else { 128 };
        let net = IpNet::new(address, full).expect("full-length prefix");
        return Ok(add_result(config.cni_version, &[net], config.gateways));
    }
    let (ipv4_pools, ipv6_pools) = resolve_pools(config, connection).await?;
    tracing::info!(%handle, %node, ipv4 = config.assign_ipv4, ipv6 = config.assign_ipv6, "auto-assigning");
    let (ipv4, ipv6) = connection
        .assign(AssignBody {
            handle: handle.clone(),
            node,
            ipv4: u32::from(config.assign_ipv4),
            ipv6: u32::from(config.assign_ipv6),
            ipv4_pools,
            ipv6_pools,
            attributes,
            node_labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            intended_use: None,
            max_blocks_per_host: 0,
        })
        .await?;
    let addresses: Vec<IpNet> = ipv4.into_iter().chain(ipv6).collect();
    tracing::info!(%handle, ?addresses, "assigned");
    Ok(add_result(config.cni_version, &addresses, config.gateways))
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
    let resolve = |refs: &[PoolRef], key: &str, ipv6: bool| -> Result<Vec<IpNet>, CniError> {
        refs.iter()
            .map(|pool| match pool {
                PoolRef::Cidr(cidr) => Ok(*cidr),
                PoolRef::Name(name) => match known.iter().find(|(n, _)| n == name) {
                    Some((_, cidr)) if matches!(cidr, IpNet::V6(_)) == ipv6 => Ok(*cidr),
                    Some((_, cidr)) => Err(CniError::invalid_config(format!(
                        "ipam.{key}: pool {name:?} is {cidr}, not an {} pool",
                        if ipv6 { "IPv6" } else { "IPv4" }
                    ))),
                    None => Err(CniError::invalid_config(format!(
                        "ipam.{key}: there is no pool named {name:?}"
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
) -> Result<(), CniError> {
    let handle = handle_id(config, &invocation.container_id);
    let released = connection.release_handle(&handle).await?;
    tracing::info!(%handle, ?released, "released by handle");
    // Calico also releases the id addresses had before handles were
    // named after containers (v2.x upgrades): `<namespace>.<pod>`.
    let legacy = match invocation.args.pod() {
        Some((namespace, pod)) => format!("{namespace}.{pod}"),
        None => invocation.container_id.clone(),
    };
    let released = connection.release_handle(&legacy).await?;
    if !released.is_empty() {
        tracing::info!(handle = %legacy, ?released, "released by workload id");
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

async fn gc(config: &NetConfig, connection: &Connection) -> Result<(), CniError> {
    let Some(valid) = &config.valid_attachments else {
        return Err(CniError::invalid_config(
            "cni.dev/valid-attachments is missing: GC needs the attachments still in use",
        ));
    };
    let node = node_name(config)?;
    let prefix = handle_id(config, "");
    let keep: BTreeSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let mut failures = Vec::new();
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
            }
        }
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
