//! Garbage collection decisions: which allocations are leaked and may be
//! released, and which gone nodes may lose their affinities. The rules are
//! those of Calico's kube-controllers IPAM controller
//! (kube-controllers/pkg/controllers/node/ipam.go, v3.32: checkAllocations,
//! allocationIsValid, garbageCollectKnownLeaks; ipam_allocation.go:
//! markLeak, isPodIP, isTunnelAddress), taken as one pure step over a
//! [`Snapshot`] and what the caller knows of the cluster.
//!
//! An allocation is judged by its [`Holder`] (see [`crate::holder`] for how
//! attributes are read, an empty one as absent):
//! - a tunnel address is valid while its node exists; one without a node
//!   cannot be judged;
//! - a pod's address is valid while the pod exists, runs on the
//!   allocation's node, and either has no address reported yet or reports
//!   this one, unless it failed or finished;
//! - a Service's LoadBalancer address is valid while the Service exists
//!   (Calico's load-balancer controller releases the address of a gone
//!   Service itself, loadbalancer_controller.go syncService; here the
//!   collector also takes it, after the grace period, so an address is
//!   not held for ever when that controller is off or was down);
//! - anything else (no pod metadata, the Windows-reserved handle, no
//!   handle) is never collected and keeps its node from being cleaned up.
//!
//! A pod address judged leaked on a node that still exists is a
//! *candidate*: it becomes *confirmed* once it has been a candidate for the
//! whole grace period (a grace period of zero disables this, as in Calico).
//! On a node that is gone it is confirmed at once. A confirmed leak is
//! released only when every address of its handle is a confirmed leak, and
//! only as the exact allocation seen (handle and sequence number), so an
//! address handed out again in between is left alone. A gone node whose
//! every allocation is a confirmed leak (tunnel addresses included) has its
//! affinities released.
//!
//! A live node that holds more than one block gives up a block that has
//! been empty for the whole grace period, one block always kept (Calico's
//! releaseUnusedBlocks), so that blocks do not pile up on nodes whose pods
//! came and went.
//!
//! [`LeakTracker`] remembers when each candidate was first seen, keyed by
//! handle, address and sequence number: an allocation released and handed
//! out again starts its grace period afresh. It remembers the same of
//! empty blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use crate::block::BlockOwner;
use crate::cidr::BlockCidr;
use crate::holder::{Holder, PodRef, ServiceRef};
use crate::plan::{Now, ReleaseRequest};
use crate::snapshot::Snapshot;

/// What the collector needs to know of a live pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    /// `spec.nodeName`, when scheduled.
    pub node: Option<String>,
    /// The addresses the pod reports (`status.podIPs`, or `status.podIP`).
    /// Empty while the kubelet has reported none: the pod may still be
    /// starting, so its allocations are valid.
    pub addresses: BTreeSet<IpAddr>,
    /// Addresses the pod holds beyond `status` (secondary networks listed
    /// in its network-status annotation); never judged leaked.
    pub other_addresses: BTreeSet<IpAddr>,
    /// Phase Failed or Succeeded: the pod's addresses are given back.
    pub finished: bool,
}

/// What exists in the cluster, from the caller's watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Every pod, by namespace and name.
    pub pods: BTreeMap<PodRef, PodState>,
    /// Every node, by name.
    pub nodes: BTreeSet<String>,
    /// Every Service, by namespace and name.
    pub services: BTreeSet<ServiceRef>,
}

/// Why an allocation is judged leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeakReason {
    /// The pod no longer exists.
    PodGone,
    /// The pod exists, on another node than the allocation's.
    PodMoved,
    /// The pod reports addresses, and not this one.
    NotPodAddress,
    /// The pod failed or finished (an eviction among them).
    PodFinished,
    /// A tunnel address of a node that no longer exists.
    NodeGone,
    /// A LoadBalancer address whose Service no longer exists.
    ServiceGone,
}

impl LeakReason {
    /// The reason as logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            LeakReason::PodGone => "podGone",
            LeakReason::PodMoved => "podMoved",
            LeakReason::NotPodAddress => "notPodAddress",
            LeakReason::PodFinished => "podFinished",
            LeakReason::NodeGone => "nodeGone",
            LeakReason::ServiceGone => "serviceGone",
        }
    }
}

