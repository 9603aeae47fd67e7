//! Before anything is released, what the watches said is asked of the API
//! server again, as Calico re-reads the pod: a watch may lag. Each pod
//! behind a confirmed leak on a live node, each Service behind a confirmed
//! leak, and each node about to be called gone, is read afresh and the
//! cluster view corrected.

use std::collections::BTreeSet;

use ipam_core::check::PodRef;
use ipam_core::gc::{Cluster, Collection};
use ipam_core::holder::ServiceRef;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::Api;

use super::pod::pod_state;

/// Reads again from the API server each pod and node a release in
/// `collection` would rest on, and corrects `cluster` with the answers.
pub(super) async fn confirm(
    client: &kube::Client,
    collection: &Collection,
    cluster: &mut Cluster,
) -> Result<(), kube::Error> {
    let mut nodes: BTreeSet<String> = collection.nodes_to_release.iter().cloned().collect();
    let mut pods: BTreeSet<PodRef> = BTreeSet::new();
    let mut services: BTreeSet<ServiceRef> = BTreeSet::new();
    for leak in collection.releasable() {
        services.extend(leak.service.clone());
        match &leak.node {
            Some(node) if !cluster.nodes.contains(node) => {
                nodes.insert(node.clone());
            }
            _ => pods.extend(leak.pod.clone()),
        }
    }
    let node_api = Api::<Node>::all(client.clone());
    for node in nodes {
        if node_api.get_opt(&node).await?.is_some() {
            tracing::info!(node, "node exists though the watch has not seen it");
            cluster.nodes.insert(node);
        }
    }
    for pod in pods {
        let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace);
        match api.get_opt(&pod.name).await? {
            Some(fresh) => {
                if let Some((key, state)) = pod_state(&fresh) {
                    cluster.pods.insert(key, state);
                }
            }
            None => {
                cluster.pods.remove(&pod);
            }
        }
    }
    for service in services {
        let api = Api::<Service>::namespaced(client.clone(), &service.namespace);
        if api.get_opt(&service.name).await?.is_some() {
            tracing::info!(
                namespace = service.namespace,
                service = service.name,
                "service exists though the watch has not seen it"
            );
            cluster.services.insert(service);
        }
    }
    Ok(())
}
