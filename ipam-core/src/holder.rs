//! What an allocation's attributes mean: who holds the address. Calico
//! records the holder as free-form strings beside the handle (`handle_id`,
//! and `secondary`: `node`, `namespace`, `pod`, `type`, ...); this module is
//! the one place that reads them, so that the garbage collector, `ipam
//! check`, usage and metrics all see the same holder.
//!
//! The rules, decided once, as Calico's kube-controllers reads attributes
//! (kube-controllers/pkg/controllers/node/ipam_allocation.go and ipam.go,
//! v3.32):
//! - An empty value is an absent one. Go reads a missing map key as "", and
//!   kube-controllers never tells the two apart: `node()` answers "" for
//!   both, `isPodIP` asks `ns != "" && pod != ""`, and an allocation whose
//!   node is "" is tracked under no node (`assignAllocation`: `if a.node()
//!   != ""`) and counted as `unknown_node` in metrics (`updateMetrics`,
//!   `incrementReclamationMetric`). calicoctl's `ipam show --show-borrowed`
//!   alone treats a present but empty `node` as a node called "" (show.go,
//!   getBorrowedIPs); here it is unknown there too.
//! - The Windows-reserved handle ([`is_windows_reserved`], compared without
//!   case as ipam_block.go's `empty` does) comes first: such an
//!   address is reserved whatever its attributes say (`isWindowsReserved`
//!   is checked before anything else in `checkAllocations`).
//! - A `type` naming a node tunnel address (`isTunnelAddress`: IPIP, VXLAN,
//!   VXLANv6, WireGuard, WireGuardv6; libcalico-go ipam.go `AttributeType*`)
//!   comes next, before pod attributes (`allocationIsValid` checks it
//!   first).
//! - A pod's address names both a `namespace` and a `pod` (`isPodIP`): a pod
//!   without a namespace is not a pod's, and is not guessed at.
//! - A Service's LoadBalancer address names a `namespace` and a `service`
//!   (kube-controllers/pkg/controllers/loadbalancer/loadbalancer_controller.go,
//!   handleBlockUpdate: an allocation with both is the Service's).
//! - Anything else names at most a node.
//!
//! A released address (IP cooldown) is held by nobody: Calico's cooldown
//! entry keeps no owner (ipam_block.go, addCooldownAttribute).

use crate::block::{is_windows_reserved, Attribute};

/// The attribute naming the node that asked for the address.
pub const NODE: &str = "node";
/// The attribute naming the pod's namespace.
pub const NAMESPACE: &str = "namespace";
/// The attribute naming the pod.
pub const POD: &str = "pod";
/// The attribute naming what a non-pod address is for (a tunnel's kind).
pub const TYPE: &str = "type";
/// The attribute naming the Service of a LoadBalancer address
/// (libcalico-go model/block.go, IPAMBlockAttributeService).
pub const SERVICE: &str = "service";
/// The attribute recording when a LoadBalancer address was assigned
/// (model/block.go, IPAMBlockAttributeTimestamp).
pub const TIMESTAMP: &str = "timestamp";
/// The `type` a LoadBalancer address records: the Service's `spec.type`.
pub const LOAD_BALANCER_TYPE: &str = "LoadBalancer";
/// The attribute naming a KubeVirt VM instance whose pod holds the address
/// (libcalico-go model/block.go, IPAMBlockAttributeVMIName).
pub const VMI_NAME: &str = "vmi-name";

/// A pod by namespace and name, as allocation attributes record it
/// (`namespace`, `pod`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

/// A Service by namespace and name, as a LoadBalancer address's attributes
/// record it (`namespace`, `service`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

/// The kinds of node tunnel address (libcalico-go ipam.go,
/// AttributeTypeIPIP, VXLAN, VXLANV6, Wireguard, WireguardV6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TunnelKind {
    /// `ipipTunnelAddress`
    Ipip,
    /// `vxlanTunnelAddress`
    Vxlan,
    /// `vxlanV6TunnelAddress`
    VxlanV6,
    /// `wireguardTunnelAddress`
    Wireguard,
    /// `wireguardV6TunnelAddress`
    WireguardV6,
}

impl TunnelKind {
    /// Every kind.
    pub const ALL: [TunnelKind; 5] = [
        TunnelKind::Ipip,
        TunnelKind::Vxlan,
        TunnelKind::VxlanV6,
        TunnelKind::Wireguard,
        TunnelKind::WireguardV6,
    ];

    /// The `type` attribute value, as Calico writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipipTunnelAddress",
            TunnelKind::Vxlan => "vxlanTunnelAddress",
            TunnelKind::VxlanV6 => "vxlanV6TunnelAddress",
            TunnelKind::Wireguard => "wireguardTunnelAddress",
            TunnelKind::WireguardV6 => "wireguardV6TunnelAddress",
        }
    }

    /// The kind a `type` attribute names, matched exactly as Calico does.
    pub fn parse(value: &str) -> Option<TunnelKind> {
        TunnelKind::ALL.into_iter().find(|k| k.as_str() == value)
    }
}

