//! ipamctl: inspect and repair a Calico-compatible IPAM, through a running
//! ipam-server or straight from its datastore.
//!
//! [`args`] parses the command line into a [`connection::Backend`] (where
//! IPAM state is); [`connection`] opens it and answers every question
//! through ipam-service's facade, in the same types whichever way it goes;
//! [`show`], [`check`], [`release`], [`configure`], [`pool`] (with
//! [`split`] for `pool split`), [`reservation`] and [`node`] are the
//! subcommands ([`all_ips`] lists every allocation for
//! `check --show-all-ips`); [`table`] draws calicoctl's tables byte for
//! byte; [`output`] writes JSON and YAML; [`progress`] draws progress on a
//! terminal; [`liveness`] reads which pods and nodes exist; [`error`]
//! classifies failures into exit codes.
//!
//! Nothing here prints on its own: every command writes to the writer it is
//! given, so that tests read exactly what a user sees.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Write;

pub mod all_ips;
pub mod args;
pub mod check;
pub mod configure;
pub mod connection;
pub mod error;
pub mod liveness;
pub mod node;
pub mod output;
pub mod pool;
pub mod progress;
pub mod release;
pub mod reservation;
pub mod show;
pub mod split;
pub mod table;

pub use args::Cli;
pub use connection::Connection;
pub use error::CliError;

/// Runs one command line.
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let connection = Connection::open(&cli.connection.backend()).await?;
    match &cli.command {
        args::Command::Show(a) => show::run(&connection, a, out).await,
        args::Command::Check(a) => {
            check::run(&connection, a, &cli.connection.liveness_source(), out).await
        }
        args::Command::Release(a) => release::run(&connection, a, out).await,
        args::Command::Configure(a) => configure::run(&connection, a, out).await,
        args::Command::Pool(c) => pool::run(&connection, c, out).await,
        args::Command::Reservation(c) => reservation::run(&connection, c, out).await,
        args::Command::Node(c) => node::run(&connection, c, out).await,
    }
}
