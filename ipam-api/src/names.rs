//! The names the API accepts: handle ids, node names, pool names and
//! allocation attributes, held to what Calico's Kubernetes datastore can
//! store, on every datastore, so that state written through one backend
//! can move to another (and a handle accepted today is not refused by
//! Kubernetes tomorrow). The server checks them; the patterns here are
//! also those of its OpenAPI document, and clients may check before
//! sending.
//!
//! - A pool is an IPPool object: its name must be a Kubernetes object name
//!   (RFC 1123 subdomain: at most 253 characters of `a-z`, `0-9`, `-` and
//!   `.`, each dot-separated part starting and ending with a letter or
//!   digit; Kubernetes' `IsDNS1123Subdomain`).
//! - A handle id becomes the name of an IPAMHandle object once lower-cased
//!   (crds::handle::handle_object_name, after libcalico-go's
//!   k8s/resources/ipam_handle.go), so it may hold capitals, and is
//!   otherwise the same rule.
//! - A node is a Kubernetes Node, and its name appears in BlockAffinity
//!   names (`<node>-<block>`, shortened with a hash from 253 characters on:
//!   crds::affinity::affinity_object_name) and, hashed, in their labels: the
//!   object-name rule, lower case as Calico writes node names
//!   (libcalico-go's `DetermineNodeName` lower-cases the host name).
//! - Allocation attributes are stored in every IPAMBlock beside the
//!   allocation, so they are bounded: see [`check_attributes`].

use std::collections::BTreeMap;

use ipam_core::holder;

/// Kubernetes' limit on an object name (and on an RFC 1123 subdomain).
pub const MAX_NAME: usize = 253;
/// Kubernetes' limit on an RFC 1123 label (a namespace name).
pub const MAX_LABEL: usize = 63;
/// Most attributes one allocation may carry. Calico writes at most five
/// (node, namespace, pod, timestamp, and type or a KubeVirt name).
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest attribute value: the longest name Calico records (a pod or a
/// node), so that a full block stays far below Kubernetes' object size
/// limit (64 allocations × 16 attributes × 253 characters ≈ 260 KB).
pub const MAX_ATTRIBUTE_VALUE: usize = 253;

/// The pattern of an RFC 1123 subdomain, for the OpenAPI document.
pub const SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The same, capitals allowed (a handle id).
pub const HANDLE_PATTERN: &str =
    "^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$";
/// The characters of a handle id, for a prefix of one.
pub const HANDLE_PREFIX_PATTERN: &str = "^[-.A-Za-z0-9]*$";

/// Whether `name` is an RFC 1123 subdomain, capitals allowed when
/// `capitals`.
pub(crate) fn is_subdomain(name: &str, capitals: bool) -> bool {
    let part_ok = |part: &str| {
        let bytes = part.as_bytes();
        let alnum = |b: u8| {
            b.is_ascii_digit() || b.is_ascii_lowercase() || (capitals && b.is_ascii_uppercase())
        };
        !bytes.is_empty()
            && alnum(bytes[0])
            && alnum(bytes[bytes.len() - 1])
            && bytes.iter().all(|&b| alnum(b) || b == b'-')
    };
    !name.is_empty() && name.len() <= MAX_NAME && name.split('.').all(part_ok)
}

/// A name or attribute the API refuses, naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The field is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The field (`handle`, `attributes.node`).
        field: String,
    },
    /// The value breaks the rule.
    #[error("{field}: {shown} {rule}")]
    Invalid {
        /// The field.
        field: String,
        /// The value quoted, cut after 80 characters so that a 900 KB name
        /// does not come back in full.
        shown: String,
        /// What the value must be.
        rule: &'static str,
    },
    /// Too many attributes.
    #[error("{field}: {count} attributes, at most {MAX_ATTRIBUTES}")]
    TooMany {
        /// The field.
        field: String,
        /// How many were given.
        count: usize,
    },
    /// Too many labels ([`crate::labels::check_labels`]).
    #[error("{field}: {count} labels, at most {}", crate::labels::MAX_LABELS)]
    TooManyLabels {
        /// The field.
        field: String,
        /// How many were given.
        count: usize,
    },
}