/// Who holds an allocation, read from its handle and attributes by the
/// rules in the module documentation. Every name is non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    /// Reserved by a Windows node: never a leak, and no handle object.
    WindowsReserved {
        /// The `node` attribute, if one was written anyway.
        node: Option<&'a str>,
    },
    /// A node's tunnel address: valid while its node exists.
    Tunnel {
        /// Which tunnel.
        kind: TunnelKind,
        /// Its node; without one it cannot be judged.
        node: Option<&'a str>,
    },
    /// A pod's address.
    Pod {
        /// The pod's namespace.
        namespace: &'a str,
        /// The pod's name.
        pod: &'a str,
        /// The node that asked for the address.
        node: Option<&'a str>,
        /// The KubeVirt VM instance the pod runs, when the address is to
        /// outlive the pod (Calico's CNI plugin sets `vmi-name` beside
        /// `pod`).
        vmi: Option<&'a str>,
    },
    /// A Service's LoadBalancer address.
    Service {
        /// The Service's namespace.
        namespace: &'a str,
        /// The Service's name.
        service: &'a str,
    },
    /// Something on a node that is neither a pod nor a tunnel.
    Node {
        /// The node.
        node: &'a str,
        /// The `type` attribute, if any (not a tunnel kind).
        kind: Option<&'a str>,
    },
    /// Nothing says who: no node, no pod, no tunnel (an allocation from
    /// before Calico wrote attributes, or a released address).
    Nobody,
}

impl<'a> Holder<'a> {
    /// The holder of an allocation.
    pub fn of(attribute: &'a Attribute) -> Holder<'a> {
        if attribute.is_released() {
            return Holder::Nobody;
        }
        Holder::read(attribute.handle(), |key| attribute.secondary().get(key))
    }

    /// The holder named by a handle and attributes looked up by key, for
    /// callers that hold allocations as a map (ipamctl through the API).
    pub fn read(handle: Option<&'a str>, attribute: impl Fn(&str) -> Option<&'a str>) -> Self {
        let get = |key: &str| attribute(key).filter(|value| !value.is_empty());
        let node = get(NODE);
        if handle.is_some_and(is_windows_reserved) {
            return Holder::WindowsReserved { node };
        }
        let kind = get(TYPE);
        if let Some(kind) = kind.and_then(TunnelKind::parse) {
            return Holder::Tunnel { kind, node };
        }
        if let (Some(namespace), Some(pod)) = (get(NAMESPACE), get(POD)) {
            return Holder::Pod {
                namespace,
                pod,
                node,
                vmi: get(VMI_NAME),
            };
        }
        if let (Some(namespace), Some(service)) = (get(NAMESPACE), get(SERVICE)) {
            return Holder::Service { namespace, service };
        }
        match node {
            Some(node) => Holder::Node { node, kind },
            None => Holder::Nobody,
        }
    }

    /// The node that holds or asked for the address, if known.
    pub fn node(&self) -> Option<&'a str> {
        match *self {
            Holder::WindowsReserved { node }
            | Holder::Tunnel { node, .. }
            | Holder::Pod { node, .. } => node,
            Holder::Node { node, .. } => Some(node),
            Holder::Service { .. } | Holder::Nobody => None,
        }
    }

    /// The Service, for a LoadBalancer address.
    pub fn service(&self) -> Option<ServiceRef> {
        match *self {
            Holder::Service { namespace, service } => Some(ServiceRef {
                namespace: namespace.to_string(),
                name: service.to_string(),
            }),
            _ => None,
        }
    }

    /// The pod, for a pod's address.
    pub fn pod(&self) -> Option<PodRef> {
        match *self {
            Holder::Pod { namespace, pod, .. } => Some(PodRef {
                namespace: namespace.to_string(),
                name: pod.to_string(),
            }),
            _ => None,
        }
    }

