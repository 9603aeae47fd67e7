//! The command line: global connection flags (each also read from an
//! environment variable) and one subcommand per job.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use ipam_service::DatastoreSettings;
use ipam_store::etcd::EtcdOptions;

use crate::check::LivenessSource;
use crate::connection::{Backend, DatastoreKind, DEFAULT_SERVER};

const AFTER_HELP: &str = "\
Connection: through ipam-server (--server, default http://127.0.0.1:9310), or
straight to a datastore with --datastore embedded|etcd|kubernetes (which takes
precedence over --server and IPAM_SERVER).

Exit codes:
  0  success
  1  the operation failed or was refused (overlapping pool, invalid change,
     a release refused because the address changed)
  2  usage error: a wrong flag or value, an unreadable report file
  3  not found: no such pool, handle, or the address is not assigned
  4  the server or datastore cannot be reached (or another process holds the
     embedded data dir)";

/// ipamctl: inspect and repair a Calico-compatible IPAM (the tables of
/// `calicoctl ipam`).
#[derive(Debug, Clone, Parser)]
#[command(name = "ipamctl", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// How to reach IPAM state.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where IPAM state is.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// ipam-server to use: http://HOST:PORT or unix:PATH.
    #[arg(long, env = "IPAM_SERVER", global = true, default_value = DEFAULT_SERVER)]
    pub server: String,

    /// File holding ipam-server's bearer token.
    #[arg(long, env = "IPAM_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,

    /// Longest one call to ipam-server may take, in seconds.
    #[arg(
        long,
        env = "IPAM_TIMEOUT_SECONDS",
        global = true,
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_seconds: u64,

    /// Read and write a datastore directly instead of going through
    /// ipam-server.
    #[arg(long, env = "IPAM_DATASTORE", global = true, value_enum)]
    pub datastore: Option<DatastoreKind>,

    /// Data directory of the embedded datastore.
    #[arg(
        long,
        env = "IPAM_DATA_DIR",
        global = true,
        default_value = "ipam-data"
    )]
    pub data_dir: PathBuf,

    /// etcd endpoints, comma separated (http://127.0.0.1:2379).
    #[arg(
        long,
        env = "IPAM_ETCD_ENDPOINTS",
        global = true,
        value_delimiter = ','
    )]
    pub etcd_endpoints: Vec<String>,

    /// Kubeconfig for the Kubernetes datastore; else KUBECONFIG,
    /// ~/.kube/config or the pod's service account.
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
}

impl ConnectionArgs {
    /// Where these flags say IPAM state is.
    pub fn backend(&self) -> Backend {
        let settings = match self.datastore {
            None => {
                return Backend::Server {
                    url: self.server.clone(),
                    token_file: self.token_file.clone(),
                    timeout: Duration::from_secs(self.timeout_seconds),
                }
            }
            Some(DatastoreKind::Embedded) => DatastoreSettings::Embedded {
                data_dir: self.data_dir.clone(),
            },
            Some(DatastoreKind::Etcd) => DatastoreSettings::Etcd {
                endpoints: self.etcd_endpoints.clone(),
                options: EtcdOptions::default(),
            },
            Some(DatastoreKind::Kubernetes) => DatastoreSettings::Kubernetes {
                kubeconfig: self.kubeconfig.clone(),
                api_root: None,
            },
        };
        Backend::Datastore(settings)
    }
}

impl ConnectionArgs {
    /// Where `check` reads live pods and nodes: the Kubernetes datastore's
    /// cluster, or the one a kubeconfig (flag or `KUBECONFIG`) names.
    pub fn liveness_source(&self) -> LivenessSource {
        match (self.datastore, &self.kubeconfig) {
            (Some(DatastoreKind::Kubernetes), kubeconfig) => {
                LivenessSource::Kubernetes(kubeconfig.clone())
            }
            (_, Some(kubeconfig)) => LivenessSource::Kubernetes(Some(kubeconfig.clone())),
            (_, None) => LivenessSource::None,
        }
    }
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Pool usage as `calicoctl ipam show` prints it, or blocks, borrowed
    /// addresses, the IPAM configuration, or one address.
    Show(ShowArgs),
    /// Walk blocks, handles and affinities and report leaks and
    /// inconsistencies (as `calicoctl ipam check`).
    Check(CheckArgs),
    /// Release addresses, or what a check report found leaked.
    Release(ReleaseArgs),
    /// Change the IPAM configuration.
    Configure(ConfigureArgs),
    /// List, create, delete, disable or enable IP pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// List, show, create or delete IP reservations (addresses never
    /// handed out automatically).
    #[command(subcommand)]
    Reservation(crate::reservation::ReservationCommand),
    /// A node's labels, which pools' nodeSelector is matched against.
    #[command(subcommand)]
    Node(NodeCommand),
}

