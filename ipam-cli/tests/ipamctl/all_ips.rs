//! `ipamctl check --show-all-ips`: every allocation, block by block, as
//! calicoctl's `ipam check --show-all-ips` prints it, the same in direct
//! mode and through ipam-server, then the findings (the flag implies
//! --show-problem-ips, as in calicoctl).

use super::*;

#[tokio::test]
async fn check_show_all_ips_lists_every_allocation_as_calicoctl_does() {
    let dir = tempfile::tempdir().unwrap();
    seed_16_pool_with_13_in_use(dir.path()).await;
    {
        // A handle with no address: a finding the flag shows.
        let engine = open_embedded(dir.path());
        let leaked = Handle::new("k8s-pod-network.leaked");
        engine.store().create(&Value::Handle(leaked)).await.unwrap();
    }
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["check", "--show-all-ips"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        golden("check-show-all-ips.txt", &run.stdout);
        let quiet = ipamctl_with(connection, &["check"]);
        assert!(!quiet.stdout.contains("allocated; attrs"), "{mode}");
        assert!(
            run.stdout.ends_with(&quiet.stdout.replace(
                "Found 1 handleWithoutAllocations",
                "  handle k8s-pod-network.leaked doesn't have any active IPs (it records 0 in blocks [])\nFound 1 handleWithoutAllocations"
            )),
            "{mode}: the summary follows the listing, with the findings:\n{}",
            run.stdout
        );
    });
}
