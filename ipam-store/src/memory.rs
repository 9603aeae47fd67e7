//! A datastore in a map behind a lock: for tests and benchmarks, and for a
//! server that need not remember anything across restarts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::datastore::{Datastore, RoundTripCounter, RoundTrips};
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
}
