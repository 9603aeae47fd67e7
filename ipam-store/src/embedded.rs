//! The embedded datastore: one redb file in a data directory, the default
//! store of ipam-server, which needs no etcd and no Kubernetes API.
//!
//! A write that returns `Ok` has been committed with redb's immediate
//! durability (an fsync), so an address a reply reported survives `kill -9`
//! and power loss. One process at a time may use a data directory: an OS
//! file lock (flock) on `ipam.lock` guards it, and the lock file records
//! the holder's pid so that a refused open can name it. The kernel drops the
//! lock when its holder dies, so a stale lock file never blocks a restart.
//!
//! Layout: one table `objects` maps a key string to `(revision, JSON)`, the
//! JSON being the object's Calico spec form; a table `meta` holds the last
//! revision handed out, a store-wide counter, so that a revision is never
//! reused, even across restarts or after a delete. Keys are
//! `<kind>/<name>`, and an affinity's is `affinity/<node>/<cidr>`, so that
//! the affinities of one node are one range scan.
//!
//! redb is synchronous and a commit waits for the disk, so reads run on
//! tokio's blocking pool, never on a runtime worker, and writes go to one
//! writer thread that commits them in groups: every create, update and
//! delete that arrives while a commit is under way joins the next one, each
//! with its own compare-and-swap check, and all of them are answered only
//! after that commit is on disk. Under load one fsync then serves many
//! writes, which is what makes a durable store fast; alone, a write costs
//! one commit as before.
//!
//! A batch ([`AtomicWrites`]) is one queued unit like a single write: it
//! joins the group, its conditions are all checked before any of its
//! writes is applied, and a refused batch applies nothing and leaves the
//! rest of the group alone. A single write is a unit of one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod node_labels;

