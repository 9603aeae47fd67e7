//! The Kubernetes manifests in ../deploy: every document is a kind we
//! expect and holds only fields Kubernetes knows, the ClusterRole grants no
//! more than the IPAM uses, and the objects fit together (namespace,
//! service accounts, probes, selectors, host folders).

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every object of every file, in apply order (files sort by name).
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    daemon_sets: Vec<DaemonSet>,
    kinds_in_order: Vec<String>,
}

/// Parses a document as `T`, and refuses it unless writing `T` back gives
/// the same JSON: a misspelt or misplaced field would be dropped silently
/// by the typed parse, and so shows up here.
fn typed<T: DeserializeOwned + Serialize>(document: &Value, file: &str) -> T {
    let object: T =
        serde_json::from_value(document.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(
        &serde_json::to_value(&object).unwrap(),
        document,
        "{file}: a field Kubernetes does not know"
    );
    object
}

fn load() -> Manifests {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut all = Manifests {
        namespaces: vec![],
        service_accounts: vec![],
        cluster_roles: vec![],
        bindings: vec![],
        deployments: vec![],
        services: vec![],
        daemon_sets: vec![],
        kinds_in_order: vec![],
    };
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let document = Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}"));
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            match (
                document["apiVersion"].as_str().unwrap_or_default(),
                kind.as_str(),
            ) {
                ("v1", "Namespace") => all.namespaces.push(typed(&document, &file)),
                ("v1", "ServiceAccount") => all.service_accounts.push(typed(&document, &file)),
                ("v1", "Service") => all.services.push(typed(&document, &file)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    all.cluster_roles.push(typed(&document, &file))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    all.bindings.push(typed(&document, &file))
                }
                ("apps/v1", "Deployment") => all.deployments.push(typed(&document, &file)),
                ("apps/v1", "DaemonSet") => all.daemon_sets.push(typed(&document, &file)),
                (api_version, kind) => panic!("{file}: unexpected {api_version} {kind}"),
            }
            all.kinds_in_order.push(kind);
        }
    }
    all
}

fn only<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "expected one {what}");
    &items[0]
}

#[test]
fn every_manifest_is_a_known_kind_with_known_fields_in_apply_order() {
    let all = load();
    assert_eq!(
        all.kinds_in_order,
        [
            "Namespace",
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "DaemonSet"
        ],
        "the namespace and RBAC come before what uses them"
    );
}

#[test]
fn the_cluster_role_grants_only_ipam_resources_and_read_only_core_lookups() {
    let all = load();
    let role = only(&all.cluster_roles, "ClusterRole");
    let ipam_plurals: BTreeSet<String> = crds::manifests::crds()
        .unwrap()
        .into_iter()
        .map(|c| c.spec.names.plural)
        .collect();
    let writable = ["ipamblocks", "blockaffinities", "ipamhandles"];
    let mut granted_crds = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        let everything = groups.iter().chain(&resources).chain(&rule.verbs);
        assert!(
            everything.clone().all(|s| s != "*"),
            "no wildcards: {rule:?}"
        );
        assert!(rule.non_resource_urls.is_none());
        match groups.as_slice() {
            [group] if group == "crd.projectcalico.org" => {
                for resource in &resources {
                    assert!(
                        ipam_plurals.contains(resource),
                        "{resource} is not an IPAM resource"
                    );
                    let writes = rule.verbs.iter().any(|v| v != "get" && v != "list");
                    assert!(
                        !writes || writable.contains(&resource.as_str()),
                        "{resource} is read-only for the IPAM"
                    );
                    granted_crds.insert(resource.clone());
                }
                for verb in &rule.verbs {
                    assert!(
                        ["get", "list", "create", "update", "delete"].contains(&verb.as_str()),
                        "the IPAM never uses {verb}"
                    );
                }
            }
            [core] if core.is_empty() => {
                for resource in &resources {
                    assert!(
                        ["pods", "namespaces", "nodes"].contains(&resource.as_str()),
                        "the IPAM never reads {resource}"
                    );
                }
                assert_eq!(rule.verbs, ["get"], "core objects are only looked up");
            }
            other => panic!("unexpected API groups {other:?}"),
        }
    }
    assert_eq!(
        granted_crds, ipam_plurals,
        "every IPAM resource the engine touches"
    );
}

