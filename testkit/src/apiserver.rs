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
//!   counts; failures are 422 Invalid with the API's message shape;
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
//! They are core/v1 `pods` (namespaced) and `nodes`, and
//! coordination.k8s.io/v1 `leases` (namespaced), at the API's paths
//! (`/api/v1/namespaces/<ns>/pods/<name>`, `/api/v1/nodes/<name>`,
//! `/apis/coordination.k8s.io/v1/namespaces/<ns>/leases/<name>`, and the
//! cluster-wide lists `/api/v1/pods`, `/api/v1/nodes`,
//! `/apis/coordination.k8s.io/v1/leases`): what a consistency check and
//! the garbage collector read, and a leader election's Lease. A namespaced
//! kind asked for without a namespace (but for a list), or a
//! cluster-scoped one with one, is 404 as on a real server; a create takes
//! the namespace from the path, and a body naming another is 400. A list
//! or watch under a namespace sees that namespace only. Tests set pods
//! and nodes up with [`ApiServer::put_core`] and [`ApiServer::remove_core`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
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
    /// Adds or replaces a core/v1 object (`pods`, `nodes`) as the cluster
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

/// The built-in kinds served: (group, plural, kind, namespaced), all v1.
const BUILT_IN_KINDS: [(&str, &str, &str, bool); 3] = [
    ("", "pods", "Pod", true),
    ("", "nodes", "Node", false),
    ("coordination.k8s.io", "leases", "Lease", true),
];

// Namespaced objects are keyed `<namespace>/<name>`, so that a list comes
// out by namespace then name, as the API lists them.
fn core_key(object: &Value) -> Option<String> {
    let name = object["metadata"]["name"].as_str()?;
    Some(match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    })
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

struct Shared {
    store: Mutex<Store>,
    accesses: Mutex<BTreeSet<Access>>,
}

/// One kind of request the server was asked, in RBAC's terms: what a role
/// must allow for it to pass.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: String,
    /// The API group (`""` for core).
    pub group: String,
    /// The resource (plural).
    pub resource: String,
    /// The object's name, for requests on one object.
    pub name: Option<String>,
}

impl Access {
    // RBAC's verb for a request: the method, and for GET whether it names
    // one object or a collection (and whether it watches).
    fn of(method: &axum::http::Method, path: &str, query: Option<&str>) -> Option<Access> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
            ["api", _version, rest @ ..] => (String::new(), rest),
            _ => return None,
        };
        let rest = match rest {
            ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
            rest => rest,
        };
        let (resource, name) = match rest {
            [resource] => (resource.to_string(), None),
            [resource, name] => (resource.to_string(), Some(name.to_string())),
            _ => return None,
        };
        let watching =
            query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let verb = match (method.as_str(), &name) {
            ("GET", None) if watching => "watch",
            ("GET", None) => "list",
            ("GET", Some(_)) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => return None,
        };
        Some(Access {
            verb: verb.to_string(),
            group,
            resource,
            name,
        })
    }
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // Every change is made on a copy and stored in one insert, so a
        // panic while the lock is held leaves no half-written object.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which resource a URL names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ResourceId {
    group: String,
    version: String,
    plural: String,
}

impl ResourceId {
    fn new(group: &str, version: &str, plural: &str) -> ResourceId {
        ResourceId {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
        }
    }

    fn core(plural: &str) -> ResourceId {
        ResourceId::new("", "v1", plural)
    }

    fn calico(plural: &str) -> ResourceId {
        ResourceId::new(crds::GROUP, crds::VERSION, plural)
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `ipamblocks.crd.projectcalico.org`, as the API names a resource in
    /// its messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

struct ResourceType {
    kind: String,
    list_kind: String,
    schema: JSONSchemaProps,
    // Objects live in a namespace (`.../namespaces/<ns>/<plural>`).
    namespaced: bool,
}

struct Store {
    resources: BTreeMap<ResourceId, ResourceType>,
    objects: BTreeMap<ResourceId, BTreeMap<String, Value>>,
    last_revision: u64,
    // Makes uids differ between servers as well as within one.
    uid_seed: u64,
    // Every change, in revision order, for watches.
    events: Vec<Event>,
    // The revision of the last event: what a watch waits on.
    changed: tokio::sync::watch::Sender<u64>,
}

/// One change a watch reports.
struct Event {
    revision: u64,
    id: ResourceId,
    kind: &'static str,
    object: Value,
}

impl Store {
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
        }
    }

