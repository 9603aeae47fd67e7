//! The CRD manifests: the checked-in YAML is what the types generate, every
//! schema is structural, and every CRD is Calico's v3.32.1 CRD (same group,
//! kind, names, scope, version and schema) plus the fields Calico added
//! since for IP cooldown, so that `kubectl apply -f crds/` over Calico's
//! CRDs changes nothing that matters.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use crds::manifests::{render, ALL_FILE};
use crds::structural;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_documents(text: &str) -> Vec<CustomResourceDefinition> {
    serde_saphyr::from_multiple(text).unwrap()
}

#[test]
fn no_yaml_in_crds_is_left_over_from_older_types() {
    let generated: BTreeSet<String> = render().unwrap().into_iter().map(|m| m.file_name).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(crds_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        .collect();
    assert_eq!(
        on_disk, generated,
        "`kubectl apply -f crds/` would apply exactly these"
    );
}

#[test]
fn every_checked_in_crd_is_structural() {
    let mut count = 0;
    for manifest in render().unwrap() {
        let text = std::fs::read_to_string(crds_dir().join(&manifest.file_name)).unwrap();
        for crd in parse_documents(&text) {
            assert_eq!(
                structural::problems(&crd),
                Vec::<String>::new(),
                "{}",
                manifest.file_name
            );
            count += 1;
        }
    }
    assert_eq!(
        count, 12,
        "six kinds, each in its own file and in {ALL_FILE}"
    );
}

#[test]
fn all_yaml_holds_each_per_kind_crd_once() {
    let files = render().unwrap();
    let (all, singles): (Vec<_>, Vec<_>) = files.iter().partition(|m| m.file_name == ALL_FILE);
    let from_all = parse_documents(&all[0].text);
    let from_singles: Vec<CustomResourceDefinition> = singles
        .iter()
        .flat_map(|m| parse_documents(&m.text))
        .collect();
    assert_eq!(from_all, from_singles);
}

/// One line per schema node: its path and every keyword that constrains a
/// value, so that two schemas compare by what they accept.
fn describe(schema: &JSONSchemaProps, path: &str, lines: &mut Vec<String>) {
    let mut line = format!("{path}: {}", schema.type_.as_deref().unwrap_or("?"));
    let mut add = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            line.push_str(&format!(" {key}={value}"));
        }
    };
    add("format", schema.format.clone());
    add("nullable", schema.nullable.map(|n| n.to_string()));
    add("default", schema.default.as_ref().map(|d| d.0.to_string()));
    add(
        "enum",
        schema.enum_.as_ref().map(|e| {
            e.iter()
                .map(|v| v.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }),
    );
    add("minimum", schema.minimum.map(|n| n.to_string()));
    add("maximum", schema.maximum.map(|n| n.to_string()));
    add("maxLength", schema.max_length.map(|n| n.to_string()));
    add("maxItems", schema.max_items.map(|n| n.to_string()));
    add("listType", schema.x_kubernetes_list_type.clone());
    add(
        "preserveUnknown",
        schema
            .x_kubernetes_preserve_unknown_fields
            .map(|p| p.to_string()),
    );
    add(
        "required",
        schema.required.as_ref().map(|r| {
            let mut sorted = r.clone();
            sorted.sort();
            sorted.join(",")
        }),
    );
    lines.push(line);
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        lines.push(format!(
            "{path}: rule {} | {} | {}",
            rule.rule,
            rule.message.as_deref().unwrap_or(""),
            rule.reason.as_deref().unwrap_or("")
        ));
    }
    for (name, child) in schema.properties.iter().flatten() {
        describe(child, &format!("{path}.{name}"), lines);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = &schema.additional_properties {
        describe(child, &format!("{path}[*]"), lines);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(child)) = &schema.items {
        describe(child, &format!("{path}[]"), lines);
    }
}

