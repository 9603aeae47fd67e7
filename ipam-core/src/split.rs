//! Splitting a pool into 2^k equal child pools, as calicoctl's `ipam split`
//! does (calicoctl/commands/ipam/split.go, Calico 3.32): which pool is
//! meant, what the children are called and hold, what is refused, and what
//! a datastore already holds of a split that was begun.
//!
//! Calico's rules, each cited where it is applied:
//!
//! - the number of parts is a power of two, and not 1 (`splitCIDR`:
//!   "number to split CIDR into is not a valid power of 2");
//! - the pool's prefix plus log2(parts) fits the family (`splitCIDR`: "the
//!   CIDR ... is not large enough to be split into ... parts");
//! - every child is enabled (split.go sets `Disabled = false`), and an
//!   enabled pool must be at least one block (clientv3/ippool.go,
//!   `validateAndSetDefaults`: "IP pool size is too small for use with
//!   Calico IPAM"), so a child's prefix is at most the block size. Blocks
//!   are aligned to the block size, so each block of the pool then lies in
//!   exactly one child;
//! - a child is the parent with its name `split-<parent>-<i>` (the parent's
//!   name cut to 245 characters when the name would pass Kubernetes' 253),
//!   its CIDR the i-th part in address order, and every other setting
//!   copied (split.go deep-copies the parent).
//!
//! Beyond Calico: blocks of another size (left by an earlier pool) that
//! would straddle two children are refused by name, as is a pool other than
//! the children that overlaps the parent, and a split into more than
//! [`MAX_PARTS`] pools.

use ipnet::IpNet;

use crate::cidr::BlockCidr;
use crate::pool::Pool;

/// The most pools a split makes. Calico has no limit; each child is an
/// object every allocator lists and matches, so a split into more is a
/// mistake, not a plan.
pub const MAX_PARTS: u32 = 1024;

/// Kubernetes' longest object name (a DNS subdomain), which split.go keeps
/// child names within.
const MAX_NAME: usize = 253;

/// How a split names the pool to split (calicoctl's `--name` or `--cidr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitTarget {
    /// The pool of that name.
    Name(String),
    /// The pool whose CIDR is exactly this one.
    Cidr(IpNet),
}

/// Why a split is refused. Each names the field and value at fault; where
/// calicoctl refuses the same thing, its sentence comes first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// No pool has that name (split.go: "unable to find IP pool with name").
    #[error("unable to find IP pool with name {name} (name: no such pool)")]
    NoPoolNamed {
        /// The name given.
        name: String,
    },
    /// No pool has exactly that CIDR (split.go: "unable to find IP pool
    /// ... covering the specified CIDR").
    #[error("unable to find IP pool covering the specified CIDR {cidr} (cidr: no pool has exactly this CIDR)")]
    NoPoolWithCidr {
        /// The CIDR given.
        cidr: IpNet,
    },
    /// The number of parts is not 2, 4, 8, ... (split.go, `splitCIDR`).
    #[error("number to split CIDR into is not a valid power of 2: {parts} (parts: must be 2, 4, 8, ... up to {MAX_PARTS})")]
    PartsNotPowerOfTwo {
        /// The number given.
        parts: u32,
    },
    /// More parts than [`MAX_PARTS`].
    #[error("parts: {parts} is more than the {MAX_PARTS} pools a split may make")]
    TooManyParts {
        /// The number given.
        parts: u32,
    },
    /// The family has too few prefix bits left (split.go, `splitCIDR`).
    #[error("the CIDR {cidr} is not large enough to be split into {parts} parts (parts: {parts} of pool {pool})")]
    PoolTooSmall {
        /// The pool.
        pool: String,
        /// Its CIDR.
        cidr: IpNet,
        /// The number given.
        parts: u32,
    },
    /// A child would be smaller than one block (clientv3/ippool.go,
    /// `validateAndSetDefaults`, on the enabled child split.go creates).
    #[error("IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size. (parts: splitting pool {pool} ({cidr}) into {parts} parts makes /{child_prefix} pools, smaller than its blockSize {block_size})")]
    ChildSmallerThanBlock {
        /// The pool.
        pool: String,
        /// Its CIDR.
        cidr: IpNet,
        /// The number given.
        parts: u32,
        /// The children's prefix length.
        child_prefix: u8,
        /// The pool's block size.
        block_size: u8,
    },
    /// A block of another size would lie across two children.
    #[error("block {block} of pool {pool} would straddle two of its {parts} child pools (parts: at most {most} for this block)")]
    BlockStraddles {
        /// The pool.
        pool: String,
        /// The block.
        block: BlockCidr,
        /// The number given.
        parts: u32,
        /// The most parts that keep the block whole.
        most: u32,
    },
    /// A child's name would pass Kubernetes' 253 characters even after
    /// split.go's cut.
    #[error("child pool name {name} is longer than {MAX_NAME} characters (name: too long to split into {parts} parts)")]
    ChildNameTooLong {
        /// The name.
        name: String,
        /// The number given.
        parts: u32,
    },
    /// A child's name is taken by a pool that is not that child: another
    /// split of the parent was begun with a different number of parts
    /// (`begun`), or an unrelated pool has the name.
    #[error("pool {name} already exists with CIDR {existing}, not {wanted}{}", match begun {
        Some(begun) => format!(": a split of {parent} into {begun} parts was begun; run it again with {begun} parts to finish it"),
        None => String::new(),
    })]
    ChildNameTaken {
        /// The parent.
        parent: String,
        /// The child's name.
        name: String,
        /// The CIDR it has.
        existing: IpNet,
        /// The CIDR the child would have.
        wanted: IpNet,
        /// The parts of the split it belongs to, when it is a child of the
        /// parent.
        begun: Option<u32>,
    },
    /// A pool other than the children overlaps the parent (written past
    /// the overlap check, by calicoctl or kubectl).
    #[error("pool {other} ({other_cidr}) overlaps pool {pool} ({cidr}) and is not one of its child pools; resolve the overlap first")]
    OtherPoolOverlaps {
        /// The parent.
        pool: String,
        /// Its CIDR.
        cidr: IpNet,
        /// The overlapping pool.
        other: String,
        /// Its CIDR.
        other_cidr: IpNet,
    },
}

