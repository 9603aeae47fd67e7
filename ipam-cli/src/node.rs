//! `ipamctl node label NODE KEY=VALUE... KEY-...` and `ipamctl node labels
//! NODE`: the labels pools' `nodeSelector` is matched against, where the
//! IPAM keeps them (the embedded store; ipam-server's memory store). The
//! changes are written as kubectl's `label` takes them: `KEY=VALUE` sets,
//! `KEY-` removes. On Kubernetes and etcd a node's labels belong to its
//! Node object and the IPAM refuses the change, naming the command that
//! makes it (`kubectl label node`, `calicoctl label nodes`); `node labels`
//! shows them on every datastore.
//!
//! A change reads the labels, applies the edits and writes them all back:
//! two operators labelling one node at the same instant may lose one
//! edit, as with any read-modify-write without a lock; labels are an
//! operator's setting, not a hot path.

use std::collections::BTreeMap;
use std::io::Write;

use ipam_api::labels::{check_labels, NodeLabelsResponse};
use ipam_api::names::check_node;
use ipam_core::NodeName;

use crate::args::{Format, NodeCommand};
use crate::connection::Connection;
use crate::error::CliError;
use crate::output::emit;

/// One edit of a `node label` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelEdit {
    /// `KEY=VALUE`.
    Set(String, String),
    /// `KEY-`.
    Remove(String),
}

impl std::str::FromStr for LabelEdit {
    type Err = String;

    fn from_str(text: &str) -> Result<LabelEdit, String> {
        if let Some((key, value)) = text.split_once('=') {
            return Ok(LabelEdit::Set(key.to_string(), value.to_string()));
        }
        match text.strip_suffix('-') {
            Some(key) if !key.is_empty() => Ok(LabelEdit::Remove(key.to_string())),
            _ => Err(format!(
                "{text:?} is neither KEY=VALUE (set a label) nor KEY- (remove one)"
            )),
        }
    }
}

/// `labels` with `edits` applied in order.
pub fn apply(
    mut labels: BTreeMap<String, String>,
    edits: &[LabelEdit],
) -> BTreeMap<String, String> {
    for edit in edits {
        match edit {
            LabelEdit::Set(key, value) => {
                labels.insert(key.clone(), value.clone());
            }
            LabelEdit::Remove(key) => {
                labels.remove(key);
            }
        }
    }
    labels
}

/// Runs `ipamctl node ...`.
pub async fn run(
    connection: &Connection,
    command: &NodeCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        NodeCommand::Labels { node, output } => {
            check_node("node", node).map_err(|e| CliError::Usage(e.to_string()))?;
            let labels = connection
                .node_labels(&NodeName::new(node.as_str()))
                .await?;
            match output {
                Format::Table => out
                    .write_all(listing(&labels).as_bytes())
                    .map_err(CliError::io("writing to stdout")),
                format => emit(out, *format, &labels),
            }
        }
        NodeCommand::Label { node, edits } => {
            check_node("node", node).map_err(|e| CliError::Usage(e.to_string()))?;
            let node = NodeName::new(node.as_str());
            let current = connection.node_labels(&node).await?;
            let labels = apply(current.labels, edits);
            check_labels("labels", &labels).map_err(|e| CliError::Usage(e.to_string()))?;
            let stored = connection.set_node_labels(&node, labels).await?;
            out.write_all(format!("Labelled node {node}.\n{}", listing(&stored)).as_bytes())
                .map_err(CliError::io("writing to stdout"))
        }
    }
}

/// One `KEY=VALUE` line per label, in key order.
fn listing(labels: &NodeLabelsResponse) -> String {
    labels
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_kubectls_key_value_and_key_dash() {
        let edits: Vec<LabelEdit> = ["zone=a", "rack-", "empty=", "url=a=b"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(
            edits,
            [
                LabelEdit::Set("zone".into(), "a".into()),
                LabelEdit::Remove("rack".into()),
                LabelEdit::Set("empty".into(), String::new()),
                LabelEdit::Set("url".into(), "a=b".into()),
            ]
        );
        assert!("zone".parse::<LabelEdit>().is_err());
        assert!("-".parse::<LabelEdit>().is_err());
        let before = BTreeMap::from([
            ("rack".to_string(), "r1".to_string()),
            ("zone".to_string(), "b".to_string()),
        ]);
        assert_eq!(
            apply(before, &edits),
            BTreeMap::from([
                ("empty".to_string(), String::new()),
                ("url".to_string(), "a=b".to_string()),
                ("zone".to_string(), "a".to_string()),
            ])
        );
    }
}