    /// Whether the address is reserved by a Windows node.
    pub fn is_windows_reserved(&self) -> bool {
        matches!(self, Holder::WindowsReserved { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{AttributeParts, WINDOWS_RESERVED_HANDLE};
    use crate::labels::Labels;

    fn attribute(handle: Option<&str>, pairs: &[(&str, &str)]) -> Attribute {
        AttributeParts {
            handle_id: handle.map(str::to_string),
            secondary: pairs.iter().copied().collect::<Labels>(),
            ..AttributeParts::default()
        }
        .into()
    }

    /// The holder of an allocation with `handle` and `pairs`, read through
    /// [`Holder::of`] and checked against [`Holder::read`] over the pairs.
    fn holder_of(
        handle: Option<&'static str>,
        pairs: &[(&'static str, &'static str)],
    ) -> Holder<'static> {
        let read = Holder::read(handle, |key| {
            pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        });
        assert_eq!(Holder::of(&attribute(handle, pairs)), read);
        read
    }

    #[test]
    fn an_empty_node_is_no_node() {
        assert_eq!(holder_of(Some("h"), &[("node", "")]), Holder::Nobody);
        assert_eq!(
            holder_of(Some("h"), &[("node", ""), ("type", "vxlanTunnelAddress")]),
            Holder::Tunnel {
                kind: TunnelKind::Vxlan,
                node: None
            }
        );
        let pod = holder_of(
            Some("h"),
            &[("namespace", "ns"), ("pod", "p"), ("node", "")],
        );
        assert_eq!(pod.node(), None);
        assert_eq!(pod.pod().unwrap().name, "p");
    }

    #[test]
    fn a_load_balancer_address_names_its_service() {
        let holder = holder_of(
            Some("lb-x"),
            &[
                ("service", "web"),
                ("namespace", "ns"),
                ("type", "LoadBalancer"),
                ("timestamp", "2025-01-01 00:00:00 +0000 UTC"),
            ],
        );
        assert_eq!(
            holder,
            Holder::Service {
                namespace: "ns",
                service: "web"
            }
        );
        assert_eq!(holder.service().unwrap().name, "web");
        assert_eq!(holder.node(), None);
        // Without its namespace it is nobody's, as the controller skips it.
        assert_eq!(
            holder_of(Some("lb-x"), &[("service", "web")]),
            Holder::Nobody
        );
    }

    #[test]
    fn an_empty_pod_or_namespace_is_not_a_pod() {
        for pairs in [
            &[("namespace", "ns"), ("pod", ""), ("node", "n1")][..],
            &[("namespace", ""), ("pod", "p"), ("node", "n1")][..],
        ] {
            assert_eq!(
                holder_of(Some("h"), pairs),
                Holder::Node {
                    node: "n1",
                    kind: None
                }
            );
        }
    }

    #[test]
    fn a_pod_without_a_namespace_is_not_guessed_at() {
        let holder = holder_of(Some("h"), &[("pod", "p"), ("node", "n1")]);
        assert_eq!(
            holder,
            Holder::Node {
                node: "n1",
                kind: None
            }
        );
        assert_eq!(holder.pod(), None);
        assert_eq!(holder_of(Some("h"), &[("pod", "p")]), Holder::Nobody);
    }

    #[test]
    fn a_pod_names_namespace_pod_node_and_its_vm() {
        let holder = holder_of(
            Some("h"),
            &[
                ("namespace", "ns"),
                ("pod", "virt-launcher-x"),
                ("node", "n1"),
                ("vmi-name", "vm1"),
            ],
        );
        assert_eq!(
            holder,
            Holder::Pod {
                namespace: "ns",
                pod: "virt-launcher-x",
                node: Some("n1"),
                vmi: Some("vm1")
            }
        );
        assert_eq!(
            holder.pod(),
            Some(PodRef {
                namespace: "ns".into(),
                name: "virt-launcher-x".into()
            })
        );
    }

    #[test]
    fn every_tunnel_type_is_a_tunnel_and_comes_before_pod_attributes() {
        for kind in TunnelKind::ALL {
            assert_eq!(TunnelKind::parse(kind.as_str()), Some(kind));
            let holder = holder_of(
                Some("h"),
                &[
                    ("type", kind.as_str()),
                    ("node", "n1"),
                    ("namespace", "ns"),
                    ("pod", "p"),
                ],
            );
            assert_eq!(
                holder,
                Holder::Tunnel {
                    kind,
                    node: Some("n1")
                }
            );
        }
        // Calico compares the type exactly.
        assert_eq!(TunnelKind::parse("IPIPTunnelAddress"), None);
        assert_eq!(
            holder_of(Some("h"), &[("type", "loadBalancer"), ("node", "n1")]),
            Holder::Node {
                node: "n1",
                kind: Some("loadBalancer")
            }
        );
    }

    #[test]
    fn the_windows_handle_comes_first_in_any_case() {
        for handle in [WINDOWS_RESERVED_HANDLE, "Windows-Reserved-IPAM-Handle"] {
            let holder = holder_of(
                Some(handle),
                &[("namespace", "ns"), ("pod", "p"), ("node", "n1")],
            );
            assert_eq!(holder, Holder::WindowsReserved { node: Some("n1") });
            assert!(holder.is_windows_reserved());
            assert_eq!(holder.pod(), None);
        }
        assert!(!holder_of(Some("windows"), &[]).is_windows_reserved());
    }

    #[test]
    fn released_addresses_and_bare_allocations_are_nobodys() {
        let released: Attribute = AttributeParts {
            released_at: Some(1_700_000_000),
            ..attribute(Some("h"), &[("node", "n1")]).to_parts()
        }
        .into();
        assert_eq!(Holder::of(&released), Holder::Nobody);
        assert_eq!(holder_of(None, &[]), Holder::Nobody);
        // A handle-less allocation still says where it is.
        assert_eq!(holder_of(None, &[("node", "n1")]).node(), Some("n1"));
    }

    #[test]
    fn read_from_a_map_agrees_with_of() {
        let pairs = [("namespace", "ns"), ("pod", ""), ("node", "n1")];
        let map: std::collections::BTreeMap<&str, &str> = pairs.into_iter().collect();
        let read = Holder::read(Some("h"), |k| map.get(k).copied());
        assert_eq!(read, holder_of(Some("h"), &pairs));
    }
}