use async_trait::async_trait;
use ipam_core::{
    Affinity, Block, BlockSpec, Handle, HandleSpec, IpamConfig, Pool, PoolSpec, ReservationSpec,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::datastore::{
    distinct_keys, AtomicWrites, BatchError, BatchWrite, Datastore, RoundTripCounter, RoundTrips,
};
use crate::error::StoreError;
use crate::model::{Key, Kind, ListQuery, Reservation, Revision, Value, Versioned};

const BACKEND: &str = "embedded";

/// The data file inside the data directory.
pub const DATA_FILE: &str = "ipam.redb";

/// The lock file inside the data directory; it holds the owner's pid.
pub const LOCK_FILE: &str = "ipam.lock";

/// Key string → (revision, the object's JSON).
const OBJECTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("objects");

/// Store-wide counters; only [`LAST_REVISION`] so far.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const LAST_REVISION: &str = "last_revision";

/// Most writes one commit takes: enough to absorb any burst of a busy
/// server, few enough that one transaction stays small.
const MAX_GROUP: usize = 1024;

/// A datastore in one redb file, locked to one process.
pub struct EmbeddedStore {
    // Shared with the blocking tasks that read and with the writer thread:
    // the file closes after the last of them lets go.
    inner: Arc<Inner>,
    trips: RoundTripCounter,
    writes: Option<std::sync::mpsc::Sender<Queued>>,
    writer: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

/// A unit's new revisions (none for a delete), one per write, or which of
/// its writes was refused and why (then nothing of it was written).
type UnitResult = Result<Vec<Option<u64>>, (usize, StoreError)>;

/// One unit waiting for the writer thread: a single write, or a batch
/// applied all or nothing.
struct Queued {
    unit: Vec<WriteOp>,
    reply: tokio::sync::oneshot::Sender<Result<UnitResult, StoreError>>,
}

/// A write, with its compare-and-swap condition.
enum WriteOp {
    Create {
        key: Key,
        json: Vec<u8>,
    },
    Update {
        key: Key,
        json: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: Key,
        expected: Revision,
    },
}

impl WriteOp {
    fn key(&self) -> &Key {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }

    fn of(write: &BatchWrite) -> Result<WriteOp, StoreError> {
        Ok(match write {
            BatchWrite::Create(value) => WriteOp::Create {
                key: value.key(),
                json: encode(value)?,
            },
            BatchWrite::Update(value, expected) => WriteOp::Update {
                key: value.key(),
                json: encode(value)?,
                expected: expected.clone(),
            },
            BatchWrite::Delete(key, expected) => WriteOp::Delete {
                key: key.clone(),
                expected: expected.clone(),
            },
        })
    }
}

struct Inner {
    // Declared before the lock so that it is dropped (the file closed)
    // before the lock is released and another process may open the file.
    db: Database,
    _lock: DirLock,
    file: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("file", &self.inner.file)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating the directory and the data file
    /// when they do not exist yet. Fails with [`StoreError::Unavailable`]
    /// while another process (or another open in this one) holds the
    /// directory: the store is sound but busy, and trying again once that
    /// process has exited succeeds.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("creating data dir {}: {e}", dir.display())))?;
        let lock = DirLock::acquire(dir)?;
        let file = dir.join(DATA_FILE);
        let db = Database::create(&file)
            .map_err(|e| unavailable(format!("opening {}: {e}", file.display())))?;
        let inner = Inner {
            db,
            _lock: lock,
            file,
        };
        inner.create_tables()?;
        let inner = Arc::new(inner);
        let commits = Arc::new(AtomicU64::new(0));
        let (writes, queue) = std::sync::mpsc::channel();
        let writer = {
            let (inner, commits) = (Arc::clone(&inner), Arc::clone(&commits));
            std::thread::Builder::new()
                .name("ipam-embedded-writer".to_string())
                .spawn(move || write_loop(&inner, &queue, &commits))
                .map_err(|e| unavailable(format!("starting the writer thread: {e}")))?
        };
        Ok(EmbeddedStore {
            inner,
            trips: RoundTripCounter::default(),
            writes: Some(writes),
            writer: Some(writer),
            commits,
        })
    }

    /// Durable commits (fsyncs) made since the store was opened; with
    /// writes arriving together, fewer than the writes.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Hands a write to the writer thread and waits until it is committed.
    async fn write(&self, op: WriteOp) -> Result<Option<u64>, StoreError> {
        match self.write_unit(vec![op]).await? {
            Ok(mut revisions) => Ok(revisions.pop().flatten()),
            Err((_, refused)) => Err(refused),
        }
    }

    /// Hands a unit to the writer thread and waits until it is committed
    /// (or refused). The outer error is the store's failure.
    async fn write_unit(&self, unit: Vec<WriteOp>) -> Result<UnitResult, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let closed = || {
            unavailable(format!(
                "the writer of {} has stopped",
                self.inner.file.display()
            ))
        };
        self.writes
            .as_ref()
            .ok_or_else(closed)?
            .send(Queued { unit, reply })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `op` on the blocking pool: redb's calls block on disk I/O and on
    /// each other (one write transaction at a time).
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || op(&inner)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(unavailable(format!(
                "a transaction on {} was cancelled: {e}",
                self.inner.file.display()
            ))),
        }
    }
}

impl Drop for EmbeddedStore {
    /// Lets the writer commit what is queued and stop, so that the file and
    /// its lock are released when this returns (a reopen in the same
    /// process, a restart after a graceful shutdown).
    fn drop(&mut self) {
        drop(self.writes.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(file = %self.inner.file.display(), "the embedded store's writer panicked");
            }
        }
    }
}

