use std::sync::Arc;

use ipam_store::kubernetes::KubernetesStore;
use ipam_store::Datastore;
use testkit::apiserver::ApiServer;

engine_tests!(async {
    let api = ApiServer::start().await;
    let store = KubernetesStore::connect(Some(api.kubeconfig()))
        .await
        .expect("connecting through the test server's kubeconfig");
    (Arc::new(store) as Arc<dyn Datastore>, api)
});
