//! `ipamctl configure`: change the IPAM configuration
//! (calicoctl/commands/ipam/configure.go). The flags change only what they
//! name; the result must satisfy Calico's rules (SetIPAMConfig:
//! strictAffinity and autoAllocateBlocks are not both false,
//! maxBlocksPerHost needs strictAffinity; ipCooldownSeconds at most 1200,
//! the bound of Calico's CRD), checked before anything is written.

use std::io::Write;

use ipam_api::ConfigBody;
use ipam_core::IpamConfig;

use crate::args::ConfigureArgs;
use crate::connection::Connection;
use crate::error::CliError;

/// Runs `ipamctl configure`.
pub async fn run(
    connection: &Connection,
    args: &ConfigureArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let current = connection.config().await?;
    let wanted = apply(&current, args)?;
    connection.set_config(&wanted).await?;
    let mut text = String::new();
    // calicoctl's confirmations, one per flag given.
    if let Some(value) = args.strict_affinity {
        text.push_str(&format!("Successfully set StrictAffinity to: {value}\n"));
    }
    if let Some(value) = args.auto_allocate_blocks {
        text.push_str(&format!(
            "Successfully set AutoAllocateBlocks to: {value}\n"
        ));
    }
    if let Some(value) = args.max_blocks_per_host {
        text.push_str(&format!("Successfully set MaxBlocksPerHost to: {value}\n"));
    }
    if let Some(value) = args.ip_cooldown_seconds {
        text.push_str(&format!("Successfully set IPCooldownSeconds to: {value}\n"));
    }
    out.write_all(text.as_bytes())
        .map_err(CliError::io("writing to stdout"))
}

/// The configuration after the flags' changes, refused when Calico would
/// refuse it.
pub fn apply(current: &ConfigBody, args: &ConfigureArgs) -> Result<ConfigBody, CliError> {
    let wanted = ConfigBody {
        strict_affinity: args.strict_affinity.unwrap_or(current.strict_affinity),
        auto_allocate_blocks: args
            .auto_allocate_blocks
            .unwrap_or(current.auto_allocate_blocks),
        max_blocks_per_host: args
            .max_blocks_per_host
            .unwrap_or(current.max_blocks_per_host),
        ip_cooldown_seconds: args
            .ip_cooldown_seconds
            .unwrap_or(current.ip_cooldown_seconds),
    };
    let mut config = IpamConfig::default();
    wanted.apply_to(&mut config);
    config.validate().map_err(|e| {
        CliError::Usage(format!(
            "{e} (the result would be strictAffinity={}, autoAllocateBlocks={}, maxBlocksPerHost={}, ipCooldownSeconds={})",
            wanted.strict_affinity,
            wanted.auto_allocate_blocks,
            wanted.max_blocks_per_host,
            wanted.ip_cooldown_seconds
        ))
    })?;
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(strict: Option<bool>, auto: Option<bool>, max: Option<u32>) -> ConfigureArgs {
        ConfigureArgs {
            strict_affinity: strict,
            auto_allocate_blocks: auto,
            max_blocks_per_host: max,
            ip_cooldown_seconds: None,
        }
    }

    const DEFAULT: ConfigBody = ConfigBody {
        strict_affinity: false,
        auto_allocate_blocks: true,
        max_blocks_per_host: 0,
        ip_cooldown_seconds: 0,
    };

    #[test]
    fn only_the_flags_given_change() {
        let wanted = apply(&DEFAULT, &args(Some(true), None, Some(4))).unwrap();
        assert_eq!(
            wanted,
            ConfigBody {
                strict_affinity: true,
                auto_allocate_blocks: true,
                max_blocks_per_host: 4,
                ip_cooldown_seconds: 0,
            }
        );
    }

    #[test]
    fn the_cooldown_is_set_alone_and_bounded_by_calicos_maximum() {
        let cooldown = |seconds| ConfigureArgs {
            ip_cooldown_seconds: Some(seconds),
            ..args(None, None, None)
        };
        let wanted = apply(&DEFAULT, &cooldown(300)).unwrap();
        assert_eq!(
            wanted,
            ConfigBody {
                ip_cooldown_seconds: 300,
                ..DEFAULT
            }
        );
        let error = apply(&DEFAULT, &cooldown(1201)).unwrap_err();
        assert!(matches!(error, CliError::Usage(_)));
        assert!(
            error
                .to_string()
                .contains("ipCooldownSeconds 1201 is out of range"),
            "{error}"
        );
    }

    #[test]
    fn what_calico_refuses_is_refused_with_the_resulting_values() {
        let error = apply(&DEFAULT, &args(None, None, Some(4))).unwrap_err();
        assert!(matches!(error, CliError::Usage(_)));
        assert!(error.to_string().contains("maxBlocksPerHost=4"), "{error}");
        assert!(apply(&DEFAULT, &args(None, Some(false), None)).is_err());
        assert!(apply(&DEFAULT, &args(Some(true), Some(false), None)).is_ok());
    }
}
