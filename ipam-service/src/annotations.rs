//! Calico's IPAM annotations, read as Calico's main CNI plugin reads them
//! (cni-plugin/pkg/k8s/k8s.go, v3.32.1, CmdAddK8s), for assignments made
//! under any other main plugin (bridge, ptp): [`crate::LocalService`]
//! honours them when an assignment says its pools are a CNI config's
//! (`AssignBody::pod_annotations`) and its label source reads pods
//! ([`crate::labels::LabelSource::pod_annotations`], ipam-server on
//! Kubernetes).
//!
//! The rules, Calico's:
//! - `cni.projectcalico.org/ipv4pools` and `ipv6pools` are JSON lists of
//!   pools, each a CIDR or a pool's name (ResolvePools,
//!   cni-plugin/internal/pkg/utils/utils.go). The namespace's are the
//!   default and the pod's, when not empty, replace them, each family on
//!   its own (k8s.go: "Sets the Namespace annotation for IP pools as
//!   default", "Gets the POD annotation for IP Pools and overwrites
//!   Namespace annotation if it exists"); either replaces the config's
//!   `ipv4_pools`/`ipv6_pools`. An empty list (`[]`) replaces them too,
//!   with every pool that selects the node.
//! - `cni.projectcalico.org/ipAddrs` is the pod's alone (k8s.go reads it
//!   from the pod's annotations only): a JSON list of at most one IPv4
//!   and one IPv6 address, never empty (validateAndExtractIPs). Each
//!   address is assigned to the pod's handle as calico-ipam assigns an
//!   `IP=` (ipAddrsResult, callIPAMWithIP), pools aside.
//! - `cni.projectcalico.org/ipFamilies` is read as the pools are (the
//!   pod's when not empty, else the namespace's; k8s.go 222, 233-236): a
//!   JSON list of `IPv4` and `IPv6` that replaces the config's
//!   `assign_ipv4`/`assign_ipv6`, one address of each family named and
//!   none of the others (k8s.go 270-297). Calico parses it after the
//!   pools annotations and before `ipAddrs`, which it does not change. Any other word is refused
//!   ("error parsing ipFamilies: ..."). A list naming no family is
//!   refused too: Calico's plugin would then ask its IPAM for nothing
//!   (ipam_plugin.go 296-305) and leave the pod without an address.
//!
//! The pool list parser and name resolution are shared with the
//! load-balancer controller, which reads Calico's Service annotations in
//! the same format.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipam_api::ErrorCode;
use ipnet::IpNet;

use crate::ServiceError;

/// Pools for the pod's IPv4 address (pod, else namespace).
pub const IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
/// Pools for the pod's IPv6 address (pod, else namespace).
pub const IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
/// The pod's addresses (pod only).
pub const IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";
/// The families the pod gets an address of (pod, else namespace).
pub const IP_FAMILIES: &str = "cni.projectcalico.org/ipFamilies";
/// The annotations read, the only ones a pod or namespace is kept with.
pub const KEYS: [&str; 4] = [IPV4_POOLS, IPV6_POOLS, IP_ADDRS, IP_FAMILIES];

/// Annotations by key.
pub type Annotations = BTreeMap<String, String>;

