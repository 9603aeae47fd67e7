//! The invocation as the runtime passes it in environment variables
//! (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`), checked as the reference `skel` library checks
//! them: every failure is CNI error 4 naming the variable and its value.

use std::net::IpAddr;

use crate::error::CniError;

/// The operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Allocate.
    Add,
    /// Release.
    Del,
    /// Verify an earlier ADD.
    Check,
    /// List supported versions.
    Version,
    /// Release what the runtime no longer knows.
    Gc,
    /// Report readiness.
    Status,
}

impl Command {
    fn parse(text: &str) -> Result<Command, CniError> {
        Ok(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::invalid_environment(format!(
                    "CNI_COMMAND={other:?} is not ADD, DEL, CHECK, VERSION, GC or STATUS"
                )))
            }
        })
    }

    /// The name the runtime uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// `CNI_ARGS` keys calico-ipam reads; other keys (kubelet's
/// `K8S_POD_INFRA_CONTAINER_ID`, `IgnoreUnknown`) are ignored, as Calico's
/// calico-ipam ignores them. Calico ignores `K8S_POD_UID` too (its plugin
/// reads the pod with a GET on every ADD, cni-plugin/pkg/k8s/k8s.go
/// getK8sPodInfo); here it tells ipam-server, which reads pods from a
/// watch, which incarnation of a pod's name the ADD is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// `K8S_POD_UID`.
    pub pod_uid: Option<String>,
    /// `IP`: the address to assign instead of choosing one.
    pub ip: Option<IpAddr>,
}

impl CniArgs {
    /// Parses `K1=V1;K2=V2`.
    pub fn parse(text: &str) -> Result<CniArgs, CniError> {
        let mut args = CniArgs::default();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(CniError::invalid_environment(format!(
                    "CNI_ARGS: {pair:?} is not KEY=VALUE"
                )));
            };
            let value = (!value.is_empty()).then(|| value.to_string());
            match key {
                "K8S_POD_NAMESPACE" => args.pod_namespace = value,
                "K8S_POD_NAME" => args.pod_name = value,
                "K8S_POD_UID" => args.pod_uid = value,
                "IP" => {
                    args.ip = match value {
                        Some(text) => Some(text.parse().map_err(|_| {
                            CniError::invalid_environment(format!(
                                "CNI_ARGS: IP={text:?} is not an IPv4 or IPv6 address"
                            ))
                        })?),
                        None => None,
                    }
                }
                _ => {}
            }
        }
        Ok(args)
    }

    /// The pod, when the runtime is Kubernetes (both namespace and name).
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.pod_namespace.as_deref()?, self.pod_name.as_deref()?))
    }
}

/// A checked invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_NETNS` (required for ADD and CHECK).
    pub netns: Option<String>,
    /// `CNI_ARGS`.
    pub args: CniArgs,
}

impl Invocation {
    /// Reads and checks the variables `command` needs, through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let command = match var("CNI_COMMAND") {
            Some(text) if !text.is_empty() => Command::parse(&text)?,
            _ => {
                return Err(CniError::invalid_environment(
                    "CNI_COMMAND is not set (ADD, DEL, CHECK, VERSION, GC or STATUS)",
                ))
            }
        };
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        // What the reference skel requires per command.
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut required: Vec<&str> = Vec::new();
        if per_attachment {
            required.extend(["CNI_CONTAINERID", "CNI_IFNAME"]);
        }
        if matches!(command, Command::Add | Command::Check) {
            required.push("CNI_NETNS");
        }
        if per_attachment || command == Command::Gc {
            required.push("CNI_PATH");
        }
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|name| set(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::invalid_environment(format!(
                "{} must be set for {}",
                missing.join(", "),
                command.as_str()
            )));
        }
        let container_id = set("CNI_CONTAINERID").unwrap_or_default();
        let ifname = set("CNI_IFNAME").unwrap_or_default();
        if per_attachment {
            check_container_id(&container_id)?;
            check_ifname(&ifname)?;
        }
        Ok(Invocation {
            command,
            container_id,
            ifname,
            netns: set("CNI_NETNS"),
            args: CniArgs::parse(&var("CNI_ARGS").unwrap_or_default())?,
        })
    }
}

// The spec: alphanumeric first, then alphanumerics, `_`, `.` or `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Ok(());
    }
    Err(CniError::invalid_environment(format!(
        "CNI_CONTAINERID={id:?} must start with a letter or digit and hold only letters, digits, '_', '.' or '-'"
    )))
}

// Linux interface names: at most 15 bytes, no '/', ':' or white space, not
// "." or "..".
fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    if bad {
        return Err(CniError::invalid_environment(format!(
            "CNI_IFNAME={name:?} is not a valid interface name (at most 15 characters, no '/', ':' or spaces)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0f8e-uid",
        ),
    ];

    #[test]
    fn an_add_from_kubelet_is_read_in_full() {
        let invocation = Invocation::from_env(env(ADD)).unwrap();
        assert_eq!(invocation.command, Command::Add);
        assert_eq!(invocation.container_id, "abc123");
        assert_eq!(invocation.args.pod(), Some(("default", "nginx")));
        assert_eq!(invocation.args.pod_uid.as_deref(), Some("0f8e-uid"));
        assert_eq!(invocation.args.ip, None);
    }

    #[test]
    fn each_missing_variable_is_named() {
        for name in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"] {
            let without: Vec<(&str, &str)> =
                ADD.iter().copied().filter(|(k, _)| *k != name).collect();
            let error = Invocation::from_env(env(&without)).unwrap_err();
            assert_eq!(error.code, 4);
            assert!(error.details.contains(name), "{error:?}");
        }
        let error = Invocation::from_env(env(&[])).unwrap_err();
        assert!(error.details.contains("CNI_COMMAND"), "{error:?}");
    }

    #[test]
    fn del_needs_no_netns_and_version_needs_nothing() {
        let del: Vec<(&str, &str)> = ADD
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .collect();
        assert_eq!(
            Invocation::from_env(env(&del)).unwrap().command,
            Command::Del
        );
        let version = Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(version.command, Command::Version);
        let status = Invocation::from_env(env(&[("CNI_COMMAND", "STATUS")])).unwrap();
        assert_eq!(status.command, Command::Status);
    }

    #[test]
    fn bad_values_are_refused_with_the_value_named() {
        let cases = [
            ("CNI_COMMAND", "ATTACH", "ATTACH"),
            ("CNI_CONTAINERID", "-abc", "-abc"),
            ("CNI_CONTAINERID", "a/b", "a/b"),
            (
                "CNI_IFNAME",
                "averyveryverylongname",
                "averyveryverylongname",
            ),
            ("CNI_IFNAME", "eth:0", "eth:0"),
            ("CNI_ARGS", "K8S_POD_NAME", "K8S_POD_NAME"),
            ("CNI_ARGS", "IP=10.0.0.300", "10.0.0.300"),
        ];
        for (name, value, named) in cases {
            let changed: Vec<(&str, &str)> = ADD
                .iter()
                .copied()
                .map(|(k, v)| if k == name { (k, value) } else { (k, v) })
                .collect();
            let error = Invocation::from_env(env(&changed)).unwrap_err();
            assert_eq!(error.code, 4, "{name}={value}");
            assert!(error.details.contains(named), "{error:?}");
        }
    }

    #[test]
    fn an_ip_argument_is_parsed() {
        let args = CniArgs::parse("IP=fd00::5;K8S_POD_NAME=p").unwrap();
        assert_eq!(args.ip, Some("fd00::5".parse().unwrap()));
        assert_eq!(args.pod(), None);
    }
}
