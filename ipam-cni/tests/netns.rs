//! End to end through a real CNI runtime path: Debian's `bridge` and `ptp`
//! plugins run as the main plugin with `"ipam": {"type": "calico-ipam"}`,
//! CNI_PATH holding our binary beside theirs, attaching network namespaces
//! the test creates with `ip netns add`.
//!
//! So that nothing touches the machine's own network, each scenario runs
//! in a private "host" namespace the test creates: the outer test makes
//! it, brings its loopback up and runs the scenario's inner test inside it
//! (`ip netns exec`); the IPAM (ipam-server on its embedded store or on
//! etcd, or etcd alone in direct mode), the bridge, the host ends of the
//! veths and the forwarding sysctl all live there. Needs root, iproute2,
//! Debian's plugins and (for two scenarios) etcd: without them the tests
//! are skipped, and fail under `IPAM_TEST_REQUIRE_ALL=1`
//! (`testkit::require`).

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::thread;

use ipnet::IpNet;
use serde_json::{json, Value};
use support::{
    cni_env, embedded_ipam, etcd_ipam, result_addresses, run_plugin, PluginDir, TestIpam, POOL,
};

/// Set for the inner run, so an inner test never runs on the host itself.
const INNER: &str = "IPAM_CNI_NETNS_INNER";

/// Whether this machine can run a scenario: root for the namespaces,
/// `ip`, Debian's plugins, and etcd when the scenario uses it. Every
/// missing one is named, not only the first.
fn can_run(needs_etcd: bool) -> bool {
    let present = [
        testkit::require::root(),
        testkit::require::command("ip", "iproute2"),
        testkit::require::cni_plugins(),
        !needs_etcd || testkit::require::etcd(),
    ];
    present.iter().all(|p| *p)
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)")
}