/// What Calico v3.32.1 publishes for each kind, restated from
/// libcalico-go/config/crd/crd.projectcalico.org_<plural>.yaml: kind, then
/// the schema described as [`describe`] does; with the two fields of IP
/// cooldown (projectcalico/calico #12638, on master since 2026-06:
/// IPAMBlock `attributes[].releasedAt`, IPAMConfig `ipCooldownSeconds`).
/// IPAMBlock, IPAMConfig, IPAMHandle and BlockAffinity are then Calico's
/// current CRDs field for field (checked against master at 87c15906f2);
/// IPPool and IPReservation stay at v3.32.1 (see README, Deploying).
fn calico_v3_32_1_with_cooldown(plural: &str) -> (&'static str, Vec<&'static str>) {
    const ENVELOPE: [&str; 4] = [
        ": object",
        ".apiVersion: string",
        ".kind: string",
        ".metadata: object",
    ];
    let (kind, spec): (&str, &[&str]) = match plural {
        "blockaffinities" => ("BlockAffinity", &[
            ".spec: object required=cidr,deleted,node,state",
            ".spec.cidr: string",
            ".spec.deleted: string",
            ".spec.node: string",
            ".spec.state: string",
            ".spec.type: string",
        ]),
        "ipamblocks" => ("IPAMBlock", &[
            ".spec: object required=allocations,attributes,cidr,strictAffinity,unallocated",
            ".spec.affinity: string",
            ".spec.affinityClaimTime: string format=date-time",
            ".spec.allocations: array",
            ".spec.allocations[]: integer nullable=true",
            ".spec.attributes: array",
            ".spec.attributes[]: object",
            ".spec.attributes[].alternateOwnerAttrs: object",
            ".spec.attributes[].alternateOwnerAttrs[*]: string",
            ".spec.attributes[].handle_id: string",
            ".spec.attributes[].releasedAt: string format=date-time",
            ".spec.attributes[].secondary: object",
            ".spec.attributes[].secondary[*]: string",
            ".spec.cidr: string",
            ".spec.deleted: boolean",
            ".spec.sequenceNumber: integer format=int64 default=0",
            ".spec.sequenceNumberForAllocation: object",
            ".spec.sequenceNumberForAllocation[*]: integer format=int64",
            ".spec.strictAffinity: boolean",
            ".spec.unallocated: array",
            ".spec.unallocated[]: integer",
        ]),
        "ipamconfigs" => ("IPAMConfig", &[
            ".spec: object required=autoAllocateBlocks,strictAffinity",
            ".spec.autoAllocateBlocks: boolean",
            ".spec.ipCooldownSeconds: integer minimum=0 maximum=1200",
            ".spec.kubeVirtVMAddressPersistence: string enum=\"Enabled\",\"Disabled\"",
            ".spec.maxBlocksPerHost: integer minimum=0 maximum=2147483647",
            ".spec.strictAffinity: boolean",
        ]),
        "ipamhandles" => ("IPAMHandle", &[
            ".spec: object required=block,handleID",
            ".spec.block: object",
            ".spec.block[*]: integer",
            ".spec.deleted: boolean",
            ".spec.handleID: string",
        ]),
        "ippools" => ("IPPool", &[
            ".spec: object required=cidr",
            ".spec: rule !has(self.ipipMode) || !has(self.vxlanMode) || self.ipipMode == 'Never' || self.vxlanMode == 'Never' || size(self.ipipMode) == 0 || size(self.vxlanMode) == 0 | ipipMode and vxlanMode cannot both be enabled | FieldValueForbidden",
            ".spec: rule !has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || (!has(self.ipipMode) || size(self.ipipMode) == 0 || self.ipipMode == 'Never') && (!has(self.vxlanMode) || size(self.vxlanMode) == 0 || self.vxlanMode == 'Never') | LoadBalancer IP pool cannot have IPIP or VXLAN enabled | FieldValueForbidden",
            ".spec: rule !has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || !self.allowedUses.exists(u, u == 'Workload' || u == 'Tunnel') | LoadBalancer cannot be combined with Workload or Tunnel allowed uses | FieldValueForbidden",
            ".spec: rule !self.cidr.contains(':') || !has(self.ipipMode) || self.ipipMode == 'Never' || size(self.ipipMode) == 0 | IPIP is not supported on IPv6 pools | FieldValueForbidden",
            ".spec.allowedUses: array maxItems=10 listType=set",
            ".spec.allowedUses[]: string enum=\"Workload\",\"Tunnel\",\"LoadBalancer\"",
            ".spec.assignmentMode: string default=\"Automatic\" enum=\"Automatic\",\"Manual\"",
            ".spec.blockSize: integer minimum=0 maximum=128",
            ".spec.blockSize: rule self == oldSelf | Block size cannot be changed; follow IP pool migration guide to avoid corruption. | FieldValueInvalid",
            ".spec.cidr: string format=cidr maxLength=48",
            ".spec.cidr: rule self == oldSelf | CIDR cannot be changed; follow IP pool migration guide to avoid corruption. | FieldValueInvalid",
            ".spec.disableBGPExport: boolean",
            ".spec.disabled: boolean",
            ".spec.ipipMode: string enum=\"Never\",\"Always\",\"CrossSubnet\"",
            ".spec.namespaceSelector: string",
            ".spec.natOutgoing: boolean",
            ".spec.nodeSelector: string",
            ".spec.vxlanMode: string enum=\"Never\",\"Always\",\"CrossSubnet\"",
        ]),
        "ipreservations" => ("IPReservation", &[
            ".spec: object",
            ".spec.reservedCIDRs: array format=cidr listType=set",
            ".spec.reservedCIDRs[]: string",
        ]),
        other => panic!("Calico has no IPAM kind {other}"),
    };
    let mut lines: Vec<&str> = ENVELOPE.to_vec();
    lines.extend_from_slice(spec);
    (kind, lines)
}

