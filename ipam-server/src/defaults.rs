//! The pools a fresh installation starts with, chosen as calico-node does
//! at startup (node/pkg/lifecycle/startup/startup.go, `configureIPPools`):
//! `default-ipv4-ippool` 192.168.0.0/16 with /26 blocks unless
//! `CALICO_IPV4POOL_CIDR` / `CALICO_IPV4POOL_BLOCK_SIZE` say otherwise,
//! created only when no IPv4 pool exists; likewise IPv6; none at all with
//! `NO_DEFAULT_POOLS=true`; a family's pool is skipped when its CIDR is
//! `none`.
//!
//! Two differences:
//! - calico-node runs this on every start (v3.32.1), so a default pool an
//!   operator deletes comes back at its next restart unless another pool
//!   of that family exists. ipam-server runs it on a datastore's first
//!   start only, known by the IPAMConfig `default` being absent, and then
//!   writes that IPAMConfig ([`crate::server::ensure_default_pools`]): a
//!   deleted default pool stays deleted, and `NO_DEFAULT_POOLS` on the
//!   first start holds for good. Deleting the IPAMConfig makes the next
//!   start a first one again.
//! - calico-node makes up a random ULA /48 for IPv6 when the host supports
//!   IPv6 and no `CALICO_IPV6POOL_CIDR` is set. A server has no host
//!   network to judge by, so it creates an IPv6 pool only when the CIDR is
//!   given.

use ipam_core::{IpVersion, Pool, PoolSpec};
use ipnet::IpNet;

/// Why the environment does not describe valid default pools.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefaultPoolError {
    /// NO_DEFAULT_POOLS contradicts a pool CIDR (calico-node stops too).
    #[error("NO_DEFAULT_POOLS=true cannot be combined with {variable}={value:?}")]
    Contradiction {
        /// The CIDR variable that is set.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// A variable's value is not valid for it.
    #[error("{variable}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
}

struct Family {
    version: IpVersion,
    name: &'static str,
    cidr_variable: &'static str,
    block_size_variable: &'static str,
    default_cidr: Option<&'static str>,
    default_block_size: u8,
    ipip_variable: Option<&'static str>,
    vxlan_variable: &'static str,
    nat_variable: &'static str,
    nat_default: bool,
    selector_variable: &'static str,
}

const FAMILIES: [Family; 2] = [
    Family {
        version: IpVersion::V4,
        name: "default-ipv4-ippool",
        cidr_variable: "CALICO_IPV4POOL_CIDR",
        block_size_variable: "CALICO_IPV4POOL_BLOCK_SIZE",
        default_cidr: Some("192.168.0.0/16"),
        default_block_size: 26,
        ipip_variable: Some("CALICO_IPV4POOL_IPIP"),
        vxlan_variable: "CALICO_IPV4POOL_VXLAN",
        nat_variable: "CALICO_IPV4POOL_NAT_OUTGOING",
        nat_default: true,
        selector_variable: "CALICO_IPV4POOL_NODE_SELECTOR",
    },
    Family {
        version: IpVersion::V6,
        name: "default-ipv6-ippool",
        cidr_variable: "CALICO_IPV6POOL_CIDR",
        block_size_variable: "CALICO_IPV6POOL_BLOCK_SIZE",
        default_cidr: None,
        default_block_size: 122,
        ipip_variable: None,
        vxlan_variable: "CALICO_IPV6POOL_VXLAN",
        nat_variable: "CALICO_IPV6POOL_NAT_OUTGOING",
        nat_default: false,
        selector_variable: "CALICO_IPV6POOL_NODE_SELECTOR",
    },
];

/// The pools to create, given the environment (`env(name)`) and the pools
/// that exist.
pub fn default_pools(
    env: impl Fn(&str) -> Option<String>,
    existing: &[Pool],
) -> Result<Vec<Pool>, DefaultPoolError> {
    let get = |name: &str| env(name).filter(|v| !v.is_empty());
    if get("NO_DEFAULT_POOLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        for family in &FAMILIES {
            if let Some(value) = get(family.cidr_variable) {
                return Err(DefaultPoolError::Contradiction {
                    variable: family.cidr_variable,
                    value,
                });
            }
        }
        return Ok(Vec::new());
    }
    let mut pools = Vec::new();
    for family in &FAMILIES {
        let cidr_text = match get(family.cidr_variable) {
            Some(value) if value == "none" => continue,
            Some(value) => value,
            None => match family.default_cidr {
                Some(default) => default.to_string(),
                None => continue,
            },
        };
        if existing.iter().any(|p| p.version() == family.version) {
            continue;
        }
        pools.push(family_pool(family, &cidr_text, &get)?);
    }
    Ok(pools)
}

