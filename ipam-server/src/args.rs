//! Command-line flags, each also read from an environment variable.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::connections::ConnectionLimits;
use crate::gc::GcOptions;
use crate::lease::LeaseOptions;
use crate::loadbalancer::{AssignIps, LoadBalancerOptions};
use crate::ratelimit::RateLimit;

/// ipam-server: Calico-compatible IP address management over HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "ipam-server", version, about)]
pub struct Args {
    /// Where to listen: `HOST:PORT`, or `unix:PATH` for a unix socket.
    #[arg(long, env = "IPAM_LISTEN", default_value = "127.0.0.1:9310")]
    pub listen: Listen,

    /// Where IPAM state lives.
    #[arg(long, env = "IPAM_DATASTORE", value_enum, default_value_t = DatastoreKind::Embedded)]
    pub datastore: DatastoreKind,

    /// Directory of the embedded datastore.
    #[arg(long, env = "IPAM_DATA_DIR", default_value = "ipam-data")]
    pub data_dir: PathBuf,

    /// etcd endpoints, comma separated (http://127.0.0.1:2379).
    #[arg(long, env = "IPAM_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,

    /// Kubeconfig for the Kubernetes datastore; without it, the pod's
    /// service account when in a cluster, else ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// File holding the bearer token clients must send; required when
    /// listening on anything but loopback or a unix socket.
    #[arg(long, env = "IPAM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long, env = "IPAM_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Most addresses of each family one request may ask for (and most
    /// addresses one release may name).
    #[arg(long, env = "IPAM_MAX_ADDRESSES_PER_REQUEST", default_value_t = 128)]
    pub max_addresses_per_request: u32,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "IPAM_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Longest a request may take, in seconds, before it is answered 503.
    #[arg(long, env = "IPAM_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,

    /// Longest from a request's first byte to the end of its headers; a
    /// client slower than that is disconnected. Clients on a node or in a
    /// cluster send their headers in milliseconds.
    #[arg(long, env = "IPAM_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,

    /// Longest a connection may stay open with no request in flight (a new
    /// one that sends nothing, a keep-alive one between requests).
    #[arg(long, env = "IPAM_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// Most connections open at once; beyond it, new ones are answered 503
    /// and closed. Keep it below the process's open-file limit.
    #[arg(long, env = "IPAM_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most connections open at once from one IP address (all unix-socket
    /// clients together are not limited by this): a node's CNI calls for
    /// all its pods at once fit (Kubernetes' default is 110 pods a node).
    #[arg(long, env = "IPAM_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_client: u32,

    /// Requests a second each client (by IP address; all unix-socket
    /// clients together) may make on /v1; beyond it, 429. 0: no limit.
    #[arg(long, env = "IPAM_RATE_LIMIT_PER_CLIENT", default_value_t = 0)]
    pub rate_limit_per_client: u32,

    /// Requests a client may make at once after a quiet spell (0: as many
    /// as --rate-limit-per-client).
    #[arg(long, env = "IPAM_RATE_LIMIT_BURST", default_value_t = 0)]
    pub rate_limit_burst: u32,

    /// Do not collect leaked addresses (the Kubernetes datastore collects
    /// them by default; the other datastores never do).
    #[arg(long, env = "IPAM_NO_GC")]
    pub no_gc: bool,

    /// How long an address whose pod is gone is kept while its node
    /// exists, as Calico's LeakGracePeriod (15m, 1h30m, 90s; 0 keeps them
    /// for good). On a deleted node it goes at once.
    #[arg(long, env = "IPAM_GC_LEAK_GRACE_PERIOD", default_value = "15m", value_parser = humantime::parse_duration)]
    pub gc_leak_grace_period: Duration,

    /// Time between garbage collection passes.
    #[arg(long, env = "IPAM_GC_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    pub gc_interval: Duration,

    /// Namespace of the Lease that picks the one replica collecting.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub gc_lease_namespace: String,

    /// Name of that Lease.
    #[arg(long, env = "IPAM_GC_LEASE_NAME", default_value = "ipam-server-gc")]
    pub gc_lease_name: String,

    /// How long a replica that stops renewing keeps the Lease; it renews
    /// three times as often.
    #[arg(long, env = "IPAM_GC_LEASE_DURATION", default_value = "15s", value_parser = parse_positive_duration)]
    pub gc_lease_duration: Duration,

    /// This replica's name in the Lease (default: the pod name, else the
    /// host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub gc_identity: Option<String>,

