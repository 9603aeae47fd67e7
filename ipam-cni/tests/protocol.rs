//! The `calico-ipam` binary run as a runtime runs an IPAM plugin, without
//! network namespaces: every command, every CNI version's result format,
//! every error code, server mode over loopback TCP and direct mode on etcd
//! and on Kubernetes custom resources.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipam_server::app::AppConfig;
use serde_json::{json, Value};
use support::{cni_env, embedded_ipam, etcd_ipam, result_addresses, run_plugin, PluginDir, POOL};

const K8S_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx";

fn config(version: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("calico-ipam");
    json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": "node-a",
        "ipam": ipam,
    })
}

fn server_config(version: &str, server: &str) -> Value {
    config(version, json!({"server": server}))
}

/// An IPAM on the embedded store served on loopback TCP, and the plugins.
fn served() -> (support::TestIpam, String, PluginDir) {
    let ipam = embedded_ipam();
    let server = ipam.serve_tcp(AppConfig::default());
    (ipam, server, PluginDir::new())
}

struct Run<'a> {
    plugins: &'a PluginDir,
}

impl Run<'_> {
    fn ipam(&self, command: &str, container: &str, args: &str, config: &Value) -> support::Outcome {
        let env = cni_env(
            command,
            container,
            "/run/netns/none",
            self.plugins.path(),
            args,
        );
        run_plugin(&self.plugins.plugin("calico-ipam"), &env, config)
    }
}