    /// Notes a change for watches: `kind` is ADDED, MODIFIED or DELETED,
    /// `object` as it is now (a deleted one as it was, at a new
    /// resourceVersion, as the API reports it).
    fn record(&mut self, id: &ResourceId, kind: &'static str, object: &Value) {
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

    fn next_revision(&mut self) -> String {
        self.last_revision += 1;
        self.last_revision.to_string()
    }

    fn new_uid(&self) -> String {
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

fn app(shared: Arc<Shared>) -> Router {
    let collection = || get(list_objects).post(create_object);
    let object = || get(get_object).put(replace_object).delete(delete_object);
    Router::new()
        .route("/apis/{group}/{version}/{plural}", collection())
        .route("/apis/{group}/{version}/{plural}/{name}", object())
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}",
            collection(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            object(),
        )
        .route("/api/{version}/{plural}", collection())
        .route("/api/{version}/{plural}/{name}", object())
        .route(
            "/api/{version}/namespaces/{namespace}/{plural}",
            collection(),
        )
        .route(
            "/api/{version}/namespaces/{namespace}/{plural}/{name}",
            object(),
        )
        .fallback(|| async { ApiError::unknown_resource() })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record_access,
        ))
        .with_state(shared)
}

// Notes what each request asks, refused or not: a role must allow it.
async fn record_access(
    State(shared): AppState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    if let Some(access) = Access::of(request.method(), uri.path(), uri.query()) {
        shared
            .accesses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(access);
    }
    next.run(request).await
}

type AppState = State<Arc<Shared>>;

/// What a request's path names: `/api/<version>` (the core group) or
/// `/apis/<group>/<version>`, then `namespaces/<namespace>/` for a
/// namespaced kind, the resource, and the object's name.
struct Target {
    id: ResourceId,
    namespace: Option<String>,
    name: Option<String>,
}

type TargetPath = UrlPath<BTreeMap<String, String>>;

impl Target {
    fn of(UrlPath(mut params): TargetPath) -> Target {
        let mut take = |key: &str| params.remove(key);
        Target {
            id: ResourceId::new(
                &take("group").unwrap_or_default(),
                &take("version").unwrap_or_default(),
                &take("plural").unwrap_or_default(),
            ),
            namespace: take("namespace"),
            name: take("name"),
        }
    }

    /// The resource, when it is served at this path: a namespaced kind
    /// under a namespace (or, for a list, across all of them), a
    /// cluster-scoped one without.
    fn resource<'a>(&self, store: &'a Store) -> Result<&'a ResourceType, ApiError> {
        let resource = store
            .resources
            .get(&self.id)
            .ok_or_else(ApiError::unknown_resource)?;
        let listing_all = self.namespace.is_none() && self.name.is_none();
        match (resource.namespaced, self.namespace.is_some()) {
            (true, true) | (false, false) => Ok(resource),
            (true, false) if listing_all => Ok(resource),
            _ => Err(ApiError::unknown_resource()),
        }
    }

    /// Where object `name` is stored.
    fn key(&self, name: &str) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_string(),
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// Whether `object` is in the namespace the path names, if any.
    fn holds(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
    }

    /// Whether `object` is one a list or watch of this path with
    /// `selector` reports.
    fn selects(&self, selector: &Selector, object: &Value) -> bool {
        self.holds(object) && selector.matches(&object["metadata"]["labels"])
    }

    /// The stored objects a list of this path with `selector` returns, in
    /// key order.
    fn selected<'a>(
        &'a self,
        store: &'a Store,
        selector: &'a Selector,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        store
            .objects
            .get(&self.id)
            .into_iter()
            .flat_map(|objects| objects.values())
            .filter(move |object| self.selects(selector, object))
    }
}

async fn list_objects(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let target = Target::of(path);
    refuse_unsupported(&params, &["fieldSelector", "dryRun"])?;
    let selector = match params.get("labelSelector") {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(shared, target, selector, &params);
    }
    if params
        .get("resourceVersionMatch")
        .is_some_and(|m| m == "Exact")
    {
        // Only the current state is kept, not the snapshots of the past.
        return Err(ApiError::bad_request(
            "resourceVersionMatch=Exact is not supported by this test server".to_string(),
        ));
    }
    let store = shared.store();
    let resource = target.resource(&store)?;
    let id = &target.id;
    let items: Vec<Value> = target.selected(&store, &selector).cloned().collect();
    Ok(Json(json!({
        "apiVersion": id.api_version(),
        "kind": resource.list_kind,
        "metadata": {"resourceVersion": store.last_revision.to_string()},
        "items": items,
    }))
    .into_response())
}