/// A network namespace that is deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: String) -> Netns {
        let out = ip(&["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// The IPv4 addresses on `eth0` inside, or `None` without an `eth0`.
    fn eth0_addresses(&self) -> Option<Vec<IpNet>> {
        let out = ip(&["-n", &self.name, "-j", "addr", "show", "dev", "eth0"]);
        if !out.status.success() {
            return None;
        }
        let links: Value = serde_json::from_slice(&out.stdout).unwrap();
        Some(
            links[0]["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["family"] == "inet")
                .map(|a| {
                    format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"])
                        .parse()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
    }
}

/// Runs inner test `inner` of this binary inside a new host namespace,
/// when the machine can.
fn in_private_host_namespace(inner: &str, needs_etcd: bool) {
    if !can_run(needs_etcd) {
        return;
    }
    let host = Netns::create(format!("ipamt-host-{}-{inner}", std::process::id()));
    let up = ip(&["-n", &host.name, "link", "set", "lo", "up"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name])
        .arg(std::env::current_exe().unwrap())
        .args([
            inner,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{inner} failed inside {}:\n--- stdout\n{}\n--- stderr\n{}",
        host.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The inner test ran (libtest prints the count it ran).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
}

fn inner_only() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "an inner test runs inside a private namespace; run its outer test instead"
    );
}

#[test]
fn bridge_and_ptp_on_ipam_server_with_its_embedded_store() {
    in_private_host_namespace("inner_server_embedded", false);
}

#[test]
fn bridge_and_ptp_on_ipam_server_with_etcd() {
    in_private_host_namespace("inner_server_etcd", true);
}

#[test]
fn bridge_and_ptp_in_direct_mode_on_etcd() {
    in_private_host_namespace("inner_direct_etcd", true);
}

#[test]
#[ignore = "runs inside a private namespace, started by bridge_and_ptp_on_ipam_server_with_its_embedded_store"]
fn inner_server_embedded() {
    inner_only();
    let ipam = embedded_ipam();
    let ipam_keys = json!({"server": ipam.serve_unix()});
    Scenario::new(&ipam, json!({}), ipam_keys, "se").run_all();
}

#[test]
#[ignore = "runs inside a private namespace, started by bridge_and_ptp_on_ipam_server_with_etcd"]
fn inner_server_etcd() {
    inner_only();
    let (_runtime, etcd) = support::started_etcd();
    let ipam = etcd_ipam(&etcd.endpoint());
    let ipam_keys = json!({"server": ipam.serve_unix()});
    Scenario::new(&ipam, json!({}), ipam_keys, "sx").run_all();
}

#[test]
#[ignore = "runs inside a private namespace, started by bridge_and_ptp_in_direct_mode_on_etcd"]
fn inner_direct_etcd() {
    inner_only();
    let (_runtime, etcd) = support::started_etcd();
    let ipam = etcd_ipam(&etcd.endpoint());
    let top = json!({"datastore_type": "etcdv3", "etcd_endpoints": etcd.endpoint()});
    Scenario::new(&ipam, top, json!({}), "dx").run_all();
}

/// One IPAM set-up, exercised through both main plugins.
struct Scenario<'a> {
    ipam: &'a TestIpam,
    plugins: PluginDir,
    /// Keys at the top of the network config (direct mode's datastore).
    top: Value,
    /// Keys under `ipam` (server mode's server).
    ipam_keys: Value,
    tag: &'static str,
}

impl<'a> Scenario<'a> {
    fn new(ipam: &'a TestIpam, top: Value, ipam_keys: Value, tag: &'static str) -> Scenario<'a> {
        Scenario {
            ipam,
            plugins: PluginDir::with_debian_plugins(),
            top,
            ipam_keys,
            tag,
        }
    }

    fn run_all(&self) {
        for main in ["bridge", "ptp"] {
            self.every_version_adds_checks_and_deletes(main);
        }
        self.fifty_namespaces_at_once_get_fifty_addresses();
        self.bad_fields_come_back_through_the_main_plugin();
        assert!(
            self.ipam.allocations().is_empty(),
            "{:?}",
            self.ipam.allocations()
        );
    }

    fn netns(&self, what: &str) -> Netns {
        Netns::create(format!("ipamt-{}-{}-{what}", std::process::id(), self.tag))
    }

    fn config(&self, main: &str, version: &str) -> Value {
        let mut ipam = self.ipam_keys.clone();
        ipam["type"] = json!("calico-ipam");
        let mut config = json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": main,
            "nodename": "node-a",
            "ipam": ipam,
        });
        match main {
            "bridge" => config["bridge"] = json!("ipamtbr0"),
            // ptp puts the gateway on the host end of each veth, as
            // Calico's own dataplane does with 169.254.1.1.
            _ => config["ipam"]["ipv4_gateway"] = json!("169.254.1.1"),
        }
        for (key, value) in self.top.as_object().unwrap() {
            config[key] = value.clone();
        }
        config
    }

    fn attach(
        &self,
        main: &str,
        command: &str,
        netns: &Netns,
        container: &str,
        config: &Value,
    ) -> support::Outcome {
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}");
        let env = cni_env(
            command,
            container,
            &netns.path(),
            self.plugins.path(),
            &args,
        );
        run_plugin(&self.plugins.plugin(main), &env, config)
    }

    fn every_version_adds_checks_and_deletes(&self, main: &str) {
        let pool: IpNet = POOL.parse().unwrap();
        for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
            let label = format!("{main} {version}");
            let netns = self.netns(&format!("{main}-{}", version.replace('.', "")));
            let container = format!("{main}-{}", version.replace('.', "-"));
            let config = self.config(main, version);
            let result = self.attach(main, "ADD", &netns, &container, &config).ok();
            assert_eq!(result["cniVersion"], version, "{label}: {result}");
            let address = result_addresses(&result)[0];
            assert!(pool.contains(&address.addr()), "{label}: {address}");
            assert_eq!(
                netns.eth0_addresses(),
                Some(vec![address]),
                "{label}: ip -n addr"
            );
            let handle = format!("k8s-pod-network.{container}");
            assert_eq!(self.ipam.held_by(&handle), [address], "{label}");
            if version != "0.3.0" && version != "0.3.1" {
                let mut check = config.clone();
                check["prevResult"] = result.clone();
                let checked = self.attach(main, "CHECK", &netns, &container, &check);
                assert_eq!(checked.code, 0, "{label} CHECK: {checked:?}");
            }
            self.attach(main, "DEL", &netns, &container, &config).ok();
            assert_eq!(netns.eth0_addresses(), None, "{label}: eth0 removed");
            assert!(self.ipam.held_by(&handle).is_empty(), "{label}: freed");
        }
        // The bridge and ptp of Debian 12 speak up to 1.0.0: they refuse
        // 1.1.0 themselves (code 1) and nothing is allocated. Our plugin's
        // own 1.1.0 answers are covered in tests/protocol.rs.
        let netns = self.netns(&format!("{main}-110"));
        let refused = self.attach(main, "ADD", &netns, "v110", &self.config(main, "1.1.0"));
        assert_eq!(refused.error_code(), Some(1), "{main} 1.1.0: {refused:?}");
        assert!(self.ipam.held_by("k8s-pod-network.v110").is_empty());
    }

    fn fifty_namespaces_at_once_get_fifty_addresses(&self) {
        const COUNT: usize = 50;
        let config = self.config("bridge", "1.0.0");
        let namespaces: Vec<Netns> = (0..COUNT)
            .map(|i| self.netns(&format!("many-{i}")))
            .collect();
        let results: Vec<IpNet> = thread::scope(|scope| {
            let handles: Vec<_> = namespaces
                .iter()
                .enumerate()
                .map(|(i, netns)| {
                    let config = &config;
                    scope.spawn(move || {
                        let result = self
                            .attach("bridge", "ADD", netns, &format!("many-{i}"), config)
                            .ok();
                        result_addresses(&result)[0]
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct: BTreeSet<IpAddr> = results.iter().map(IpNet::addr).collect();
        assert_eq!(distinct.len(), COUNT, "{results:?}");
        for (netns, address) in namespaces.iter().zip(&results) {
            assert_eq!(
                netns.eth0_addresses(),
                Some(vec![*address]),
                "{}",
                netns.name
            );
        }
        let held: BTreeSet<IpAddr> = self.ipam.allocations().into_keys().collect();
        assert_eq!(held, distinct);
        thread::scope(|scope| {
            for (i, netns) in namespaces.iter().enumerate() {
                let config = &config;
                scope.spawn(move || {
                    self.attach("bridge", "DEL", netns, &format!("many-{i}"), config)
                        .ok();
                });
            }
        });
        assert!(self.ipam.allocations().is_empty());
    }

    fn bad_fields_come_back_through_the_main_plugin(&self) {
        let good = self.config("bridge", "1.0.0");
        let with_ipam = |key: &str, value: Value| {
            let mut config = good.clone();
            config["ipam"][key] = value;
            config
        };
        let mut unreachable = good.clone();
        if self.top.get("etcd_endpoints").is_some() {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            unreachable["etcd_endpoints"] = json!(format!("http://127.0.0.1:{port}"));
            unreachable["ipam"]["timeout_seconds"] = json!(2);
        } else {
            unreachable["ipam"]["server"] = json!("unix:/nonexistent/ipam.sock");
        }
        let mut bad_name = good.clone();
        bad_name["name"] = json!("bad/name");
        let cases: Vec<(Value, u64, &str)> = vec![
            (with_ipam("assign_ipv4", json!("maybe")), 7, "maybe"),
            (
                with_ipam("ipv4_pools", json!(["fd00::/64"])),
                7,
                "fd00::/64",
            ),
            (
                with_ipam("ipv4_pools", json!(["missing-pool"])),
                7,
                "missing-pool",
            ),
            (with_ipam("timeout_seconds", json!(0)), 7, "timeout_seconds"),
            (bad_name, 7, "bad/name"),
            (unreachable, 11, ""),
        ];
        for (i, (config, code, named)) in cases.into_iter().enumerate() {
            // bridge leaves the veth of a failed ADD behind: a fresh
            // namespace per case.
            let netns = self.netns(&format!("bad-{i}"));
            let out = self.attach("bridge", "ADD", &netns, "bad", &config);
            assert_eq!(
                (out.code, out.error_code()),
                (1, Some(code)),
                "{named}: {out:?}"
            );
            assert!(out.stdout.contains(named), "{named}: {out:?}");
            // bridge makes the veth before asking the IPAM and leaves it
            // on failure; no address may be on it.
            let addresses = netns.eth0_addresses().unwrap_or_default();
            assert!(addresses.is_empty(), "{named}: {addresses:?}");
        }
        assert!(self.ipam.allocations().is_empty());
    }
}
