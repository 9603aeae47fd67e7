//! The cluster-wide IPAM configuration (Calico's `IPAMConfig` singleton
//! named `default`).

use serde::{Deserialize, Serialize};

use crate::cooldown::{Cooldown, MAX_IP_COOLDOWN_SECONDS};
use crate::error::Error;
use crate::plan::Now;
use crate::unknown::UnknownFields;

/// Calico 3.32 caps a host at this many blocks when `maxBlocksPerHost` is 0
/// (libcalico-go/lib/ipam/ipam.go, autoAssign: "Default to a reasonable
/// limit to act as a safeguard against runaway block allocation").
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

/// The IPAMConfig spec, with Calico's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConfig {
    /// When true, a node never uses addresses from another node's block.
    pub strict_affinity: bool,
    /// When false, nodes never claim new blocks.
    pub auto_allocate_blocks: bool,
    /// Most blocks one host may hold; 0 means Calico's default cap.
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Seconds a released address stays out of use before it is handed out
    /// again; 0 frees it at once (Calico's IPCooldownSeconds, see
    /// [`crate::cooldown`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ip_cooldown_seconds: u32,
    /// Fields of a newer Calico (such as kubeVirtVMAddressPersistence), kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl Default for IpamConfig {
    /// What Calico creates when no config exists: strictAffinity false,
    /// autoAllocateBlocks true, maxBlocksPerHost 0.
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            ip_cooldown_seconds: 0,
            unknown: UnknownFields::new(),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl IpamConfig {
    /// The block limit in force for one request: the tighter of the
    /// request's own limit and the config's, or Calico's default cap when
    /// neither sets one (ipam.go, autoAssign).
    pub fn block_limit(&self, request_limit: u32) -> u32 {
        let configured = self.max_blocks_per_host;
        let limit = match (request_limit, configured) {
            (0, c) => c,
            (r, c) if c > 0 && r > c => c,
            (r, _) => r,
        };
        if limit == 0 {
            DEFAULT_MAX_BLOCKS_PER_HOST
        } else {
            limit
        }
    }

    /// The cooldown in force at `now`.
    pub fn cooldown(&self, now: Now) -> Cooldown {
        Cooldown::new(self.ip_cooldown_seconds, now)
    }

    /// Calico's rules for storing a new config (ipam.go, SetIPAMConfig,
    /// whose sentences the refusals start with), plus the bounds its CRD puts on ipCooldownSeconds (0 to 1200), which
    /// the Kubernetes API server enforces and etcd would not.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.strict_affinity && !self.auto_allocate_blocks {
            return Err(Error::InvalidConfig {
                reason: "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time (strictAffinity and autoAllocateBlocks are both false)".to_string(),
            });
        }
        if self.max_blocks_per_host > 0 && !self.strict_affinity {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "MaxBlocksPerHost requires StrictAffinity to be enabled (maxBlocksPerHost is {}, strictAffinity is false)",
                    self.max_blocks_per_host
                ),
            });
        }
        if self.ip_cooldown_seconds > MAX_IP_COOLDOWN_SECONDS {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "ipCooldownSeconds {} is out of range: must be 0 to {MAX_IP_COOLDOWN_SECONDS}",
                    self.ip_cooldown_seconds
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_calico_fresh_config() {
        let c = IpamConfig::default();
        assert!(!c.strict_affinity && c.auto_allocate_blocks && c.max_blocks_per_host == 0);
        assert_eq!(c.ip_cooldown_seconds, 0);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn zero_limit_means_calico_default_of_twenty() {
        assert_eq!(IpamConfig::default().block_limit(0), 20);
    }

    #[test]
    fn tighter_of_request_and_config_limit_wins() {
        let c = IpamConfig {
            max_blocks_per_host: 4,
            strict_affinity: true,
            ..IpamConfig::default()
        };
        assert_eq!(c.block_limit(0), 4);
        assert_eq!(c.block_limit(10), 4);
        assert_eq!(c.block_limit(2), 2);
        assert_eq!(IpamConfig::default().block_limit(7), 7);
    }

    #[test]
    fn both_switches_off_is_refused() {
        let c = IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: false,
            ..IpamConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("autoAllocateBlocks"));
    }

    #[test]
    fn block_limit_without_strict_affinity_is_refused() {
        let c = IpamConfig {
            max_blocks_per_host: 3,
            ..IpamConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("maxBlocksPerHost"));
    }

    #[test]
    fn a_cooldown_beyond_calicos_maximum_is_refused_naming_field_and_value() {
        let at_max = IpamConfig {
            ip_cooldown_seconds: 1200,
            ..IpamConfig::default()
        };
        assert!(at_max.validate().is_ok());
        let over = IpamConfig {
            ip_cooldown_seconds: 1201,
            ..IpamConfig::default()
        };
        let message = over.validate().unwrap_err().to_string();
        assert!(
            message.contains("ipCooldownSeconds 1201") && message.contains("0 to 1200"),
            "{message}"
        );
    }

    #[test]
    fn a_zero_cooldown_is_left_out_of_the_stored_form() {
        let json = serde_json::to_value(IpamConfig::default()).unwrap();
        assert!(json.get("ipCooldownSeconds").is_none(), "{json}");
        let with = IpamConfig {
            ip_cooldown_seconds: 30,
            ..IpamConfig::default()
        };
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["ipCooldownSeconds"], 30);
        assert_eq!(serde_json::from_value::<IpamConfig>(json).unwrap(), with);
    }
}
