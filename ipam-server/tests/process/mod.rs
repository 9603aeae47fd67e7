//! Running ipam-server as a process: free ports, the command line the
//! tests start it with, and waiting until it answers.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_ipam-server");

/// A loopback port nothing listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .unwrap()
        .port()
}

/// A running server, killed when dropped.
/// A running server; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line: `--listen`, `--data-dir`, none of the env that
/// would change defaults, stderr piped.
pub fn command(data_dir: &Path, listen: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("NO_DEFAULT_POOLS")
        .env_remove("CALICO_IPV4POOL_CIDR")
        .env_remove("CALICO_IPV4POOL_BLOCK_SIZE")
        .env_remove("CALICO_IPV6POOL_CIDR")
        .env_remove("IPAM_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Starts `command` and waits until `/healthz` answers on `port`.
pub async fn start_with(mut command: Command, port: u16) -> Server {
    let child = command.spawn().expect("ipam-server starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/healthz", server.base)).await {
            if r.status() == 200 {
                return server;
            }
        }
        assert!(
            Instant::now() < deadline,
            "ipam-server did not come up on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