fn family_pool(
    family: &Family,
    cidr_text: &str,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Pool, DefaultPoolError> {
    let invalid = |variable: &'static str, value: &str, reason: String| DefaultPoolError::Invalid {
        variable,
        value: value.to_string(),
        reason,
    };
    let cidr: IpNet = cidr_text
        .parse()
        .map_err(|_| invalid(family.cidr_variable, cidr_text, "not a CIDR".to_string()))?;
    if IpVersion::of(cidr.addr()) != family.version {
        return Err(invalid(
            family.cidr_variable,
            cidr_text,
            format!("not an {} CIDR", family.version),
        ));
    }
    let block_size = match get(family.block_size_variable) {
        Some(text) => text.parse::<u8>().map_err(|_| {
            invalid(
                family.block_size_variable,
                &text,
                "not a prefix length".to_string(),
            )
        })?,
        None => family.default_block_size,
    };
    let mode = |variable: &'static str| -> Result<String, DefaultPoolError> {
        let value = get(variable).unwrap_or_default();
        match value.to_ascii_lowercase().as_str() {
            "" | "off" | "never" => Ok("Never".to_string()),
            "crosssubnet" | "cross-subnet" => Ok("CrossSubnet".to_string()),
            "always" => Ok("Always".to_string()),
            _ => Err(invalid(
                variable,
                &value,
                "must be Always, CrossSubnet or Never".to_string(),
            )),
        }
    };
    let nat_outgoing = match get(family.nat_variable) {
        None => family.nat_default,
        Some(text) => text.parse::<bool>().map_err(|_| {
            invalid(
                family.nat_variable,
                &text,
                "must be true or false".to_string(),
            )
        })?,
    };
    let spec = PoolSpec {
        block_size: Some(block_size),
        node_selector: get(family.selector_variable).unwrap_or_else(|| "all()".to_string()),
        ipip_mode: Some(match family.ipip_variable {
            Some(variable) => mode(variable)?,
            None => "Never".to_string(),
        }),
        vxlan_mode: Some(mode(family.vxlan_variable)?),
        nat_outgoing,
        ..PoolSpec::new(cidr)
    };
    // Pool::new checks alignment and the block size range, naming the pool;
    // the error names the variable that holds the value refused.
    Pool::new(family.name, spec).map_err(|e| match e {
        ipam_core::Error::BlockSizeOutOfRange { .. } => invalid(
            family.block_size_variable,
            &block_size.to_string(),
            e.to_string(),
        ),
        _ => invalid(family.cidr_variable, cidr_text, e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn nothing_set_gives_calicos_ipv4_default() {
        let pools = default_pools(env(&[]), &[]).unwrap();
        assert_eq!(pools.len(), 1);
        let pool = &pools[0];
        assert_eq!(pool.name(), "default-ipv4-ippool");
        assert_eq!(pool.cidr().to_string(), "192.168.0.0/16");
        assert_eq!(pool.block_size(), 26);
        assert!(pool.spec().nat_outgoing);
        assert_eq!(pool.spec().ipip_mode.as_deref(), Some("Never"));
        assert_eq!(pool.spec().node_selector, "all()");
    }

    #[test]
    fn variables_override_and_ipv6_needs_its_cidr() {
        let vars = [
            ("CALICO_IPV4POOL_CIDR", "10.244.0.0/16"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "24"),
            ("CALICO_IPV4POOL_IPIP", "CrossSubnet"),
            ("CALICO_IPV6POOL_CIDR", "fd00:10:244::/64"),
            ("CALICO_IPV6POOL_BLOCK_SIZE", "120"),
        ];
        let pools = default_pools(env(&vars), &[]).unwrap();
        let summary: Vec<(String, String, u8)> = pools
            .iter()
            .map(|p| (p.name().to_string(), p.cidr().to_string(), p.block_size()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("default-ipv4-ippool".into(), "10.244.0.0/16".into(), 24),
                ("default-ipv6-ippool".into(), "fd00:10:244::/64".into(), 120),
            ]
        );
        assert_eq!(pools[0].spec().ipip_mode.as_deref(), Some("CrossSubnet"));
        assert!(!pools[1].spec().nat_outgoing, "IPv6 NAT is off by default");
    }

    #[test]
    fn existing_pools_of_a_family_and_no_default_pools_create_nothing() {
        let existing = default_pools(env(&[]), &[]).unwrap();
        assert!(default_pools(env(&[]), &existing).unwrap().is_empty());
        let none = [("NO_DEFAULT_POOLS", "true")];
        assert!(default_pools(env(&none), &[]).unwrap().is_empty());
        let skip_v4 = [("CALICO_IPV4POOL_CIDR", "none")];
        assert!(default_pools(env(&skip_v4), &[]).unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[("CALICO_IPV4POOL_CIDR", "10.0.0.0/33")],
                "CALICO_IPV4POOL_CIDR=\"10.0.0.0/33\": not a CIDR",
            ),
            (&[("CALICO_IPV4POOL_CIDR", "fd00::/64")], "not an IPv4 CIDR"),
            (
                &[("CALICO_IPV4POOL_BLOCK_SIZE", "33")],
                "CALICO_IPV4POOL_BLOCK_SIZE=\"33\": pool default-ipv4-ippool: blockSize 33",
            ),
            (&[("CALICO_IPV4POOL_CIDR", "10.0.0.1/16")], "not aligned"),
            (
                &[("CALICO_IPV4POOL_VXLAN", "sometimes")],
                "CALICO_IPV4POOL_VXLAN=\"sometimes\": must be Always",
            ),
            (
                &[
                    ("NO_DEFAULT_POOLS", "true"),
                    ("CALICO_IPV4POOL_CIDR", "10.0.0.0/16"),
                ],
                "NO_DEFAULT_POOLS=true cannot be combined with CALICO_IPV4POOL_CIDR",
            ),
        ];
        for (vars, expected) in cases {
            let err = default_pools(env(vars), &[]).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
    }
}
