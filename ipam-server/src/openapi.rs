//! The OpenAPI document of the API: the contract clients and tools such as
//! schemathesis test the server against (issue 21: it must validate, state
//! every parameter where it is, every rule the server enforces, and every
//! status each route can return).
//!
//! utoipa derives the paths and types from the handlers; [`refine`] then
//! adds what derives cannot say, in one place: the patterns and bounds of
//! names, addresses and CIDRs (the name patterns are
//! [`ipam_api::names`]'), cross-field rules, the pool spec's fields, and
//! the statuses every `/v1` route shares (the token, body limits, rate
//! limit, time limit, unreadable data). A refinement naming a schema or
//! property that no longer exists panics, so the document cannot drift
//! from the types silently (`the_served_openapi_document_is_the_checked_in_one`).
//!
//! Two formats are this API's own, each with a pattern that states its
//! syntax: `ip-network` (an address and prefix length with no host bits
//! set: a pool, or a range to claim) and `ip-block` (a block: IPv4 /20 to
//! /32, IPv6 /116 to /128, no host bits set).

use ipam_api::labels::{LABEL_VALUE_PATTERN, MAX_LABELS};
use ipam_api::names::{
    HANDLE_PATTERN, HANDLE_PREFIX_PATTERN, MAX_ATTRIBUTES, MAX_ATTRIBUTE_VALUE, MAX_LABEL,
    MAX_NAME, SUBDOMAIN_PATTERN,
};
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::{api, app, metrics, node_labels, reservations, split};

/// The document as utoipa derives it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ipam-server",
        description = "Calico-compatible IP address management: assign and release pod addresses, pools, IPAM config, node affinities, usage.\n\nErrors are `{code, message}` with a stable code; the message names the field and the value. Every `/v1` route (and `/metrics`) asks for `Authorization: Bearer <token>` when the server has a token (the scheme is case-insensitive). A method a path does not have is answered 405 `method_not_allowed` with an `Allow` header; a path that is no route, 404 `no_such_route`. A connection is closed when its request head takes longer than --header-read-timeout (10 s) from its first byte, or when it idles past --idle-timeout (60 s); beyond --max-connections (1024) or --max-connections-per-client (128), a new connection is answered 503 `too_many_connections` and closed.\n\nBounds that depend on flags are stated at their defaults: at most 128 addresses of a family per request (--max-addresses-per-request), bodies up to 1 MiB (--max-body-bytes).",
        version = "1"
    ),
    paths(
        api::assign, api::assign_ip, api::release, api::release_handle, api::handle_addresses,
        api::handles_on_node,
        api::address_info, api::list_pools, api::get_pool, api::create_pool, api::update_pool,
        api::delete_pool, split::split_pool, reservations::list_reservations, reservations::get_reservation,
        reservations::create_reservation, reservations::delete_reservation, api::get_config, api::set_config, api::node_affinities, api::list_affinities,
        api::claim_affinity, api::release_affinity, api::release_node, api::usage_summary,
        node_labels::get_node_labels, node_labels::set_node_labels,
        api::block_detail, api::check_report, app::healthz, app::readyz, metrics::scrape,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document of a server with a token, as checked in (`openapi.json`)
/// and as such a server serves it.
pub fn openapi_json() -> String {
    render(document())
}

/// The document a server without a token serves (one listening on
/// loopback or a unix socket only): no security requirement and no 401,
/// for it asks no one for a token.
pub fn open_openapi_json() -> String {
    let mut doc = document();
    if let Some(top) = doc.as_object_mut() {
        top.remove("security");
    }
    if let Some(components) = doc["components"].as_object_mut() {
        components.remove("securitySchemes");
    }
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for operation in item.as_object_mut().expect("a path item").values_mut() {
            let operation = operation.as_object_mut().expect("an operation");
            operation.remove("security");
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                responses.remove("401");
            }
        }
    }
    render(doc)
}

fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    refine(&mut doc);
    doc
}

