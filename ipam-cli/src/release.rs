//! `ipamctl release`: addresses named on the command line, or the leaks a
//! check report found (calicoctl/commands/ipam/release.go).
//!
//! From a report, an address is released only if it still has the handle
//! and the sequence number the report recorded for it: the engine refuses
//! the release otherwise, so an address released and handed to a new pod
//! since the report is left alone (Calico passes the same two in
//! `ReleaseOptions`). Each address is released on its own, so that one
//! reassigned address does not hold back the others. With several reports,
//! only what every one of them found, with the same handle and sequence
//! number, is released: Calico's advice is to take two reports some time
//! apart, so that an address caught half-way through an assignment is not
//! mistaken for a leak. A handle with no addresses is deleted only if it
//! still holds none.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use ipam_api::{AddressState, ReleaseItem};
use ipam_core::check::{CheckReport, FindingKind, REPORT_SCHEMA_VERSION};

use crate::args::ReleaseArgs;
use crate::connection::{Connection, ReleaseOutcome};
use crate::error::CliError;

/// One leaked allocation, as a report records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeakedAddress {
    /// The address.
    pub address: IpAddr,
    /// The handle that held it.
    pub handle: Option<String>,
    /// The block's sequence number for it.
    pub sequence_number: u64,
}

/// What a set of reports found leaked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leaks {
    /// Allocations of pods or nodes that no longer exist.
    pub addresses: BTreeSet<LeakedAddress>,
    /// Handles that hold no address.
    pub handles: BTreeSet<String>,
}

/// Runs `ipamctl release`.
pub async fn run(
    connection: &Connection,
    args: &ReleaseArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if !args.reports.is_empty() {
        let reports = args
            .reports
            .iter()
            .map(|path| read_report(path))
            .collect::<Result<Vec<_>, _>>()?;
        return release_leaks(connection, &leaks_in_all(&reports), out).await;
    }
    release_addresses(connection, &args.ips, out).await
}

fn say(out: &mut dyn Write, line: &str) -> Result<(), CliError> {
    writeln!(out, "{line}").map_err(CliError::io("writing to stdout"))
}

// `--ip`: Calico's messages; an address that is not assigned is an error
// (exit 3), after every other address has been tried.
async fn release_addresses(
    connection: &Connection,
    addresses: &[IpAddr],
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut not_assigned = Vec::new();
    for &address in addresses {
        let item = ReleaseItem {
            address,
            handle: None,
            sequence_number: None,
        };
        match connection.release_one(item).await? {
            ReleaseOutcome::Released => {
                say(out, &format!("Successfully released IP address {address}"))?
            }
            ReleaseOutcome::AlreadyFree | ReleaseOutcome::Changed => {
                not_assigned.push(address.to_string())
            }
        }
    }
    match not_assigned.len() {
        0 => Ok(()),
        1 => Err(CliError::NotFound(format!(
            "IP address {} is not assigned",
            not_assigned[0]
        ))),
        _ => Err(CliError::NotFound(format!(
            "IP addresses {} are not assigned",
            not_assigned.join(", ")
        ))),
    }
}

