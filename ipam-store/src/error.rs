//! What can go wrong talking to a datastore, in the few classes a caller
//! acts on differently.

use crate::model::Key;

/// A datastore operation that did not happen. Every variant means nothing
/// was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The object changed since it was read: re-read and try again.
    #[error("{key} changed since it was read (compare-and-swap conflict)")]
    Conflict {
        /// The object.
        key: Key,
    },
    /// The object does not exist.
    #[error("{key} not found")]
    NotFound {
        /// The object.
        key: Key,
    },
    /// A create found the object already there.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The object.
        key: Key,
    },
    /// The datastore could not be reached or did not answer in time; the
    /// operation may be retried.
    #[error("{backend} datastore unavailable: {message}")]
    Unavailable {
        /// `memory`, `embedded`, `etcd` or `kubernetes`.
        backend: &'static str,
        /// What failed.
        message: String,
    },
    /// The datastore refused the object or holds one that does not parse.
    #[error("{what}: {message}")]
    Invalid {
        /// The object, or the key or file it came from.
        what: String,
        /// Why, in the datastore's words where it gave any.
        message: String,
    },
}

/// What retrying a failed datastore call can do: the one classification
/// the engine's retry helper and every caller act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// What was read moved on before the write landed: it changed, vanished
    /// or appeared (a compare-and-swap lost). Reading the object again and
    /// planning again gets past it, at once.
    Conflict,
    /// The datastore could not be reached or did not answer in time: the
    /// same request may succeed later. The engine does not retry it itself,
    /// since every call already waited its full timeout; it hands it to the
    /// caller (the CNI plugin's "try again later").
    Transient,
    /// Retrying does not help: the datastore refused the object, or holds
    /// one that does not parse.
    Fatal,
}

impl StoreError {
    /// How this failure may be retried, for a write planned on what was
    /// read: a missing or existing object then means the read is stale.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            StoreError::Conflict { .. }
            | StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. } => RetryClass::Conflict,
            StoreError::Unavailable { .. } => RetryClass::Transient,
            StoreError::Invalid { .. } => RetryClass::Fatal,
        }
    }

    /// The object a compare-and-swap failure names.
    pub fn key(&self) -> Option<&Key> {
        match self {
            StoreError::Conflict { key }
            | StoreError::NotFound { key }
            | StoreError::AlreadyExists { key } => Some(key),
            StoreError::Unavailable { .. } | StoreError::Invalid { .. } => None,
        }
    }

    /// Whether sending the same request again (after re-reading, for a
    /// conflict) may succeed, for a caller outside the engine. A missing or
    /// existing object that reaches such a caller is the answer to what it
    /// asked (no such pool, a name taken), not a lost compare-and-swap: the
    /// engine handles those itself.
    pub fn is_retryable(&self) -> bool {
        match self.retry_class() {
            RetryClass::Transient => true,
            RetryClass::Conflict => matches!(self, StoreError::Conflict { .. }),
            RetryClass::Fatal => false,
        }
    }
}
