//! The CNI plugin's input from arbitrary bytes: the network config on
//! stdin and the `CNI_ARGS` string. Parsing must refuse bad input with a
//! CNI error (a code and a message naming what is wrong), never panic; a
//! config that parses must format a result in its own version.

#![no_main]

use ipam_cni::config::NetConfig;
use ipam_cni::env::CniArgs;
use ipam_cni::result::add_result;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = CniArgs::parse(text) {
            assert_eq!(error.code, 4);
            assert!(!error.details.is_empty());
        }
    }
    match NetConfig::parse(data) {
        Ok(config) => {
            let addresses = config.prev_addresses.clone().unwrap_or_default();
            let result = add_result(config.cni_version, &addresses, config.gateways);
            assert_eq!(result["cniVersion"], config.cni_version.as_str());
        }
        Err(error) => {
            assert!([1, 2, 6, 7].contains(&error.code), "{error:?}");
            assert!(!error.details.is_empty());
        }
    }
});
