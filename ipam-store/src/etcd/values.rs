//! Calico's etcd v3 value format: the JSON libcalico-go v3.32.1 stores for
//! each kind, and its conversion to and from ipam-core.
//!
//! The IPAM kinds are stored as libcalico-go's backend model structs
//! (libcalico-go/lib/backend/model), whose JSON differs from the
//! `crd.projectcalico.org/v1` specs the crds crate mirrors: snake_case
//! `affinity_claim_time`, `strict_affinity` and `auto_allocate_blocks`, a
//! boolean `deleted` on affinities, no node, CIDR or handle id inside
//! values whose key already names them. Pools and reservations are stored
//! as whole `projectcalico.org/v3` objects (kind, apiVersion, metadata,
//! spec), and their specs are the crds crate's, which mirror those v3 specs.
//!
//! Go's encoding/json ignores fields it does not know; we keep them instead
//! (every value type flattens an unknown-fields map), so that a field a
//! newer Calico writes survives our read-modify-write.

use std::time::{SystemTime, UNIX_EPOCH};

use crds::{AllocationAttribute, IPPool, IPPoolSpec, IPReservation, IPReservationSpec};
use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::unknown::UnknownFields;
use ipam_core::{
    Affinity, AffinityKey, AffinityState, Block, BlockSpec, Handle, HandleSpec, IpamConfig, Pool,
    ReservationSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::StoreError;
use crate::model::{Key, Kind, Reservation, Value};

/// The affinity type this backend stores: the `host` segment of an affinity
/// key (model/block_affinity.go). `virtual` affinities live under another
/// prefix that [`Key::Affinity`] cannot name.
const HOST: &str = "host";
/// The type of a virtual affinity, stored under `/calico/ipam/v2/virtual/`.
const VIRTUAL: &str = "virtual";

/// apiVersion of the v3 objects Calico's clientv3 stores
/// (clientv3/resources.go, resourceToKVPair).
const API_VERSION: &str = "projectcalico.org/v3";

/// model.AllocationBlock (libcalico-go/lib/backend/model/block.go).
#[derive(Serialize, Deserialize)]
struct BlockValue {
    cidr: String,
    /// No `omitempty` in Go: a block without affinity says `"affinity":null`.
    #[serde(default)]
    affinity: Option<String>,
    /// `*metav1.Time` with `omitempty`: RFC 3339 in UTC, absent when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    affinity_claim_time: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    allocations: Vec<Option<u32>>,
    #[serde(default, deserialize_with = "null_as_empty")]
    unallocated: Vec<u32>,
    /// A fresh block's attributes are a nil slice, which Go writes as
    /// `null` (lib/ipam/ipam_block.go, newBlock); we write `[]`, which Go
    /// reads the same.
    #[serde(default, deserialize_with = "null_as_empty")]
    attributes: Vec<AllocationAttribute>,
    #[serde(rename = "sequenceNumber", default)]
    sequence_number: u64,
    #[serde(
        rename = "sequenceNumberForAllocation",
        default,
        deserialize_with = "null_as_empty"
    )]
    sequence_number_for_allocation: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    deleted: bool,
    /// Deprecated spelling of the affinity, `omitempty`.
    #[serde(
        rename = "hostAffinity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    host_affinity: Option<String>,
    /// Not in Calico's etcd model (only the CRD has it, always false);
    /// written only when set, so that nothing is lost and Calico's own
    /// blocks stay byte-identical.
    #[serde(
        rename = "strictAffinity",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    strict_affinity: bool,
    #[serde(flatten)]
    unknown: UnknownFields,
}

/// model.BlockAffinity (model/block_affinity.go): the node, type and CIDR
/// are in the key. Neither field is `omitempty`.
#[derive(Serialize, Deserialize)]
struct AffinityValue {
    /// Empty in affinities older than the states, which count as confirmed.
    #[serde(default = "unset_state")]
    state: AffinityState,
    #[serde(default)]
    deleted: bool,
    #[serde(flatten)]
    unknown: UnknownFields,
}