    /// Do not give Services of type LoadBalancer addresses (the Kubernetes
    /// datastore does by default, from pools allowing LoadBalancer).
    #[arg(long, env = "IPAM_NO_LOADBALANCER")]
    pub no_loadbalancer: bool,

    /// Which LoadBalancer Services get addresses, as Calico's
    /// `controllers.loadBalancer.assignIPs`.
    #[arg(
        long,
        env = "IPAM_LOADBALANCER_ASSIGN_IPS",
        value_enum,
        default_value = "AllServices"
    )]
    pub loadbalancer_assign_ips: AssignIps,

    /// Time between the load-balancer controller's passes over every
    /// Service (it also runs on every change; Calico's period is 5m).
    #[arg(long, env = "IPAM_LOADBALANCER_INTERVAL", default_value = "5m", value_parser = parse_positive_duration)]
    pub loadbalancer_interval: Duration,

    /// Name of the Lease that picks the one replica serving LoadBalancer
    /// Services (in --gc-lease-namespace, with --gc-lease-duration).
    #[arg(
        long,
        env = "IPAM_LOADBALANCER_LEASE_NAME",
        default_value = "ipam-server-loadbalancer"
    )]
    pub loadbalancer_lease_name: String,
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{text:?} must be longer than 0")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{text:?}: {e} (write 30s, 5m, 1h30m)")),
    }
}

impl Args {
    /// The per-client rate limit the flags ask for, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        let per_second = NonZeroU32::new(self.rate_limit_per_client)?;
        let burst = NonZeroU32::new(self.rate_limit_burst).unwrap_or(per_second);
        Some(RateLimit { per_second, burst })
    }

    /// The bounds on connections the flags set.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections as usize,
            max_connections_per_client: self.max_connections_per_client as usize,
        }
    }

    /// How the garbage collector should run, unless `--no-gc`.
    pub fn gc(&self) -> Option<GcOptions> {
        if self.no_gc {
            return None;
        }
        Some(GcOptions {
            grace: self.gc_leak_grace_period,
            interval: self.gc_interval,
            lease: self.lease(&self.gc_lease_name),
        })
    }

    /// How the load-balancer controller should run, unless
    /// `--no-loadbalancer`.
    pub fn loadbalancer(&self) -> Option<LoadBalancerOptions> {
        if self.no_loadbalancer {
            return None;
        }
        Some(LoadBalancerOptions {
            assign_ips: self.loadbalancer_assign_ips,
            interval: self.loadbalancer_interval,
            lease: self.lease(&self.loadbalancer_lease_name),
        })
    }

    // A Lease of this replica's, by name.
    fn lease(&self, name: &str) -> LeaseOptions {
        let identity = self.gc_identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "ipam-server".to_string());
            format!("{host}-{}", std::process::id())
        });
        LeaseOptions {
            namespace: self.gc_lease_namespace.clone(),
            name: name.to_string(),
            identity,
            duration: self.gc_lease_duration,
            renew_every: self.gc_lease_duration / 3,
        }
    }
}

/// The datastores the server can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatastoreKind {
    /// One redb file in `--data-dir`, durable on every write.
    Embedded,
    /// In memory, lost on exit: for tests and trials.
    Memory,
    /// etcd v3 in Calico's key layout.
    Etcd,
    /// Calico's custom resources in a Kubernetes cluster.
    Kubernetes,
}

/// An address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP.
    Tcp(SocketAddr),
    /// A unix socket at a path.
    Unix(PathBuf),
}

