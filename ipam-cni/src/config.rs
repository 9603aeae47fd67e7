//! The network configuration on stdin, read the way calico-ipam reads it:
//! Calico's keys at the top level (`datastore_type`, `etcd_endpoints`,
//! `kubernetes.kubeconfig`, `nodename`, `log_level`, `log_file_path`) and
//! under `ipam` (`assign_ipv4`, `assign_ipv6`, `ipv4_pools`, `ipv6_pools`),
//! plus ours under `ipam`: `server`, `server_token_file`, `timeout_seconds`,
//! `ipv4_gateway`, `ipv6_gateway`, `result_prefix`, `state_dir`.
//! Keys of the main plugin (bridge, ptp, calico) are ignored. Every bad
//! value is CNI error 7 (or 1, 2, 6 where the spec says so) naming the key
//! and the value.

use std::path::PathBuf;
use std::time::Duration;

use ipam_api::Endpoint;
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::error::{CniError, UNSUPPORTED_FIELD};
use crate::version::CniVersion;

/// Where allocations are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Server mode: ipam-server's API (`ipam.server`).
    Server {
        /// Its address.
        endpoint: Endpoint,
        /// `ipam.server_token_file`.
        token_file: Option<PathBuf>,
    },
    /// Direct mode on etcd (`datastore_type: etcdv3`, Calico's default).
    Etcd {
        /// `etcd_endpoints`, split at commas.
        endpoints: Vec<String>,
    },
    /// Direct mode on Kubernetes custom resources.
    Kubernetes {
        /// `kubernetes.kubeconfig`.
        kubeconfig: Option<PathBuf>,
        /// `kubernetes.k8s_api_root` (used when no kubeconfig is given).
        api_root: Option<String>,
    },
}

/// A pool named in `ipv4_pools` / `ipv6_pools`: a CIDR, or a pool's name
/// resolved against the pools at run time (Calico's ResolvePools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRef {
    /// A CIDR.
    Cidr(IpNet),
    /// A pool name.
    Name(String),
}

/// One still-valid attachment of a GC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `containerID`.
    pub container_id: String,
    /// `ifname`.
    pub ifname: String,
}

/// Gateways to report, per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gateways {
    /// For IPv4 addresses.
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// For IPv6 addresses.
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// The prefix length each address is reported with (`ipam.result_prefix`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResultPrefix {
    /// `"block"` (default), Calico's: an auto-assigned address carries its
    /// block's prefix (/26, /122), a requested `IP=` /32 or /128. For
    /// Calico's own main plugin and ptp, which route each address.
    #[default]
    Block,
    /// `"pool"`: the pool's prefix, so that every address of the pool is
    /// on-link for every container on one bridge; the pool's network and
    /// broadcast addresses and the gateways are then never handed out.
    Pool,
    /// `"host"`: /32 or /128.
    Host,
}

impl ResultPrefix {
    /// The key's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultPrefix::Block => "block",
            ResultPrefix::Pool => "pool",
            ResultPrefix::Host => "host",
        }
    }
}

/// The log level (`log_level`, logrus's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// debug or trace.
    Debug,
    /// info (Calico's default).
    Info,
    /// warning.
    Warn,
    /// error, fatal or panic.
    Error,
}

/// Everything the plugin reads from the network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// `cniVersion`.
    pub cni_version: CniVersion,
    /// `name`: the network, first half of every handle id.
    pub name: String,
    /// `nodename`.
    pub nodename: Option<String>,
    /// `nodename_file` (Calico's default `/var/lib/calico/nodename`).
    pub nodename_file: PathBuf,
    /// Where allocations are made.
    pub backend: Backend,
    /// `ipam.assign_ipv4` (default true).
    pub assign_ipv4: bool,
    /// `ipam.assign_ipv6` (default false).
    pub assign_ipv6: bool,
    /// `ipam.ipv4_pools`.
    pub ipv4_pools: Vec<PoolRef>,
    /// `ipam.ipv6_pools`.
    pub ipv6_pools: Vec<PoolRef>,
    /// `ipam.ipv4_gateway` / `ipam.ipv6_gateway` (ours): a gateway to
    /// report with each address of that family, for main plugins that need
    /// one (ptp puts it on the host side of the veth). Calico reports none.
    pub gateways: Gateways,
    /// `log_level`.
    pub log_level: LogLevel,
    /// `log_file_path`.
    pub log_file_path: Option<PathBuf>,
    /// `ipam.timeout_seconds`: the bound on the whole run (default 30 s).
    pub timeout: Duration,
    /// `ipam.result_prefix` (ours).
    pub result_prefix: ResultPrefix,
    /// `ipam.state_dir` (ours): where the ADD records and the journal of
    /// releases a DEL could not make are kept.
    pub state_dir: PathBuf,
    /// `prevResult`'s addresses (CHECK).
    pub prev_addresses: Option<Vec<IpNet>>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The main plugin (the top-level `type`) is one but Calico's: the
    /// IPAM follows the pod's Calico annotations itself. Calico's
    /// (`type: calico`) has applied them to `ipv4_pools`, `ipv6_pools`
    /// and `IP=` before calling this plugin (k8s.go, CmdAddK8s); a config
    /// naming no main plugin is taken as it is.
    pub pod_annotations: bool,
}

