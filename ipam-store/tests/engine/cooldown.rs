//! IP cooldown through the engine, on every backend (Calico #12638: a
//! released address stays allocated, nobody's, until `ipCooldownSeconds`
//! have passed). The cooldowns are short (1 or 2 s) and the cases wait
//! them out on the clock, since the engine reads the time itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipam_core::{AssignIpRequest, BlockCidr, Error, IpamConfig};
use ipam_store::{Datastore, IpamError};

use crate::cases::{allocations, assert_consistent, engine_with, pool, request, Engine};

/// Generates one `#[tokio::test]` per cooldown case, as `engine_tests!`
/// does for the others; `engine_tests!` invokes it.
macro_rules! cooldown_tests {
    ($present:expr, $make:expr) => {
        cooldown_tests!(@cases $present; $make;
            a_released_address_is_not_reused_within_its_cooldown_and_is_after,
            the_backstop_writes_back_blocks_whose_cooldown_has_passed,
        );
    };
    (@cases $present:expr; $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$present {
                    return;
                }
                let (store, _guard) = $make.await;
                $crate::cooldown::$case(store).await;
            }
        )*
    };
}

/// An engine over one block, 10.0.0.0/29, with the given cooldown.
async fn one_block(store: &Arc<dyn Datastore>, cooldown: u32) -> Engine {
    let config = IpamConfig {
        ip_cooldown_seconds: cooldown,
        ..IpamConfig::default()
    };
    engine_with(store.clone(), vec![pool("p", "10.0.0.0/29", 29)], config).await
}

async fn assign(engine: &Engine, handle: &str) -> Vec<IpAddr> {
    let got = engine
        .auto_assign(&request(handle, "node-1", 1, 0))
        .await
        .unwrap();
    got.ipv4.addresses.iter().map(|a| a.addr()).collect()
}

/// Sleeps until the clock reads second `second` since the epoch.
async fn sleep_until_second(second: i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let target = Duration::from_secs(u64::try_from(second).unwrap());
    if let Some(wait) = target.checked_sub(now) {
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
    }
}

/// The `releasedAt` second of a released address, read from the store.
async fn released_at(engine: &Engine, address: IpAddr) -> i64 {
    let cidr: BlockCidr = "10.0.0.0/29".parse().unwrap();
    let block = engine.block(cidr).await.unwrap().unwrap();
    block
        .attribute_of_address(address)
        .and_then(|a| a.released_at())
        .expect("the address is released")
}

pub async fn a_released_address_is_not_reused_within_its_cooldown_and_is_after(
    store: Arc<dyn Datastore>,
) {
    let engine = one_block(&store, 2).await;
    // A nearly full block: seven of eight addresses held.
    for pod in ["a", "b", "c", "d", "e", "f", "g"] {
        assign(&engine, pod).await;
    }
    let released = engine.release_by_handle("c").await.unwrap();
    assert_eq!(released, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
    let address = released[0];
    // Released but in use: nobody's, and its handle is gone.
    let held = allocations(&*store).await;
    assert_eq!(held.get(&address).map(String::as_str), Some(""));
    assert_consistent(&*store).await;
    assert!(engine.addresses_of_handle("c").await.unwrap().is_empty());
    assert!(engine.release_by_handle("c").await.unwrap().is_empty());

    // Within the cooldown: the last free address, then nothing.
    assert_eq!(
        assign(&engine, "h").await,
        ["10.0.0.7".parse::<IpAddr>().unwrap()]
    );
    let short = engine
        .auto_assign(&request("i", "node-1", 1, 0))
        .await
        .unwrap();
    assert!(short.ipv4.addresses.is_empty(), "{short:?}");
    assert!(!short.ipv4.shortfall.is_empty());
    let explicit = AssignIpRequest {
        handle: ipam_core::HandleId::new("j"),
        node: ipam_core::NodeName::new("node-1"),
        address,
        attributes: Default::default(),
    };
    let refused = engine.assign_ip(&explicit).await.unwrap_err();
    assert!(
        matches!(refused, IpamError::Refused(Error::AddressInCooldown { .. })),
        "{refused}"
    );

    // After it, the address is handed out again.
    sleep_until_second(released_at(&engine, address).await + 3).await;
    assert_eq!(assign(&engine, "i").await, [address]);
    let held = allocations(&*store).await;
    assert_eq!(held.get(&address).map(String::as_str), Some("i"));
    assert_consistent(&*store).await;
}

pub async fn the_backstop_writes_back_blocks_whose_cooldown_has_passed(store: Arc<dyn Datastore>) {
    let engine = one_block(&store, 1).await;
    let gone = assign(&engine, "gone").await[0];
    let kept = assign(&engine, "kept").await[0];
    engine.release_by_handle("gone").await.unwrap();
    assert!(engine.deallocate_cooled().await.unwrap().is_empty());
    sleep_until_second(released_at(&engine, gone).await + 2).await;
    let cidr: BlockCidr = "10.0.0.0/29".parse().unwrap();
    assert_eq!(engine.deallocate_cooled().await.unwrap(), [cidr]);
    let held = allocations(&*store).await;
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), [kept]);
    assert!(engine.deallocate_cooled().await.unwrap().is_empty());
    assert_consistent(&*store).await;
}
