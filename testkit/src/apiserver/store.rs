//! The API server's state: the resources it serves and their schemas, the
//! objects by resource and key, one resourceVersion counter for all of
//! them (etcd's revision), and the log of changes that watches read.
//! Nothing here speaks HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::{json, Value};

use super::rbac::Access;

/// What the routes share: the store, and every request seen (for RBAC).
pub(super) struct Shared {
    pub(super) store: Mutex<Store>,
    pub(super) accesses: Mutex<BTreeSet<Access>>,
}

impl Shared {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        // Every change is made on a copy and stored in one insert, so a
        // panic while the lock is held leaves no half-written object.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which resource a URL names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ResourceId {
    pub(super) group: String,
    version: String,
    pub(super) plural: String,
}

impl ResourceId {
    pub(super) fn new(group: &str, version: &str, plural: &str) -> ResourceId {
        ResourceId {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
        }
    }

    pub(super) fn core(plural: &str) -> ResourceId {
        ResourceId::new("", "v1", plural)
    }

    pub(super) fn calico(plural: &str) -> ResourceId {
        ResourceId::new(crds::GROUP, crds::VERSION, plural)
    }

    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `ipamblocks.crd.projectcalico.org`, as the API names a resource in
    /// its messages.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub(super) struct ResourceType {
    pub(super) kind: String,
    pub(super) list_kind: String,
    pub(super) schema: JSONSchemaProps,
    // Objects live in a namespace (`.../namespaces/<ns>/<plural>`).
    pub(super) namespaced: bool,
}

pub(super) struct Store {
    pub(super) resources: BTreeMap<ResourceId, ResourceType>,
    pub(super) objects: BTreeMap<ResourceId, BTreeMap<String, Value>>,
    pub(super) last_revision: u64,
    // Makes uids differ between servers as well as within one.
    uid_seed: u64,
    // Every change, in revision order, for watches.
    pub(super) events: Vec<Event>,
    // The revision of the last event: what a watch waits on.
    pub(super) changed: tokio::sync::watch::Sender<u64>,
    // While set, watches deliver no event after this revision.
    pub(super) watches_paused_at: Option<u64>,
}

/// One change a watch reports.
pub(super) struct Event {
    pub(super) revision: u64,
    pub(super) id: ResourceId,
    pub(super) kind: &'static str,
    pub(super) object: Value,
}

impl Store {
    /// A store serving every served version of `crds` (cluster-scoped,
    /// with their schemas) and the built-in kinds (kept as written).
    pub(super) fn serving(crds: &[CustomResourceDefinition]) -> Store {
        let mut store = Store::new();
        for crd in crds {
            for version in crd.spec.versions.iter().filter(|v| v.served) {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.clone())
                    .unwrap_or_default();
                store.resources.insert(
                    ResourceId::new(&crd.spec.group, &version.name, &crd.spec.names.plural),
                    ResourceType {
                        kind: crd.spec.names.kind.clone(),
                        list_kind: crd
                            .spec
                            .names
                            .list_kind
                            .clone()
                            .unwrap_or_else(|| format!("{}List", crd.spec.names.kind)),
                        schema,
                        namespaced: false,
                    },
                );
            }
        }
        for (group, plural, kind, namespaced) in BUILT_IN_KINDS {
            store.resources.insert(
                ResourceId::new(group, "v1", plural),
                ResourceType {
                    kind: kind.to_string(),
                    list_kind: format!("{kind}List"),
                    // Not validated: every field is kept as written.
                    schema: JSONSchemaProps {
                        x_kubernetes_preserve_unknown_fields: Some(true),
                        ..JSONSchemaProps::default()
                    },
                    namespaced,
                },
            );
        }
        store
    }

    fn new() -> Store {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Store {
            resources: BTreeMap::new(),
            objects: BTreeMap::new(),
            last_revision: 0,
            uid_seed: nanos,
            events: Vec::new(),
            changed: tokio::sync::watch::channel(0).0,
            watches_paused_at: None,
        }
    }

    /// Notes a change for watches: `kind` is ADDED, MODIFIED or DELETED,
    /// `object` as it is now (a deleted one as it was, at a new
    /// resourceVersion, as the API reports it).
    pub(super) fn record(&mut self, id: &ResourceId, kind: &'static str, object: &Value) {
        let mut object = object.clone();
        let revision = if kind == "DELETED" {
            let revision = self.next_revision();
            object["metadata"]["resourceVersion"] = json!(revision);
            self.last_revision
        } else {
            self.last_revision
        };
        self.events.push(Event {
            revision,
            id: id.clone(),
            kind,
            object,
        });
        self.changed.send_replace(revision);
    }

    pub(super) fn next_revision(&mut self) -> String {
        self.last_revision += 1;
        self.last_revision.to_string()
    }

    pub(super) fn new_uid(&self) -> String {
        let a = self.uid_seed;
        let b = self.last_revision;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// The built-in kinds served: (group, plural, kind, namespaced), all v1.
const BUILT_IN_KINDS: [(&str, &str, &str, bool); 5] = [
    ("", "pods", "Pod", true),
    ("", "nodes", "Node", false),
    ("", "namespaces", "Namespace", false),
    ("", "services", "Service", true),
    ("coordination.k8s.io", "leases", "Lease", true),
];

// Namespaced objects are keyed `<namespace>/<name>`, so that a list comes
// out by namespace then name, as the API lists them.
pub(super) fn core_key(object: &Value) -> Option<String> {
    let name = object["metadata"]["name"].as_str()?;
    Some(match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    })
}
