//! Watches and the reflectors built on them, as kube-runtime reads them.

use super::*;

#[tokio::test]
async fn a_watch_streams_what_changes_after_the_listed_version_as_kube_reads_it() {
    use futures_util::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{WatchEvent, WatchParams};
    use kube::core::ObjectList;
    let api = ApiServer::start().await;
    let pods: Api<Pod> = Api::all(client(&api).await);
    api.put_core(
        "pods",
        json!({"metadata": {"name": "old", "namespace": "default"}}),
    );
    let listed: ObjectList<Pod> = pods.list(&ListParams::default()).await.unwrap();
    let version = listed.metadata.resource_version.unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &version)
        .await
        .unwrap()
        .boxed();
    api.put_core(
        "pods",
        json!({"metadata": {"name": "new", "namespace": "default"}}),
    );
    api.put_core(
        "pods",
        json!({"metadata": {"name": "new", "namespace": "default", "labels": {"a": "b"}}}),
    );
    assert!(api.remove_core("pods", Some("default"), "old"));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = stream.next().await.expect("the watch stays open").unwrap();
        let (kind, pod) = match event {
            WatchEvent::Added(pod) => ("added", pod),
            WatchEvent::Modified(pod) => ("modified", pod),
            WatchEvent::Deleted(pod) => ("deleted", pod),
            other => panic!("{other:?}"),
        };
        seen.push((kind, pod.metadata.name.unwrap()));
    }
    assert_eq!(
        seen,
        [
            ("added", "new".to_string()),
            ("modified", "new".to_string()),
            ("deleted", "old".to_string())
        ]
    );
    // From no version, the pods there are now come first.
    let mut fresh = pods
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    match fresh.next().await.unwrap().unwrap() {
        WatchEvent::Added(pod) => assert_eq!(pod.metadata.name.as_deref(), Some("new")),
        other => panic!("{other:?}"),
    }
    // The watch ends at its timeout.
    assert!(fresh.next().await.is_none());
}

#[tokio::test]
async fn a_watch_of_calico_objects_sees_creates_updates_and_deletes() {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let api = ApiServer::start().await;
    let handles: Api<crds::IPAMHandle> = Api::all(client(&api).await);
    let mut stream = handles
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    let handle: crds::IPAMHandle = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
        "metadata": {"name": "h"},
        "spec": {"handleID": "h", "block": {"10.0.0.0/26": 1}}
    }))
    .unwrap();
    let created = handles
        .create(&PostParams::default(), &handle)
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.spec.block.insert("10.0.0.0/26".into(), 2);
    handles
        .replace("h", &PostParams::default(), &changed)
        .await
        .unwrap();
    handles.delete("h", &DeleteParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        kinds.push(match stream.next().await.unwrap().unwrap() {
            WatchEvent::Added(_) => "added",
            WatchEvent::Modified(_) => "modified",
            WatchEvent::Deleted(_) => "deleted",
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(kinds, ["added", "modified", "deleted"]);
}

/// Runs kube's reflector over a watcher of `api` with `config`, as the
/// garbage collector does: its store, every error the stream yielded, and
/// the task (abort it at the end).
fn reflect<K>(
    api: Api<K>,
    config: kube::runtime::watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use futures_util::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (store, writer) = reflector::store::<K>();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = errors.clone();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let task = tokio::spawn(stream.for_each(move |event| {
        if let Err(error) = event {
            seen.lock().unwrap().push(error.to_string());
        }
        async {}
    }));
    (store, errors, task)
}

/// Waits (10 s at most) until the reflector's store holds exactly the
/// objects `wanted`, as `<namespace>/<name>` or `<name>`.
async fn until_reflected<K>(store: &kube::runtime::reflector::Store<K>, wanted: &[&str])
where
    K: kube::Resource + Clone,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut held: Vec<String> = store
            .state()
            .iter()
            .map(|o| {
                let name = o.meta().name.clone().unwrap_or_default();
                match &o.meta().namespace {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => name,
                }
            })
            .collect();
        held.sort();
        if held == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reflector holds {held:?}, not {wanted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn pod(namespace: &str, name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace}, "spec": {"nodeName": "node-1"}})
}

