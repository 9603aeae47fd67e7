use std::sync::Arc;

use ipam_store::embedded::EmbeddedStore;
use ipam_store::Datastore;

engine_tests!(async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    (Arc::new(store) as Arc<dyn Datastore>, dir)
});
