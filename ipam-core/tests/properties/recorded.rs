//! Without a cooldown, every run is exactly the run recorded before the
//! feature existed.

use super::*;

/// How many runs were recorded before IP cooldown existed.
const RECORDED_RUNS: usize = 64;

/// The seed the recorded runs were generated from.
const RECORDED_SEED: [u8; 32] = *b"calico-ipam-rs runs, no cooldown";

/// FNV-1a, 64 bits: a hash that no toolchain or dependency changes, to
/// fingerprint a run's states.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Everything a datastore would hold, as JSON.
fn stored_json(snapshot: &Snapshot) -> String {
    let blocks: Vec<BlockSpec> = snapshot.blocks().map(Block::to_spec).collect();
    let handles: BTreeMap<String, HandleSpec> = snapshot
        .handles()
        .map(|h| (h.id().to_string(), h.to_spec()))
        .collect();
    let affinities: Vec<&Affinity> = snapshot.affinities().collect();
    serde_json::to_string(&(blocks, handles, affinities)).expect("the state serialises")
}

/// A run's fingerprint: what each step told its caller and what the
/// datastore held after it, hashed in order, and the number of steps.
fn fingerprint(scenario: &strategies::Scenario) -> String {
    let mut cluster = Cluster::new(&scenario.world);
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for step in &scenario.steps {
        let outcome = cluster.step(step);
        hash = fnv1a(hash, format!("{outcome:?}").as_bytes());
        hash = fnv1a(hash, stored_json(&cluster.snapshot).as_bytes());
    }
    format!("{hash:016x} {}", scenario.steps.len())
}

/// The fingerprints of the recorded runs, generated again.
fn recorded_runs() -> Vec<String> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &RECORDED_SEED);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    (0..RECORDED_RUNS)
        .map(|_| {
            let tree = scenario().new_tree(&mut runner).expect("a scenario");
            fingerprint(&tree.current())
        })
        .collect()
}

/// With no cooldown, IP cooldown changes nothing: 64 generated runs tell
/// their callers and leave the datastore exactly as they did before the
/// feature existed. `no_cooldown_runs.txt` holds their fingerprints, as
/// these same functions computed them at commit eaa2a40 (the last without
/// the feature); the runs come from `scenario()` with a fixed seed.
#[test]
fn with_no_cooldown_runs_are_exactly_the_runs_recorded_before_the_feature() {
    let recorded: Vec<&str> = include_str!("../no_cooldown_runs.txt").lines().collect();
    assert_eq!(recorded.len(), RECORDED_RUNS);
    let now = recorded_runs();
    for (index, (before, after)) in recorded.iter().zip(&now).enumerate() {
        assert_eq!(before, after, "run {index} differs from the recorded one");
    }
}
