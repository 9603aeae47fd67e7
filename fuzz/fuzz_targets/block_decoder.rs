//! IPAMBlock specs from arbitrary bytes: decoding and converting to a
//! block must refuse bad input with an error, never panic, and a block
//! that converts must convert back to a spec that converts to the same
//! block.

#![no_main]

use ipam_core::block::{Block, BlockSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<BlockSpec>(data) else {
        return;
    };
    let Ok(block) = Block::from_spec(spec) else {
        return;
    };
    let again = Block::from_spec(block.to_spec()).expect("a block's own spec converts");
    assert_eq!(again.to_spec(), block.to_spec());
});
