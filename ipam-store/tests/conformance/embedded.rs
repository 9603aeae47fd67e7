//! The suite against the embedded (redb) backend, each case in a fresh
//! data dir that lives as long as the case.
use ipam_store::embedded::EmbeddedStore;

conformance_tests!(async {
    let dir = tempfile::tempdir().expect("temp data dir");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    (store, dir)
});
