//! `ipamctl pool list|create|delete|disable|enable`. A new or changed pool
//! is validated here first, as Calico's IPPool validation does (CIDR
//! aligned, blockSize 20-32 or 116-128 and no larger than the pool,
//! selector syntax), so that a mistake is named before anything is sent;
//! overlap with another pool is refused by the engine, which sees every
//! pool.

use std::io::Write;

use ipam_api::PoolBody;
use ipam_core::{Pool, PoolSpec};

use crate::args::{Format, PoolCommand, PoolCreateArgs};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output::emit;
use crate::table::Table;

/// Runs `ipamctl pool ...`.
pub async fn run(
    connection: &Connection,
    command: &PoolCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let text = match command {
        PoolCommand::List { output } => {
            let pools = connection.pools().await?;
            return match output {
                Format::Table => out
                    .write_all(list_table(&pools).as_bytes())
                    .map_err(CliError::io("writing to stdout")),
                format => emit(out, *format, &pools),
            };
        }
        PoolCommand::Create(args) => {
            let pool = new_pool(args)?;
            let cidr = pool.cidr();
            connection.create_pool(pool).await?;
            format!("Created IP pool {} ({cidr}).\n", args.name)
        }
        PoolCommand::Delete { name } => {
            connection.delete_pool(name).await?;
            format!("Deleted IP pool {name}.\n")
        }
        PoolCommand::Disable { name } => {
            set_disabled(connection, name, true).await?;
            format!("Disabled IP pool {name}: it hands out no new addresses.\n")
        }
        PoolCommand::Enable { name } => {
            set_disabled(connection, name, false).await?;
            format!("Enabled IP pool {name}.\n")
        }
        PoolCommand::Split(args) => return crate::split::run(connection, args, out).await,
    };
    out.write_all(text.as_bytes())
        .map_err(CliError::io("writing to stdout"))
}

/// The pool a `pool create` describes, validated.
pub fn new_pool(args: &PoolCreateArgs) -> Result<Pool, CliError> {
    let mut spec = PoolSpec::new(args.cidr);
    spec.block_size = args.block_size;
    spec.node_selector = args.node_selector.clone();
    spec.namespace_selector = args.namespace_selector.clone();
    spec.allowed_uses = args.allowed_uses.iter().map(|&u| u.into()).collect();
    spec.disable_bgp_export = args.disable_bgp_export;
    spec.ipip_mode = args.ipip_mode.clone();
    spec.vxlan_mode = args.vxlan_mode.clone();
    spec.nat_outgoing = args.nat_outgoing;
    spec.disabled = args.disabled;
    if args.name.is_empty() {
        return Err(CliError::Usage("the pool's name must not be empty".into()));
    }
    Ok(Pool::new(args.name.clone(), spec)?)
}

async fn set_disabled(connection: &Connection, name: &str, disabled: bool) -> Result<(), CliError> {
    let pools = connection.pools().await?;
    let Some(body) = pools.into_iter().find(|p| p.name == name) else {
        return Err(CliError::NotFound(format!(
            "no IP pool named {name:?} (`ipamctl pool list` shows them)"
        )));
    };
    let mut spec = body.spec;
    spec.disabled = disabled;
    connection.update_pool(Pool::new(name, spec)?).await
}

/// `pool list` as a table.
pub fn list_table(pools: &[PoolBody]) -> String {
    let mut table = Table::new(&["NAME", "CIDR", "BLOCK SIZE", "NODE SELECTOR", "DISABLED"]);
    for pool in pools {
        let block_size = match pool.spec.block_size {
            Some(size) => size,
            None if pool.spec.cidr.addr().is_ipv4() => ipam_core::pool::DEFAULT_IPV4_BLOCK_SIZE,
            None => ipam_core::pool::DEFAULT_IPV6_BLOCK_SIZE,
        };
        let selector = match pool.spec.node_selector.as_str() {
            "" => "all()".to_string(),
            s => s.to_string(),
        };
        table.push(vec![
            pool.name.clone(),
            pool.spec.cidr.to_string(),
            block_size.to_string(),
            selector,
            pool.spec.disabled.to_string(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, cidr: &str, block_size: Option<u8>) -> PoolCreateArgs {
        PoolCreateArgs {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size,
            node_selector: String::new(),
            namespace_selector: String::new(),
            allowed_uses: Vec::new(),
            ipip_mode: None,
            vxlan_mode: None,
            nat_outgoing: false,
            disable_bgp_export: false,
            disabled: false,
        }
    }

    #[test]
    fn unaligned_or_badly_sized_pools_are_usage_errors_naming_the_value() {
        let error = new_pool(&create("p", "10.0.0.1/24", None)).unwrap_err();
        assert!(matches!(error, CliError::Usage(_)));
        assert!(
            error.to_string().contains("did you mean 10.0.0.0/24"),
            "{error}"
        );
        let error = new_pool(&create("p", "10.0.0.0/16", Some(33))).unwrap_err();
        assert!(error.to_string().contains("blockSize 33"), "{error}");
        let error = new_pool(&create("p", "10.0.0.0/28", Some(26))).unwrap_err();
        assert!(
            error.to_string().contains("smaller than its blockSize"),
            "{error}"
        );
        assert!(new_pool(&create("", "10.0.0.0/24", None)).is_err());
        assert!(new_pool(&create("v6", "fd00::/64", None)).is_ok());
    }

    #[test]
    fn the_list_shows_default_block_sizes_and_selectors() {
        let pools: Vec<PoolBody> = [
            new_pool(&create("a", "10.0.0.0/16", None)).unwrap(),
            new_pool(&create("b", "fd00::/64", Some(120))).unwrap(),
        ]
        .iter()
        .map(PoolBody::from)
        .collect();
        assert_eq!(
            list_table(&pools),
            "+------+-------------+------------+---------------+----------+\n\
             | NAME |    CIDR     | BLOCK SIZE | NODE SELECTOR | DISABLED |\n\
             +------+-------------+------------+---------------+----------+\n\
             | a    | 10.0.0.0/16 |         26 | all()         | false    |\n\
             | b    | fd00::/64   |        120 | all()         | false    |\n\
             +------+-------------+------------+---------------+----------+\n"
        );
    }
}
