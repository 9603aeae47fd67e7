//! A real etcd for tests: the `etcd` on the PATH (Debian's etcd-server
//! package, 3.4, installs `/usr/bin/etcd`) on free loopback ports, with
//! its data in a temporary directory.
//!
//! Tests that need etcd ask [`crate::require::etcd`] first (which skips
//! them, or fails them under `IPAM_TEST_REQUIRE_ALL=1`, when etcd is
//! missing), start their own with [`EtcdServer::start`] and drop it when
//! done; nothing here touches an etcd the machine already runs (the system
//! one listens on 2379). etcd cannot report a port it was given as 0, so
//! the ports are probed free first and a lost race is retried.
//! [`EtcdServer::stop`] and
//! [`EtcdServer::restart`] keep the ports and the data, so that a test can
//! take etcd away and bring it back under a client that stays connected.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long etcd may take to answer its health check after it is started.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// How often a fresh pair of ports is tried when another process takes one
/// between our probe and etcd's bind.
const PORT_ATTEMPTS: usize = 5;

/// The ports a system etcd uses; never ours, even if free.
const SYSTEM_PORTS: [u16; 2] = [2379, 2380];

/// Why an etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No etcd binary is on the PATH.
    #[error("etcd is not on the PATH: install it with `apt-get install etcd-server`")]
    NotInstalled,
    /// A file, directory, port or process could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// etcd exited, or did not become healthy in time.
    #[error("etcd on {endpoint} did not become healthy: {reason}; its stderr:\n{stderr}")]
    NotReady {
        /// The client URL it was started on.
        endpoint: String,
        /// What was seen.
        reason: String,
        /// The end of what etcd wrote to stderr.
        stderr: String,
    },
}