/// How long a watch stays open when the client does not say.
const DEFAULT_WATCH_SECONDS: u64 = 60;

// A watch: every change of the resource after `resourceVersion` (with "0"
// or none, the objects there are now, as ADDED, then every change), as
// newline-delimited WatchEvents, until `timeoutSeconds`. No periodic
// bookmarks (`allowWatchBookmarks` asks for them, but the API allows a
// server to send none); with `sendInitialEvents=true` (a streaming list)
// the objects there are now come first whatever the version, and then the
// one bookmark that marks their end (`k8s.io/initial-events-end`), as the
// API sends them.
fn watch(
    shared: Arc<Shared>,
    target: Target,
    selector: Selector,
    params: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let seconds = match params.get("timeoutSeconds") {
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds {text:?} is not a number"))
        })?,
        None => DEFAULT_WATCH_SECONDS,
    };
    let from = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion {text:?} is not one of this server's"
            ))
        })?),
    };
    let streaming_list = params.get("sendInitialEvents").is_some_and(|s| s == "true");
    let (initial, after, changes) = {
        let store = shared.store();
        let resource = target.resource(&store)?;
        let mut initial: Vec<Value> = match (from, streaming_list) {
            (Some(_), false) => Vec::new(),
            _ => target
                .selected(&store, &selector)
                .map(|object| json!({"type": "ADDED", "object": object}))
                .collect(),
        };
        let after = if streaming_list {
            store.last_revision
        } else {
            from.unwrap_or(store.last_revision)
        };
        if streaming_list {
            initial.push(json!({"type": "BOOKMARK", "object": {
                "apiVersion": target.id.api_version(),
                "kind": resource.kind,
                "metadata": {
                    "resourceVersion": after.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            }}));
        }
        (initial, after, store.changed.subscribe())
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let state = (shared, target, selector, after, changes, Some(initial));
    let stream = futures_util::stream::unfold(state, move |mut state| async move {
        let (shared, target, selector, after, changes, initial) = &mut state;
        if let Some(initial) = initial.take() {
            if !initial.is_empty() {
                return Some((Ok::<_, std::io::Error>(lines(&initial)), state));
            }
        }
        loop {
            let batch: Vec<Value> = {
                let store = shared.store();
                let news: Vec<&Event> = store
                    .events
                    .iter()
                    .filter(|e| e.revision > *after)
                    .collect();
                if let Some(last) = news.last() {
                    *after = last.revision;
                }
                news.into_iter()
                    .filter(|e| e.id == target.id && target.selects(selector, &e.object))
                    .map(|e| json!({"type": e.kind, "object": e.object}))
                    .collect()
            };
            if !batch.is_empty() {
                return Some((Ok(lines(&batch)), state));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

// WatchEvents, one JSON object per line.
fn lines(events: &[Value]) -> Bytes {
    let mut text = String::new();
    for event in events {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    Bytes::from(text)
}

async fn get_object(State(shared): AppState, path: TargetPath) -> Result<Response, ApiError> {
    let target = Target::of(path);
    let store = shared.store();
    target.resource(&store)?;
    store
        .objects
        .get(&target.id)
        .and_then(|objects| objects.get(&target.key(target.name())))
        .map(|object| Json(object.clone()).into_response())
        .ok_or_else(|| ApiError::not_found(&target.id, target.name()))
}

async fn create_object(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_unsupported(&params, &["dryRun"])?;
    let target = Target::of(path);
    let id = target.id.clone();
    let mut store = shared.store();
    let resource = target.resource(&store)?;
    let (mut object, mut meta) = decode(&id, resource, &body)?;
    if let Some(namespace) = &target.namespace {
        if meta.namespace.as_ref().is_some_and(|n| n != namespace) {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .to_string(),
            ));
        }
        meta.namespace = Some(namespace.clone());
    }
    let name = meta.name.clone().unwrap_or_default();
    if meta
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut errors = name_errors(meta.name.as_deref());
    errors.extend(shape(&resource.schema, &mut object));
    if !errors.is_empty() {
        return Err(ApiError::invalid(&id, &resource.kind, &name, errors));
    }
    let key = target.key(&name);
    if store
        .objects
        .get(&id)
        .is_some_and(|objects| objects.contains_key(&key))
    {
        return Err(ApiError::already_exists(&id, &name));
    }
    let revision = store.next_revision();
    let meta = ObjectMeta {
        uid: Some(store.new_uid()),
        resource_version: Some(revision),
        generation: Some(1),
        creation_timestamp: Some(now()),
        deletion_timestamp: None,
        deletion_grace_period_seconds: None,
        managed_fields: None,
        ..meta
    };
    object["metadata"] = to_json(&meta);
    store
        .objects
        .entry(id.clone())
        .or_default()
        .insert(key, object.clone());
    store.record(&id, "ADDED", &object);
    Ok((StatusCode::CREATED, Json(object)).into_response())
}

async fn replace_object(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_unsupported(&params, &["dryRun"])?;
    let target = Target::of(path);
    let id = target.id.clone();
    let name = target.name().to_string();
    let key = target.key(&name);
    let mut store = shared.store();
    let resource = target.resource(&store)?;
    let (mut object, meta) = decode(&id, resource, &body)?;
    if let Some(body_name) = meta.name.as_deref().filter(|n| *n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let errors = shape(&resource.schema, &mut object);
    if !errors.is_empty() {
        return Err(ApiError::invalid(&id, &resource.kind, &name, errors));
    }
    let stored = store
        .objects
        .get(&id)
        .and_then(|objects| objects.get(&key))
        .ok_or_else(|| ApiError::not_found(&id, &name))?;
    let old: ObjectMeta = from_json(&stored["metadata"]);
    if let Some(uid) = meta.uid.as_deref().filter(|u| !u.is_empty()) {
        if Some(uid) != old.uid.as_deref() {
            return Err(ApiError::conflict(
                &id,
                &name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.uid.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    // No resourceVersion means an unconditional update, which custom
    // resources allow.
    if let Some(rv) = meta.resource_version.as_deref().filter(|rv| !rv.is_empty()) {
        if Some(rv) != old.resource_version.as_deref() {
            return Err(ApiError::modified(&id, &name));
        }
    }
    let content_changed = without_metadata(&object) != without_metadata(stored);
    let generation = old.generation.unwrap_or(1) + i64::from(content_changed);
    let mut meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: old.namespace.clone(),
        uid: old.uid.clone(),
        resource_version: old.resource_version.clone(),
        generation: Some(generation),
        creation_timestamp: old.creation_timestamp.clone(),
        deletion_timestamp: old.deletion_timestamp.clone(),
        deletion_grace_period_seconds: old.deletion_grace_period_seconds,
        managed_fields: old.managed_fields.clone(),
        ..meta
    };
    object["metadata"] = to_json(&meta);
    if object == *stored {
        // The API server writes nothing when nothing changed, so the
        // resourceVersion stays.
        return Ok(Json(object).into_response());
    }
    meta.resource_version = Some(store.next_revision());
    object["metadata"] = to_json(&meta);
    let objects = store.objects.entry(id.clone()).or_default();
    if meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty) {
        // The last finalizer is gone: the pending delete completes.
        objects.remove(&key);
        store.record(&id, "DELETED", &object);
    } else {
        objects.insert(key, object.clone());
        store.record(&id, "MODIFIED", &object);
    }
    Ok(Json(object).into_response())
}

async fn delete_object(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_unsupported(&params, &["dryRun"])?;
    let target = Target::of(path);
    let id = target.id.clone();
    let name = target.name().to_string();
    let key = target.key(&name);
    let options: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if options.get("dryRun").is_some_and(|d| d != &json!([])) {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this test server".to_string(),
        ));
    }
    let mut store = shared.store();
    target.resource(&store)?;
    let stored = store
        .objects
        .get(&id)
        .and_then(|objects| objects.get(&key))
        .ok_or_else(|| ApiError::not_found(&id, &name))?;
    let meta: ObjectMeta = from_json(&stored["metadata"]);
    let preconditions = &options["preconditions"];
    for (field, label, actual) in [
        ("uid", "UID", meta.uid.as_deref()),
        (
            "resourceVersion",
            "ResourceVersion",
            meta.resource_version.as_deref(),
        ),
    ] {
        if let Some(wanted) = preconditions[field].as_str() {
            if Some(wanted) != actual {
                return Err(ApiError::conflict(
                    &id,
                    &name,
                    format!(
                        "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {}",
                        actual.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    if meta.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
        // Finalizers hold the object: mark it and let their owners finish.
        let mut object = stored.clone();
        if meta.deletion_timestamp.is_none() {
            object["metadata"]["deletionTimestamp"] =
                serde_json::to_value(now()).unwrap_or_default();
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            object["metadata"]["resourceVersion"] = json!(store.next_revision());
            store
                .objects
                .entry(id.clone())
                .or_default()
                .insert(key, object.clone());
            store.record(&id, "MODIFIED", &object);
        }
        return Ok(Json(object).into_response());
    }
    let object = store
        .objects
        .get_mut(&id)
        .and_then(|objects| objects.remove(&key))
        .ok_or_else(|| ApiError::not_found(&id, &name))?;
    store.record(&id, "DELETED", &object);
    Ok(Json(object).into_response())
}

fn refuse_unsupported(params: &BTreeMap<String, String>, names: &[&str]) -> Result<(), ApiError> {
    match names.iter().find(|name| params.contains_key(**name)) {
        Some(name) => Err(ApiError::bad_request(format!(
            "{name} is not supported by this test server"
        ))),
        None => Ok(()),
    }
}

/// Parses a request body into the object (metadata normalised through
/// ObjectMeta, which drops what ObjectMeta does not know) and its metadata.
fn decode(
    id: &ResourceId,
    resource: &ResourceType,
    body: &[u8],
) -> Result<(Value, ObjectMeta), ApiError> {
    let mut object: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))?;
    let Some(fields) = object.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body is not a JSON object".to_string(),
        ));
    };
    let api_version = fields.get("apiVersion").and_then(Value::as_str);
    if api_version != Some(id.api_version().as_str()) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            api_version.unwrap_or_default(),
            id.api_version()
        )));
    }
    let kind = fields.get("kind").and_then(Value::as_str);
    if kind != Some(resource.kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match the expected kind ({})",
            kind.unwrap_or_default(),
            resource.kind
        )));
    }
    let meta: ObjectMeta = match fields.get("metadata") {
        Some(meta) => serde_json::from_value(meta.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid metadata: {e}")))?,
        None => ObjectMeta::default(),
    };
    fields.insert("metadata".to_string(), to_json(&meta));
    Ok((object, meta))
}

