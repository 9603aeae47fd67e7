//! `ipamctl show`: what `calicoctl ipam show` prints (calicoctl/commands/
//! ipam/show.go), row for row, plus `-o json` and `-o yaml` for scripts.
//!
//! The tables follow show.go:
//! - pools: `GROUPING | CIDR | IPS TOTAL | IPS IN USE | IPS FREE`, one
//!   `IP Pool` row per pool (by name), with `--show-blocks` a `Block` row
//!   per block under it (in the datastore's listing order, by object name);
//!   a pool's total is 2^(host bits), its use the sum of its blocks' (block
//!   size minus the length of `unallocated`); figures are `%.5g`, the
//!   percentages `%.f` of `100*inUse/capacity` (ties to even, so 0.5%
//!   prints 0%). Blocks outside every pool get `Block` rows without a pool
//!   row, IPv4 ones only: Calico files them under a pseudo-pool 0.0.0.0/0,
//!   which no IPv6 block overlaps (GetUtilization).
//! - `--show-borrowed`: `IP | BORROWING-NODE | BLOCK | BLOCK OWNER | TYPE |
//!   ALLOCATED-TO`, then a note when allocations carry no node.
//! - `--show-configuration`: `PROPERTY | VALUE` with the three IPAMConfig
//!   fields as Go's `%#v` prints them (Calico 3.32 adds a fourth,
//!   KubeVirtVMAddressPersistence, which it prints as a Go pointer address;
//!   we print the three rows of the fixture).
//! - `--ip`: "IP X is in use", the handle, then the owner attributes sorted
//!   by key; or "X is not assigned" — followed, beyond Calico, by the pool
//!   it is free in, or that it is in none.
//!
//! JSON and YAML: `show` and `--show-blocks` print ipam-server's
//! `GET /v1/usage` body (pools by name, each block with cidr, node, size,
//! inUse, free, borrowed, in address order; `orphanedBlocks`);
//! `--show-configuration` its `GET /v1/config` body; `--ip` its
//! `GET /v1/addresses/{address}` body (address, status
//! inUse|free|notInPool, pool, handle, attributes), plus
//! `alternateAttributes` when set; `--show-borrowed` an object
//! `{"borrowed": [{address, borrowingNode, block, blockOwner, type,
//! allocatedTo}], "unclassified": N}`.

use std::io::Write;

use ipam_api::{AddressState, BlockUsageBody, ConfigBody, UsageResponse};
use ipam_core::BlockCidr;
use ipnet::IpNet;
use serde::Serialize;

use crate::args::{Format, ShowArgs};
use crate::connection::{AddressReport, Borrowed, Connection};
use crate::error::CliError;
use crate::output::emit;
use crate::table::{go_f0, go_g5, Table};

/// Runs `ipamctl show`.
pub async fn run(
    connection: &Connection,
    args: &ShowArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if let Some(address) = args.ip {
        let report = connection.address(address).await?;
        return match args.output {
            Format::Table => write_text(out, &address_text(&report)),
            format => emit(out, format, &report),
        };
    }
    if args.show_borrowed {
        let borrowed = connection.borrowed().await?;
        return match args.output {
            Format::Table => write_text(out, &borrowed_table(&borrowed)),
            format => emit(out, format, &BorrowedBody::from(&borrowed)),
        };
    }
    if args.show_configuration {
        let config = connection.config().await?;
        return match args.output {
            Format::Table => write_text(out, &configuration_table(&config)),
            format => emit(out, format, &config),
        };
    }
    let usage = connection.usage().await?;
    match args.output {
        Format::Table => write_text(out, &usage_table(&usage, args.show_blocks)),
        format => emit(out, format, &usage),
    }
}

fn write_text(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes())
        .map_err(CliError::io("writing to stdout"))
}

// show.go genRow: kind, CIDR, total, in use and free with percentages.
fn usage_row(kind: &str, cidr: &IpNet, in_use: f64, capacity: f64) -> Vec<String> {
    let free = capacity - in_use;
    vec![
        kind.to_string(),
        cidr.to_string(),
        go_g5(capacity),
        format!("{} ({}%)", go_g5(in_use), go_f0(100.0 * in_use / capacity)),
        format!("{} ({}%)", go_g5(free), go_f0(100.0 * free / capacity)),
    ]
}

// Blocks in Calico's listing order (object names, as Kubernetes lists
// them), not address order: 10-0-0-128-26 comes before 10-0-0-64-26.
fn listing_order(blocks: &[BlockUsageBody]) -> Vec<&BlockUsageBody> {
    let mut sorted: Vec<&BlockUsageBody> = blocks.iter().collect();
    sorted.sort_by_cached_key(|b| {
        BlockCidr::new(b.cidr)
            .map(|c| c.object_name())
            .unwrap_or_else(|_| b.cidr.to_string())
    });
    sorted
}

