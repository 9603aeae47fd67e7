//! An in-process Kubernetes API server for Calico's cluster-scoped custom
//! resources and the few built-in kinds the IPAM reads, so that the
//! Kubernetes datastore and the garbage collector can be tested against the
//! API's contract without a cluster.
//!
//! It serves every kind in [`crds::manifests::crds()`] under
//! `/apis/crd.projectcalico.org/v1/<plural>[/<name>]` and keeps the parts of
//! the contract a datastore depends on, as the real API server keeps them
//! for custom resources:
//!
//! - one resourceVersion counter for everything (etcd's revision); every
//!   write that changes an object takes the next value, and a replace that
//!   changes nothing writes nothing and keeps the resourceVersion;
//! - create refuses an existing name (409 AlreadyExists), a missing or
//!   malformed name (422 Invalid) and a resourceVersion (500, as the API
//!   does); it sets uid, creationTimestamp, resourceVersion and generation 1;
//! - replace needs the object to exist (404: custom resources are not created
//!   by PUT), refuses a stale resourceVersion or a different uid (409
//!   Conflict), takes an update without resourceVersion unconditionally,
//!   keeps the server-owned metadata, and raises generation only when
//!   something outside metadata changed (these CRDs have no status
//!   subresource);
//! - delete honours `preconditions.uid` and `preconditions.resourceVersion`
//!   (409 Conflict), returns the deleted object, and only marks an object
//!   with finalizers (deletionTimestamp) until a replace empties them;
//! - every write is pruned of fields the CRD's openAPIV3Schema does not
//!   declare (silently: `preserveUnknownFields: false`), defaulted, and
//!   validated for type, nullability, required fields, enums, the formats
//!   `date-time`, `int32`, `int64` and `cidr`, bounds, lengths and item
//!   counts; failures are 422 Invalid with the API's message shape (this
//!   is [`crds::validation`], the same code `crds`' tests judge Calico's
//!   objects with, so the two cannot disagree);
//! - list filters by label selector (`k=v`, `k==v`, `k!=v`, `k in (..)`,
//!   `k notin (..)`, `k`, `!k`) and answers `<Kind>List` with the current
//!   resourceVersion, all in one page (`limit` is ignored and no `continue`
//!   is given, which the API allows); `resourceVersion=0` and
//!   `resourceVersionMatch=NotOlderThan` are met by the current state;
//!   field selectors, `resourceVersionMatch=Exact` and dry runs are refused
//!   with 400 rather than ignored;
//! - watch (`?watch=true`) streams newline-delimited WatchEvents (ADDED,
//!   MODIFIED, DELETED) after the given resourceVersion, or the current
//!   objects first when none (or "0") is given, until `timeoutSeconds`;
//!   `allowWatchBookmarks` is accepted (no periodic bookmarks are sent,
//!   which the API allows), and `sendInitialEvents=true` (a streaming list)
//!   sends the current objects and then the BOOKMARK annotated
//!   `k8s.io/initial-events-end`. So kube's `watcher` and `reflector` work
//!   with their default list-then-watch and with streaming lists.
//!
//! Not kept: CEL validation rules (`x-kubernetes-validations`), managed
//! fields, label syntax checks, pagination (the API allows a server to
//! ignore `limit`), authentication. Errors are `Status` objects shaped as
//! the API shapes them.
//!
//! Routes: a collection, `GET` (list, or watch) and `POST` (create), at
//! `/apis/<group>/<version>/<plural>` and `/api/<version>/<plural>` (the
//! core group), and for namespaced kinds also under
//! `.../namespaces/<namespace>/<plural>`; an object, `GET`, `PUT`
//! (replace) and `DELETE`, at the collection's path plus `/<name>`.
//!
//! Objects are JSON, stored by (group, version, plural); namespaced ones
//! under `<namespace>/<name>`. Besides the CRDs (cluster-scoped), three
//! built-in kinds are served with every contract above but the schema:
//! they are kept as written (`x-kubernetes-preserve-unknown-fields`).
//! They are core/v1 `pods` (namespaced), `nodes` and `namespaces`, and
//! coordination.k8s.io/v1 `leases` (namespaced), at the API's paths
//! (`/api/v1/namespaces/<ns>/pods/<name>`, `/api/v1/nodes/<name>`,
//! `/apis/coordination.k8s.io/v1/namespaces/<ns>/leases/<name>`, and the
//! cluster-wide lists `/api/v1/pods`, `/api/v1/nodes`,
//! `/apis/coordination.k8s.io/v1/leases`): what a consistency check and
//! the garbage collector read, the labels pools' selectors match, and a
//! leader election's Lease. A namespaced
//! kind asked for without a namespace (but for a list), or a
//! cluster-scoped one with one, is 404 as on a real server; a create takes
//! the namespace from the path, and a body naming another is 400. A list
//! or watch under a namespace sees that namespace only. Tests set pods,
//! nodes and namespaces up with [`ApiServer::put_core`] and [`ApiServer::remove_core`].
//!
//! core/v1 `services` (namespaced) are served too, with their `status`
//! subresource (`subresource`): a load-balancer controller's view. Tests
//! create, change and delete them through the API as a user would.
//!
//! By concern: `store` holds the state (resources, objects, the revision
//! counter, the change log), `routes` the handlers of each verb, `target`
//! what a path names, `watch` the streams, `selectors` label selectors,
//! `status` the `Status` errors and `rbac` the record of requests in RBAC's
//! terms.

