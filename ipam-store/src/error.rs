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

impl StoreError {
    /// Whether trying again (after re-reading, for a conflict) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Unavailable { .. }
        )
    }
}