fn unset_state() -> AffinityState {
    AffinityState::Unset
}

/// model.IPAMHandle (model/ipam_handle.go): the id is `json:"-"`, it lives
/// only in the key.
#[derive(Serialize, Deserialize)]
struct HandleValue {
    #[serde(default, deserialize_with = "null_as_empty")]
    block: std::collections::BTreeMap<String, u32>,
    #[serde(default)]
    deleted: bool,
    #[serde(flatten)]
    unknown: UnknownFields,
}

/// model.IPAMConfig (model/ipam_config.go): every field `omitempty`, so an
/// absent `auto_allocate_blocks` means false, as it does to Calico.
/// `kubeVirtVMAddressPersistence` rides in the unknown fields, where
/// ipam-core keeps it under the same name.
#[derive(Serialize, Deserialize)]
struct ConfigValue {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    strict_affinity: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    auto_allocate_blocks: bool,
    #[serde(rename = "maxBlocksPerHost", default, skip_serializing_if = "is_zero")]
    max_blocks_per_host: u32,
    /// A Go `int`: nothing stops calicoctl from storing a negative one on
    /// etcd, which Calico's garbageCollect reads as no cooldown.
    #[serde(
        rename = "ipCooldownSeconds",
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "negative_as_zero"
    )]
    ip_cooldown_seconds: u32,
    #[serde(flatten)]
    unknown: UnknownFields,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn negative_as_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n.max(0)).map_err(|_| {
        serde::de::Error::custom(format!("ipCooldownSeconds {n} is larger than any cooldown"))
    })
}

/// Go decodes `null` into a nil slice or map, which reads as empty.
fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Whether a kind is stored with v3 metadata that an update must carry
/// forward from the stored object (uid, creationTimestamp, labels, ...).
pub(super) fn has_metadata(kind: Kind) -> bool {
    matches!(kind, Kind::Pool | Kind::Reservation)
}

/// What Calico's clientv3 sets on a v3 object it creates
/// (clientv3/resources.go, Create: a random UID and the creation time).
#[derive(Debug, Clone)]
pub(super) struct Stamp {
    uid: String,
    creation_timestamp: String,
}

impl Stamp {
    /// A fresh version-4 UUID and the current time.
    pub(super) fn now() -> Stamp {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Stamp {
            uid: uuid_v4(fastrand::u128(..)),
            creation_timestamp: ipam_core::timestamp::format_rfc3339(
                i64::try_from(seconds).unwrap_or(i64::MAX),
            ),
        }
    }
}

