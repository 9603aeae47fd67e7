//! Shared by the integration tests: reading Calico's fixtures, and checking
//! an object against a CRD schema the way the API server would, with
//! `crds::validation` (types, required fields, enums, bounds, nullability,
//! set duplicates, and fields it would prune).

#![allow(
    dead_code,
    reason = "each test binary that includes this uses a different part"
)]

use std::path::PathBuf;

use crds::validation;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// A file of ../fixtures/calico, as JSON.
pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/calico")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The generated CRD for a plural name.
pub fn crd(plural: &str) -> CustomResourceDefinition {
    crds::manifests::crds()
        .unwrap()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no CRD for {plural}"))
}

/// Asserts that the API server would store `object` under the CRD for
/// `plural` as it is: valid (its name too), and with nothing pruned or
/// dropped. Defaults may be filled in: the API server adds them to
/// Calico's objects too. The judging is `crds::validation`, the same code
/// testkit's API server runs on every write.
pub fn assert_accepted(plural: &str, object: &Value) {
    let crd = crd(plural);
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    let mut stored = object.clone();
    let admission = validation::admit(schema, &mut stored);
    let mut errors = admission.errors;
    errors.extend(validation::name_errors(object["metadata"]["name"].as_str()));
    assert!(
        errors.is_empty() && admission.dropped.is_empty(),
        "{plural} rejects {object}: {errors:?}; would drop {:?}",
        admission.dropped
    );
}
