//! `ipam-server`: see `ipam-server --help`.

use clap::Parser;
use ipam_server::args::Args;
use tracing_subscriber::EnvFilter;

// glibc's allocator spends a large share of a busy server's time in
// malloc and free across threads (perf, BENCHMARKS.md: 7.0 k against 11.2 k
// pairs/s at concurrency 256).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    ipam_server::server::run(args, ipam_server::server::termination()).await?;
    tracing::info!("stopped");
    Ok(())
}