fn without_metadata(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("metadata");
    }
    rest
}

fn to_json(meta: &ObjectMeta) -> Value {
    // ObjectMeta is plain data; serialising it cannot fail.
    serde_json::to_value(meta).unwrap_or_default()
}

fn from_json(meta: &Value) -> ObjectMeta {
    // Stored metadata was produced by `to_json`, so it always parses.
    serde_json::from_value(meta.clone()).unwrap_or_default()
}

/// The current time to the second, as the API stamps metadata.
fn now() -> Time {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Time(Timestamp::from_second(secs as i64).unwrap_or(Timestamp::UNIX_EPOCH))
}

// ---------------------------------------------------------------------------
// Names

const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Custom resource names must be DNS subdomains.
fn name_errors(name: Option<&str>) -> Vec<FieldError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return vec![FieldError::required_because(
            "metadata.name",
            "name or generateName is required",
        )];
    };
    let mut errors = Vec::new();
    if name.len() > 253 {
        errors.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be no more than 253 characters".to_string(),
        ));
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    };
    if !name.split('.').all(label_ok) {
        errors.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            DNS1123_SUBDOMAIN_MESSAGE.to_string(),
        ));
    }
    errors
}

// ---------------------------------------------------------------------------
// Schema: pruning, defaulting, validation

