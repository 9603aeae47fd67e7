//! Engine cases of administration every backend must pass: affinities,
//! nodes, the IPAM configuration and pools.

use std::collections::BTreeSet;
use std::sync::Arc;

use ipam_core::{AffinityState, BlockCidr, Error, IpamConfig, Pool, PoolSpec};
use ipam_store::{Datastore, Ipam, IpamError, Key, Kind, ListQuery, Value};
use ipnet::IpNet;

use crate::cases::{allocations, engine_on, engine_with, pool, pool_with, request, Engine};

pub async fn claim_and_release_affinities(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    engine
        .auto_assign(&request("h", "other", 1, 0))
        .await
        .unwrap();
    let claim = engine
        .claim_affinity("n", "10.0.0.0/24".parse().unwrap())
        .await
        .unwrap();
    assert_eq!((claim.claimed.len(), claim.failed.len()), (3, 1));
    let mine = engine.affinities_of("n").await.unwrap();
    assert_eq!(mine.len(), 3);
    assert!(mine
        .iter()
        .all(|a| a.state == AffinityState::Confirmed && a.node == "n"));
    assert!(
        mine.windows(2).all(|w| w[0].cidr < w[1].cidr),
        "in block order"
    );
    engine
        .auto_assign(&request("in-use", "n", 1, 0))
        .await
        .unwrap();
    let used =
        BlockCidr::new(engine.addresses_of_handle("in-use").await.unwrap()[0].trunc()).unwrap();
    let err = engine.release_affinity("n", used, true).await.unwrap_err();
    assert!(
        matches!(err, IpamError::Refused(Error::BlockNotEmpty { .. })),
        "{err}"
    );
    let empty = claim.claimed.iter().copied().find(|c| *c != used).unwrap();
    engine.release_affinity("n", empty, true).await.unwrap();
    assert!(
        store.get(&Key::Block(empty)).await.is_err(),
        "an empty released block is deleted"
    );
    let err = engine.release_affinity("n", empty, true).await.unwrap_err();
    assert!(
        matches!(err, IpamError::Refused(Error::AffinityNotFound { .. })),
        "{err}"
    );
}

pub async fn release_node_frees_empty_blocks_and_orphans_used_ones(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    engine
        .claim_affinity("gone", "10.0.0.0/25".parse().unwrap())
        .await
        .unwrap();
    let got = engine
        .auto_assign(&request("h", "gone", 1, 0))
        .await
        .unwrap();
    let held = engine.release_node("gone").await.unwrap();
    assert_eq!(held.len(), 2);
    assert!(store
        .list(&ListQuery::AffinitiesOf("gone".into()))
        .await
        .unwrap()
        .is_empty());
    let blocks = store.list(&ListQuery::All(Kind::Block)).await.unwrap();
    assert_eq!(
        blocks.len(),
        1,
        "the empty block is deleted, the used one kept"
    );
    let Value::Block(kept) = &blocks[0].value else {
        panic!()
    };
    assert!(kept.owner().is_none(), "and left without affinity");
    assert_eq!(
        allocations(&*store)
            .await
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![got.ipv4.addresses[0].addr()]
    );
    assert!(
        engine.release_node("gone").await.unwrap().is_empty(),
        "twice is fine"
    );
}

pub async fn config_round_trips_and_is_validated(store: Arc<dyn Datastore>) {
    let engine: Engine = Ipam::new(store.clone());
    assert_eq!(engine.config().await.unwrap(), IpamConfig::default());
    let config = IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 3,
        ..IpamConfig::default()
    };
    engine.set_config(config.clone()).await.unwrap();
    assert_eq!(engine.config().await.unwrap(), config);
    assert_eq!(
        Ipam::new(store.clone()).config().await.unwrap(),
        config,
        "stored, not cached"
    );
    let bad = IpamConfig {
        strict_affinity: false,
        ..config.clone()
    };
    let err = engine.set_config(bad).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("MaxBlocksPerHost requires StrictAffinity to be enabled"),
        "{err}"
    );
    assert_eq!(
        engine.config().await.unwrap(),
        config,
        "a refused config changes nothing"
    );
}

pub async fn pools_are_validated_and_cannot_overlap(store: Arc<dyn Datastore>) {
    let engine = engine_with(
        store.clone(),
        vec![pool("a", "10.0.0.0/16", 26)],
        IpamConfig::default(),
    )
    .await;
    let err = engine
        .create_pool(pool("b", "10.0.128.0/24", 26))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("overlaps pool a (10.0.0.0/16)"),
        "{err}"
    );
    let err = engine
        .create_pool(pool("a", "10.9.0.0/16", 26))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Store(ipam_store::StoreError::AlreadyExists { .. })
        ),
        "{err}"
    );
    let bad_size = PoolSpec {
        block_size: Some(33),
        ..PoolSpec::new("10.5.0.0/16".parse().unwrap())
    };
    assert!(Pool::new("c", bad_size)
        .unwrap_err()
        .to_string()
        .contains("blockSize 33"));
    let resized = pool("a", "10.0.0.0/16", 28);
    let err = engine.update_pool(resized).await.unwrap_err();
    assert!(
        err.to_string().contains("blockSize cannot be changed"),
        "{err}"
    );
    let moved = pool("a", "10.7.0.0/16", 26);
    assert!(engine
        .update_pool(moved)
        .await
        .unwrap_err()
        .to_string()
        .contains("cidr cannot be changed"));
    let disabled = pool_with("a", "10.0.0.0/16", 26, |s| s.disabled = true);
    engine.update_pool(disabled).await.unwrap();
    assert!(!engine.pools().await.unwrap()[0].enabled());
    let err = engine
        .auto_assign(&request("h", "n", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::Refused(Error::NoPoolForNode { .. })),
        "a disabled pool is not used: {err}"
    );
}

pub async fn deleting_a_pool_releases_its_empty_blocks(store: Arc<dyn Datastore>) {
    let engine = engine_with(
        store.clone(),
        vec![pool("a", "10.0.0.0/24", 26), pool("b", "10.1.0.0/24", 26)],
        IpamConfig::default(),
    )
    .await;
    let mut in_a = request("h", "n", 1, 0);
    in_a.ipv4_pools = vec!["10.0.0.0/24".parse().unwrap()];
    let held = engine.auto_assign(&in_a).await.unwrap();
    engine
        .claim_affinity("n", "10.0.0.128/26".parse().unwrap())
        .await
        .unwrap();
    engine.delete_pool("a").await.unwrap();
    let names: Vec<String> = engine
        .pools()
        .await
        .unwrap()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert_eq!(names, vec!["b"]);
    let blocks: BTreeSet<Key> = store
        .list(&ListQuery::All(Kind::Block))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value.key())
        .collect();
    let used = BlockCidr::new(held.ipv4.addresses[0].trunc()).unwrap();
    assert_eq!(
        blocks,
        BTreeSet::from([Key::Block(used)]),
        "only the block in use survives"
    );
    assert!(
        engine.delete_pool("a").await.is_err(),
        "a missing pool is not found"
    );
    let next = engine.auto_assign(&request("h2", "n", 1, 0)).await.unwrap();
    assert!("10.1.0.0/24"
        .parse::<IpNet>()
        .unwrap()
        .contains(&next.ipv4.addresses[0].addr()));
}