/// The pool table (`show`, `show --show-blocks`).
pub fn usage_table(usage: &UsageResponse, show_blocks: bool) -> String {
    let mut table = Table::new(&["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"]);
    let block_rows = |blocks: &[BlockUsageBody]| -> (Vec<Vec<String>>, f64) {
        let mut in_use = 0.0;
        let rows = listing_order(blocks)
            .into_iter()
            .map(|b| {
                in_use += f64::from(b.in_use);
                usage_row("Block", &b.cidr, f64::from(b.in_use), f64::from(b.size))
            })
            .collect();
        (rows, in_use)
    };
    for pool in &usage.pools {
        let (rows, in_use) = block_rows(&pool.blocks);
        let host_bits = pool.cidr.max_prefix_len() - pool.cidr.prefix_len();
        let capacity = 2f64.powi(i32::from(host_bits));
        table.push(usage_row("IP Pool", &pool.cidr, in_use, capacity));
        if show_blocks {
            rows.into_iter().for_each(|r| table.push(r));
        }
    }
    if show_blocks {
        let orphaned: Vec<BlockUsageBody> = usage
            .orphaned_blocks
            .iter()
            .filter(|b| matches!(b.cidr, IpNet::V4(_)))
            .cloned()
            .collect();
        block_rows(&orphaned)
            .0
            .into_iter()
            .for_each(|r| table.push(r));
    }
    table.render()
}

/// The borrowed-address table and its note.
pub fn borrowed_table(borrowed: &Borrowed) -> String {
    let mut table = Table::new(&[
        "IP",
        "BORROWING-NODE",
        "BLOCK",
        "BLOCK OWNER",
        "TYPE",
        "ALLOCATED-TO",
    ]);
    for b in &borrowed.addresses {
        table.push(vec![
            b.address.to_string(),
            b.borrowing_node.clone(),
            b.block.to_string(),
            b.block_owner.clone(),
            b.kind.clone(),
            b.allocated_to.clone(),
        ]);
    }
    let mut text = table.render();
    if borrowed.unclassified != 0 {
        text.push_str(&format!(
            "\nNote: found {} IP allocations without an explicit node association. \
             Unable to determine if they are borrowed.\n",
            borrowed.unclassified
        ));
    }
    text
}

/// The IPAM configuration table.
pub fn configuration_table(config: &ConfigBody) -> String {
    let mut table = Table::new(&["PROPERTY", "VALUE"]);
    for (name, value) in [
        ("StrictAffinity", config.strict_affinity.to_string()),
        (
            "AutoAllocateBlocks",
            config.auto_allocate_blocks.to_string(),
        ),
        ("MaxBlocksPerHost", config.max_blocks_per_host.to_string()),
    ] {
        table.push(vec![name.to_string(), value]);
    }
    // calicoctl 3.32's table has no cooldown row (newer ones print every
    // field of the config): shown only when set, so the default table is
    // 3.32's byte for byte.
    if config.ip_cooldown_seconds > 0 {
        table.push(vec![
            "IPCooldownSeconds".to_string(),
            config.ip_cooldown_seconds.to_string(),
        ]);
    }
    table.render()
}

/// What `show --ip` prints.
pub fn address_text(report: &AddressReport) -> String {
    let info = &report.info;
    let mut text = String::new();
    match info.status {
        AddressState::InUse => {
            text.push_str(&format!("IP {} is in use\n", info.address));
            match &info.handle {
                Some(handle) => text.push_str(&format!("Handle ID: {handle}\n")),
                None => text.push_str("Handle ID: <none>\n"),
            }
            if info.attributes.is_empty() {
                text.push_str("No Active Owner attributes defined\n");
            } else {
                text.push_str("Active Owner Attributes:\n");
                for (key, value) in &info.attributes {
                    text.push_str(&format!("  {key}: {value}\n"));
                }
            }
            if !report.alternate_attributes.is_empty() {
                text.push_str("Alternate Owner Attributes:\n");
                for (key, value) in &report.alternate_attributes {
                    text.push_str(&format!("  {key}: {value}\n"));
                }
            }
        }
        // calicoctl answers with Calico's ErrorIPInCooldown, "address %s is
        // in cooldown"; this adds when it ends.
        AddressState::InCooldown => {
            text.push_str(&format!("IP {} is in cooldown\n", info.address));
            if let Some(at) = &info.released_at {
                text.push_str(&format!("Released at: {at}\n"));
            }
            if let Some(at) = &info.free_from {
                text.push_str(&format!("Free from: {at}\n"));
            }
        }
        AddressState::Free => {
            text.push_str(&format!("{} is not assigned\n", info.address));
            if let Some(pool) = &info.pool {
                text.push_str(&format!("It is free in IP pool {pool}.\n"));
            }
        }
        AddressState::NotInPool => {
            text.push_str(&format!("{} is not assigned\n", info.address));
            text.push_str("It is not in any IP pool.\n");
        }
    }
    text
}

/// `show --show-borrowed -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BorrowedBody {
    /// The borrowed addresses.
    pub borrowed: Vec<BorrowedEntry>,
    /// Allocations without a `node` attribute.
    pub unclassified: u32,
}

/// One borrowed address.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BorrowedEntry {
    /// The address.
    pub address: String,
    /// The node using it.
    pub borrowing_node: String,
    /// Its block.
    pub block: String,
    /// The block's owner (empty when none).
    pub block_owner: String,
    /// `pod`, `vmi` or the allocation's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `<namespace>/<pod>`, or empty.
    pub allocated_to: String,
}

