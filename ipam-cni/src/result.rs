//! The ADD result in the format of the configuration's `cniVersion`, as
//! calico-ipam prints it (cni-plugin/pkg/ipamplugin/ipam_plugin.go,
//! v3.32.1): one entry per address (auto-assigned ones keep their block's
//! prefix length, a chosen `IP=` is /32 or /128), no gateway, one host
//! route per address, and an empty `dns` object (Go's `types.DNS` has no omitempty).
//! Versions before 1.0.0 tag each address with `"version": "4"|"6"`.

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::config::Gateways;
use crate::version::CniVersion;

/// The result of an ADD that got `addresses` (IPv4 first).
pub fn add_result(version: CniVersion, addresses: &[IpNet], gateways: Gateways) -> Value {
    let gateway_of = |address: &IpNet| match address {
        IpNet::V4(_) => gateways.ipv4.map(|g| g.to_string()),
        IpNet::V6(_) => gateways.ipv6.map(|g| g.to_string()),
    };
    let ips: Vec<Value> = addresses
        .iter()
        .map(|address| {
            let mut ip = json!({ "address": address.to_string() });
            if version.tags_address_versions() {
                let family = if matches!(address, IpNet::V4(_)) {
                    "4"
                } else {
                    "6"
                };
                ip["version"] = json!(family);
            }
            if let Some(gateway) = gateway_of(address) {
                ip["gateway"] = json!(gateway);
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = addresses
        .iter()
        .filter(|a| gateway_of(a).is_none())
        .map(|a| json!({ "dst": route_to(a) }))
        .collect();
    json!({
        "cniVersion": version.as_str(),
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

// Calico 3.32 adds one route per address so that its main plugin
// programs the host-side route to the pod (cni-plugin/pkg/k8s/k8s.go skips
// that when calico-ipam returns no routes, so the list must not be empty).
// Calico writes the destination as the address with its block's prefix
// ("10.0.0.5/26"); a kernel refuses a destination with host bits set, so
// bridge and ptp fail on it ("failed to add route ... invalid argument",
// seen with Debian's plugins 1.1.1). A host route to the address says the
// same thing and installs everywhere.
fn route_to(address: &IpNet) -> String {
    let full = address.max_prefix_len();
    IpNet::new(address.addr(), full)
        .expect("the full prefix length is valid")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn version_one_results_have_no_address_versions() {
        let result = add_result(
            CniVersion::V1_0_0,
            &nets(&["10.0.0.5/26", "fd00::5/122"]),
            Gateways::default(),
        );
        assert_eq!(
            result,
            json!({
                "cniVersion": "1.0.0",
                "ips": [{"address": "10.0.0.5/26"}, {"address": "fd00::5/122"}],
                "routes": [{"dst": "10.0.0.5/32"}, {"dst": "fd00::5/128"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn a_configured_gateway_is_reported_and_replaces_the_route() {
        let gateways = Gateways {
            ipv4: Some("169.254.1.1".parse().unwrap()),
            ipv6: None,
        };
        let result = add_result(
            CniVersion::V1_1_0,
            &nets(&["10.0.0.5/26", "fd00::5/122"]),
            gateways,
        );
        assert_eq!(
            result["ips"],
            json!([{"address": "10.0.0.5/26", "gateway": "169.254.1.1"},
                   {"address": "fd00::5/122"}])
        );
        assert_eq!(result["routes"], json!([{"dst": "fd00::5/128"}]));
    }

    #[test]
    fn older_results_tag_each_address_with_its_family() {
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let result = add_result(
                version,
                &nets(&["10.0.0.5/32", "fd00::5/128"]),
                Gateways::default(),
            );
            assert_eq!(result["cniVersion"], version.as_str());
            assert_eq!(
                result["ips"],
                json!([{"version": "4", "address": "10.0.0.5/32"},
                       {"version": "6", "address": "fd00::5/128"}])
            );
        }
    }
}