/// The writer thread: takes the first queued write, then everything queued
/// behind it, and commits them together.
fn write_loop(inner: &Inner, queue: &std::sync::mpsc::Receiver<Queued>, commits: &AtomicU64) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let units: Vec<&[WriteOp]> = group.iter().map(|q| q.unit.as_slice()).collect();
        match inner.apply_group(&units) {
            Ok((results, committed)) => {
                if committed {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                for (queued, result) in group.into_iter().zip(results) {
                    let _ = queued.reply.send(Ok(result));
                }
            }
            // Nothing of the group was written.
            Err(e) => {
                for queued in group {
                    let _ = queued.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The flock on `<dir>/ipam.lock`, held for as long as the store is open.
struct DirLock {
    // Closing the file releases the lock.
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io_error = |what: &str, e: std::io::Error| {
            unavailable(format!("{what} lock file {}: {e}", path.display()))
        };
        // Not truncated on open: until the lock is ours, the pid in it is
        // the holder's, and a refused open reads it for its message.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("opening", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                file.read_to_string(&mut text)
                    .map_err(|e| io_error("reading", e))?;
                // The holder writes its pid just after locking; in that
                // moment the file can still be empty.
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "another process".to_string(),
                };
                return Err(unavailable(format!(
                    "data dir {} is already in use by {holder}",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io_error("locking", e)),
        }
        // A pid left by a killed holder is overwritten here; its lock died
        // with it.
        file.set_len(0).map_err(|e| io_error("truncating", e))?;
        file.rewind().map_err(|e| io_error("rewinding", e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| io_error("writing", e))?;
        Ok(DirLock { _file: file })
    }
}

impl Inner {
    /// Creates both tables, so that read transactions find them in a fresh
    /// file.
    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(OBJECTS)
            .map_err(|e| self.failed("opening table objects", e))?;
        txn.open_table(META)
            .map_err(|e| self.failed("opening table meta", e))?;
        self.commit(txn)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| self.failed("starting a write transaction", e))?;
        // redb's default, set here because the datastore contract depends
        // on it: commit returns only once the data is on disk.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.failed("setting immediate durability", e))?;
        Ok(txn)
    }

    fn commit(&self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(|e| self.failed("committing", e))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db
            .begin_read()
            .map_err(|e| self.failed("starting a read transaction", e))
    }

    /// A redb failure: the file could not be read or written.
    fn failed(&self, what: &str, e: impl Into<redb::Error>) -> StoreError {
        unavailable(format!("{what} in {}: {}", self.file.display(), e.into()))
    }

    /// A stored value that does not decode.
    fn invalid(&self, key: &str, message: String) -> StoreError {
        StoreError::Invalid {
            what: format!("key {key} in {}", self.file.display()),
            message,
        }
    }

    fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        let stored = key_string(key);
        let txn = self.begin_read()?;
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| self.failed("opening table objects", e))?;
        let entry = table
            .get(stored.as_str())
            .map_err(|e| self.failed(&format!("reading {stored}"), e))?
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        let (revision, bytes) = entry.value();
        self.decode_entry(key.kind(), &stored, revision, bytes)
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        let prefix = match query {
            ListQuery::All(kind) => kind_prefix(*kind).to_string(),
            // The '/' after the node keeps node-10's affinities out of
            // node-1's range.
            ListQuery::AffinitiesOf(node) => format!("{}{node}/", kind_prefix(Kind::Affinity)),
        };
        let txn = self.begin_read()?;
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| self.failed("opening table objects", e))?;
        let range = table
            .range(prefix.as_str()..)
            .map_err(|e| self.failed(&format!("listing {prefix}"), e))?;
        let mut listed = Vec::new();
        for entry in range {
            let (key, value) = entry.map_err(|e| self.failed(&format!("listing {prefix}"), e))?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            let (revision, bytes) = value.value();
            let versioned = self.decode_entry(query.kind(), key.value(), revision, bytes)?;
            // A node name holding a '/' would put another node's
            // affinities under this prefix; the decoded key settles it.
            if query.matches(&versioned.value.key()) {
                listed.push(versioned);
            }
        }
        Ok(listed)
    }

    /// Applies units (single writes and batches) in order in one
    /// transaction, then commits once. Each unit's writes are all checked
    /// before any is applied (a batch names each key once, so the checks
    /// see the state before the unit); a refused unit changes nothing and
    /// does not stop the others, and a later unit sees an earlier one's
    /// effect. Returns each unit's result and whether anything was
    /// committed. An error means the transaction failed and nothing of it
    /// was written.
    fn apply_group(&self, units: &[&[WriteOp]]) -> Result<(Vec<UnitResult>, bool), StoreError> {
        let txn = self.begin_write()?;
        let mut results = Vec::with_capacity(units.len());
        let mut changed = false;
        {
            let mut objects = txn
                .open_table(OBJECTS)
                .map_err(|e| self.failed("opening table objects", e))?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.failed("opening table meta", e))?;
            let mut last = meta
                .get(LAST_REVISION)
                .map_err(|e| self.failed("reading the revision counter", e))?
                .map_or(0, |entry| entry.value());
            for unit in units {
                let refused = unit.iter().enumerate().find_map(|(index, op)| {
                    let stored = key_string(op.key());
                    let current = match objects.get(stored.as_str()) {
                        Ok(entry) => entry.map(|entry| entry.value().0),
                        Err(e) => return Some(Err(self.failed(&format!("reading {stored}"), e))),
                    };
                    let allowed = match op {
                        WriteOp::Create { key, .. } if current.is_some() => {
                            Err(StoreError::AlreadyExists { key: key.clone() })
                        }
                        WriteOp::Create { .. } => Ok(()),
                        WriteOp::Update { key, expected, .. }
                        | WriteOp::Delete { key, expected } => {
                            check_revision(key, current, expected)
                        }
                    };
                    allowed.err().map(|refused| Ok((index, refused)))
                });
                if let Some(refused) = refused {
                    results.push(Err(refused?));
                    continue;
                }
                changed |= !unit.is_empty();
                let mut revisions = Vec::with_capacity(unit.len());
                for op in unit.iter() {
                    let stored = key_string(op.key());
                    match op {
                        WriteOp::Create { json, .. } | WriteOp::Update { json, .. } => {
                            last += 1;
                            objects
                                .insert(stored.as_str(), (last, json.as_slice()))
                                .map_err(|e| self.failed(&format!("writing {stored}"), e))?;
                            revisions.push(Some(last));
                        }
                        WriteOp::Delete { .. } => {
                            objects
                                .remove(stored.as_str())
                                .map_err(|e| self.failed(&format!("deleting {stored}"), e))?;
                            revisions.push(None);
                        }
                    }
                }
                results.push(Ok(revisions));
            }
            meta.insert(LAST_REVISION, last)
                .map_err(|e| self.failed("writing the revision counter", e))?;
        }
        if !changed {
            // Every unit was refused: nothing to make durable.
            txn.abort().map_err(|e| self.failed("aborting", e))?;
            return Ok((results, false));
        }
        self.commit(txn)?;
        Ok((results, true))
    }

    /// Decodes a stored object and checks that it names the key it is
    /// stored under.
    fn decode_entry(
        &self,
        kind: Kind,
        stored: &str,
        revision: u64,
        json: &[u8],
    ) -> Result<Versioned<Value>, StoreError> {
        let value = decode(kind, json).map_err(|message| self.invalid(stored, message))?;
        let named = key_string(&value.key());
        if named != stored {
            return Err(self.invalid(stored, format!("the stored object is {named}")));
        }
        Ok(Versioned {
            value,
            revision: revision_of(revision),
        })
    }
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        message,
    }
}

