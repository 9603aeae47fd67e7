//! The names a request carries: the handle that owns addresses, the node
//! they are for, a pool's name. Each is its own type so that a request
//! built with two of them swapped does not compile; none converts from a
//! bare string implicitly, only through its `new`, where the caller says
//! which it means. They are as Calico stores them, and serialise as plain
//! strings.
//!
//! What a valid name is (the Kubernetes object-name rules) is checked at
//! the HTTP boundary (ipam-api's `names`), not here: the core takes the
//! names it finds in the datastore as they are.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! name_type {
    ($(#[doc = $doc:literal])* $name:ident) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name, as given.
            pub fn new(name: impl Into<String>) -> $name {
                $name(name.into())
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type! {
    /// A handle id: who holds addresses (`k8s-pod-network.<container id>`,
    /// `ipip-tunnel-addr-<node>`).
    HandleId
}

name_type! {
    /// A node's name: whom addresses and block affinities are for.
    NodeName
}

name_type! {
    /// An IP pool's name (its IPPool object's name).
    PoolName
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_strings_on_the_wire() {
        let handle = HandleId::new("k8s-pod-network.abc");
        assert_eq!(
            serde_json::to_string(&handle).unwrap(),
            "\"k8s-pod-network.abc\""
        );
        let node: NodeName = serde_json::from_str("\"node-1\"").unwrap();
        assert_eq!(node.as_str(), "node-1");
        assert_eq!(node.to_string(), "node-1");
        assert_eq!(
            &*PoolName::new("default-ipv4-ippool"),
            "default-ipv4-ippool"
        );
    }
}
