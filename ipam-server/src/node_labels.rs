//! Node labels: the routes that read and set them (`GET` and `PUT
//! /v1/nodes/{node}/labels`), and, on the Kubernetes datastore, the label
//! source that reads Nodes from the garbage collector's watch before
//! asking the API server.
//!
//! Where labels come from on each datastore, and why only the embedded and
//! memory stores take them through the API, is ipam-service's
//! [`ipam_service::labels`]. Here the Kubernetes source gets a cache: the
//! collector already watches every Node, so an assignment reads its
//! node's labels from that watch, and only a Node the watch does not hold
//! (not listed yet, or just created) costs a GET. The engine's releases
//! read the same source (affinity consistency, through
//! [`ipam_service::labels::ReleaseLabels`]): the server starts the watches
//! before it builds the engine. Namespaces are read by
//! name, as Calico's plugin reads them, and only when an assignment names
//! one. The same source reads the Calico IPAM annotations of an
//! assignment's pod (from the collector's pod watch, else by name) and
//! namespace, for assignments that follow them
//! ([`ipam_service::annotations`]): the server is the only reader of pods
//! among the IPAM's label sources.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::Json;
use ipam_api::labels::{check_labels, LabelOrigin, NodeLabelsBody, NodeLabelsResponse};
use ipam_api::names::check_node;
use ipam_api::ErrorBody;
use ipam_core::NodeName;
use ipam_service::annotations::{self, Annotations, PodAnnotations};
use ipam_service::labels::{
    calico_node_labels, unreadable, KubernetesLabels, LabelError, LabelSource,
};
use ipam_store::{Labels, StoreError};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Api;

use crate::api::{ApiState, Body, Segment};
use crate::error::ApiError;
use crate::gc::Watched;

type Shared = State<Arc<ApiState>>;

/// A node's labels, as assignments for it read them.
#[utoipa::path(get, path = "/v1/nodes/{node}/labels", tag = "nodes",
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "Its labels (none for a node the datastore does not know) and where they are kept", body = NodeLabelsResponse),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn get_node_labels(
    State(state): Shared,
    Segment(node): Segment<String>,
) -> Result<Json<NodeLabelsResponse>, ApiError> {
    check_node("node", &node)?;
    let answered = state.service.node_labels(&NodeName::new(node)).await;
    Ok(Json(answered?))
}

/// Replaces a node's labels (all of them: a label left out is removed),
/// on the embedded and memory stores. On Kubernetes a node's labels are
/// its Node's, on etcd its Calico Node resource's: there the answer is 409
/// `node_labels_read_only`, naming the command that changes them.
#[utoipa::path(put, path = "/v1/nodes/{node}/labels", tag = "nodes", request_body = NodeLabelsBody,
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "Stored", body = NodeLabelsResponse),
        (status = 400, description = "A label Kubernetes would not store", body = ErrorBody),
        (status = 409, description = "This datastore's node labels are not the IPAM's (`node_labels_read_only`)", body = ErrorBody),
        (status = 503, description = "Datastore unreachable", body = ErrorBody),
    ))]
pub async fn set_node_labels(
    State(state): Shared,
    Segment(node): Segment<String>,
    Body(body): Body<NodeLabelsBody>,
) -> Result<Json<NodeLabelsResponse>, ApiError> {
    check_node("node", &node)?;
    check_labels("labels", &body.labels)?;
    let answered = state
        .service
        .set_node_labels(&NodeName::new(node), body.labels)
        .await;
    Ok(Json(answered?))
}

/// Kubernetes labels with the Nodes read from a watch first, and the
/// pods whose Calico annotations assignments follow
/// ([`ipam_service::annotations`]), read from the collector's pod watch
/// first. Without a collector, every Node and pod is a GET.
pub struct CachedKubernetesLabels {
    nodes: Option<Store<Node>>,
    pods: Option<Store<Pod>>,
    api: KubernetesLabels,
    client: kube::Client,
}

impl CachedKubernetesLabels {
    /// Reads Nodes and pods from `watched` (the collector's watches, when
    /// one runs), else through `client`.
    pub fn new(watched: Option<&Watched>, client: kube::Client) -> CachedKubernetesLabels {
        CachedKubernetesLabels {
            nodes: watched.map(Watched::nodes),
            pods: watched.map(Watched::pods),
            api: KubernetesLabels::new(client.clone()),
            client,
        }
    }

    // The pod's annotations of ipam_service::annotations::KEYS (all the
    // watch keeps of them); none for a pod that does not exist, where
    // Calico's plugin fails (getK8sPodInfo): a runtime may name a pod no
    // API server knows, and it then gets what its config asks. A watched
    // pod of another UID than the runtime's is a previous pod of that
    // name, deleted and created again faster than the watch reported:
    // the pod is read as Calico's plugin reads it, with a GET.
    async fn pod(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
    ) -> Result<Annotations, StoreError> {
        let watched = self
            .pods
            .as_ref()
            .and_then(|pods| pods.get(&ObjectRef::new(pod).within(namespace)))
            .filter(|watched| uid.is_none_or(|uid| watched.metadata.uid.as_deref() == Some(uid)));
        let found = match watched {
            Some(watched) => Some((*watched).clone()),
            None => Api::<Pod>::namespaced(self.client.clone(), namespace)
                .get_opt(pod)
                .await
                .map_err(|e| unreadable(format!("reading Pod {namespace}/{pod}"), e))?,
        };
        Ok(found
            .map(|p| annotations::kept(p.metadata.annotations.as_ref()))
            .unwrap_or_default())
    }
}

#[async_trait]
impl LabelSource for CachedKubernetesLabels {
    fn origin(&self) -> LabelOrigin {
        self.api.origin()
    }

    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        match self
            .nodes
            .as_ref()
            .and_then(|n| n.get(&ObjectRef::new(node)))
        {
            Some(watched) => Ok(calico_node_labels(&watched)),
            None => self.api.node_labels(node).await,
        }
    }

    async fn namespace_labels(&self, namespace: &str) -> Result<Labels, StoreError> {
        self.api.namespace_labels(namespace).await
    }

    async fn set_node_labels(&self, node: &str, labels: &Labels) -> Result<(), LabelError> {
        self.api.set_node_labels(node, labels).await
    }

    async fn pod_annotations(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
    ) -> Result<Option<PodAnnotations>, StoreError> {
        let (namespace_labels, on_namespace) = self.api.namespace(namespace).await?;
        Ok(Some(PodAnnotations {
            namespace_labels,
            namespace: on_namespace,
            pod: self.pod(namespace, pod, uid).await?,
        }))
    }
}