/// One allocation judged leaked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The address.
    pub address: IpAddr,
    /// Its block.
    pub block: BlockCidr,
    /// Its handle.
    pub handle: String,
    /// The block's sequence number for the ordinal when it was judged.
    pub sequence_number: u64,
    /// The allocation's `node` attribute, when not empty.
    pub node: Option<String>,
    /// The allocation's pod, for a pod address.
    pub pod: Option<PodRef>,
    /// The allocation's Service, for a LoadBalancer address.
    pub service: Option<ServiceRef>,
    /// Why.
    pub reason: LeakReason,
    /// First judged leaked at.
    pub since: Now,
    /// Past the grace period, or on a gone node.
    pub confirmed: bool,
    /// Confirmed, and so is every other address of its handle: release it.
    pub releasable: bool,
}

impl Leak {
    /// The release that frees exactly this allocation and nothing handed
    /// out since (Calico's ReleaseOptions with handle and sequence number).
    pub fn release_request(&self) -> ReleaseRequest {
        ReleaseRequest {
            address: self.address,
            handle: Some(crate::HandleId::new(self.handle.clone())),
            sequence_number: Some(self.sequence_number),
        }
    }
}

/// What one collection pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collection {
    /// Every allocation judged leaked, candidates and confirmed, by block
    /// and address.
    pub leaks: Vec<Leak>,
    /// Gone nodes whose affinities may be released once their releasable
    /// leaks are released, by name.
    pub nodes_to_release: Vec<String>,
    /// Blocks of live nodes empty for the grace period, whose affinity
    /// (and so the block) may be released if still empty, by node then
    /// block.
    pub empty_blocks_to_release: Vec<(String, BlockCidr)>,
}

impl Collection {
    /// The leaks to release now.
    pub fn releasable(&self) -> impl Iterator<Item = &Leak> {
        self.leaks.iter().filter(|leak| leak.releasable)
    }
}

/// Remembers since when each allocation has been judged leaked, from one
/// pass to the next.
#[derive(Debug, Clone, Default)]
pub struct LeakTracker {
    since: HashMap<(String, IpAddr, u64), Now>,
    empty_since: HashMap<BlockCidr, Now>,
}

/// How an allocation stands, before handles and nodes are considered.
enum Verdict {
    Valid,
    Leaked(LeakReason),
    // Not a pod's or a tunnel's: never collected, and its node is kept.
    Unknown,
}

