//! The Kubernetes datastore: Calico's `crd.projectcalico.org/v1` custom
//! resources through the API server, as Calico's own Kubernetes backend
//! keeps them, so that a cluster running Calico can switch to us and back.
//!
//! Objects are written exactly as the `crds` crate shapes them: IPPool
//! named by the pool, IPAMBlock by the CIDR (`10-0-0-64-26`), IPAMHandle by
//! the lower-cased handle id, BlockAffinity by `<node>-<block>` with
//! Calico's three labels, IPAMConfig `default`, IPReservation by name. The
//! revision is `metadata.resourceVersion`; an update is a PUT that names
//! it, and the API server refuses a stale one with 409 Conflict.
//!
//! Metadata the server or other clients own (uid, labels, annotations,
//! finalizers, owner references) must survive our writes, since a PUT
//! replaces all of it. The store therefore remembers the last object it saw
//! of every name and builds each replacement on that object's metadata; when
//! it has not seen the revision it is asked to write over, it reads the
//! object first.
//!
//! Deletes of blocks, affinities and handles are Calico's two steps
//! (libcalico-go k8s resources, `DeleteKVP`): set `deleted` with a PUT at
//! the caller's revision, so that a racing writer conflicts, then DELETE
//! with the uid and the new resourceVersion as preconditions. Pools, the
//! config and reservations are deleted in one DELETE with a
//! resourceVersion precondition. Every HTTP call counts as a round trip, so
//! a two-step delete costs two writes.
//!
//! Every call is bounded by [`CALL_TIMEOUT`]; a call that times out or
//! cannot reach the server is [`StoreError::Unavailable`].

use std::collections::HashMap;
use std::fmt::{self, Debug, Display};
use std::future::Future;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use crds::affinity::{affinity_object_name, hostname_hash, HOSTNAME_HASH_LABEL};
use crds::config::IPAM_CONFIG_NAME;
use crds::handle::handle_object_name;
use crds::{BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle, IPPool, IPReservation};
use ipam_core::{Affinity, Block, Handle, IpamConfig, Pool, ReservationSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ClusterResourceScope;
use kube::{Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::datastore::{Datastore, RoundTripCounter, RoundTrips};
use crate::error::StoreError;
use crate::model::{Key, Kind, ListQuery, Reservation, Revision, Value, Versioned};

/// The longest any one call to the API server may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const BACKEND: &str = "kubernetes";

/// A datastore on the Kubernetes API server.
pub struct KubernetesStore {
    client: Client,
    /// The last object seen of each (kind, object name), as the server sent
    /// it: the metadata a replacement carries over.
    seen: Mutex<HashMap<(Kind, String), serde_json::Value>>,
    trips: RoundTripCounter,
}

impl Debug for KubernetesStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesStore")
            .field("trips", &self.trips)
            .finish_non_exhaustive()
    }
}

impl KubernetesStore {
    /// A store that talks through `client`.
    pub fn new(client: Client) -> KubernetesStore {
        KubernetesStore {
            client,
            seen: Mutex::new(HashMap::new()),
            trips: RoundTripCounter::default(),
        }
    }