fn revision_of(n: u64) -> Revision {
    Revision(n.to_string())
}

fn check_revision(key: &Key, current: Option<u64>, expected: &Revision) -> Result<(), StoreError> {
    match current {
        None => Err(StoreError::NotFound { key: key.clone() }),
        Some(n) if revision_of(n) == *expected => Ok(()),
        Some(_) => Err(StoreError::Conflict { key: key.clone() }),
    }
}

/// Each kind's key prefix. Every prefix ends in '/', so that one kind's
/// range never runs into another's.
fn kind_prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Pool => "pool/",
        Kind::Block => "block/",
        Kind::Handle => "handle/",
        Kind::Affinity => "affinity/",
        Kind::Config => "config/",
        Kind::Reservation => "reservation/",
    }
}

fn key_string(key: &Key) -> String {
    let prefix = kind_prefix(key.kind());
    match key {
        Key::Pool(name) | Key::Reservation(name) => format!("{prefix}{name}"),
        Key::Block(cidr) => format!("{prefix}{cidr}"),
        Key::Handle(id) => format!("{prefix}{id}"),
        Key::Affinity(a) => format!("{prefix}{}/{}", a.node, a.cidr),
        Key::Config => format!("{prefix}default"),
    }
}

/// The stored form of the kinds whose spec does not carry their name.
#[derive(Serialize, Deserialize)]
struct Named<N, S> {
    name: N,
    spec: S,
}

