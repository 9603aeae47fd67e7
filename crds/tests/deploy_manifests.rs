//! The Kubernetes manifests in ../deploy: every document is a kind we
//! expect and holds only fields Kubernetes knows, the ClusterRole grants no
//! more than the IPAM uses, and the objects fit together (namespace,
//! service accounts, probes, selectors, host folders).

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Every object of every file, in apply order (files sort by name).
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
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
        roles: vec![],
        role_bindings: vec![],
        deployments: vec![],
        services: vec![],
        daemon_sets: vec![],
        kinds_in_order: vec![],
    };
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for document in documents {
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
                ("rbac.authorization.k8s.io/v1", "Role") => all.roles.push(typed(&document, &file)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    all.role_bindings.push(typed(&document, &file))
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
            "ClusterRole",
            "Role",
            "RoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "DaemonSet"
        ],
        "the namespace and RBAC come before what uses them"
    );
}

#[test]
fn the_cluster_roles_grant_only_ipam_resources_without_wildcards() {
    // What each role may do, verb by verb, is held to what the code does
    // by tests/tests/rbac.rs; here, the shape every role keeps.
    let all = load();
    assert_eq!(
        all.cluster_roles.len(),
        2,
        "one role for the plugin, one for the server"
    );
    let ipam_plurals: BTreeSet<String> = crds::manifests::crds()
        .unwrap()
        .into_iter()
        .map(|c| c.spec.names.plural)
        .collect();
    for role in &all.cluster_roles {
        let name = role.metadata.name.clone().unwrap();
        let mut granted = BTreeSet::new();
        for rule in role.rules.iter().flatten() {
            let groups = rule.api_groups.clone().unwrap_or_default();
            let resources = rule.resources.clone().unwrap_or_default();
            let everything = groups.iter().chain(&resources).chain(&rule.verbs);
            assert!(
                everything.clone().all(|s| s != "*"),
                "{name}: no wildcards: {rule:?}"
            );
            assert!(rule.non_resource_urls.is_none(), "{name}: {rule:?}");
            if groups == [""] {
                // Core objects are only read, but for the status of Services:
                // the server's garbage collector watches pods, nodes and
                // Services, its load-balancer controller Services (whose
                // status alone it writes), and both server and plugin read
                // the labels of nodes and namespaces that pools' selectors
                // match.
                let read: [(&str, &[&str], &[&str]); 5] = [
                    (
                        "calico-ipam-rs-server",
                        &["pods", "nodes"],
                        &["get", "list", "watch"],
                    ),
                    ("calico-ipam-rs-server", &["namespaces"], &["get"]),
                    (
                        "calico-ipam-rs-server",
                        &["services"],
                        &["get", "list", "watch"],
                    ),
                    ("calico-ipam-rs-server", &["services/status"], &["update"]),
                    ("calico-ipam-rs-plugin", &["nodes", "namespaces"], &["get"]),
                ];
                assert!(
                    read.iter()
                        .any(|(role, r, v)| *role == name && resources == *r && rule.verbs == *v),
                    "{name}: {rule:?}"
                );
                continue;
            }
            assert_eq!(groups, ["crd.projectcalico.org"], "{name}: {rule:?}");
            for resource in &resources {
                assert!(
                    ipam_plurals.contains(resource),
                    "{name}: {resource} is not an IPAM resource"
                );
                granted.insert(resource.clone());
            }
            for verb in &rule.verbs {
                assert!(
                    ["get", "list", "create", "update", "delete"].contains(&verb.as_str()),
                    "{name}: the IPAM never uses {verb}"
                );
            }
        }
        assert_eq!(
            granted, ipam_plurals,
            "{name}: every IPAM resource the engine touches"
        );
    }
}

#[test]
fn each_service_account_is_bound_to_one_role_and_each_role_is_bound() {
    let all = load();
    let namespace = only(&all.namespaces, "Namespace")
        .metadata
        .name
        .clone()
        .unwrap();
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
    assert!(accounts.iter().all(|(ns, _)| *ns == namespace));
    let roles: BTreeSet<String> = all
        .cluster_roles
        .iter()
        .map(|r| r.metadata.name.clone().unwrap())
        .collect();
    let mut bound_accounts = Vec::new();
    let mut bound_roles = BTreeSet::new();
    for binding in &all.bindings {
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert!(roles.contains(&binding.role_ref.name), "{binding:?}");
        bound_roles.insert(binding.role_ref.name.clone());
        for subject in binding.subjects.iter().flatten() {
            assert_eq!(subject.kind, "ServiceAccount");
            bound_accounts.push((subject.namespace.clone().unwrap(), subject.name.clone()));
        }
    }
    bound_accounts.sort();
    let expected: Vec<(String, String)> = accounts.into_iter().collect();
    assert_eq!(bound_accounts, expected, "each account bound exactly once");
    assert_eq!(bound_roles, roles, "every role is bound");
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

#[test]
fn the_servers_lease_role_is_namespaced_and_names_its_leases() {
    let all = load();
    let namespace = only(&all.namespaces, "Namespace").metadata.name.clone();
    let role = only(&all.roles, "Role");
    assert_eq!(role.metadata.namespace, namespace);
    for rule in role.rules.iter().flatten() {
        assert_eq!(
            rule.api_groups.as_deref(),
            Some(&["coordination.k8s.io".to_string()][..])
        );
        assert_eq!(rule.resources.as_deref(), Some(&["leases".to_string()][..]));
        match rule.resource_names.as_deref() {
            Some(names) => {
                // The garbage collector's and the load-balancer
                // controller's, the flags' defaults.
                assert_eq!(names, ["ipam-server-gc", "ipam-server-loadbalancer"]);
                assert_eq!(rule.verbs, ["get", "update"]);
            }
            // Create cannot be limited to a name.
            None => assert_eq!(rule.verbs, ["create"]),
        }
    }
    let binding = only(&all.role_bindings, "RoleBinding");
    assert_eq!(binding.metadata.namespace, namespace);
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects: Vec<(String, String)> = binding
        .subjects
        .iter()
        .flatten()
        .map(|s| (s.kind.clone(), s.name.clone()))
        .collect();
    assert_eq!(
        subjects,
        [("ServiceAccount".to_string(), "ipam-server".to_string())]
    );
    // The Deployment names the Lease's namespace from the downward API.
    let deployment = only(&all.deployments, "Deployment");
    let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
    let env: BTreeSet<String> = container
        .env
        .iter()
        .flatten()
        .filter(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .is_some()
        })
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(
        env,
        ["POD_NAME".to_string(), "POD_NAMESPACE".to_string()].into()
    );
}
