//! Tests of `ipam check` over snapshots built as the planner builds them,
//! with damage injected behind its back; the helpers here, the report's
//! own properties (order, counts, schema, skipped checks) too.

mod allocations;
mod objects;

use super::*;
use ipnet::IpNet;

use crate::affinity::{Affinity, AffinityState};

use crate::block::{AttributeParts, Block, BlockOwner, WINDOWS_RESERVED_HANDLE};

use crate::cidr::IpVersion;

use crate::config::IpamConfig;

use crate::handle::Handle;

use crate::plan::{AutoAssignRequest, Now};

use crate::pool::{AllowedUse, Pool, PoolSpec};

const T0: u64 = 1_700_000_000_000_000_000;

/// When the checks run: the snapshots' claims are fresh then.
const NOW: Now = Now { unix_nanos: T0 };

const NODES: [&str; 3] = ["n1", "n2", "n3"];

const PODS_PER_NODE: usize = 70;

/// A snapshot built the way the planner builds one, and what lives.
struct Cluster {
    s: Snapshot,
    pods: BTreeSet<PodRef>,
    nodes: BTreeSet<String>,
    step: u64,
}

impl Cluster {
    fn live(&self) -> Liveness {
        Liveness {
            pods: Some(self.pods.clone()),
            nodes: Some(self.nodes.clone()),
        }
    }

    fn report(&self) -> CheckReport {
        check(&self.s, &self.live(), NOW)
    }

    fn assign(&mut self, request: AutoAssignRequest) {
        self.step += 1;
        let now = Now {
            unix_nanos: T0 + self.step,
        };
        let plan = self.s.plan_auto_assign(&request, now).unwrap();
        self.s.apply(plan.plan);
    }

    fn add_pod(&mut self, node: &str, name: &str) {
        let mut request = AutoAssignRequest::new(
            crate::HandleId::new(format!("k8s-pod-network.{name}")),
            crate::NodeName::new(node),
            1,
            1,
        );
        request.attributes = labels(&[("namespace", "default"), ("pod", name), ("node", node)]);
        self.assign(request);
        self.pods.insert(pod(name));
    }

    fn delete_pod(&mut self, name: &str) {
        let plan = self
            .s
            .plan_release_by_handle(&format!("k8s-pod-network.{name}"), NOW)
            .unwrap();
        self.s.apply(plan.plan);
        self.pods.remove(&pod(name));
    }

    /// The IPv4 block holding a pod's address.
    fn v4_block_of(&self, name: &str) -> BlockCidr {
        let handle = self.s.handle(&format!("k8s-pod-network.{name}")).unwrap();
        handle
            .blocks()
            .iter()
            .map(|(b, _)| *b)
            .find(|b| b.version() == IpVersion::V4)
            .unwrap()
    }
}

/// An IPv4 block with both allocated and free ordinals.
fn v4_block_with_room(s: &Snapshot) -> BlockCidr {
    s.blocks()
        .find(|b| {
            b.cidr().version() == IpVersion::V4
                && b.unallocated_len() > 0
                && b.allocated_count() > 0
        })
        .expect("the cluster leaves room in some block")
        .cidr()
}

