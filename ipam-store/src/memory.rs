//! A datastore in a map behind a lock: for tests and benchmarks, and for a
//! server that need not remember anything across restarts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::datastore::{
    distinct_keys, AtomicWrites, BatchError, BatchWrite, Datastore, RoundTripCounter, RoundTrips,
};
use crate::error::StoreError;
use crate::model::{Key, ListQuery, Revision, Value, Versioned};

/// An in-memory datastore. Revisions come from one counter, so every write
/// gives the object a revision no earlier state of it had.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    trips: RoundTripCounter,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<Key, (Value, u64)>,
    last_revision: u64,
}

impl State {
    fn next_revision(&mut self) -> u64 {
        self.last_revision += 1;
        self.last_revision
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves no half-written object
        // (every change is one insert or remove), so the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn revision(n: u64) -> Revision {
    Revision(n.to_string())
}

fn check_revision(key: &Key, stored: u64, expected: &Revision) -> Result<(), StoreError> {
    if revision(stored) == *expected {
        Ok(())
    } else {
        Err(StoreError::Conflict { key: key.clone() })
    }
}

#[async_trait]
impl Datastore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        self.trips.read();
        match self.state().objects.get(key) {
            Some((value, rev)) => Ok(Versioned {
                value: value.clone(),
                revision: revision(*rev),
            }),
            None => Err(StoreError::NotFound { key: key.clone() }),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        self.trips.read();
        Ok(self
            .state()
            .objects
            .iter()
            .filter(|(key, _)| query.matches(key))
            .map(|(_, (value, rev))| Versioned {
                value: value.clone(),
                revision: revision(*rev),
            })
            .collect())
    }

    async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
        self.trips.write();
        let key = value.key();
        let mut state = self.state();
        if state.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists { key });
        }
        let rev = state.next_revision();
        state.objects.insert(key, (value.clone(), rev));
        Ok(revision(rev))
    }

    async fn update(&self, value: &Value, expected: &Revision) -> Result<Revision, StoreError> {
        self.trips.write();
        let key = value.key();
        let mut state = self.state();
        let Some((_, stored)) = state.objects.get(&key) else {
            return Err(StoreError::NotFound { key });
        };
        check_revision(&key, *stored, expected)?;
        let rev = state.next_revision();
        state.objects.insert(key, (value.clone(), rev));
        Ok(revision(rev))
    }

    async fn delete(&self, key: &Key, expected: &Revision) -> Result<(), StoreError> {
        self.trips.write();
        let mut state = self.state();
        let Some((_, stored)) = state.objects.get(key) else {
            return Err(StoreError::NotFound { key: key.clone() });
        };
        check_revision(key, *stored, expected)?;
        state.objects.remove(key);
        Ok(())
    }

    fn round_trips(&self) -> RoundTrips {
        self.trips.snapshot()
    }

    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        Some(self)
    }
}

#[async_trait]
impl AtomicWrites for MemoryStore {
    /// Under the one lock: every condition checked, then every write
    /// applied, so no reader sees part of a batch.
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError> {
        distinct_keys(writes)?;
        self.trips.write();
        let mut state = self.state();
        for (index, write) in writes.iter().enumerate() {
            let key = write.key();
            let stored = state.objects.get(&key).map(|(_, rev)| *rev);
            let allowed = match (write, stored) {
                (BatchWrite::Create(_), Some(_)) => Err(StoreError::AlreadyExists { key }),
                (BatchWrite::Create(_), None) => Ok(()),
                (BatchWrite::Update(..) | BatchWrite::Delete(..), None) => {
                    Err(StoreError::NotFound { key })
                }
                (BatchWrite::Update(_, expected) | BatchWrite::Delete(_, expected), Some(rev)) => {
                    check_revision(&key, rev, expected)
                }
            };
            allowed.map_err(|cause| BatchError::Refused { index, cause })?;
        }
        let mut revisions = Vec::with_capacity(writes.len());
        for write in writes {
            match write {
                BatchWrite::Create(value) | BatchWrite::Update(value, _) => {
                    let rev = state.next_revision();
                    state.objects.insert(value.key(), (value.clone(), rev));
                    revisions.push(Some(revision(rev)));
                }
                BatchWrite::Delete(key, _) => {
                    state.objects.remove(key);
                    revisions.push(None);
                }
            }
        }
        Ok(revisions)
    }

    fn max_writes(&self) -> usize {
        usize::MAX
    }
}
