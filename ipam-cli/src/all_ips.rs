//! `ipamctl check --show-all-ips`: every allocation the check reads,
//! printed as calicoctl's `ipam check --show-all-ips` prints it while it
//! loads the blocks (calicoctl/commands/ipam/check.go, `checkIPAM` and
//! `recordAllocation`):
//!
//! ```text
//! Loading all IPAM blocks...
//! Found 2 IPAM blocks.
//!  IPAM block 10.0.0.0/26 affinity=host:node-1:
//!   10.0.0.0 allocated; attrs Main:k8s-pod-network.c0 Extra:namespace=default,node=node-1,pod=web-0
//! IPAM blocks record 1 allocations.
//! ```
//!
//! Blocks come in the order calicoctl lists them, by object name (the
//! datastore's listing order), allocations in ordinal order; `Main:` is
//! the handle (`<none>` without one), `Extra:` the owner's attributes
//! sorted by key, and `Alternate:` the alternate owner's, when there are
//! any (check.go, `formatAttrs`, `kvsFormat`). Through ipam-server the
//! alternate owner is not shown: the API does not carry it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipam_core::{BlockCidr, BlockOwner};

use crate::connection::Connection;
use crate::error::CliError;

/// One block as the listing shows it.
struct Listed {
    cidr: BlockCidr,
    affinity: Option<String>,
    allocations: Vec<Allocation>,
}

/// One allocation as the listing shows it.
struct Allocation {
    address: IpAddr,
    handle: Option<String>,
    extra: BTreeMap<String, String>,
    alternate: BTreeMap<String, String>,
}

/// The block section of calicoctl's check with `--show-all-ips`.
pub async fn listing(connection: &Connection) -> Result<String, CliError> {
    Ok(render(read(connection).await?))
}

fn render(mut blocks: Vec<Listed>) -> String {
    blocks.sort_by_cached_key(|b| b.cidr.object_name());
    let mut text = String::from("Loading all IPAM blocks...\n");
    let _ = writeln!(text, "Found {} IPAM blocks.", blocks.len());
    let mut count = 0;
    for block in &blocks {
        let affinity = block.affinity.as_deref().unwrap_or("<none>");
        let _ = writeln!(text, " IPAM block {} affinity={affinity}:", block.cidr);
        for a in &block.allocations {
            count += 1;
            let main = a.handle.as_deref().unwrap_or("<none>");
            let _ = write!(
                text,
                "  {} allocated; attrs Main:{main} Extra:{}",
                a.address,
                pairs(&a.extra)
            );
            if !a.alternate.is_empty() {
                let _ = write!(text, " Alternate:{}", pairs(&a.alternate));
            }
            text.push('\n');
        }
    }
    let _ = writeln!(text, "IPAM blocks record {count} allocations.");
    text.push('\n');
    text
}

/// Go's `kvsFormat`: `k=v` pairs, sorted by key, joined by commas.
fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn read(connection: &Connection) -> Result<Vec<Listed>, CliError> {
    match connection {
        Connection::Direct(local) => {
            let snapshot = local.engine().snapshot().await?;
            Ok(snapshot
                .blocks()
                .map(|block| Listed {
                    cidr: block.cidr(),
                    affinity: block.owner().map(BlockOwner::to_string),
                    allocations: block
                        .allocations()
                        .map(|(ordinal, attribute)| Allocation {
                            address: block.cidr().address(ordinal),
                            handle: attribute.handle_id().map(str::to_string),
                            extra: attribute.secondary().to_map(),
                            alternate: attribute.alternate_owner().to_map(),
                        })
                        .collect(),
                })
                .collect())
        }
        Connection::Server(client) => {
            let mut blocks = Vec::new();
            for cidr in client.usage().await?.block_cidrs() {
                // A block deleted since the usage was read holds nothing.
                let Some(detail) = client.block(cidr).await? else {
                    continue;
                };
                let cidr = BlockCidr::new(detail.cidr).map_err(|e| {
                    CliError::Refused(format!(
                        "ipam-server listed {}, which is not a block: {e}",
                        detail.cidr
                    ))
                })?;
                blocks.push(Listed {
                    cidr,
                    affinity: detail.affinity,
                    allocations: detail
                        .allocations
                        .into_iter()
                        .map(|a| Allocation {
                            address: a.address,
                            handle: a.handle,
                            extra: a.attributes,
                            alternate: BTreeMap::new(),
                        })
                        .collect(),
                });
            }
            Ok(blocks)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn blocks_by_object_name_and_owners_as_calicoctl_formats_them() {
        let block = |cidr: &str, affinity: Option<&str>, allocations| Listed {
            cidr: cidr.parse().unwrap(),
            affinity: affinity.map(str::to_string),
            allocations,
        };
        let text = render(vec![
            // By object name, 10-0-0-64-26 sorts after 10-0-0-128-26.
            block(
                "10.0.0.64/26",
                None,
                vec![Allocation {
                    address: "10.0.0.70".parse().unwrap(),
                    handle: None,
                    extra: BTreeMap::new(),
                    alternate: BTreeMap::new(),
                }],
            ),
            block(
                "10.0.0.128/26",
                Some("host:n1"),
                vec![Allocation {
                    address: "10.0.0.129".parse().unwrap(),
                    handle: Some("k8s-pod-network.vm".into()),
                    extra: map(&[("vmi", "vm-1"), ("namespace", "ns"), ("node", "n1")]),
                    alternate: map(&[("pod", "virt-launcher-b"), ("node", "n2")]),
                }],
            ),
            block("10.0.0.0/26", Some("virtual:v"), Vec::new()),
        ]);
        assert_eq!(
            text,
            "Loading all IPAM blocks...\n\
             Found 3 IPAM blocks.\n \
             IPAM block 10.0.0.0/26 affinity=virtual:v:\n \
             IPAM block 10.0.0.128/26 affinity=host:n1:\n  \
             10.0.0.129 allocated; attrs Main:k8s-pod-network.vm \
             Extra:namespace=ns,node=n1,vmi=vm-1 Alternate:node=n2,pod=virt-launcher-b\n \
             IPAM block 10.0.0.64/26 affinity=<none>:\n  \
             10.0.0.70 allocated; attrs Main:<none> Extra:\n\
             IPAM blocks record 2 allocations.\n\n"
        );
    }
}
