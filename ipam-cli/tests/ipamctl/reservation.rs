//! `ipamctl reservation`: created, listed, shown and deleted, in direct
//! mode and through ipam-server alike, with the exit codes and messages
//! of the other commands.

use super::*;

#[test]
fn reservations_are_created_listed_shown_and_deleted_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(
            connection,
            &[
                "reservation",
                "create",
                "gateways",
                "--cidr",
                "10.0.0.1",
                "--cidr",
                "10.0.8.5/24",
                "--cidr",
                "fd00::1",
            ],
        );
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert_eq!(
            run.stdout,
            "Created IP reservation gateways (10.0.0.1/32, 10.0.8.5/24, fd00::1/128).\n",
            "{mode}"
        );
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "vms", "--cidr", "10.0.9.0/28"],
        );
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "list"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        golden("reservation-list.txt", &run.stdout);
        let run = ipamctl_with(connection, &["reservation", "get", "vms"]);
        golden("reservation-get.txt", &run.stdout);
        let run = ipamctl_with(connection, &["reservation", "get", "vms", "-o", "json"]);
        let shown: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(
            shown,
            json!({"name": "vms", "spec": {"reservedCIDRs": ["10.0.9.0/28"]}}),
            "{mode}"
        );
        let run = ipamctl_with(connection, &["reservation", "list", "-o", "yaml"]);
        assert!(
            run.stdout.contains("- name: gateways\n"),
            "{mode}: {}",
            run.stdout
        );

        // Refusals: exit codes as for pools, messages naming the value.
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "vms", "--cidr", "10.0.10.0/28"],
        );
        assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("IPReservation vms already exists"),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "r", "--cidr", "10.0.0.300"],
        );
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("'10.0.0.300'") && run.stderr.contains("--cidr"),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(
            connection,
            &[
                "reservation",
                "create",
                "r",
                "--cidr",
                "10.0.0.1",
                "--cidr",
                "10.0.0.1/32",
            ],
        );
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("\"10.0.0.1/32\" is 10.0.0.1/32, which reservedCIDRs[0]"),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "Not_A_Name", "--cidr", "10.0.0.1"],
        );
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("\"Not_A_Name\""),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(connection, &["reservation", "create", "r"]);
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(run.stderr.contains("--cidr"), "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "get", "nope"]);
        assert_eq!(run.code, 3, "{mode}: {}", run.stderr);
        assert!(run.stderr.contains("\"nope\""), "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "delete", "nope"]);
        assert_eq!(run.code, 3, "{mode}: {}", run.stderr);
        assert!(run.stderr.contains("nope"), "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "list"]);
        golden("reservation-list.txt", &run.stdout);

        for name in ["gateways", "vms"] {
            let run = ipamctl_with(connection, &["reservation", "delete", name]);
            assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
            assert_eq!(run.stdout, format!("Deleted IP reservation {name}.\n"));
        }
        let run = ipamctl_with(connection, &["reservation", "list"]);
        assert_eq!(
            run.stdout, "+------+-------+\n| NAME | CIDRS |\n+------+-------+\n+------+-------+\n",
            "{mode}"
        );
    });
}