    /// Connects as kubectl would: with the kubeconfig at `kubeconfig` (its
    /// current context) when given, else `KUBECONFIG` or `~/.kube/config`,
    /// else the pod's service account.
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<KubernetesStore, StoreError> {
        let config = match kubeconfig {
            Some(path) => {
                let what = || format!("kubeconfig {}", path.display());
                let file = Kubeconfig::read_from(path).map_err(|e| StoreError::Invalid {
                    what: what(),
                    message: e.to_string(),
                })?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| StoreError::Invalid {
                        what: what(),
                        message: e.to_string(),
                    })?
            }
            None => Config::infer().await.map_err(|e| StoreError::Invalid {
                what: "Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster)"
                    .to_string(),
                message: e.to_string(),
            })?,
        };
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| StoreError::Invalid {
            what: format!("Kubernetes client for {url}"),
            message: e.to_string(),
        })?;
        Ok(KubernetesStore::new(client))
    }

    /// Connects to the API server at `url` with no credentials: Calico's
    /// `k8s_api_root` without a kubeconfig, for a local proxy
    /// (`kubectl proxy`) or a test server.
    pub fn connect_url(url: &str) -> Result<KubernetesStore, StoreError> {
        let invalid = |message: String| StoreError::Invalid {
            what: format!("Kubernetes API root {url:?}"),
            message,
        };
        let config = Config::new(url.parse().map_err(|e| invalid(format!("{e}")))?);
        let client = Client::try_from(config).map_err(|e| invalid(e.to_string()))?;
        Ok(KubernetesStore::new(client))
    }

    /// The client it talks through, for callers that read other kinds
    /// (the garbage collector's pods and nodes).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<(Kind, String), serde_json::Value>> {
        // Every change is one insert or remove, so a panic while holding the
        // lock leaves the cache consistent.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn api<K: Wire>(&self) -> Api<K> {
        Api::all(self.client.clone())
    }

    fn remember<K: Wire>(&self, object: &K) {
        // Serialising a wire object cannot fail; if it somehow did, the
        // next write would read the object first instead.
        if let Ok(json) = serde_json::to_value(object) {
            self.seen().insert((K::KIND, object.name_any()), json);
        }
    }

    fn forget(&self, kind: Kind, name: &str) {
        self.seen().remove(&(kind, name.to_string()));
    }

    /// The last object seen under `name`, if it was at `revision`.
    fn seen_at<K: Wire>(&self, name: &str, revision: &Revision) -> Option<K> {
        let seen = self.seen();
        let json = seen.get(&(K::KIND, name.to_string()))?;
        let object: K = serde_json::from_value(json.clone()).ok()?;
        (object.resource_version().as_deref() == Some(revision.0.as_str())).then_some(object)
    }

    /// The object under `name` at `revision`: remembered, or read (one
    /// round trip). Conflict when it has moved on.
    async fn current_at<K: Wire>(
        &self,
        key: &Key,
        name: &str,
        revision: &Revision,
    ) -> Result<K, StoreError> {
        if let Some(object) = self.seen_at::<K>(name, revision) {
            return Ok(object);
        }
        self.trips.read();
        let object = call(Target::Object(key), self.api::<K>().get(name)).await?;
        self.remember(&object);
        if object.resource_version().as_deref() == Some(revision.0.as_str()) {
            Ok(object)
        } else {
            Err(StoreError::Conflict { key: key.clone() })
        }
    }

    async fn get_as<K: Wire>(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        let name = object_name(key);
        self.trips.read();
        let object = match call(Target::Object(key), self.api::<K>().get(&name)).await {
            Err(err @ StoreError::NotFound { .. }) => {
                self.forget(K::KIND, &name);
                return Err(err);
            }
            other => other?,
        };
        self.remember(&object);
        versioned(&object)
    }

    async fn list_as<K: Wire>(
        &self,
        query: &ListQuery,
        params: ListParams,
    ) -> Result<Vec<Versioned<Value>>, StoreError> {
        self.trips.read();
        let list = call(Target::List(K::KIND), self.api::<K>().list(&params)).await?;
        let mut found = Vec::with_capacity(list.items.len());
        for object in &list.items {
            self.remember(object);
            let item = versioned(object)?;
            // A label selector only narrows by hash: check the key itself.
            if query.matches(&item.value.key()) {
                found.push(item);
            }
        }
        Ok(found)
    }

    async fn create_as<K: Wire>(&self, key: &Key, object: K) -> Result<Revision, StoreError> {
        self.trips.write();
        let created = call(
            Target::Object(key),
            self.api::<K>().create(&PostParams::default(), &object),
        )
        .await?;
        self.remember(&created);
        revision_of(key, &created)
    }

    /// Replaces the object with what `build` makes from its current
    /// metadata, provided it is at `revision`.
    async fn replace_as<K: Wire>(
        &self,
        key: &Key,
        revision: &Revision,
        build: impl FnOnce(&K) -> K,
    ) -> Result<Revision, StoreError> {
        let name = object_name(key);
        let previous = self.current_at::<K>(key, &name, revision).await?;
        let mut object = build(&previous);
        object.meta_mut().resource_version = Some(revision.0.clone());
        self.put(key, &name, &object).await
    }

    async fn put<K: Wire>(
        &self,
        key: &Key,
        name: &str,
        object: &K,
    ) -> Result<Revision, StoreError> {
        self.trips.write();
        let replaced = call(
            Target::Object(key),
            self.api::<K>()
                .replace(name, &PostParams::default(), object),
        )
        .await?;
        self.remember(&replaced);
        revision_of(key, &replaced)
    }

    async fn delete_as<K: Wire>(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        let name = object_name(key);
        let preconditions = if K::two_step() {
            // Step one: the mark, conflict-checked at the caller's revision.
            // If step two then fails, the object stays marked, as Calico
            // leaves it, and readers see `deleted`.
            let mut marked = self.current_at::<K>(key, &name, revision).await?;
            marked.mark_deleted();
            let marked_at = self.put(key, &name, &marked).await?;
            Preconditions {
                uid: marked.uid(),
                resource_version: Some(marked_at.0),
            }
        } else {
            Preconditions {
                uid: None,
                resource_version: Some(revision.0.clone()),
            }
        };
        self.trips.write();
        let params = DeleteParams {
            preconditions: Some(preconditions),
            ..DeleteParams::default()
        };
        let result = call(Target::Object(key), self.api::<K>().delete(&name, &params)).await;
        if matches!(result, Ok(_) | Err(StoreError::NotFound { .. })) {
            self.forget(K::KIND, &name);
        }
        result.map(|_| ())
    }
}