/// Where the state lives unless `ipam.state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/calico-ipam-rs";

/// The default bound on one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT_SECONDS: u64 = 600;

/// Reads `cniVersion` alone, for answering VERSION and for the version of
/// an error object when the rest of the config is bad.
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    Some(value.get("cniVersion")?.as_str()?.to_string())
}

impl NetConfig {
    /// Parses and checks the configuration.
    pub fn parse(stdin: &[u8]) -> Result<NetConfig, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::decoding(format!("the network config on stdin is not JSON: {e}"))
        })?;
        let Value::Object(top) = value else {
            return Err(CniError::invalid_config(
                "the network config must be a JSON object",
            ));
        };
        let top = Fields::new(&top, "");
        let cni_version = CniVersion::parse(&top.required_str("cniVersion")?)?;
        let name = top.required_str("name")?;
        check_network_name(&name)?;
        let ipam = top.object("ipam")?.ok_or_else(|| {
            CniError::invalid_config("ipam is missing: the plugin is an IPAM plugin")
        })?;
        let ipam = Fields::new(ipam, "ipam.");
        ipam.required_str("type")?;

        let backend = backend(&top, &ipam)?;
        let assign_ipv4 = ipam.flag("assign_ipv4")?.unwrap_or(true);
        let assign_ipv6 = ipam.flag("assign_ipv6")?.unwrap_or(false);
        if !assign_ipv4 && !assign_ipv6 {
            return Err(CniError::invalid_config(
                "ipam.assign_ipv4 and ipam.assign_ipv6 are both false: nothing to assign",
            ));
        }
        let timeout = match ipam.get("timeout_seconds") {
            None => DEFAULT_TIMEOUT,
            Some(value) => match value.as_u64() {
                Some(seconds) if (1..=MAX_TIMEOUT_SECONDS).contains(&seconds) => {
                    Duration::from_secs(seconds)
                }
                _ => {
                    return Err(CniError::invalid_config(format!(
                        "ipam.timeout_seconds: {value} is not a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS}"
                    )))
                }
            },
        };
        Ok(NetConfig {
            cni_version,
            name,
            nodename: top.optional_str("nodename")?.filter(|n| !n.is_empty()),
            nodename_file: top
                .optional_str("nodename_file")?
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from("/var/lib/calico/nodename"), PathBuf::from),
            backend,
            assign_ipv4,
            assign_ipv6,
            ipv4_pools: ipam.pools("ipv4_pools", false)?,
            ipv6_pools: ipam.pools("ipv6_pools", true)?,
            gateways: Gateways {
                ipv4: ipam.address("ipv4_gateway", "an IPv4 address")?,
                ipv6: ipam.address("ipv6_gateway", "an IPv6 address")?,
            },
            log_level: log_level(&top)?,
            log_file_path: top
                .optional_str("log_file_path")?
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            timeout,
            result_prefix: result_prefix(&ipam)?,
            state_dir: ipam
                .optional_str("state_dir")?
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from),
            prev_addresses: prev_addresses(&top)?,
            valid_attachments: valid_attachments(&top)?,
            pod_annotations: top
                .optional_str("type")?
                .is_some_and(|main| !main.is_empty() && main != "calico"),
        })
    }
}

// Calico's ValidateNetworkName: the name becomes part of handle ids.
fn check_network_name(name: &str) -> Result<(), CniError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CniError::invalid_config(format!(
            "name: {name:?} may hold only letters, digits, '_', '.' and '-'"
        )))
    }
}