#[tokio::test]
async fn a_reflector_follows_pods_created_and_deleted() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    api.put_core("pods", pod("x", "a"));
    let pods = Api::<Pod>::all(client(&api).await);
    let (store, errors, task) = reflect(pods, watcher::Config::default());
    until_reflected(&store, &["x/a"]).await;
    api.put_core("pods", pod("y", "b"));
    until_reflected(&store, &["x/a", "y/b"]).await;
    assert!(api.remove_core("pods", Some("x"), "a"));
    until_reflected(&store, &["y/b"]).await;
    // A change reaches the store too.
    api.put_core(
        "pods",
        json!({"metadata": {"name": "b", "namespace": "y"}, "spec": {"nodeName": "node-2"}}),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.state()[0].spec.as_ref().unwrap().node_name.as_deref() != Some("node-2") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
    // What the watcher asked: a list of pods, then a watch from its version.
    let verbs: Vec<(String, String)> = api
        .accesses()
        .into_iter()
        .map(|a| (a.verb, a.resource))
        .collect();
    assert_eq!(
        verbs,
        [
            ("list".to_string(), "pods".to_string()),
            ("watch".to_string(), "pods".to_string())
        ]
    );
}

#[tokio::test]
async fn paused_watches_lag_behind_reads_until_resumed() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    api.put_core("pods", pod("x", "a"));
    let pods = Api::<Pod>::all(client(&api).await);
    let (store, errors, task) = reflect(pods.clone(), watcher::Config::default());
    until_reflected(&store, &["x/a"]).await;
    api.pause_watches();
    api.put_core("pods", pod("x", "late"));
    assert!(api.remove_core("pods", Some("x"), "a"));
    // Reads see the change at once; the watch does not.
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["late"]);
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        until_reflected(&store, &["x/a"]).await;
    }
    api.resume_watches();
    until_reflected(&store, &["x/late"]).await;
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_reflector_follows_nodes_created_and_deleted() {
    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    api.put_core("nodes", json!({"metadata": {"name": "node-1"}}));
    let nodes = Api::<Node>::all(client(&api).await);
    let (store, errors, task) = reflect(nodes, watcher::Config::default());
    until_reflected(&store, &["node-1"]).await;
    api.put_core("nodes", json!({"metadata": {"name": "node-2"}}));
    until_reflected(&store, &["node-1", "node-2"]).await;
    assert!(api.remove_core("nodes", None, "node-1"));
    until_reflected(&store, &["node-2"]).await;
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_reflector_works_with_cached_and_streaming_lists() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::{self, ListSemantic};
    let api = ApiServer::start().await;
    let client = client(&api).await;
    api.put_core("pods", pod("x", "a"));
    for config in [
        // limit=500 with resourceVersion=0 and NotOlderThan.
        watcher::Config::default().list_semantic(ListSemantic::Any),
        // A watch with sendInitialEvents=true and no list at all.
        watcher::Config::default().streaming_lists(),
    ] {
        let (store, errors, task) = reflect(Api::<Pod>::all(client.clone()), config.clone());
        until_reflected(&store, &["x/a"]).await;
        api.put_core("pods", pod("x", "b"));
        until_reflected(&store, &["x/a", "x/b"]).await;
        assert!(api.remove_core("pods", Some("x"), "b"));
        until_reflected(&store, &["x/a"]).await;
        task.abort();
        assert_eq!(*errors.lock().unwrap(), Vec::<String>::new(), "{config:?}");
    }
    // A list at an exact past version cannot be served, so it is refused.
    let exact = Api::<Pod>::all(client)
        .list(
            &ListParams::default()
                .at("1")
                .matching(kube::api::VersionMatch::Exact),
        )
        .await;
    assert!(
        matches!(&exact, Err(kube::Error::Api(s)) if s.code == 400),
        "{exact:?}"
    );
}

#[tokio::test]
async fn a_namespaced_list_and_watch_see_their_namespace_only() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    let client = client(&api).await;
    for (namespace, name) in [("shop", "cart"), ("default", "web"), ("shop", "till")] {
        api.put_core("pods", pod(namespace, name));
    }
    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let listed: Vec<String> = shop
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(listed, ["cart", "till"]);
    let (store, errors, task) = reflect(shop, watcher::Config::default());
    until_reflected(&store, &["shop/cart", "shop/till"]).await;
    api.put_core("pods", pod("default", "other"));
    api.put_core("pods", pod("shop", "new"));
    assert!(api.remove_core("pods", Some("default"), "web"));
    assert!(api.remove_core("pods", Some("shop"), "cart"));
    until_reflected(&store, &["shop/new", "shop/till"]).await;
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
    assert!(api
        .accesses()
        .iter()
        .any(|a| a.verb == "watch" && a.resource == "pods" && a.name.is_none()));
}