fn render(doc: Value) -> String {
    let mut text = serde_json::to_string_pretty(&doc).expect("the document serialises");
    text.push('\n');
    text
}

// ----- patterns ----------------------------------------------------------------

const IPV4: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}";
const PREFIX_V4: &str = "(3[0-2]|[12]?[0-9])";
const PREFIX_V6: &str = "(12[0-8]|1[01][0-9]|[1-9]?[0-9])";
const BLOCK_PREFIX_V4: &str = "(2[0-9]|3[0-2])";
const BLOCK_PREFIX_V6: &str = "(11[6-9]|12[0-8])";

/// An IPv6 address in any form Rust's parser takes (RFC 4291 §2.2:
/// compressed, and with an IPv4 tail), zones excluded.
fn ipv6() -> String {
    let h = "[0-9a-fA-F]{1,4}";
    let forms = [
        format!("({h}:){{7}}{h}"),
        format!("({h}:){{1,7}}:"),
        format!("({h}:){{1,6}}:{h}"),
        format!("({h}:){{1,5}}(:{h}){{1,2}}"),
        format!("({h}:){{1,4}}(:{h}){{1,3}}"),
        format!("({h}:){{1,3}}(:{h}){{1,4}}"),
        format!("({h}:){{1,2}}(:{h}){{1,5}}"),
        format!("{h}:(:{h}){{1,6}}"),
        format!(":((:{h}){{1,7}}|:)"),
        // With an IPv4 tail: six groups, or fewer around one `::`.
        format!("({h}:){{6}}{IPV4}"),
        format!("::({h}:){{0,5}}{IPV4}"),
    ];
    let mut forms = forms.to_vec();
    for left in 1..=5 {
        forms.push(format!("({h}:){{{left}}}:({h}:){{0,{}}}{IPV4}", 5 - left));
    }
    format!("({})", forms.join("|"))
}

fn ip_pattern() -> String {
    format!("^({IPV4}|{})$", ipv6())
}

fn ipv4_cidr_pattern(prefix: &str) -> String {
    format!("^{IPV4}/{prefix}$")
}

fn ipv6_cidr_pattern(prefix: &str) -> String {
    format!("^{}/{prefix}$", ipv6())
}

// ----- schemas -------------------------------------------------------------------

fn name_schema(what: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME,
        "pattern": SUBDOMAIN_PATTERN,
        "description": format!("{what}: a Kubernetes object name (RFC 1123 subdomain)"),
    })
}

fn handle_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME,
        "pattern": HANDLE_PATTERN,
        "description": "A handle id (`k8s-pod-network.<container id>`): lower-cased, a Kubernetes object name, as Calico names the IPAMHandle",
    })
}

fn ip_schema() -> Value {
    json!({"type": "string", "pattern": ip_pattern(), "description": "An IPv4 or IPv6 address"})
}

fn ipv4_network() -> Value {
    json!({"type": "string", "format": "ip-network", "pattern": ipv4_cidr_pattern(PREFIX_V4)})
}

fn ipv6_network() -> Value {
    json!({"type": "string", "format": "ip-network", "pattern": ipv6_cidr_pattern(PREFIX_V6)})
}

/// An IPv4 or IPv6 network. One pattern rather than `anyOf`, so that a
/// string that is neither is one clear violation.
fn network_schema(description: &str) -> Value {
    json!({
        "type": "string",
        "format": "ip-network",
        "pattern": format!("^(({IPV4})/{PREFIX_V4}|{}/{PREFIX_V6})$", ipv6()),
        "description": description,
    })
}

/// An IPReservation entry: a CIDR, host bits allowed, or a bare address
/// (Calico's `cidrs` rule; [`ipam_api::reservations`]).
fn reserved_schema() -> Value {
    json!({
        "type": "string",
        "pattern": format!("^(({IPV4})(/{PREFIX_V4})?|{}(/{PREFIX_V6})?)$", ipv6()),
        "description": "A CIDR (host bits allowed: 10.0.0.5/24 reserves 10.0.0.0/24) or a bare address (stored as /32 or /128)",
    })
}