/// One field error, printed as the API prints it
/// (`spec.cidr: Required value`).
#[derive(Debug, Clone)]
struct FieldError {
    field: String,
    reason: &'static str,
    text: String,
}

impl FieldError {
    fn required(field: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueRequired",
            text: format!("{field}: Required value"),
        }
    }

    fn required_because(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueRequired",
            text: format!("{field}: Required value: {detail}"),
        }
    }

    fn invalid(field: &str, value: Value, detail: String) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            text: format!("{field}: Invalid value: {value}: {detail}"),
        }
    }

    fn unsupported(field: &str, value: &Value, supported: &[Value]) -> FieldError {
        let list: Vec<String> = supported.iter().map(Value::to_string).collect();
        FieldError {
            field: field.to_string(),
            reason: "FieldValueNotSupported",
            text: format!(
                "{field}: Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    fn too_long(field: &str, max: i64) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueTooLong",
            text: format!("{field}: Too long: may not be more than {max} bytes"),
        }
    }

    fn too_many(field: &str, got: usize, max: i64) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueTooMany",
            text: format!("{field}: Too many: {got}: must have at most {max} items"),
        }
    }
}

/// Prunes, defaults and validates everything but `metadata` (which
/// `decode` has normalised), in the API server's order.
fn shape(schema: &JSONSchemaProps, object: &mut Value) -> Vec<FieldError> {
    let Some(fields) = object.as_object_mut() else {
        return Vec::new();
    };
    let metadata = fields.remove("metadata");
    let mut rest = Value::Object(std::mem::take(fields));
    prune(schema, &mut rest);
    apply_defaults(schema, &mut rest);
    let mut errors = Vec::new();
    validate(schema, &rest, "", &mut errors);
    let Value::Object(mut rest) = rest else {
        unreachable!("pruning keeps an object an object")
    };
    if let Some(metadata) = metadata {
        rest.insert("metadata".to_string(), metadata);
    }
    *object = Value::Object(rest);
    errors
}

