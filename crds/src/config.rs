//! IPAMConfig: the cluster-wide IPAM settings, a singleton named `default`
//! (libcalico-go/lib/apis/internalapi/ipam_config.go, IPAMConfigSpec;
//! schema in crd.projectcalico.org_ipamconfigs.yaml). Calico's kind for the
//! `ipamconfigs` resource is `IPAMConfig`; its v3 API calls the same thing
//! IPAMConfiguration.

use ipam_core::config::IpamConfig;
use ipam_core::unknown::UnknownFields;
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::go;
use crate::metadata::object_meta;

/// The name of the only IPAMConfig Calico reads
/// (libcalico-go/lib/backend/model/ipam_config.go, IPAMConfigGlobalName).
pub const IPAM_CONFIG_NAME: &str = "default";

/// A field ipam-core keeps among its unknown fields, since it does not act
/// on it.
const KUBEVIRT_PERSISTENCE: &str = "kubeVirtVMAddressPersistence";

/// The spec of an IPAMConfig.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMConfig",
    plural = "ipamconfigs",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMConfigSpec {
    /// When true, a node never uses addresses from another node's block.
    pub strict_affinity: bool,
    /// When false, nodes never claim new blocks.
    pub auto_allocate_blocks: bool,
    /// Most blocks one host may hold; 0 (omitted) means Calico's default.
    #[serde(default, skip_serializing_if = "go::is_zero")]
    #[schemars(schema_with = "max_blocks_per_host")]
    pub max_blocks_per_host: u32,
    /// Whether KubeVirt VMs keep their addresses (`Enabled`, `Disabled`).
    #[serde(
        rename = "kubeVirtVMAddressPersistence",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "kubevirt_persistence")]
    pub kube_virt_vm_address_persistence: Option<String>,
    /// Seconds a released address stays out of use; 0 (omitted) frees it
    /// at once (Calico's IPCooldownSeconds, `omitempty`).
    #[serde(default, skip_serializing_if = "go::is_zero")]
    #[schemars(schema_with = "ip_cooldown_seconds")]
    pub ip_cooldown_seconds: u32,
    /// Fields a newer Calico writes, kept verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

// A Go int bounded to int32 by kubebuilder markers (ipam_config.go).
fn max_blocks_per_host(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 0, "maximum": 2147483647 })
}

// A Go int with kubebuilder Minimum 0 and Maximum 1200 (ipam_config.go,
// IPCooldownSeconds).
fn ip_cooldown_seconds(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "minimum": 0,
        "maximum": ipam_core::cooldown::MAX_IP_COOLDOWN_SECONDS,
    })
}

fn kubevirt_persistence(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["Enabled", "Disabled"] })
}

impl From<IPAMConfigSpec> for IpamConfig {
    fn from(spec: IPAMConfigSpec) -> IpamConfig {
        let IPAMConfigSpec {
            strict_affinity,
            auto_allocate_blocks,
            max_blocks_per_host,
            kube_virt_vm_address_persistence,
            ip_cooldown_seconds,
            mut unknown,
        } = spec;
        go::put_string(
            &mut unknown,
            KUBEVIRT_PERSISTENCE,
            kube_virt_vm_address_persistence,
        );
        IpamConfig {
            strict_affinity,
            auto_allocate_blocks,
            max_blocks_per_host,
            ip_cooldown_seconds,
            unknown,
        }
    }
}

impl From<IpamConfig> for IPAMConfigSpec {
    fn from(config: IpamConfig) -> IPAMConfigSpec {
        let IpamConfig {
            strict_affinity,
            auto_allocate_blocks,
            max_blocks_per_host,
            ip_cooldown_seconds,
            mut unknown,
        } = config;
        let kube_virt_vm_address_persistence = go::take_string(&mut unknown, KUBEVIRT_PERSISTENCE);
        IPAMConfigSpec {
            strict_affinity,
            auto_allocate_blocks,
            max_blocks_per_host,
            kube_virt_vm_address_persistence,
            ip_cooldown_seconds,
            unknown,
        }
    }
}

impl From<&IPAMConfig> for IpamConfig {
    fn from(object: &IPAMConfig) -> IpamConfig {
        object.spec.clone().into()
    }
}

impl IPAMConfig {
    /// The `default` object to write for `config`, with `previous`'s
    /// metadata when this replaces it.
    pub fn from_core(config: &IpamConfig, previous: Option<&IPAMConfig>) -> IPAMConfig {
        IPAMConfig {
            metadata: object_meta(IPAM_CONFIG_NAME.to_string(), previous.map(|p| &p.metadata)),
            spec: config.clone().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_the_default_singleton_and_omits_a_zero_block_limit() {
        let object = IPAMConfig::from_core(&IpamConfig::default(), None);
        assert_eq!(object.metadata.name.as_deref(), Some("default"));
        assert_eq!(
            serde_json::to_value(&object.spec).unwrap(),
            serde_json::json!({"strictAffinity": false, "autoAllocateBlocks": true})
        );
    }

    #[test]
    fn kubevirt_persistence_rides_through_the_core_as_an_unknown_field() {
        let json = serde_json::json!({
            "strictAffinity": true, "autoAllocateBlocks": true, "maxBlocksPerHost": 4,
            "kubeVirtVMAddressPersistence": "Disabled"
        });
        let spec: IPAMConfigSpec = serde_json::from_value(json.clone()).unwrap();
        let config = IpamConfig::from(spec);
        assert_eq!(config.block_limit(0), 4);
        assert!(config.unknown.contains_key(KUBEVIRT_PERSISTENCE));
        let back = IPAMConfig::from_core(&config, None);
        assert_eq!(
            back.spec.kube_virt_vm_address_persistence.as_deref(),
            Some("Disabled")
        );
        assert_eq!(serde_json::to_value(&back.spec).unwrap(), json);
    }

    #[test]
    fn the_cooldown_travels_under_calicos_name_and_is_omitted_when_zero() {
        let json = serde_json::json!({
            "strictAffinity": false, "autoAllocateBlocks": true, "ipCooldownSeconds": 60
        });
        let spec: IPAMConfigSpec = serde_json::from_value(json.clone()).unwrap();
        let config = IpamConfig::from(spec);
        assert_eq!(config.ip_cooldown_seconds, 60);
        let back = IPAMConfig::from_core(&config, None);
        assert_eq!(serde_json::to_value(&back.spec).unwrap(), json);
    }
}