/// `ipamctl node ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// Sets and removes a node's labels, as `kubectl label` takes them:
    /// KEY=VALUE sets, KEY- removes. Only where the IPAM keeps labels (the
    /// embedded store); on Kubernetes use `kubectl label node`, on etcd
    /// `calicoctl label nodes`.
    Label {
        /// The node.
        node: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        edits: Vec<crate::node::LabelEdit>,
    },
    /// Shows a node's labels as assignments read them (on every datastore).
    Labels {
        /// The node.
        node: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// calicoctl's tables.
    Table,
    /// JSON, in the schema of ipam-server's API (ipam-server/openapi.json).
    Json,
    /// The same as YAML.
    Yaml,
}

/// `ipamctl show`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("what").multiple(false)))]
pub struct ShowArgs {
    /// Report whether this address is in use, and by whom.
    #[arg(long, group = "what")]
    pub ip: Option<IpAddr>,
    /// Add a row per block under its pool.
    #[arg(long, group = "what")]
    pub show_blocks: bool,
    /// List addresses used by a node other than their block's owner.
    #[arg(long, group = "what")]
    pub show_borrowed: bool,
    /// Show the IPAM configuration.
    #[arg(long, group = "what")]
    pub show_configuration: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `ipamctl check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Write the JSON report to this file (read back by `release
    /// --from-report`).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print every finding, not only the summary.
    #[arg(long)]
    pub show_problem_ips: bool,
    /// Also print every allocation checked, block by block, as calicoctl
    /// does (implies --show-problem-ips).
    #[arg(long)]
    pub show_all_ips: bool,
}

/// `ipamctl release`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("source").required(true).multiple(false)))]
pub struct ReleaseArgs {
    /// An address to release (repeat for more).
    #[arg(long = "ip", group = "source", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
    /// A report written by `ipamctl check -o FILE`: release what it found
    /// leaked and is unchanged since. Given several times, only what every
    /// report found is released.
    #[arg(long = "from-report", group = "source", value_name = "FILE")]
    pub reports: Vec<PathBuf>,
}

/// `ipamctl configure`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)))]
pub struct ConfigureArgs {
    /// When true, a node never uses addresses from another node's block.
    #[arg(long = "strictaffinity", group = "change", value_name = "true|false", action = clap::ArgAction::Set)]
    pub strict_affinity: Option<bool>,
    /// Most blocks one node may hold (0: Calico's default of 20); needs
    /// strict affinity.
    #[arg(
        long = "maxblocksperhost",
        alias = "max-blocks-per-host",
        group = "change",
        value_name = "N"
    )]
    pub max_blocks_per_host: Option<u32>,
    /// When false, nodes never claim new blocks; needs strict affinity.
    #[arg(long = "autoallocateblocks", group = "change", value_name = "true|false", action = clap::ArgAction::Set)]
    pub auto_allocate_blocks: Option<bool>,
    /// Seconds a released address stays out of use before it is handed out
    /// again (0 to 1200; 0 hands it out again at once). Set it when a new
    /// pod must not appear at an address before Services, conntrack and
    /// peers have forgotten the old one.
    #[arg(long = "ip-cooldown-seconds", group = "change", value_name = "N")]
    pub ip_cooldown_seconds: Option<u32>,
}

/// `ipamctl pool ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum PoolCommand {
    /// List the pools.
    List {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Create a pool.
    Create(PoolCreateArgs),
    /// Delete a pool: it is disabled, its blocks' affinities released, then
    /// removed; addresses in use stay allocated until released.
    Delete {
        /// The pool's name.
        name: String,
    },
    /// Stop handing out addresses from a pool (those in use stay).
    Disable {
        /// The pool's name.
        name: String,
    },
    /// Hand out addresses from a disabled pool again.
    Enable {
        /// The pool's name.
        name: String,
    },
    /// Split a pool into NUMBER (2, 4, 8, ...) equal pools named
    /// split-<pool>-<i>, with its settings, as `calicoctl ipam split` does;
    /// its blocks, affinities and addresses stay. Needs no datastore lock:
    /// allocations go on while it runs.
    Split(crate::split::PoolSplitArgs),
}