fn encode(value: &Value) -> Result<Vec<u8>, StoreError> {
    let json = match value {
        Value::Pool(pool) => serde_json::to_vec(&Named {
            name: pool.name(),
            spec: pool.spec(),
        }),
        Value::Block(block) => serde_json::to_vec(&block.to_spec()),
        Value::Handle(handle) => serde_json::to_vec(&handle.to_spec()),
        Value::Affinity(affinity) => serde_json::to_vec(affinity),
        Value::Config(config) => serde_json::to_vec(config),
        Value::Reservation(r) => serde_json::to_vec(&Named {
            name: &r.name,
            spec: &r.spec,
        }),
    };
    json.map_err(|e| StoreError::Invalid {
        what: value.key().to_string(),
        message: format!("encoding as JSON: {e}"),
    })
}

fn decode(kind: Kind, json: &[u8]) -> Result<Value, String> {
    fn parse<'a, T: Deserialize<'a>>(kind: Kind, json: &'a [u8]) -> Result<T, String> {
        serde_json::from_slice(json).map_err(|e| format!("not a stored {kind}: {e}"))
    }
    Ok(match kind {
        Kind::Pool => {
            let named: Named<String, PoolSpec> = parse(kind, json)?;
            Value::Pool(Pool::new(named.name, named.spec).map_err(|e| e.to_string())?)
        }
        Kind::Block => {
            let spec: BlockSpec = parse(kind, json)?;
            Value::Block(Block::from_spec(spec).map_err(|e| e.to_string())?)
        }
        Kind::Handle => {
            let spec: HandleSpec = parse(kind, json)?;
            Value::Handle(Handle::from_spec(spec).map_err(|e| e.to_string())?)
        }
        Kind::Affinity => Value::Affinity(parse::<Affinity>(kind, json)?),
        Kind::Config => Value::Config(parse::<IpamConfig>(kind, json)?),
        Kind::Reservation => {
            let named: Named<String, ReservationSpec> = parse(kind, json)?;
            Value::Reservation(Reservation {
                name: named.name,
                spec: named.spec,
            })
        }
    })
}

#[async_trait]
impl Datastore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        self.trips.read();
        let key = key.clone();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        self.trips.read();
        let query = query.clone();
        self.blocking(move |inner| inner.list(&query)).await
    }

    async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
        self.trips.write();
        let op = WriteOp::Create {
            key: value.key(),
            json: encode(value)?,
        };
        Ok(revision_of(self.write(op).await?.unwrap_or_default()))
    }

    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
        self.trips.write();
        let op = WriteOp::Update {
            key: value.key(),
            json: encode(value)?,
            expected: revision.clone(),
        };
        Ok(revision_of(self.write(op).await?.unwrap_or_default()))
    }

    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        self.trips.write();
        let op = WriteOp::Delete {
            key: key.clone(),
            expected: revision.clone(),
        };
        self.write(op).await.map(|_| ())
    }

    fn round_trips(&self) -> RoundTrips {
        self.trips.snapshot()
    }

    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        Some(self)
    }
}

