//! Carrying a judged pass out: leaked addresses released one handle at a
//! time, naming the handle and sequence number that were judged (so an
//! address handed out again meanwhile is refused, not freed), then the
//! affinities of gone nodes, then empty blocks of live nodes. Leadership
//! is read before every release: once the Lease is lost, nothing more goes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipam_core::gc::Collection;
use ipam_core::{BlockCidr, ReleaseRequest, Snapshot};
use ipam_store::{Datastore, Ipam};
use tokio::sync::watch;

use super::metrics::GcMetrics;
use super::PassReport;

/// Writes back the blocks whose released addresses are past their
/// cooldown, with those addresses deallocated, while `leading` says so;
/// returns the blocks written. A failure is logged and left for the next
/// pass: allocation frees them too.
pub(super) async fn deallocate_cooled(
    engine: &Ipam<dyn Datastore>,
    leading: &watch::Receiver<bool>,
) -> Vec<BlockCidr> {
    if !*leading.borrow() {
        return Vec::new();
    }
    match engine.deallocate_cooled().await {
        Ok(blocks) => {
            for block in &blocks {
                tracing::info!(%block, "deallocated addresses past their cooldown");
            }
            blocks
        }
        Err(e) => {
            tracing::warn!(error = %e, "deallocating addresses past their cooldown");
            Vec::new()
        }
    }
}

/// Releases what `collection` found releasable while `leading` says so,
/// records the outcome in `metrics`, and reports it.
pub(super) async fn release(
    engine: &Ipam<dyn Datastore>,
    metrics: &GcMetrics,
    leading: &watch::Receiver<bool>,
    snapshot: &Snapshot,
    collection: Collection,
) -> PassReport {
    let still_leading = || *leading.borrow();
    let mut report = PassReport::default();
    let mut by_handle: BTreeMap<&str, Vec<ReleaseRequest>> = BTreeMap::new();
    for leak in collection.releasable() {
        by_handle
            .entry(leak.handle.as_str())
            .or_default()
            .push(leak.release_request());
    }
    // A refusal for one handle does not hold back the others, but a node
    // with a leak that failed keeps its affinities.
    let mut failed_nodes: BTreeSet<&str> = BTreeSet::new();
    let mut released: BTreeSet<IpAddr> = BTreeSet::new();
    for (handle, requests) in by_handle {
        if !still_leading() {
            tracing::warn!("lost the lease mid-pass: releasing no more");
            break;
        }
        match engine.release(&requests).await {
            Ok(outcome) => released.extend(outcome.released),
            Err(e) => {
                report.refused += requests.len();
                tracing::warn!(handle, error = %e, "not released: {e}");
                for leak in collection.releasable().filter(|l| l.handle == handle) {
                    failed_nodes.extend(leak.node.as_deref());
                }
            }
        }
    }
    for leak in collection
        .leaks
        .iter()
        .filter(|l| released.contains(&l.address))
    {
        tracing::info!(
            address = %leak.address,
            handle = leak.handle,
            reason = leak.reason.as_str(),
            pod = ?leak.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)),
            node = ?leak.node,
            "released leaked address"
        );
    }
    report.candidates = metrics.record_leaks(snapshot, &collection.leaks, &released);
    report.released = released.into_iter().collect();
    for node in &collection.nodes_to_release {
        if failed_nodes.contains(node.as_str()) || !still_leading() {
            continue;
        }
        match engine.release_node(node).await {
            Ok(blocks) => {
                tracing::info!(
                    node,
                    blocks = blocks.len(),
                    "released the affinities of a deleted node"
                );
                report.nodes_released.push(node.clone());
            }
            Err(e) => {
                tracing::warn!(node, error = %e, "releasing a deleted node's affinities: {e}")
            }
        }
    }
    for (node, block) in &collection.empty_blocks_to_release {
        if !still_leading() {
            break;
        }
        // Refused when an address was taken from it since the snapshot.
        match engine.release_affinity(node, *block, true).await {
            Ok(()) => {
                tracing::info!(node, %block, "released an empty block");
                report.blocks_released.push(*block);
            }
            Err(e) => tracing::info!(node, %block, error = %e, "empty block kept: {e}"),
        }
    }
    report
}