// The datastore keys are read and checked in server mode too, so that a
// typo in them is reported rather than silently ignored; only etcd's TLS,
// which direct mode cannot speak, matters just when it would be used.
fn backend(top: &Fields<'_>, ipam: &Fields<'_>) -> Result<Backend, CniError> {
    let direct = direct_backend(top)?;
    let mut tls_keys = Vec::new();
    for key in ["etcd_key_file", "etcd_cert_file", "etcd_ca_cert_file"] {
        if top.optional_str(key)?.is_some_and(|v| !v.is_empty()) {
            tls_keys.push(key);
        }
    }
    if let Some(server) = ipam.optional_str("server")? {
        let endpoint: Endpoint = server
            .parse()
            .map_err(|e| CniError::invalid_config(format!("ipam.server: {e}")))?;
        return Ok(Backend::Server {
            endpoint,
            token_file: ipam
                .optional_str("server_token_file")?
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        });
    }
    let unsupported = |what: String| {
        CniError::new(
            UNSUPPORTED_FIELD,
            "unsupported field",
            format!("{what}: etcd over TLS is not supported in direct mode; use ipam.server"),
        )
    };
    if let Backend::Etcd { endpoints } = &direct {
        if let Some(key) = tls_keys.first() {
            return Err(unsupported((*key).to_string()));
        }
        if let Some(endpoint) = endpoints.iter().find(|e| e.starts_with("https://")) {
            return Err(unsupported(format!("etcd_endpoints: {endpoint:?}")));
        }
    }
    Ok(direct)
}

fn direct_backend(top: &Fields<'_>) -> Result<Backend, CniError> {
    let datastore = top.optional_str("datastore_type")?;
    let endpoints = top.optional_str("etcd_endpoints")?;
    let empty = Map::new();
    let kubernetes = Fields::new(top.object("kubernetes")?.unwrap_or(&empty), "kubernetes.");
    let kubeconfig = kubernetes.optional_str("kubeconfig")?;
    let api_root = kubernetes.optional_str("k8s_api_root")?;
    // Calico's default datastore, and its default endpoint.
    let text = endpoints
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:2379".to_string());
    let endpoints: Vec<String> = text.split(',').map(|e| e.trim().to_string()).collect();
    for endpoint in &endpoints {
        let scheme = ["http://", "https://"]
            .into_iter()
            .find(|s| endpoint.starts_with(s));
        if scheme.is_none_or(|s| endpoint.len() <= s.len()) {
            return Err(CniError::invalid_config(format!(
                "etcd_endpoints: {endpoint:?} is not an http://HOST:PORT URL"
            )));
        }
    }
    match datastore.as_deref() {
        Some("kubernetes") => Ok(Backend::Kubernetes {
            kubeconfig: kubeconfig.filter(|p| !p.is_empty()).map(PathBuf::from),
            api_root: api_root.filter(|p| !p.is_empty()),
        }),
        Some("etcdv3") | Some("") | None => Ok(Backend::Etcd { endpoints }),
        Some(other) => Err(CniError::invalid_config(format!(
            "datastore_type: {other:?} is not \"kubernetes\" or \"etcdv3\""
        ))),
    }
}

fn result_prefix(ipam: &Fields<'_>) -> Result<ResultPrefix, CniError> {
    let Some(value) = ipam.get("result_prefix") else {
        return Ok(ResultPrefix::Block);
    };
    match value.as_str() {
        Some("block") => Ok(ResultPrefix::Block),
        Some("pool") => Ok(ResultPrefix::Pool),
        Some("host") => Ok(ResultPrefix::Host),
        _ => Err(ipam.wrong("result_prefix", value, "\"block\", \"pool\" or \"host\"")),
    }
}

fn log_level(top: &Fields<'_>) -> Result<LogLevel, CniError> {
    let Some(text) = top.optional_str("log_level")? else {
        return Ok(LogLevel::Info);
    };
    Ok(match text.to_ascii_lowercase().as_str() {
        "" | "info" => LogLevel::Info,
        "debug" | "trace" => LogLevel::Debug,
        "warn" | "warning" => LogLevel::Warn,
        "error" | "fatal" | "panic" => LogLevel::Error,
        _ => {
            return Err(CniError::invalid_config(format!(
                "log_level: {text:?} is not debug, info, warning or error"
            )))
        }
    })
}