/// A running (or stopped) etcd process owned by a test. Dropping it kills
/// the process and removes its data.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a one-member etcd on free loopback ports and waits until it
    /// reports itself healthy.
    pub async fn start() -> Result<EtcdServer, EtcdError> {
        let binary = crate::require::find("etcd").ok_or(EtcdError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-etcd-")
            .tempdir()
            .map_err(|source| EtcdError::Io {
                what: "creating etcd's temporary directory".to_string(),
                source,
            })?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let (client_port, peer_port) = free_port_pair()?;
            match launch(&binary, dir.path(), client_port, peer_port).await {
                Ok(child) => {
                    return Ok(EtcdServer {
                        binary,
                        dir,
                        client_port,
                        peer_port,
                        child: Some(child),
                    })
                }
                Err(err) if lost_port_race(&err) => {
                    // Another process bound a port between our probe and
                    // etcd's bind: wipe the half-made member and try again.
                    remove_data(dir.path())?;
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        client_url(self.client_port)
    }

    /// Kills etcd (as a crash would) and waits for it to exit. The ports and
    /// the data stay for [`EtcdServer::restart`].
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            reap(child);
        }
    }

    /// Starts etcd again on the same ports with the same data, stopping it
    /// first if it is running, and waits until it is healthy.
    pub async fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        let child = launch(
            &self.binary,
            self.dir.path(),
            self.client_port,
            self.peer_port,
        )
        .await?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn client_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

fn stderr_path(dir: &Path) -> PathBuf {
    dir.join("etcd.stderr")
}

/// Spawns etcd with its data under `dir` and waits for its health check;
/// on failure the process is killed and the error carries its stderr.
async fn launch(
    binary: &Path,
    dir: &Path,
    client_port: u16,
    peer_port: u16,
) -> Result<Child, EtcdError> {
    let stderr_file = stderr_path(dir);
    let stderr = File::create(&stderr_file).map_err(|source| EtcdError::Io {
        what: format!("creating {}", stderr_file.display()),
        source,
    })?;
    let client = client_url(client_port);
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new(binary);
    command
        .arg("--name=testkit")
        .arg(format!("--data-dir={}", data_dir(dir).display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=testkit={peer}"))
        .args(["--logger=zap", "--log-level=warn", "--log-outputs=stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(arch) = unsupported_arch() {
        // etcd 3.4 refuses to start on architectures its authors do not
        // test unless told that this is deliberate.
        command.env("ETCD_UNSUPPORTED_ARCH", arch);
    }
    let mut child = command.spawn().map_err(|source| EtcdError::Io {
        what: format!("starting {}", binary.display()),
        source,
    })?;
    match wait_until_healthy(&mut child, client_port).await {
        Ok(()) => Ok(child),
        Err(reason) => {
            reap(child);
            Err(EtcdError::NotReady {
                endpoint: client,
                reason,
                stderr: tail(&stderr_file),
            })
        }
    }
}

async fn wait_until_healthy(child: &mut Child, client_port: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_DEADLINE;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("etcd exited with {status}"));
        }
        let last = match health(address).await {
            Ok(true) => return Ok(()),
            Ok(false) => "the health check answered unhealthy".to_string(),
            Err(err) => format!("the health check failed: {err}"),
        };
        if Instant::now() >= deadline {
            return Err(format!("not healthy after {READY_DEADLINE:?} ({last})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the process and waits for it, so that no zombie or port outlives
/// the server.
fn reap(mut child: Child) {
    // Killing a process that already exited fails harmlessly; wait reaps it
    // either way.
    let _ = child.kill();
    let _ = child.wait();
}

fn remove_data(dir: &Path) -> Result<(), EtcdError> {
    let data = data_dir(dir);
    if !data.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(&data).map_err(|source| EtcdError::Io {
        what: format!("removing {}", data.display()),
        source,
    })
}

/// Asks etcd's `/health` endpoint whether the member is healthy (it answers
/// `{"health":"true"}` once it has a leader and serves requests).
async fn health(address: SocketAddr) -> io::Result<bool> {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer);
        Ok(answer.starts_with("HTTP/1.1 200") && answer.contains(r#""health":"true""#))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 1s")))
}

/// Two distinct free loopback ports. Both listeners are held until both
/// ports are known so that the kernel cannot hand out the same one twice.
fn free_port_pair() -> Result<(u16, u16), EtcdError> {
    let bind = || -> Result<TcpListener, EtcdError> {
        loop {
            let listener =
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| EtcdError::Io {
                    what: "binding a free loopback port".to_string(),
                    source,
                })?;
            let port = local_port(&listener)?;
            if !SYSTEM_PORTS.contains(&port) {
                return Ok(listener);
            }
        }
    };
    let client = bind()?;
    let peer = bind()?;
    Ok((local_port(&client)?, local_port(&peer)?))
}

fn local_port(listener: &TcpListener) -> Result<u16, EtcdError> {
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|source| EtcdError::Io {
            what: "reading a bound port".to_string(),
            source,
        })
}

fn lost_port_race(err: &EtcdError) -> bool {
    matches!(err, EtcdError::NotReady { stderr, .. } if stderr.contains("address already in use"))
}

/// The value of ETCD_UNSUPPORTED_ARCH etcd 3.4 wants on this machine, in
/// Go's architecture names; none on amd64, which it supports.
fn unsupported_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => None,
        "aarch64" => Some("arm64"),
        "powerpc64" => Some("ppc64le"),
        "s390x" => Some("s390x"),
        "x86" => Some("386"),
        other => Some(other),
    }
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    const LINES: usize = 30;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn etcd_starts_on_a_private_port_and_survives_a_restart() {
        if !crate::require::etcd() {
            return;
        }
        let mut etcd = EtcdServer::start().await.expect("etcd starts");
        let endpoint = etcd.endpoint();
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        assert!(!endpoint.ends_with(":2379"));
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, etcd.client_port));
        assert!(health(address).await.unwrap());

        etcd.stop();
        assert!(health(address).await.is_err(), "stopped etcd still answers");
        etcd.restart().await.expect("etcd restarts");
        assert_eq!(etcd.endpoint(), endpoint, "a restart keeps the port");
        assert!(health(address).await.unwrap());
    }

    #[tokio::test]
    async fn two_servers_get_different_ports() {
        if !crate::require::etcd() {
            return;
        }
        let a = EtcdServer::start().await.unwrap();
        let b = EtcdServer::start().await.unwrap();
        assert_ne!(a.endpoint(), b.endpoint());
    }

    #[test]
    fn free_ports_are_distinct_and_never_the_system_etcds() {
        let (client, peer) = free_port_pair().unwrap();
        assert_ne!(client, peer);
        assert!(!SYSTEM_PORTS.contains(&client) && !SYSTEM_PORTS.contains(&peer));
    }
}