pub(crate) fn refuse(field: &str, value: &str, rule: &'static str) -> NameError {
    const SHOWN: usize = 80;
    let cut: String = value.chars().take(SHOWN).collect();
    let shown = if cut.len() < value.len() {
        format!("{cut:?}... ({} bytes)", value.len())
    } else {
        format!("{cut:?}")
    };
    NameError::Invalid {
        field: field.to_string(),
        shown,
        rule,
    }
}

fn require(field: &str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty {
            field: field.to_string(),
        });
    }
    Ok(())
}

const OBJECT_NAME_RULE: &str = "is not a Kubernetes object name: at most 253 characters of a-z, 0-9, '-' and '.', each '.'-separated part starting and ending with a letter or digit";

/// A handle id: an IPAMHandle name once lower-cased.
pub fn check_handle(field: &str, handle: &str) -> Result<(), NameError> {
    require(field, handle)?;
    if !is_subdomain(handle, true) {
        return Err(refuse(
            field,
            handle,
            "is not a handle id: lower-cased it must be a Kubernetes object name (at most 253 characters of letters, digits, '-' and '.', each '.'-separated part starting and ending with a letter or digit), as `k8s-pod-network.<container id>`",
        ));
    }
    Ok(())
}

/// The start of handle ids: their characters, at most 253 of them.
pub fn check_handle_prefix(field: &str, prefix: &str) -> Result<(), NameError> {
    let valid = prefix.len() <= MAX_NAME
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(refuse(
            field,
            prefix,
            "cannot start a handle id: at most 253 characters of letters, digits, '-' and '.'",
        ));
    }
    Ok(())
}

/// A node name: a Kubernetes Node's.
pub fn check_node(field: &str, node: &str) -> Result<(), NameError> {
    require(field, node)?;
    if !is_subdomain(node, false) {
        return Err(refuse(field, node, OBJECT_NAME_RULE));
    }
    Ok(())
}

/// A pool name: an IPPool's object name.
pub fn check_pool(field: &str, pool: &str) -> Result<(), NameError> {
    check_object_name(field, pool)
}

/// A Kubernetes object name (a pool's, a pod's, a reservation's).
pub fn check_object_name(field: &str, value: &str) -> Result<(), NameError> {
    require(field, value)?;
    if !is_subdomain(value, false) {
        return Err(refuse(field, value, OBJECT_NAME_RULE));
    }
    Ok(())
}

/// The rule for a Kubernetes label key's name part (`IsQualifiedName`): at
/// most 63 characters of letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit.
pub(crate) fn is_key_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes
            .iter()
            .all(|&b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
}

/// A label or attribute key as Kubernetes takes a label key:
/// `[prefix/]name`, the name a qualified name, the prefix a DNS subdomain.
pub(crate) fn check_label_key(field: &str, key: &str) -> Result<(), NameError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if !is_key_name(name) || prefix.is_some_and(|p| !is_subdomain(p, false)) {
        return Err(refuse(
            &format!("{field} key"),
            key,
            "is not a Kubernetes label key: [prefix/]name, the name at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, the prefix a Kubernetes object name",
        ));
    }
    Ok(())
}

