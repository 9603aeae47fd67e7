//! The collector's view of the cluster: pods, nodes and Services watched with
//! kube-runtime reflectors into in-memory stores, trimmed to what the leak
//! rules read, and to what assignments and releases read of Nodes and
//! pods ([`crate::node_labels`]). The watch tasks belong to [`Watched`]:
//! dropping it stops them, so nobody has to remember to.

use futures_util::StreamExt;
use ipam_core::gc::Cluster;
use ipam_core::holder::ServiceRef;
use ipam_service::annotations;
use ipam_service::labels::CALICO_LABELS_ANNOTATION;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::task::JoinSet;

use super::pod::{pod_state, NETWORK_STATUS};

/// Pods, nodes and Services as the watches last reported them.
pub struct Watched {
    pods: Store<Pod>,
    nodes: Store<Node>,
    services: Store<Service>,
    // The reflectors; a JoinSet aborts its tasks when dropped.
    _watches: JoinSet<()>,
}

impl Watched {
    /// Starts watching every pod, node and Service through `client`.
    pub fn start(client: &kube::Client) -> Watched {
        let (pods, pod_writer) = reflector::store();
        let (nodes, node_writer) = reflector::store();
        let (services, service_writer) = reflector::store();
        let pod_watch = reflector::reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
                .modify(trim_pod)
                .default_backoff(),
        );
        let node_watch = reflector::reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .modify(trim_node)
                .default_backoff(),
        );
        let service_watch = reflector::reflector(
            service_writer,
            watcher(
                Api::<Service>::all(client.clone()),
                watcher::Config::default(),
            )
            .modify(trim_service)
            .default_backoff(),
        );
        let mut watches = JoinSet::new();
        watches.spawn(drain(pod_watch, "pods"));
        watches.spawn(drain(node_watch, "nodes"));
        watches.spawn(drain(service_watch, "services"));
        Watched {
            pods,
            nodes,
            services,
            _watches: watches,
        }
    }

    /// Completes once every watch has listed once: before that, an
    /// empty store would make every pod (or Service) look gone.
    pub(super) async fn ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
    }

    /// The watched Nodes.
    pub fn nodes(&self) -> Store<Node> {
        self.nodes.clone()
    }

    /// The watched pods.
    pub fn pods(&self) -> Store<Pod> {
        self.pods.clone()
    }

    /// How many pods and nodes are known, for the log.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.pods.state().len(), self.nodes.state().len())
    }

    /// What the watches hold now, as the leak rules read it.
    pub(super) fn cluster(&self) -> Cluster {
        Cluster {
            pods: self
                .pods
                .state()
                .iter()
                .filter_map(|p| pod_state(p))
                .collect(),
            nodes: self
                .nodes
                .state()
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect(),
            services: self
                .services
                .state()
                .iter()
                .filter_map(|s| service_ref(s))
                .collect(),
        }
    }
}

// Keeps a watch running; the reflector's store is what matters.
async fn drain<S, E>(stream: S, what: &'static str)
where
    S: futures_util::Stream<Item = Result<E, watcher::Error>>,
{
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching {what}: {e}");
        }
    }
}

// The reflector keeps only what the collector and assignments read: a
// node's status (images, conditions) and a pod's spec are most of their
// size. A pod keeps the Calico IPAM annotations assignments under a
// non-Calico main plugin follow (ipam_service::annotations). A node keeps its labels and the annotation holding its Calico
// labels, which pools' nodeSelector is matched against
// (ipam_service::labels::calico_node_labels).
fn trim_pod(pod: &mut Pod) {
    let all = pod.metadata.annotations.as_ref();
    let mut keep = annotations::kept(all);
    if let Some(status) = all.and_then(|a| a.get(NETWORK_STATUS)) {
        keep.insert(NETWORK_STATUS.to_string(), status.clone());
    }
    pod.metadata = ObjectMeta {
        name: pod.metadata.name.take(),
        namespace: pod.metadata.namespace.take(),
        resource_version: pod.metadata.resource_version.take(),
        uid: pod.metadata.uid.take(),
        annotations: (!keep.is_empty()).then_some(keep),
        ..ObjectMeta::default()
    };
    pod.spec = Some(PodSpec {
        node_name: pod.spec.as_mut().and_then(|s| s.node_name.take()),
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
}

/// A Service's namespace and name, as its LoadBalancer addresses record
/// them.
pub(super) fn service_ref(service: &Service) -> Option<ServiceRef> {
    Some(ServiceRef {
        namespace: service.metadata.namespace.clone()?,
        name: service.metadata.name.clone()?,
    })
}

// The collector asks only whether a Service exists.
fn trim_service(service: &mut Service) {
    service.metadata = ObjectMeta {
        name: service.metadata.name.take(),
        namespace: service.metadata.namespace.take(),
        resource_version: service.metadata.resource_version.take(),
        uid: service.metadata.uid.take(),
        ..ObjectMeta::default()
    };
    service.spec = None;
    service.status = None;
}

fn trim_node(node: &mut Node) {
    let calico_labels = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CALICO_LABELS_ANNOTATION).cloned());
    node.metadata = ObjectMeta {
        name: node.metadata.name.take(),
        resource_version: node.metadata.resource_version.take(),
        uid: node.metadata.uid.take(),
        labels: node.metadata.labels.take(),
        annotations: calico_labels.map(|v| [(CALICO_LABELS_ANNOTATION.to_string(), v)].into()),
        ..ObjectMeta::default()
    };
    node.spec = None;
    node.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_service::annotations::{IPV4_POOLS, IPV6_POOLS, IP_ADDRS, IP_FAMILIES};
    use serde_json::json;

    #[test]
    fn trimming_keeps_what_the_leak_rules_read_and_nothing_else() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                         "labels": {"app": "x"},
                         "annotations": {NETWORK_STATUS: "[]", "other": "y",
                                         IPV4_POOLS: "[\"a\"]", IPV6_POOLS: "[\"b\"]",
                                         IP_ADDRS: "[\"10.0.0.9\"]", IP_FAMILIES: "[\"IPv6\"]",
                                         "cni.projectcalico.org/floatingIPs": "[]"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.0.2.1"},
        }))
        .unwrap();
        let before = pod_state(&pod);
        trim_pod(&mut pod);
        assert_eq!(pod_state(&pod), before, "the judgement is unchanged");
        assert_eq!(
            serde_json::to_value(&pod).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                             "annotations": {NETWORK_STATUS: "[]", IPV4_POOLS: "[\"a\"]",
                                             IPV6_POOLS: "[\"b\"]", IP_ADDRS: "[\"10.0.0.9\"]",
                                             IP_FAMILIES: "[\"IPv6\"]"}},
                "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": "Running", "podIP": "10.0.0.1"},
            })
        );
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"a": "b"},
                         "annotations": {CALICO_LABELS_ANNOTATION: "{\"c\":\"d\"}", "other": "y"}},
            "status": {"images": [{"names": ["i"]}]},
        }))
        .unwrap();
        trim_node(&mut node);
        assert_eq!(
            serde_json::to_value(&node).unwrap(),
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "n1", "labels": {"a": "b"},
                                "annotations": {CALICO_LABELS_ANNOTATION: "{\"c\":\"d\"}"}}})
        );
    }
}
