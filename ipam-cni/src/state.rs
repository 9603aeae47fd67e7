//! The plugin's node-local state under `ipam.state_dir` (default
//! [`crate::config::DEFAULT_STATE_DIR`]), so that no release is lost while the IPAM is
//! unreachable:
//!
//! - `assigned/<handle>`: what an ADD got, each address with the block's
//!   sequence number for it, so that a DEL knows them without the IPAM.
//!   Replaced by a rename (a reader sees the old or the new file, never
//!   half of one) but not fsynced: a record lost in a crash only makes a
//!   later replay release by handle, which is still safe (see below), and
//!   an ADD stays free of disk flushes.
//! - `journal/<handle>`: a release that a DEL could not make, written
//!   durably (temp file, fsync, rename, fsync of the directory) before the
//!   DEL answers.
//! - `journal.lock`: held (flock) by the run that replays the journal, so
//!   that two runs never replay one entry at once (Calico serialises its
//!   IPAM calls on a node the same way: ipam_plugin.go,
//!   `acquireIPAMLockBestEffort`).
//!
//! Both kinds of file are JSON named after the handle (`<network>.<container
//! id>`; both halves hold only letters, digits, `_`, `.` and `-`).
//! Nothing here talks to the IPAM: [`crate::plugin`] replays.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a run waiting for the journal lock tries again.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A file holds something that is not ours.
    #[error("{path} is not a calico-ipam state file: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        source: serde_json::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One address of a handle and the block's sequence number for it (absent
/// when the IPAM did not say: an older ipam-server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldAddress {
    /// The address.
    pub address: IpAddr,
    /// The block's sequence number when it was handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
}

/// What an ADD got: `assigned/<handle>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The handle.
    pub handle: String,
    /// Its addresses.
    pub addresses: Vec<HeldAddress>,
}

/// A release a DEL could not make: `journal/<handle>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRelease {
    /// The handle to release.
    pub handle: String,
    /// Calico's legacy workload id (`<namespace>.<pod>`), released too, as
    /// DEL does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_handle: Option<String>,
    /// The addresses the ADD recorded: each is released only if the handle
    /// still holds it with that sequence number. `None` when no record was
    /// found: then the handle is released whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<HeldAddress>>,
    /// When the DEL failed (Go's time format, like Calico's timestamps),
    /// for whoever reads the file.
    pub recorded_at: String,
}

/// The state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

/// The journal lock; released when dropped.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

impl StateDir {
    /// The state under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn assigned_dir(&self) -> PathBuf {
        self.root.join("assigned")
    }

    fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// Records what an ADD got, replacing an earlier record of the handle.
    pub fn record_assignment(&self, assignment: &Assignment) -> Result<(), StateError> {
        write_file(&self.assigned_dir(), &assignment.handle, assignment, false)
    }

    /// What the last ADD of `handle` got; `None` when there is no record.
    pub fn assignment(&self, handle: &str) -> Result<Option<Assignment>, StateError> {
        read_file(&self.assigned_dir().join(handle))
    }

    /// Forgets the ADD record of `handle` (its addresses are released).
    pub fn forget_assignment(&self, handle: &str) -> Result<(), StateError> {
        remove_file(&self.assigned_dir(), handle, false)
    }

    /// The handles with an ADD record.
    pub fn assigned_handles(&self) -> Result<Vec<String>, StateError> {
        list(&self.assigned_dir())
    }

    /// Writes a pending release durably: once this returns, it survives a
    /// crash or a power cut.
    pub fn journal(&self, pending: &PendingRelease) -> Result<(), StateError> {
        write_file(&self.journal_dir(), &pending.handle, pending, true)
    }

    /// The handles with a pending release, in name order.
    pub fn pending_handles(&self) -> Result<Vec<String>, StateError> {
        list(&self.journal_dir())
    }

    /// A pending release; `None` when it is gone (settled by another run).
    pub fn pending(&self, handle: &str) -> Result<Option<PendingRelease>, StateError> {
        read_file(&self.journal_dir().join(handle))
    }

    /// Removes a pending release the IPAM has confirmed, durably.
    pub fn settle(&self, handle: &str) -> Result<(), StateError> {
        remove_file(&self.journal_dir(), handle, true)
    }

    /// Takes the journal lock, waiting for another run to finish its
    /// replay. Polls, so that the run's time bound can cancel the wait.
    pub async fn lock_journal(&self) -> Result<JournalLock, StateError> {
        std::fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        let path = self.root.join("journal.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening", &path))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(JournalLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => tokio::time::sleep(LOCK_POLL).await,
                Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", &path)(e)),
            }
        }
    }
}