fn prev_addresses(top: &Fields<'_>) -> Result<Option<Vec<IpNet>>, CniError> {
    let Some(prev) = top.object("prevResult")? else {
        return Ok(None);
    };
    let prev = Fields::new(prev, "prevResult.");
    let Some(ips) = prev.get("ips") else {
        return Ok(Some(Vec::new()));
    };
    let Value::Array(ips) = ips else {
        return Err(CniError::invalid_config("prevResult.ips must be an array"));
    };
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let address = ip.get("address").and_then(Value::as_str).unwrap_or("");
            address.parse::<IpNet>().map_err(|_| {
                CniError::invalid_config(format!(
                    "prevResult.ips[{i}].address: {address:?} is not an address with a prefix length"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn valid_attachments(top: &Fields<'_>) -> Result<Option<Vec<Attachment>>, CniError> {
    const KEY: &str = "cni.dev/valid-attachments";
    let Some(value) = top.get(KEY) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(CniError::invalid_config(format!("{KEY} must be an array")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| {
                item.get(name)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        CniError::invalid_config(format!(
                            "{KEY}[{i}].{name} is missing or not a string: {item}"
                        ))
                    })
            };
            Ok(Attachment {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

// One JSON object and the path it sits at, for messages that name the key.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    path: &'static str,
}

impl<'a> Fields<'a> {
    fn new(object: &'a Map<String, Value>, path: &'static str) -> Fields<'a> {
        Fields { object, path }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, value: &Value, expected: &str) -> CniError {
        CniError::invalid_config(format!("{}{key}: {value} is not {expected}", self.path))
    }

    fn optional_str(&self, key: &str) -> Result<Option<String>, CniError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.wrong(key, other, "a string")),
        }
    }

    fn required_str(&self, key: &str) -> Result<String, CniError> {
        match self.optional_str(key)? {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(CniError::invalid_config(format!(
                "{}{key} is missing",
                self.path
            ))),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, CniError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object)),
            Some(other) => Err(self.wrong(key, other, "an object")),
        }
    }

    fn address<A: std::str::FromStr>(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<A>, CniError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => match value.as_str().and_then(|t| t.parse().ok()) {
                Some(address) => Ok(Some(address)),
                None => Err(self.wrong(key, value, expected)),
            },
        }
    }

    // Calico spells these as strings ("true"/"false"); a JSON bool is
    // taken too.
    fn flag(&self, key: &str) -> Result<Option<bool>, CniError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(Value::String(text)) if text == "true" => Ok(Some(true)),
            Some(Value::String(text)) if text == "false" => Ok(Some(false)),
            Some(other) => Err(self.wrong(key, other, "\"true\" or \"false\"")),
        }
    }

    fn pools(&self, key: &str, ipv6: bool) -> Result<Vec<PoolRef>, CniError> {
        let Some(value) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(self.wrong(key, value, "an array of pool CIDRs or names"));
        };
        let family = if ipv6 { "IPv6" } else { "IPv4" };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let text = match item {
                    Value::String(text) if !text.is_empty() => text,
                    other => {
                        return Err(CniError::invalid_config(format!(
                            "{}{key}[{i}]: {other} is not a pool CIDR or name",
                            self.path
                        )))
                    }
                };
                match text.parse::<IpNet>() {
                    Ok(cidr) if matches!(cidr, IpNet::V6(_)) == ipv6 => Ok(PoolRef::Cidr(cidr)),
                    // Calico's words first (cni-plugin/internal/pkg/utils/
                    // utils.go, ResolvePools).
                    Ok(cidr) => Err(CniError::invalid_config(format!(
                        "{}{key}[{i}]: {:?} isn't a {family} address ({text:?} is not an {family} CIDR)",
                        self.path,
                        cidr.network().to_string()
                    ))),
                    // Looks like an address but is not a CIDR: a typo, not a name.
                    Err(_) if text.contains('/') || text.parse::<std::net::IpAddr>().is_ok() => {
                        Err(CniError::invalid_config(format!(
                            "{}{key}[{i}]: {text:?} is not a CIDR",
                            self.path
                        )))
                    }
                    Err(_) => Ok(PoolRef::Name(text.clone())),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<NetConfig, CniError> {
        NetConfig::parse(value.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "bridge",
            "bridge": "cni0",
            "datastore_type": "etcdv3",
            "etcd_endpoints": "http://127.0.0.1:2379,http://127.0.0.2:2379",
            "nodename": "node-1",
            "ipam": {"type": "calico-ipam", "assign_ipv6": "true", "ipv4_pools": ["10.0.0.0/16", "pool-b"]}
        })
    }

    #[test]
    fn calicos_keys_are_read() {
        let config = parse(base()).unwrap();
        assert_eq!(config.cni_version, CniVersion::V1_0_0);
        assert_eq!(config.name, "k8s-pod-network");
        assert_eq!(config.nodename.as_deref(), Some("node-1"));
        assert_eq!(
            config.backend,
            Backend::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://127.0.0.2:2379".into()
                ]
            }
        );
        assert!(config.assign_ipv4 && config.assign_ipv6);
        assert_eq!(
            config.ipv4_pools,
            [
                PoolRef::Cidr("10.0.0.0/16".parse().unwrap()),
                PoolRef::Name("pool-b".into())
            ]
        );
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
        assert_eq!(config.gateways, Gateways::default());
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(config.result_prefix, ResultPrefix::Block);
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn the_ipam_follows_pod_annotations_under_every_main_plugin_but_calicos() {
        for (main, follows) in [
            (json!("bridge"), true),
            (json!("ptp"), true),
            (json!("calico"), false),
            (json!(""), false),
        ] {
            let mut value = base();
            value["type"] = main.clone();
            assert_eq!(parse(value).unwrap().pod_annotations, follows, "{main}");
        }
        let mut value = base();
        value.as_object_mut().unwrap().remove("type");
        assert!(!parse(value).unwrap().pod_annotations);
    }

    #[test]
    fn result_prefix_and_state_dir_are_read() {
        for prefix in [ResultPrefix::Block, ResultPrefix::Pool, ResultPrefix::Host] {
            let mut value = base();
            value["ipam"]["result_prefix"] = json!(prefix.as_str());
            value["ipam"]["state_dir"] = json!("/run/calico-ipam");
            let config = parse(value).unwrap();
            assert_eq!(config.result_prefix, prefix);
            assert_eq!(config.state_dir, PathBuf::from("/run/calico-ipam"));
        }
    }

    #[test]
    fn the_server_key_wins_over_the_datastore() {
        let mut value = base();
        value["ipam"]["server"] = json!("unix:/run/ipam.sock");
        value["ipam"]["server_token_file"] = json!("/etc/ipam/token");
        assert_eq!(
            parse(value).unwrap().backend,
            Backend::Server {
                endpoint: Endpoint::Unix("/run/ipam.sock".into()),
                token_file: Some("/etc/ipam/token".into())
            }
        );
    }

    #[test]
    fn server_mode_still_checks_the_datastore_keys_but_not_etcd_tls() {
        let mut value = base();
        value["ipam"]["server"] = json!("http://127.0.0.1:9310");
        value["etcd_endpoints"] = json!("https://etcd:2379");
        value["etcd_cert_file"] = json!("/etc/calico/cert.pem");
        assert!(matches!(
            parse(value.clone()).unwrap().backend,
            Backend::Server { .. }
        ));
        value["datastore_type"] = json!(7);
        let error = parse(value).unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.details.contains("datastore_type"), "{error:?}");
    }

    #[test]
    fn kubernetes_and_default_datastores() {
        let mut value = base();
        value["datastore_type"] = json!("kubernetes");
        value["kubernetes"] = json!({"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"});
        assert_eq!(
            parse(value).unwrap().backend,
            Backend::Kubernetes {
                kubeconfig: Some("/etc/cni/net.d/calico-kubeconfig".into()),
                api_root: None
            }
        );
        let mut value = base();
        value.as_object_mut().unwrap().remove("datastore_type");
        value.as_object_mut().unwrap().remove("etcd_endpoints");
        assert_eq!(
            parse(value).unwrap().backend,
            Backend::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()]
            }
        );
    }

    #[test]
    fn each_bad_field_is_named_with_its_value_and_code() {
        let cases: Vec<(&str, Value, u32, &str)> = vec![
            ("cniVersion", json!("0.2.0"), 1, "0.2.0"),
            ("cniVersion", json!(5), 7, "cniVersion"),
            ("name", json!("bad name"), 7, "bad name"),
            ("name", json!(""), 7, "name"),
            ("ipam", json!("calico-ipam"), 7, "ipam"),
            ("datastore_type", json!("consul"), 7, "consul"),
            (
                "etcd_endpoints",
                json!("127.0.0.1:2379"),
                7,
                "127.0.0.1:2379",
            ),
            (
                "etcd_endpoints",
                json!("https://e:2379"),
                2,
                "https://e:2379",
            ),
            (
                "etcd_cert_file",
                json!("/etc/cert.pem"),
                2,
                "etcd_cert_file",
            ),
            ("log_level", json!("loud"), 7, "loud"),
            ("nodename", json!(7), 7, "nodename"),
            (
                "prevResult",
                json!({"ips": [{"address": "10.0.0.5"}]}),
                7,
                "10.0.0.5",
            ),
            (
                "cni.dev/valid-attachments",
                json!([{"container_id": "c"}]),
                7,
                "containerID",
            ),
        ];
        for (key, value, code, named) in cases {
            let mut config = base();
            config[key] = value.clone();
            let error = parse(config).unwrap_err();
            assert_eq!(error.code, code, "{key}={value}: {error:?}");
            assert!(error.details.contains(named), "{key}={value}: {error:?}");
        }
        let ipam_cases: Vec<(&str, Value, &str)> = vec![
            ("type", json!(null), "ipam.type"),
            ("assign_ipv4", json!("yes"), "yes"),
            ("ipv4_pools", json!("10.0.0.0/16"), "ipam.ipv4_pools"),
            ("ipv4_pools", json!(["fd00::/64"]), "fd00::/64"),
            ("ipv6_pools", json!(["10.0.0.0/16"]), "10.0.0.0/16"),
            ("ipv4_pools", json!(["10.0.0.0/33"]), "10.0.0.0/33"),
            ("ipv4_pools", json!([""]), "ipam.ipv4_pools[0]"),
            ("server", json!("tcp://h:1"), "tcp://h:1"),
            ("timeout_seconds", json!(0), "ipam.timeout_seconds"),
            ("timeout_seconds", json!(-3), "-3"),
            ("ipv4_gateway", json!("fd00::1"), "fd00::1"),
            ("ipv6_gateway", json!("169.254.1.1"), "169.254.1.1"),
            ("ipv4_gateway", json!(true), "ipam.ipv4_gateway"),
            (
                "result_prefix",
                json!("subnet"),
                "ipam.result_prefix: \"subnet\"",
            ),
            ("result_prefix", json!(24), "ipam.result_prefix: 24"),
            (
                "result_prefix",
                json!("Pool"),
                "\"block\", \"pool\" or \"host\"",
            ),
            ("state_dir", json!(false), "ipam.state_dir"),
        ];
        for (key, value, named) in ipam_cases {
            let mut config = base();
            config["ipam"][key] = value.clone();
            let error = parse(config).unwrap_err();
            assert_eq!(error.code, 7, "ipam.{key}={value}: {error:?}");
            assert!(
                error.details.contains(named),
                "ipam.{key}={value}: {error:?}"
            );
        }
        let mut both_off = base();
        both_off["ipam"]["assign_ipv4"] = json!("false");
        both_off["ipam"]["assign_ipv6"] = json!(false);
        assert!(parse(both_off).unwrap_err().details.contains("both false"));
        assert_eq!(NetConfig::parse(b"{not json").unwrap_err().code, 6);
        assert_eq!(NetConfig::parse(b"[1]").unwrap_err().code, 7);
    }

    #[test]
    fn gc_and_check_inputs_are_read() {
        let mut value = base();
        value["cniVersion"] = json!("1.1.0");
        value["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        value["ipam"]["ipv4_gateway"] = json!("169.254.1.1");
        value["prevResult"] = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.5/26"}]});
        let config = parse(value).unwrap();
        assert_eq!(
            config.valid_attachments,
            Some(vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
        assert_eq!(config.gateways.ipv4, Some("169.254.1.1".parse().unwrap()));
        assert_eq!(
            config.prev_addresses,
            Some(vec!["10.0.0.5/26".parse().unwrap()])
        );
        assert_eq!(
            requested_version(value_bytes(&base()).as_slice()),
            Some("1.0.0".into())
        );
    }

    fn value_bytes(value: &Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }
}
