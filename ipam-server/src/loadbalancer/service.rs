//! What a Service asks of the controller, read as Calico's load-balancer
//! controller reads it (kube-controllers/pkg/controllers/loadbalancer/
//! loadbalancer_controller.go, v3.32): whether Calico serves it
//! (`IsCalicoManagedLoadBalancer`), its handle (`createHandle`), its
//! annotations (`parseAnnotations`) and how many addresses of each family
//! it wants (`needsIPsAssigned`, `assignIP`). Pure: no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ipam_service::annotations::{json_list, resolve_pool, PoolRefError};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use sha2::{Digest, Sha256};

/// Pools (CIDRs or pool names, a JSON list) for the IPv4 address.
pub const ANNOTATION_IPV4_POOLS: &str = "projectcalico.org/ipv4pools";
/// Pools for the IPv6 address.
pub const ANNOTATION_IPV6_POOLS: &str = "projectcalico.org/ipv6pools";
/// Fixed addresses (a JSON list, at most one per family).
pub const ANNOTATION_LOAD_BALANCER_IPS: &str = "projectcalico.org/loadBalancerIPs";
/// The `spec.loadBalancerClass` that names Calico.
pub const CALICO_LOAD_BALANCER_CLASS: &str = "calico";

/// Which Services get addresses (Calico's KubeControllersConfiguration
/// `controllers.loadBalancer.assignIPs`, AllServices by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AssignIps {
    /// Every LoadBalancer Service without another `loadBalancerClass`.
    #[value(name = "AllServices")]
    AllServices,
    /// Only those of class `calico`, or with one of Calico's annotations.
    #[value(name = "RequestedServicesOnly")]
    RequestedServicesOnly,
}

/// Whether the controller serves `service` (IsCalicoManagedLoadBalancer).
pub fn is_managed(service: &Service, mode: AssignIps) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    let class = spec.load_balancer_class.as_deref();
    match mode {
        AssignIps::AllServices => class.is_none_or(|c| c == CALICO_LOAD_BALANCER_CLASS),
        AssignIps::RequestedServicesOnly => {
            if class == Some(CALICO_LOAD_BALANCER_CLASS) {
                return true;
            }
            let annotations = service.metadata.annotations.as_ref();
            let asks = [
                ANNOTATION_IPV4_POOLS,
                ANNOTATION_IPV6_POOLS,
                ANNOTATION_LOAD_BALANCER_IPS,
            ]
            .iter()
            .any(|key| {
                annotations
                    .and_then(|a| a.get(*key))
                    .is_some_and(|v| !v.is_empty())
            });
            // An annotation under another class is not Calico's to serve.
            asks && class.is_none()
        }
    }
}

/// The handle of a Service's addresses: `lb-` and the SHA-256 of
/// `<name>-<namespace>-<uid>` (lower case) in unpadded URL-safe base64
/// with `-`, `_` and `.` removed, cut at 253 characters (createHandle).
/// The uid makes a Service created again under the same name a new owner.
pub fn handle_of(namespace: &str, name: &str, uid: &str) -> String {
    let text = format!("{name}-{namespace}-{uid}").to_lowercase();
    let digest = Sha256::digest(text.as_bytes());
    // Go's base64.RawURLEncoding: the URL-safe alphabet, no padding.
    let encoded: String = URL_SAFE_NO_PAD
        .encode(digest)
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .collect();
    let mut handle = format!("lb-{encoded}");
    handle.truncate(253);
    handle
}

/// What the annotations ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    /// Fixed addresses; when set, pools are not consulted.
    pub addresses: Option<Vec<IpAddr>>,
    /// IPv4 pools, resolved to CIDRs.
    pub ipv4_pools: Option<Vec<IpNet>>,
    /// IPv6 pools, resolved to CIDRs.
    pub ipv6_pools: Option<Vec<IpNet>>,
}