fn items_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => Some(items),
        _ => None,
    }
}

fn additional_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(values)) => Some(values),
        _ => None,
    }
}

/// Drops every field the schema does not declare, at every depth.
fn prune(schema: &JSONSchemaProps, value: &mut Value) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            if let Some(values) = additional_schema(schema) {
                fields.values_mut().for_each(|v| prune(values, v));
            } else if matches!(
                schema.additional_properties,
                Some(JSONSchemaPropsOrBool::Bool(true))
            ) {
                // Any field is declared, and nothing below is typed.
            } else {
                let properties = schema.properties.as_ref();
                fields.retain(|name, _| properties.is_some_and(|p| p.contains_key(name)));
                for (name, field) in fields.iter_mut() {
                    if let Some(child) = properties.and_then(|p| p.get(name)) {
                        prune(child, field);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = items_schema(schema) {
                items.iter_mut().for_each(|v| prune(item_schema, v));
            }
        }
        _ => {}
    }
}

/// Fills absent fields that declare a default; a null in a field that is
/// not nullable counts as absent, as the API server treats it.
fn apply_defaults(schema: &JSONSchemaProps, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if let Some(properties) = &schema.properties {
                for (name, child) in properties {
                    if fields.get(name).is_some_and(Value::is_null) && child.nullable != Some(true)
                    {
                        fields.remove(name);
                    }
                    if let (None, Some(default)) = (fields.get(name), &child.default) {
                        fields.insert(name.clone(), default.0.clone());
                    }
                    if let Some(field) = fields.get_mut(name) {
                        apply_defaults(child, field);
                    }
                }
            }
            if let Some(values) = additional_schema(schema) {
                fields.values_mut().for_each(|v| apply_defaults(values, v));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = items_schema(schema) {
                items
                    .iter_mut()
                    .for_each(|v| apply_defaults(item_schema, v));
            }
        }
        _ => {}
    }
}

fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn validate(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if schema.type_.is_some() && !crds::structural::matches_type(schema, value) {
        let expected = schema.type_.as_deref().unwrap_or_default();
        let got = type_name(value);
        errors.push(FieldError::invalid(
            path,
            json!(got),
            format!("{path} in body must be of type {expected}: {got:?}"),
        ));
        return;
    }
    if value.is_null() {
        return;
    }
    if let Some(allowed) = &schema.enum_ {
        let allowed: Vec<Value> = allowed.iter().map(|v| v.0.clone()).collect();
        if !allowed.contains(value) {
            errors.push(FieldError::unsupported(path, value, &allowed));
        }
    }
    check_format(schema, value, path, errors);
    check_bounds(schema, value, path, errors);
    match value {
        Value::Object(fields) => {
            for required in schema.required.iter().flatten() {
                if !fields.contains_key(required) {
                    errors.push(FieldError::required(&child_path(path, required)));
                }
            }
            for (name, field) in fields {
                let child = schema
                    .properties
                    .as_ref()
                    .and_then(|p| p.get(name))
                    .or_else(|| additional_schema(schema));
                if let Some(child) = child {
                    validate(child, field, &child_path(path, name), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = items_schema(schema) {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn check_format(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(format) = schema.format.as_deref() else {
        return;
    };
    let fits = match (format, value) {
        ("date-time", Value::String(text)) => is_rfc3339(text),
        ("cidr", Value::String(text)) => text.parse::<ipnet::IpNet>().is_ok(),
        ("int64", Value::Number(n)) => n.as_i64().is_some() || n.is_f64(),
        ("int32", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        _ => true,
    };
    if !fits {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            format!("{path} in body must be of type {format}: {value}"),
        ));
    }
}

fn check_bounds(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::Number(n) => {
            let Some(x) = n.as_f64() else { return };
            if let Some(max) = schema.maximum.filter(|max| x > *max) {
                errors.push(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should be less than or equal to {max}"),
                ));
            }
            if let Some(min) = schema.minimum.filter(|min| x < *min) {
                errors.push(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should be greater than or equal to {min}"),
                ));
            }
        }
        Value::String(text) => {
            if let Some(max) = schema
                .max_length
                .filter(|max| text.chars().count() as i64 > *max)
            {
                errors.push(FieldError::too_long(path, max));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.max_items.filter(|max| items.len() as i64 > *max) {
                errors.push(FieldError::too_many(path, items.len(), max));
            }
        }
        _ => {}
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, the shape the API's date-time
/// format accepts.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.len() == range.len() && s.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't'))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3)
                && b.get(i + 3) == Some(&b':')
                && digits(i + 4..i + 6)
                && i + 6 == b.len()
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Label selectors

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Default)]
struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, ApiError> {
        let bad = |detail: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {detail} in label selector {text:?}"
            ))
        };
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotIn(key.trim().to_string(), vec![value.trim().to_string()])
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                Requirement::In(key.trim().to_string(), vec![value.trim().to_string()])
            } else if let Some((key, set)) = split_set(term, " notin ") {
                Requirement::NotIn(key, set.ok_or_else(|| bad(term))?)
            } else if let Some((key, set)) = split_set(term, " in ") {
                Requirement::In(key, set.ok_or_else(|| bad(term))?)
            } else if term.contains(char::is_whitespace) {
                return Err(bad(term));
            } else {
                Requirement::Exists(term.to_string())
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    fn matches(&self, labels: &Value) -> bool {
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|v| !values.iter().any(|x| x == v))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        })
    }
}

/// Splits a selector at the commas that are not inside `( )`.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

/// `key <op> (a, b)`: the key and the values, or `Some((key, None))` when
/// the operator is there but the set is malformed.
fn split_set(term: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (key, rest) = term.split_once(op)?;
    let set = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_string()).collect());
    Some((key.trim().to_string(), set))
}

// ---------------------------------------------------------------------------
// Status responses

