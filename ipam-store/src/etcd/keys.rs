//! Calico's etcd v3 key layout: where each object lives, which prefix a
//! list reads, and how a key read back from a list names its object.
//!
//! Every path here is the one libcalico-go v3.32.1 builds, so that etcd
//! written by Calico reads as ours and the other way round. Paths are built
//! only from parsed keys; a name that would make a path ambiguous (one with
//! a `/`, or empty) is refused before anything is sent.

use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::{AffinityKey, BlockCidr, IpVersion};

use crate::error::StoreError;
use crate::model::{Key, Kind, ListQuery};

/// Blocks: `/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26`
/// (libcalico-go/lib/backend/model/block.go, BlockKey.defaultPath and
/// BlockListOptions.defaultPathRoot).
const BLOCKS: &str = "/calico/ipam/v2/assignment/";

/// Host affinities: `/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26`
/// (model/block_affinity.go, BlockAffinityKey.defaultPath; the `host`
/// segment is the affinity type, `host` when unset).
const HOST_AFFINITIES: &str = "/calico/ipam/v2/host/";

/// Virtual affinities, LoadBalancer addresses':
/// `/calico/ipam/v2/virtual/load-balancer/ipv4/block/172.16.0.0-26` (the
/// same path with the type segment `virtual`). Affinities here are keyed by
/// owner name and block, so the one virtual owner Calico has,
/// [`LOAD_BALANCER_OWNER`], is the one whose affinities live there.
pub(super) const VIRTUAL_AFFINITIES: &str = "/calico/ipam/v2/virtual/";

// Where an owner's affinities live.
fn affinities_of(node: &str) -> &'static str {
    if node == LOAD_BALANCER_OWNER {
        VIRTUAL_AFFINITIES
    } else {
        HOST_AFFINITIES
    }
}

/// Handles: `/calico/ipam/v2/handle/<handle id>`, the id verbatim
/// (model/ipam_handle.go, IPAMHandleKey.defaultPath).
const HANDLES: &str = "/calico/ipam/v2/handle/";

/// The IPAM config, one key (model/ipam_config.go, IPAMConfigKey).
pub(super) const CONFIG: &str = "/calico/ipam/v2/config";

/// Cluster-scoped v3 resources: `/calico/resources/v3/projectcalico.org/
/// <plural>/<name>` (model/resource.go, ResourceKey.defaultDeletePath, with
/// the plurals registered in its init).
const POOLS: &str = "/calico/resources/v3/projectcalico.org/ippools/";
const RESERVATIONS: &str = "/calico/resources/v3/projectcalico.org/ipreservations/";

/// What one list reads: every key under a prefix, or one exact key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Range {
    /// Keys starting with this.
    Prefix(String),
    /// This key alone.
    Exact(&'static str),
    /// Keys starting with any of these (host and virtual affinities).
    Prefixes(Vec<String>),
}

/// The etcd key of an object.
pub(super) fn path(key: &Key) -> Result<String, StoreError> {
    Ok(match key {
        Key::Pool(name) => format!("{POOLS}{}", segment(key, name)?),
        Key::Reservation(name) => format!("{RESERVATIONS}{}", segment(key, name)?),
        Key::Block(cidr) => format!(
            "{BLOCKS}ipv{}/block/{}",
            cidr.version().number(),
            cidr_segment(cidr)
        ),
        Key::Affinity(AffinityKey { node, cidr }) => format!(
            "{}{}/ipv{}/block/{}",
            affinities_of(node),
            segment(key, node)?,
            cidr.version().number(),
            cidr_segment(cidr)
        ),
        Key::Handle(id) => format!("{HANDLES}{}", segment(key, id)?),
        Key::Config => CONFIG.to_string(),
    })
}

