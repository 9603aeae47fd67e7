//! `ipamctl pool split`: calicoctl's `ipam split` output byte for byte
//! (commands/ipam/split.go), in direct and server mode, and its refusals.

use super::*;

/// calicoctl's own test pool (tests/st/utils/data.py, ippool_name1_rev1_v4)
/// with a pod in it, and a second pool.
async fn seed(dir: &Path) {
    let engine = open_embedded(dir);
    let mut calico = pool("ippool-name1", "10.0.1.0/24", Some(27)).spec().clone();
    calico.ipip_mode = Some("Always".into());
    calico.node_selector = "all()".into();
    engine
        .create_pool(ipam_core::Pool::new("ippool-name1", calico).unwrap())
        .await
        .unwrap();
    engine
        .create_pool(pool("other", "10.2.0.0/16", None))
        .await
        .unwrap();
    assign_pod(&engine, "k8s-pod-network.c1", "node-1", "web-1", 1, 0).await;
}

#[tokio::test]
async fn pool_split_prints_what_calicoctl_prints_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path()).await;
    let direct = embedded(dir.path());
    let before = ipamctl_with(&direct, &["show", "--show-blocks"]);
    let run = ipamctl_with(&direct, &["pool", "split", "4", "--cidr", "10.0.1.0/24"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // split.go prints its first and last sentences without a newline.
    assert_eq!(
        run.stdout,
        "IP Pool ippool-name1 was successfully split into 4 smaller pools.\
         Created split-ippool-name1-0 with CIDR 10.0.1.0/26.\n\
         Created split-ippool-name1-1 with CIDR 10.0.1.64/26.\n\
         Created split-ippool-name1-2 with CIDR 10.0.1.128/26.\n\
         Created split-ippool-name1-3 with CIDR 10.0.1.192/26.\n\
         Please refer to the documentation for final steps."
    );
    let list = ipamctl_with(&direct, &["pool", "list"]);
    assert!(!list.stdout.contains("ippool-name1 "), "{}", list.stdout);
    assert!(
        list.stdout.contains("split-ippool-name1-3"),
        "{}",
        list.stdout
    );
    // The pod's block is now a child's, with its address.
    let after = ipamctl_with(&direct, &["show", "--show-blocks"]);
    let blocks = |text: &str| {
        text.lines()
            .filter(|l| l.contains("| Block "))
            .map(|l| l.split('|').nth(2).unwrap().trim().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(blocks(&before.stdout).len(), 1, "{}", before.stdout);
    assert_eq!(
        blocks(&after.stdout),
        blocks(&before.stdout),
        "{}",
        after.stdout
    );
    let server = Server::start(dir.path());
    let run = ipamctl_with(
        &server.connection(),
        &["pool", "split", "2", "--name", "other"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "IP Pool other was successfully split into 2 smaller pools.\
         Created split-other-0 with CIDR 10.2.0.0/17.\n\
         Created split-other-1 with CIDR 10.2.128.0/17.\n\
         Please refer to the documentation for final steps."
    );
}

#[test]
fn pool_split_refusals_name_the_flag_and_value() {
    let dir = tempfile::tempdir().unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(seed(dir.path()));
    in_both_modes(dir.path(), |mode, connection| {
        for (args, code, says) in [
            (
                &["pool", "split", "4"][..],
                2,
                "no name or CIDR provided. Provide a name or CIDR to denote the IP pool to split",
            ),
            (
                &[
                    "pool",
                    "split",
                    "4",
                    "--name",
                    "other",
                    "--cidr",
                    "10.2.0.0/16",
                ],
                2,
                "give one of them, not both (name \"other\", cidr 10.2.0.0/16)",
            ),
            (
                &["pool", "split", "3", "--name", "other"],
                2,
                "number to split CIDR into is not a valid power of 2: 3",
            ),
            (
                &["pool", "split", "four", "--name", "other"],
                2,
                "error reading number to split IP pools into. four is not a valid number",
            ),
            (
                &["pool", "split", "512", "--name", "ippool-name1"],
                2,
                "the CIDR 10.0.1.0/24 is not large enough to be split into 512 parts",
            ),
            (
                &["pool", "split", "2", "--cidr", "10.9.0.0/24"],
                3,
                "unable to find IP pool covering the specified CIDR 10.9.0.0/24",
            ),
        ] {
            let run = ipamctl_with(connection, args);
            assert_eq!(run.code, code, "{mode} {args:?}: {}", run.stderr);
            assert!(run.stderr.contains(says), "{mode} {args:?}: {}", run.stderr);
            assert_eq!(run.stdout, "", "{mode} {args:?}");
        }
    });
}
