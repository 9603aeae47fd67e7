//! The allocation core of a Calico-compatible IPAM: pools cut into blocks,
//! blocks whose ordinals are handed out and returned in Calico's order,
//! handles that record who holds what (and [`holder`], what an allocation's
//! attributes say of its holder), node affinities, the IPAM config and
//! reservations, and the planner that turns a request plus a [`Snapshot`] of
//! those objects into the writes that fulfil it.
//!
//! The crate does no I/O, spawns nothing, reads no clock and draws no random
//! numbers: the current time comes in as [`plan::Now`], and storage,
//! retries and compare-and-swap belong to the crates around it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod affinity;
pub mod block;
pub mod check;
pub mod cidr;
pub mod config;
pub mod cooldown;
pub mod error;
pub mod gc;
pub mod handle;
mod handle_index;
pub mod holder;
pub mod labels;
pub mod names;
mod packed;
pub mod plan;
pub mod planner;
pub mod pool;
pub mod reservation;
pub mod selector;
pub mod snapshot;
pub mod space;
pub mod split;
pub mod timestamp;
pub mod unknown;
pub mod usage;

pub use affinity::{Affinity, AffinityKey, AffinityState};
pub use block::{Attribute, Block, BlockOwner, BlockSpec};
pub use cidr::{BlockCidr, IpVersion};
pub use config::IpamConfig;
pub use error::{Error, NoPoolCause};
pub use handle::{Handle, HandleName, HandleSpec};
pub use holder::{Holder, PodRef, ServiceRef, TunnelKind};
pub use names::{HandleId, NodeName, PoolName};
pub use plan::{
    AssignIpRequest, AutoAssignPlan, AutoAssignRequest, Now, Plan, ReleasePlan, ReleaseRequest,
    Write,
};
pub use pool::{AllowedUse, Pool, PoolSpec};
pub use reservation::ReservationSpec;
pub use snapshot::{Holding, Snapshot};