/// Only the annotations of [`KEYS`]: nothing else of an object is held.
pub fn kept(all: Option<&BTreeMap<String, String>>) -> Annotations {
    all.into_iter()
        .flatten()
        .filter(|(key, _)| KEYS.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A JSON list of strings, Calico's format for pools and addresses in
/// annotations (json.Unmarshal into a []string).
pub fn json_list(text: &str) -> Result<Vec<String>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Why a pool named in an annotation cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolRefError {
    /// Neither a CIDR nor the name of a pool that may be used.
    #[error("error parsing pool {0:?}")]
    Unknown(String),
    /// A pool of the other family.
    #[error("{pool} isn't a {family} pool")]
    WrongFamily {
        /// The pool.
        pool: IpNet,
        /// The family the annotation is for.
        family: &'static str,
    },
}

/// A pool as an annotation names it: a CIDR as it is (to its network), a
/// name looked up in `pools` (ResolvePools: "If it parses as a CIDR, just
/// use that. If it does not parse as a CIDR, then attempt to lookup an IP
/// pool with a matching name"); either of `ipv4`'s family.
pub fn resolve_pool(
    id: &str,
    pools: &BTreeMap<String, IpNet>,
    ipv4: bool,
) -> Result<IpNet, PoolRefError> {
    let cidr = match id.parse::<IpNet>() {
        Ok(cidr) => cidr.trunc(),
        Err(_) => *pools
            .get(id)
            .ok_or_else(|| PoolRefError::Unknown(id.to_string()))?,
    };
    match (ipv4, cidr) {
        (true, IpNet::V4(_)) | (false, IpNet::V6(_)) => Ok(cidr),
        _ => Err(PoolRefError::WrongFamily {
            pool: cidr,
            family: if ipv4 { "IPv4" } else { "IPv6" },
        }),
    }
}

/// A pod's and its namespace's annotations of [`KEYS`], and the
/// namespace's labels (one read of the Namespace gives both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAnnotations {
    /// The namespace's labels, for pools' namespaceSelector.
    pub namespace_labels: BTreeMap<String, String>,
    /// The namespace's annotations.
    pub namespace: Annotations,
    /// The pod's annotations (none for a pod that does not exist).
    pub pod: Annotations,
}

/// One annotation an assignment follows, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its key.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// `pod <namespace>/<name>` or `namespace <name>`.
    pub on: String,
}

impl Found {
    /// A refusal naming the annotation, its value and where it is.
    pub fn refusal(&self, code: ErrorCode, why: impl std::fmt::Display) -> ServiceError {
        Found::refusal_of(&[self], code, why)
    }

    /// A refusal naming the annotations `found` (none: `why` alone).
    pub fn refusal_of(
        found: &[&Found],
        code: ErrorCode,
        why: impl std::fmt::Display,
    ) -> ServiceError {
        let named: Vec<String> = found
            .iter()
            .map(|f| format!("{} annotation {:?} = {}", f.on, f.key, f.value))
            .collect();
        let message = if named.is_empty() {
            why.to_string()
        } else {
            format!("{}: {why}", named.join("; "))
        };
        ServiceError::Refused { code, message }
    }

    /// The pools of an `ipv4pools` or `ipv6pools` annotation, resolved
    /// among `pools` (name to CIDR).
    pub fn pools(
        &self,
        pools: &BTreeMap<String, IpNet>,
        ipv4: bool,
    ) -> Result<Vec<IpNet>, ServiceError> {
        self.list()?
            .iter()
            .map(|id| {
                resolve_pool(id, pools, ipv4).map_err(|e| self.refusal(ErrorCode::InvalidValue, e))
            })
            .collect()
    }

    /// The annotation's JSON list.
    pub fn list(&self) -> Result<Vec<String>, ServiceError> {
        json_list(&self.value).map_err(|e| self.not_json(e))
    }

    /// The addresses of an `ipAddrs` annotation: at least one, at most
    /// one of each family (validateAndExtractIPs, in its words).
    pub fn addresses(&self) -> Result<Vec<IpAddr>, ServiceError> {
        let texts = self.list()?;
        if texts.is_empty() {
            return Err(self.refusal(
                ErrorCode::MissingValue,
                format!("annotation {:?} specified but empty", self.key),
            ));
        }
        let mut addresses: Vec<IpAddr> = Vec::new();
        for text in texts {
            let address: IpAddr = text.parse().map_err(|_| {
                self.refusal(
                    ErrorCode::InvalidValue,
                    format!("invalid IP format: {text}"),
                )
            })?;
            if addresses.iter().any(|a| a.is_ipv4() == address.is_ipv4()) {
                let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(self.refusal(
                    ErrorCode::InvalidValue,
                    format!(
                        "cannot have more than one {family} address for {:?} annotation",
                        self.key
                    ),
                ));
            }
            addresses.push(address);
        }
        Ok(addresses)
    }

