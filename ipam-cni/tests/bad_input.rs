//! Bad input in bulk: a generated corpus of malformed network configs and
//! environments, each run through the `calico-ipam` binary against a live
//! IPAM. Every case must end with exit status 1, one CNI error object on
//! stdout whose code fits the fault and whose details name the key (or
//! value) at fault, and nothing allocated.

mod support;

use ipam_server::app::AppConfig;
use serde_json::{json, Value};
use support::{cni_env, embedded_ipam, run_plugin, run_plugin_raw, PluginDir};

struct Case {
    label: String,
    env: Vec<(&'static str, String)>,
    stdin: Vec<u8>,
    codes: &'static [u64],
    named: String,
}

fn base(server: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "bridge",
        "nodename": "node-a",
        "ipam": {"type": "calico-ipam", "server": server},
    })
}

/// A value of a JSON type a key does not take, by name.
type WrongType = (&'static str, fn() -> Value);

const WRONG_TYPES: [WrongType; 5] = [
    ("number", || json!(5)),
    ("bool", || json!(true)),
    ("array", || json!(["x"])),
    ("object", || json!({"k": "v"})),
    ("negative", || json!(-1)),
];

fn corpus(server: &str, cni_path: &str) -> Vec<Case> {
    let good = base(server);
    let env = || {
        cni_env(
            "ADD",
            "c1",
            "/run/netns/x",
            std::path::Path::new(cni_path),
            "",
        )
    };
    let config_case = |label: String, config: Value, codes: &'static [u64], named: &str| Case {
        label,
        env: env(),
        stdin: config.to_string().into_bytes(),
        codes,
        named: named.to_string(),
    };
    let mut cases = Vec::new();

    // Top-level keys that must be strings (or an object, for kubernetes).
    let string_keys = [
        "cniVersion",
        "name",
        "nodename",
        "nodename_file",
        "datastore_type",
        "etcd_endpoints",
        "log_level",
        "log_file_path",
    ];
    for key in string_keys {
        for (kind, value) in WRONG_TYPES {
            let mut config = good.clone();
            config[key] = value();
            cases.push(config_case(format!("{key} as {kind}"), config, &[7], key));
        }
    }
    for (key, expected) in [
        ("ipam", "ipam"),
        ("kubernetes", "kubernetes"),
        ("prevResult", "prevResult"),
    ] {
        for (kind, value) in WRONG_TYPES.iter().filter(|(k, _)| *k != "object") {
            let mut config = good.clone();
            config[key] = value();
            if key == "kubernetes" {
                config["datastore_type"] = json!("kubernetes");
                config["ipam"].as_object_mut().unwrap().remove("server");
            }
            cases.push(config_case(
                format!("{key} as {kind}"),
                config,
                &[7],
                expected,
            ));
        }
    }
    // Keys under ipam.
    let ipam_string_keys = [
        "type",
        "server",
        "server_token_file",
        "ipv4_gateway",
        "ipv6_gateway",
        "result_prefix",
        "state_dir",
    ];
    for key in ipam_string_keys {
        for (kind, value) in WRONG_TYPES {
            let mut config = good.clone();
            config["ipam"][key] = value();
            cases.push(config_case(
                format!("ipam.{key} as {kind}"),
                config,
                &[7],
                &format!("ipam.{key}"),
            ));
        }
    }
    for key in ["assign_ipv4", "assign_ipv6"] {
        for value in [
            json!("yes"),
            json!("TRUE"),
            json!(1),
            json!(0),
            json!([]),
            json!({}),
            json!(""),
        ] {
            let mut config = good.clone();
            config["ipam"][key] = value.clone();
            cases.push(config_case(
                format!("ipam.{key} = {value}"),
                config,
                &[7],
                &format!("ipam.{key}"),
            ));
        }
    }
    for value in ["", "Block", "subnet", "/24", "pool ", "none"] {
        let mut config = good.clone();
        config["ipam"]["result_prefix"] = json!(value);
        cases.push(config_case(
            format!("ipam.result_prefix = {value:?}"),
            config,
            &[7],
            &format!("ipam.result_prefix: {:?}", value),
        ));
    }
    for value in [
        json!(0),
        json!(-5),
        json!(601),
        json!(1.5),
        json!("30"),
        json!(true),
        json!(u64::MAX),
    ] {
        let mut config = good.clone();
        config["ipam"]["timeout_seconds"] = value.clone();
        cases.push(config_case(
            format!("ipam.timeout_seconds = {value}"),
            config,
            &[7],
            "ipam.timeout_seconds",
        ));
    }
    // Pool lists: not lists, bad entries, the wrong family, unknown names.
    let bad_entries = [
        json!("10.0.0.0/33"),
        json!("256.0.0.0/8"),
        json!("10.0.0.0/8/8"),
        json!("10.0.0.1"),
        json!("fd00::/129"),
        json!("::/"),
        json!(""),
        json!(5),
        json!(null),
        json!(true),
        json!({}),
        json!([]),
    ];
    for key in ["ipv4_pools", "ipv6_pools"] {
        for entry in &bad_entries {
            let mut config = good.clone();
            config["ipam"][key] = json!(["198.18.0.0/16", entry]);
            if key == "ipv6_pools" {
                config["ipam"][key] = json!(["fd00::/64", entry]);
            }
            cases.push(config_case(
                format!("ipam.{key} with {entry}"),
                config,
                &[7],
                &format!("ipam.{key}"),
            ));
        }
        for (kind, value) in WRONG_TYPES.iter().filter(|(k, _)| *k != "array") {
            let mut config = good.clone();
            config["ipam"][key] = value();
            cases.push(config_case(
                format!("ipam.{key} as {kind}"),
                config,
                &[7],
                &format!("ipam.{key}"),
            ));
        }
    }
    for (key, wrong) in [
        ("ipv4_pools", "fd00::/64"),
        ("ipv6_pools", "198.18.0.0/16"),
        ("ipv4_pools", "no-such-pool"),
    ] {
        let mut config = good.clone();
        config["ipam"][key] = json!([wrong]);
        cases.push(config_case(
            format!("ipam.{key} = [{wrong}]"),
            config,
            &[7],
            wrong,
        ));
    }
    let huge: Vec<String> = (0..100_000).map(|i| format!("no-such-pool-{i}")).collect();
    let mut config = good.clone();
    config["ipam"]["ipv4_pools"] = json!(huge);
    cases.push(config_case(
        "100 000 unknown pool names".into(),
        config,
        &[7],
        "no-such-pool-0",
    ));
    // Versions.
    for version in [
        "0.1.0", "0.2.0", "2.0.0", "1.0", "v1.0.0", "1.0.0 ", "1.2.0",
    ] {
        let mut config = good.clone();
        config["cniVersion"] = json!(version);
        cases.push(config_case(
            format!("cniVersion {version:?}"),
            config,
            &[1],
            version,
        ));
    }
    for missing in ["cniVersion", "name", "ipam"] {
        let mut config = good.clone();
        config.as_object_mut().unwrap().remove(missing);
        cases.push(config_case(format!("no {missing}"), config, &[7], missing));
    }
    // Names handles could not carry, datastores we do not speak.
    for name in ["has space", "a/b", "ünïcode", "semi;colon", "new\nline"] {
        let mut config = good.clone();
        config["name"] = json!(name);
        cases.push(config_case(format!("name {name:?}"), config, &[7], "name"));
    }
    for (key, value, code, named) in [
        ("datastore_type", "consul", 7, "consul"),
        ("datastore_type", "etcdv2", 7, "etcdv2"),
        ("etcd_endpoints", "127.0.0.1:2379", 7, "127.0.0.1:2379"),
        ("etcd_endpoints", "http://", 7, "http://"),
        ("etcd_endpoints", "https://e:2379", 2, "https://e:2379"),
        ("etcd_cert_file", "/etc/c.pem", 2, "etcd_cert_file"),
        ("log_level", "verbose", 7, "verbose"),
    ] {
        let mut config = good.clone();
        config["ipam"].as_object_mut().unwrap().remove("server");
        config[key] = json!(value);
        let codes: &'static [u64] = if code == 2 { &[2] } else { &[7] };
        cases.push(config_case(
            format!("{key} = {value}"),
            config,
            codes,
            named,
        ));
    }
    for server in [
        "tcp://h:1",
        "http://h",
        "http://h:1/path",
        "https://h:1",
        "unix:",
        "h:1",
    ] {
        let mut config = good.clone();
        config["ipam"]["server"] = json!(server);
        cases.push(config_case(
            format!("ipam.server = {server}"),
            config,
            &[7],
            server,
        ));
    }
    // Input that is not a JSON object at all.
    let text = good.to_string();
    for cut in [1, 10, 25, 50, text.len() / 2, text.len() - 1] {
        cases.push(Case {
            label: format!("config cut at byte {cut}"),
            env: env(),
            stdin: text.as_bytes()[..cut].to_vec(),
            codes: &[6],
            named: "JSON".into(),
        });
    }
    for (label, stdin) in [
        ("empty stdin", &b""[..]),
        ("binary", &[0xff, 0xfe, 0x00][..]),
        ("a YAML config", &b"cniVersion: 1.0.0\n"[..]),
    ] {
        cases.push(Case {
            label: label.into(),
            env: env(),
            stdin: stdin.to_vec(),
            codes: &[6],
            named: "JSON".into(),
        });
    }
    for (label, value) in [
        ("array", json!([])),
        ("number", json!(5)),
        ("string", json!("x")),
        ("null", json!(null)),
    ] {
        cases.push(config_case(
            format!("config is {label}"),
            value,
            &[7],
            "object",
        ));
    }
    // Environments.
    let good_text = good.to_string().into_bytes();
    let env_case = |label: String, env: Vec<(&'static str, String)>, named: &str| Case {
        label,
        env,
        stdin: good_text.clone(),
        codes: &[4],
        named: named.to_string(),
    };
    for name in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_IFNAME",
        "CNI_NETNS",
        "CNI_PATH",
    ] {
        let without: Vec<_> = env().into_iter().filter(|(k, _)| *k != name).collect();
        cases.push(env_case(format!("no {name}"), without, name));
        let empty: Vec<_> = env()
            .into_iter()
            .map(|(k, v)| (k, if k == name { String::new() } else { v }))
            .collect();
        cases.push(env_case(format!("empty {name}"), empty, name));
    }
    let replace = |name: &'static str, value: &str| -> Vec<(&'static str, String)> {
        env()
            .into_iter()
            .map(|(k, v)| (k, if k == name { value.to_string() } else { v }))
            .collect()
    };
    for command in ["add", "ATTACH", "DELETE", "VERSIONS", " ADD"] {
        cases.push(env_case(
            format!("CNI_COMMAND={command:?}"),
            replace("CNI_COMMAND", command),
            command,
        ));
    }
    for id in ["-lead", "_lead", ".", "a b", "a/b", "a:b", "ü", "a\tb"] {
        cases.push(env_case(
            format!("CNI_CONTAINERID={id:?}"),
            replace("CNI_CONTAINERID", id),
            "CNI_CONTAINERID",
        ));
    }
    for ifname in ["sixteen-chars-xx", "eth/0", "eth:0", "eth 0", ".", ".."] {
        cases.push(env_case(
            format!("CNI_IFNAME={ifname:?}"),
            replace("CNI_IFNAME", ifname),
            "CNI_IFNAME",
        ));
    }
    for args in [
        "K8S_POD_NAME",
        "IP=1.2.3",
        "IP=198.18.0.1.1",
        "IP=fd00:::1",
        "IP=x",
        "a=b;c",
    ] {
        cases.push(env_case(
            format!("CNI_ARGS={args:?}"),
            replace("CNI_ARGS", args),
            "CNI_ARGS",
        ));
    }
    cases
}