impl LeakTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> LeakTracker {
        LeakTracker::default()
    }

    /// Judges every allocation of `snapshot` against `cluster` at `now`.
    /// Allocations no longer judged leaked are forgotten, so one that
    /// comes back to life and leaks again waits a whole grace period.
    pub fn scan(
        &mut self,
        snapshot: &Snapshot,
        cluster: &Cluster,
        grace: Duration,
        now: Now,
    ) -> Collection {
        let grace_nanos = u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX);
        let mut leaks = Vec::new();
        // Handles with at least one address not confirmed leaked. Names
        // are borrowed from the snapshot: most allocations are valid, and
        // copying their strings would be most of a pass's work.
        let mut kept_handles: BTreeSet<&str> = BTreeSet::new();
        // Nodes known to IPAM, and whether each may be released (gone,
        // and nothing on it that is not a confirmed leak).
        let mut ipam_nodes: BTreeMap<&str, bool> = BTreeMap::new();
        let hosts = snapshot
            .blocks()
            .filter_map(|block| match block.owner() {
                Some(BlockOwner::Host(node)) => Some(node.as_str()),
                _ => None,
            })
            .chain(
                snapshot
                    .affinities()
                    .filter(|a| a.affinity_type.as_deref().is_none_or(|t| t == "host"))
                    .map(|a| a.node.as_str()),
            );
        for host in hosts {
            ipam_nodes
                .entry(host)
                .or_insert_with(|| !cluster.nodes.contains(host));
        }
        let mut since = HashMap::new();
        // Tunnel addresses of gone nodes: confirmed only if their node is
        // released (Calico: "only marked as a leak if the node itself is
        // deleted, and there are no other valid allocations on the node").
        let mut tunnels: Vec<(&str, Leak)> = Vec::new();
        for block in snapshot.blocks() {
            let cidr = block.cidr();
            for (ordinal, attribute) in block.allocations() {
                // A released address is nobody's and is freed by its
                // cooldown, not judged (kube-controllers' onBlockUpdated
                // skips allocations without a handle).
                if attribute.is_released() {
                    continue;
                }
                let address = cidr.address(ordinal);
                let holder = Holder::of(attribute);
                let node = holder.node();
                let node_gone = node.is_some_and(|n| !cluster.nodes.contains(n));
                let releasable_node = node.map(|n| {
                    ipam_nodes
                        .entry(n)
                        .or_insert_with(|| !cluster.nodes.contains(n))
                });
                let handle = attribute.handle();
                let verdict = match handle {
                    Some(_) => judge(&holder, address, cluster),
                    None => Verdict::Unknown,
                };
                let (handle, reason) = match (handle, verdict) {
                    (Some(handle), Verdict::Leaked(reason)) => (handle, reason),
                    (handle, _) => {
                        if let Some(ok) = releasable_node {
                            *ok = false;
                        }
                        kept_handles.extend(handle);
                        continue;
                    }
                };
                let sequence_number = block.sequence_number_of(ordinal);
                let key = (handle.to_string(), address, sequence_number);
                let first = *self.since.get(&key).unwrap_or(&now);
                since.insert(key, first);
                let waited = now.unix_nanos.saturating_sub(first.unix_nanos);
                let pod = holder.pod();
                let service = holder.service();
                let leak = Leak {
                    address,
                    block: cidr,
                    handle: handle.to_string(),
                    sequence_number,
                    node: node.map(str::to_string),
                    pod,
                    service,
                    reason,
                    since: first,
                    // Calico skips the candidate stage when the node is gone
                    // too; a grace period of 0 turns the rest off.
                    confirmed: node_gone || (grace_nanos > 0 && waited >= grace_nanos),
                    releasable: false,
                };
                if reason == LeakReason::NodeGone {
                    tunnels.push((handle, leak));
                    continue;
                }
                if !leak.confirmed {
                    kept_handles.insert(handle);
                }
                leaks.push(leak);
            }
        }
        self.since = since;
        for (handle, mut tunnel) in tunnels {
            let released = tunnel
                .node
                .as_deref()
                .is_some_and(|n| ipam_nodes.get(n) == Some(&true));
            tunnel.confirmed = released;
            if !released {
                kept_handles.insert(handle);
            }
            leaks.push(tunnel);
        }
        for leak in &mut leaks {
            leak.releasable = leak.confirmed && !kept_handles.contains(leak.handle.as_str());
        }
        // A node whose leaks cannot all be released now waits for a later
        // pass rather than losing affinities with addresses still in use.
        for leak in leaks.iter().filter(|l| !l.releasable) {
            if let Some(ok) = leak.node.as_deref().and_then(|n| ipam_nodes.get_mut(n)) {
                *ok = false;
            }
        }
        leaks.sort_by_key(|leak| (leak.block, leak.address));
        Collection {
            leaks,
            nodes_to_release: ipam_nodes
                .into_iter()
                .filter(|&(_, ok)| ok)
                .map(|(node, _)| node.to_string())
                .collect(),
            empty_blocks_to_release: self.scan_empty_blocks(snapshot, cluster, grace_nanos, now),
        }
    }

    // Calico's releaseUnusedBlocks and blockReleaseTracker: an empty block
    // of a live node goes once it has been empty for the grace period (a
    // block is briefly empty between its claim and its first allocation),
    // and never the node's last block.
    fn scan_empty_blocks(
        &mut self,
        snapshot: &Snapshot,
        cluster: &Cluster,
        grace_nanos: u64,
        now: Now,
    ) -> Vec<(String, BlockCidr)> {
        let mut by_node: BTreeMap<&str, Vec<(BlockCidr, bool)>> = BTreeMap::new();
        for block in snapshot.blocks() {
            if let Some(BlockOwner::Host(node)) = block.owner() {
                by_node
                    .entry(node.as_str())
                    .or_default()
                    .push((block.cidr(), block.is_empty()));
            }
        }
        let mut empty_since = HashMap::new();
        let mut release = Vec::new();
        for (node, mut blocks) in by_node {
            if !cluster.nodes.contains(node) {
                // A gone node's blocks go with the node.
                continue;
            }
            blocks.sort();
            let mut kept = blocks.len();
            for (cidr, empty) in blocks {
                if !empty {
                    continue;
                }
                let first = *self.empty_since.get(&cidr).unwrap_or(&now);
                empty_since.insert(cidr, first);
                let waited = now.unix_nanos.saturating_sub(first.unix_nanos);
                if kept > 1 && grace_nanos > 0 && waited >= grace_nanos {
                    release.push((node.to_string(), cidr));
                    kept -= 1;
                }
            }
        }
        self.empty_since = empty_since;
        release
    }
}

