//! The conformance suite against a real etcd (one private process per
//! test), and what only a networked store can do: lose its server and get
//! it back.

use std::time::{Duration, Instant};

use ipam_core::{Affinity, AffinityState};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::{Datastore, Key, StoreError, Value};
use testkit::etcd::EtcdServer;

async fn start() -> EtcdServer {
    EtcdServer::start()
        .await
        .unwrap_or_else(|e| panic!("starting etcd: {e}"))
}

async fn connect(etcd: &EtcdServer, timeout: Duration) -> EtcdStore {
    let options = EtcdOptions {
        timeout,
        ..EtcdOptions::default()
    };
    EtcdStore::connect(&[etcd.endpoint()], options)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", etcd.endpoint()))
}

conformance_tests!(requires: testkit::require::etcd(), async {
    let etcd = start().await;
    let store = connect(&etcd, Duration::from_secs(5)).await;
    (store, etcd)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_as_unavailable_while_etcd_is_down_and_work_once_it_is_back() {
    if !testkit::require::etcd() {
        return;
    }
    let mut etcd = start().await;
    let timeout = Duration::from_secs(2);
    let store = connect(&etcd, timeout).await;
    let affinity = Value::Affinity(Affinity::new(
        "node-1",
        "10.0.0.0/26".parse().unwrap(),
        AffinityState::Pending,
    ));
    let revision = store.create(&affinity).await.expect("create while up");

    etcd.stop();
    for attempt in [
        store.get(&affinity.key()).await.map(drop),
        store.update(&affinity, &revision).await.map(drop),
    ] {
        let started = Instant::now();
        match attempt {
            Err(StoreError::Unavailable {
                backend: "etcd", ..
            }) => {}
            other => panic!("expected Unavailable while etcd is down, got {other:?}"),
        }
        assert!(
            started.elapsed() <= timeout + Duration::from_secs(1),
            "a call outlived its timeout"
        );
    }

    etcd.restart().await.expect("etcd restarts");
    // The client reconnects by itself; allow it a moment to notice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = loop {
        match store.get(&affinity.key()).await {
            Ok(read) => break read,
            Err(err @ StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                eprintln!("still reconnecting: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("after the restart: {err}"),
        }
    };
    assert_eq!(read.value, affinity, "the data survived the restart");
    assert_eq!(read.revision, revision);
    store
        .update(&affinity, &revision)
        .await
        .expect("writes work again");
}

#[tokio::test]
async fn an_unreachable_etcd_is_unavailable_within_the_timeout() {
    if !testkit::require::etcd() {
        return;
    }
    let mut etcd = start().await;
    etcd.stop();
    let timeout = Duration::from_millis(500);
    let store = connect(&etcd, timeout).await;
    let started = Instant::now();
    let err = store.get(&Key::Config).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("/calico/ipam/v2/config"), "{err}");
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
}