#[test]
fn every_malformed_config_or_environment_gets_a_clear_error_and_changes_nothing() {
    let ipam = embedded_ipam();
    let server = ipam.serve_tcp(AppConfig::default());
    let plugins = PluginDir::new();
    let cases = corpus(&server, &plugins.path().display().to_string());
    assert!(cases.len() >= 200, "the corpus has {} cases", cases.len());
    let binary = plugins.plugin("calico-ipam");
    let mut failures = Vec::new();
    for case in &cases {
        let out = run_plugin_raw(&binary, &case.env, &case.stdin);
        let details = out.output["details"].as_str().unwrap_or_default();
        let msg = out.output["msg"].as_str().unwrap_or_default();
        let fine = out.code == 1
            && out.error_code().is_some_and(|c| case.codes.contains(&c))
            && details.contains(&case.named)
            && !msg.is_empty();
        if !fine {
            failures.push(format!(
                "{}: exit {} stdout {}",
                case.label, out.code, out.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(ipam.allocations().is_empty(), "{:?}", ipam.allocations());
}

#[test]
fn the_corpus_is_not_vacuous_a_good_config_passes_the_same_checks_backwards() {
    // The harness's "fine" test must be able to fail: the good config run
    // the same way succeeds and allocates.
    let ipam = embedded_ipam();
    let server = ipam.serve_tcp(AppConfig::default());
    let plugins = PluginDir::new();
    let env = cni_env("ADD", "ok", "/run/netns/x", plugins.path(), "");
    let out = run_plugin(&plugins.plugin("calico-ipam"), &env, &base(&server));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ipam.allocations().len(), 1);
}