/// RFC 4122 version 4 layout over random bits, as Kubernetes' uuid.NewUUID
/// prints it.
fn uuid_v4(random: u128) -> String {
    let bits = (random & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The bytes to store for `value` under `path`. `stored` is the value it
/// replaces; only pools and reservations read it (see [`has_metadata`]),
/// and one without it is new.
pub(super) fn encode(
    path: &str,
    value: &Value,
    stored: Option<&[u8]>,
) -> Result<Vec<u8>, StoreError> {
    encode_with(path, value, stored, Stamp::now)
}

fn encode_with(
    path: &str,
    value: &Value,
    stored: Option<&[u8]>,
    stamp: fn() -> Stamp,
) -> Result<Vec<u8>, StoreError> {
    let json = match value {
        Value::Block(block) => to_json(path, &block_value(block))?,
        Value::Affinity(affinity) => to_json(path, &affinity_value(path, affinity)?)?,
        Value::Handle(handle) => {
            let HandleSpec {
                handle_id: _,
                block,
                deleted,
                unknown,
            } = handle.to_spec();
            to_json(
                path,
                &HandleValue {
                    block,
                    deleted,
                    unknown,
                },
            )?
        }
        Value::Config(config) => {
            let IpamConfig {
                strict_affinity,
                auto_allocate_blocks,
                max_blocks_per_host,
                ip_cooldown_seconds,
                unknown,
            } = config.clone();
            to_json(
                path,
                &ConfigValue {
                    strict_affinity,
                    auto_allocate_blocks,
                    max_blocks_per_host,
                    ip_cooldown_seconds,
                    unknown,
                },
            )?
        }
        Value::Pool(pool) => {
            let spec = IPPool::from_core(pool, None).spec;
            let mut object = envelope(path, "IPPool", pool.name(), stored, stamp)?;
            object.insert("spec".to_string(), to_json(path, &spec)?);
            Json::Object(object)
        }
        Value::Reservation(Reservation { name, spec }) => {
            // The stored spec lets a rewrite keep its spelling of entries
            // (`10.0.0.1` rather than `10.0.0.1/32`).
            let previous = stored
                .and_then(|bytes| serde_json::from_slice::<Map<String, Json>>(bytes).ok())
                .and_then(|mut object| object.remove("spec"))
                .and_then(|spec| serde_json::from_value::<IPReservationSpec>(spec).ok())
                .map(|spec| IPReservation::new(name, spec));
            let spec = IPReservation::from_core(name, spec, previous.as_ref()).spec;
            let mut object = envelope(path, "IPReservation", name, stored, stamp)?;
            object.insert("spec".to_string(), to_json(path, &spec)?);
            Json::Object(object)
        }
    };
    serde_json::to_vec(&json).map_err(|e| invalid(path, format!("cannot encode: {e}")))
}

fn block_value(block: &Block) -> BlockValue {
    // Destructured so that a field added to BlockSpec fails to compile here
    // instead of being dropped.
    let BlockSpec {
        cidr,
        affinity,
        affinity_claim_time,
        allocations,
        unallocated,
        attributes,
        sequence_number,
        sequence_number_for_allocation,
        deleted,
        strict_affinity,
        host_affinity,
        unknown,
    } = block.to_spec();
    BlockValue {
        cidr,
        affinity,
        affinity_claim_time,
        allocations,
        unallocated,
        attributes: attributes
            .into_iter()
            .map(AllocationAttribute::from)
            .collect(),
        sequence_number,
        sequence_number_for_allocation,
        deleted,
        host_affinity,
        strict_affinity,
        unknown,
    }
}

fn affinity_value(path: &str, affinity: &Affinity) -> Result<AffinityValue, StoreError> {
    // The type is the key's segment (`host/` or `virtual/`), not the value:
    // an affinity must be of the type its key says.
    let wanted = if path.starts_with(super::keys::VIRTUAL_AFFINITIES) {
        VIRTUAL
    } else {
        HOST
    };
    let given = affinity.affinity_type.as_deref().unwrap_or(HOST);
    if given != wanted {
        return Err(invalid(
            path,
            format!(
                "affinity type {given:?}: this backend stores host affinities under \
                 /calico/ipam/v2/host/ and virtual ones only for {LOAD_BALANCER_OWNER} \
                 under /calico/ipam/v2/virtual/"
            ),
        ));
    }
    Ok(AffinityValue {
        state: affinity.state,
        deleted: affinity.deleted,
        unknown: affinity.unknown.clone(),
    })
}

/// The v3 object around a spec: the stored one's kind, apiVersion, metadata
/// and anything else (an IPPool's status), or new metadata for a create;
/// resourceVersion and selfLink cleared, as clientv3 clears them before it
/// stores an object (resources.go, resourceToKVPair).
fn envelope(
    path: &str,
    kind: &str,
    name: &str,
    stored: Option<&[u8]>,
    stamp: fn() -> Stamp,
) -> Result<Map<String, Json>, StoreError> {
    let mut object = match stored {
        Some(bytes) => v3_object(path, kind, bytes)?,
        None => {
            let Stamp {
                uid,
                creation_timestamp,
            } = stamp();
            let mut metadata = Map::new();
            metadata.insert("uid".to_string(), Json::String(uid));
            metadata.insert(
                "creationTimestamp".to_string(),
                Json::String(creation_timestamp),
            );
            Map::from_iter([("metadata".to_string(), Json::Object(metadata))])
        }
    };
    object.remove("spec");
    object.insert("kind".to_string(), Json::String(kind.to_string()));
    object.insert(
        "apiVersion".to_string(),
        Json::String(API_VERSION.to_string()),
    );
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Json::Object(Map::new()));
    let Json::Object(metadata) = metadata else {
        return Err(invalid(
            path,
            "stored metadata is not an object".to_string(),
        ));
    };
    metadata.insert("name".to_string(), Json::String(name.to_string()));
    metadata.remove("resourceVersion");
    metadata.remove("selfLink");
    Ok(object)
}

/// A stored v3 object, checked to be of `kind` when it says.
fn v3_object(path: &str, kind: &str, bytes: &[u8]) -> Result<Map<String, Json>, StoreError> {
    let object: Map<String, Json> = from_json(path, bytes)?;
    match object.get("kind") {
        None => Ok(object),
        Some(Json::String(found)) if found == kind => Ok(object),
        Some(found) => Err(invalid(path, format!("kind is {found}, expected {kind:?}"))),
    }
}

/// The object stored under `key` (whose etcd key is `path`).
pub(super) fn decode(path: &str, key: &Key, bytes: &[u8]) -> Result<Value, StoreError> {
    let refused = |e: &dyn std::fmt::Display| invalid(path, e.to_string());
    Ok(match key {
        Key::Block(cidr) => {
            let value: BlockValue = from_json(path, bytes)?;
            let block = Block::from_spec(block_spec(value)).map_err(|e| refused(&e))?;
            if block.cidr() != *cidr {
                return Err(invalid(
                    path,
                    format!("holds block {} instead", block.cidr()),
                ));
            }
            Value::Block(block)
        }
        Key::Affinity(AffinityKey { node, cidr }) => {
            // Calico once stored affinities with no value; it reads an empty
            // one as `{}` (model/block_affinity.go, parseValue).
            let bytes = if bytes.is_empty() { b"{}" } else { bytes };
            let AffinityValue {
                state,
                deleted,
                unknown,
            } = from_json(path, bytes)?;
            Value::Affinity(Affinity {
                node: node.clone(),
                cidr: *cidr,
                state,
                affinity_type: Some(
                    if path.starts_with(super::keys::VIRTUAL_AFFINITIES) {
                        VIRTUAL
                    } else {
                        HOST
                    }
                    .to_string(),
                ),
                deleted,
                unknown,
            })
        }
        Key::Handle(id) => {
            let HandleValue {
                block,
                deleted,
                unknown,
            } = from_json(path, bytes)?;
            let spec = HandleSpec {
                handle_id: id.clone(),
                block,
                deleted,
                unknown,
            };
            Value::Handle(Handle::from_spec(spec).map_err(|e| refused(&e))?)
        }
        Key::Config => {
            let ConfigValue {
                strict_affinity,
                auto_allocate_blocks,
                max_blocks_per_host,
                ip_cooldown_seconds,
                unknown,
            } = from_json(path, bytes)?;
            Value::Config(IpamConfig {
                strict_affinity,
                auto_allocate_blocks,
                max_blocks_per_host,
                ip_cooldown_seconds,
                unknown,
            })
        }
        Key::Pool(name) => {
            let spec: IPPoolSpec = v3_spec(path, "IPPool", bytes)?;
            let object = IPPool {
                metadata: named(name),
                spec,
            };
            Value::Pool(Pool::try_from(&object).map_err(|e| refused(&e))?)
        }
        Key::Reservation(name) => {
            let spec: IPReservationSpec = v3_spec(path, "IPReservation", bytes)?;
            let object = IPReservation {
                metadata: named(name),
                spec,
            };
            Value::Reservation(Reservation {
                name: name.clone(),
                spec: ReservationSpec::try_from(&object).map_err(|e| refused(&e))?,
            })
        }
    })
}

fn block_spec(value: BlockValue) -> BlockSpec {
    let BlockValue {
        cidr,
        affinity,
        affinity_claim_time,
        allocations,
        unallocated,
        attributes,
        sequence_number,
        sequence_number_for_allocation,
        deleted,
        host_affinity,
        strict_affinity,
        unknown,
    } = value;
    BlockSpec {
        cidr,
        affinity,
        affinity_claim_time,
        allocations,
        unallocated,
        attributes: attributes.into_iter().map(Into::into).collect(),
        sequence_number,
        sequence_number_for_allocation,
        deleted,
        strict_affinity,
        host_affinity,
        unknown,
    }
}

/// The spec of a stored v3 object. Its name is the key's: the crds
/// conversion only needs one to name the object in errors and the pool.
fn v3_spec<T: serde::de::DeserializeOwned>(
    path: &str,
    kind: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let mut object = v3_object(path, kind, bytes)?;
    let spec = object
        .remove("spec")
        .ok_or_else(|| invalid(path, format!("{kind} has no spec")))?;
    serde_json::from_value(spec).map_err(|e| invalid(path, format!("{kind} spec: {e}")))
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

fn from_json<T: serde::de::DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            path,
            format!(
                "undecodable value {:?}: {e}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        )
    })
}