/// Reads a report written by `ipamctl check -o FILE`, refusing one of a
/// newer schema version. Version 1 reads as 2: 2 only added kinds and a
/// field.
pub fn read_report(path: &Path) -> Result<CheckReport, CliError> {
    let unusable = |reason: String| {
        CliError::Usage(format!(
            "--from-report {}: {reason}; write a new one with `ipamctl check -o FILE`",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| unusable(e.to_string()))?;
    // The version is read first, so that a report of another version is
    // refused as such rather than for a field it spells differently.
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| unusable(format!("not JSON: {e}")))?
        .get("schemaVersion")
        .and_then(serde_json::Value::as_u64);
    match version {
        Some(v) if (1..=u64::from(REPORT_SCHEMA_VERSION)).contains(&v) => {}
        Some(v) => {
            return Err(unusable(format!(
            "schemaVersion {v} is not a version this ipamctl reads (1 to {REPORT_SCHEMA_VERSION})"
        )))
        }
        None => return Err(unusable("no schemaVersion: not a check report".to_string())),
    }
    serde_json::from_str(&text).map_err(|e| unusable(format!("not a check report: {e}")))
}

/// The leaks of one report.
pub fn leaks_of(report: &CheckReport) -> Leaks {
    let mut leaks = Leaks::default();
    for finding in &report.findings {
        match finding.kind {
            FindingKind::PodGone | FindingKind::AllocationNodeGone => {
                // Without the sequence number a release could free an
                // address handed out again since: such a finding is not
                // acted on.
                if let (Some(address), Some(sequence_number)) =
                    (finding.address, finding.sequence_number)
                {
                    leaks.addresses.insert(LeakedAddress {
                        address,
                        handle: finding.handle.clone(),
                        sequence_number,
                    });
                }
            }
            FindingKind::HandleWithoutAllocations => {
                if let Some(handle) = &finding.handle {
                    leaks.handles.insert(handle.clone());
                }
            }
            _ => {}
        }
    }
    leaks
}

/// What every report found leaked, each address with the same handle and
/// sequence number in all.
pub fn leaks_in_all(reports: &[CheckReport]) -> Leaks {
    let mut all = reports.iter().map(leaks_of);
    let Some(first) = all.next() else {
        return Leaks::default();
    };
    all.fold(first, |acc, next| Leaks {
        addresses: acc
            .addresses
            .intersection(&next.addresses)
            .cloned()
            .collect(),
        handles: acc.handles.intersection(&next.handles).cloned().collect(),
    })
}

async fn release_leaks(
    connection: &Connection,
    leaks: &Leaks,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if leaks.addresses.is_empty() {
        say(out, "Report didn't contain any leaked IPs to clean up.")?;
    } else {
        say(
            out,
            &format!("Releasing {} leaked IPs...", leaks.addresses.len()),
        )?;
        let (mut released, mut free, mut changed) = (0, 0, Vec::new());
        for leak in &leaks.addresses {
            let item = ReleaseItem {
                address: leak.address,
                handle: leak.handle.clone(),
                sequence_number: Some(leak.sequence_number),
            };
            match connection.release_one(item).await? {
                ReleaseOutcome::Released => released += 1,
                ReleaseOutcome::AlreadyFree => free += 1,
                // The expectation fails on a free address too (its sequence
                // number is gone with it): tell the two apart.
                ReleaseOutcome::Changed => {
                    match connection.address(leak.address).await?.info.status {
                        AddressState::InUse => changed.push(leak.address.to_string()),
                        // Released since the report, and cooling down.
                        AddressState::InCooldown | AddressState::Free | AddressState::NotInPool => {
                            free += 1
                        }
                    }
                }
            }
        }
        say(out, &format!("Released {released} IPs successfully."))?;
        if free > 0 {
            say(
                out,
                &format!(
                    "{free} addresses marked as leaked in the report had already been cleaned up."
                ),
            )?;
        }
        if !changed.is_empty() {
            say(
                out,
                &format!(
                    "{} addresses were reassigned since the report and were left alone: {}",
                    changed.len(),
                    changed.join(", ")
                ),
            )?;
        }
    }
    if leaks.handles.is_empty() {
        say(out, "Report didn't contain any handles to clean up.")?;
        return Ok(());
    }
    say(
        out,
        &format!("Deleting {} leaked handles...", leaks.handles.len()),
    )?;
    let (mut deleted, mut skipped) = (0, Vec::new());
    for handle in &leaks.handles {
        if !connection.handle_addresses(handle).await?.is_empty() {
            skipped.push(handle.clone());
            continue;
        }
        connection.release_handle(handle).await?;
        deleted += 1;
    }
    say(
        out,
        &format!("Released {deleted} handles; {} skipped.", skipped.len()),
    )?;
    if !skipped.is_empty() {
        say(
            out,
            &format!(
                "Skipped (they hold addresses again): {}",
                skipped.join(", ")
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_core::check::{Finding, Summary};

    fn finding(kind: FindingKind, address: &str, sequence: Option<u64>) -> Finding {
        serde_json::from_value(serde_json::json!({
            "kind": kind,
            "address": address,
            "handle": format!("h-{address}"),
            "sequenceNumber": sequence,
            "message": "",
        }))
        .unwrap()
    }

    fn report(findings: Vec<Finding>) -> CheckReport {
        CheckReport {
            schema_version: REPORT_SCHEMA_VERSION,
            summary: Summary::default(),
            skipped: Vec::new(),
            findings,
        }
    }

    #[test]
    fn only_leaks_with_a_sequence_number_are_released_and_each_once() {
        let mut handle = finding(FindingKind::HandleWithoutAllocations, "10.0.0.9", None);
        handle.address = None;
        let leaks = leaks_of(&report(vec![
            finding(FindingKind::PodGone, "10.0.0.1", Some(7)),
            finding(FindingKind::AllocationNodeGone, "10.0.0.1", Some(7)),
            finding(FindingKind::PodGone, "10.0.0.2", None),
            finding(FindingKind::HandleMissing, "10.0.0.3", Some(1)),
            handle,
        ]));
        let addresses: Vec<String> = leaks
            .addresses
            .iter()
            .map(|l| format!("{} {:?} {}", l.address, l.handle, l.sequence_number))
            .collect();
        assert_eq!(addresses, ["10.0.0.1 Some(\"h-10.0.0.1\") 7"]);
        assert_eq!(
            leaks.handles.into_iter().collect::<Vec<_>>(),
            ["h-10.0.0.9"]
        );
    }

    #[test]
    fn several_reports_release_only_what_all_found_with_the_same_sequence_number() {
        let first = report(vec![
            finding(FindingKind::PodGone, "10.0.0.1", Some(7)),
            finding(FindingKind::PodGone, "10.0.0.2", Some(8)),
            finding(FindingKind::PodGone, "10.0.0.3", Some(9)),
        ]);
        let second = report(vec![
            finding(FindingKind::PodGone, "10.0.0.1", Some(7)),
            finding(FindingKind::PodGone, "10.0.0.2", Some(12)),
        ]);
        let leaks = leaks_in_all(&[first, second]);
        let addresses: Vec<String> = leaks
            .addresses
            .iter()
            .map(|l| l.address.to_string())
            .collect();
        assert_eq!(addresses, ["10.0.0.1"]);
        assert_eq!(leaks_in_all(&[]), Leaks::default());
    }
}
