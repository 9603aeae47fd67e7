//! ADD and DEL through the plugin binary, calico-ipam (server mode, the
//! server on its embedded store) beside Debian's host-local, measured the
//! same way in the same run: each plugin is started as a runtime starts
//! an IPAM plugin (environment, config on stdin, result on stdout), one
//! attachment at a time and then with several runtimes at once. The two
//! plugins alternate round by round so that the machine's noise falls on
//! both.
//!
//! Usage: `cargo bench -p ipam-cni --bench add_del -- [ROUNDS] [PER_ROUND] [PARALLEL]`
//! (defaults 5, 200, 8).

mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{
    calico_ipam, invoke, ms, numbers_from_args, require_host_local, runtime, serve_embedded,
    Plugin, HOST_LOCAL,
};
use serde_json::json;

#[derive(Default)]
struct Figures {
    add_latencies: Vec<Duration>,
    sequential_pairs: usize,
    sequential_time: Duration,
    parallel_pairs: usize,
    parallel_time: Duration,
}

fn sequential(plugin: &Plugin, round: usize, count: usize, figures: &mut Figures) {
    let started = Instant::now();
    let containers: Vec<String> = (0..count).map(|i| format!("seq-{round}-{i}")).collect();
    for container in &containers {
        figures.add_latencies.push(invoke(plugin, "ADD", container));
    }
    for container in &containers {
        invoke(plugin, "DEL", container);
    }
    figures.sequential_time += started.elapsed();
    figures.sequential_pairs += count;
}

fn parallel(plugin: &Plugin, round: usize, count: usize, workers: usize, figures: &mut Figures) {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..workers {
            scope.spawn(move || {
                for i in (worker..count).step_by(workers) {
                    let container = format!("par-{round}-{i}");
                    invoke(plugin, "ADD", &container);
                    invoke(plugin, "DEL", &container);
                }
            });
        }
    });
    figures.parallel_time += started.elapsed();
    figures.parallel_pairs += count;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let [rounds, per_round, workers] = numbers_from_args([5, 200, 8]);
    require_host_local();
    let dir = tempfile::tempdir().unwrap();

    let runtime = runtime();
    let socket = serve_embedded(&runtime, dir.path(), "198.18.0.0/16", 26);

    let ours = Plugin {
        name: "calico-ipam (server mode, embedded store)",
        binary: calico_ipam(),
        config: json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "nodename": "bench-node",
            "log_file_path": dir.path().join("cni.log"),
            "ipam": {"type": "calico-ipam", "server": format!("unix:{}", socket.display()),
                     "state_dir": dir.path().join("state")}
        }),
    };
    let theirs = Plugin {
        name: "host-local (Debian containernetworking-plugins)",
        binary: PathBuf::from(HOST_LOCAL),
        config: json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": "198.19.0.0/16",
                     "dataDir": dir.path().join("host-local")}
        }),
    };
    let plugins = [ours, theirs];
    let mut figures: Vec<Figures> = plugins.iter().map(|_| Figures::default()).collect();
    for round in 0..rounds {
        for (plugin, figures) in plugins.iter().zip(figures.iter_mut()) {
            sequential(plugin, round, per_round, figures);
            parallel(plugin, round, per_round, workers, figures);
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }

    eprintln!("{rounds} rounds x {per_round} attachments; parallel: {workers} runtimes at once");
    eprintln!(
        "| plugin | ADD p50 | ADD p99 | ADD+DEL/s, one at a time | ADD+DEL/s, {workers} at once |"
    );
    eprintln!("| --- | --- | --- | --- | --- |");
    let mut summary = Vec::new();
    for (plugin, figures) in plugins.iter().zip(figures.iter_mut()) {
        figures.add_latencies.sort();
        let p50 = percentile(&figures.add_latencies, 0.50);
        let p99 = percentile(&figures.add_latencies, 0.99);
        let sequential = figures.sequential_pairs as f64 / figures.sequential_time.as_secs_f64();
        let parallel = figures.parallel_pairs as f64 / figures.parallel_time.as_secs_f64();
        eprintln!(
            "| {} | {:.2} ms | {:.2} ms | {sequential:.0} | {parallel:.0} |",
            plugin.name,
            ms(p50),
            ms(p99)
        );
        summary.push((p50, p99, sequential, parallel));
    }
    let (ours, theirs) = (summary[0], summary[1]);
    eprintln!(
        "ratios ours/host-local: ADD p50 {:.2}, ADD p99 {:.2}; ADD+DEL/s one at a time {:.2}, at once {:.2}",
        ms(ours.0) / ms(theirs.0),
        ms(ours.1) / ms(theirs.1),
        ours.2 / theirs.2,
        ours.3 / theirs.3
    );
}
