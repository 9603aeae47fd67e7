//! Node labels in the embedded store's file: a table `node_labels` of
//! node name → the labels as a JSON object, beside the IPAM objects, so
//! that they survive restarts (and `kill -9`: the write is committed with
//! the store's immediate durability before it returns).
//!
//! Labels change seldom, so a write is its own transaction rather than
//! joining the writer thread's groups; redb runs one write transaction at
//! a time, so it simply waits for the group under way.

use async_trait::async_trait;
use redb::{TableDefinition, TableError};

use super::{EmbeddedStore, Inner};
use crate::error::StoreError;
use crate::node_labels::{Labels, NodeLabelStore};

/// Node name → the node's labels as JSON.
const NODE_LABELS: TableDefinition<&str, &[u8]> = TableDefinition::new("node_labels");

impl Inner {
    fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        let txn = self.begin_read()?;
        let table = match txn.open_table(NODE_LABELS) {
            Ok(table) => table,
            // A file no label was ever written to.
            Err(TableError::TableDoesNotExist(_)) => return Ok(Labels::new()),
            Err(e) => return Err(self.failed("opening table node_labels", e)),
        };
        let Some(json) = table
            .get(node)
            .map_err(|e| self.failed("reading node_labels", e))?
        else {
            return Ok(Labels::new());
        };
        serde_json::from_slice(json.value())
            .map_err(|e| self.invalid(&format!("node_labels/{node}"), e.to_string()))
    }

    fn set_node_labels(&self, node: &str, labels: &Labels) -> Result<(), StoreError> {
        let json = serde_json::to_vec(labels).expect("labels serialise");
        let txn = self.begin_write()?;
        {
            let mut table = txn
                .open_table(NODE_LABELS)
                .map_err(|e| self.failed("opening table node_labels", e))?;
            let written = if labels.is_empty() {
                table.remove(node).map(|_| ())
            } else {
                table.insert(node, json.as_slice()).map(|_| ())
            };
            written.map_err(|e| self.failed("writing node_labels", e))?;
        }
        self.commit(txn)
    }
}

#[async_trait]
impl NodeLabelStore for EmbeddedStore {
    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        let node = node.to_string();
        self.blocking(move |inner| inner.node_labels(&node)).await
    }

    async fn set_node_labels(&self, node: &str, labels: &Labels) -> Result<(), StoreError> {
        let (node, labels) = (node.to_string(), labels.clone());
        self.blocking(move |inner| inner.set_node_labels(&node, &labels))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn node_labels_survive_a_reopen_and_an_empty_set_forgets_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let zone: Labels = [("zone".to_string(), "a".to_string())].into();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(store.node_labels("n1").await.unwrap(), Labels::new());
            store.set_node_labels("n1", &zone).await.unwrap();
            store.set_node_labels("n2", &zone).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.node_labels("n1").await.unwrap(), zone);
        store.set_node_labels("n2", &Labels::new()).await.unwrap();
        assert_eq!(store.node_labels("n2").await.unwrap(), Labels::new());
        assert_eq!(store.node_labels("n1").await.unwrap(), zone, "only n2");
    }
}