impl SplitTarget {
    /// The pool meant, among `pools`.
    pub fn find<'a>(&self, pools: &'a [Pool]) -> Result<&'a Pool, SplitError> {
        match self {
            SplitTarget::Name(name) => pools
                .iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| SplitError::NoPoolNamed { name: name.clone() }),
            SplitTarget::Cidr(cidr) => pools
                .iter()
                .find(|p| p.cidr() == *cidr)
                .ok_or(SplitError::NoPoolWithCidr { cidr: *cidr }),
        }
    }
}

/// The name of child `index` of `parent` (split.go: `split-%s-%d`, the
/// parent's name cut to 245 characters when the whole would pass 253).
pub fn child_name(parent: &str, index: usize) -> String {
    let name = format!("split-{parent}-{index}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let mut cut = 245.min(parent.len());
    while !parent.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("split-{}-{index}", &parent[..cut])
}

/// Where one child stands in the datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Not there yet.
    Missing,
    /// There, as planned.
    Present,
    /// There with the right CIDR but other settings: the parent changed
    /// after the child was made, and the child follows it.
    Outdated,
}

/// A split of one pool: the parent and its children in address order.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    parent: Pool,
    parts: u32,
    children: Vec<Pool>,
}

impl Split {
    /// Plans the split of `parent` into `parts` pools, refusing what Calico
    /// refuses (see the module documentation).
    pub fn plan(parent: &Pool, parts: u32) -> Result<Split, SplitError> {
        // split.go, splitCIDR: log2(parts) must be a whole number other
        // than 0.
        if parts < 2 || !parts.is_power_of_two() {
            return Err(SplitError::PartsNotPowerOfTwo { parts });
        }
        if parts > MAX_PARTS {
            return Err(SplitError::TooManyParts { parts });
        }
        let cidr = parent.cidr();
        let bits = parts.trailing_zeros() as u8;
        // split.go, splitCIDR: ones + power must not pass the family's bits.
        let child_prefix = cidr.prefix_len() + bits;
        if child_prefix > cidr.max_prefix_len() {
            return Err(SplitError::PoolTooSmall {
                pool: parent.name().to_string(),
                cidr,
                parts,
            });
        }
        // The children are enabled (split.go: `Disabled = false`), and an
        // enabled pool is at least one block (ippool.go).
        if child_prefix > parent.block_size() {
            return Err(SplitError::ChildSmallerThanBlock {
                pool: parent.name().to_string(),
                cidr,
                parts,
                child_prefix,
                block_size: parent.block_size(),
            });
        }
        let subnets = cidr
            .subnets(child_prefix)
            .expect("child prefix is within the family and not shorter than the parent's");
        let children = subnets
            .enumerate()
            .map(|(index, child_cidr)| {
                let name = child_name(parent.name(), index);
                if name.len() > MAX_NAME {
                    return Err(SplitError::ChildNameTooLong { name, parts });
                }
                let mut spec = parent.spec().clone();
                spec.cidr = child_cidr;
                spec.disabled = false;
                // The parent's spec was valid, the CIDR is aligned and at
                // least one block, and nothing else changed.
                Ok(Pool::new(name, spec).expect("a child of a valid pool is valid"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Split {
            parent: parent.clone(),
            parts,
            children,
        })
    }

    /// The pool split.
    pub fn parent(&self) -> &Pool {
        &self.parent
    }

    /// The number of parts.
    pub fn parts(&self) -> u32 {
        self.parts
    }

    /// The child pools, in address order (child `i` is named `...-i`).
    pub fn children(&self) -> &[Pool] {
        &self.children
    }

    /// The children's prefix length.
    pub fn child_prefix(&self) -> u8 {
        self.parent.cidr().prefix_len() + self.parts.trailing_zeros() as u8
    }

    /// Refuses a block that would lie across two children: one shorter
    /// than the children's prefix inside the parent. Blocks of the parent's
    /// own size never do (their prefix is at least the children's).
    pub fn check_blocks<'a>(
        &self,
        blocks: impl IntoIterator<Item = &'a BlockCidr>,
    ) -> Result<(), SplitError> {
        let cidr = self.parent.cidr();
        let child_prefix = self.child_prefix();
        match blocks.into_iter().find(|b| {
            let net = b.net();
            net.prefix_len() < child_prefix
                && (cidr.contains(&net.network()) || net.contains(&cidr.network()))
        }) {
            Some(block) => Err(SplitError::BlockStraddles {
                pool: self.parent.name().to_string(),
                block: *block,
                parts: self.parts,
                most: 1 << block.net().prefix_len().saturating_sub(cidr.prefix_len()),
            }),
            None => Ok(()),
        }
    }

    /// Where each child stands among `pools` (every pool there is, the
    /// parent included), refusing a pool that overlaps the parent and is
    /// not one of its children, and a child's name taken by another pool.
    pub fn progress(&self, pools: &[Pool]) -> Result<Vec<ChildState>, SplitError> {
        let cidr = self.parent.cidr();
        let mut states = vec![ChildState::Missing; self.children.len()];
        for pool in pools {
            if pool.name() == self.parent.name() {
                continue;
            }
            let child = self.children.iter().position(|c| c.name() == pool.name());
            match child {
                Some(index) if self.children[index].cidr() == pool.cidr() => {
                    states[index] = if *pool == self.children[index] {
                        ChildState::Present
                    } else {
                        ChildState::Outdated
                    };
                }
                Some(index) => {
                    let existing = pool.cidr();
                    let begun = (cidr.contains(&existing.network())
                        && existing.prefix_len() > cidr.prefix_len())
                    .then(|| 1u32 << (existing.prefix_len() - cidr.prefix_len()).min(31));
                    return Err(SplitError::ChildNameTaken {
                        parent: self.parent.name().to_string(),
                        name: pool.name().to_string(),
                        existing,
                        wanted: self.children[index].cidr(),
                        begun,
                    });
                }
                None if self.parent.overlaps(&pool.cidr()) => {
                    return Err(SplitError::OtherPoolOverlaps {
                        pool: self.parent.name().to_string(),
                        cidr,
                        other: pool.name().to_string(),
                        other_cidr: pool.cidr(),
                    });
                }
                None => {}
            }
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{AllowedUse, AssignmentMode, PoolSpec};

    fn pool(name: &str, cidr: &str, block_size: u8) -> Pool {
        let spec = PoolSpec {
            block_size: Some(block_size),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        Pool::new(name, spec).unwrap()
    }

    // calicoctl's own test data (tests/st/utils/data.py, ippool_name1_rev1_v4
    // and its split1..4): 10.0.1.0/24 into 4.
    fn calico_parent() -> Pool {
        let mut spec = PoolSpec::new("10.0.1.0/24".parse().unwrap());
        spec.block_size = Some(27);
        spec.ipip_mode = Some("Always".into());
        spec.vxlan_mode = Some("Never".into());
        spec.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
        spec.assignment_mode = Some(AssignmentMode::Automatic);
        spec.node_selector = "foo == 'bar'".into();
        Pool::new("ippool-name1", spec).unwrap()
    }

    #[test]
    fn calicos_example_splits_into_its_four_children_with_the_parents_settings() {
        let parent = calico_parent();
        let split = Split::plan(&parent, 4).unwrap();
        let got: Vec<(String, String)> = split
            .children()
            .iter()
            .map(|c| (c.name().to_string(), c.cidr().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("split-ippool-name1-0", "10.0.1.0/26"),
                ("split-ippool-name1-1", "10.0.1.64/26"),
                ("split-ippool-name1-2", "10.0.1.128/26"),
                ("split-ippool-name1-3", "10.0.1.192/26"),
            ]
            .map(|(n, c)| (n.to_string(), c.to_string()))
        );
        for child in split.children() {
            let mut spec = child.spec().clone();
            spec.cidr = parent.cidr();
            assert_eq!(&spec, parent.spec(), "{}", child.name());
        }
    }

    #[test]
    fn calicos_refusals_keep_calicos_sentences() {
        let parent = calico_parent();
        for parts in [0, 1, 3, 6, 1000] {
            let err = Split::plan(&parent, parts).unwrap_err();
            assert_eq!(err, SplitError::PartsNotPowerOfTwo { parts });
            assert!(err
                .to_string()
                .starts_with("number to split CIDR into is not a valid power of 2: "));
        }
        let err = Split::plan(&parent, 512).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the CIDR 10.0.1.0/24 is not large enough to be split into 512 parts"),
            "{err}"
        );
        let err = Split::plan(&parent, 16).unwrap_err();
        assert!(matches!(
            err,
            SplitError::ChildSmallerThanBlock {
                child_prefix: 28,
                block_size: 27,
                ..
            }
        ));
        assert!(err
            .to_string()
            .starts_with("IP pool size is too small for use with Calico IPAM."));
        assert_eq!(Split::plan(&parent, 8).unwrap().child_prefix(), 27);
        let big = pool("big", "10.0.0.0/8", 32);
        assert_eq!(
            Split::plan(&big, 2048),
            Err(SplitError::TooManyParts { parts: 2048 })
        );
    }

    #[test]
    fn a_disabled_parent_makes_enabled_children_as_calico_does() {
        let mut spec = calico_parent().spec().clone();
        spec.disabled = true;
        let parent = Pool::new("off", spec).unwrap();
        let split = Split::plan(&parent, 2).unwrap();
        assert!(split.children().iter().all(Pool::enabled));
    }

    #[test]
    fn long_names_are_cut_as_calico_cuts_them() {
        let long = "a".repeat(250);
        let name = child_name(&long, 3);
        assert_eq!(name, format!("split-{}-3", "a".repeat(245)));
        assert_eq!(name.len(), 253);
        // split.go's cut leaves no room for two digits: refused, not stored.
        let parent = pool(&long, "10.0.0.0/16", 26);
        assert!(matches!(
            Split::plan(&parent, 16),
            Err(SplitError::ChildNameTooLong { .. })
        ));
        assert_eq!(child_name("p", 12), "split-p-12");
    }

    #[test]
    fn finds_the_pool_by_name_or_exact_cidr_only() {
        let pools = [calico_parent(), pool("other", "10.1.0.0/16", 26)];
        let by_name = SplitTarget::Name("other".into()).find(&pools).unwrap();
        assert_eq!(by_name.name(), "other");
        let by_cidr = SplitTarget::Cidr("10.0.1.0/24".parse().unwrap())
            .find(&pools)
            .unwrap();
        assert_eq!(by_cidr.name(), "ippool-name1");
        let err = SplitTarget::Cidr("10.0.1.0/25".parse().unwrap())
            .find(&pools)
            .unwrap_err();
        assert!(err.to_string().starts_with("unable to find IP pool"));
        assert!(err.to_string().contains("10.0.1.0/25"));
        let err = SplitTarget::Name("nope".into()).find(&pools).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_block_shorter_than_the_children_is_refused_by_name() {
        let parent = pool("p", "10.0.0.0/22", 26);
        let split = Split::plan(&parent, 4).unwrap();
        let straddling: BlockCidr = "10.0.0.0/23".parse().unwrap();
        let fitting: BlockCidr = "10.0.1.0/24".parse().unwrap();
        let outside: BlockCidr = "10.0.8.0/21".parse().unwrap();
        assert_eq!(split.check_blocks([&fitting, &outside]), Ok(()));
        let err = split.check_blocks([&fitting, &straddling]).unwrap_err();
        assert_eq!(
            err,
            SplitError::BlockStraddles {
                pool: "p".into(),
                block: straddling,
                parts: 4,
                most: 2
            }
        );
        assert!(err.to_string().contains("10.0.0.0/23"), "{err}");
    }

    #[test]
    fn progress_tells_missing_present_and_outdated_children_and_refuses_strangers() {
        let parent = calico_parent();
        let split = Split::plan(&parent, 4).unwrap();
        let mut pools = vec![parent.clone(), split.children()[1].clone()];
        let mut changed = split.children()[3].spec().clone();
        changed.nat_outgoing = true;
        pools.push(Pool::new(split.children()[3].name(), changed).unwrap());
        pools.push(pool("elsewhere", "10.9.0.0/16", 26));
        assert_eq!(
            split.progress(&pools),
            Ok(vec![
                ChildState::Missing,
                ChildState::Present,
                ChildState::Missing,
                ChildState::Outdated
            ])
        );
        // A split into 2 was begun: a split into 4 says so.
        let halves = Split::plan(&parent, 2).unwrap();
        let begun = [parent.clone(), halves.children()[0].clone()];
        let err = split.progress(&begun).unwrap_err();
        assert!(matches!(
            err,
            SplitError::ChildNameTaken { begun: Some(2), .. }
        ));
        assert!(err.to_string().contains("into 2 parts was begun"), "{err}");
        let stranger = [parent.clone(), pool("stranger", "10.0.1.0/27", 27)];
        assert!(matches!(
            split.progress(&stranger),
            Err(SplitError::OtherPoolOverlaps { .. })
        ));
        let taken = [parent, pool("split-ippool-name1-2", "10.7.0.0/16", 26)];
        let err = split.progress(&taken).unwrap_err();
        assert!(matches!(
            err,
            SplitError::ChildNameTaken { begun: None, .. }
        ));
    }

    proptest::proptest! {
        // Whatever the pool and the number, a split either makes children
        // that tile the parent exactly, in address order, each holding
        // whole blocks of the parent, or is refused for Calico's reason.
        #[test]
        fn children_tile_the_parent_and_keep_blocks_whole(
            v6 in proptest::bool::ANY,
            prefix in 0u8..=32,
            extra in 0u8..=12,
            exponent in 0u32..=12,
            seed in proptest::num::u128::ANY,
        ) {
            let (max, min_block) = if v6 { (128u8, 116u8) } else { (32, 20) };
            let prefix = if v6 { prefix + 96 } else { prefix };
            let block_size = prefix.max(min_block).saturating_add(extra).min(max);
            let base = crate::cidr::from_u128(
                seed,
                if v6 { crate::cidr::IpVersion::V6 } else { crate::cidr::IpVersion::V4 },
            );
            let cidr = IpNet::new(base, prefix).unwrap().trunc();
            let parent = pool("p", &cidr.to_string(), block_size);
            let parts = 1u32 << exponent;
            match Split::plan(&parent, parts) {
                Ok(split) => {
                    let children = split.children();
                    proptest::prop_assert_eq!(children.len() as u32, parts);
                    let size = |n: &IpNet| 1u128 << (n.max_prefix_len() - n.prefix_len()).min(127);
                    let mut next = crate::cidr::to_u128(cidr.network());
                    for (i, child) in children.iter().enumerate() {
                        proptest::prop_assert_eq!(child.name(), format!("split-p-{i}"));
                        proptest::prop_assert!(child.enabled());
                        proptest::prop_assert_eq!(crate::cidr::to_u128(child.cidr().network()), next);
                        proptest::prop_assert!(cidr.contains(&child.cidr()));
                        proptest::prop_assert!(child.cidr().prefix_len() <= block_size);
                        proptest::prop_assert_eq!(child.block_size(), block_size);
                        next = next.wrapping_add(size(&child.cidr()));
                        // The child's first and last blocks are whole blocks
                        // of the parent, so no block of the parent crosses
                        // into a neighbour.
                        let first = child.block_at(0);
                        let last = child.block_at(child.block_count() - 1);
                        proptest::prop_assert_eq!(parent.block_of(first.net().network()), Some(first));
                        proptest::prop_assert_eq!(parent.block_of(last.net().network()), Some(last));
                        proptest::prop_assert!(child.contains(last.address(last.size() - 1)));
                    }
                    proptest::prop_assert_eq!(
                        next,
                        crate::cidr::to_u128(cidr.network()).wrapping_add(size(&cidr))
                    );
                }
                Err(SplitError::PartsNotPowerOfTwo { .. }) => proptest::prop_assert_eq!(parts, 1),
                Err(SplitError::PoolTooSmall { .. }) => {
                    proptest::prop_assert!(u32::from(prefix) + exponent > u32::from(max))
                }
                Err(SplitError::ChildSmallerThanBlock { child_prefix, .. }) => {
                    proptest::prop_assert!(child_prefix > block_size)
                }
                Err(SplitError::TooManyParts { .. }) => proptest::prop_assert!(parts > MAX_PARTS),
                Err(other) => proptest::prop_assert!(false, "unexpected refusal {}", other),
            }
        }
    }
}