/// A failed request, answered with a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn not_found(id: &ResourceId, name: &str) -> ApiError {
        ApiError {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: format!("{} {name:?} not found", id.qualified()),
            details: json!({"name": name, "group": id.group, "kind": id.plural}),
        }
    }

    fn unknown_resource() -> ApiError {
        ApiError {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: "the server could not find the requested resource".to_string(),
            details: json!({}),
        }
    }

    fn already_exists(id: &ResourceId, name: &str) -> ApiError {
        ApiError {
            code: StatusCode::CONFLICT,
            reason: "AlreadyExists",
            message: format!("{} {name:?} already exists", id.qualified()),
            details: json!({"name": name, "group": id.group, "kind": id.plural}),
        }
    }

    fn conflict(id: &ResourceId, name: &str, detail: String) -> ApiError {
        ApiError {
            code: StatusCode::CONFLICT,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: {detail}",
                id.qualified()
            ),
            details: json!({"name": name, "group": id.group, "kind": id.plural}),
        }
    }

    fn modified(id: &ResourceId, name: &str) -> ApiError {
        ApiError::conflict(
            id,
            name,
            "the object has been modified; please apply your changes to the latest version and try again"
                .to_string(),
        )
    }

    fn invalid(id: &ResourceId, kind: &str, name: &str, errors: Vec<FieldError>) -> ApiError {
        let summary = match errors.as_slice() {
            [one] => one.text.clone(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|e| e.text.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let message = e
                    .text
                    .strip_prefix(&format!("{}: ", e.field))
                    .unwrap_or(&e.text);
                json!({"reason": e.reason, "message": message, "field": e.field})
            })
            .collect();
        ApiError {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            reason: "Invalid",
            message: format!("{kind}.{} {name:?} is invalid: {summary}", id.group),
            details: json!({"name": name, "group": id.group, "kind": kind, "causes": causes}),
        }
    }

    fn bad_request(message: String) -> ApiError {
        ApiError {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message,
            details: Value::Null,
        }
    }

    fn internal(message: &str) -> ApiError {
        ApiError {
            code: StatusCode::INTERNAL_SERVER_ERROR,
            reason: "InternalError",
            message: message.to_string(),
            details: Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        status.insert("reason".into(), json!(self.reason));
        if !self.details.is_null() {
            status.insert("details".into(), self.details);
        }
        status.insert("code".into(), json!(self.code.as_u16()));
        (self.code, Json(Value::Object(status))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_is_named_in_rbacs_terms() {
        use axum::http::Method;
        let of = |method: Method, path: &str, query: Option<&str>| {
            let a = Access::of(&method, path, query).unwrap();
            (a.verb, a.group, a.resource, a.name)
        };
        let calico = "/apis/crd.projectcalico.org/v1";
        assert_eq!(
            of(Method::GET, &format!("{calico}/ipamblocks"), None),
            (
                "list".into(),
                "crd.projectcalico.org".into(),
                "ipamblocks".into(),
                None
            )
        );
        assert_eq!(
            of(Method::GET, &format!("{calico}/ipamconfigs/default"), None).0,
            "get"
        );
        assert_eq!(
            of(Method::PUT, &format!("{calico}/ipamhandles/h"), None).0,
            "update"
        );
        assert_eq!(
            of(Method::POST, &format!("{calico}/ippools"), None).0,
            "create"
        );
        assert_eq!(
            of(Method::DELETE, &format!("{calico}/ipamblocks/b"), None).0,
            "delete"
        );
        assert_eq!(
            of(Method::GET, "/api/v1/pods", Some("watch=true")).0,
            "watch"
        );
        assert_eq!(
            of(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
                None
            ),
            (
                "get".into(),
                "coordination.k8s.io".into(),
                "leases".into(),
                Some("l".into())
            )
        );
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/kube-system", None),
            (
                "get".into(),
                String::new(),
                "namespaces".into(),
                Some("kube-system".into())
            )
        );
        assert!(Access::of(&Method::GET, "/healthz", None).is_none());
    }

    #[test]
    fn selectors_parse_every_operator_kube_sends() {
        let labels = json!({"a": "1", "b": "2"});
        for (text, expected) in [
            ("a=1", true),
            ("a==1", true),
            ("a!=1", false),
            ("c!=1", true),
            ("a in (1, 3)", true),
            ("a notin (1,3)", false),
            ("a,b=2", true),
            ("!a", false),
            ("!c", true),
            ("a=1,b in (3)", false),
            ("", true),
        ] {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(selector.matches(&labels), expected, "{text}");
        }
        assert!(!Selector::parse("a=1").unwrap().matches(&Value::Null));
        assert!(Selector::parse("a in 1").is_err());
        assert!(Selector::parse("a b").is_err());
    }

    #[test]
    fn rfc3339_times_are_recognised() {
        for good in [
            "2026-11-23T00:00:00Z",
            "2026-11-23T00:00:00.123Z",
            "2026-11-23T00:00:00+01:00",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "yesterday",
            "2026-11-23",
            "2026-11-23T00:00:00",
            "2026-11-23T00:00:00.Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert!(name_errors(Some("k8s-pod-network.abc")).is_empty());
        assert_eq!(
            name_errors(None)[0].text,
            "metadata.name: Required value: name or generateName is required"
        );
        assert!(name_errors(Some("Node-1"))[0]
            .text
            .starts_with("metadata.name: Invalid value: \"Node-1\": a lowercase RFC 1123"));
        assert!(!name_errors(Some("a..b")).is_empty());
        assert!(!name_errors(Some(&"a".repeat(254))).is_empty());
    }
}