/// What a call was about, to name in its error.
#[derive(Clone, Copy)]
enum Target<'a> {
    Object(&'a Key),
    List(Kind),
}

impl Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Object(key) => write!(f, "{key}"),
            Target::List(kind) => write!(f, "list of {kind}"),
        }
    }
}

/// Runs one API call within [`CALL_TIMEOUT`], in the store's error terms.
async fn call<T>(
    target: Target<'_>,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| store_error(target, e)),
        Err(_) => Err(StoreError::Unavailable {
            backend: BACKEND,
            message: format!("no answer for {target} within {CALL_TIMEOUT:?}"),
        }),
    }
}

fn store_error(target: Target<'_>, err: kube::Error) -> StoreError {
    match (err, target) {
        (kube::Error::Api(status), Target::Object(key)) if status.code == 404 => {
            StoreError::NotFound { key: key.clone() }
        }
        (kube::Error::Api(status), Target::Object(key)) if status.code == 409 => {
            if status.reason == "AlreadyExists" {
                StoreError::AlreadyExists { key: key.clone() }
            } else {
                StoreError::Conflict { key: key.clone() }
            }
        }
        (kube::Error::Api(status), _) if status.code == 429 || status.code >= 500 => {
            StoreError::Unavailable {
                backend: BACKEND,
                message: format!("{target}: {} ({})", status.message, status.code),
            }
        }
        // 422 Invalid, 400, 401, 403, or a list of a resource the server
        // does not serve: the server refused the request, and sending it
        // again will not change that.
        (kube::Error::Api(status), _) => StoreError::Invalid {
            what: target.to_string(),
            message: status.message,
        },
        (kube::Error::SerdeError(e), _) => StoreError::Invalid {
            what: target.to_string(),
            message: format!("the API server's answer does not parse: {e}"),
        },
        (other, _) => StoreError::Unavailable {
            backend: BACKEND,
            message: format!("{target}: {other}"),
        },
    }
}

/// The Kubernetes object name for a key.
fn object_name(key: &Key) -> String {
    match key {
        Key::Pool(name) | Key::Reservation(name) => name.clone(),
        Key::Block(cidr) => cidr.object_name(),
        Key::Handle(id) => handle_object_name(id),
        Key::Affinity(a) => affinity_object_name(&a.node, &a.cidr),
        Key::Config => IPAM_CONFIG_NAME.to_string(),
    }
}

fn revision_of<K: Wire>(key: &Key, object: &K) -> Result<Revision, StoreError> {
    object
        .resource_version()
        .map(Revision)
        .ok_or_else(|| StoreError::Invalid {
            what: key.to_string(),
            message: "the API server's answer has no metadata.resourceVersion".to_string(),
        })
}

fn versioned<K: Wire>(object: &K) -> Result<Versioned<Value>, StoreError> {
    let value = object.to_core().map_err(|e| StoreError::Invalid {
        what: format!("{} {:?}", K::KIND, object.name_any()),
        message: e.to_string(),
    })?;
    let revision = revision_of(&value.key(), object)?;
    Ok(Versioned { value, revision })
}

/// What the store needs of each wire type beyond kube's traits.
trait Wire:
    Resource<DynamicType = (), Scope = ClusterResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;

    /// The object as ipam-core sees it.
    fn to_core(&self) -> Result<Value, crds::Error>;

    /// Whether Calico marks the object deleted before deleting it.
    fn two_step() -> bool {
        false
    }

    /// Sets the spec's `deleted`; only called when [`Wire::two_step`].
    fn mark_deleted(&mut self) {}
}

impl Wire for IPPool {
    const KIND: Kind = Kind::Pool;

    fn to_core(&self) -> Result<Value, crds::Error> {
        Pool::try_from(self).map(Value::Pool)
    }
}

impl Wire for IPAMBlock {
    const KIND: Kind = Kind::Block;

    fn to_core(&self) -> Result<Value, crds::Error> {
        Block::try_from(self).map(Value::Block)
    }

    fn two_step() -> bool {
        true
    }

    fn mark_deleted(&mut self) {
        self.spec.deleted = true;
    }
}

impl Wire for IPAMHandle {
    const KIND: Kind = Kind::Handle;

    fn to_core(&self) -> Result<Value, crds::Error> {
        Handle::try_from(self).map(Value::Handle)
    }

    fn two_step() -> bool {
        true
    }

    fn mark_deleted(&mut self) {
        self.spec.deleted = true;
    }
}

impl Wire for BlockAffinity {
    const KIND: Kind = Kind::Affinity;

