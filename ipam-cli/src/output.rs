//! JSON and YAML output for scripts: the same values the tables show, in
//! the schema of ipam-server's API.

use std::io::Write;

use serde::Serialize;

use crate::args::Format;
use crate::error::CliError;

/// Writes `value` as pretty JSON or as YAML, ending in a newline. A table
/// is not this function's to draw: `Format::Table` writes JSON.
pub fn emit<T: Serialize>(out: &mut dyn Write, format: Format, value: &T) -> Result<(), CliError> {
    let text = match format {
        Format::Yaml => serde_saphyr::to_string(value)
            .map_err(|e| CliError::Refused(format!("writing YAML: {e}")))?,
        Format::Json | Format::Table => {
            let mut text = serde_json::to_string_pretty(value)
                .map_err(|e| CliError::Refused(format!("writing JSON: {e}")))?;
            text.push('\n');
            text
        }
    };
    out.write_all(text.as_bytes())
        .map_err(CliError::io("writing to stdout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        in_use: u128,
        name: &'static str,
    }

    #[test]
    fn json_and_yaml_carry_the_same_fields_and_end_in_a_newline() {
        let value = Sample {
            in_use: 1 << 100,
            name: "p",
        };
        let mut json = Vec::new();
        emit(&mut json, Format::Json, &value).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\n  \"inUse\": 1267650600228229401496703205376,\n  \"name\": \"p\"\n}\n"
        );
        let mut yaml = Vec::new();
        emit(&mut yaml, Format::Yaml, &value).unwrap();
        assert_eq!(
            String::from_utf8(yaml).unwrap(),
            "inUse: 1267650600228229401496703205376\nname: p\n"
        );
    }
}
