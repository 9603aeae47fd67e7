use ipam_store::memory::MemoryStore;

conformance_tests!(async { (MemoryStore::new(), ()) });
