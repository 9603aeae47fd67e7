//! One pass: every Service the controller serves, and every handle that
//! holds LoadBalancer addresses, brought to what its Service asks
//! (Calico's syncIPAM and syncService).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::holder::{LOAD_BALANCER_TYPE, NAMESPACE, SERVICE, TIMESTAMP, TYPE};
use ipam_core::{
    AllowedUse, AssignIpRequest, AutoAssignRequest, BlockOwner, HandleId, Holder, NodeName, Now,
    Pool, ReleaseRequest, Snapshot,
};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use kube::api::{Api, PostParams};

use super::service::{self, handle_of, is_managed, Requested};
use super::{Controller, LoadBalancerError, PassReport};

/// The addresses each handle holds in the load balancer's virtual blocks,
/// for allocations that name a Service (Calico's allocationTracker, built
/// from the blocks as handleBlockUpdate builds it).
pub(super) fn held(snapshot: &Snapshot) -> BTreeMap<String, BTreeSet<IpAddr>> {
    let owner = BlockOwner::Virtual(LOAD_BALANCER_OWNER.to_string());
    let mut held: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for block in snapshot.blocks().filter(|b| b.owner() == Some(&owner)) {
        for (ordinal, attribute) in block.allocations() {
            let Some(handle) = attribute.handle() else {
                continue;
            };
            if matches!(Holder::of(attribute), Holder::Service { .. }) {
                held.entry(handle.to_string())
                    .or_default()
                    .insert(block.cidr().address(ordinal));
            }
        }
    }
    held
}

// A Service's handle, from its namespace, name and uid.
fn handle_of_service(service: &Service) -> Option<String> {
    let meta = &service.metadata;
    Some(handle_of(
        meta.namespace.as_deref()?,
        meta.name.as_deref()?,
        meta.uid.as_deref()?,
    ))
}

// The IP addresses a Service's status lists.
fn ingress_addresses(service: &Service) -> Vec<Option<IpAddr>> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

// Go's time.Time.String() in UTC, as Calico stamps the `timestamp`
// attribute (`time.Now().UTC().String()`): `2006-01-02 15:04:05.999999999
// +0000 UTC`, trailing zeros of the fraction dropped.
fn go_time(now: std::time::SystemTime) -> String {
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let timestamp = k8s_openapi::jiff::Timestamp::from_nanosecond(nanos as i128)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let seconds = timestamp.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let fraction = format!("{:09}", timestamp.subsec_nanosecond());
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{seconds} +0000 UTC")
    } else {
        format!("{seconds}.{fraction} +0000 UTC")
    }
}

// The pools a LoadBalancer address may come from.
struct Pools<'s> {
    all: Vec<&'s Pool>,
    by_name: BTreeMap<String, IpNet>,
}

impl<'s> Pools<'s> {
    fn of(snapshot: &'s Snapshot) -> Pools<'s> {
        let all: Vec<&Pool> = snapshot
            .pools()
            .iter()
            .filter(|p| p.allows(AllowedUse::LoadBalancer))
            .collect();
        let by_name = all
            .iter()
            .map(|p| (p.name().to_string(), p.cidr()))
            .collect();
        Pools { all, by_name }
    }

    fn of_address(&self, address: IpAddr) -> Option<&'s Pool> {
        self.all
            .iter()
            .copied()
            .find(|p| p.cidr().contains(&address))
    }
}

fn in_any(address: IpAddr, cidrs: Option<&Vec<IpNet>>) -> bool {
    cidrs.is_some_and(|c| c.iter().any(|n| n.contains(&address)))
}