fn pool(name: &str, cidr: &str, block_size: u8) -> Pool {
    let spec = PoolSpec {
        block_size: Some(block_size),
        ..PoolSpec::new(cidr.parse().unwrap())
    };
    Pool::new(name, spec).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(name: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

/// Three nodes, each with a tunnel address and more dual-stack pods
/// than one block holds; every third pod deleted and as many started
/// again, so ordinals have been returned, reused and attributes shifted.
fn cluster() -> Cluster {
    let pools = vec![pool("v4", "10.0.0.0/16", 26), pool("v6", "fd00::/112", 122)];
    let mut c = Cluster {
        s: Snapshot::new(IpamConfig::default(), pools, &[]),
        pods: BTreeSet::new(),
        nodes: NODES.iter().map(|n| n.to_string()).collect(),
        step: 0,
    };
    for node in NODES {
        let mut tunnel = AutoAssignRequest::new(
            crate::HandleId::new(format!("ipip-tunnel-addr-{node}")),
            crate::NodeName::new(node),
            1,
            0,
        );
        tunnel.attributes = labels(&[("node", node), ("type", "ipipTunnelAddress")]);
        tunnel.intended_use = AllowedUse::Tunnel;
        c.assign(tunnel);
        for i in 0..PODS_PER_NODE {
            c.add_pod(node, &format!("{node}-{i}"));
        }
    }
    for node in NODES {
        for i in (0..PODS_PER_NODE).step_by(3) {
            c.delete_pod(&format!("{node}-{i}"));
            c.add_pod(node, &format!("{node}-again-{i}"));
        }
    }
    c
}

/// Allocates `ordinal` (or the head of `unallocated`) in a stored block
/// behind the planner's back, recording the block's sequence number as
/// an allocation would; touches no handle.
fn inject(
    s: &mut Snapshot,
    cidr: BlockCidr,
    ordinal: Option<u32>,
    handle: Option<&str>,
    pairs: &[(&str, &str)],
) -> u32 {
    let mut spec = s.block(&cidr).unwrap().to_spec();
    let ordinal = ordinal.unwrap_or(spec.unallocated[0]);
    spec.unallocated.retain(|&o| o != ordinal);
    spec.attributes.push(
        AttributeParts {
            handle_id: handle.map(str::to_string),
            secondary: pairs.iter().copied().collect(),
            ..AttributeParts::default()
        }
        .into(),
    );
    spec.allocations[ordinal as usize] = Some(spec.attributes.len() as u32 - 1);
    spec.sequence_number_for_allocation
        .insert(ordinal.to_string(), spec.sequence_number);
    spec.sequence_number += 1;
    s.insert_block(Block::from_spec(spec).unwrap());
    ordinal
}

/// Records `count` more addresses of `handle` in `cidr` on its handle
/// object, creating it if need be.
fn hold(s: &mut Snapshot, handle: &str, cidr: BlockCidr, count: u32) {
    let mut h = s
        .handle(handle)
        .cloned()
        .unwrap_or_else(|| Handle::new(handle));
    h.increment(cidr, count);
    s.insert_handle(h);
}

/// The findings, after checking that they are all of `kind` and that
/// there is at least one.
fn only(report: &CheckReport, kind: FindingKind) -> Vec<Finding> {
    assert!(
        !report.findings.is_empty(),
        "expected {kind:?}, found nothing"
    );
    for f in &report.findings {
        assert_eq!(f.kind, kind, "{f:#?}");
    }
    report.findings.clone()
}

/// Every allocation finding carries the block's own sequence number.
fn assert_sequence_numbers_are_the_blocks(s: &Snapshot, findings: &[Finding]) {
    for f in findings {
        let block = s.block(&f.block.unwrap()).unwrap();
        let ordinal = f.ordinal.unwrap();
        assert!(block.is_allocated(ordinal));
        assert_eq!(f.sequence_number, Some(block.sequence_number_of(ordinal)));
    }
}

fn kinds(report: &CheckReport) -> BTreeSet<FindingKind> {
    report.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn a_clean_cluster_after_many_assignments_and_releases_reports_nothing() {
    let c = cluster();
    let report = c.report();
    assert_eq!(report.findings, vec![], "{:#?}", report.findings);
    assert!(report.is_consistent());
    assert_eq!(report.skipped, vec![]);
    assert_eq!(report.schema_version, REPORT_SCHEMA_VERSION);
    let in_use: u64 = c.s.blocks().map(|b| u64::from(b.allocated_count())).sum();
    assert_eq!(
        report.summary,
        Summary {
            blocks_checked: c.s.blocks().count() as u64,
            addresses_in_use: in_use,
            addresses_released: 0,
            handles: c.s.handles().count() as u64,
            affinities: c.s.affinities().count() as u64,
            findings_by_kind: BTreeMap::new(),
        }
    );
    // Each pod holds one address per family, each node one tunnel address.
    assert_eq!(in_use, 2 * c.pods.len() as u64 + NODES.len() as u64);
    assert!(report.summary.blocks_checked > 2 * NODES.len() as u64);
}

#[test]
fn pod_findings_added_to_a_report_made_without_pods_equal_a_check_that_knew_them() {
    let mut c = cluster();
    c.s.remove_handle("k8s-pod-network.n2-4");
    // Gone without a release: their addresses leak.
    c.pods.remove(&pod("n1-4"));
    c.pods.remove(&pod("n3-10"));
    let knowing = Liveness {
        pods: Some(c.pods.clone()),
        nodes: None,
    };
    let expected = check(&c.s, &knowing, NOW);
    let mut merged = check(&c.s, &Liveness::default(), NOW);
    let pod_findings: Vec<Finding> = expected
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PodGone)
        .cloned()
        .collect();
    assert_eq!(pod_findings.len(), 4, "two pods, each dual-stack");
    merged.add_findings(SkippedCheck::PodLiveness, pod_findings);
    assert_eq!(merged, expected);
}

#[test]
fn liveness_checks_are_skipped_and_listed_when_not_given() {
    let mut c = cluster();
    c.s.insert_affinity(Affinity::new(
        "gone",
        "10.0.200.0/26".parse().unwrap(),
        AffinityState::Confirmed,
    ));
    let neither = check(&c.s, &Liveness::default(), NOW);
    assert_eq!(
        neither.skipped,
        [SkippedCheck::PodLiveness, SkippedCheck::NodeLiveness]
    );
    assert_eq!(neither.findings, vec![]);

    let no_pods = Liveness {
        pods: Some(BTreeSet::new()),
        nodes: None,
    };
    let report = check(&c.s, &no_pods, NOW);
    assert_eq!(report.skipped, [SkippedCheck::NodeLiveness]);
    assert_eq!(
        report.summary.findings_by_kind[&FindingKind::PodGone],
        2 * c.pods.len() as u64
    );
    assert_eq!(kinds(&report), [FindingKind::PodGone].into());

    let nodes_only = Liveness {
        pods: None,
        nodes: Some(c.nodes.clone()),
    };
    let report = check(&c.s, &nodes_only, NOW);
    assert_eq!(report.skipped, [SkippedCheck::PodLiveness]);
    assert_eq!(kinds(&report), [FindingKind::AffinityNodeGone].into());
}

/// A cluster with one finding of most kinds.
fn damaged() -> Cluster {
    let mut c = cluster();
    c.s.remove_handle("k8s-pod-network.n2-4");
    c.pods.remove(&pod("n3-5"));
    let first = c.v4_block_of("n1-1");
    hold(&mut c.s, "k8s-pod-network.ghost", first, 1);
    let own = c.v4_block_of("n1-2");
    hold(&mut c.s, "k8s-pod-network.n1-2", own, 1);
    let cidr = v4_block_with_room(&c.s);
    inject(
        &mut c.s,
        cidr,
        None,
        None,
        &[("pod", "p"), ("namespace", "default")],
    );
    c.s.insert_block(Block::new(
        "192.168.0.0/26".parse().unwrap(),
        None,
        None,
        T0,
    ));
    c.nodes.remove("n2");
    c
}

#[test]
fn findings_are_ordered_by_block_ordinal_and_handle_whatever_the_hash_order() {
    let c = damaged();
    let report = c.report();
    assert!(kinds(&report).len() >= 8, "{:?}", kinds(&report));
    let keys: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.block.is_none(),
                f.block,
                f.ordinal,
                f.handle.clone(),
                f.kind,
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // Handles sit in a hash map; a copy hashes differently.
    assert_eq!(check(&c.s.clone(), &c.live(), NOW), report);
    let total: u64 = report.summary.findings_by_kind.values().sum();
    assert_eq!(total, report.findings.len() as u64);
}

#[test]
fn the_report_round_trips_through_json_with_its_documented_names() {
    let c = damaged();
    let report = c.report();
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: CheckReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);

    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schemaVersion"], REPORT_SCHEMA_VERSION);
    for key in ["blocksChecked", "addressesInUse", "handles", "affinities"] {
        assert!(value["summary"][key].is_u64(), "{key}");
    }
    assert_eq!(value["summary"]["findingsByKind"]["handleMissing"], 2);
    assert_eq!(value["skipped"], serde_json::json!([]));
    let leak = value["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "podGone")
        .unwrap();
    for key in [
        "address",
        "block",
        "ordinal",
        "handle",
        "sequenceNumber",
        "pod",
        "namespace",
        "node",
        "message",
    ] {
        assert!(!leak[key].is_null(), "{key} in {leak}");
    }
    assert!(
        leak.get("attributeIndex").is_none(),
        "absent fields are left out"
    );
    // A reader ignores fields it does not know.
    let mut extended = value.clone();
    extended["findings"][0]["futureField"] = serde_json::json!(1);
    let read: CheckReport = serde_json::from_value(extended).unwrap();
    assert_eq!(read, report);
}