/// What a list reads. A node's affinities end in `/` after the node name,
/// so that `node-1` does not also read `node-10`'s.
pub(super) fn range(query: &ListQuery) -> Result<Range, StoreError> {
    Ok(match query {
        ListQuery::All(Kind::Pool) => Range::Prefix(POOLS.to_string()),
        ListQuery::All(Kind::Reservation) => Range::Prefix(RESERVATIONS.to_string()),
        ListQuery::All(Kind::Block) => Range::Prefix(BLOCKS.to_string()),
        ListQuery::All(Kind::Affinity) => Range::Prefixes(vec![
            HOST_AFFINITIES.to_string(),
            VIRTUAL_AFFINITIES.to_string(),
        ]),
        ListQuery::All(Kind::Handle) => Range::Prefix(HANDLES.to_string()),
        ListQuery::All(Kind::Config) => Range::Exact(CONFIG),
        ListQuery::AffinitiesOf(node) => {
            if node.is_empty() || node.contains('/') {
                return Err(StoreError::Invalid {
                    what: format!("affinities of node {node:?}"),
                    message: "a node name in an etcd key must be non-empty and hold no '/'"
                        .to_string(),
                });
            }
            Range::Prefix(format!("{}{node}/", affinities_of(node)))
        }
    })
}

/// The object a key read back under `kind`'s prefix names, or `None` when
/// the key is not in Calico's layout for that kind. Calico's own lists skip
/// such keys (model/*.go, KeyFromDefaultPath returning nil), and so do we:
/// they may belong to something else sharing the prefix.
pub(super) fn parse(kind: Kind, path: &str) -> Option<Key> {
    match kind {
        Kind::Pool => name_under(POOLS, path).map(|name| Key::Pool(name.to_string())),
        Kind::Reservation => {
            name_under(RESERVATIONS, path).map(|name| Key::Reservation(name.to_string()))
        }
        Kind::Handle => name_under(HANDLES, path).map(|id| Key::Handle(id.to_string())),
        Kind::Config => (path == CONFIG).then_some(Key::Config),
        Kind::Block => {
            let (version, cidr) = path.strip_prefix(BLOCKS)?.split_once("/block/")?;
            block_cidr(version, cidr).map(Key::Block)
        }
        Kind::Affinity => {
            let (node, rest) = match path.strip_prefix(HOST_AFFINITIES) {
                Some(rest) => rest.split_once('/')?,
                // Calico's only virtual owner; any other under `virtual/`
                // is not one this layout can name.
                None => path
                    .strip_prefix(VIRTUAL_AFFINITIES)?
                    .split_once('/')
                    .filter(|(node, _)| *node == LOAD_BALANCER_OWNER)?,
            };
            let (version, cidr) = rest.split_once("/block/")?;
            let cidr = block_cidr(version, cidr)?;
            (!node.is_empty()).then(|| {
                Key::Affinity(AffinityKey {
                    node: node.to_string(),
                    cidr,
                })
            })
        }
    }
}

/// The CIDR as a key segment: Calico replaces the first `/` with `-`
/// (`10.0.0.0-26`, `fd00::40-122`), Go printing IPv6 the RFC 5952 way as
/// ipnet does.
fn cidr_segment(cidr: &BlockCidr) -> String {
    cidr.to_string().replacen('/', "-", 1)
}

/// Reads `ipv4` + `10.0.0.0-26` back, insisting that the version segment
/// agrees with the address (Calico's regex accepts any `ipv.`).
fn block_cidr(version: &str, segment: &str) -> Option<BlockCidr> {
    if segment.contains('/') {
        return None;
    }
    let cidr: BlockCidr = segment.replacen('-', "/", 1).parse().ok()?;
    let expected = match cidr.version() {
        IpVersion::V4 => "ipv4",
        IpVersion::V6 => "ipv6",
    };
    (version == expected).then_some(cidr)
}