// Calico's allocationIsValid, with tunnel addresses judged by their node.
fn judge(holder: &Holder, address: IpAddr, cluster: &Cluster) -> Verdict {
    let (key, node) = match *holder {
        Holder::Tunnel { node, .. } => {
            return match node {
                Some(n) if !cluster.nodes.contains(n) => Verdict::Leaked(LeakReason::NodeGone),
                // A tunnel address without a node cannot be judged.
                None => Verdict::Unknown,
                Some(_) => Verdict::Valid,
            };
        }
        Holder::Pod {
            namespace,
            pod,
            node,
            ..
        } => (
            PodRef {
                namespace: namespace.to_string(),
                name: pod.to_string(),
            },
            node,
        ),
        Holder::Service { namespace, service } => {
            let key = ServiceRef {
                namespace: namespace.to_string(),
                name: service.to_string(),
            };
            return if cluster.services.contains(&key) {
                Verdict::Valid
            } else {
                Verdict::Leaked(LeakReason::ServiceGone)
            };
        }
        Holder::WindowsReserved { .. } | Holder::Node { .. } | Holder::Nobody => {
            return Verdict::Unknown
        }
    };
    let Some(pod) = cluster.pods.get(&key) else {
        return Verdict::Leaked(LeakReason::PodGone);
    };
    if let (Some(now_on), Some(was_on)) = (pod.node.as_deref(), node) {
        if now_on != was_on {
            return Verdict::Leaked(LeakReason::PodMoved);
        }
    }
    if pod.other_addresses.contains(&address) {
        return Verdict::Valid;
    }
    if pod.addresses.is_empty() {
        // The kubelet has not reported the pod's addresses yet.
        return Verdict::Valid;
    }
    if pod.finished {
        return Verdict::Leaked(LeakReason::PodFinished);
    }
    if pod.addresses.contains(&address) {
        Verdict::Valid
    } else {
        Verdict::Leaked(LeakReason::NotPodAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::WINDOWS_RESERVED_HANDLE;
    use crate::config::IpamConfig;
    use crate::plan::{AssignIpRequest, AutoAssignRequest};
    use crate::pool::{AllowedUse, Pool, PoolSpec};

    const T0: u64 = 1_700_000_000_000_000_000;
    const NOW: Now = Now { unix_nanos: T0 };
    const GRACE: Duration = Duration::from_secs(900);

    fn at(seconds: u64) -> Now {
        Now {
            unix_nanos: T0 + seconds * 1_000_000_000,
        }
    }

    /// IPAM state and the cluster it should agree with.
    struct World {
        s: Snapshot,
        cluster: Cluster,
        step: u64,
    }

    impl World {
        fn new(nodes: &[&str]) -> World {
            let spec = PoolSpec {
                block_size: Some(26),
                ..PoolSpec::new("10.0.0.0/16".parse().unwrap())
            };
            World {
                s: Snapshot::new(
                    IpamConfig::default(),
                    vec![Pool::new("v4", spec).unwrap()],
                    &[],
                ),
                cluster: Cluster {
                    pods: BTreeMap::new(),
                    nodes: nodes.iter().map(|n| n.to_string()).collect(),
                    services: BTreeSet::new(),
                },
                step: 0,
            }
        }

        fn assign(&mut self, request: AutoAssignRequest) -> IpAddr {
            self.step += 1;
            let plan = self
                .s
                .plan_auto_assign(
                    &request,
                    Now {
                        unix_nanos: T0 + self.step,
                    },
                )
                .unwrap();
            self.s.apply(plan.plan);
            plan.ipv4.addresses[0].addr()
        }

        /// A running pod with its address reported, as the CNI plugin
        /// and the kubelet leave it.
        fn pod(&mut self, node: &str, name: &str) -> IpAddr {
            let mut request = AutoAssignRequest::new(
                crate::HandleId::new(format!("k8s-pod-network.{name}")),
                crate::NodeName::new(node),
                1,
                0,
            );
            request.attributes = [("namespace", "default"), ("pod", name), ("node", node)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let address = self.assign(request);
            self.cluster.pods.insert(
                pod_ref(name),
                PodState {
                    node: Some(node.to_string()),
                    addresses: [address].into(),
                    ..PodState::default()
                },
            );
            address
        }

        fn tunnel(&mut self, node: &str) -> IpAddr {
            let mut request = AutoAssignRequest::new(
                crate::HandleId::new(format!("ipip-tunnel-addr-{node}")),
                crate::NodeName::new(node),
                1,
                0,
            );
            request.attributes = [("node", node), ("type", "ipipTunnelAddress")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            request.intended_use = AllowedUse::Tunnel;
            self.assign(request)
        }

        fn release(&mut self, leaks: &[&Leak]) {
            let requests: Vec<ReleaseRequest> = leaks.iter().map(|l| l.release_request()).collect();
            let plan = self.s.plan_release(&requests, NOW).unwrap();
            self.s.apply(plan.plan);
        }
    }

    fn pod_ref(name: &str) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn addresses<'a>(leaks: impl Iterator<Item = &'a Leak>) -> Vec<IpAddr> {
        leaks.map(|l| l.address).collect()
    }

    #[test]
    fn a_gone_services_address_is_released_after_the_grace_period_a_live_ones_never() {
        let mut w = World::new(&["n1"]);
        let mut lb = PoolSpec::new("172.16.0.0/24".parse().unwrap());
        lb.allowed_uses = vec![AllowedUse::LoadBalancer];
        let mut pools = w.s.pools().to_vec();
        pools.push(Pool::new("lb", lb).unwrap());
        w.s = Snapshot::new(IpamConfig::default(), pools, &[]);
        let mut lb_address = |service: &str| {
            let mut request = AutoAssignRequest::new(
                crate::HandleId::new(format!("lb-{service}")),
                crate::NodeName::new(crate::affinity::LOAD_BALANCER_OWNER),
                1,
                0,
            );
            request.intended_use = AllowedUse::LoadBalancer;
            request.attributes = [
                ("namespace", "ns"),
                ("service", service),
                ("type", "LoadBalancer"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            w.assign(request)
        };
        let live = lb_address("live");
        let gone = lb_address("gone");
        w.cluster.services.insert(ServiceRef {
            namespace: "ns".into(),
            name: "live".into(),
        });
        let mut tracker = LeakTracker::new();
        let first = tracker.scan(&w.s, &w.cluster, GRACE, at(0));
        assert_eq!(addresses(first.leaks.iter()), [gone]);
        assert_eq!(first.leaks[0].reason, LeakReason::ServiceGone);
        assert_eq!(first.releasable().count(), 0, "a candidate first");
        assert!(
            first.nodes_to_release.is_empty(),
            "the virtual owner is no node"
        );
        assert!(first.empty_blocks_to_release.is_empty());
        let later = tracker.scan(&w.s, &w.cluster, GRACE, at(900));
        assert_eq!(addresses(later.releasable()), [gone]);
        assert!(!addresses(later.leaks.iter()).contains(&live));
    }

    #[test]
    fn a_gone_pods_address_is_released_only_after_the_grace_period() {
        let mut w = World::new(&["n1"]);
        w.pod("n1", "keep");
        let gone = w.pod("n1", "gone");
        w.cluster.pods.remove(&pod_ref("gone"));
        let mut tracker = LeakTracker::new();

        let first = tracker.scan(&w.s, &w.cluster, GRACE, at(0));
        assert_eq!(addresses(first.leaks.iter()), [gone]);
        let leak = &first.leaks[0];
        assert_eq!(
            (leak.reason, leak.confirmed, leak.releasable),
            (LeakReason::PodGone, false, false)
        );
        assert_eq!(leak.pod, Some(pod_ref("gone")));
        assert_eq!(leak.node.as_deref(), Some("n1"));
        assert!(first.nodes_to_release.is_empty());

        let almost = tracker.scan(&w.s, &w.cluster, GRACE, at(899));
        assert_eq!(almost.releasable().count(), 0);
        assert_eq!(almost.leaks[0].since, at(0));

        let due = tracker.scan(&w.s, &w.cluster, GRACE, at(900));
        assert_eq!(addresses(due.releasable()), [gone]);
        let request = due.leaks[0].release_request();
        assert_eq!(request.handle.as_deref(), Some("k8s-pod-network.gone"));
        let block = w.s.block_containing(gone).unwrap();
        assert_eq!(
            request.sequence_number,
            Some(block.sequence_number_of(block.cidr().ordinal_of(gone).unwrap()))
        );
        w.release(&due.releasable().collect::<Vec<_>>());
        let after = tracker.scan(&w.s, &w.cluster, GRACE, at(901));
        assert!(after.leaks.is_empty());
        assert!(tracker.since.is_empty(), "nothing left tracked");
    }

    #[test]
    fn a_pod_that_comes_back_resets_the_clock() {
        let mut w = World::new(&["n1"]);
        w.pod("n1", "flaky");
        let state = w.cluster.pods.remove(&pod_ref("flaky")).unwrap();
        let mut tracker = LeakTracker::new();
        assert_eq!(tracker.scan(&w.s, &w.cluster, GRACE, at(0)).leaks.len(), 1);
        assert_eq!(tracker.since.len(), 1);
        w.cluster.pods.insert(pod_ref("flaky"), state.clone());
        assert!(tracker
            .scan(&w.s, &w.cluster, GRACE, at(600))
            .leaks
            .is_empty());
        w.cluster.pods.remove(&pod_ref("flaky"));
        let again = tracker.scan(&w.s, &w.cluster, GRACE, at(1000));
        assert_eq!(again.leaks[0].since, at(1000));
        assert!(!again.leaks[0].confirmed);
    }

    #[test]
    fn an_address_handed_out_again_is_a_new_allocation() {
        let mut w = World::new(&["n1"]);
        let address = w.pod("n1", "old");
        w.cluster.pods.remove(&pod_ref("old"));
        let mut tracker = LeakTracker::new();
        let first = tracker.scan(&w.s, &w.cluster, GRACE, at(0));
        let stale = first.leaks[0].clone();
        // The pod's DEL frees the address and a new pod asks for it.
        w.release(&[&stale]);
        let request = AssignIpRequest {
            handle: crate::HandleId::new("k8s-pod-network.new"),
            node: crate::NodeName::new("n1"),
            address,
            attributes: [("namespace", "default"), ("pod", "new"), ("node", "n1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let plan = w.s.plan_assign_ip(&request, at(1)).unwrap();
        w.s.apply(plan);
        let second = tracker.scan(&w.s, &w.cluster, GRACE, at(900));
        assert_eq!(second.leaks.len(), 1);
        assert_eq!(second.leaks[0].since, at(900), "a new grace period");
        assert_ne!(second.leaks[0].sequence_number, stale.sequence_number);
        // The old judgement's release names the old sequence number, which
        // the planner refuses now.
        assert!(w.s.plan_release(&[stale.release_request()], NOW).is_err());
    }

    #[test]
    fn a_pod_that_moved_or_reports_other_addresses_or_finished_leaks() {
        let mut w = World::new(&["n1", "n2"]);
        let moved = w.pod("n1", "moved");
        let other = w.pod("n1", "other");
        let finished = w.pod("n1", "finished");
        let starting = w.pod("n1", "starting");
        let multus = w.pod("n1", "multus");
        w.cluster.pods.get_mut(&pod_ref("moved")).unwrap().node = Some("n2".into());
        w.cluster.pods.get_mut(&pod_ref("other")).unwrap().addresses =
            ["10.9.9.9".parse().unwrap()].into();
        w.cluster
            .pods
            .get_mut(&pod_ref("finished"))
            .unwrap()
            .finished = true;
        w.cluster
            .pods
            .get_mut(&pod_ref("starting"))
            .unwrap()
            .addresses
            .clear();
        let pod = w.cluster.pods.get_mut(&pod_ref("multus")).unwrap();
        pod.addresses = ["10.9.9.8".parse().unwrap()].into();
        pod.other_addresses = [multus].into();
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        let reasons: BTreeMap<IpAddr, LeakReason> =
            found.leaks.iter().map(|l| (l.address, l.reason)).collect();
        assert_eq!(
            reasons,
            [
                (moved, LeakReason::PodMoved),
                (other, LeakReason::NotPodAddress),
                (finished, LeakReason::PodFinished),
            ]
            .into()
        );
        assert!(!reasons.contains_key(&starting));
    }

    #[test]
    fn a_grace_period_of_zero_turns_collection_on_live_nodes_off() {
        let mut w = World::new(&["n1"]);
        w.pod("n1", "gone");
        w.cluster.pods.clear();
        let mut tracker = LeakTracker::new();
        tracker.scan(&w.s, &w.cluster, Duration::ZERO, at(0));
        let later = tracker.scan(&w.s, &w.cluster, Duration::ZERO, at(100_000));
        assert_eq!(later.leaks.len(), 1, "still counted as a candidate");
        assert_eq!(later.releasable().count(), 0);
    }

    #[test]
    fn a_gone_node_is_released_with_its_leaks_and_tunnel_address_at_once() {
        let mut w = World::new(&["n1", "n2"]);
        let tunnel = w.tunnel("n2");
        let pods = [w.pod("n2", "a"), w.pod("n2", "b")];
        w.pod("n1", "elsewhere");
        w.cluster.nodes.remove("n2");
        w.cluster.pods.remove(&pod_ref("a"));
        w.cluster.pods.remove(&pod_ref("b"));
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        let mut expected = vec![tunnel, pods[0], pods[1]];
        expected.sort();
        assert_eq!(addresses(found.releasable()), expected);
        assert_eq!(found.nodes_to_release, ["n2"]);
        let tunnel_leak = found.leaks.iter().find(|l| l.address == tunnel).unwrap();
        assert_eq!(tunnel_leak.reason, LeakReason::NodeGone);
    }

    #[test]
    fn a_gone_node_with_a_live_pod_or_an_unknown_allocation_is_kept() {
        let mut w = World::new(&["n1", "n2"]);
        let tunnel = w.tunnel("n2");
        w.pod("n2", "survivor");
        w.cluster.nodes.remove("n2");
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        assert!(found.nodes_to_release.is_empty());
        assert_eq!(found.releasable().count(), 0, "the tunnel address stays");
        assert_eq!(addresses(found.leaks.iter()), [tunnel]);

        // An allocation with no pod metadata keeps the node too.
        let mut w = World::new(&["n1", "n3"]);
        let mut request = AutoAssignRequest::new(
            crate::HandleId::new("manual"),
            crate::NodeName::new("n3"),
            1,
            0,
        );
        request.attributes = [("node".to_string(), "n3".to_string())].into();
        w.assign(request);
        w.pod("n3", "p");
        w.cluster.nodes.remove("n3");
        w.cluster.pods.clear();
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        assert!(found.nodes_to_release.is_empty());
        assert_eq!(
            found.releasable().count(),
            1,
            "the pod's address still goes"
        );
    }

    #[test]
    fn a_gone_node_with_nothing_allocated_is_released() {
        let mut w = World::new(&["n1", "n2"]);
        w.pod("n2", "p");
        let released =
            w.s.plan_release_by_handle("k8s-pod-network.p", NOW)
                .unwrap();
        w.s.apply(released.plan);
        assert!(w.s.affinities_of("n2").count() > 0);
        w.cluster.nodes.remove("n2");
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        assert!(found.leaks.is_empty());
        assert_eq!(found.nodes_to_release, ["n2"]);
        w.cluster.nodes.insert("n2".into());
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        assert!(found.nodes_to_release.is_empty());
    }

    #[test]
    fn a_handle_is_released_only_when_all_its_addresses_are_leaked() {
        let mut w = World::new(&["n1"]);
        // One handle, two pods' attributes: one pod gone, one alive.
        let mut request = AutoAssignRequest::new(
            crate::HandleId::new("shared"),
            crate::NodeName::new("n1"),
            1,
            0,
        );
        request.attributes = [("namespace", "default"), ("pod", "gone"), ("node", "n1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let leaked = w.assign(request.clone());
        request.attributes.insert("pod".into(), "alive".into());
        let alive = w.assign(request);
        w.cluster.pods.insert(
            pod_ref("alive"),
            PodState {
                node: Some("n1".into()),
                addresses: [alive].into(),
                ..PodState::default()
            },
        );
        let mut tracker = LeakTracker::new();
        tracker.scan(&w.s, &w.cluster, GRACE, at(0));
        let due = tracker.scan(&w.s, &w.cluster, GRACE, at(1000));
        assert_eq!(addresses(due.leaks.iter()), [leaked]);
        assert!(due.leaks[0].confirmed);
        assert!(!due.leaks[0].releasable);
    }

    #[test]
    fn an_empty_node_is_no_node_and_an_empty_pod_is_no_pod() {
        let mut w = World::new(&["n1"]);
        let assign = |w: &mut World, handle: &str, attributes: &[(&str, &str)]| {
            let mut request = AutoAssignRequest::new(
                crate::HandleId::new(handle),
                crate::NodeName::new("n1"),
                1,
                0,
            );
            request.attributes = attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            w.assign(request)
        };
        let gone = assign(
            &mut w,
            "gone",
            &[("namespace", "default"), ("pod", "gone"), ("node", "")],
        );
        assign(
            &mut w,
            "tunnel",
            &[("type", "vxlanTunnelAddress"), ("node", "")],
        );
        assign(
            &mut w,
            "nameless",
            &[("namespace", "default"), ("pod", ""), ("node", "n1")],
        );
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        // The gone pod's address is a candidate as on a live node, not a
        // confirmed leak of a gone node called "", and not judged moved.
        assert_eq!(addresses(found.leaks.iter()), [gone]);
        let leak = &found.leaks[0];
        assert_eq!(
            (leak.reason, leak.node.as_deref(), leak.confirmed),
            (LeakReason::PodGone, None, false)
        );
        // The tunnel address without a node and the nameless pod's address
        // cannot be judged; no node "" is ever released.
        assert!(found.nodes_to_release.is_empty(), "{found:?}");
    }

    #[test]
    fn windows_reserved_and_tunnel_addresses_of_live_nodes_are_never_leaks() {
        let mut w = World::new(&["n1"]);
        w.tunnel("n1");
        let mut request = AutoAssignRequest::new(
            crate::HandleId::new(WINDOWS_RESERVED_HANDLE),
            crate::NodeName::new("n1"),
            1,
            0,
        );
        request.attributes = [("namespace", "x"), ("pod", "y"), ("node", "n1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        w.assign(request);
        let found = LeakTracker::new().scan(&w.s, &w.cluster, GRACE, at(0));
        assert!(found.leaks.is_empty(), "{found:?}");
    }

    #[test]
    fn a_live_nodes_empty_blocks_go_after_the_grace_period_but_never_its_last() {
        let mut w = World::new(&["n1", "n2"]);
        // 64 pods fill n1's first /26; two more open a second block.
        let names: Vec<String> = (0..66).map(|i| format!("p{i}")).collect();
        for name in &names {
            w.pod("n1", name);
        }
        w.pod("n2", "other");
        let release = |w: &mut World, name: &str| {
            let plan =
                w.s.plan_release_by_handle(&format!("k8s-pod-network.{name}"), NOW)
                    .unwrap();
            w.s.apply(plan.plan);
            w.cluster.pods.remove(&pod_ref(name));
        };
        // The second block empties.
        release(&mut w, "p64");
        release(&mut w, "p65");
        let blocks: Vec<BlockCidr> = w.s.affinities_of("n1").map(|a| a.cidr).collect();
        assert_eq!(blocks.len(), 2);
        let mut tracker = LeakTracker::new();
        assert!(tracker
            .scan(&w.s, &w.cluster, GRACE, at(0))
            .empty_blocks_to_release
            .is_empty());
        assert!(tracker
            .scan(&w.s, &w.cluster, GRACE, at(899))
            .empty_blocks_to_release
            .is_empty());
        let due = tracker.scan(&w.s, &w.cluster, GRACE, at(900));
        let second = *blocks.iter().max().unwrap();
        assert_eq!(due.empty_blocks_to_release, [("n1".to_string(), second)]);

        // Everything goes: one of the two empty blocks stays.
        for name in &names[..64] {
            release(&mut w, name);
        }
        let mut tracker = LeakTracker::new();
        tracker.scan(&w.s, &w.cluster, GRACE, at(0));
        let due = tracker.scan(&w.s, &w.cluster, GRACE, at(900));
        assert_eq!(due.empty_blocks_to_release.len(), 1, "{due:?}");
        // n2's only block is never released; nor with a grace period of 0.
        assert!(due.empty_blocks_to_release.iter().all(|(n, _)| n == "n1"));
        let mut off = LeakTracker::new();
        off.scan(&w.s, &w.cluster, Duration::ZERO, at(0));
        assert!(off
            .scan(&w.s, &w.cluster, Duration::ZERO, at(100_000))
            .empty_blocks_to_release
            .is_empty());

        // A block used again in between starts over.
        let mut tracker = LeakTracker::new();
        tracker.scan(&w.s, &w.cluster, GRACE, at(0));
        let again = w.pod("n1", "again");
        tracker.scan(&w.s, &w.cluster, GRACE, at(500));
        release(&mut w, "again");
        let later = tracker.scan(&w.s, &w.cluster, GRACE, at(1000));
        assert_eq!(later.empty_blocks_to_release.len(), 1);
        let (_, released) = &later.empty_blocks_to_release[0];
        assert!(
            released.ordinal_of(again).is_none(),
            "only the block never used again: {released}"
        );
    }
}
