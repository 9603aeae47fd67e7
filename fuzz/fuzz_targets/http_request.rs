//! ipam-server's request bodies from arbitrary bytes: the first byte picks
//! the route, the rest is the body. Decoding into the API's types and the
//! validation the handlers then do (pool specs into pools) must refuse bad
//! input with an error, never panic.

#![no_main]

use ipam_api::{
    AssignBody, AssignIpBody, ClaimBody, ConfigBody, PoolBody, PoolSpecBody, ReleaseBody,
};
use ipam_core::Pool;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((route, body)) = data.split_first() else {
        return;
    };
    match route % 7 {
        0 => {
            let _ = serde_json::from_slice::<AssignBody>(body);
        }
        1 => {
            let _ = serde_json::from_slice::<AssignIpBody>(body);
        }
        2 => {
            let _ = serde_json::from_slice::<ReleaseBody>(body);
        }
        3 => {
            if let Ok(pool) = serde_json::from_slice::<PoolBody>(body) {
                let _ = Pool::new(pool.name, pool.spec);
            }
        }
        4 => {
            if let Ok(update) = serde_json::from_slice::<PoolSpecBody>(body) {
                let _ = Pool::new("fuzz", update.spec);
            }
        }
        5 => {
            if let Ok(config) = serde_json::from_slice::<ConfigBody>(body) {
                let config = ipam_core::IpamConfig {
                    strict_affinity: config.strict_affinity,
                    auto_allocate_blocks: config.auto_allocate_blocks,
                    max_blocks_per_host: config.max_blocks_per_host,
                    ..ipam_core::IpamConfig::default()
                };
                let _ = config.validate();
            }
        }
        _ => {
            let _ = serde_json::from_slice::<ClaimBody>(body);
        }
    }
});
