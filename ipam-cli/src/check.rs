//! `ipamctl check`: ipam-core's consistency check (Calico's `ipam check`,
//! calicoctl/commands/ipam/check.go) run over the whole state, a summary
//! on stdout, and with `-o FILE` the JSON report that `ipamctl release
//! --from-report` reads back (its schema is documented in
//! `ipam_core::check`: schemaVersion, summary, skipped, findings with
//! address, block, ordinal, handle and sequenceNumber).
//!
//! As calicoctl's, the check only reads, and finding problems is not a
//! failure: the exit code is 0 whenever the check ran.
//!
//! Pods and nodes that no longer exist are found only when the cluster can
//! be read: with `--datastore kubernetes`, or a `--kubeconfig`
//! (`KUBECONFIG`) next to another datastore, as calicoctl does. Through
//! ipam-server, whose `GET /v1/check` knows no pods or nodes, a kubeconfig
//! lets ipamctl check them itself over the blocks and affinities the
//! server lists.

use std::io::Write;
use std::path::{Path, PathBuf};

use ipam_core::check::{CheckReport, Liveness, SkippedCheck};

use crate::args::CheckArgs;
use crate::connection::Connection;
use crate::error::CliError;

/// Where the live pods and nodes are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessSource {
    /// Nowhere: the pod and node checks are skipped.
    None,
    /// The Kubernetes cluster of this kubeconfig (else `KUBECONFIG`,
    /// `~/.kube/config` or in-cluster).
    Kubernetes(Option<PathBuf>),
}

/// Runs `ipamctl check`.
pub async fn run(
    connection: &Connection,
    args: &CheckArgs,
    source: &LivenessSource,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let live = match source {
        LivenessSource::Kubernetes(kubeconfig) => {
            crate::liveness::from_kubernetes(kubeconfig.as_deref()).await?
        }
        LivenessSource::None => Liveness::default(),
    };
    // calicoctl prints the allocations as it loads the blocks, before
    // anything else (check.go, checkIPAM).
    let mut text = match args.show_all_ips {
        true => crate::all_ips::listing(connection).await?,
        false => String::new(),
    };
    let report = connection.check(&live).await?;
    if let Some(path) = &args.output {
        write_report(path, &report)?;
    }
    // As in calicoctl, --show-all-ips implies --show-problem-ips.
    let show_findings = args.show_problem_ips || args.show_all_ips;
    text.push_str(&summary(&report, show_findings, args.output.as_deref()));
    out.write_all(text.as_bytes())
        .map_err(CliError::io("writing to stdout"))
}

/// Writes the report as pretty JSON.
pub fn write_report(path: &Path, report: &CheckReport) -> Result<(), CliError> {
    let mut json = serde_json::to_string_pretty(report)
        .map_err(|e| CliError::Refused(format!("writing the report as JSON: {e}")))?;
    json.push('\n');
    std::fs::write(path, json).map_err(CliError::io(format!(
        "writing the report to {}",
        path.display()
    )))
}

/// The summary printed on stdout.
pub fn summary(report: &CheckReport, show_findings: bool, written_to: Option<&Path>) -> String {
    let s = &report.summary;
    let mut text = format!(
        "Checked {} IPAM blocks recording {} allocations, {} handles and {} affinities.\n",
        s.blocks_checked, s.addresses_in_use, s.handles, s.affinities
    );
    if s.addresses_released > 0 {
        text.push_str(&format!(
            "  {} of the allocations are released addresses awaiting deallocation (IP cooldown).\n",
            s.addresses_released
        ));
    }
    if show_findings {
        for finding in &report.findings {
            text.push_str(&format!("  {}\n", finding.message));
        }
    }
    for (kind, count) in &s.findings_by_kind {
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{kind:?}"));
        let nature = if kind.is_inconsistency() {
            "inconsistency"
        } else {
            "leak"
        };
        text.push_str(&format!("Found {count} {name} ({nature}).\n"));
    }
    for skipped in &report.skipped {
        text.push_str(match skipped {
            SkippedCheck::PodLiveness => {
                "Skipped: addresses of pods that no longer exist (the live pods are not known).\n"
            }
            SkippedCheck::NodeLiveness => {
                "Skipped: blocks, affinities and addresses of nodes that no longer exist (the live nodes are not known).\n"
            }
        });
    }
    if !report.skipped.is_empty() {
        text.push_str(
            "  (with --kubeconfig, or --datastore kubernetes, the live pods and nodes are \
             read)\n",
        );
    }
    text.push_str(&format!(
        "Check complete; found {} problems.\n",
        report.findings.len()
    ));
    if let Some(path) = written_to {
        text.push_str(&format!("Report written to {}.\n", path.display()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_core::check::{check, Liveness};
    use ipam_core::{Handle, IpamConfig, Now, Pool, PoolSpec, Snapshot};

    #[test]
    fn the_summary_counts_findings_by_kind_and_says_what_was_skipped() {
        let pool = Pool::new("p", PoolSpec::new("10.0.0.0/24".parse().unwrap())).unwrap();
        let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
        snapshot.insert_handle(Handle::new("k8s-pod-network.empty"));
        let report = check(&snapshot, &Liveness::default(), Now { unix_nanos: 0 });
        let text = summary(&report, true, Some(Path::new("/tmp/r.json")));
        assert_eq!(
            text,
            "Checked 0 IPAM blocks recording 0 allocations, 1 handles and 0 affinities.\n  \
             handle k8s-pod-network.empty doesn't have any active IPs (it records 0 in blocks [])\n\
             Found 1 handleWithoutAllocations (inconsistency).\n\
             Skipped: addresses of pods that no longer exist (the live pods are not known).\n\
             Skipped: blocks, affinities and addresses of nodes that no longer exist (the live nodes are not known).\n  \
             (with --kubeconfig, or --datastore kubernetes, the live pods and nodes are read)\n\
             Check complete; found 1 problems.\n\
             Report written to /tmp/r.json.\n"
        );
        let quiet = summary(&report, false, None);
        assert!(!quiet.contains("doesn't have"), "{quiet}");
    }
}
