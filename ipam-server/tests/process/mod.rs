//! Running ipam-server as a process: the command line the tests start it
//! with, and waiting until it answers on the port it bound (tests ask for
//! port 0; only a server restarted at a fixed address, in the chaos test,
//! needs a free port chosen beforehand).

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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

/// A running server; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address it listens on.
    pub address: SocketAddr,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Everything the server wrote to stderr, once it has exited (call
    /// after `child.wait()`): waits for the last lines to be read.
    pub fn whole_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        self.log()
    }
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

/// Starts `command` (listening on `127.0.0.1:0`) and waits until its log
/// says which port it bound and `/healthz` answers there. The log keeps
/// being collected, for [`Server::log`].
pub async fn start_with(mut command: Command) -> Server {
    let mut child = command.spawn().expect("ipam-server starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(String::new()));
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let collected = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = bound_address(&line) {
                let _ = bound_tx.send(address);
            }
            let mut log = collected.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut server = Server {
        child,
        base: String::new(),
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        log,
        reader: Some(reader),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let address = loop {
        if let Ok(address) = bound_rx.try_recv() {
            break address;
        }
        assert!(
            Instant::now() < deadline,
            "ipam-server never said which port it bound:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.base = format!("http://{address}");
    server.address = address;
    loop {
        if let Ok(r) = reqwest::get(format!("{}/healthz", server.base)).await {
            if r.status() == 200 {
                return server;
            }
        }
        assert!(
            Instant::now() < deadline,
            "ipam-server did not come up on {address}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address in the server's "ipam-server ready" line
/// (`... ipam-server ready listen=127.0.0.1:0 address=127.0.0.1:41234 ...`).
fn bound_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("ipam-server ready") {
        return None;
    }
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .and_then(|address| address.parse().ok())
}
