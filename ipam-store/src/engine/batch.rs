//! A plan's handles and blocks written as one atomic batch, on a store that
//! offers [`AtomicWrites`]: one durable commit where the ordered path makes
//! one per object, with nothing in between to crash in (see the engine's
//! documentation for why both paths are leak-safe).
//!
//! The claims of new blocks are written before, as on the ordered path: a
//! block is claimed completely before any handle counts an address in it.
//! A batch whose block write is refused wrote nothing and is reported as
//! the ordered path reports a first block write that failed, so the retry
//! loop re-reads the block and plans again. A batch whose handle write is
//! refused (the handle was created or changed meanwhile) reads the handle
//! again and leaves the attempt to the ordered path, whose handle rules (a
//! repeated request, never below zero) then apply. A store failure is
//! handed on as the ordered path hands on a failed write; it is never taken
//! to mean that nothing was written.

use std::collections::HashMap;

use ipam_core::plan::{BlockWrite, HandleChange};
use ipam_core::{BlockCidr, Handle, HandleName, Write};

use super::writes::write_key;
use super::Ipam;
use crate::datastore::{AtomicWrites, BatchError, BatchWrite, Datastore};
use crate::error::StoreError;
use crate::model::{Key, Revision, Value};

/// How a batch ended.
pub(super) enum Batched {
    /// Everything was written, and the cache and revisions record it.
    Written,
    /// Nothing was written: a block had moved on. The cause names it.
    BlockRefused(StoreError),
    /// Nothing was written: a handle had moved on (`created` when the
    /// batch tried to create it). The handle was read again.
    HandleRefused { cause: StoreError, created: bool },
    /// The store failed, or a handle could not be read again; when
    /// unavailable, the batch may have been applied in full.
    Failed(StoreError),
    /// The plan cannot be one batch (a write with no revision to name, one
    /// object twice, more writes than the store takes at once): nothing was
    /// sent; write it in order.
    Unbatched,
}

// A write that names no revision: what it replaces was never read, so it
// cannot be checked (the ordered path fails it as a conflict).
struct NoRevision;

// One write of a batch, and what the batch knows of it.
struct Planned {
    write: BatchWrite,
    handle: bool,
}

fn batch_write(write: Write, revision: Option<&Revision>) -> Option<BatchWrite> {
    let key = write_key(&write);
    Some(match write {
        Write::CreateAffinity(a) => BatchWrite::Create(Value::Affinity(a)),
        Write::CreateBlock(b) => BatchWrite::Create(Value::Block(b)),
        Write::CreateHandle(h) => BatchWrite::Create(Value::Handle(h)),
        Write::UpdateAffinity(a) => BatchWrite::Update(Value::Affinity(a), revision?.clone()),
        Write::UpdateBlock(b) => BatchWrite::Update(Value::Block(b), revision?.clone()),
        Write::UpdateHandle(h) => BatchWrite::Update(Value::Handle(h), revision?.clone()),
        Write::DeleteAffinity(_) | Write::DeleteBlock(_) | Write::DeleteHandle(_) => {
            BatchWrite::Delete(key, revision?.clone())
        }
    })
}

// Adds the block writes to a batch, each naming the revision in
// `expected` that it was planned from.
fn push_blocks(
    planned: &mut Vec<Planned>,
    blocks: &[BlockWrite],
    expected: &HashMap<Key, Revision>,
) -> Result<(), NoRevision> {
    for block in blocks {
        let write = block.clone().into_write();
        let revision = expected.get(&write_key(&write));
        planned.push(Planned {
            write: batch_write(write, revision).ok_or(NoRevision)?,
            handle: false,
        });
    }
    Ok(())
}

// A handle's count change as a batch write over `current`, the handle
// with its revision (`None`: absent), as adjust_handle computes it; `None`
// when there is nothing to write.
fn adjusted(change: &HandleChange, current: Option<(Handle, Revision)>) -> Option<Planned> {
    let (handle, revision) = current.unzip();
    let write = change.write_over(handle.as_ref())?;
    // An update or a deletion over `current` always has its revision.
    let write = batch_write(write, revision.as_ref())?;
    Some(Planned {
        write,
        handle: true,
    })
}

impl<S: Datastore + ?Sized> Ipam<S> {
    /// The store's batches, when it has them.
    pub(super) fn batches(&self) -> Option<&dyn AtomicWrites> {
        self.store.atomic_writes()
    }

