//! Which pods and nodes exist, read from Kubernetes, so that `ipamctl
//! check` can tell addresses of pods and nodes that are gone (leaks) from
//! those in use. calicoctl's check reads the same cluster: the Kubernetes
//! datastore's own, or the one `--kubeconfig` / `KUBECONFIG` names when
//! IPAM lives in etcd (check.go).
//!
//! Lists are read in pages, as kubectl does, so that a large cluster is
//! not one huge answer.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::Path;

use ipam_core::check::{Liveness, PodRef};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

use crate::error::CliError;

/// Objects per page.
const PAGE: u32 = 500;

/// Every pod and node of the cluster `kubeconfig` (else `KUBECONFIG`,
/// `~/.kube/config` or in-cluster) points at.
pub async fn from_kubernetes(kubeconfig: Option<&Path>) -> Result<Liveness, CliError> {
    let client = client(kubeconfig).await?;
    let pods = list_all(Api::<Pod>::all(client.clone()), "pods")
        .await?
        .into_iter()
        .filter_map(|pod| {
            Some(PodRef {
                namespace: pod.metadata.namespace?,
                name: pod.metadata.name?,
            })
        })
        .collect::<BTreeSet<_>>();
    let nodes = list_all(Api::<Node>::all(client), "nodes")
        .await?
        .into_iter()
        .filter_map(|node| node.metadata.name)
        .collect::<BTreeSet<_>>();
    Ok(Liveness {
        pods: Some(pods),
        nodes: Some(nodes),
    })
}

async fn client(kubeconfig: Option<&Path>) -> Result<Client, CliError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| CliError::Usage(format!("--kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| CliError::Usage(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => Config::infer().await.map_err(|e| {
            CliError::Usage(format!(
                "no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| CliError::Usage(format!("Kubernetes client: {e}")))
}

// Every object of a kind, page by page.
async fn list_all<K>(api: Api<K>, what: &str) -> Result<Vec<K>, CliError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await.map_err(|e| CliError::Unavailable {
            message: format!("listing {what} in Kubernetes: {e}"),
            hint: format!(
                "check --kubeconfig and that it may list {what} cluster-wide; without a \
                 kubeconfig the pod and node checks are skipped"
            ),
        })?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}
