use std::sync::Arc;

use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::Datastore;
use testkit::etcd::EtcdServer;

engine_tests!(requires: testkit::require::etcd(), async {
    let etcd = EtcdServer::start()
        .await
        .unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let store = EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", etcd.endpoint()));
    (Arc::new(store) as Arc<dyn Datastore>, etcd)
});
