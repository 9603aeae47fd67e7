//! `ipamctl reservation create|list|get|delete`: Calico's IPReservations,
//! the addresses automatic assignment never hands out (a gateway, a
//! range kept for something else). Each `--cidr` is checked as it is
//! parsed, by Calico's rule (a CIDR, host bits allowed, or a bare
//! address: ipam-api's [`parse_reserved`]), so a typo is named with its
//! flag before anything is sent; the rest of the rules (a name, no range
//! twice) are checked where the reservation is made, in either mode.

use std::io::Write;

use clap::{Args, Subcommand};
use ipam_api::reservations::parse_reserved;
use ipam_api::{ReservationBody, ReservationSpecBody};

use crate::args::Format;
use crate::connection::Connection;
use crate::error::CliError;
use crate::output::emit;
use crate::table::Table;

/// `ipamctl reservation ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ReservationCommand {
    /// List the IP reservations.
    List {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show one IP reservation.
    Get {
        /// The reservation's name.
        name: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Reserve addresses: automatic assignment hands none of them out
    /// (addresses in use stay in use).
    Create(ReservationCreateArgs),
    /// Delete an IP reservation: its addresses may be handed out again.
    Delete {
        /// The reservation's name.
        name: String,
    },
}

/// `ipamctl reservation create`.
#[derive(Debug, Clone, Args)]
pub struct ReservationCreateArgs {
    /// The reservation's name.
    pub name: String,
    /// A CIDR or an address to reserve (repeat for more); 10.0.0.5/24
    /// reserves all of 10.0.0.0/24, as in Calico.
    #[arg(long = "cidr", value_name = "CIDR", required = true, value_parser = reserved_entry)]
    pub cidrs: Vec<String>,
}

/// A `--cidr` value, kept as given once it parses.
fn reserved_entry(text: &str) -> Result<String, String> {
    match parse_reserved(text) {
        Some(_) => Ok(text.to_string()),
        None => Err("neither a CIDR nor an IP address (10.0.0.0/24, 10.0.0.1, fd00::1)".into()),
    }
}

/// Runs `ipamctl reservation ...`.
pub async fn run(
    connection: &Connection,
    command: &ReservationCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let text = match command {
        ReservationCommand::List { output } => {
            let all = connection.reservations().await?;
            return show(out, *output, &all, &all);
        }
        ReservationCommand::Get { name, output } => {
            let one = connection.reservation(name).await?;
            return show(out, *output, std::slice::from_ref(&one), &one);
        }
        ReservationCommand::Create(args) => {
            let body = ReservationBody {
                name: args.name.clone(),
                spec: ReservationSpecBody {
                    reserved_cidrs: args.cidrs.clone(),
                },
            };
            let stored = connection.create_reservation(body).await?;
            format!(
                "Created IP reservation {} ({}).\n",
                stored.name,
                stored.spec.reserved_cidrs.join(", ")
            )
        }
        ReservationCommand::Delete { name } => {
            connection.delete_reservation(name).await?;
            format!("Deleted IP reservation {name}.\n")
        }
    };
    out.write_all(text.as_bytes())
        .map_err(CliError::io("writing to stdout"))
}

/// `rows` as the table, or `value` as JSON or YAML.
fn show<T: serde::Serialize>(
    out: &mut dyn Write,
    format: Format,
    rows: &[ReservationBody],
    value: &T,
) -> Result<(), CliError> {
    match format {
        Format::Table => out
            .write_all(list_table(rows).as_bytes())
            .map_err(CliError::io("writing to stdout")),
        format => emit(out, format, value),
    }
}

/// Reservations as a table: calicoctl's columns for IPReservations
/// (`calicoctl get ipreservations -o wide`: NAME, CIDRS; calicoctl/
/// resourcemgr/ipreservation.go) in ipamctl's table, the entries joined
/// with ", " so that a long list wraps within its column.
pub fn list_table(reservations: &[ReservationBody]) -> String {
    let mut table = Table::new(&["NAME", "CIDRS"]);
    for reservation in reservations {
        table.push(vec![
            reservation.name.clone(),
            reservation.spec.reserved_cidrs.join(", "),
        ]);
    }
    table.render()
}

impl Connection {
    /// Every IP reservation, by name.
    pub async fn reservations(&self) -> Result<Vec<ReservationBody>, CliError> {
        self.service()
            .reservations()
            .await
            .map_err(|e| self.error(e))
    }

    /// One IP reservation; a missing one is not found.
    pub async fn reservation(&self, name: &str) -> Result<ReservationBody, CliError> {
        self.service()
            .reservation(name)
            .await
            .map_err(|e| self.error(e))?
            .ok_or_else(|| {
                CliError::NotFound(format!(
                    "no IP reservation named {name:?} (`ipamctl reservation list` shows them)"
                ))
            })
    }

    /// Creates an IP reservation: what was stored.
    pub async fn create_reservation(
        &self,
        body: ReservationBody,
    ) -> Result<ReservationBody, CliError> {
        self.service()
            .create_reservation(body)
            .await
            .map_err(|e| self.error(e))
    }

    /// Deletes an IP reservation.
    pub async fn delete_reservation(&self, name: &str) -> Result<(), CliError> {
        self.service()
            .delete_reservation(name)
            .await
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cidr_flag_takes_what_calico_takes() {
        for good in [
            "10.0.0.0/24",
            "10.0.0.5/24",
            "10.0.0.1",
            "fd00::1",
            "fd00::/64",
        ] {
            assert_eq!(reserved_entry(good).as_deref(), Ok(good));
        }
        for bad in ["10.0.0.300", "10.0.0.0/33", "gateway", ""] {
            assert!(reserved_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_list_wraps_long_entry_lists_within_their_column() {
        let body = |name: &str, cidrs: &[&str]| ReservationBody {
            name: name.into(),
            spec: ReservationSpecBody {
                reserved_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            },
        };
        let table = list_table(&[
            body("gateways", &["10.0.0.1/32", "10.0.1.1/32", "10.0.2.1/32"]),
            body("v6", &["fd00::/120"]),
        ]);
        assert_eq!(
            table,
            "+----------+--------------------------------+\n\
             |   NAME   |             CIDRS              |\n\
             +----------+--------------------------------+\n\
             | gateways | 10.0.0.1/32, 10.0.1.1/32,      |\n\
             |          | 10.0.2.1/32                    |\n\
             | v6       | fd00::/120                     |\n\
             +----------+--------------------------------+\n"
        );
    }
}
