//! LoadBalancer pools and addresses in `ipamctl show`: the pool counted as
//! calicoctl counts every pool (GetUtilization lists them all, whatever
//! their allowedUses), its addresses in the `virtual:load-balancer` block,
//! and `--ip` naming the Service that holds one (calicoctl prints the
//! allocation's attributes: `service` and `namespace`).

use super::*;
use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::{AllowedUse, AutoAssignRequest, HandleId, NodeName};

#[tokio::test]
async fn show_counts_load_balancer_pools_and_names_the_service_of_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let held = {
        let engine = open_embedded(dir.path());
        engine
            .create_pool(pool("default-ipv4-ippool", "192.168.50.0/24", None))
            .await
            .unwrap();
        let mut spec = ipam_core::PoolSpec::new("172.16.0.0/24".parse().unwrap());
        spec.allowed_uses = vec![AllowedUse::LoadBalancer];
        engine
            .create_pool(ipam_core::Pool::new("lb", spec).unwrap())
            .await
            .unwrap();
        let mut request = AutoAssignRequest::new(
            HandleId::new("lb-web"),
            NodeName::new(LOAD_BALANCER_OWNER),
            1,
            0,
        );
        request.intended_use = AllowedUse::LoadBalancer;
        request.attributes = [
            ("namespace", "shop"),
            ("service", "web"),
            ("type", "LoadBalancer"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        engine.auto_assign(&request).await.unwrap().ipv4.addresses[0]
            .addr()
            .to_string()
    };
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert!(
            run.stdout
                .contains("| IP Pool  | 172.16.0.0/24   |       256 | 1 (0%)     | 255 (100%) |"),
            "{mode}: {}",
            run.stdout
        );
        let run = ipamctl_with(connection, &["show", "--show-blocks"]);
        assert!(
            run.stdout.contains("| Block    | 172.16.0."),
            "{mode}: {}",
            run.stdout
        );
        let run = ipamctl_with(connection, &["show", "--ip", &held]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert_eq!(
            run.stdout,
            format!(
                "IP {held} is in use\nHandle ID: lb-web\nActive Owner Attributes:\n  \
                 namespace: shop\n  service: web\n  type: LoadBalancer\n"
            ),
            "{mode}"
        );
    });
}