/// Why a Service's annotations cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    /// Not a JSON list of strings.
    #[error("annotation {key}: {message}")]
    NotAList {
        /// The annotation.
        key: &'static str,
        /// The parser's words.
        message: String,
    },
    /// A pool that is neither a CIDR nor the name of a LoadBalancer pool,
    /// or one of the other family.
    #[error(transparent)]
    Pool(#[from] PoolRefError),
    /// Not an address.
    #[error("could not parse {0} as a valid IP address")]
    BadAddress(String),
    /// More than one address of a family.
    #[error("at max only one ipv4 and one ipv6 address can be specified. Received {ipv4} ipv4 and {ipv6} ipv6 addresses")]
    TooManyAddresses {
        /// IPv4 addresses given.
        ipv4: usize,
        /// IPv6 addresses given.
        ipv6: usize,
    },
}

/// Reads Calico's annotations; `pools` names the LoadBalancer pools (name
/// to CIDR) a pool annotation may name instead of a CIDR (resolvePools).
pub fn requested(
    annotations: Option<&BTreeMap<String, String>>,
    pools: &BTreeMap<String, IpNet>,
) -> Result<Requested, AnnotationError> {
    let mut out = Requested::default();
    let Some(annotations) = annotations else {
        return Ok(out);
    };
    let list = |key: &'static str| -> Result<Option<Vec<String>>, AnnotationError> {
        annotations
            .get(key)
            .map(|text| {
                json_list(text).map_err(|e| AnnotationError::NotAList {
                    key,
                    message: e.to_string(),
                })
            })
            .transpose()
    };
    let resolve = |ids: Vec<String>, v4: bool| -> Result<Vec<IpNet>, AnnotationError> {
        ids.iter()
            .map(|id| Ok(resolve_pool(id, pools, v4)?))
            .collect()
    };
    if let Some(ids) = list(ANNOTATION_IPV4_POOLS)? {
        out.ipv4_pools = Some(resolve(ids, true)?);
    }
    if let Some(ids) = list(ANNOTATION_IPV6_POOLS)? {
        out.ipv6_pools = Some(resolve(ids, false)?);
    }
    if let Some(texts) = list(ANNOTATION_LOAD_BALANCER_IPS)? {
        let addresses = texts
            .into_iter()
            .map(|t| {
                t.parse::<IpAddr>()
                    .map_err(|_| AnnotationError::BadAddress(t))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ipv4 = addresses.iter().filter(|a| a.is_ipv4()).count();
        let ipv6 = addresses.len() - ipv4;
        if ipv4 > 1 || ipv6 > 1 {
            return Err(AnnotationError::TooManyAddresses { ipv4, ipv6 });
        }
        out.addresses = Some(addresses);
    }
    Ok(out)
}

/// IPv4 and IPv6 addresses the Service's `spec.ipFamilies` ask for (one
/// each it names; IPv4 alone when it names none, the API server's default
/// on a single-stack IPv4 cluster).
pub fn families(service: &Service) -> (u32, u32) {
    let families = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .filter(|f| !f.is_empty());
    match families {
        None => (1, 0),
        Some(families) => (
            families.iter().filter(|f| *f == "IPv4").count() as u32,
            families.iter().filter(|f| *f == "IPv6").count() as u32,
        ),
    }
}

/// How many addresses satisfy `spec.ipFamilyPolicy` (needsIPsAssigned:
/// one for SingleStack, two for either dual-stack policy).
pub fn wanted_count(service: &Service) -> usize {
    let policy = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_family_policy.as_deref());
    match policy {
        Some("RequireDualStack" | "PreferDualStack") => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_handle_is_calicos() {
        // SHA-256 of "web-default-0b8e51a3-7a3f-4c29-9d2f-4a1c7b0e9f10" in
        // URL-safe unpadded base64 is TEyc_ROK1IF4gAbkjE6vLHHCgOANGkoSaQWODN7c6Aw
        // (Python's hashlib and base64.urlsafe_b64encode, which Go's
        // RawURLEncoding matches); Calico drops the `_`.
        let handle = handle_of("default", "web", "0b8e51a3-7a3f-4c29-9d2f-4a1c7b0e9f10");
        assert_eq!(handle, "lb-TEycROK1IF4gAbkjE6vLHHCgOANGkoSaQWODN7c6Aw");
        assert_eq!(
            handle,
            handle_of("default", "Web", "0B8E51A3-7a3f-4c29-9d2f-4a1c7b0e9f10")
        );
        assert_ne!(handle, handle_of("default", "web", "another-uid"));
    }

    #[test]
    fn which_services_are_calicos() {
        let lb = |class: Option<&str>, annotations: serde_json::Value| {
            service(json!({
                "metadata": {"name": "s", "namespace": "ns", "annotations": annotations},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": class},
            }))
        };
        let plain = lb(None, json!({}));
        let calico = lb(Some("calico"), json!({}));
        let other = lb(Some("metallb"), json!({}));
        let annotated = lb(None, json!({ANNOTATION_IPV4_POOLS: "[\"lb\"]"}));
        let annotated_other = lb(Some("metallb"), json!({ANNOTATION_IPV4_POOLS: "[\"lb\"]"}));
        let cluster_ip = service(json!({"metadata": {"name": "c"}, "spec": {"type": "ClusterIP"}}));
        use AssignIps::*;
        for (svc, all, requested) in [
            (&plain, true, false),
            (&calico, true, true),
            (&other, false, false),
            (&annotated, true, true),
            (&annotated_other, false, false),
            (&cluster_ip, false, false),
        ] {
            assert_eq!(is_managed(svc, AllServices), all);
            assert_eq!(is_managed(svc, RequestedServicesOnly), requested);
        }
    }

    #[test]
    fn annotations_read_as_calico_reads_them() {
        let pools = BTreeMap::from([("lb-v4".to_string(), "172.16.0.0/24".parse().unwrap())]);
        let read = |pairs: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            requested(Some(&map), &pools)
        };
        let got = read(&[
            (ANNOTATION_IPV4_POOLS, r#"["lb-v4", "10.9.0.0/16"]"#),
            (ANNOTATION_LOAD_BALANCER_IPS, r#"["172.16.0.7", "fd00::7"]"#),
        ])
        .unwrap();
        assert_eq!(
            got.ipv4_pools.unwrap(),
            [
                "172.16.0.0/24".parse::<IpNet>().unwrap(),
                "10.9.0.0/16".parse().unwrap()
            ]
        );
        assert_eq!(got.addresses.unwrap().len(), 2);
        assert!(matches!(
            read(&[(ANNOTATION_IPV4_POOLS, r#"["nope"]"#)]),
            Err(AnnotationError::Pool(PoolRefError::Unknown(_)))
        ));
        assert!(matches!(
            read(&[(ANNOTATION_IPV6_POOLS, r#"["lb-v4"]"#)]),
            Err(AnnotationError::Pool(PoolRefError::WrongFamily { .. }))
        ));
        assert!(matches!(
            read(&[(ANNOTATION_LOAD_BALANCER_IPS, r#"["1.1.1.1", "1.1.1.2"]"#)]),
            Err(AnnotationError::TooManyAddresses { ipv4: 2, ipv6: 0 })
        ));
        assert!(read(&[(ANNOTATION_LOAD_BALANCER_IPS, "1.1.1.1")]).is_err());
    }

    #[test]
    fn families_and_policy() {
        let dual = service(json!({"spec": {"type": "LoadBalancer",
            "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}}));
        assert_eq!((families(&dual), wanted_count(&dual)), ((1, 1), 2));
        let bare = service(json!({"spec": {"type": "LoadBalancer"}}));
        assert_eq!((families(&bare), wanted_count(&bare)), ((1, 0), 1));
    }
}
