//! Spiderpool's scale scenario at the IPAM layer, with the real binaries:
//! PODS pods over NODES nodes, IN_FLIGHT ADDs at once, the pool sized to
//! the pods (a /22 of /26 blocks for 1000), then every pod's DEL the same
//! way. Three plugins go through the same harness in the same run, round
//! by round so that the machine's noise falls on all three:
//!
//! - calico-ipam in server mode (ipam-server's router on its embedded
//!   store, in this process, over a unix socket), each node's config naming
//!   its node;
//! - Debian's host-local, one range (/24) and one data dir per node, as a
//!   cluster gives each node its own podCIDR;
//! - `/bin/true`, which does nothing: the cost of starting a process and
//!   passing it the config, so that the others can be read net of it.
//!
//! Usage: `cargo bench -p ipam-cni --bench scale -- [ROUNDS] [PODS] [NODES] [IN_FLIGHT]`
//! (defaults 2, 1000, 10, 100). The table goes to stderr. `CALICO_IPAM_BIN`
//! names another calico-ipam to run (the static build README's
//! "Installing the plugin" gives: a node's binary, not the bench profile's).

mod harness;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::{
    calico_ipam, invoke, numbers_from_args, require_host_local, runtime, serve_embedded, Plugin,
    HOST_LOCAL,
};
use serde_json::json;

/// A plugin configured once per node.
struct PerNode {
    name: &'static str,
    nodes: Vec<Plugin>,
}

/// Wall time of each phase, summed over the rounds.
#[derive(Default, Clone, Copy)]
struct Phases {
    add: Duration,
    del: Duration,
}

/// Runs `command` for every pod, `in_flight` at a time; pod i is on node
/// i mod the node count. Returns the phase's wall time.
fn phase(plugin: &PerNode, command: &str, round: usize, pods: usize, in_flight: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..in_flight {
            scope.spawn(|| loop {
                let pod = next.fetch_add(1, Ordering::Relaxed);
                if pod >= pods {
                    return;
                }
                let node = &plugin.nodes[pod % plugin.nodes.len()];
                invoke(node, command, &format!("scale-{round}-{pod}"));
            });
        }
    });
    started.elapsed()
}

fn per_op_ms(total: Duration, operations: usize) -> f64 {
    total.as_secs_f64() * 1000.0 / operations as f64
}

fn main() {
    let [rounds, pods, nodes, in_flight] = numbers_from_args([2, 1000, 10, 100]);
    assert!(
        nodes <= 256,
        "host-local's ranges are 198.19.N.0/24: at most 256 nodes"
    );
    require_host_local();
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    // The pool sized to the pods: 1000 pods in a /22 (16 blocks of 64).
    let pool_prefix = 32 - (pods.next_power_of_two().max(64).trailing_zeros() as u8);
    let socket = serve_embedded(
        &runtime,
        dir.path(),
        &format!("198.18.0.0/{pool_prefix}"),
        26,
    );

    let ours = PerNode {
        name: "calico-ipam (server mode, embedded store)",
        nodes: (0..nodes)
            .map(|n| Plugin {
                name: "calico-ipam",
                binary: calico_ipam(),
                config: json!({
                    "cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                    "nodename": format!("node-{n}"),
                    "log_file_path": dir.path().join("cni.log"),
                    "ipam": {"type": "calico-ipam", "server": format!("unix:{}", socket.display()),
                             "state_dir": dir.path().join(format!("state-{n}"))}
                }),
            })
            .collect(),
    };
    let host_local = PerNode {
        name: "host-local (one /24 per node)",
        nodes: (0..nodes)
            .map(|n| Plugin {
                name: "host-local",
                binary: PathBuf::from(HOST_LOCAL),
                config: json!({
                    "cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                    "ipam": {"type": "host-local", "subnet": format!("198.19.{n}.0/24"),
                             "dataDir": dir.path().join(format!("host-local-{n}"))}
                }),
            })
            .collect(),
    };
    let no_op = PerNode {
        name: "/bin/true (the harness alone)",
        nodes: vec![Plugin {
            name: "true",
            binary: PathBuf::from("/bin/true"),
            config: json!({"cniVersion": "1.0.0", "name": "bench"}),
        }],
    };
    let plugins = [ours, host_local, no_op];
    let mut phases = [Phases::default(); 3];
    for round in 0..rounds {
        for (plugin, phases) in plugins.iter().zip(phases.iter_mut()) {
            phases.add += phase(plugin, "ADD", round, pods, in_flight);
            phases.del += phase(plugin, "DEL", round, pods, in_flight);
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }

    let operations = rounds * pods;
    eprintln!(
        "{rounds} rounds x {pods} pods on {nodes} nodes, {in_flight} in flight; \
         per operation = phase wall time / operations"
    );
    eprintln!("| plugin | ADD per pod | DEL per pod | ADD net of harness | DEL net of harness |");
    eprintln!("| --- | --- | --- | --- | --- |");
    let harness = phases[2];
    let net = |p: Phases| {
        (
            per_op_ms(p.add, operations) - per_op_ms(harness.add, operations),
            per_op_ms(p.del, operations) - per_op_ms(harness.del, operations),
        )
    };
    for (plugin, p) in plugins.iter().zip(phases) {
        let (add_net, del_net) = net(p);
        eprintln!(
            "| {} | {:.3} ms | {:.3} ms | {add_net:.3} ms | {del_net:.3} ms |",
            plugin.name,
            per_op_ms(p.add, operations),
            per_op_ms(p.del, operations),
        );
    }
    let (ours_add, ours_del) = net(phases[0]);
    let (theirs_add, theirs_del) = net(phases[1]);
    eprintln!(
        "net of the harness, ours / host-local: ADD {:.2}, DEL {:.2}",
        ours_add / theirs_add,
        ours_del / theirs_del
    );
}
