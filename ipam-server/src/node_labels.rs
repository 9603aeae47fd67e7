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
//! (not listed yet, or just created) costs a GET. Namespaces are read by
//! name, as Calico's plugin reads them, and only when an assignment names
//! one.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::Json;
use ipam_api::labels::{check_labels, LabelOrigin, NodeLabelsBody, NodeLabelsResponse};
use ipam_api::names::check_node;
use ipam_api::ErrorBody;
use ipam_core::NodeName;
use ipam_service::labels::{calico_node_labels, KubernetesLabels, LabelError, LabelSource};
use ipam_service::ServiceError;
use ipam_store::{Labels, StoreError};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{ApiState, Body, Segment};
use crate::error::{ApiError, ErrorCode};

type Shared = State<Arc<ApiState>>;

fn answer(error: ServiceError) -> ApiError {
    match error {
        ServiceError::Refused { code, message } => ApiError::new(code, message),
        // The server's own service is the engine: it always answers.
        ServiceError::Unanswered(e) => {
            ApiError::new(ErrorCode::DatastoreUnavailable, e.to_string())
        }
    }
}

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
    Ok(Json(answered.map_err(answer)?))
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
    Ok(Json(answered.map_err(answer)?))
}

/// Kubernetes labels with the Nodes read from a watch first.
pub struct CachedKubernetesLabels {
    nodes: Store<Node>,
    api: KubernetesLabels,
}

impl CachedKubernetesLabels {
    /// Reads Nodes from `nodes` (the collector's watch), else through
    /// `api`.
    pub fn new(nodes: Store<Node>, api: KubernetesLabels) -> CachedKubernetesLabels {
        CachedKubernetesLabels { nodes, api }
    }
}

#[async_trait]
impl LabelSource for CachedKubernetesLabels {
    fn origin(&self) -> LabelOrigin {
        self.api.origin()
    }

    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        match self.nodes.get(&ObjectRef::new(node)) {
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
}