#[test]
fn version_lists_the_five_spec_versions() {
    let plugins = PluginDir::new();
    let out = run_plugin(
        &plugins.plugin("calico-ipam"),
        &[("CNI_COMMAND", "VERSION".to_string())],
        &json!({"cniVersion": "0.4.0"}),
    )
    .ok();
    assert_eq!(
        out,
        json!({"cniVersion": "0.4.0",
               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn add_answers_in_each_versions_result_format_and_records_calicos_attributes() {
    let (ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let pool: ipnet::IpNet = POOL.parse().unwrap();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let container = format!("c{i}");
        let out = run
            .ipam(
                "ADD",
                &container,
                K8S_ARGS,
                &server_config(version, &server),
            )
            .ok();
        assert_eq!(out["cniVersion"], *version);
        let address = result_addresses(&out)[0];
        assert!(pool.contains(&address.addr()), "{address}");
        assert_eq!(address.prefix_len(), 26, "the block's prefix, as Calico");
        let mut ip = json!({"address": address.to_string()});
        if version.starts_with('0') {
            ip["version"] = json!("4");
        }
        assert_eq!(out["ips"], json!([ip]), "{version}");
        assert_eq!(
            out["routes"],
            json!([{"dst": format!("{}/32", address.addr())}])
        );
        assert_eq!(out["dns"], json!({}));
        let handle = format!("k8s-pod-network.{container}");
        assert_eq!(ipam.held_by(&handle), [address]);
        let attributes = ipam.attributes_of(address.addr());
        assert_eq!(attributes["node"], "node-a");
        assert_eq!(attributes["namespace"], "default");
        assert_eq!(attributes["pod"], "nginx");
        assert!(
            attributes["timestamp"].ends_with(" +0000 UTC"),
            "{attributes:?}"
        );
    }
}

#[test]
fn a_retried_add_returns_the_same_address_and_del_frees_it_once() {
    let (ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let config = server_config("1.0.0", &server);
    let first = run.ipam("ADD", "retry", K8S_ARGS, &config).ok();
    let again = run.ipam("ADD", "retry", K8S_ARGS, &config).ok();
    assert_eq!(first, again);
    assert_eq!(ipam.allocations().len(), 1);
    assert_eq!(
        run.ipam("DEL", "retry", K8S_ARGS, &config).ok(),
        Value::Null
    );
    assert!(ipam.allocations().is_empty());
    // DEL of something never added (or already deleted) succeeds.
    assert_eq!(
        run.ipam("DEL", "retry", K8S_ARGS, &config).ok(),
        Value::Null
    );
    assert_eq!(run.ipam("DEL", "never", "", &config).ok(), Value::Null);
}

#[test]
fn del_also_releases_the_legacy_workload_handle() {
    let (ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let legacy = ipam_core::AssignIpRequest {
        handle: ipam_core::HandleId::new("default.nginx"),
        node: ipam_core::NodeName::new("node-a"),
        address: "198.18.9.9".parse().unwrap(),
        attributes: Default::default(),
    };
    ipam.runtime
        .block_on(ipam.engine.assign_ip(&legacy))
        .unwrap();
    run.ipam("DEL", "c1", K8S_ARGS, &server_config("1.0.0", &server))
        .ok();
    assert!(ipam.allocations().is_empty());
}

#[test]
fn an_ip_argument_assigns_that_address_as_a_host_route() {
    let (ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let config = server_config("0.4.0", &server);
    let out = run
        .ipam(
            "ADD",
            "fixed",
            &format!("{K8S_ARGS};IP=198.18.7.7"),
            &config,
        )
        .ok();
    assert_eq!(
        out["ips"],
        json!([{"version": "4", "address": "198.18.7.7/32"}])
    );
    assert_eq!(ipam.held_by("k8s-pod-network.fixed").len(), 1);
    let taken = run.ipam("ADD", "other", "IP=198.18.7.7", &config);
    assert_eq!(
        (taken.code, taken.error_code()),
        (1, Some(101)),
        "{taken:?}"
    );
    let outside = run.ipam("ADD", "outside", "IP=10.9.9.9", &config);
    assert_eq!(outside.error_code(), Some(103), "{outside:?}");
    assert!(outside.stdout.contains("10.9.9.9"), "{outside:?}");
}

#[test]
fn result_prefix_reports_the_block_the_pool_or_the_host_prefix() {
    let (_ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    // POOL is a /16 cut into /26 blocks.
    let cases = [
        (json!(null), "/26", "/32"),
        (json!("block"), "/26", "/32"),
        (json!("pool"), "/16", "/16"),
        (json!("host"), "/32", "/32"),
    ];
    for (n, (prefix, auto, chosen)) in cases.into_iter().enumerate() {
        let config = config("1.0.0", json!({"server": server, "result_prefix": prefix}));
        // The chosen addresses first: auto-assignment then steers clear.
        let ip = format!("198.18.{}.7", 200 + n);
        let out = run
            .ipam("ADD", &format!("ip{n}"), &format!("IP={ip}"), &config)
            .ok();
        assert_eq!(
            out["ips"][0]["address"],
            json!(format!("{ip}{chosen}")),
            "{prefix}"
        );
        let out = run.ipam("ADD", &format!("auto{n}"), K8S_ARGS, &config).ok();
        let address = out["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(address.ends_with(auto), "{prefix}: {address}");
    }
}

#[test]
fn under_result_prefix_pool_an_unusable_requested_address_is_refused() {
    let (ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let ipam_keys = |prefix: &str| json!({"server": server, "result_prefix": prefix, "ipv4_gateway": "198.18.0.1"});
    let pool = config("1.0.0", ipam_keys("pool"));
    let out = run.ipam("ADD", "gw", "IP=198.18.0.9", &pool).ok();
    assert_eq!(
        out["ips"],
        json!([{"address": "198.18.0.9/16", "gateway": "198.18.0.1"}])
    );
    for (address, why) in [
        (
            "198.18.0.0",
            "network or broadcast address of pool 198.18.0.0/16",
        ),
        (
            "198.18.255.255",
            "network or broadcast address of pool 198.18.0.0/16",
        ),
        ("198.18.0.1", "ipam.ipv4_gateway"),
    ] {
        let out = run.ipam("ADD", "edge", &format!("IP={address}"), &pool);
        assert_eq!((out.code, out.error_code()), (1, Some(4)), "{out:?}");
        let details = out.output["details"].as_str().unwrap();
        assert!(details.contains(&format!("IP={address}")), "{details}");
        assert!(details.contains(why), "{details}");
    }
    // Under "block" the edges of the pool are ordinary addresses of their
    // blocks (Calico), but the gateway is still no container's.
    let block = config("1.0.0", ipam_keys("block"));
    run.ipam("ADD", "edge", "IP=198.18.0.0", &block).ok();
    let out = run.ipam("ADD", "gw2", "IP=198.18.0.1", &block);
    assert_eq!(out.error_code(), Some(4), "{out:?}");
    let held: Vec<String> = ipam.allocations().keys().map(ToString::to_string).collect();
    assert_eq!(held, ["198.18.0.0", "198.18.0.9"]);
}

#[test]
fn under_result_prefix_pool_concurrent_adds_never_get_an_edge_or_the_gateway() {
    let ipam = embedded_ipam();
    // Four /29 blocks: the network and gateway are in the first, the
    // broadcast in the last, and concurrent ADDs of one node are planned
    // together (one block write for a burst) or one by one.
    let small = ipam_core::PoolSpec {
        block_size: Some(29),
        ..ipam_core::PoolSpec::new("198.19.0.0/27".parse().unwrap())
    };
    ipam.runtime
        .block_on(
            ipam.engine
                .create_pool(ipam_core::Pool::new("small", small).unwrap()),
        )
        .unwrap();
    let server = ipam.serve_unix();
    let plugins = PluginDir::new();
    let config = config(
        "1.0.0",
        json!({"server": server, "ipv4_pools": ["198.19.0.0/27"],
               "result_prefix": "pool", "ipv4_gateway": "198.19.0.1"}),
    );
    let outcomes: Vec<support::Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|n| {
                let (plugins, config) = (&plugins, &config);
                scope.spawn(move || {
                    Run { plugins }.ipam("ADD", &format!("burst{n}"), K8S_ARGS, config)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut got: Vec<String> = Vec::new();
    for out in &outcomes {
        match out.code {
            0 => got.push(
                out.output["ips"][0]["address"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            _ => assert_eq!(out.error_code(), Some(100), "{out:?}"),
        }
    }
    got.sort_by_key(|a| a.parse::<ipnet::IpNet>().unwrap().addr());
    let usable: Vec<String> = (2..31).map(|i| format!("198.19.0.{i}/27")).collect();
    assert_eq!(got, usable, "29 distinct addresses: all but .0, .1 and .31");
}

#[test]
fn check_passes_while_the_handle_holds_prev_result_and_fails_after() {
    let (ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let mut config = server_config("1.0.0", &server);
    let added = run.ipam("ADD", "chk", K8S_ARGS, &config).ok();
    config["prevResult"] = added;
    assert_eq!(
        run.ipam("CHECK", "chk", K8S_ARGS, &config).ok(),
        Value::Null
    );
    ipam.runtime
        .block_on(ipam.engine.release_by_handle("k8s-pod-network.chk"))
        .unwrap();
    let gone = run.ipam("CHECK", "chk", K8S_ARGS, &config);
    assert_eq!(gone.error_code(), Some(102), "{gone:?}");
    assert!(gone.stdout.contains("k8s-pod-network.chk"), "{gone:?}");

    let mut old = config.clone();
    old["cniVersion"] = json!("0.3.1");
    assert_eq!(
        run.ipam("CHECK", "chk", K8S_ARGS, &old).error_code(),
        Some(1)
    );
    let without = server_config("1.0.0", &server);
    let missing = run.ipam("CHECK", "chk", K8S_ARGS, &without);
    assert_eq!(missing.error_code(), Some(7));
    assert!(missing.stdout.contains("prevResult"), "{missing:?}");
}

#[test]
fn gc_releases_only_this_networks_stale_handles_on_this_node() {
    let (ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let config = server_config("1.1.0", &server);
    for container in ["keep", "stale"] {
        run.ipam("ADD", container, K8S_ARGS, &config).ok();
    }
    let mut other_node = config.clone();
    other_node["nodename"] = json!("node-b");
    run.ipam("ADD", "elsewhere", K8S_ARGS, &other_node).ok();
    let mut other_network = config.clone();
    other_network["name"] = json!("other-net");
    run.ipam("ADD", "foreign", K8S_ARGS, &other_network).ok();

    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let env = [
        ("CNI_COMMAND", "GC".to_string()),
        ("CNI_PATH", plugins.path().display().to_string()),
    ];
    assert_eq!(
        run_plugin(&plugins.plugin("calico-ipam"), &env, &gc).ok(),
        Value::Null
    );
    let handles: Vec<String> = ipam.allocations().into_values().collect();
    assert_eq!(handles.len(), 3, "{handles:?}");
    assert!(!handles.contains(&"k8s-pod-network.stale".to_string()));
    for kept in [
        "k8s-pod-network.keep",
        "k8s-pod-network.elsewhere",
        "other-net.foreign",
    ] {
        assert!(handles.contains(&kept.to_string()), "{kept} in {handles:?}");
    }
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    assert_eq!(
        run_plugin(&plugins.plugin("calico-ipam"), &env, &old).error_code(),
        Some(1)
    );
}

#[test]
fn status_says_whether_an_add_could_be_served() {
    let ipam = embedded_ipam();
    let server = ipam.serve_tcp(AppConfig::default());
    let plugins = PluginDir::new();
    let env = [("CNI_COMMAND", "STATUS".to_string())];
    let up = run_plugin(
        &plugins.plugin("calico-ipam"),
        &env,
        &server_config("1.1.0", &server),
    );
    assert_eq!((up.code, up.output), (0, Value::Null));
    let dead = format!("http://127.0.0.1:{}", free_port());
    let down = run_plugin(
        &plugins.plugin("calico-ipam"),
        &env,
        &server_config("1.1.0", &dead),
    );
    assert_eq!((down.code, down.error_code()), (1, Some(50)), "{down:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_unreachable_or_silent_server_is_try_again_later_within_the_bound() {
    let plugins = PluginDir::new();
    let run = Run { plugins: &plugins };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = run.ipam("ADD", "c1", K8S_ARGS, &server_config("1.0.0", &dead));
    assert_eq!((out.code, out.error_code()), (1, Some(11)), "{out:?}");
    assert!(out.stdout.contains(&dead[7..]), "names the server: {out:?}");

    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let config = config("1.0.0", json!({"server": url, "timeout_seconds": 1}));
    let started = Instant::now();
    let out = run.ipam("ADD", "c2", K8S_ARGS, &config);
    assert_eq!(out.error_code(), Some(11), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn bad_environments_and_configs_get_their_codes_and_change_nothing() {
    let ipam = embedded_ipam();
    let server = ipam.serve_tcp(AppConfig::default());
    let plugins = PluginDir::new();
    let good = server_config("1.0.0", &server);
    let binary = plugins.plugin("calico-ipam");
    let base_env = cni_env("ADD", "c1", "/run/netns/x", plugins.path(), K8S_ARGS);
    let without = |name: &str| -> Vec<(&'static str, String)> {
        base_env
            .iter()
            .filter(|(k, _)| *k != name)
            .cloned()
            .collect()
    };
    let with = |name: &str, value: &str| -> Vec<(&'static str, String)> {
        base_env
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    if *k == name {
                        value.to_string()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    };
    let env_cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (without("CNI_COMMAND"), "CNI_COMMAND"),
        (with("CNI_COMMAND", "ATTACH"), "ATTACH"),
        (without("CNI_CONTAINERID"), "CNI_CONTAINERID"),
        (with("CNI_CONTAINERID", "../x"), "../x"),
        (without("CNI_IFNAME"), "CNI_IFNAME"),
        (without("CNI_NETNS"), "CNI_NETNS"),
        (without("CNI_PATH"), "CNI_PATH"),
        (with("CNI_ARGS", "IP=999.1.1.1"), "999.1.1.1"),
    ];
    for (env, named) in env_cases {
        let out = run_plugin(&binary, &env, &good);
        assert_eq!(
            (out.code, out.error_code()),
            (1, Some(4)),
            "{named}: {out:?}"
        );
        assert!(out.stdout.contains(named), "{named}: {out:?}");
    }
    let set = |key: &str, value: Value| {
        let mut config = good.clone();
        config[key] = value;
        config
    };
    let set_ipam = |key: &str, value: Value| {
        let mut config = good.clone();
        config["ipam"][key] = value;
        config
    };
    let config_cases: Vec<(Value, u64, &str)> = vec![
        (set("cniVersion", json!("0.2.0")), 1, "0.2.0"),
        (set("name", json!("has space")), 7, "has space"),
        (set("ipam", json!(null)), 7, "ipam"),
        (set_ipam("assign_ipv4", json!("maybe")), 7, "maybe"),
        (set_ipam("ipv4_pools", json!(["fd00::/64"])), 7, "fd00::/64"),
        (
            set_ipam("ipv4_pools", json!(["no-such-pool"])),
            7,
            "no-such-pool",
        ),
        (set_ipam("server", json!("ftp://x")), 7, "ftp://x"),
        (
            set_ipam("server_token_file", json!("/nonexistent/token")),
            7,
            "/nonexistent/token",
        ),
        (set_ipam("timeout_seconds", json!(9999)), 7, "9999"),
        (set("log_level", json!("chatty")), 7, "chatty"),
    ];
    for (config, code, named) in config_cases {
        let out = run_plugin(&binary, &base_env, &config);
        assert_eq!(
            (out.code, out.error_code()),
            (1, Some(code)),
            "{named}: {out:?}"
        );
        assert!(out.stdout.contains(named), "{named}: {out:?}");
    }
    let mut child = std::process::Command::new(&binary)
        .env_clear()
        .envs(base_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"cniVersion\": ")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["code"], 6);
    assert!(ipam.allocations().is_empty(), "nothing was allocated");
}

#[test]
fn an_exhausted_pool_is_error_100_and_pool_names_resolve() {
    let ipam = embedded_ipam();
    let tiny = ipam_core::PoolSpec {
        block_size: Some(30),
        ..ipam_core::PoolSpec::new("198.19.0.0/30".parse().unwrap())
    };
    ipam.runtime
        .block_on(
            ipam.engine
                .create_pool(ipam_core::Pool::new("tiny", tiny).unwrap()),
        )
        .unwrap();
    let server = ipam.serve_tcp(AppConfig::default());
    let plugins = PluginDir::new();
    let run = Run { plugins: &plugins };
    let config = config("1.0.0", json!({"server": server, "ipv4_pools": ["tiny"]}));
    for n in 0..4 {
        let out = run.ipam("ADD", &format!("t{n}"), "", &config).ok();
        let address: IpAddr = result_addresses(&out)[0].addr();
        assert!(address.to_string().starts_with("198.19.0."), "{address}");
    }
    let out = run.ipam("ADD", "t4", "", &config);
    assert_eq!((out.code, out.error_code()), (1, Some(100)), "{out:?}");
    assert_eq!(ipam.allocations().len(), 4);
}

#[test]
fn logs_go_to_the_log_file_and_stdout_holds_only_the_result() {
    let (_ipam, server, plugins) = served();
    let run = Run { plugins: &plugins };
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("nested/cni.log");
    let mut config = server_config("1.0.0", &server);
    config["log_file_path"] = json!(log_file);
    config["log_level"] = json!("debug");
    let out = run.ipam("ADD", "logged", K8S_ARGS, &config);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with('{') && out.stdout.ends_with('}'),
        "{:?}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    let text = std::fs::read_to_string(&log_file).unwrap();
    assert!(text.contains("k8s-pod-network.logged"), "{text}");
}

#[test]
fn the_token_file_is_sent_and_a_refused_token_is_a_config_error() {
    let ipam = embedded_ipam();
    let server = ipam.serve_tcp(AppConfig {
        token: Some("s3cret".into()),
        ..AppConfig::default()
    });
    let plugins = PluginDir::new();
    let run = Run { plugins: &plugins };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let config = config(
        "1.0.0",
        json!({"server": server, "server_token_file": token}),
    );
    run.ipam("ADD", "tok", K8S_ARGS, &config).ok();
    std::fs::write(&token, "wrong").unwrap();
    let refused = run.ipam("ADD", "tok2", K8S_ARGS, &config);
    assert_eq!(refused.error_code(), Some(7), "{refused:?}");
    assert!(
        !refused.stdout.contains("wrong"),
        "the token is never printed"
    );
}

#[test]
fn direct_mode_on_etcd_adds_checks_collects_and_deletes() {
    if !testkit::require::etcd() {
        return;
    }
    let (_runtime, etcd) = support::started_etcd();
    let ipam = etcd_ipam(&etcd.endpoint());
    let plugins = PluginDir::new();
    let run = Run { plugins: &plugins };
    let mut config = config("1.1.0", json!({}));
    config["datastore_type"] = json!("etcdv3");
    config["etcd_endpoints"] = json!(etcd.endpoint());
    let added = run.ipam("ADD", "d1", K8S_ARGS, &config).ok();
    let address = result_addresses(&added)[0];
    assert_eq!(ipam.held_by("k8s-pod-network.d1"), [address]);
    run.ipam("ADD", "d2", K8S_ARGS, &config).ok();
    let mut check = config.clone();
    check["prevResult"] = added;
    assert_eq!(run.ipam("CHECK", "d1", K8S_ARGS, &check).ok(), Value::Null);
    let status = run_plugin(
        &plugins.plugin("calico-ipam"),
        &[("CNI_COMMAND", "STATUS".to_string())],
        &config,
    );
    assert_eq!(status.code, 0, "{status:?}");
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "d1", "ifname": "eth0"}]);
    let env = [
        ("CNI_COMMAND", "GC".to_string()),
        ("CNI_PATH", plugins.path().display().to_string()),
    ];
    run_plugin(&plugins.plugin("calico-ipam"), &env, &gc).ok();
    assert!(ipam.held_by("k8s-pod-network.d2").is_empty());
    run.ipam("DEL", "d1", K8S_ARGS, &config).ok();
    assert!(ipam.allocations().is_empty());
    drop(etcd);
    let down = run.ipam("ADD", "d3", K8S_ARGS, &config);
    assert_eq!(down.error_code(), Some(11), "{down:?}");
}

#[test]
fn direct_mode_on_kubernetes_reads_the_kubeconfig_key() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = runtime.block_on(testkit::apiserver::ApiServer::start());
    let store = runtime
        .block_on(ipam_store::kubernetes::KubernetesStore::connect(Some(
            api.kubeconfig(),
        )))
        .unwrap();
    let engine = ipam_store::Ipam::new(std::sync::Arc::new(store));
    let spec = ipam_core::PoolSpec {
        block_size: Some(26),
        ..ipam_core::PoolSpec::new(POOL.parse().unwrap())
    };
    runtime
        .block_on(engine.create_pool(ipam_core::Pool::new("test-pool", spec).unwrap()))
        .unwrap();
    let plugins = PluginDir::new();
    let run = Run { plugins: &plugins };
    let mut config = config("1.0.0", json!({}));
    config["datastore_type"] = json!("kubernetes");
    config["kubernetes"] = json!({"kubeconfig": api.kubeconfig()});
    let added = run.ipam("ADD", "k1", K8S_ARGS, &config).ok();
    let address = result_addresses(&added)[0];
    assert_eq!(
        runtime
            .block_on(engine.addresses_of_handle("k8s-pod-network.k1"))
            .unwrap(),
        [address]
    );
    assert!(!api.objects("ipamblocks").is_empty());
    run.ipam("DEL", "k1", K8S_ARGS, &config).ok();
    assert!(runtime
        .block_on(engine.addresses_of_handle("k8s-pod-network.k1"))
        .unwrap()
        .is_empty());
}
