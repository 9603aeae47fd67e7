//! `cargo xtask`: the project's chores that are not part of any binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Chores for working on calico-ipam-rs")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write every generated file again from its source: the CRD
    /// manifests in crds/, ipam-server/openapi.json and the etcd client in
    /// ipam-store/src/etcd/rpc.rs.
    Gen,
}

fn main() -> ExitCode {
    let Args { task } = Args::parse();
    match task {
        Task::Gen => match generate() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask gen: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn generate() -> anyhow::Result<()> {
    let root = xtask::workspace_root();
    for file in xtask::all()? {
        let path = root.join(&file.path);
        std::fs::write(&path, file.content)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", file.path.display());
    }
    Ok(())
}