impl Controller {
    /// One pass over every Service and every handle holding LoadBalancer
    /// addresses. A Service that fails is logged and counted, and tried
    /// again in the next pass; only an unreadable IPAM fails the pass.
    pub async fn pass(&self) -> Result<PassReport, LoadBalancerError> {
        self.services.wait_until_ready().await.ok();
        let snapshot = self.engine.snapshot_of_blocks().await?;
        let mut held = held(&snapshot);
        let pools = Pools::of(&snapshot);
        let services = self.services.state();
        let mut by_handle: BTreeMap<String, &Service> = BTreeMap::new();
        for service in &services {
            if let Some(handle) = handle_of_service(service) {
                by_handle.insert(handle, service);
            }
        }
        let mut handles: BTreeSet<String> = held.keys().cloned().collect();
        handles.extend(
            by_handle
                .iter()
                .filter(|(_, s)| is_managed(s, self.options.assign_ips))
                .map(|(h, _)| h.clone()),
        );
        let mut report = PassReport::default();
        for handle in handles {
            let service = by_handle.get(&handle).copied();
            let addresses = held.remove(&handle).unwrap_or_default();
            if let Err(e) = self
                .sync_service(&handle, service, addresses, &pools, &mut report)
                .await
            {
                let name = service
                    .map(|s| {
                        format!(
                            "{}/{}",
                            s.metadata.namespace.as_deref().unwrap_or_default(),
                            s.metadata.name.as_deref().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                if is_conflict(&e) {
                    // The Service changed since the watch said: the watch
                    // brings the change, and with it another pass.
                    tracing::debug!(handle, service = name, "service changed while being served");
                } else {
                    tracing::warn!(handle, service = name, error = %e, "load-balancer service: {e}");
                }
                report.failed += 1;
            }
        }
        Ok(report)
    }

    // Calico's syncService for one handle: `service` is the Service whose
    // handle it is, if it still exists (a Service created again under the
    // same name has another uid, so another handle).
    async fn sync_service(
        &self,
        handle: &str,
        service: Option<&Service>,
        mut held: BTreeSet<IpAddr>,
        pools: &Pools<'_>,
        report: &mut PassReport,
    ) -> Result<(), LoadBalancerError> {
        let managed = service.is_some_and(|s| is_managed(s, self.options.assign_ips));
        if pools.all.is_empty() || !managed {
            // No pool left, the Service gone, or no longer Calico's: its
            // addresses go back, and leave its status.
            if held.is_empty() {
                return Ok(());
            }
            report
                .released
                .extend(self.engine.release_by_handle(handle).await?);
            if let Some(service) = service.filter(|s| is_load_balancer(s)) {
                let kept: Vec<LoadBalancerIngress> = ingress(service)
                    .into_iter()
                    .filter(|i| {
                        i.ip.as_deref()
                            .and_then(|ip| ip.parse::<IpAddr>().ok())
                            .is_none_or(|ip| !held.contains(&ip))
                    })
                    .collect();
                self.write_status(service, kept).await?;
                report.statuses += 1;
            }
            return Ok(());
        }
        let Some(service) = service else {
            return Ok(());
        };
        let requested = service::requested(service.metadata.annotations.as_ref(), &pools.by_name)?;
        // What is held and no longer asked for goes first.
        let unwanted: Vec<IpAddr> = held
            .iter()
            .copied()
            .filter(|&address| match (&requested.addresses, &requested) {
                (Some(fixed), _) => !fixed.contains(&address),
                (None, r) if r.ipv4_pools.is_some() || r.ipv6_pools.is_some() => {
                    !in_any(address, r.ipv4_pools.as_ref())
                        && !in_any(address, r.ipv6_pools.as_ref())
                }
                // An address from a Manual pool is kept only while an
                // annotation asks for it.
                _ => pools.of_address(address).is_some_and(|p| !p.automatic()),
            })
            .collect();
        for address in unwanted {
            let released = self
                .engine
                .release(&[ReleaseRequest {
                    address,
                    handle: Some(HandleId::new(handle)),
                    sequence_number: None,
                }])
                .await?;
            report.released.extend(released.released);
            held.remove(&address);
        }
        if held.len() != service::wanted_count(service) {
            let got = self.assign(handle, service, &held, &requested).await;
            // What was assigned before a failure is held all the same.
            report.assigned.extend(got.0.iter().copied());
            held.extend(got.0);
            if let Some(e) = got.1 {
                // The status still lists what is held.
                self.status_if_changed(service, &held, report).await?;
                return Err(e);
            }
        }
        self.status_if_changed(service, &held, report).await
    }

    // Calico's assignIP: the fixed addresses not yet held, else one
    // address of each family the Service names and does not hold.
    async fn assign(
        &self,
        handle: &str,
        service: &Service,
        held: &BTreeSet<IpAddr>,
        requested: &Requested,
    ) -> (Vec<IpAddr>, Option<LoadBalancerError>) {
        let mut got = Vec::new();
        let attributes = attributes_of(service, go_time(self.clock.now()));
        if let Some(fixed) = &requested.addresses {
            for &address in fixed.iter().filter(|a| !held.contains(a)) {
                let request = AssignIpRequest {
                    handle: HandleId::new(handle),
                    node: NodeName::new(LOAD_BALANCER_OWNER),
                    address,
                    attributes: attributes.clone(),
                };
                match self
                    .engine
                    .assign_ip_for(&request, AllowedUse::LoadBalancer)
                    .await
                {
                    Ok(()) => got.push(address),
                    Err(e) => return (got, Some(e.into())),
                }
            }
            return (got, None);
        }
        let (mut ipv4, mut ipv6) = service::families(service);
        if held.iter().any(IpAddr::is_ipv4) {
            ipv4 = 0;
        }
        if held.iter().any(IpAddr::is_ipv6) {
            ipv6 = 0;
        }
        if ipv4 == 0 && ipv6 == 0 {
            return (got, None);
        }
        let mut request = AutoAssignRequest::new(
            HandleId::new(handle),
            NodeName::new(LOAD_BALANCER_OWNER),
            ipv4,
            ipv6,
        );
        request.intended_use = AllowedUse::LoadBalancer;
        request.attributes = attributes;
        request.ipv4_pools = requested.ipv4_pools.clone().unwrap_or_default();
        request.ipv6_pools = requested.ipv6_pools.clone().unwrap_or_default();
        if held.is_empty() {
            return match self.engine.auto_assign_all(&request).await {
                Ok(assigned) => {
                    got.extend(
                        assigned
                            .ipv4
                            .addresses
                            .iter()
                            .chain(&assigned.ipv6.addresses)
                            .map(IpNet::addr),
                    );
                    (got, None)
                }
                Err(e) => (got, Some(e.into())),
            };
        }
        // The engine answers an auto-assign for a handle that holds
        // addresses with those addresses (a retried CNI ADD), so a missing
        // family is chosen by planning on a fresh snapshot and assigned as
        // a chosen address, which a handle may add to; one taken in the
        // meantime is refused, and the next pass chooses again.
        let chosen = match self.engine.snapshot_of_blocks().await {
            Ok(snapshot) => {
                match snapshot.plan_auto_assign(&request, Now::from(self.clock.now())) {
                    Ok(plan) => plan
                        .ipv4
                        .addresses
                        .iter()
                        .chain(&plan.ipv6.addresses)
                        .map(IpNet::addr)
                        .collect::<Vec<_>>(),
                    Err(e) => return (got, Some(ipam_store::IpamError::from(e).into())),
                }
            }
            Err(e) => return (got, Some(e.into())),
        };
        for address in chosen {
            let request = AssignIpRequest {
                handle: HandleId::new(handle),
                node: NodeName::new(LOAD_BALANCER_OWNER),
                address,
                attributes: request.attributes.clone(),
            };
            match self
                .engine
                .assign_ip_for(&request, AllowedUse::LoadBalancer)
                .await
            {
                Ok(()) => got.push(address),
                Err(e) => return (got, Some(e.into())),
            }
        }
        (got, None)
    }

    // Calico's needsStatusUpdate and updateServiceStatus: the ingress
    // lists exactly the addresses held.
    async fn status_if_changed(
        &self,
        service: &Service,
        held: &BTreeSet<IpAddr>,
        report: &mut PassReport,
    ) -> Result<(), LoadBalancerError> {
        let listed = ingress_addresses(service);
        let same = listed.len() == held.len()
            && listed
                .iter()
                .all(|ip| ip.is_some_and(|ip| held.contains(&ip)));
        if same {
            return Ok(());
        }
        let ingress = held
            .iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ..LoadBalancerIngress::default()
            })
            .collect();
        self.write_status(service, ingress).await?;
        report.statuses += 1;
        Ok(())
    }

    async fn write_status(
        &self,
        service: &Service,
        ingress: Vec<LoadBalancerIngress>,
    ) -> Result<(), LoadBalancerError> {
        let mut service = service.clone();
        let status = service.status.get_or_insert_with(ServiceStatus::default);
        status.load_balancer = Some(LoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        });
        let api: Api<Service> = Api::namespaced(
            self.client.clone(),
            service.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = service.metadata.name.clone().unwrap_or_default();
        api.replace_status(&name, &PostParams::default(), &service)
            .await?;
        Ok(())
    }
}

fn is_conflict(error: &LoadBalancerError) -> bool {
    matches!(error, LoadBalancerError::Kubernetes(kube::Error::Api(status)) if status.code == 409)
}

fn is_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some(LOAD_BALANCER_TYPE)
}

fn ingress(service: &Service) -> Vec<LoadBalancerIngress> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

// The attributes Calico's assignIP records.
fn attributes_of(service: &Service, timestamp: String) -> BTreeMap<String, String> {
    let spec_type = service
        .spec
        .as_ref()
        .and_then(|s| s.type_.clone())
        .unwrap_or_default();
    BTreeMap::from([
        (
            SERVICE.to_string(),
            service.metadata.name.clone().unwrap_or_default(),
        ),
        (
            NAMESPACE.to_string(),
            service.metadata.namespace.clone().unwrap_or_default(),
        ),
        (TYPE.to_string(), spec_type),
        (TIMESTAMP.to_string(), timestamp),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_read_as_go_prints_them() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(go_time(at), "2023-11-14 22:13:20 +0000 UTC");
        assert_eq!(
            go_time(at + Duration::from_millis(120)),
            "2023-11-14 22:13:20.12 +0000 UTC"
        );
    }
}
