//! `calico-ipam`: a drop-in for Calico's CNI IPAM plugin. A runtime runs
//! it as any IPAM plugin (CNI_COMMAND and friends in the environment, the
//! network config on stdin, the result or a CNI error object on stdout);
//! it allocates through ipam-server (`ipam.server`, server mode) or
//! straight on Calico's datastore (`datastore_type`, direct mode).
//!
//! CNI versions 0.3.0 to 1.1.0; ADD, DEL, CHECK, VERSION, GC and STATUS.
//! Error codes: the specification's (1 incompatible version, 2 unsupported
//! field, 4 invalid environment, 6 undecodable input, 7 invalid network
//! config, 11 try again later, 50 not available for STATUS) and ours:
//! 100 no address available, 101 address in use, 102 CHECK found an
//! address missing, 103 refused for another reason.
//!
//! The runtime starts the plugin for every pod's ADD and DEL, so what a
//! run costs is mostly the process: exec, loading, start-up, exit. Two
//! things keep that small (BENCHMARKS.md, "calico-ipam start-up: static,
//! and server mode alone"): README's build links it statically (no shared
//! library mapped, no symbol bound at start: a server-mode ADD's CPU net
//! of `/bin/true` about halved, page faults 218 → 161), and the features
//! split the modes, `plugin` alone being server mode through ipam-client,
//! `direct` (on by default) adding the engine and the datastore clients,
//! which a server-mode-only build then does not link (21 → 3.9 MB static,
//! page faults 161 → 144).
//!
//! The protocol is implemented here rather than with rscni-plugin 0.3:
//! that crate prints every result in one format (no `cniVersion`, no
//! per-address `version` for 0.3.x/0.4.0 results), cannot print an error
//! object (its `ErrorResult` cannot be built outside the crate), requires
//! `CNI_NETNS`/`CNI_ARGS` even where the spec makes them optional, and
//! reads GC's valid attachments as `container_id` where the spec says
//! `containerID`.

pub mod config;
#[cfg(feature = "plugin")]
pub mod connection;
pub mod env;
pub mod error;
#[cfg(feature = "plugin")]
pub mod logging;
#[cfg(feature = "plugin")]
pub mod plugin;
pub mod result;
#[cfg(feature = "plugin")]
pub mod state;
pub mod version;

use crate::version::CniVersion;

/// One run of the plugin: the environment through `var`, the network
/// config `stdin`; returns what goes on stdout.
#[cfg(feature = "plugin")]
pub fn run(
    var: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<serde_json::Value>, error::CniError> {
    use crate::config::NetConfig;
    use crate::env::{Command, Invocation};
    use crate::error::CniError;

    let invocation = Invocation::from_env(var)?;
    if invocation.command == Command::Version {
        let requested = config::requested_version(stdin);
        return Ok(Some(plugin::version_info(requested.as_deref())));
    }
    let config = NetConfig::parse(stdin)?;
    logging::init(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                error::IO_FAILURE,
                "I/O failure",
                format!("starting the runtime: {e}"),
            )
        })?;
    runtime.block_on(plugin::execute(&invocation, &config))
}

/// The `cniVersion` an error object is written in: the config's when it
/// is one we speak, else the newest.
pub fn error_version(stdin: &[u8]) -> &'static str {
    config::requested_version(stdin)
        .and_then(|v| CniVersion::parse(&v).ok())
        .unwrap_or(CniVersion::LATEST)
        .as_str()
}