#[test]
fn the_binding_ties_the_role_to_both_service_accounts() {
    let all = load();
    let namespace = only(&all.namespaces, "Namespace")
        .metadata
        .name
        .clone()
        .unwrap();
    let role = only(&all.cluster_roles, "ClusterRole");
    let binding = only(&all.bindings, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let bound: BTreeSet<(String, String)> = binding
        .subjects
        .iter()
        .flatten()
        .map(|s| {
            assert_eq!(s.kind, "ServiceAccount");
            (s.namespace.clone().unwrap(), s.name.clone())
        })
        .collect();
    let accounts: BTreeSet<(String, String)> = all
        .service_accounts
        .iter()
        .map(|a| {
            (
                a.metadata.namespace.clone().unwrap(),
                a.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(bound, accounts);
    assert!(accounts.iter().all(|(ns, _)| *ns == namespace));
}

fn container_port(container: &Container, port: &IntOrString) -> i32 {
    let ports = container.ports.iter().flatten();
    match port {
        IntOrString::Int(n) => ports.map(|p| p.container_port).find(|p| p == n),
        IntOrString::String(name) => ports
            .filter(|p| p.name.as_ref() == Some(name))
            .map(|p| p.container_port)
            .next(),
    }
    .unwrap_or_else(|| panic!("{} declares no port {port:?}", container.name))
}

#[test]
fn the_server_runs_two_probed_replicas_behind_its_service() {
    let all = load();
    let namespace = only(&all.namespaces, "Namespace").metadata.name.clone();
    let deployment = only(&all.deployments, "Deployment");
    assert_eq!(deployment.metadata.namespace, namespace);
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    assert!(all
        .service_accounts
        .iter()
        .any(|a| a.metadata.name == pod.service_account_name));
    let container = only(&pod.containers, "server container");
    for (probe, path) in [
        (&container.readiness_probe, "/readyz"),
        (&container.liveness_probe, "/healthz"),
    ] {
        let http = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("an HTTP probe");
        assert_eq!(http.path.as_deref(), Some(path));
        container_port(container, &http.port);
    }
    let resources = container.resources.as_ref().unwrap();
    assert!(resources
        .requests
        .as_ref()
        .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
    assert!(resources
        .limits
        .as_ref()
        .is_some_and(|l| l.contains_key("memory")));

    let service = only(&all.services, "Service");
    assert_eq!(service.metadata.namespace, namespace);
    let selector = service.spec.as_ref().unwrap().selector.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(&spec.selector.match_labels.clone().unwrap(), selector);
    for port in service.spec.as_ref().unwrap().ports.iter().flatten() {
        let target = port
            .target_port
            .clone()
            .unwrap_or(IntOrString::Int(port.port));
        container_port(container, &target);
    }
}

#[test]
fn the_node_installer_writes_into_the_hosts_cni_folders_on_every_node() {
    let all = load();
    let daemon_set = only(&all.daemon_sets, "DaemonSet");
    let namespace = only(&all.namespaces, "Namespace").metadata.name.clone();
    assert_eq!(daemon_set.metadata.namespace, namespace);
    let pod = daemon_set.spec.template.spec.as_ref().unwrap();
    assert!(all
        .service_accounts
        .iter()
        .any(|a| a.metadata.name == pod.service_account_name));
    assert_eq!(
        pod.host_network,
        Some(true),
        "it must not need a pod address"
    );
    let tolerates_all = pod
        .tolerations
        .iter()
        .flatten()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none());
    assert!(tolerates_all, "runs on tainted nodes too");
    let host_paths: BTreeSet<String> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    assert_eq!(
        host_paths,
        BTreeSet::from(["/opt/cni/bin".to_string(), "/etc/cni/net.d".to_string()])
    );
    let containers: Vec<&Container> = pod
        .init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .collect();
    let scripts: String = containers
        .iter()
        .flat_map(|c| c.args.iter().flatten())
        .cloned()
        .collect();
    assert!(
        scripts.contains("/host/opt/cni/bin/calico-ipam"),
        "installs the binary by its CNI name"
    );
    assert!(scripts.contains("/host/etc/cni/net.d/calico-ipam-rs-kubeconfig"));
    for container in containers {
        let resources = container.resources.as_ref().unwrap();
        assert!(
            resources.requests.is_some() && resources.limits.is_some(),
            "{}",
            container.name
        );
    }
}
