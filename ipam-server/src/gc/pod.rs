//! What the leak rules need to know of a pod: where it runs, the
//! addresses it reports (its status, and Multus's record of its other
//! interfaces) and whether it has finished. Pure: a Pod in, the core's
//! [`PodState`] out.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam_core::check::PodRef;
use ipam_core::gc::PodState;
use k8s_openapi::api::core::v1::Pod;

/// Multus's record of a pod's interfaces: addresses on secondary networks
/// are the pod's too.
pub(super) const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// What the core needs of a pod; `None` for a pod without a name.
pub(super) fn pod_state(pod: &Pod) -> Option<(PodRef, PodState)> {
    let key = PodRef {
        namespace: pod.metadata.namespace.clone()?,
        name: pod.metadata.name.clone()?,
    };
    let status = pod.status.clone().unwrap_or_default();
    let mut addresses: BTreeSet<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    // Calico's getPodIPs: podIPs, else podIP.
    if addresses.is_empty() {
        addresses.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    let other_addresses = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_STATUS))
        .map(|text| network_status_addresses(text))
        .unwrap_or_default();
    let finished = matches!(status.phase.as_deref(), Some("Failed" | "Succeeded"));
    Some((
        key,
        PodState {
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            addresses,
            other_addresses,
            finished,
        },
    ))
}

// `[{"name": "...", "ips": ["10.1.2.3"], ...}]`; anything unreadable counts
// for nothing (the pod's status addresses still stand).
fn network_status_addresses(text: &str) -> BTreeSet<IpAddr> {
    #[derive(serde::Deserialize)]
    struct Interface {
        #[serde(default)]
        ips: Vec<String>,
    }
    serde_json::from_str::<Vec<Interface>>(text)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.ips)
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn pod_ips_win_over_pod_ip_which_is_the_fallback() {
        let (key, state) = pod_state(&pod(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "podIPs": [{"ip": "10.0.0.2"}, {"ip": "fd00::2"}]},
        })))
        .unwrap();
        assert_eq!((key.namespace.as_str(), key.name.as_str()), ("ns", "p"));
        assert_eq!(state.node.as_deref(), Some("n1"));
        assert_eq!(state.addresses, ips(&["10.0.0.2", "fd00::2"]));
        assert!(!state.finished);
        let (_, state) = pod_state(&pod(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"podIP": "10.0.0.1"},
        })))
        .unwrap();
        assert_eq!(state.addresses, ips(&["10.0.0.1"]));
        assert_eq!(state.node, None);
    }

    #[test]
    fn multus_interfaces_are_the_pods_other_addresses_and_garbage_counts_for_nothing() {
        let with = |annotation: &str| {
            pod_state(&pod(json!({
                "metadata": {"name": "p", "namespace": "ns",
                             "annotations": {NETWORK_STATUS: annotation}},
                "status": {"phase": "Succeeded"},
            })))
            .unwrap()
            .1
        };
        let state = with(r#"[{"name": "a", "ips": ["10.1.0.1", "bad"]}, {"name": "b"}]"#);
        assert_eq!(state.other_addresses, ips(&["10.1.0.1"]));
        assert!(state.finished);
        assert!(with("not json").other_addresses.is_empty());
    }

    #[test]
    fn a_pod_without_a_name_or_namespace_is_not_judged() {
        assert!(pod_state(&pod(json!({"metadata": {"name": "p"}}))).is_none());
        assert!(pod_state(&pod(json!({"metadata": {"namespace": "ns"}}))).is_none());
    }
}