#[test]
fn every_crd_is_calicos_v3_32_1_crd_with_the_cooldown_fields() {
    let crds = crds::manifests::crds().unwrap();
    let plurals: Vec<&str> = crds.iter().map(|c| c.spec.names.plural.as_str()).collect();
    assert_eq!(
        plurals,
        [
            "blockaffinities",
            "ipamblocks",
            "ipamconfigs",
            "ipamhandles",
            "ippools",
            "ipreservations"
        ]
    );
    for crd in &crds {
        let plural = crd.spec.names.plural.as_str();
        let (kind, expected) = calico_v3_32_1_with_cooldown(plural);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.crd.projectcalico.org").as_str())
        );
        assert_eq!(crd.spec.group, "crd.projectcalico.org");
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.preserve_unknown_fields, Some(false));
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(
            crd.spec.names.list_kind.as_deref(),
            Some(format!("{kind}List").as_str())
        );
        assert_eq!(
            crd.spec.names.singular.as_deref(),
            Some(kind.to_lowercase().as_str())
        );
        assert_eq!(crd.spec.names.short_names, None);
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(
            (version.name.as_str(), version.served, version.storage),
            ("v1", true, true)
        );
        assert_eq!(
            version.subresources, None,
            "Calico's IPAM CRDs have no status"
        );
        let schema = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let mut lines = Vec::new();
        describe(schema, "", &mut lines);
        assert_eq!(lines, expected, "{plural}");
    }
}

#[test]
fn objects_are_checked_against_the_schema_as_the_api_server_would() {
    // The checker the other tests rely on does refuse what it should.
    let bad = serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "p"},
        "spec": {"cidr": "10.0.0.0/16", "blockSize": 200}
    });
    let refused = std::panic::catch_unwind(|| support::assert_accepted("ippools", &bad));
    assert!(refused.is_err(), "blockSize 200 is out of bounds");
    let pruned = serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
        "metadata": {"name": "h"},
        "spec": {"handleID": "h", "block": {}, "extra": 1}
    });
    assert!(std::panic::catch_unwind(|| support::assert_accepted("ipamhandles", &pruned)).is_err());
}