    /// Writes an assignment's handle gains and its blocks as one batch,
    /// handles first (the order of the ordered path, for wrappers that
    /// watch it). `gains` are the handles' counts in `blocks`.
    pub(super) async fn write_assigned_together(
        &self,
        atomic: &dyn AtomicWrites,
        gains: &[(HandleName, Vec<(BlockCidr, i64)>)],
        blocks: &[BlockWrite],
        expected: &mut HashMap<Key, Revision>,
    ) -> Batched {
        let mut planned = Vec::with_capacity(gains.len() + blocks.len());
        for (id, deltas) in gains {
            let change = HandleChange::Adjust {
                id: id.clone(),
                deltas: deltas.clone(),
            };
            planned.extend(adjusted(&change, self.cached_handle(id)));
        }
        if push_blocks(&mut planned, blocks, expected).is_err() {
            return Batched::Unbatched;
        }
        self.write_batch(atomic, planned, expected).await
    }

    /// Writes a release's blocks and the handle changes that follow them as
    /// one batch, blocks first (the order of the ordered path). `changes`
    /// are the handles' losses in `blocks`, the handles deleted as a
    /// whole, and (a lane's releases and assignments planned together) the
    /// gains of handles created; a deleted handle names the revision in
    /// `expected`, as on the ordered path.
    pub(super) async fn write_released_together(
        &self,
        atomic: &dyn AtomicWrites,
        blocks: &[BlockWrite],
        changes: &[HandleChange],
        expected: &mut HashMap<Key, Revision>,
    ) -> Batched {
        let mut planned = Vec::with_capacity(blocks.len() + changes.len());
        if push_blocks(&mut planned, blocks, expected).is_err() {
            return Batched::Unbatched;
        }
        for change in changes {
            match change {
                HandleChange::Adjust { id, deltas } => {
                    let losing = deltas.iter().any(|(_, delta)| *delta < 0);
                    let current = match self.handle_to_change(id, losing).await {
                        Ok(current) => current,
                        Err(e) => return Batched::Failed(e),
                    };
                    planned.extend(adjusted(change, current));
                }
                // Deleted as the plan saw it, whatever the cache says now:
                // gone or changed since, the batch is refused.
                HandleChange::Delete(id) => {
                    let key = Key::Handle(id.to_string());
                    let Some(revision) = expected.get(&key) else {
                        return Batched::Unbatched;
                    };
                    planned.push(Planned {
                        write: BatchWrite::Delete(key, revision.clone()),
                        handle: true,
                    });
                }
            }
        }
        self.write_batch(atomic, planned, expected).await
    }

    // Sends a batch and records what it wrote, in `expected` and the cache.
    async fn write_batch(
        &self,
        atomic: &dyn AtomicWrites,
        planned: Vec<Planned>,
        expected: &mut HashMap<Key, Revision>,
    ) -> Batched {
        if planned.is_empty() {
            return Batched::Written;
        }
        let writes: Vec<BatchWrite> = planned.iter().map(|p| p.write.clone()).collect();
        // A batch naming one object twice the store refuses, unsent
        // (`DuplicateKey`, below): not checked here as well.
        if writes.len() > atomic.max_writes() {
            return Batched::Unbatched;
        }
        match atomic.write_all(&writes).await {
            Ok(revisions) => {
                let mut cache = self.cache();
                for (write, revision) in writes.into_iter().zip(revisions) {
                    match (write, revision) {
                        (BatchWrite::Create(value) | BatchWrite::Update(value, _), Some(rev)) => {
                            expected.insert(value.key(), rev.clone());
                            cache.put(value, rev);
                        }
                        // A delete; or a write the store answered without
                        // a revision, against its contract: forgotten, so
                        // that the next use reads it.
                        (write, _) => {
                            let key = write.key();
                            expected.remove(&key);
                            cache.remove(&key);
                        }
                    }
                }
                Batched::Written
            }
            Err(BatchError::Refused { index, cause }) => match planned.get(index) {
                Some(Planned {
                    write,
                    handle: true,
                }) => {
                    let created = matches!(write, BatchWrite::Create(_));
                    match self.reload(&write.key()).await {
                        Ok(()) => Batched::HandleRefused { cause, created },
                        Err(e) => Batched::Failed(e),
                    }
                }
                _ => Batched::BlockRefused(cause),
            },
            Err(BatchError::DuplicateKey { .. }) => Batched::Unbatched,
            Err(BatchError::Store(e)) => Batched::Failed(e),
        }
    }
}
