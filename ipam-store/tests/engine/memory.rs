use std::sync::Arc;

use ipam_store::memory::MemoryStore;
use ipam_store::Datastore;

engine_tests!(async { (Arc::new(MemoryStore::new()) as Arc<dyn Datastore>, ()) });