impl Listen {
    /// Whether only this machine can reach it: loopback TCP or a unix
    /// socket (file permissions guard those).
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(address) => address.ip().is_loopback(),
            Listen::Unix(_) => true,
        }
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/run/ipam.sock".to_string());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!("{text:?} is neither HOST:PORT (127.0.0.1:9310, [::1]:9310) nor unix:PATH")
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(address) => write!(f, "{address}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses_tcp_and_unix_and_says_what_it_wanted() {
        assert_eq!(
            "127.0.0.1:9310".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:9310".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/ipam.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/ipam.sock".into())
        );
        let err = "localhost".parse::<Listen>().unwrap_err();
        assert!(err.contains("\"localhost\" is neither HOST:PORT"), "{err}");
        assert!("unix:".parse::<Listen>().is_err());
    }

    #[test]
    fn only_loopback_and_unix_sockets_are_local() {
        assert!("127.0.0.1:1".parse::<Listen>().unwrap().is_local());
        assert!("[::1]:1".parse::<Listen>().unwrap().is_local());
        assert!("unix:/x".parse::<Listen>().unwrap().is_local());
        assert!(!"0.0.0.0:9310".parse::<Listen>().unwrap().is_local());
        assert!(!"10.1.2.3:9310".parse::<Listen>().unwrap().is_local());
    }

    #[test]
    fn the_deployments_flags_parse_and_set_a_rate_limit() {
        let manifest = include_str!("../../deploy/02-ipam-server.yaml");
        let flags: Vec<&str> = manifest
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- --"))
            .map(|flag| flag.trim_end())
            .collect();
        assert!(flags.len() >= 3, "{flags:?}");
        let argv = std::iter::once("ipam-server".to_string())
            .chain(flags.iter().map(|f| format!("--{f}")));
        let args = Args::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        let limit = args
            .rate_limit()
            .expect("the deployment limits each client");
        assert!(limit.burst >= limit.per_second);
        let unlimited = Args::try_parse_from(["ipam-server"]).unwrap();
        assert_eq!(unlimited.rate_limit(), None);
    }

    #[test]
    fn gc_durations_read_as_calico_writes_them() {
        let args = Args::try_parse_from(["ipam-server"]).unwrap();
        let gc = args.gc().expect("on by default");
        assert_eq!(gc.grace, Duration::from_secs(900));
        assert_eq!(gc.interval, Duration::from_secs(30));
        assert_eq!(gc.lease.renew_every, Duration::from_secs(5));
        assert!(!gc.lease.identity.is_empty());
        let args = Args::try_parse_from([
            "ipam-server",
            "--gc-leak-grace-period",
            "1h30m",
            "--gc-identity",
            "replica-a",
        ])
        .unwrap();
        let gc = args.gc().unwrap();
        assert_eq!(gc.grace, Duration::from_secs(5400));
        assert_eq!(gc.lease.identity, "replica-a");
        let zero = Args::try_parse_from(["ipam-server", "--gc-leak-grace-period", "0s"]).unwrap();
        assert_eq!(zero.gc().unwrap().grace, Duration::ZERO);
        let bare = Args::try_parse_from(["ipam-server", "--gc-leak-grace-period", "0"]).unwrap();
        assert_eq!(bare.gc().unwrap().grace, Duration::ZERO);
        let err = Args::try_parse_from(["ipam-server", "--gc-interval", "0s"]).unwrap_err();
        assert!(
            err.to_string().contains("\"0s\" must be longer than 0"),
            "{err}"
        );
        let err = Args::try_parse_from(["ipam-server", "--gc-interval", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--gc-interval"), "{err}");
        let off = Args::try_parse_from(["ipam-server", "--no-gc"]).unwrap();
        assert!(off.gc().is_none());
        let lb = args.loadbalancer().expect("on by default");
        assert_eq!(lb.assign_ips, AssignIps::AllServices);
        assert_eq!(lb.interval, Duration::from_secs(300));
        assert_eq!(lb.lease.name, "ipam-server-loadbalancer");
        let requested = Args::try_parse_from([
            "ipam-server",
            "--loadbalancer-assign-ips",
            "RequestedServicesOnly",
        ])
        .unwrap();
        assert_eq!(
            requested.loadbalancer().unwrap().assign_ips,
            AssignIps::RequestedServicesOnly
        );
        let off = Args::try_parse_from(["ipam-server", "--no-loadbalancer"]).unwrap();
        assert!(off.loadbalancer().is_none());
    }

    #[test]
    fn connection_bounds_have_defaults_and_refuse_zero() {
        let args = Args::try_parse_from(["ipam-server"]).unwrap();
        assert_eq!(
            args.connection_limits(),
            ConnectionLimits {
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                max_connections: 1024,
                max_connections_per_client: 128,
            }
        );
        let args = Args::try_parse_from([
            "ipam-server",
            "--header-read-timeout",
            "2s",
            "--idle-timeout",
            "1m30s",
            "--max-connections",
            "10",
            "--max-connections-per-client",
            "3",
        ])
        .unwrap();
        let limits = args.connection_limits();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_client),
            (10, 3)
        );
        for flag in [
            "--max-connections",
            "--max-connections-per-client",
            "--idle-timeout",
        ] {
            let err = Args::try_parse_from(["ipam-server", flag, "0"]).unwrap_err();
            assert!(err.to_string().contains(flag), "{err}");
        }
    }

    #[test]
    fn no_arguments_mean_loopback_and_the_embedded_store() {
        let args = Args::try_parse_from(["ipam-server"]).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:9310");
        assert_eq!(args.datastore, DatastoreKind::Embedded);
        assert_eq!(args.data_dir, PathBuf::from("ipam-data"));
    }
}
