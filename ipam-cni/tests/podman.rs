//! A real container runtime: podman (Debian 12's 4.3) with its CNI backend
//! runs containers on a `bridge` network whose IPAM is calico-ipam in
//! server mode, against the ipam-server binary on its embedded store
//! (unix socket). The pool is 198.18.0.0/24 cut into /29 blocks, so twenty
//! containers span several blocks; with `result_prefix: "pool"` they all
//! sit on one /24 and reach each other over TCP across blocks. Then:
//! `podman rm` frees addresses, the allocations survive an ipam-server
//! restart, `podman network reload` keeps addresses and reachability, and
//! a `podman rm` while ipam-server is down is journaled and made by the
//! next run once it is back, with nothing freed twice or held twice.
//!
//! Nothing of the machine is touched. The test runs inside a new network
//! and mount namespace (`unshare --net --mount`): the bridge, its address
//! and route, and the containers' namespaces exist only there, with no
//! route off it. Podman's storage, run and tmp dirs, its containers.conf,
//! the CNI config and plugin dirs and the server's data live in a temp
//! dir; the paths podman, libcni and runc hard-code (/run/netns, /run/runc,
//! /var/lib/cni, /var/lib/containers) are covered by tmpfs mounts in that
//! mount namespace. A mount point missing on the machine is created for
//! the run and removed after it.
//!
//! Quirks of these machines, and what the test does about them: crun
//! refuses the hybrid cgroup layout, so the runtime is Debian's runc;
//! root cannot raise RLIMIT_NOFILE or RLIMIT_NPROC here, so podman's
//! ulimits are set to 1024; there is no image registry, so the image is
//! busybox-static's binary and its links, imported with `podman import`;
//! the containers' PID 1 (`nc`) ignores SIGTERM, so removals use `-t 0`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipam_api::Endpoint;
use ipnet::IpNet;
use support::PluginDir;

/// Set for the inner run: it must only ever run inside its namespaces.
const INNER: &str = "IPAM_PODMAN_INNER";
/// The temp dir the outer run made for the inner one.
const DIR: &str = "IPAM_PODMAN_DIR";
/// The ipam-server binary the outer run built.
const SERVER: &str = "IPAM_PODMAN_SERVER";

const POOL: &str = "198.18.0.0/24";
const BLOCK_SIZE: u8 = 29;
const GATEWAY: &str = "198.18.0.1";
const NETWORK: &str = "ipamtest";
const NODE: &str = "podman-node";
const IMAGE: &str = "localhost/calico-ipam-busybox:test";
const CONTAINERS: usize = 20;
/// Each container answers a TCP connection on this port with its name.
const PORT: &str = "5000";
/// Paths podman, libcni or runc write whatever they are told; covered by
/// tmpfs. (podman 4.3 passes `--runtime-flag root=...` to runc's create
/// but not to its delete, so runc's state dir cannot be moved.)
const SHIELDED: [&str; 4] = [
    "/run/netns",
    "/run/runc",
    "/var/lib/cni",
    "/var/lib/containers",
];

