//! `ipamctl pool split N --cidr C | --name P`: calicoctl's `ipam split`
//! (calicoctl/commands/ipam/split.go, Calico 3.32) with its rules and its
//! output, byte for byte. It needs no `calicoctl datastore migrate lock`:
//! the split is atomic against concurrent allocations (ipam-store's
//! `engine/split.rs` says how), and running one that was cut short again
//! finishes it.

use std::io::Write;

use clap::Args;
use ipam_api::{SplitBody, SplitResponse};
use ipnet::IpNet;

use crate::connection::Connection;
use crate::error::CliError;

/// `ipamctl pool split`.
#[derive(Debug, Clone, Args)]
pub struct PoolSplitArgs {
    /// How many equal child pools: 2, 4, 8, ... (each at least one block).
    #[arg(value_name = "NUMBER", value_parser = parse_parts)]
    pub parts: u32,
    /// CIDR of the IP pool to split.
    #[arg(long)]
    pub cidr: Option<IpNet>,
    /// Name of the IP pool to split.
    #[arg(long)]
    pub name: Option<String>,
}

/// calicoctl reads the number with Atoi and says so when it cannot
/// (split.go: "error reading number to split IP pools into").
fn parse_parts(text: &str) -> Result<u32, String> {
    text.parse().map_err(|e| {
        format!("error reading number to split IP pools into. {text} is not a valid number: {e}")
    })
}

/// Runs `ipamctl pool split`.
pub async fn run(
    connection: &Connection,
    args: &PoolSplitArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let body = SplitBody {
        parts: args.parts,
        name: args.name.clone(),
        cidr: args.cidr,
    };
    // Refused before anything is sent, in the flags' words.
    body.target()
        .map_err(|e| CliError::Usage(e.to_string().replace("name, cidr:", "--name, --cidr:")))?;
    let split = connection.split_pool(&body).await?;
    out.write_all(report(&split).as_bytes())
        .map_err(CliError::io("writing to stdout"))
}

/// What calicoctl prints after a split (split.go, the `fmt.Printf` calls
/// at its end), byte for byte: its first sentence and its last have no
/// newline after them.
pub fn report(split: &SplitResponse) -> String {
    let mut text = format!(
        "IP Pool {} was successfully split into {} smaller pools.",
        split.parent.name,
        split.children.len()
    );
    for child in &split.children {
        text.push_str(&format!(
            "Created {} with CIDR {}.\n",
            child.name, child.spec.cidr
        ));
    }
    text.push_str("Please refer to the documentation for final steps.");
    text
}