/// Allocation attributes (`attributes` of assign and assign-ip), stored
/// with the addresses in their block:
/// - at most [`MAX_ATTRIBUTES`] of them;
/// - each key a Kubernetes label key: a name of at most 63 letters, digits,
///   `-`, `_` and `.` starting and ending with a letter or digit,
///   optionally after a prefix that is an RFC 1123 subdomain and a `/`;
/// - each value at most [`MAX_ATTRIBUTE_VALUE`] characters, none of them a
///   control character;
/// - the keys Calico gives a meaning (libcalico-go ipam's `AttributeNode`,
///   `AttributeNamespace`, `AttributePod`) hold what their name says, never
///   empty: `node` a node name, `namespace` an RFC 1123 label (at most 63
///   characters), `pod` a Kubernetes object name — garbage collection,
///   `check` and the metrics read them.
pub fn check_attributes(
    field: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<(), NameError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(NameError::TooMany {
            field: field.to_string(),
            count: attributes.len(),
        });
    }
    for (key, value) in attributes {
        check_label_key(field, key)?;
        let entry = format!("{field}.{key}");
        if value.chars().count() > MAX_ATTRIBUTE_VALUE || value.chars().any(char::is_control) {
            return Err(refuse(
                &entry,
                value,
                "is not an attribute value: at most 253 characters, no control characters",
            ));
        }
        match key.as_str() {
            holder::NODE => check_node(&entry, value)?,
            holder::POD => check_object_name(&entry, value)?,
            holder::NAMESPACE => {
                require(&entry, value)?;
                if value.len() > MAX_LABEL || value.contains('.') || !is_subdomain(value, false) {
                    return Err(refuse(
                        &entry,
                        value,
                        "is not a namespace name: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_rfc_1123_subdomains() {
        for good in [
            "a",
            "node-1",
            "ip-10-0-0-1.ec2.internal",
            "0",
            &"a".repeat(253),
        ] {
            assert!(check_node("node", good).is_ok(), "{good}");
            assert!(check_pool("name", good).is_ok(), "{good}");
        }
        for bad in [
            "Node-1",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a b",
            "é",
            &"a".repeat(254),
        ] {
            let error = check_node("node", bad).unwrap_err().to_string();
            assert!(error.starts_with("node: \""), "{bad}: {error}");
            assert!(check_pool("name", bad).is_err(), "{bad}");
        }
        let empty = check_node("node", "").unwrap_err();
        assert_eq!(
            empty,
            NameError::Empty {
                field: "node".to_string()
            }
        );
        assert_eq!(empty.to_string(), "node must not be empty");
    }

    #[test]
    fn handles_are_object_names_once_lower_cased() {
        for good in [
            "k8s-pod-network.0123abcdef",
            "K8S-Pod-Network.ABC",
            "default.my-pod",
            "ipip-tunnel-addr-node-1",
            "lb-5f4dcc3b5aa765d61d8327deb882cf99",
        ] {
            assert!(check_handle("handle", good).is_ok(), "{good}");
        }
        for bad in ["my_net.abc", "a..b", "h/1", "h ", &"h".repeat(254)] {
            let error = check_handle("handle", bad).unwrap_err().to_string();
            assert!(error.contains("is not a handle id"), "{error}");
        }
        // A huge value is named, not echoed.
        let huge = check_handle("handle", &"x_".repeat(450_000))
            .unwrap_err()
            .to_string();
        assert!(huge.len() < 600, "{}", huge.len());
        assert!(huge.contains("(900000 bytes)"), "{huge}");
        assert!(check_handle_prefix("prefix", "k8s-pod-network.").is_ok());
        assert!(check_handle_prefix("prefix", "").is_ok());
        assert!(check_handle_prefix("prefix", "a_b").is_err());
    }

    #[test]
    fn attributes_are_bounded_and_calicos_keys_mean_what_they_say() {
        let of = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let calico = of(&[
            ("node", "node-1"),
            ("namespace", "kube-system"),
            ("pod", "coredns-5d78c9869d-abcde"),
            ("timestamp", "2026-11-23 03:33:38.123456789 +0000 UTC"),
            ("projectcalico.org/owner", ""),
        ]);
        assert!(check_attributes("attributes", &calico).is_ok());
        let cases: [(&[(&str, &str)], &str); 8] = [
            (&[("node", "")], "attributes.node must not be empty"),
            (
                &[("node", "Node_1")],
                "attributes.node: \"Node_1\" is not a Kubernetes object name",
            ),
            (
                &[("namespace", "a.b")],
                "attributes.namespace: \"a.b\" is not a namespace name",
            ),
            (&[("pod", "")], "attributes.pod must not be empty"),
            (
                &[("bad key", "v")],
                "attributes key: \"bad key\" is not a Kubernetes label key",
            ),
            (&[("Prefix.io/k", "v")], "is not a Kubernetes label key"),
            (
                &[("k", "line\nbreak")],
                "attributes.k: \"line\\nbreak\" is not an attribute value",
            ),
            (
                &[("k", &"v".repeat(254))],
                "(254 bytes) is not an attribute value",
            ),
        ];
        for (pairs, expected) in cases {
            let error = check_attributes("attributes", &of(pairs))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{pairs:?}: {error}");
        }
        let many: BTreeMap<String, String> = (0..17)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let error = check_attributes("attributes", &many).unwrap_err();
        assert_eq!(error.to_string(), "attributes: 17 attributes, at most 16");
    }
}
