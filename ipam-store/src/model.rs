//! What a datastore holds: Calico's six IPAM kinds as ipam-core types, the
//! keys that name them, and the revisions that guard them.

use std::fmt;

use ipam_core::{
    Affinity, AffinityKey, Block, BlockCidr, Handle, IpamConfig, Pool, ReservationSpec,
};

/// The kinds of object a datastore holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// IPPool.
    Pool,
    /// IPAMBlock.
    Block,
    /// IPAMHandle.
    Handle,
    /// BlockAffinity.
    Affinity,
    /// IPAMConfig (one object, `default`).
    Config,
    /// IPReservation.
    Reservation,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 6] = [
        Kind::Pool,
        Kind::Block,
        Kind::Handle,
        Kind::Affinity,
        Kind::Config,
        Kind::Reservation,
    ];

    /// Calico's kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pool => "IPPool",
            Kind::Block => "IPAMBlock",
            Kind::Handle => "IPAMHandle",
            Kind::Affinity => "BlockAffinity",
            Kind::Config => "IPAMConfig",
            Kind::Reservation => "IPReservation",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A pool, by name.
    Pool(String),
    /// A block, by CIDR.
    Block(BlockCidr),
    /// A handle, by handle id (not the Kubernetes object name).
    Handle(String),
    /// An affinity: one node, one block.
    Affinity(AffinityKey),
    /// The IPAM configuration singleton.
    Config,
    /// A reservation, by name.
    Reservation(String),
}

impl Key {
    /// The kind of object the key names.
    pub fn kind(&self) -> Kind {
        match self {
            Key::Pool(_) => Kind::Pool,
            Key::Block(_) => Kind::Block,
            Key::Handle(_) => Kind::Handle,
            Key::Affinity(_) => Kind::Affinity,
            Key::Config => Kind::Config,
            Key::Reservation(_) => Kind::Reservation,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Pool(name) => write!(f, "IPPool {name}"),
            Key::Block(cidr) => write!(f, "IPAMBlock {cidr}"),
            Key::Handle(id) => write!(f, "IPAMHandle {id}"),
            Key::Affinity(key) => write!(f, "BlockAffinity {} {}", key.node, key.cidr),
            Key::Config => f.write_str("IPAMConfig default"),
            Key::Reservation(name) => write!(f, "IPReservation {name}"),
        }
    }
}

/// A named IPReservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// The object's name.
    pub name: String,
    /// What it reserves.
    pub spec: ReservationSpec,
}

/// One object of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An IPPool.
    Pool(Pool),
    /// An IPAMBlock.
    Block(Block),
    /// An IPAMHandle.
    Handle(Handle),
    /// A BlockAffinity.
    Affinity(Affinity),
    /// The IPAMConfig.
    Config(IpamConfig),
    /// An IPReservation.
    Reservation(Reservation),
}

impl Value {
    /// The key the object is stored under.
    pub fn key(&self) -> Key {
        match self {
            Value::Pool(pool) => Key::Pool(pool.name().to_string()),
            Value::Block(block) => Key::Block(block.cidr()),
            Value::Handle(handle) => Key::Handle(handle.id().to_string()),
            Value::Affinity(affinity) => Key::Affinity(affinity.key()),
            Value::Config(_) => Key::Config,
            Value::Reservation(r) => Key::Reservation(r.name.clone()),
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        self.key().kind()
    }
}

/// An opaque version of one stored object: an etcd mod revision, a
/// Kubernetes resourceVersion, a counter. Only equality means anything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object as read, with the revision an update or delete must name.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The object.
    pub value: T,
    /// Its revision when read.
    pub revision: Revision,
}

/// What to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListQuery {
    /// Every object of a kind.
    All(Kind),
    /// The affinities of one node (in any state).
    AffinitiesOf(String),
}

impl ListQuery {
    /// The kind of objects the query returns.
    pub fn kind(&self) -> Kind {
        match self {
            ListQuery::All(kind) => *kind,
            ListQuery::AffinitiesOf(_) => Kind::Affinity,
        }
    }

    /// Whether a stored object belongs in the answer.
    pub fn matches(&self, key: &Key) -> bool {
        match (self, key) {
            (ListQuery::All(kind), key) => key.kind() == *kind,
            (ListQuery::AffinitiesOf(node), Key::Affinity(a)) => &a.node == node,
            (ListQuery::AffinitiesOf(_), _) => false,
        }
    }
}