#[test]
fn podman_containers_on_a_calico_ipam_bridge_reach_each_other_across_blocks() {
    if !prerequisites() {
        return;
    }
    let server = build_ipam_server();
    let dir = tempfile::tempdir().unwrap();
    let mount_points = MountPoints::ensure(&SHIELDED);
    let started = Instant::now();
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "inner_podman",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .env(DIR, dir.path())
        .env(SERVER, &server)
        .output()
        .unwrap();
    drop(mount_points);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the podman test failed inside its namespaces:\n--- stdout\n{stdout}\n--- stderr\n{}\n--- ipam-server\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
    );
    // libtest prints `test inner_podman ... ` before the test's own lines.
    let figures: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.find("figure:").map(|at| &l[at..]))
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "{}\nfigure: whole test {:.1} s",
        figures.join("\n"),
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "runs inside its own namespaces, started by podman_containers_on_a_calico_ipam_bridge_reach_each_other_across_blocks"]
fn inner_podman() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "runs only inside the namespaces its outer test makes"
    );
    let dir = PathBuf::from(std::env::var_os(DIR).unwrap());
    for path in SHIELDED {
        run("mount", &["-t", "tmpfs", "-o", "mode=0700", "tmpfs", path]);
    }
    run("ip", &["link", "set", "lo", "up"]);
    let plugins = PluginDir::with_debian_plugins();
    let mut server = Server::start(&dir);
    let podman = Podman::new(&dir, &plugins, &server.socket);
    podman.import_busybox();

    // 1. Twenty containers at once: distinct addresses, on one /24, none
    // of them the network, broadcast or gateway address.
    let names: Vec<String> = (1..=CONTAINERS).map(|n| format!("c{n}")).collect();
    let clock = Instant::now();
    std::thread::scope(|scope| {
        for name in &names {
            let podman = &podman;
            scope.spawn(move || podman.start(name));
        }
    });
    figure(format!(
        "{CONTAINERS} containers started at once in {:.1} s",
        clock.elapsed().as_secs_f64()
    ));
    let mut addresses: BTreeMap<String, IpAddr> = BTreeMap::new();
    for name in &names {
        let (address, prefix, gateway) = podman.address(name);
        assert_eq!((prefix, gateway.as_str()), (24, GATEWAY), "{name}");
        addresses.insert(name.clone(), address);
    }
    let distinct: BTreeSet<IpAddr> = addresses.values().copied().collect();
    assert_eq!(distinct.len(), CONTAINERS, "{addresses:?}");
    for unusable in ["198.18.0.0", GATEWAY, "198.18.0.255"] {
        assert!(!distinct.contains(&unusable.parse().unwrap()), "{unusable}");
    }
    let blocks: BTreeSet<IpNet> = distinct.iter().map(|a| block_of(*a)).collect();
    assert!(blocks.len() >= 3, "{CONTAINERS} containers in {blocks:?}");
    assert_eq!(server.held(), podman.expected(&names, &addresses));

    // TCP between containers of different blocks, both ways.
    let pairs = pairs_across_blocks(&addresses);
    let clock = Instant::now();
    for (from, to) in &pairs {
        assert_eq!(podman.tcp(from, addresses[to]), *to, "{from} -> {to}");
    }
    figure(format!(
        "{} TCP exchanges across blocks in {:.1} s",
        pairs.len(),
        clock.elapsed().as_secs_f64()
    ));

    // 2. `podman rm` frees what it held.
    let removed = &names[15..];
    for name in removed {
        podman.remove(name);
        addresses.remove(name);
    }
    let kept: Vec<String> = names[..15].to_vec();
    assert_eq!(server.held(), podman.expected(&kept, &addresses));

    // 3. The allocations survive an ipam-server restart.
    let before = server.held();
    server.stop();
    server.start_again();
    assert_eq!(server.held(), before);

    // 4. `podman network reload` (DEL, then ADD with IP=) keeps each
    // address, its /24 and the reachability.
    // Of the containers still running: step 2 may have removed either of
    // the first pair above (which containers share a block is the
    // allocator's choice).
    let (a, b) = pairs_across_blocks(&addresses)
        .first()
        .cloned()
        .expect("the 15 kept containers span at least two blocks");
    let clock = Instant::now();
    podman.ok(&["network", "reload", &a, &b]);
    figure(format!(
        "network reload of 2 containers in {:.1} s",
        clock.elapsed().as_secs_f64()
    ));
    for name in [&a, &b] {
        assert_eq!(podman.eth0(name), format!("{}/24", addresses[name]));
    }
    assert_eq!(podman.tcp(&a, addresses[&b]), b);
    assert_eq!(podman.tcp(&b, addresses[&a]), a);
    assert_eq!(server.held(), before);

    // 5. `podman rm` while ipam-server is down: journaled, then made by
    // the next run once the server is back.
    let victim = &kept[2];
    let handle = podman.handle(victim);
    let lost = addresses.remove(victim).unwrap();
    server.stop();
    podman.remove(victim);
    assert_eq!(podman.pending(), std::slice::from_ref(&handle), "journaled");
    server.start_again();
    assert!(
        server.held().contains_key(&handle),
        "nothing has run since the server came back"
    );
    let clock = Instant::now();
    podman.start("c21");
    figure(format!(
        "first run after the outage (replay + ADD) in {:.1} s",
        clock.elapsed().as_secs_f64()
    ));
    assert!(podman.pending().is_empty());
    addresses.insert("c21".into(), podman.address("c21").0);
    let living: Vec<String> = kept
        .iter()
        .filter(|n| *n != victim)
        .cloned()
        .chain(["c21".to_string()])
        .collect();
    let held = server.held();
    assert_eq!(held, podman.expected(&living, &addresses));
    assert!(
        !held.contains_key(&handle) && held.values().filter(|a| **a == [lost]).count() <= 1,
        "{victim}'s {lost} is free (or given to c21 alone): {held:?}"
    );

    podman.remove_all();
    assert!(server.held().is_empty(), "{:?}", server.held());
    assert!(podman.pending().is_empty());
}

/// A measurement, for the outer run to pass on (libtest's stdout, which
/// the outer run reads).
fn figure(text: String) {
    let _ = writeln!(std::io::stdout(), "figure: {text}");
}

