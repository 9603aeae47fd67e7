//! Writes `ipam-server/openapi.json` from the API's code; a test fails
//! while the checked-in file differs.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    std::fs::write(&path, ipam_server::openapi::openapi_json())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
