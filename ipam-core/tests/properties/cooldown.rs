//! The IP cooldown's promises, with the collector's backstop running
//! every so many seconds.

use super::*;

/// The collector's backstop (kube-controllers' garbageCollectColdIPs), run
/// every `interval` seconds from the start of a run, each pass at its own
/// time.
struct Backstop {
    interval: u64,
    next: u64,
}

impl Backstop {
    fn every(interval_seconds: u64, cluster: &Cluster) -> Backstop {
        let interval = interval_seconds * NANOS_PER_SECOND;
        Backstop {
            interval,
            next: cluster.now.unix_nanos + interval,
        }
    }

    /// Runs the passes due up to the time `step` happens, before it.
    fn run_before(&mut self, cluster: &mut Cluster, step: &Step) {
        let at = cluster.now.unix_nanos + step.seconds_later * NANOS_PER_SECOND + step.nanos_later;
        while self.next <= at {
            let plan = cluster.snapshot.plan_deallocate_cooled(Now {
                unix_nanos: self.next,
            });
            cluster.snapshot.apply(plan);
            self.next += self.interval;
        }
    }
}

/// The addresses a step handed out.
fn handed_out(outcome: &Outcome) -> Vec<IpAddr> {
    match outcome {
        Outcome::AutoAssigned { ipv4, ipv6, .. } => ipv4
            .addresses
            .iter()
            .chain(&ipv6.addresses)
            .map(IpNet::addr)
            .collect(),
        Outcome::Assigned { address, .. } => vec![*address],
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        max_shrink_iters: MAX_SHRINK_ITERS,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_address_is_handed_out_within_its_cooldown(
        scenario in cooldown_scenario(),
        interval in 1u64..=120,
    ) {
        let cooldown = u64::from(scenario.world.config.ip_cooldown_seconds) * NANOS_PER_SECOND;
        let mut cluster = Cluster::new(&scenario.world);
        let mut backstop = Backstop::every(interval, &cluster);
        // When each address still awaiting reuse was released.
        let mut released_at: BTreeMap<IpAddr, u64> = BTreeMap::new();
        for step in &scenario.steps {
            backstop.run_before(&mut cluster, step);
            let outcome = cluster.step(step);
            let now = cluster.now.unix_nanos;
            for address in handed_out(&outcome) {
                if let Some(at) = released_at.remove(&address) {
                    prop_assert!(
                        now - at >= cooldown,
                        "{} handed out {} ns after its release, within the {} s cooldown",
                        address,
                        now - at,
                        cooldown / NANOS_PER_SECOND
                    );
                }
            }
            if let Outcome::Released(addresses) = &outcome {
                released_at.extend(addresses.iter().map(|a| (*a, now)));
            }
            let held = holders(&cluster.snapshot);
            for address in released_at.keys() {
                prop_assert!(!held.contains_key(address), "{} released yet held", address);
            }
        }
    }

    #[test]
    fn every_released_address_is_free_once_its_cooldown_and_one_collection_interval_have_passed(
        scenario in cooldown_scenario(),
        interval in 1u64..=120,
    ) {
        let cooldown = i64::from(scenario.world.config.ip_cooldown_seconds);
        let mut cluster = Cluster::new(&scenario.world);
        let mut backstop = Backstop::every(interval, &cluster);
        for step in &scenario.steps {
            backstop.run_before(&mut cluster, step);
            cluster.step(step);
            let now = cluster.now.unix_seconds();
            for (address, at) in released(&cluster.snapshot) {
                // Released in second `at`: cooled from second at + cooldown
                // + 1, so the first pass from then on, at most `interval`
                // seconds later, deallocates it.
                prop_assert!(
                    now < at + cooldown + interval as i64,
                    "{} released in second {} still not free in second {} \
                     (cooldown {} s, a pass every {} s)",
                    address,
                    at,
                    now,
                    cooldown,
                    interval
                );
            }
        }
    }

    #[test]
    fn under_a_cooldown_handles_agree_with_blocks_and_everything_round_trips(
        scenario in cooldown_scenario(),
        interval in 1u64..=120,
    ) {
        let mut cluster = Cluster::new(&scenario.world);
        let mut backstop = Backstop::every(interval, &cluster);
        for step in &scenario.steps {
            backstop.run_before(&mut cluster, step);
            cluster.step(step);
            check_handles_agree_with_blocks(&cluster.snapshot)?;
            check_round_trips(&cluster.snapshot)?;
        }
    }

    #[test]
    fn under_a_cooldown_a_failed_plan_changes_nothing(scenario in cooldown_scenario()) {
        check_failed_plans_change_nothing(&scenario)?;
    }
}