/// Whether everything the test needs is there (testkit::require says
/// what is missing, and skips or fails as IPAM_TEST_REQUIRE_ALL says).
/// Every check runs, so that one run names all that is missing.
fn prerequisites() -> bool {
    use testkit::require;
    [
        // It makes network and mount namespaces.
        require::root(),
        require::command("podman", "podman"),
        require::command("runc", "runc"),
        require::command("conmon", "conmon"),
        require::command("unshare", "util-linux"),
        require::command("ip", "iproute2"),
        // Debian's plain `busybox` is dynamically linked and would not run
        // in an image holding nothing but itself.
        require::static_program("/bin/busybox", "busybox-static"),
        require::cni_plugins(),
    ]
    .into_iter()
    .all(|present| present)
}

/// Builds ipam-server with the profile and into the target dir this test
/// was built with (a no-op when the workspace's tests were built), and
/// returns its path: the test runs the binary operators run.
fn build_ipam_server() -> PathBuf {
    let plugin = Path::new(env!("CARGO_BIN_EXE_calico-ipam"));
    let profile_dir = plugin.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let mut cargo = Command::new(env!("CARGO"));
    // Cargo and nextest give a test its own package's variables; a build
    // script that watches one (ring's watches CARGO_MANIFEST_DIR) would see
    // it change between this build and a plain one, and rebuild each time.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_MANIFEST_",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        if per_package || name == "CARGO_PRIMARY_PACKAGE" || name == "CARGO_TARGET_TMPDIR" {
            cargo.env_remove(name.as_ref());
        }
    }
    let out = cargo
        .args([
            "build",
            "--quiet",
            "-p",
            "ipam-server",
            "--bin",
            "ipam-server",
        ])
        .args(["--profile", profile, "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building ipam-server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("ipam-server")
}

/// Mount points created for the run, removed when dropped.
struct MountPoints {
    created: Vec<PathBuf>,
}

impl MountPoints {
    fn ensure(paths: &[&str]) -> MountPoints {
        let mut created = Vec::new();
        for path in paths {
            let path = PathBuf::from(path);
            if !path.exists() {
                std::fs::create_dir_all(&path).unwrap();
                created.push(path);
            }
        }
        MountPoints { created }
    }
}

impl Drop for MountPoints {
    fn drop(&mut self) {
        for path in self.created.iter().rev() {
            let _ = std::fs::remove_dir(path);
        }
    }
}

#[track_caller]
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The /29 block holding an address.
fn block_of(address: IpAddr) -> IpNet {
    IpNet::new(address, BLOCK_SIZE).unwrap().trunc()
}

/// Pairs of containers in different blocks, each pair both ways.
fn pairs_across_blocks(addresses: &BTreeMap<String, IpAddr>) -> Vec<(String, String)> {
    let mut by_block: BTreeMap<IpNet, &String> = BTreeMap::new();
    for (name, address) in addresses {
        by_block.entry(block_of(*address)).or_insert(name);
    }
    let firsts: Vec<&String> = by_block.values().copied().collect();
    firsts
        .windows(2)
        .flat_map(|w| [(w[0].clone(), w[1].clone()), (w[1].clone(), w[0].clone())])
        .collect()
}

/// The ipam-server binary on its embedded store, on a unix socket.
struct Server {
    binary: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut server = Server {
            binary: PathBuf::from(std::env::var_os(SERVER).unwrap()),
            dir: dir.to_path_buf(),
            socket: dir.join("ipam.sock"),
            child: None,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        server.start_again();
        server
    }

    fn client(&self) -> ipam_client::Client {
        ipam_client::Client::new(Endpoint::Unix(self.socket.clone()), Duration::from_secs(10))
    }

    fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("--listen")
            .arg(format!("unix:{}", self.socket.display()))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            // The pool the server starts with on a fresh store, as
            // calico-node reads it.
            .env("CALICO_IPV4POOL_CIDR", POOL)
            .env("CALICO_IPV4POOL_BLOCK_SIZE", BLOCK_SIZE.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.runtime.block_on(client.ready()).is_err() {
            assert!(Instant::now() < deadline, "ipam-server never got ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it as a service manager does (SIGTERM), and waits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            run("kill", &["-TERM", &child.id().to_string()]);
            let status = child.wait().unwrap();
            assert!(status.success(), "ipam-server exited with {status}");
        }
    }

    /// Every address of the network's handles on the node, by handle.
    fn held(&self) -> BTreeMap<String, Vec<IpAddr>> {
        let prefix = format!("{NETWORK}.");
        self.runtime
            .block_on(self.client().handles_on_node(NODE, &prefix))
            .unwrap()
            .into_iter()
            .map(|h| (h.handle, h.addresses.iter().map(IpNet::addr).collect()))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// podman, confined to the temp dir.
struct Podman {
    dir: PathBuf,
    conf: PathBuf,
    state: PathBuf,
}

impl Podman {
    fn new(dir: &Path, plugins: &PluginDir, socket: &Path) -> Podman {
        for sub in ["root", "runroot", "tmp", "netconf", "image/bin"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let state = dir.join("cni-state");
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{}\"]\n\
                 network_config_dir = \"{}\"\n",
                plugins.path().display(),
                dir.join("netconf").display()
            ),
        )
        .unwrap();
        let network = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [{
                "type": "bridge",
                "bridge": "ipamtbr0",
                "isGateway": true,
                "nodename": NODE,
                "log_file_path": dir.join("cni.log"),
                "ipam": {
                    "type": "calico-ipam",
                    "server": format!("unix:{}", socket.display()),
                    "result_prefix": "pool",
                    "ipv4_gateway": GATEWAY,
                    "state_dir": state,
                    "timeout_seconds": 10,
                }
            }]
        });
        std::fs::write(
            dir.join("netconf").join(format!("{NETWORK}.conflist")),
            serde_json::to_vec_pretty(&network).unwrap(),
        )
        .unwrap();
        Podman {
            dir: dir.to_path_buf(),
            conf,
            state,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", &self.conf)
            // Where image imports stage their layers (default /var/tmp).
            .env("TMPDIR", self.dir.join("tmp"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file", "--runtime", "runc"])
            .args(args);
        command
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n--- cni.log\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("cni.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An image of busybox-static's binary and the links the test uses.
    fn import_busybox(&self) {
        let image = self.dir.join("image");
        std::fs::copy("/bin/busybox", image.join("bin/busybox")).unwrap();
        for applet in ["sh", "nc", "hostname", "ip", "sleep"] {
            std::os::unix::fs::symlink("busybox", image.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.join("busybox.tar");
        run(
            "tar",
            &[
                "-C",
                image.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        self.ok(&["import", "--quiet", tar.to_str().unwrap(), IMAGE]);
    }

    /// Starts a container that answers each TCP connection on PORT with
    /// its name.
    fn start(&self, name: &str) {
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            NETWORK,
            IMAGE,
            "nc",
            "-ll",
            "-p",
            PORT,
            "-e",
            "hostname",
        ]);
    }

    fn remove(&self, name: &str) {
        self.ok(&["rm", "-f", "-t", "0", name]);
    }

    fn remove_all(&self) {
        self.ok(&["rm", "-a", "-f", "-t", "0"]);
    }

    /// The address, its prefix length and the gateway podman recorded.
    fn address(&self, name: &str) -> (IpAddr, u8, String) {
        let text = self.ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.IPPrefixLen}} {{.Gateway}}{{end}}",
            name,
        ]);
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{name}: {text:?}");
        (
            fields[0].parse().unwrap(),
            fields[1].parse().unwrap(),
            fields[2].to_string(),
        )
    }

    /// calico-ipam's handle for a container.
    fn handle(&self, name: &str) -> String {
        format!(
            "{NETWORK}.{}",
            self.ok(&["inspect", "--format", "{{.Id}}", name])
        )
    }

    /// What ipam-server should hold for these containers.
    fn expected(
        &self,
        names: &[String],
        addresses: &BTreeMap<String, IpAddr>,
    ) -> BTreeMap<String, Vec<IpAddr>> {
        names
            .iter()
            .map(|n| (self.handle(n), vec![addresses[n]]))
            .collect()
    }

    /// What `to` answers `from` over TCP.
    fn tcp(&self, from: &str, to: IpAddr) -> String {
        self.ok(&["exec", from, "nc", "-w", "5", &to.to_string(), PORT])
    }

    /// The IPv4 address on eth0 inside, as `ADDRESS/PREFIX`.
    fn eth0(&self, name: &str) -> String {
        let text = self.ok(&[
            "exec", name, "ip", "-o", "-4", "addr", "show", "dev", "eth0",
        ]);
        let mut words = text.split_whitespace();
        words.find(|w| *w == "inet");
        words.next().unwrap_or_default().to_string()
    }

    /// The journal's pending releases.
    fn pending(&self) -> Vec<String> {
        match std::fs::read_dir(self.state.join("journal")) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                names.sort();
                names
            }
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Podman {
    // Whatever happened, no container outlives the test.
    fn drop(&mut self) {
        let _ = self.output(&["rm", "-a", "-f", "-t", "0"]);
    }
}
