//! What this crate refuses, and why: an object ipam-core will not accept, a
//! field that does not parse, or a generated manifest that Kubernetes would
//! reject. Every variant names the kind, object and field at fault.

/// Why a wire object could not be converted, or a manifest not produced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field holds a value Calico would not have written.
    #[error("{kind} {name:?}: field {field}: {value:?} {problem}")]
    InvalidField {
        /// The kind of the object (`IPAMBlock`, `IPPool`, ...).
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The JSON field, as Calico spells it.
        field: &'static str,
        /// The value found.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// ipam-core refused the object's spec.
    #[error("{kind} {name:?}: {source}")]
    Refused {
        /// The kind of the object.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The core's reason (boxed: it is large, and errors are rare).
        source: Box<ipam_core::Error>,
    },
    /// An object whose identity is its name has none.
    #[error("{kind} has no metadata.name")]
    MissingName {
        /// The kind of the object.
        kind: &'static str,
    },
    /// A generated CRD schema breaks Kubernetes' structural schema rules.
    #[error("CRD {crd} is not structural: {}", problems.join("; "))]
    NotStructural {
        /// The CRD's name (`ipamblocks.crd.projectcalico.org`).
        crd: String,
        /// Each rule broken, with the schema path where it is broken.
        problems: Vec<String>,
    },
    /// A CRD could not be rendered as YAML.
    #[error("rendering CRD {crd} as YAML: {source}")]
    Render {
        /// The CRD's name.
        crd: String,
        /// The serialiser's error.
        source: serde_saphyr::SerializeError,
    },
}
