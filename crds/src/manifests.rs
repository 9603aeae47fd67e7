//! The CRD manifests, generated from the wire types: one file per kind and
//! one with them all, written by `cargo xtask gen` and checked in under
//! `crds/`. A test (xtask/tests/generated.rs) fails when the checked-in
//! files differ from what the types generate.
//!
//! The types describe each spec; this module shapes the envelope as
//! Calico's published CRDs have it (root properties `apiVersion`, `kind`,
//! `metadata`; no root `required`; `preserveUnknownFields: false`; no
//! descriptions), so that our CRDs are Calico's, and refuses to produce
//! one that Kubernetes would reject as not structural.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::core::crd::v1::CustomResourceExt;

use crate::error::Error;
use crate::structural;
use crate::{BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle, IPPool, IPReservation, GROUP};

/// The file that holds every CRD, for `kubectl apply -f crds/all.yaml`.
pub const ALL_FILE: &str = "all.yaml";

const HEADER: &str = "# Generated from the crds crate's types by `cargo xtask gen`.\n\
# Do not edit: change the types, then run that command again.\n";

/// One manifest file: its name within `crds/` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// File name, such as `crd.projectcalico.org_ipamblocks.yaml`.
    pub file_name: String,
    /// The YAML text.
    pub text: String,
}

/// Every CRD the IPAM uses, by plural name, each shaped like Calico's and
/// checked to be structural.
pub fn crds() -> Result<Vec<CustomResourceDefinition>, Error> {
    let mut crds = vec![
        BlockAffinity::crd(),
        IPAMBlock::crd(),
        IPAMConfig::crd(),
        IPAMHandle::crd(),
        IPPool::crd(),
        IPReservation::crd(),
    ];
    for crd in &mut crds {
        shape_like_calico(crd);
        check_structural(crd)?;
    }
    Ok(crds)
}

fn check_structural(crd: &CustomResourceDefinition) -> Result<(), Error> {
    let problems = structural::problems(crd);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::NotStructural {
            crd: crd.metadata.name.clone().unwrap_or_default(),
            problems,
        })
    }
}

/// The manifest files: one per CRD, named as Calico names its files
/// (`crd.projectcalico.org_<plural>.yaml`), then [`ALL_FILE`].
pub fn render() -> Result<Vec<Manifest>, Error> {
    let mut files = Vec::new();
    let mut all = String::from(HEADER);
    for crd in crds()? {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = to_yaml(&crd).map_err(|source| Error::Render { crd: name, source })?;
        all.push_str("---\n");
        all.push_str(&yaml);
        files.push(Manifest {
            file_name: format!("{GROUP}_{}.yaml", crd.spec.names.plural),
            text: format!("{HEADER}{yaml}"),
        });
    }
    files.push(Manifest {
        file_name: ALL_FILE.to_string(),
        text: all,
    });
    Ok(files)
}

/// YAML with integral bounds written as integers: k8s-openapi holds
/// `minimum`/`maximum` as floats, which would print as `128.0`.
fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    // Serialising plain data into a JSON value cannot fail: CRDs are
    // string-keyed maps all the way down.
    let mut value = serde_json::to_value(crd).unwrap_or_default();
    integral_floats_as_integers(&mut value);
    // Long strings stay on one line, as Calico's controller-gen output has
    // them, rather than folded at 80 columns.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(&value, options)
}

fn integral_floats_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                // Exact: the value is integral and well within f64's integer range.
                *value = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(integral_floats_as_integers)
        }
        _ => {}
    }
}

fn shape_like_calico(crd: &mut CustomResourceDefinition) {
    crd.spec.preserve_unknown_fields = Some(false);
    crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        strip_descriptions(root);
        root.title = None;
        // Calico requires nothing at the root; kube would require `spec`.
        root.required = None;
        let typed = |type_: &str| JSONSchemaProps {
            type_: Some(type_.to_string()),
            ..JSONSchemaProps::default()
        };
        let properties = root.properties.get_or_insert_with(Default::default);
        properties.insert("apiVersion".to_string(), typed("string"));
        properties.insert("kind".to_string(), typed("string"));
        properties.insert("metadata".to_string(), typed("object"));
    }
}

// Calico's v1 CRDs carry no descriptions; ours come from Rust doc comments
// written for Rust readers.
fn strip_descriptions(node: &mut JSONSchemaProps) {
    node.description = None;
    for child in node.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_descriptions(child);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = node.additional_properties.as_mut() {
        strip_descriptions(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(child)) = node.items.as_mut() {
        strip_descriptions(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_that_is_not_structural_is_refused_with_its_problems() {
        let mut crd = IPAMHandle::crd();
        shape_like_calico(&mut crd);
        assert!(check_structural(&crd).is_ok());
        let spec = crd.spec.versions[0]
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .unwrap();
        spec.properties
            .as_mut()
            .unwrap()
            .get_mut("handleID")
            .unwrap()
            .type_ = None;
        let err = check_structural(&crd).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CRD ipamhandles.crd.projectcalico.org is not structural: \
             v1.spec.handleID: type must be set"
        );
    }

    #[test]
    fn every_file_starts_with_the_do_not_edit_header() {
        for manifest in render().unwrap() {
            assert!(manifest.text.starts_with(HEADER), "{}", manifest.file_name);
        }
        let yaml = to_yaml(&IPPool::crd()).unwrap();
        assert!(yaml.contains("maximum: 128\n"), "bounds print as integers");
    }
}
