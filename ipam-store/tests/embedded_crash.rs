//! Durability across `kill -9`: every create the embedded store
//! acknowledged is in the file after the writing process is killed
//! mid-stream; while the writer lives, another process is refused the data
//! dir with the writer's pid; and the kernel's release of the dead
//! process's lock lets the store open again at once.
//!
//! The test binary plays both parts: run with `WRITER_ENV` set to a data
//! dir, the same test writes handles until it is killed, printing each
//! handle id on stdout once its create has returned.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use ipam_core::Handle;
use ipam_store::embedded::EmbeddedStore;
use ipam_store::{Datastore, Key, StoreError, Value};

const WRITER_ENV: &str = "IPAM_EMBEDDED_CRASH_WRITER_DIR";

/// Acks the parent waits for before it kills the writer.
const ACKS_BEFORE_KILL: usize = 25;

/// More than the writer can do before the kill; reaching it means the kill
/// came too late to test anything.
const WRITES: usize = 1_000_000;

const ACK: &str = "ack ";

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        write_until_killed(&dir).await;
        return;
    }

    let dir = tempfile::tempdir().expect("temp data dir");
    let mut writer = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "acknowledged_writes_survive_kill_9",
            "--exact",
            "--nocapture",
        ])
        .env(WRITER_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(writer.stdout.take().expect("writer stdout")).lines();
    let mut acked = Vec::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("the writer stopped before acknowledging enough writes")
            .expect("reading the writer's stdout");
        if let Some(id) = line.strip_prefix(ACK) {
            acked.push(id.to_string());
        }
    }
    // While the writer lives, the data dir is its own.
    let err = EmbeddedStore::open(dir.path()).expect_err("open while the writer holds the dir");
    assert_eq!(
        err,
        StoreError::Unavailable {
            backend: "embedded",
            message: format!(
                "data dir {} is already in use by pid {}",
                dir.path().display(),
                writer.id()
            ),
        }
    );
    // SIGKILL on Unix: no destructor, no clean close of the redb file.
    writer.kill().expect("kill -9 the writer");
    // Acks printed between the last one read and the kill count too.
    for line in lines {
        if let Some(id) = line.expect("reading the writer's stdout").strip_prefix(ACK) {
            acked.push(id.to_string());
        }
    }
    let status = writer.wait().expect("reap the writer");
    assert_eq!(
        status.signal(),
        Some(9),
        "the writer must die by SIGKILL, not finish: {status}"
    );

    let store = EmbeddedStore::open(dir.path()).expect("reopen after kill -9");
    for id in &acked {
        let key = Key::Handle(id.clone());
        let read = store
            .get(&key)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {key} lost: {e}"));
        assert_eq!(read.value, Value::Handle(Handle::new(id.as_str())));
    }
}

async fn write_until_killed(dir: &str) {
    let store = EmbeddedStore::open(dir.as_ref()).expect("writer: open");
    let mut stdout = std::io::stdout().lock();
    for i in 0..WRITES {
        let id = format!("k8s-pod-network.crash-{i}");
        store
            .create(&Value::Handle(Handle::new(id.as_str())))
            .await
            .expect("writer: create");
        writeln!(stdout, "{ACK}{id}").expect("writer: ack");
        stdout.flush().expect("writer: flush ack");
    }
}