#[async_trait]
impl AtomicWrites for EmbeddedStore {
    /// One unit for the writer thread: it shares the group's commit, and is
    /// answered once that commit is on disk.
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError> {
        distinct_keys(writes)?;
        self.trips.write();
        let unit = writes
            .iter()
            .map(WriteOp::of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(BatchError::Store)?;
        match self.write_unit(unit).await.map_err(BatchError::Store)? {
            Ok(revisions) => Ok(revisions.into_iter().map(|n| n.map(revision_of)).collect()),
            Err((index, cause)) => Err(BatchError::Refused { index, cause }),
        }
    }

    /// A redb transaction has no limit on its writes.
    fn max_writes(&self) -> usize {
        usize::MAX
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ipam_core::{AffinityState, BlockCidr, BlockOwner};

    use super::*;

    fn cidr(text: &str) -> BlockCidr {
        text.parse().expect("test CIDR")
    }

    fn block(net: &str) -> Block {
        let mut block = Block::new(
            cidr(net),
            Some(BlockOwner::Host("node-1".to_string())),
            Some("2026-11-23T00:00:00Z".to_string()),
            1_763_856_000_000_000_000,
        );
        block.auto_assign(
            2,
            "k8s-pod-network.aaaa",
            &BTreeMap::new(),
            &Default::default(),
        );
        block.bump_sequence_number();
        block
    }

    fn one_of_each() -> Vec<Value> {
        let mut pool_spec = PoolSpec::new("10.0.0.0/16".parse().expect("test pool CIDR"));
        pool_spec.node_selector = "all()".to_string();
        let mut handle = Handle::new("k8s-pod-network.aaaa");
        handle.increment(cidr("10.0.0.0/26"), 2);
        vec![
            Value::Pool(Pool::new("default-ipv4-ippool", pool_spec).expect("test pool")),
            Value::Block(block("10.0.0.0/26")),
            Value::Handle(handle),
            Value::Affinity(Affinity::new(
                "node-1",
                cidr("10.0.0.0/26"),
                AffinityState::Confirmed,
            )),
            Value::Config(IpamConfig::default()),
            Value::Reservation(Reservation {
                name: "gateways".to_string(),
                spec: ReservationSpec {
                    reserved_cidrs: vec!["10.0.0.1/32".parse().expect("test CIDR")],
                    unknown: Default::default(),
                },
            }),
        ]
    }

    async fn everything(store: &EmbeddedStore) -> Vec<Versioned<Value>> {
        let mut all = Vec::new();
        for kind in Kind::ALL {
            all.extend(store.list(&ListQuery::All(kind)).await.expect("list"));
        }
        all
    }

    fn number(revision: &Revision) -> u64 {
        revision.0.parse().expect("embedded revisions are numbers")
    }

    /// Writes bytes under a key as a corrupted file or an older program
    /// might have left them.
    fn put_raw(store: &EmbeddedStore, key: &str, json: &[u8]) {
        let inner = &store.inner;
        let txn = inner.begin_write().expect("write transaction");
        txn.open_table(OBJECTS)
            .expect("objects table")
            .insert(key, (1, json))
            .expect("raw insert");
        inner.commit(txn).expect("commit");
    }

    #[tokio::test]
    async fn every_object_and_revision_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (before, last) = {
            let store = EmbeddedStore::open(dir.path()).expect("first open");
            let mut config_revision = None;
            for value in one_of_each() {
                let revision = store.create(&value).await.expect("create");
                if value.kind() == Kind::Config {
                    config_revision = Some(revision);
                }
            }
            // An update and a delete too, so that the file holds more than
            // first writes.
            let config = Value::Config(IpamConfig {
                strict_affinity: true,
                ..IpamConfig::default()
            });
            let updated = store
                .update(&config, &config_revision.expect("one_of_each has a config"))
                .await
                .expect("update config");
            let gone = Value::Affinity(Affinity::new(
                "node-2",
                cidr("10.0.1.0/26"),
                AffinityState::Pending,
            ));
            let rev = store.create(&gone).await.expect("create affinity");
            store.delete(&gone.key(), &rev).await.expect("delete");
            assert!(number(&rev) > number(&updated));
            (everything(&store).await, number(&rev))
        };
        assert_eq!(before.len(), 6);

        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(everything(&store).await, before);
        // The counter is in the file: no revision is handed out twice, not
        // even the deleted object's.
        let again = Value::Handle(Handle::new("k8s-pod-network.bbbb"));
        let rev = store.create(&again).await.expect("create after reopen");
        assert_eq!(number(&rev), last + 1);
    }

    #[test]
    fn a_second_open_of_a_busy_data_dir_names_the_holder_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _first = EmbeddedStore::open(dir.path()).expect("first open");
        let err = EmbeddedStore::open(dir.path()).expect_err("second open");
        assert_eq!(
            err,
            StoreError::Unavailable {
                backend: "embedded",
                message: format!(
                    "data dir {} is already in use by pid {}",
                    dir.path().display(),
                    std::process::id()
                ),
            }
        );
    }

