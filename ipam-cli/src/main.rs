//! `ipamctl`: see `ipamctl --help`.

use std::process::ExitCode;

use clap::Parser;
use ipam_cli::error::exit;

fn main() -> ExitCode {
    // Usage errors exit with clap's code 2 here, as `exit::USAGE` says.
    let cli = ipam_cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(exit::FAILURE as u8);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(ipam_cli::run(&cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code() as u8)
        }
    }
}