impl From<&Borrowed> for BorrowedBody {
    fn from(borrowed: &Borrowed) -> BorrowedBody {
        BorrowedBody {
            borrowed: borrowed
                .addresses
                .iter()
                .map(|b| BorrowedEntry {
                    address: b.address.to_string(),
                    borrowing_node: b.borrowing_node.clone(),
                    block: b.block.to_string(),
                    block_owner: b.block_owner.clone(),
                    kind: b.kind.clone(),
                    allocated_to: b.allocated_to.clone(),
                })
                .collect(),
            unclassified: borrowed.unclassified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_api::PoolUsageBody;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/calico");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn block(cidr: &str, in_use: u32) -> BlockUsageBody {
        let cidr: IpNet = cidr.parse().unwrap();
        let size = 1u32 << (cidr.max_prefix_len() - cidr.prefix_len());
        BlockUsageBody {
            cidr,
            node: None,
            size,
            in_use,
            free: size - in_use,
            borrowed: 0,
            released: 0,
        }
    }

    fn pool(name: &str, cidr: &str, blocks: Vec<BlockUsageBody>) -> PoolUsageBody {
        let cidr: IpNet = cidr.parse().unwrap();
        let in_use = blocks.iter().map(|b| u128::from(b.in_use)).sum();
        let size = 1u128 << (cidr.max_prefix_len() - cidr.prefix_len());
        PoolUsageBody {
            name: name.into(),
            cidr,
            block_size: 26,
            disabled: false,
            load_balancer: false,
            size,
            in_use,
            free: size - in_use,
            released: 0,
            blocks,
        }
    }

    #[test]
    fn a_16_pool_with_13_addresses_in_use_prints_the_fixture() {
        let usage = UsageResponse {
            pools: vec![pool(
                "default-ipv4-ippool",
                "172.17.0.0/16",
                vec![block("172.17.0.0/26", 9), block("172.17.1.0/26", 4)],
            )],
            orphaned_blocks: vec![],
        };
        assert_eq!(usage_table(&usage, false), fixture("ipam-show-pool-16.txt"));
    }

    #[test]
    fn an_empty_24_pool_prints_the_fixture() {
        let usage = UsageResponse {
            pools: vec![pool("pool-zone-1", "192.168.50.0/24", vec![])],
            orphaned_blocks: vec![],
        };
        assert_eq!(usage_table(&usage, false), fixture("ipam-show-pool-24.txt"));
    }

    #[test]
    fn the_default_configuration_prints_the_fixture() {
        let config = ConfigBody {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            ip_cooldown_seconds: 0,
        };
        assert_eq!(
            configuration_table(&config),
            fixture("ipam-show-configuration.txt")
        );
    }

    #[test]
    fn a_cooldown_that_is_set_gets_its_own_row() {
        let config = ConfigBody {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            ip_cooldown_seconds: 300,
        };
        let text = configuration_table(&config);
        assert!(text.contains("| IPCooldownSeconds  |   300 |"), "{text}");
    }

    #[test]
    fn blocks_follow_their_pool_in_object_name_order_and_ipv4_orphans_come_last() {
        let usage = UsageResponse {
            pools: vec![pool(
                "p",
                "10.0.0.0/24",
                vec![block("10.0.0.64/26", 1), block("10.0.0.128/26", 2)],
            )],
            orphaned_blocks: vec![block("10.9.0.0/26", 3), block("fd00::/122", 1)],
        };
        let text = usage_table(&usage, true);
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .map(|l| l.split(" | ").nth(1).unwrap().trim())
            .collect();
        assert_eq!(
            kinds,
            [
                "CIDR",
                "10.0.0.0/24",
                "10.0.0.128/26",
                "10.0.0.64/26",
                "10.9.0.0/26"
            ]
        );
        // The pool counts its blocks: 3 of 256.
        assert!(text.contains("| 3 (1%)     |"), "{text}");
    }

    #[test]
    fn a_free_address_and_one_outside_every_pool_are_told_apart() {
        let report = |status, pool: Option<&str>| AddressReport {
            info: ipam_api::AddressInfo {
                address: "10.0.0.9".parse().unwrap(),
                status,
                pool: pool.map(str::to_string),
                handle: None,
                attributes: Default::default(),
                released_at: Some("2026-01-01T00:00:00Z".into()),
                free_from: Some("2026-01-01T00:05:01Z".into()),
            },
            alternate_attributes: Default::default(),
        };
        assert_eq!(
            address_text(&report(AddressState::Free, Some("p"))),
            "10.0.0.9 is not assigned\nIt is free in IP pool p.\n"
        );
        assert_eq!(
            address_text(&report(AddressState::NotInPool, None)),
            "10.0.0.9 is not assigned\nIt is not in any IP pool.\n"
        );
        assert_eq!(
            address_text(&report(AddressState::InCooldown, Some("p"))),
            "IP 10.0.0.9 is in cooldown\nReleased at: 2026-01-01T00:00:00Z\n\
             Free from: 2026-01-01T00:05:01Z\n"
        );
    }
}
