//! A datastore on etcd v3, in Calico's own key layout and value format, so
//! that a Calico cluster on etcd can switch to this IPAM (and back) without
//! migrating anything.
//!
//! Where each object lives is in `keys`, what its value looks like in
//! `values`; both follow libcalico-go v3.32.1's etcdv3 backend. The
//! compare-and-swap is Calico's too (libcalico-go/lib/backend/etcdv3/
//! etcdv3.go): one transaction per write that compares the key's
//! create revision (create) or mod revision (update, delete), and whose
//! else-branch reads the key so that a failed update or delete tells a
//! conflict from a missing object in the same round trip. A revision is
//! the key's mod revision in decimal, as Calico reports it.
//!
//! Every call is bounded by a timeout; an etcd that cannot be reached, or
//! does not answer in time, is [`StoreError::Unavailable`], and the client
//! reconnects by itself once etcd is back.

mod keys;
mod values;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};

use crate::datastore::{Datastore, RoundTripCounter, RoundTrips};
use crate::error::StoreError;
use crate::model::{Key, ListQuery, Revision, Value, Versioned};
use keys::Range;

const BACKEND: &str = "etcd";

/// Calico's Go client accepts responses up to 2 GiB (clientv3's default
/// MaxCallRecvMsgSize); tonic's default of 4 MiB would fail a list of a
/// few thousand busy blocks.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// How to talk to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The longest any one call (connecting included) may take before it
    /// fails as unavailable.
    pub timeout: Duration,
    /// How often an idle connection is probed, so that a dead etcd is
    /// noticed before the next call waits on it (Calico: 30 s).
    pub keep_alive_interval: Duration,
    /// How long a probe may go unanswered (Calico: 10 s).
    pub keep_alive_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
        }
    }
}

/// The etcd datastore.
pub struct EtcdStore {
    // Owns the connection pool the KV client sends through: dropping it
    // would stop endpoint management under the client.
    client: Client,
    timeout: Duration,
    trips: RoundTripCounter,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("timeout", &self.timeout)
            .field("trips", &self.trips)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://host:2379`).
    /// Connections are made lazily: an unreachable etcd shows as
    /// [`StoreError::Unavailable`] on the first call, not here.
    pub async fn connect(
        endpoints: &[String],
        options: EtcdOptions,
    ) -> Result<EtcdStore, StoreError> {
        let connect_options = ConnectOptions::new()
            .with_timeout(options.timeout)
            .with_connect_timeout(options.timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from its cluster then fails fast ("no
            // leader") instead of holding the request until it times out.
            .with_require_leader(true);
        let what = format!("connecting to {}", endpoints.join(","));
        let client = bounded(
            options.timeout,
            Client::connect(endpoints, Some(connect_options)),
        )
        .await
        .map_err(|e| match e {
            Failure::Etcd(etcd_client::Error::InvalidArgs(message)) => StoreError::Invalid {
                what: format!("etcd endpoints {endpoints:?}"),
                message,
            },
            Failure::Etcd(etcd_client::Error::InvalidUri(err)) => StoreError::Invalid {
                what: format!("etcd endpoints {endpoints:?}"),
                message: err.to_string(),
            },
            other => other.into_store_error(&what),
        })?;
        Ok(EtcdStore {
            client,
            timeout: options.timeout,
            trips: RoundTripCounter::default(),
        })
    }

    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        bounded(self.timeout, call)
            .await
            .map_err(|e| e.into_store_error(what))
    }

    /// One read of one key.
    async fn read(&self, path: &str) -> Result<Option<KeyValue>, StoreError> {
        self.trips.read();
        let mut response = self
            .call(&format!("get {path}"), self.kv().get(path, None))
            .await?;
        Ok(response.take_kvs().into_iter().next())
    }

    /// A transaction that does `then` if the key is at `revision`, and else
    /// counts the key, so that the caller can tell a conflict from a
    /// missing object without another round trip.
    async fn guarded(
        &self,
        key: &Key,
        path: &str,
        revision: &Revision,
        then: TxnOp,
    ) -> Result<TxnResponse, StoreError> {
        let expected = mod_revision(key, revision)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(path, CompareOp::Equal, expected)])
            .and_then([then])
            .or_else([TxnOp::get(path, Some(GetOptions::new().with_count_only()))]);
        self.trips.write();
        let response = self
            .call(&format!("write {path}"), self.kv().txn(txn))
            .await?;
        if response.succeeded() {
            return Ok(response);
        }
        let exists = response.op_responses().iter().any(|op| match op {
            TxnOpResponse::Get(get) => get.count() > 0,
            _ => false,
        });
        Err(if exists {
            StoreError::Conflict { key: key.clone() }
        } else {
            StoreError::NotFound { key: key.clone() }
        })
    }
}