    fn to_core(&self) -> Result<Value, crds::Error> {
        Affinity::try_from(self).map(Value::Affinity)
    }

    fn two_step() -> bool {
        true
    }

    fn mark_deleted(&mut self) {
        // A string in the v1 CRD.
        self.spec.deleted = true.to_string();
    }
}

impl Wire for IPAMConfig {
    const KIND: Kind = Kind::Config;

    fn to_core(&self) -> Result<Value, crds::Error> {
        Ok(Value::Config(IpamConfig::from(self)))
    }
}

impl Wire for IPReservation {
    const KIND: Kind = Kind::Reservation;

    fn to_core(&self) -> Result<Value, crds::Error> {
        Ok(Value::Reservation(Reservation {
            name: self.name_any(),
            spec: ReservationSpec::try_from(self)?,
        }))
    }
}

#[async_trait]
impl Datastore for KubernetesStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        match key.kind() {
            Kind::Pool => self.get_as::<IPPool>(key).await,
            Kind::Block => self.get_as::<IPAMBlock>(key).await,
            Kind::Handle => self.get_as::<IPAMHandle>(key).await,
            Kind::Affinity => self.get_as::<BlockAffinity>(key).await,
            Kind::Config => self.get_as::<IPAMConfig>(key).await,
            Kind::Reservation => self.get_as::<IPReservation>(key).await,
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        let all = ListParams::default();
        match query {
            ListQuery::All(Kind::Pool) => self.list_as::<IPPool>(query, all).await,
            ListQuery::All(Kind::Block) => self.list_as::<IPAMBlock>(query, all).await,
            ListQuery::All(Kind::Handle) => self.list_as::<IPAMHandle>(query, all).await,
            ListQuery::All(Kind::Affinity) => self.list_as::<BlockAffinity>(query, all).await,
            ListQuery::All(Kind::Config) => self.list_as::<IPAMConfig>(query, all).await,
            ListQuery::All(Kind::Reservation) => self.list_as::<IPReservation>(query, all).await,
            // Calico lists a host's affinities by the hash label it sets on
            // every affinity (CalculateBlockAffinityLabelSelector).
            ListQuery::AffinitiesOf(node) => {
                let selector = format!("{HOSTNAME_HASH_LABEL}={}", hostname_hash(node));
                self.list_as::<BlockAffinity>(query, all.labels(&selector))
                    .await
            }
        }
    }

    async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
        let key = value.key();
        match value {
            Value::Pool(pool) => self.create_as(&key, IPPool::from_core(pool, None)).await,
            Value::Block(block) => {
                self.create_as(&key, IPAMBlock::from_core(block, None))
                    .await
            }
            Value::Handle(handle) => {
                self.create_as(&key, IPAMHandle::from_core(handle, None))
                    .await
            }
            Value::Affinity(affinity) => {
                self.create_as(&key, BlockAffinity::from_core(affinity, None))
                    .await
            }
            Value::Config(config) => {
                self.create_as(&key, IPAMConfig::from_core(config, None))
                    .await
            }
            Value::Reservation(r) => {
                self.create_as(&key, IPReservation::from_core(&r.name, &r.spec, None))
                    .await
            }
        }
    }

    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
        let key = value.key();
        match value {
            Value::Pool(pool) => {
                self.replace_as(&key, revision, |p| IPPool::from_core(pool, Some(p)))
                    .await
            }
            Value::Block(block) => {
                self.replace_as(&key, revision, |p| IPAMBlock::from_core(block, Some(p)))
                    .await
            }
            Value::Handle(handle) => {
                self.replace_as(&key, revision, |p| IPAMHandle::from_core(handle, Some(p)))
                    .await
            }
            Value::Affinity(affinity) => {
                self.replace_as(&key, revision, |p| {
                    BlockAffinity::from_core(affinity, Some(p))
                })
                .await
            }
            Value::Config(config) => {
                self.replace_as(&key, revision, |p| IPAMConfig::from_core(config, Some(p)))
                    .await
            }
            Value::Reservation(r) => {
                self.replace_as(&key, revision, |p| {
                    IPReservation::from_core(&r.name, &r.spec, Some(p))
                })
                .await
            }
        }
    }

    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        match key.kind() {
            Kind::Pool => self.delete_as::<IPPool>(key, revision).await,
            Kind::Block => self.delete_as::<IPAMBlock>(key, revision).await,
            Kind::Handle => self.delete_as::<IPAMHandle>(key, revision).await,
            Kind::Affinity => self.delete_as::<BlockAffinity>(key, revision).await,
            Kind::Config => self.delete_as::<IPAMConfig>(key, revision).await,
            Kind::Reservation => self.delete_as::<IPReservation>(key, revision).await,
        }
    }

    fn round_trips(&self) -> RoundTrips {
        self.trips.snapshot()
    }
}