    /// The families of an `ipFamilies` annotation (k8s.go 270-297:
    /// `IPv4` and `IPv6`, in any order, repeats allowed; any other word is
    /// "error parsing ipFamilies: <the annotation>"), at least one.
    pub fn families(&self) -> Result<Families, ServiceError> {
        let mut families = Families {
            ipv4: false,
            ipv6: false,
        };
        for word in self.list()? {
            match word.as_str() {
                "IPv4" => families.ipv4 = true,
                "IPv6" => families.ipv6 = true,
                _ => {
                    return Err(self.refusal(
                        ErrorCode::InvalidValue,
                        format!("error parsing ipFamilies: {}", self.value),
                    ))
                }
            }
        }
        if !(families.ipv4 || families.ipv6) {
            return Err(self.refusal(
                ErrorCode::MissingValue,
                format!(
                    "annotation {:?} names no family: nothing to assign",
                    self.key
                ),
            ));
        }
        Ok(families)
    }

    // Calico's parseIPAddrs words.
    fn not_json(&self, error: serde_json::Error) -> ServiceError {
        self.refusal(
            ErrorCode::InvalidValue,
            format!("failed to parse '{}' as JSON: {error}", self.value),
        )
    }
}

/// The families an `ipFamilies` annotation asks an address of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// One IPv4 address.
    pub ipv4: bool,
    /// One IPv6 address.
    pub ipv6: bool,
}

/// What a pod's and its namespace's annotations ask of an assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wishes {
    /// The IPv4 pools, from the pod, else the namespace.
    pub ipv4_pools: Option<Found>,
    /// The IPv6 pools, from the pod, else the namespace.
    pub ipv6_pools: Option<Found>,
    /// The pod's own addresses.
    pub ip_addrs: Option<Found>,
    /// The families to assign, from the pod, else the namespace.
    pub ip_families: Option<Found>,
}