#[async_trait]
impl Datastore for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        let path = keys::path(key)?;
        let kv = self
            .read(&path)
            .await?
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        versioned(&path, key, &kv)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        let kind = query.kind();
        let kvs = match keys::range(query)? {
            Range::Exact(path) => self.read(path).await?.into_iter().collect(),
            Range::Prefix(prefix) => {
                self.trips.read();
                let options = GetOptions::new().with_prefix();
                self.call(
                    &format!("list {prefix}"),
                    self.kv().get(prefix.as_str(), Some(options)),
                )
                .await?
                .take_kvs()
            }
        };
        let mut objects = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let path = String::from_utf8_lossy(kv.key());
            match keys::parse(kind, &path) {
                Some(key) if query.matches(&key) => objects.push(versioned(&path, &key, kv)?),
                _ => tracing::warn!(
                    etcd_key = %path,
                    "skipping a key outside Calico's layout for {kind}"
                ),
            }
        }
        Ok(objects)
    }

    async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
        let key = value.key();
        let path = keys::path(&key)?;
        let bytes = values::encode(&path, value, None)?;
        // create_revision 0: the key does not exist (Calico compares its
        // version with 0, which is the same test).
        let txn = Txn::new()
            .when([Compare::create_revision(path.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(path.as_str(), bytes, None)]);
        self.trips.write();
        let response = self
            .call(&format!("create {path}"), self.kv().txn(txn))
            .await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists { key });
        }
        committed(&path, &response)
    }

    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
        let key = value.key();
        let path = keys::path(&key)?;
        let stored = if values::has_metadata(key.kind()) {
            // Pools and reservations carry v3 metadata that ipam-core does
            // not model; they are written rarely, so reading the stored
            // object to carry it forward costs little. The write below is
            // still guarded by the revision.
            let kv = self
                .read(&path)
                .await?
                .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            if kv.mod_revision() != mod_revision(&key, revision)? {
                return Err(StoreError::Conflict { key });
            }
            Some(kv.value().to_vec())
        } else {
            None
        };
        let bytes = values::encode(&path, value, stored.as_deref())?;
        let response = self
            .guarded(
                &key,
                &path,
                revision,
                TxnOp::put(path.as_str(), bytes, None),
            )
            .await?;
        committed(&path, &response)
    }

    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        let path = keys::path(key)?;
        self.guarded(key, &path, revision, TxnOp::delete(path.as_str(), None))
            .await?;
        Ok(())
    }

    fn round_trips(&self) -> RoundTrips {
        self.trips.snapshot()
    }
}

/// The object in `kv` (stored under `path`, naming `key`) with its revision.
fn versioned(path: &str, key: &Key, kv: &KeyValue) -> Result<Versioned<Value>, StoreError> {
    Ok(Versioned {
        value: values::decode(path, key, kv.value())?,
        revision: Revision(kv.mod_revision().to_string()),
    })
}

/// The revision a successful write gave its key: the transaction's, which
/// becomes the key's mod revision.
fn committed(path: &str, response: &TxnResponse) -> Result<Revision, StoreError> {
    response
        .header()
        .map(|header| Revision(header.revision().to_string()))
        .ok_or_else(|| values::invalid(path, "etcd answered a write without a header".into()))
}

/// A revision this backend handed out: an etcd mod revision in decimal.
fn mod_revision(key: &Key, revision: &Revision) -> Result<i64, StoreError> {
    revision.0.parse().map_err(|_| StoreError::Invalid {
        what: key.to_string(),
        message: format!("revision {revision:?} is not an etcd revision"),
    })
}

/// Why a bounded call failed.
enum Failure {
    TimedOut(Duration),
    Etcd(etcd_client::Error),
}

impl Failure {
    /// Transport trouble, timeouts and etcd saying it cannot serve now are
    /// worth retrying; a request etcd refuses as malformed (too large, say)
    /// is not.
    fn into_store_error(self, what: &str) -> StoreError {
        match self {
            Failure::TimedOut(limit) => StoreError::Unavailable {
                backend: BACKEND,
                message: format!("{what}: no answer within {limit:?}"),
            },
            Failure::Etcd(etcd_client::Error::GRpcStatus(status))
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::OutOfRange
                ) =>
            {
                StoreError::Invalid {
                    what: what.to_string(),
                    message: format!("etcd refused it: {}", status.message()),
                }
            }
            Failure::Etcd(err) => StoreError::Unavailable {
                backend: BACKEND,
                message: format!("{what}: {err}"),
            },
        }
    }
}

/// `call`, failing as timed out after `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(Failure::Etcd),
        Err(_) => Err(Failure::TimedOut(limit)),
    }
}