fn block_schema() -> Value {
    json!({
        "type": "string",
        "format": "ip-block",
        "pattern": format!("^(({IPV4})/{BLOCK_PREFIX_V4}|{}/{BLOCK_PREFIX_V6})$", ipv6()),
        "description": "A block's CIDR (`10.0.0.64/26`): IPv4 /20 to /32, IPv6 /116 to /128, no host bits set",
    })
}

/// The rule of [`ipam_api::names::check_attributes`].
fn attributes_schema() -> Value {
    let label = format!("[a-z0-9]([-a-z0-9]{{0,{}}}[a-z0-9])?", MAX_LABEL - 2);
    json!({
        "type": "object",
        "description": "Recorded with the addresses, in their block. At most 16; keys are Kubernetes label keys; values at most 253 characters without control characters; `node` a node name, `namespace` a namespace name, `pod` a pod name, none of them empty (Calico's node, namespace, pod and timestamp are what the CNI plugin sends)",
        "maxProperties": MAX_ATTRIBUTES,
        "propertyNames": label_key_schema(),
        "properties": {
            "node": name_schema("The node"),
            "namespace": {"type": "string", "pattern": format!("^{label}$"), "description": "The pod's namespace"},
            "pod": name_schema("The pod"),
        },
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_ATTRIBUTE_VALUE,
            "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
        },
    })
}

/// The rule of [`ipam_api::labels::check_labels`]; `nullable` where the
/// labels may be left to the IPAM.
fn labels_schema(description: &str, nullable: bool) -> Value {
    json!({
        "type": if nullable { json!(["object", "null"]) } else { json!("object") },
        "description": format!("{description} At most {MAX_LABELS}; keys are Kubernetes label keys, values empty or Kubernetes label values."),
        "maxProperties": MAX_LABELS,
        "propertyNames": label_key_schema(),
        "additionalProperties": {"type": "string", "maxLength": MAX_LABEL, "pattern": LABEL_VALUE_PATTERN},
    })
}

/// A Kubernetes label key (`[prefix/]name`), as attributes' keys are.
fn label_key_schema() -> Value {
    json!({
        "maxLength": MAX_NAME + 1 + MAX_LABEL,
        "pattern": format!(
            "^({}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,{}}}[A-Za-z0-9])?$",
            SUBDOMAIN_PATTERN.trim_start_matches('^').trim_end_matches('$'),
            MAX_LABEL - 2
        ),
    })
}

/// Calico's IPPool spec as the API takes it (`PoolSpec` in ipam-core).
fn pool_spec_schema() -> Value {
    let uses = json!({"type": "string", "enum": ["Workload", "Tunnel", "LoadBalancer"]});
    json!({
        "type": "object",
        "description": "Calico's IPPool spec (crd.projectcalico.org/v1). The CIDR is stored as its network (10.0.0.1/24 is 10.0.0.0/24), as Calico stores it. Rules the schema cannot carry, answered 400: the block size must be at least the pool's prefix length, and the selectors must parse as Calico selectors.",
        "required": ["cidr"],
        "additionalProperties": false,
        "properties": {
            "cidr": network_schema("The pool's range"),
            "blockSize": {"type": ["integer", "null"], "description": "Prefix length of its blocks: IPv4 20 to 32 (default 26), IPv6 116 to 128 (default 122)", "minimum": 20, "maximum": 128},
            "nodeSelector": {"type": "string", "description": "Calico selector of the nodes that use it (`all()`; empty: all)"},
            "namespaceSelector": {"type": "string", "description": "Calico selector of the namespaces whose pods use it (empty: all)"},
            "allowedUses": {"type": "array", "items": uses, "description": "What its addresses are for (empty: Workload and Tunnel)"},
            "assignmentMode": {"type": ["string", "null"], "enum": ["Automatic", "Manual", null], "description": "Manual pools hand out only requested addresses (absent or null: Automatic)"},
            "disabled": {"type": "boolean", "description": "A disabled pool hands out no new addresses"},
            "disableBGPExport": {"type": "boolean"},
            "ipipMode": {"type": ["string", "null"], "description": "For the dataplane (Never, Always, CrossSubnet)"},
            "vxlanMode": {"type": ["string", "null"], "description": "For the dataplane (Never, Always, CrossSubnet)"},
            "natOutgoing": {"type": "boolean"},
        },
        // The block size's range depends on the family.
        "anyOf": [
            {"properties": {"cidr": {"pattern": ipv4_cidr_pattern(PREFIX_V4)}, "blockSize": {"maximum": 32}}},
            {"properties": {"cidr": {"pattern": ipv6_cidr_pattern(PREFIX_V6)}, "blockSize": {"minimum": 116}}},
        ],
    })
}

