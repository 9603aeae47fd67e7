//! Batches on etcd: one transaction with one comparison per write (the
//! key's create revision 0 for a create, its mod revision for an update or
//! a delete, as the single writes compare) and every put and delete in its
//! success branch, so that all are applied at one revision or none is. The
//! failure branch reads every key of the batch, so that a refused batch
//! names the write whose comparison failed, and why, in the same round
//! trip.

use async_trait::async_trait;

use super::rpc::compare::{CompareTarget, TargetUnion};
use super::rpc::request_op::Request;
use super::rpc::response_op::Response;
use super::rpc::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use super::{committed, compare, keys, mod_revision, values, EtcdStore};
use crate::datastore::{distinct_keys, AtomicWrites, BatchError, BatchWrite};
use crate::error::StoreError;
use crate::model::Revision;

/// etcd's default limit on the operations of one transaction.
const MAX_TXN_OPS: usize = 128;

#[async_trait]
impl AtomicWrites for EtcdStore {
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError> {
        distinct_keys(writes)?;
        let mut txn = TxnRequest::default();
        for (index, write) in writes.iter().enumerate() {
            let key = write.key();
            let path = keys::path(&key).map_err(BatchError::Store)?;
            let (target, then) = match write {
                BatchWrite::Create(value) => {
                    let bytes = values::encode(&path, value, None).map_err(BatchError::Store)?;
                    (
                        (CompareTarget::Create, TargetUnion::CreateRevision(0)),
                        Request::RequestPut(PutRequest {
                            key: path.as_bytes().to_vec(),
                            value: bytes,
                        }),
                    )
                }
                BatchWrite::Update(value, revision) => {
                    let expected = mod_revision(&key, revision).map_err(BatchError::Store)?;
                    let stored = if values::has_metadata(key.kind()) {
                        // As a single update does: carry the stored v3
                        // metadata forward (pools and reservations only,
                        // which the engine never batches).
                        let refused = |cause| BatchError::Refused { index, cause };
                        let kv = self
                            .read(&path)
                            .await
                            .map_err(BatchError::Store)?
                            .ok_or_else(|| refused(StoreError::NotFound { key: key.clone() }))?;
                        if kv.mod_revision != expected {
                            return Err(refused(StoreError::Conflict { key }));
                        }
                        Some(kv.value)
                    } else {
                        None
                    };
                    let bytes = values::encode(&path, value, stored.as_deref())
                        .map_err(BatchError::Store)?;
                    (
                        (CompareTarget::Mod, TargetUnion::ModRevision(expected)),
                        Request::RequestPut(PutRequest {
                            key: path.as_bytes().to_vec(),
                            value: bytes,
                        }),
                    )
                }
                BatchWrite::Delete(_, revision) => {
                    let expected = mod_revision(&key, revision).map_err(BatchError::Store)?;
                    (
                        (CompareTarget::Mod, TargetUnion::ModRevision(expected)),
                        Request::RequestDeleteRange(DeleteRangeRequest {
                            key: path.as_bytes().to_vec(),
                            ..DeleteRangeRequest::default()
                        }),
                    )
                }
            };
            txn.compare.push(compare(&path, target.0, target.1));
            txn.success.push(RequestOp {
                request: Some(then),
            });
            txn.failure.push(RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: path.as_bytes().to_vec(),
                    ..RangeRequest::default()
                })),
            });
        }
        let what = format!("write a batch of {}", writes.len());
        let response = self.transact(&what, txn).await.map_err(BatchError::Store)?;
        if response.succeeded {
            let revision = committed(&what, &response).map_err(BatchError::Store)?;
            return Ok(writes
                .iter()
                .map(|write| match write {
                    BatchWrite::Delete(..) => None,
                    BatchWrite::Create(_) | BatchWrite::Update(..) => Some(revision.clone()),
                })
                .collect());
        }
        // The failure branch read every key, at the revision the
        // comparisons saw: the first write whose condition does not hold is
        // the one that failed.
        for (index, (write, op)) in writes.iter().zip(&response.responses).enumerate() {
            let Some(Response::ResponseRange(range)) = &op.response else {
                continue;
            };
            let key = write.key();
            let current = range.kvs.first().map(|kv| kv.mod_revision);
            let cause = match (write, current) {
                (BatchWrite::Create(_), Some(_)) => StoreError::AlreadyExists { key },
                (BatchWrite::Create(_), None) => continue,
                (BatchWrite::Update(..) | BatchWrite::Delete(..), None) => {
                    StoreError::NotFound { key }
                }
                (BatchWrite::Update(_, revision) | BatchWrite::Delete(_, revision), Some(n)) => {
                    if Ok(n) == mod_revision(&key, revision) {
                        continue;
                    }
                    StoreError::Conflict { key }
                }
            };
            return Err(BatchError::Refused { index, cause });
        }
        Err(BatchError::Store(values::invalid(
            &what,
            "etcd refused the batch, yet every key it read meets its condition".into(),
        )))
    }

    /// etcd's `--max-txn-ops`, 128 unless its operator raised it
    /// (`DefaultMaxTxnOps`, server/embed/config.go): each write of a batch
    /// is one comparison, one operation of the success branch and one of
    /// the failure branch, and etcd counts each list against the limit.
    fn max_writes(&self) -> usize {
        MAX_TXN_OPS
    }
}