fn to_json<T: Serialize>(path: &str, value: &T) -> Result<Json, StoreError> {
    serde_json::to_value(value).map_err(|e| invalid(path, format!("cannot encode: {e}")))
}

/// An error naming the etcd key at fault.
pub(super) fn invalid(path: &str, message: String) -> StoreError {
    StoreError::Invalid {
        what: format!("etcd key {path}"),
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ipam_core::block::BlockOwner;
    use ipam_core::unknown::UnknownValue;
    use serde_json::json;

    use super::*;
    use crate::etcd::keys;

    const BLOCK: &str = include_str!("../../testdata/etcd/block-192.168.185.0-26.json");
    const FRESH_BLOCK: &str = include_str!("../../testdata/etcd/block-fd00-10--40-122-fresh.json");
    const AFFINITY: &str = include_str!("../../testdata/etcd/affinity-confirmed.json");
    const HANDLE: &str = include_str!("../../testdata/etcd/handle-nginx.json");
    const CONFIG_DEFAULT: &str = include_str!("../../testdata/etcd/config-default.json");
    const CONFIG_STRICT: &str = include_str!("../../testdata/etcd/config-strict.json");
    const POOL: &str = include_str!("../../testdata/etcd/ippool-default-ipv4.json");
    const RESERVATION: &str = include_str!("../../testdata/etcd/ipreservation-gateways.json");

    fn fixed_stamp() -> Stamp {
        Stamp {
            uid: "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9".to_string(),
            creation_timestamp: "2026-11-23T00:00:00Z".to_string(),
        }
    }

    /// Reads `text` as stored under `key`, writes it back as an update
    /// would, and returns both.
    fn round_trip(key: &Key, text: &str) -> (Value, Json) {
        let path = keys::path(key).unwrap();
        let value = decode(&path, key, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let bytes = encode_with(&path, &value, Some(text.as_bytes()), fixed_stamp).unwrap();
        (value, serde_json::from_slice(&bytes).unwrap())
    }

    fn json(text: &str) -> Json {
        serde_json::from_str(text).unwrap()
    }

    fn cidr(text: &str) -> ipam_core::BlockCidr {
        text.parse().unwrap()
    }

    #[test]
    fn a_calico_block_reads_back_and_is_written_as_calico_wrote_it() {
        let key = Key::Block(cidr("192.168.185.0/26"));
        let (value, written) = round_trip(&key, BLOCK);
        let Value::Block(block) = value else {
            panic!("not a block")
        };
        assert_eq!(block.owner(), Some(&BlockOwner::Host("mac-k8s".into())));
        assert_eq!(block.claim_time(), Some("2022-07-23T12:04:44Z"));
        assert_eq!(block.allocated_count(), 8);
        assert_eq!(block.sequence_number(), 1_690_113_884_806_720_496);
        assert_eq!(written, json(BLOCK));
    }

    #[test]
    fn a_fresh_calico_block_with_null_attributes_reads_as_empty() {
        let key = Key::Block(cidr("fd00:10::40/122"));
        let (value, written) = round_trip(&key, FRESH_BLOCK);
        let Value::Block(block) = value else {
            panic!("not a block")
        };
        assert_eq!(block.allocated_count(), 0);
        assert_eq!(block.unallocated_len(), 64);
        // The one difference: Go's nil slice is `null`, our empty one `[]`;
        // Go reads both as no attributes.
        let mut expected = json(FRESH_BLOCK);
        expected["attributes"] = json!([]);
        assert_eq!(written, expected);
    }

    #[test]
    fn our_blocks_are_written_with_calicos_field_names_and_zero_values() {
        let mut block = Block::new(
            cidr("10.0.0.0/30"),
            Some(BlockOwner::Host("node-1".into())),
            Some("2026-11-23T00:00:00Z".into()),
            7,
        );
        block.auto_assign(
            1,
            "k8s-pod-network.aaaa",
            &BTreeMap::from([("node".to_string(), "node-1".to_string())]),
            &Default::default(),
        );
        let path = keys::path(&Key::Block(block.cidr())).unwrap();
        let bytes = encode(&path, &Value::Block(block), None).unwrap();
        assert_eq!(
            serde_json::from_slice::<Json>(&bytes).unwrap(),
            json!({
                "cidr": "10.0.0.0/30",
                "affinity": "host:node-1",
                "affinity_claim_time": "2026-11-23T00:00:00Z",
                "allocations": [0, null, null, null],
                "unallocated": [1, 2, 3],
                "attributes": [{"handle_id": "k8s-pod-network.aaaa", "secondary": {"node": "node-1"}}],
                "sequenceNumber": 7,
                "sequenceNumberForAllocation": {"0": 7},
                "deleted": false
            })
        );

        // No affinity is an explicit null, as Go writes a nil *string
        // without omitempty; no claim time is no field at all.
        let unowned = Block::new(cidr("10.0.0.4/30"), None, None, 1);
        let path = keys::path(&Key::Block(unowned.cidr())).unwrap();
        let written: Json =
            serde_json::from_slice(&encode(&path, &Value::Block(unowned), None).unwrap()).unwrap();
        assert_eq!(written["affinity"], Json::Null);
        assert!(written.get("affinity_claim_time").is_none());
        assert!(written.get("strictAffinity").is_none());
    }

    #[test]
    fn a_released_address_is_stored_with_calicos_releasedat() {
        let mut block = Block::new(cidr("10.0.0.0/30"), None, None, 7);
        block.auto_assign(
            1,
            "k8s-pod-network.aaaa",
            &BTreeMap::new(),
            &Default::default(),
        );
        block.release_by_handle("k8s-pod-network.aaaa", None, Some(1_782_900_000));
        let path = keys::path(&Key::Block(block.cidr())).unwrap();
        let bytes = encode(&path, &Value::Block(block.clone()), None).unwrap();
        let stored: Json = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            stored["attributes"],
            json!([{"releasedAt": "2026-07-01T10:00:00Z"}])
        );
        let key = Key::Block(block.cidr());
        assert_eq!(decode(&path, &key, &bytes).unwrap(), Value::Block(block));
    }

    #[test]
    fn the_cooldown_is_stored_as_calicos_ipcooldownseconds() {
        let config = IpamConfig {
            ip_cooldown_seconds: 90,
            ..IpamConfig::default()
        };
        let bytes = encode(keys::CONFIG, &Value::Config(config.clone()), None).unwrap();
        assert_eq!(
            serde_json::from_slice::<Json>(&bytes).unwrap(),
            json!({"auto_allocate_blocks": true, "ipCooldownSeconds": 90})
        );
        assert_eq!(
            decode(keys::CONFIG, &Key::Config, &bytes).unwrap(),
            Value::Config(config)
        );
        // A Go int calicoctl may have stored negative: no cooldown.
        let negative = br#"{"auto_allocate_blocks": true, "ipCooldownSeconds": -5}"#;
        let Value::Config(read) = decode(keys::CONFIG, &Key::Config, negative).unwrap() else {
            panic!("not a config")
        };
        assert_eq!(read.ip_cooldown_seconds, 0);
    }

    #[test]
    fn affinities_take_node_and_cidr_from_the_key_and_store_a_boolean_deleted() {
        let key = Key::Affinity(AffinityKey {
            node: "node-1".into(),
            cidr: cidr("10.0.0.64/26"),
        });
        let (value, written) = round_trip(&key, AFFINITY);
        assert_eq!(
            value,
            Value::Affinity(Affinity::new(
                "node-1",
                cidr("10.0.0.64/26"),
                AffinityState::Confirmed
            ))
        );
        assert_eq!(written, json(AFFINITY));

        let path = keys::path(&key).unwrap();
        let Value::Affinity(legacy) = decode(&path, &key, b"").unwrap() else {
            panic!("not an affinity")
        };
        assert_eq!(legacy.state, AffinityState::Unset);
        assert!(legacy.state.is_confirmed() && !legacy.deleted);
    }

    #[test]
    fn only_host_affinities_can_be_stored() {
        let mut affinity = Affinity::new("vm-1", cidr("10.0.0.0/26"), AffinityState::Pending);
        affinity.affinity_type = Some("virtual".into());
        let path = keys::path(&Key::Affinity(affinity.key())).unwrap();
        let err = encode(&path, &Value::Affinity(affinity), None).unwrap_err();
        assert!(err.to_string().contains(&path), "{err}");
        assert!(err.to_string().contains("virtual"), "{err}");
    }

    #[test]
    fn the_load_balancers_affinities_are_virtual_under_their_own_prefix() {
        let mut affinity = Affinity::new(
            LOAD_BALANCER_OWNER,
            cidr("172.16.0.0/26"),
            AffinityState::Confirmed,
        );
        affinity.affinity_type = Some("virtual".into());
        let key = Key::Affinity(affinity.key());
        let path = keys::path(&key).unwrap();
        assert_eq!(
            path,
            "/calico/ipam/v2/virtual/load-balancer/ipv4/block/172.16.0.0-26"
        );
        let bytes = encode(&path, &Value::Affinity(affinity.clone()), None).unwrap();
        assert_eq!(
            decode(&path, &key, &bytes).unwrap(),
            Value::Affinity(affinity.clone())
        );
        // Read back from a list, the key names the same affinity.
        assert_eq!(keys::parse(Kind::Affinity, &path), Some(key));
        // A host affinity cannot go under that prefix.
        affinity.affinity_type = Some("host".into());
        assert!(encode(&path, &Value::Affinity(affinity), None).is_err());
    }

    #[test]
    fn handles_keep_their_id_in_the_key_only() {
        let id = "k8s-pod-network.cb07c78e242382171ac035d9b888454f71bb393e788f7feaa7ee13d4ead5cb34";
        let key = Key::Handle(id.into());
        let (value, written) = round_trip(&key, HANDLE);
        let mut expected = Handle::new(id);
        expected.increment(cidr("192.168.185.0/26"), 1);
        assert_eq!(value, Value::Handle(expected));
        assert_eq!(written, json(HANDLE));
    }

    #[test]
    fn the_config_uses_calicos_etcd_spellings_and_omits_zero_values() {
        let (value, written) = round_trip(&Key::Config, CONFIG_DEFAULT);
        let Value::Config(config) = value else {
            panic!("not a config")
        };
        assert!(!config.strict_affinity && config.auto_allocate_blocks);
        assert_eq!(config.max_blocks_per_host, 0);
        assert_eq!(
            config.unknown["kubeVirtVMAddressPersistence"],
            UnknownValue::String("Enabled".into())
        );
        assert_eq!(written, json(CONFIG_DEFAULT));

        let (value, written) = round_trip(&Key::Config, CONFIG_STRICT);
        assert_eq!(
            value,
            Value::Config(IpamConfig {
                strict_affinity: true,
                max_blocks_per_host: 7,
                ..IpamConfig::default()
            })
        );
        assert_eq!(written, json(CONFIG_STRICT));

        // omitempty: a stored `{}` turns block claiming off, for Calico too.
        let Value::Config(empty) = decode(keys::CONFIG, &Key::Config, b"{}").unwrap() else {
            panic!("not a config")
        };
        assert!(!empty.auto_allocate_blocks && !empty.strict_affinity);
    }

    #[test]
    fn a_pool_rewrite_keeps_calicos_metadata() {
        let key = Key::Pool("default-ipv4-ippool".into());
        let (value, written) = round_trip(&key, POOL);
        let Value::Pool(pool) = value else {
            panic!("not a pool")
        };
        assert_eq!(pool.name(), "default-ipv4-ippool");
        assert_eq!(pool.block_size(), 26);
        assert_eq!(written, json(POOL));
    }

    #[test]
    fn a_new_pool_is_stamped_as_calicos_client_stamps_it() {
        let mut spec = ipam_core::PoolSpec::new("10.0.0.0/16".parse().unwrap());
        spec.node_selector = "all()".into();
        let pool = Pool::new("p", spec).unwrap();
        let path = keys::path(&Key::Pool("p".into())).unwrap();
        let bytes = encode_with(&path, &Value::Pool(pool), None, fixed_stamp).unwrap();
        assert_eq!(
            serde_json::from_slice::<Json>(&bytes).unwrap(),
            json!({
                "kind": "IPPool",
                "apiVersion": "projectcalico.org/v3",
                "metadata": {
                    "name": "p",
                    "uid": "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
                    "creationTimestamp": "2026-11-23T00:00:00Z"
                },
                "spec": {"cidr": "10.0.0.0/16", "nodeSelector": "all()"}
            })
        );
    }

    #[test]
    fn a_reservation_rewrite_keeps_labels_and_spelling_and_drops_the_resource_version() {
        let key = Key::Reservation("gateways".into());
        let mut stored = json(RESERVATION);
        stored["metadata"]["resourceVersion"] = json!("42");
        let (value, written) = round_trip(&key, &stored.to_string());
        let Value::Reservation(reservation) = value else {
            panic!("not a reservation")
        };
        assert_eq!(
            reservation.spec.reserved_cidrs,
            [
                "10.0.0.1/32".parse().unwrap(),
                "10.0.8.0/24".parse().unwrap()
            ]
        );
        assert_eq!(written, json(RESERVATION));
    }

    #[test]
    fn uuids_are_version_4() {
        let uid = uuid_v4(u128::MAX);
        assert_eq!(uid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid_v4(0), "00000000-0000-4000-8000-000000000000");
        assert_eq!(Stamp::now().uid.len(), 36);
    }

    #[test]
    fn undecodable_values_are_refused_naming_the_etcd_key() {
        let block = Key::Block(cidr("10.0.0.0/26"));
        let other_block = BLOCK.replace("192.168.185.0/26", "10.0.0.0/26");
        let cases: [(Key, &str, &str); 6] = [
            (block.clone(), "not json", "undecodable"),
            (block.clone(), BLOCK, "holds block 192.168.185.0/26"),
            (
                Key::Block(cidr("10.0.0.0/30")),
                &other_block.replace("10.0.0.0/26", "10.0.0.0/30"),
                "allocations",
            ),
            (
                Key::Handle("h".into()),
                r#"{"block":{"10.0.0.0/26":-1}}"#,
                "undecodable",
            ),
            (Key::Pool("p".into()), r#"{"kind":"IPPool"}"#, "no spec"),
            (
                Key::Pool("p".into()),
                r#"{"kind":"IPReservation","spec":{}}"#,
                "expected \"IPPool\"",
            ),
        ];
        for (key, text, problem) in cases {
            let path = keys::path(&key).unwrap();
            let err = decode(&path, &key, text.as_bytes()).unwrap_err();
            let StoreError::Invalid { what, message } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(what, &format!("etcd key {path}"));
            assert!(message.contains(problem), "{key}: {message}");
        }
    }
}