fn count(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": 128, "description": description})
}

fn int32_cap(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": i32::MAX, "description": description})
}

// ----- refining -----------------------------------------------------------------

/// Adds to utoipa's document what it cannot derive (see the module docs).
pub fn refine(doc: &mut Value) {
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("components.schemas");
    schemas.insert("PoolSpec".to_string(), pool_spec_schema());
    let spec_ref = json!({"$ref": "#/components/schemas/PoolSpec"});

    for (schema, property, refinement) in [
        ("AssignBody", "handle", handle_schema()),
        (
            "AssignBody",
            "node",
            name_schema("The node the addresses are for"),
        ),
        ("AssignBody", "ipv4", count("IPv4 addresses wanted")),
        ("AssignBody", "ipv6", count("IPv6 addresses wanted")),
        (
            "AssignBody",
            "ipv4Pools",
            json!({"items": ipv4_network(), "description": "IPv4 pools (CIDRs of existing pools) to use instead of those selecting the node"}),
        ),
        (
            "AssignBody",
            "ipv6Pools",
            json!({"items": ipv6_network(), "description": "IPv6 pools (CIDRs of existing pools) to use instead of those selecting the node"}),
        ),
        ("AssignBody", "attributes", attributes_schema()),
        (
            "AssignBody",
            "nodeLabels",
            labels_schema("The node's labels, for pools' nodeSelector; absent or null: the IPAM reads the node's (the Kubernetes Node's, the Calico Node resource's on etcd, those set with PUT /v1/nodes/{node}/labels on the embedded store).", true),
        ),
        (
            "AssignBody",
            "namespaceLabels",
            labels_schema("The namespace's labels, for pools' namespaceSelector; absent or null: on Kubernetes the IPAM reads the Namespace the `namespace` attribute names, elsewhere none.", true),
        ),
        ("NodeLabelsBody", "labels", labels_schema("Every label of the node.", false)),
        (
            "AssignBody",
            "exclude",
            json!({"items": network_schema("An address or range never to hand out, as CIDR (an address as /32 or /128)"), "description": "Addresses never to hand out for this request: the gateway a main plugin puts on the host's bridge"}),
        ),
        (
            "AssignBody",
            "intendedUse",
            json!({"type": ["string", "null"], "enum": ["Workload", "Tunnel", "LoadBalancer", null], "description": "What the addresses are for (absent or null: Workload); LoadBalancer asks node to be load-balancer, the virtual owner"}),
        ),
        (
            "AssignBody",
            "maxBlocksPerHost",
            int32_cap("A per-request cap on the node's blocks (0: the config's)"),
        ),
        ("AssignIpBody", "handle", handle_schema()),
        ("AssignIpBody", "node", name_schema("The node it is for")),
        ("AssignIpBody", "address", ip_schema()),
        ("AssignIpBody", "attributes", attributes_schema()),
        (
            "AssignIpBody",
            "intendedUse",
            json!({"type": ["string", "null"], "enum": ["Workload", "Tunnel", "LoadBalancer", null], "description": "What the address is for (absent or null: Workload); LoadBalancer asks node to be load-balancer and the address to be in a LoadBalancer pool, anything else an address outside one"}),
        ),
        ("ReleaseBody", "addresses", json!({"maxItems": 128})),
        ("ReleaseItem", "address", ip_schema()),
        (
            "ReleaseItem",
            "handle",
            json!({"type": ["string", "null"], "minLength": 1, "maxLength": MAX_NAME, "pattern": HANDLE_PATTERN}),
        ),
        (
            "ReleaseItem",
            "sequenceNumber",
            json!({"format": null, "maximum": u64::MAX}),
        ),
        ("PoolBody", "name", name_schema("The pool's name")),
        ("PoolBody", "spec", spec_ref.clone()),
        ("PoolSpecBody", "spec", spec_ref),
        (
            "ReservationBody",
            "name",
            name_schema("The reservation's name"),
        ),
        (
            "ReservationSpecBody",
            "reservedCIDRs",
            json!({"items": reserved_schema(), "maxItems": ipam_api::reservations::MAX_RESERVED_CIDRS, "uniqueItems": true, "description": "Never handed out by automatic assignment; no range twice (`10.0.0.1` and `10.0.0.1/32` are one range), as Kubernetes keeps the list a set"}),
        ),
        (
            "SplitBody",
            "parts",
            json!({"enum": split_parts(), "description": "How many equal child pools: a power of two from 2 to 1024"}),
        ),
        (
            "SplitBody",
            "name",
            json!({"type": ["string", "null"], "minLength": 1, "maxLength": MAX_NAME, "pattern": SUBDOMAIN_PATTERN, "description": "The pool's name (calicoctl's --name); give this or cidr"}),
        ),
        ("SplitBody", "cidr", {
            let mut cidr =
                network_schema("The pool's exact CIDR (calicoctl's --cidr); give this or name");
            cidr["type"] = json!(["string", "null"]);
            cidr
        }),
        (
            "ConfigBody",
            "maxBlocksPerHost",
            int32_cap("Most blocks per node (0: Calico's default of 20); needs strictAffinity"),
        ),
        (
            "ConfigBody",
            "ipCooldownSeconds",
            json!({"minimum": 0, "maximum": ipam_core::cooldown::MAX_IP_COOLDOWN_SECONDS, "description": "Seconds a released address waits before it is handed out again (Calico's CRD bounds: 0 to 1200)"}),
        ),
        (
            "ClaimBody",
            "cidr",
            network_schema("Whole blocks of one pool"),
        ),
    ] {
        refine_property(schemas, schema, property, refinement);
    }
    // Rules between fields.
    refine_schema(
        schemas,
        "AssignBody",
        json!({"anyOf": [
            {"required": ["ipv4"], "properties": {"ipv4": {"minimum": 1}}},
            {"required": ["ipv6"], "properties": {"ipv6": {"minimum": 1}}},
        ], "description": "`POST /v1/assign`: addresses chosen by the IPAM; at least one."}),
    );
    refine_schema(
        schemas,
        "ConfigBody",
        json!({"allOf": [
            // Calico: strictAffinity and autoAllocateBlocks not both false.
            {"anyOf": [
                {"properties": {"strictAffinity": {"enum": [true]}}},
                {"properties": {"autoAllocateBlocks": {"enum": [true]}}},
            ]},
            // Calico: maxBlocksPerHost needs strictAffinity.
            {"anyOf": [
                {"properties": {"strictAffinity": {"enum": [true]}}},
                {"properties": {"maxBlocksPerHost": {"maximum": 0}}},
            ]},
        ]}),
    );

    // Exactly one of name and cidr names the pool to split.
    refine_schema(
        schemas,
        "SplitBody",
        json!({"oneOf": [
            {"required": ["name"], "properties": {"name": {"type": "string"}, "cidr": {"type": "null"}}},
            {"required": ["cidr"], "properties": {"cidr": {"type": "string"}, "name": {"type": "null"}}},
        ]}),
    );

    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for (method, operation) in item.as_object_mut().expect("a path item") {
            refine_operation(path, method, operation);
        }
    }
}