/// `ipamctl pool create`.
#[derive(Debug, Clone, Args)]
pub struct PoolCreateArgs {
    /// The pool's name.
    pub name: String,
    /// Its range (aligned: 10.0.0.0/16, fd00::/64).
    #[arg(long)]
    pub cidr: IpNet,
    /// Prefix length of its blocks (IPv4 20-32, default 26; IPv6 116-128,
    /// default 122).
    #[arg(long)]
    pub block_size: Option<u8>,
    /// Which nodes may use it (Calico selector; default all()).
    #[arg(long, default_value = "")]
    pub node_selector: String,
    /// Which namespaces' pods may use it (Calico selector; default all()).
    #[arg(long, default_value = "")]
    pub namespace_selector: String,
    /// What its addresses are for, comma separated (default Workload,Tunnel).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub allowed_uses: Vec<Use>,
    /// IP-in-IP mode (Never, Always, CrossSubnet).
    #[arg(long)]
    pub ipip_mode: Option<String>,
    /// VXLAN mode (Never, Always, CrossSubnet).
    #[arg(long)]
    pub vxlan_mode: Option<String>,
    /// NAT traffic leaving the pool.
    #[arg(long)]
    pub nat_outgoing: bool,
    /// Do not export the pool's routes over BGP.
    #[arg(long = "disable-bgp-export")]
    pub disable_bgp_export: bool,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
}

/// A pool's `allowedUses` entry, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum Use {
    /// Pod and workload addresses.
    Workload,
    /// Node tunnel addresses.
    Tunnel,
    /// Service LoadBalancer addresses.
    LoadBalancer,
}

impl From<Use> for ipam_core::AllowedUse {
    fn from(value: Use) -> ipam_core::AllowedUse {
        match value {
            Use::Workload => ipam_core::AllowedUse::Workload,
            Use::Tunnel => ipam_core::AllowedUse::Tunnel,
            Use::LoadBalancer => ipam_core::AllowedUse::LoadBalancer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ipamctl").chain(args.iter().copied()))
    }

    #[test]
    fn show_flags_are_exclusive_as_in_calicoctl() {
        let error = parse(&["show", "--show-blocks", "--show-borrowed"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        assert!(parse(&["show", "--ip", "10.0.0.1", "-o", "json"]).is_ok());
    }

    #[test]
    fn a_zero_timeout_is_refused() {
        let error = parse(&["--timeout-seconds", "0", "show"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        assert!(parse(&["--timeout-seconds", "5", "show"]).is_ok());
    }

    #[test]
    fn a_bad_address_is_a_usage_error_naming_the_flag() {
        let error = parse(&["show", "--ip", "10.0.0.300"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        assert!(error.to_string().contains("--ip"), "{error}");
    }

    #[test]
    fn configure_needs_a_change_and_accepts_calicoctls_spelling() {
        assert!(parse(&["configure"]).is_err());
        let cli = parse(&[
            "configure",
            "--max-blocks-per-host",
            "4",
            "--strictaffinity",
            "true",
        ])
        .unwrap();
        let Command::Configure(args) = cli.command else {
            panic!("configure parses as configure");
        };
        assert_eq!(args.max_blocks_per_host, Some(4));
        assert_eq!(args.strict_affinity, Some(true));
        assert!(parse(&["configure", "--strictaffinity", "maybe"]).is_err());
    }

    #[test]
    fn release_takes_addresses_or_reports_but_not_both() {
        assert!(parse(&["release"]).is_err());
        assert!(parse(&["release", "--ip", "10.0.0.1", "--from-report", "r.json"]).is_err());
        let cli = parse(&["release", "--ip", "10.0.0.1", "--ip", "fd00::1"]).unwrap();
        let Command::Release(args) = cli.command else {
            panic!("release parses as release");
        };
        assert_eq!(args.ips.len(), 2);
    }

    #[test]
    fn the_server_is_the_default_and_a_datastore_takes_precedence() {
        let cli = parse(&["show"]).unwrap();
        assert!(matches!(
            cli.connection.backend(),
            Backend::Server { url, .. } if url == DEFAULT_SERVER
        ));
        let cli = parse(&["--datastore", "embedded", "--data-dir", "/d", "show"]).unwrap();
        assert_eq!(
            cli.connection.backend(),
            Backend::Datastore(DatastoreSettings::Embedded {
                data_dir: "/d".into()
            })
        );
        let cli = parse(&[
            "show",
            "--datastore",
            "etcd",
            "--etcd-endpoints",
            "http://a:1,http://b:2",
        ])
        .unwrap();
        assert_eq!(
            cli.connection.backend(),
            Backend::Datastore(DatastoreSettings::Etcd {
                endpoints: vec!["http://a:1".into(), "http://b:2".into()],
                options: EtcdOptions::default(),
            })
        );
    }
}