    #[test]
    fn a_data_dir_opens_again_once_its_holder_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(EmbeddedStore::open(dir.path()).expect("first open"));
        EmbeddedStore::open(dir.path()).expect("open after the first was dropped");
    }

    #[test]
    fn a_stale_lock_file_does_not_block_an_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lock = dir.path().join(LOCK_FILE);
        // Above Linux's largest pid_max: no live process has this pid. The
        // trailing digits make it longer than the pid written over it.
        std::fs::write(&lock, "4194305999\n").expect("stale lock file");
        let _store = EmbeddedStore::open(dir.path()).expect("open over a stale lock file");
        assert_eq!(
            std::fs::read_to_string(&lock).expect("lock file"),
            format!("{}\n", std::process::id())
        );
    }

    #[tokio::test]
    async fn an_undecodable_value_is_invalid_and_names_its_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        put_raw(&store, "block/10.0.0.0/26", b"{\"cidr\": 42");
        let what = format!(
            "key block/10.0.0.0/26 in {}",
            dir.path().join(DATA_FILE).display()
        );

        let err = store
            .get(&Key::Block(cidr("10.0.0.0/26")))
            .await
            .expect_err("get of a corrupt block");
        let StoreError::Invalid {
            what: named,
            message,
        } = err
        else {
            panic!("expected Invalid, got {err}");
        };
        assert_eq!(named, what);
        assert!(
            message.starts_with("not a stored IPAMBlock: "),
            "message: {message}"
        );

        let err = store
            .list(&ListQuery::All(Kind::Block))
            .await
            .expect_err("list over a corrupt block");
        assert!(
            matches!(&err, StoreError::Invalid { what: named, .. } if *named == what),
            "list: {err}"
        );
    }

    #[tokio::test]
    async fn a_value_stored_under_another_key_is_invalid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let json = encode(&Value::Block(block("10.0.0.64/26"))).expect("encode");
        put_raw(&store, "block/10.0.0.0/26", &json);
        let err = store
            .get(&Key::Block(cidr("10.0.0.0/26")))
            .await
            .expect_err("get of a misfiled block");
        assert_eq!(
            err,
            StoreError::Invalid {
                what: format!(
                    "key block/10.0.0.0/26 in {}",
                    dir.path().join(DATA_FILE).display()
                ),
                message: "the stored object is block/10.0.0.64/26".to_string(),
            }
        );
    }

    fn handle_value(id: &str) -> Value {
        Value::Handle(Handle::new(id))
    }

    fn json_of(value: &Value) -> Vec<u8> {
        encode(value).expect("encodes")
    }

    #[test]
    fn a_group_is_one_commit_with_each_write_checked_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let a = handle_value("a");
        let b = handle_value("b");
        let key_a = a.key();
        let ops = [
            WriteOp::Create {
                key: key_a.clone(),
                json: json_of(&a),
            },
            // Sees the create above in the same transaction.
            WriteOp::Create {
                key: key_a.clone(),
                json: json_of(&a),
            },
            WriteOp::Update {
                key: key_a.clone(),
                json: json_of(&a),
                expected: revision_of(1),
            },
            // Stale: the update above moved `a` to revision 2.
            WriteOp::Update {
                key: key_a.clone(),
                json: json_of(&a),
                expected: revision_of(1),
            },
            WriteOp::Delete {
                key: b.key(),
                expected: revision_of(1),
            },
            WriteOp::Create {
                key: b.key(),
                json: json_of(&b),
            },
        ];
        let units: Vec<&[WriteOp]> = ops.iter().map(std::slice::from_ref).collect();
        let (results, committed) = store.inner.apply_group(&units).unwrap();
        assert!(committed);
        assert_eq!(
            results,
            vec![
                Ok(vec![Some(1)]),
                Err((0, StoreError::AlreadyExists { key: key_a.clone() })),
                Ok(vec![Some(2)]),
                Err((0, StoreError::Conflict { key: key_a.clone() })),
                Err((0, StoreError::NotFound { key: b.key() })),
                Ok(vec![Some(3)]),
            ]
        );
        assert_eq!(store.inner.get(&key_a).unwrap().revision, revision_of(2));
        // Nothing but refusals: no commit.
        let refused = [WriteOp::Delete {
            key: key_a.clone(),
            expected: revision_of(1),
        }];
        let units: Vec<&[WriteOp]> = refused.iter().map(std::slice::from_ref).collect();
        let (results, committed) = store.inner.apply_group(&units).unwrap();
        assert!(!committed);
        assert_eq!(results, vec![Err((0, StoreError::Conflict { key: key_a }))]);
    }

    #[test]
    fn a_refused_batch_in_a_group_leaves_the_other_writes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let a = handle_value("a");
        let b = handle_value("b");
        let c = handle_value("c");
        let create = |value: &Value| WriteOp::Create {
            key: value.key(),
            json: json_of(value),
        };
        let single = [create(&a)];
        // Its second write finds `a` created by the single write before it
        // in the group: the batch is refused as a whole, `b` included.
        let refused = [create(&b), create(&a)];
        let accepted = [create(&c)];
        let units: Vec<&[WriteOp]> = vec![&single, &refused, &accepted];
        let (results, committed) = store.inner.apply_group(&units).unwrap();
        assert!(committed);
        assert_eq!(
            results,
            vec![
                Ok(vec![Some(1)]),
                Err((1, StoreError::AlreadyExists { key: a.key() })),
                Ok(vec![Some(2)]),
            ]
        );
        assert!(store.inner.get(&a.key()).is_ok());
        assert_eq!(
            store.inner.get(&b.key()),
            Err(StoreError::NotFound { key: b.key() }),
            "a refused batch wrote part of itself"
        );
        assert!(store.inner.get(&c.key()).is_ok());
    }

    #[tokio::test]
    async fn an_acknowledged_batch_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let gone = handle_value("gone");
        let gone_rev = store.create(&gone).await.unwrap();
        let writes = [
            BatchWrite::Create(handle_value("h")),
            BatchWrite::Create(Value::Block(block("10.0.0.0/26"))),
            BatchWrite::Delete(gone.key(), gone_rev),
        ];
        let before = store.commits();
        let revisions = store.write_all(&writes).await.unwrap();
        assert_eq!(store.commits() - before, 1, "a batch is one commit");
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        for (write, revision) in writes.iter().zip(&revisions) {
            match (reopened.get(&write.key()).await, revision) {
                (Ok(stored), Some(revision)) => assert_eq!(&stored.revision, revision),
                (Err(StoreError::NotFound { .. }), None) => {}
                (got, expected) => panic!("{}: {got:?}, expected {expected:?}", write.key()),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_committed_in_fewer_commits_and_all_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let before = store.commits();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.create(&handle_value(&format!("h{i}"))).await })
            })
            .collect();
        let mut revisions = std::collections::HashSet::new();
        for task in tasks {
            revisions.insert(task.await.unwrap().unwrap());
        }
        assert_eq!(revisions.len(), 200, "every write got its own revision");
        let commits = store.commits() - before;
        // Writes that arrive while a commit is on disk share the next one.
        assert!(
            commits < 200,
            "{commits} commits for 200 concurrent writes: none shared"
        );
        assert_eq!(
            store
                .list(&ListQuery::All(Kind::Handle))
                .await
                .unwrap()
                .len(),
            200
        );
    }

    #[tokio::test]
    async fn dropping_the_store_commits_what_was_queued_and_frees_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.create(&handle_value("kept")).await.unwrap();
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).expect("the dir is free again");
        assert!(reopened.get(&handle_value("kept").key()).await.is_ok());
    }
}
