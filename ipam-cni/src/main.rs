//! The `calico-ipam` binary: reads stdin, runs the plugin, prints the
//! result or the error object on stdout, exits 0 or 1.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "-v" || a == "--version")
    {
        let _ = writeln!(std::io::stdout(), "{}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::new();
    // A runtime always pipes the config in; a person at a terminal gets
    // the missing-CNI_COMMAND error instead of a silent wait.
    if !std::io::stdin().is_terminal() {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let outcome = ipam_cni::run(|name| std::env::var(name).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(Some(result)) => {
            let _ = write!(stdout, "{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(code = error.code, details = %error.details, "{}", error.msg);
            let _ = write!(stdout, "{}", error.to_json(ipam_cni::error_version(&stdin)));
            ExitCode::FAILURE
        }
    }
}