/// The numbers of parts a split takes (ipam-core's `split::MAX_PARTS`).
fn split_parts() -> Vec<u32> {
    (1..=ipam_core::split::MAX_PARTS.trailing_zeros())
        .map(|k| 1 << k)
        .collect()
}

fn refine_property(
    schemas: &mut Map<String, Value>,
    schema: &str,
    property: &str,
    refinement: Value,
) {
    let target = schemas
        .get_mut(schema)
        .unwrap_or_else(|| panic!("no schema {schema}"))
        .get_mut("properties")
        .and_then(|p| p.get_mut(property))
        .unwrap_or_else(|| panic!("no property {schema}.{property}"));
    merge(target, refinement);
}

fn refine_schema(schemas: &mut Map<String, Value>, schema: &str, refinement: Value) {
    let target = schemas
        .get_mut(schema)
        .unwrap_or_else(|| panic!("no schema {schema}"));
    merge(target, refinement);
}

/// Sets each key of `refinement` on `target`; a reference replaces the
/// schema whole, and a null removes the key.
fn merge(target: &mut Value, refinement: Value) {
    let refinement = refinement
        .as_object()
        .expect("a refinement is an object")
        .clone();
    if refinement.contains_key("$ref") {
        *target = Value::Object(refinement);
        return;
    }
    let target = target.as_object_mut().expect("a schema is an object");
    for (key, value) in refinement {
        if value.is_null() {
            target.remove(&key);
        } else {
            target.insert(key, value);
        }
    }
}