impl Wishes {
    /// Chooses, as CmdAddK8s does, between the pod's annotations and its
    /// namespace's; an empty value counts as none (`len(v4poolpod) != 0`).
    pub fn of(namespace: &str, pod: &str, read: &PodAnnotations) -> Wishes {
        let on_pod = |key: &'static str| {
            read.pod
                .get(key)
                .filter(|v| !v.is_empty())
                .map(|value| Found {
                    key,
                    value: value.clone(),
                    on: format!("pod {namespace}/{pod}"),
                })
        };
        let on_namespace = |key: &'static str| {
            read.namespace
                .get(key)
                .filter(|v| !v.is_empty())
                .map(|value| Found {
                    key,
                    value: value.clone(),
                    on: format!("namespace {namespace}"),
                })
        };
        Wishes {
            ipv4_pools: on_pod(IPV4_POOLS).or_else(|| on_namespace(IPV4_POOLS)),
            ipv6_pools: on_pod(IPV6_POOLS).or_else(|| on_namespace(IPV6_POOLS)),
            ip_addrs: on_pod(IP_ADDRS),
            ip_families: on_pod(IP_FAMILIES).or_else(|| on_namespace(IP_FAMILIES)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pod: &[(&str, &str)], namespace: &[(&str, &str)]) -> PodAnnotations {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        PodAnnotations {
            namespace_labels: BTreeMap::new(),
            namespace: map(namespace),
            pod: map(pod),
        }
    }

    #[test]
    fn the_pods_pools_win_per_family_and_ip_addrs_is_the_pods_alone() {
        let wishes = Wishes::of(
            "ns",
            "p",
            &read(
                &[(IPV4_POOLS, r#"["a"]"#), (IPV6_POOLS, "")],
                &[
                    (IPV4_POOLS, r#"["b"]"#),
                    (IPV6_POOLS, r#"["c"]"#),
                    (IP_ADDRS, r#"["10.0.0.1"]"#),
                ],
            ),
        );
        let v4 = wishes.ipv4_pools.unwrap();
        assert_eq!(
            (v4.value.as_str(), v4.on.as_str()),
            (r#"["a"]"#, "pod ns/p")
        );
        let v6 = wishes.ipv6_pools.unwrap();
        assert_eq!(
            (v6.value.as_str(), v6.on.as_str()),
            (r#"["c"]"#, "namespace ns")
        );
        assert_eq!(wishes.ip_addrs, None);
    }

    #[test]
    fn pools_are_cidrs_or_names_of_the_annotations_family() {
        let pools = BTreeMap::from([
            ("blue".to_string(), "10.1.0.0/16".parse().unwrap()),
            ("six".to_string(), "fd00::/64".parse().unwrap()),
        ]);
        let found = |value: &str| Found {
            key: IPV4_POOLS,
            value: value.to_string(),
            on: "pod ns/p".to_string(),
        };
        assert_eq!(
            found(r#"["blue", "10.2.0.7/16"]"#)
                .pools(&pools, true)
                .unwrap(),
            [
                "10.1.0.0/16".parse::<IpNet>().unwrap(),
                "10.2.0.0/16".parse().unwrap()
            ]
        );
        for (value, words) in [
            ("blue", "failed to parse 'blue' as JSON"),
            (r#"["red"]"#, r#"error parsing pool "red""#),
            (r#"["six"]"#, "fd00::/64 isn't a IPv4 pool"),
        ] {
            let refused = found(value).pools(&pools, true).unwrap_err().to_string();
            assert!(
                refused.starts_with(&format!(
                    "pod ns/p annotation \"cni.projectcalico.org/ipv4pools\" = {value}: {words}"
                )),
                "{refused}"
            );
        }
    }

    #[test]
    fn ip_addrs_hold_one_address_of_each_family_at_most() {
        let found = |value: &str| Found {
            key: IP_ADDRS,
            value: value.to_string(),
            on: "pod ns/p".to_string(),
        };
        assert_eq!(
            found(r#"["10.0.0.1", "fd00::1"]"#).addresses().unwrap(),
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        for (value, words) in [
            (
                "[]",
                r#"annotation "cni.projectcalico.org/ipAddrs" specified but empty"#,
            ),
            (r#"["ten"]"#, "invalid IP format: ten"),
            (
                r#"["10.0.0.1", "10.0.0.2"]"#,
                r#"cannot have more than one IPv4 address for "cni.projectcalico.org/ipAddrs" annotation"#,
            ),
        ] {
            let refused = found(value).addresses().unwrap_err().to_string();
            assert!(refused.ends_with(words), "{refused}");
        }
    }

    #[test]
    fn ip_families_name_ipv4_and_ipv6_and_the_pods_win() {
        let wishes = Wishes::of(
            "ns",
            "p",
            &read(&[(IP_FAMILIES, "")], &[(IP_FAMILIES, r#"["IPv6"]"#)]),
        );
        let on_namespace = wishes.ip_families.unwrap();
        assert_eq!(
            on_namespace.on, "namespace ns",
            "an empty pod value is none"
        );
        let wishes = Wishes::of(
            "ns",
            "p",
            &read(
                &[(IP_FAMILIES, r#"["IPv4"]"#)],
                &[(IP_FAMILIES, r#"["IPv6"]"#)],
            ),
        );
        assert_eq!(wishes.ip_families.unwrap().on, "pod ns/p");
        let found = |value: &str| Found {
            key: IP_FAMILIES,
            value: value.to_string(),
            on: "pod ns/p".to_string(),
        };
        for (value, ipv4, ipv6) in [
            (r#"["IPv4"]"#, true, false),
            (r#"["IPv6"]"#, false, true),
            (r#"["IPv6", "IPv4", "IPv6"]"#, true, true),
        ] {
            assert_eq!(
                found(value).families().unwrap(),
                Families { ipv4, ipv6 },
                "{value}"
            );
        }
        for (value, words) in [
            ("IPv6", "failed to parse 'IPv6' as JSON"),
            (r#"["ipv6"]"#, r#"error parsing ipFamilies: ["ipv6"]"#),
            (
                "[]",
                r#"annotation "cni.projectcalico.org/ipFamilies" names no family"#,
            ),
        ] {
            let refused = found(value).families().unwrap_err().to_string();
            assert!(
                refused.starts_with(&format!(
                    "pod ns/p annotation \"cni.projectcalico.org/ipFamilies\" = {value}: {words}"
                )),
                "{refused}"
            );
        }
    }
}
