//! LoadBalancer addresses: claimed in `virtual:load-balancer` blocks with a
//! `virtual` affinity (libcalico-go ipam.go, autoAssign and AssignIP with
//! IntendedUse LoadBalancer), from LoadBalancer pools only; and those
//! pools never serve a pod.

use super::*;
use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::BlockOwner;

fn pools() -> Snapshot {
    let mut lb = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("172.16.0.0/24".parse().unwrap())
    };
    lb.allowed_uses = vec![AllowedUse::LoadBalancer];
    world(
        vec![
            pool("default", "10.0.0.0/24", 26),
            Pool::new("lb", lb).unwrap(),
        ],
        IpamConfig::default(),
    )
}

fn lb_request(handle: &str) -> AutoAssignRequest {
    let mut request = AutoAssignRequest::new(
        HandleId::new(handle),
        NodeName::new(LOAD_BALANCER_OWNER),
        1,
        0,
    );
    request.intended_use = AllowedUse::LoadBalancer;
    request
}

#[test]
fn a_load_balancer_address_comes_from_a_virtual_block_of_a_load_balancer_pool() {
    let mut s = pools();
    let planned = s.plan_auto_assign(&lb_request("lb-a"), at(0)).unwrap();
    let address = planned.ipv4.addresses[0].addr();
    assert!(
        "172.16.0.0/24"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&address),
        "{address}"
    );
    let claim = &planned.plan.claims[0];
    assert_eq!(claim.pending.affinity_type.as_deref(), Some("virtual"));
    assert_eq!(claim.pending.node, LOAD_BALANCER_OWNER);
    assert_eq!(
        claim.block.owner(),
        Some(&BlockOwner::Virtual(LOAD_BALANCER_OWNER.into()))
    );
    s.apply(planned.plan);
    // The next one comes from the same block: the virtual owner's.
    let next = s.plan_auto_assign(&lb_request("lb-b"), at(1)).unwrap();
    assert!(next.plan.claims.is_empty());
    let IpAddr::V4(first) = address else { panic!() };
    assert_eq!(
        next.ipv4.addresses[0].addr(),
        IpAddr::from(std::net::Ipv4Addr::from(u32::from(first) + 1))
    );
}

#[test]
fn a_pod_never_gets_a_load_balancer_pools_address() {
    let mut s = pools();
    // The workload pool fills up; the LoadBalancer pool is not borrowed.
    for i in 0..256 {
        let got = plan(&s, &format!("p{i}"), "n1", 1, 0, 0);
        match got {
            Ok(planned) if planned.ipv4.addresses.is_empty() => break,
            Ok(planned) => {
                assert!(planned.ipv4.addresses[0].addr() < ip("10.0.1.0"));
                s.apply(planned.plan);
            }
            Err(e) => panic!("{e}"),
        }
    }
    let fixed = AssignIpRequest {
        handle: HandleId::new("p"),
        node: NodeName::new("n1"),
        address: ip("172.16.0.9"),
        attributes: BTreeMap::new(),
    };
    assert!(matches!(
        s.plan_assign_ip(&fixed, at(0)),
        Err(Error::PoolUseMismatch { .. })
    ));
}

#[test]
fn a_service_never_gets_a_workload_pools_address() {
    let s = world(
        vec![pool("default", "10.0.0.0/24", 26)],
        IpamConfig::default(),
    );
    assert!(matches!(
        s.plan_auto_assign(&lb_request("lb-a"), at(0)),
        Err(Error::NoPoolForNode { .. })
    ));
    let mut requested = lb_request("lb-a");
    requested.ipv4_pools = vec!["10.0.0.0/24".parse().unwrap()];
    assert!(s.plan_auto_assign(&requested, at(0)).is_err());
    let fixed = AssignIpRequest {
        handle: HandleId::new("lb-a"),
        node: NodeName::new(LOAD_BALANCER_OWNER),
        address: ip("10.0.0.9"),
        attributes: BTreeMap::new(),
    };
    assert!(matches!(
        s.plan_assign_ip_for(&fixed, AllowedUse::LoadBalancer, at(0)),
        Err(Error::PoolUseMismatch { .. })
    ));
    let s = pools();
    let fixed = AssignIpRequest {
        address: ip("172.16.0.9"),
        ..fixed
    };
    let plan = s
        .plan_assign_ip_for(&fixed, AllowedUse::LoadBalancer, at(0))
        .unwrap();
    assert_eq!(
        plan.claims[0].confirmed.affinity_type.as_deref(),
        Some("virtual")
    );
}
