//! Object metadata as Calico writes it on IPAM objects, and carried over
//! unchanged when we rewrite an object, so that a read-modify-write keeps
//! the resourceVersion (the compare-and-swap), the uid (the delete
//! precondition) and every label and annotation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::Error;

/// Where Calico keeps the projectcalico.org/v3 metadata of a v1 object
/// (libcalico-go/lib/backend/k8s/resources/resources.go, metadataAnnotation).
pub const METADATA_ANNOTATION: &str = "projectcalico.org/metadata";

/// What that annotation holds on objects the IPAM code writes: Calico
/// builds them with nothing but a name and a resourceVersion, both of which
/// the conversion leaves out, so only the zero creation timestamp remains
/// (resources.go, ConvertCalicoResourceToK8sResource).
const IPAM_OBJECT_METADATA: &str = r#"{"creationTimestamp":null}"#;

/// The metadata to write: the previous object's, whole, when there is one;
/// otherwise a new object named `name`, annotated as Calico annotates the
/// objects it creates.
pub(crate) fn object_meta(name: String, previous: Option<&ObjectMeta>) -> ObjectMeta {
    match previous {
        Some(meta) => ObjectMeta {
            name: meta.name.clone().or(Some(name)),
            ..meta.clone()
        },
        None => ObjectMeta {
            name: Some(name),
            annotations: Some(BTreeMap::from([(
                METADATA_ANNOTATION.to_string(),
                IPAM_OBJECT_METADATA.to_string(),
            )])),
            ..ObjectMeta::default()
        },
    }
}

/// The object's name, for kinds whose identity is their name.
pub(crate) fn required_name<'a>(
    meta: &'a ObjectMeta,
    kind: &'static str,
) -> Result<&'a str, Error> {
    meta.name.as_deref().ok_or(Error::MissingName { kind })
}

/// The object's name for messages: empty when it has none.
pub(crate) fn display_name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_objects_carry_calicos_metadata_annotation() {
        let meta = object_meta("n".into(), None);
        assert_eq!(meta.name.as_deref(), Some("n"));
        assert_eq!(
            meta.annotations.unwrap()[METADATA_ANNOTATION],
            r#"{"creationTimestamp":null}"#
        );
    }

    #[test]
    fn previous_metadata_is_kept_whole() {
        let previous = ObjectMeta {
            name: Some("old".into()),
            resource_version: Some("42".into()),
            uid: Some("u".into()),
            labels: Some(BTreeMap::from([("a".into(), "b".into())])),
            ..ObjectMeta::default()
        };
        assert_eq!(object_meta("new".into(), Some(&previous)), previous);
        let unnamed = ObjectMeta::default();
        assert_eq!(
            object_meta("new".into(), Some(&unnamed)).name.as_deref(),
            Some("new")
        );
    }

    #[test]
    fn a_missing_name_is_reported_with_the_kind() {
        let err = required_name(&ObjectMeta::default(), "IPPool").unwrap_err();
        assert_eq!(err.to_string(), "IPPool has no metadata.name");
        assert_eq!(display_name(&ObjectMeta::default()), "");
    }
}