/// The schema of a path or query parameter, by its name.
fn parameter_schema(name: &str) -> Value {
    match name {
        "handle" => handle_schema(),
        "node" => name_schema("The node"),
        "name" => name_schema("The pool's name"),
        "address" => ip_schema(),
        "cidr" => block_schema(),
        "prefix" => {
            json!({"type": "string", "maxLength": MAX_NAME, "pattern": HANDLE_PREFIX_PATTERN})
        }
        "requireEmpty" => json!({"type": "boolean"}),
        other => panic!("no schema for parameter {other}"),
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

/// Adds `status` to an operation's responses, or joins its description to
/// the one there.
fn add_response(responses: &mut Map<String, Value>, status: &str, description: &str) {
    match responses.get_mut(status) {
        Some(existing) => {
            let joined = format!(
                "{}; or {description}",
                existing["description"].as_str().unwrap_or_default()
            );
            existing["description"] = Value::String(joined);
            if existing.get("content").is_none() {
                existing["content"] = error_response("")["content"].clone();
            }
        }
        None => {
            responses.insert(status.to_string(), error_response(description));
        }
    }
}

fn refine_operation(path: &str, method: &str, operation: &mut Value) {
    let with_body = operation.get("requestBody").is_some();
    let mut with_path_parameters = false;
    let mut with_query_parameters = false;
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters {
            let name = parameter["name"]
                .as_str()
                .expect("a named parameter")
                .to_string();
            with_path_parameters |= parameter["in"] == "path";
            with_query_parameters |= parameter["in"] == "query";
            let description = parameter["schema"]
                .get("description")
                .cloned()
                .or_else(|| parameter.get("description").cloned());
            let mut schema = parameter_schema(&name);
            // The parameter carries the description; its schema need not.
            schema.as_object_mut().unwrap().remove("description");
            parameter["schema"] = schema;
            if let Some(description) = description {
                parameter["description"] = description;
            }
        }
    }
    let responses = operation["responses"].as_object_mut().expect("responses");
    if !path.starts_with("/v1/") {
        return;
    }
    add_response(
        responses,
        "401",
        "The server has a token and the request does not carry it (`unauthorized`)",
    );
    add_response(
        responses,
        "429",
        "The client sent more requests a second than --rate-limit-per-client allows (`rate_limited`, with `Retry-After`)",
    );
    add_response(
        responses,
        "503",
        "The datastore is unreachable (`datastore_unavailable`), or the request took longer than --request-timeout-seconds (`timeout`)",
    );
    add_response(
        responses,
        "500",
        "A stored object cannot be read (`datastore_invalid`)",
    );
    if method != "get" {
        add_response(
            responses,
            "409",
            "Other writers won every compare-and-swap retry (`conflict_retries_exhausted`); nothing was changed",
        );
    }
    if with_body {
        add_response(
            responses,
            "400",
            "The body is not JSON, or not of this schema (`invalid_body`), or a value breaks a rule (`invalid_value`, `missing_value`); the message names the field and the value",
        );
        add_response(
            responses,
            "413",
            "The body is over --max-body-bytes (`body_too_large`); an over-limit Content-Length is refused before the body is read",
        );
        add_response(
            responses,
            "415",
            "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)",
        );
    }
    if with_path_parameters {
        add_response(
            responses,
            "400",
            "A path parameter breaks its rule (`invalid_value`, `missing_value`); the message names it",
        );
        add_response(
            responses,
            "404",
            "An empty path segment matches no route (`no_such_route`)",
        );
    }
    if with_query_parameters {
        add_response(
            responses,
            "400",
            "A query parameter is missing, unknown or breaks its rule (`invalid_query`, `invalid_value`); the message names it",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_openapi_document_is_the_checked_in_one() {
        let checked_in = include_str!("../openapi.json");
        assert!(
            checked_in == openapi_json(),
            "ipam-server/openapi.json is stale: regenerate it with \
             `cargo run -p ipam-server --bin gen-openapi`"
        );
    }

    #[test]
    fn a_server_without_a_token_documents_no_security_and_no_401() {
        let open: Value = serde_json::from_str(&open_openapi_json()).unwrap();
        let text = open.to_string();
        assert!(!text.contains("\"security\""), "{text}");
        assert!(!text.contains("\"401\""), "{text}");
        let guarded: Value = serde_json::from_str(&openapi_json()).unwrap();
        assert_eq!(guarded["security"], json!([{"bearer": []}]));
        assert_eq!(
            open["paths"].as_object().unwrap().len(),
            guarded["paths"].as_object().unwrap().len()
        );
    }

    #[test]
    fn parameters_are_where_the_server_reads_them_and_required_as_it_requires_them() {
        let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
        let parameters = |path: &str, method: &str| -> Vec<(String, String, bool)> {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_string(),
                        p["in"].as_str().unwrap().to_string(),
                        p["required"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        };
        let owned = |list: &[(&str, &str, bool)]| -> Vec<(String, String, bool)> {
            list.iter()
                .map(|(n, i, r)| (n.to_string(), i.to_string(), *r))
                .collect()
        };
        assert_eq!(
            parameters("/v1/blocks", "get"),
            owned(&[("cidr", "query", true)])
        );
        assert_eq!(
            parameters("/v1/handles", "get"),
            owned(&[("node", "query", true), ("prefix", "query", false)])
        );
        assert_eq!(
            parameters("/v1/nodes/{node}/affinities", "delete"),
            owned(&[
                ("node", "path", true),
                ("cidr", "query", true),
                ("requireEmpty", "query", false)
            ])
        );
    }

    #[test]
    fn every_v1_operation_documents_the_statuses_every_route_can_return() {
        let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                let has = |status: &str| responses.contains_key(status);
                if path.starts_with("/v1/") {
                    for status in ["401", "429", "500", "503"] {
                        assert!(has(status), "{method} {path} lacks {status}");
                    }
                }
                if operation.get("requestBody").is_some() {
                    for status in ["400", "413", "415"] {
                        assert!(has(status), "{method} {path} lacks {status}");
                    }
                }
                if path.contains('{') {
                    assert!(has("404"), "{method} {path} lacks 404");
                }
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
}