fn name_under<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let name = path.strip_prefix(prefix)?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// A name as one path segment: Calico's key regexes match `[^/]+`, so a
/// name with a `/` (or none at all) could not be read back.
fn segment<'a>(key: &Key, name: &'a str) -> Result<&'a str, StoreError> {
    if name.is_empty() || name.contains('/') {
        return Err(StoreError::Invalid {
            what: key.to_string(),
            message: format!(
                "{name:?} cannot be part of an etcd key: it must be non-empty and hold no '/'"
            ),
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> BlockCidr {
        text.parse().unwrap()
    }

    fn affinity(node: &str, net: &str) -> Key {
        Key::Affinity(AffinityKey {
            node: node.to_string(),
            cidr: cidr(net),
        })
    }

    #[test]
    fn every_kind_lives_where_calico_puts_it() {
        let cases = [
            (
                Key::Block(cidr("10.0.0.64/26")),
                "/calico/ipam/v2/assignment/ipv4/block/10.0.0.64-26",
            ),
            (
                Key::Block(cidr("fd00:10::40/122")),
                "/calico/ipam/v2/assignment/ipv6/block/fd00:10::40-122",
            ),
            (
                affinity("node-1", "192.168.185.0/26"),
                "/calico/ipam/v2/host/node-1/ipv4/block/192.168.185.0-26",
            ),
            (
                affinity("node-1", "fd00:10::40/122"),
                "/calico/ipam/v2/host/node-1/ipv6/block/fd00:10::40-122",
            ),
            (
                Key::Handle("k8s-pod-network.ABC123".into()),
                "/calico/ipam/v2/handle/k8s-pod-network.ABC123",
            ),
            (Key::Config, "/calico/ipam/v2/config"),
            (
                Key::Pool("default-ipv4-ippool".into()),
                "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
            ),
            (
                Key::Reservation("gateways".into()),
                "/calico/resources/v3/projectcalico.org/ipreservations/gateways",
            ),
        ];
        for (key, expected) in cases {
            assert_eq!(path(&key).unwrap(), expected, "{key}");
            assert_eq!(parse(key.kind(), expected), Some(key.clone()), "{expected}");
        }
    }

    #[test]
    fn a_nodes_affinity_prefix_ends_at_the_node_name() {
        let Range::Prefix(prefix) = range(&ListQuery::AffinitiesOf("node-1".into())).unwrap()
        else {
            panic!("a node's affinities are a prefix");
        };
        assert_eq!(prefix, "/calico/ipam/v2/host/node-1/");
        let node_10 = path(&affinity("node-10", "10.0.2.0/26")).unwrap();
        assert!(!node_10.starts_with(&prefix));
        assert_eq!(
            range(&ListQuery::All(Kind::Config)).unwrap(),
            Range::Exact(CONFIG)
        );
        assert_eq!(
            range(&ListQuery::All(Kind::Block)).unwrap(),
            Range::Prefix("/calico/ipam/v2/assignment/".into()),
            "one read covers both families"
        );
    }

    #[test]
    fn keys_outside_calicos_layout_are_not_ours() {
        for (kind, path) in [
            (
                Kind::Block,
                "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0",
            ),
            (
                Kind::Block,
                "/calico/ipam/v2/assignment/ipv6/block/10.0.0.0-26",
            ),
            (
                Kind::Block,
                "/calico/ipam/v2/assignment/ipv4/block/10.0.0.1-26",
            ),
            (
                Kind::Affinity,
                "/calico/ipam/v2/host//ipv4/block/10.0.0.0-26",
            ),
            (
                Kind::Affinity,
                "/calico/ipam/v2/host/n/ipv4/block/10.0.0.0-26/x",
            ),
            (Kind::Handle, "/calico/ipam/v2/handle/a/b"),
            (
                Kind::Pool,
                "/calico/resources/v3/projectcalico.org/ippools/",
            ),
            (Kind::Config, "/calico/ipam/v2/configs"),
        ] {
            assert_eq!(parse(kind, path), None, "{path}");
        }
    }

    #[test]
    fn names_that_would_break_a_key_are_refused_by_name() {
        let err = path(&Key::Handle("a/b".into())).unwrap_err();
        assert!(
            matches!(&err, StoreError::Invalid { what, .. } if what == "IPAMHandle a/b"),
            "{err}"
        );
        assert!(path(&Key::Pool(String::new())).is_err());
        assert!(path(&affinity("x/y", "10.0.0.0/26")).is_err());
        assert!(range(&ListQuery::AffinitiesOf("x/y".into())).is_err());
    }
}