mod rbac;
mod routes;
mod selectors;
mod status;
mod store;
mod subresource;
mod target;
mod watch;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use rbac::Access;
use routes::app;
use store::{core_key, ResourceId, Shared, Store};

/// A running API server on a free loopback port. Dropping it stops it.
pub struct ApiServer {
    url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    kubeconfig: PathBuf,
    // Holds the kubeconfig file; removed on drop.
    _dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts a server that serves every CRD of the `crds` crate, and
    /// writes a kubeconfig that points at it.
    ///
    /// # Panics
    ///
    /// When the CRDs cannot be generated or no loopback port can be bound:
    /// both mean the test cannot run at all.
    pub async fn start() -> ApiServer {
        let crds = crds::manifests::crds().expect("generating the CRDs to serve");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::serving(&crds)),
            accesses: Mutex::new(BTreeSet::new()),
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("binding a loopback port for the API server");
        let addr = listener.local_addr().expect("the bound address");
        let url = format!("http://{addr}");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = app(shared.clone());
        let task = tokio::spawn(async move {
            // An error here means the listener failed; tests then see
            // connection errors, which is what a dead server looks like.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let dir = tempfile::tempdir().expect("a temporary directory for the kubeconfig");
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &url).expect("writing the kubeconfig");
        ApiServer {
            url,
            shared,
            stop: Some(stop),
            task,
            kubeconfig,
            _dir: dir,
        }
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file whose current context points at this server, as
    /// `kubectl --kubeconfig` would read it.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every kind of request the server has been asked so far (verb,
    /// group, resource, object name), for testing that a role allows
    /// exactly what the code does.
    pub fn accesses(&self) -> BTreeSet<Access> {
        self.shared
            .accesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the requests recorded so far (after a test's set-up).
    pub fn forget_accesses(&self) {
        self.shared
            .accesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Every stored object of a `crd.projectcalico.org/v1` resource, by
    /// plural (`ipamblocks`), in name order, exactly as the server holds it.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.shared
            .store()
            .objects
            .get(&ResourceId::calico(plural))
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One stored object of a `crd.projectcalico.org/v1` resource.
    pub fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .objects
            .get(&ResourceId::calico(plural))
            .and_then(|objects| objects.get(name))
            .cloned()
    }

    /// Changes a stored object as another client would (a controller adding
    /// a label, an operator adding a finalizer): `change` edits its JSON and
    /// the write takes the next resourceVersion. Returns that version, or
    /// `None` when there is no such object.
    pub fn modify(
        &self,
        plural: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Option<String> {
        let mut store = self.shared.store();
        let id = ResourceId::calico(plural);
        store.objects.get(&id)?.get(name)?;
        let revision = store.next_revision();
        let object = store.objects.get_mut(&id)?.get_mut(name)?;
        change(object);
        object["metadata"]["resourceVersion"] = json!(revision);
        let object = object.clone();
        store.record(&id, "MODIFIED", &object);
        Some(revision)
    }
}

impl ApiServer {
    /// Adds or replaces a core/v1 object (`pods`, `nodes`, `namespaces`) as the cluster
    /// would hold it; `object` needs `metadata.name` (and, for a pod,
    /// `metadata.namespace`). It takes the next resourceVersion.
    ///
    /// # Panics
    ///
    /// When `plural` is not a core kind served here or the object has no
    /// name: the test itself is wrong.
    pub fn put_core(&self, plural: &str, mut object: Value) {
        let id = ResourceId::core(plural);
        let mut store = self.shared.store();
        let kind = store
            .resources
            .get(&id)
            .map(|r| r.kind.clone())
            .unwrap_or_else(|| panic!("{plural} is not a core kind served here"));
        let key = core_key(&object).unwrap_or_else(|| panic!("a {kind} needs metadata.name"));
        let revision = store.next_revision();
        object["apiVersion"] = json!(id.api_version());
        object["kind"] = json!(kind);
        object["metadata"]["resourceVersion"] = json!(revision);
        let previous = store
            .objects
            .entry(id.clone())
            .or_default()
            .insert(key, object.clone());
        let kind = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.record(&id, kind, &object);
    }

    /// One stored core/v1 object (`services` in `namespace`, `nodes`
    /// without), exactly as the server holds it.
    pub fn core(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_string(),
        };
        self.shared
            .store()
            .objects
            .get(&ResourceId::core(plural))
            .and_then(|objects| objects.get(&key))
            .cloned()
    }

    /// Removes a core/v1 object, as if it had been deleted; false when
    /// there was none.
    pub fn remove_core(&self, plural: &str, namespace: Option<&str>, name: &str) -> bool {
        let key = match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_string(),
        };
        let id = ResourceId::core(plural);
        let mut store = self.shared.store();
        let removed = store
            .objects
            .get_mut(&id)
            .and_then(|objects| objects.remove(&key));
        match removed {
            Some(object) => {
                store.record(&id, "DELETED", &object);
                true
            }
            None => false,
        }
    }
}

impl ApiServer {
    /// Holds back every watch event from now on, as a watch that lags
    /// behind the API server: watches stay open and deliver nothing new,
    /// while lists and reads see the current state.
    pub fn pause_watches(&self) {
        let mut store = self.shared.store();
        store.watches_paused_at = Some(store.last_revision);
    }

    /// Lets the watches catch up with what [`ApiServer::pause_watches`]
    /// held back.
    pub fn resume_watches(&self) {
        let mut store = self.shared.store();
        store.watches_paused_at = None;
        let revision = store.last_revision;
        store.changed.send_replace(revision);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open keep-alive connections would hold a graceful shutdown
        // forever; the test is over, so end the task outright.
        self.task.abort();
    }
}

/// Writes a kubeconfig (JSON, which is YAML) with one cluster, one user
/// without credentials and one current context.
fn write_kubeconfig(path: &Path, url: &str) -> std::io::Result<()> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testkit", "cluster": {"server": url}}],
        "users": [{"name": "testkit", "user": {}}],
        "contexts": [{"name": "testkit", "context": {"cluster": "testkit", "user": "testkit"}}],
        "current-context": "testkit",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)
}