// Handles become file names; a `/` or a leading `.` in one would be a
// path, so such a name is refused rather than written (the network name
// and container id are checked before, so this never fires on valid input).
fn file_name(dir: &Path, name: &str) -> Result<PathBuf, StateError> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
        return Err(StateError::Io {
            action: "naming a file after",
            path: dir.join(name),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not usable as a file name",
            ),
        });
    }
    Ok(dir.join(name))
}

fn write_file<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    durable: bool,
) -> Result<(), StateError> {
    let path = file_name(dir, name)?;
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    // A temp name of its own per process: concurrent runs never share one.
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(value).expect("state records serialize");
    let written = (|| {
        let mut file = File::create(&temp).map_err(io("creating", &temp))?;
        file.write_all(&json).map_err(io("writing", &temp))?;
        if durable {
            file.sync_all().map_err(io("flushing", &temp))?;
        }
        std::fs::rename(&temp, &path).map_err(io("renaming into", &path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

fn read_file<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

fn remove_file(dir: &Path, name: &str, durable: bool) -> Result<(), StateError> {
    let path = file_name(dir, name)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("removing", &path)(e)),
    }
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

// Temp files (dot names) are left out: they are another run's write in
// progress, or the leftover of a crash, never a record.
fn list(dir: &Path) -> Result<Vec<String>, StateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("listing", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

// A rename or removal is durable once the directory holding it is flushed.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flushing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(handle: &str) -> PendingRelease {
        PendingRelease {
            handle: handle.into(),
            legacy_handle: Some("default.nginx".into()),
            addresses: Some(vec![HeldAddress {
                address: "198.18.0.5".parse().unwrap(),
                sequence_number: Some(7),
            }]),
            recorded_at: "2026-05-23 03:33:38 +0000 UTC".into(),
        }
    }

    #[test]
    fn pending_releases_are_written_listed_read_and_settled() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        assert!(state.pending_handles().unwrap().is_empty(), "no dir yet");
        state.journal(&pending("net.b")).unwrap();
        state.journal(&pending("net.a")).unwrap();
        assert_eq!(state.pending_handles().unwrap(), ["net.a", "net.b"]);
        assert_eq!(state.pending("net.a").unwrap(), Some(pending("net.a")));
        state.settle("net.a").unwrap();
        state.settle("net.a").unwrap();
        assert_eq!(state.pending("net.a").unwrap(), None);
        assert_eq!(state.pending_handles().unwrap(), ["net.b"]);
    }

    #[test]
    fn the_journal_is_plain_json_in_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.journal(&pending("k8s-pod-network.c1")).unwrap();
        let text = std::fs::read_to_string(dir.path().join("journal/k8s-pod-network.c1")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "handle": "k8s-pod-network.c1",
                "legacyHandle": "default.nginx",
                "addresses": [{"address": "198.18.0.5", "sequenceNumber": 7}],
                "recordedAt": "2026-05-23 03:33:38 +0000 UTC"
            })
        );
    }

    #[test]
    fn an_assignment_record_is_replaced_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let record = |n: u64| Assignment {
            handle: "net.c".into(),
            addresses: vec![HeldAddress {
                address: "198.18.0.9".parse().unwrap(),
                sequence_number: Some(n),
            }],
        };
        state.record_assignment(&record(1)).unwrap();
        state.record_assignment(&record(2)).unwrap();
        assert_eq!(state.assignment("net.c").unwrap(), Some(record(2)));
        assert_eq!(state.assigned_handles().unwrap(), ["net.c"]);
        state.forget_assignment("net.c").unwrap();
        assert_eq!(state.assignment("net.c").unwrap(), None);
    }

    #[test]
    fn leftovers_and_foreign_files_are_not_records() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(dir.path().join("journal")).unwrap();
        std::fs::write(dir.path().join("journal/.net.c.99.tmp"), b"{").unwrap();
        std::fs::write(dir.path().join("journal/net.d"), b"not json").unwrap();
        assert_eq!(state.pending_handles().unwrap(), ["net.d"]);
        let error = state.pending("net.d").unwrap_err();
        assert!(error.to_string().contains("net.d"), "{error}");
        assert!(state.journal(&pending("../escape")).is_err());
        assert!(state.journal(&pending(".hidden")).is_err());
    }

    #[tokio::test]
    async fn one_run_at_a_time_holds_the_journal_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = state.lock_journal().await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(100), state.lock_journal());
        assert!(waiting.await.is_err(), "a second lock waits");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), state.lock_journal())
            .await
            .expect("free once dropped")
            .unwrap();
    }
}
