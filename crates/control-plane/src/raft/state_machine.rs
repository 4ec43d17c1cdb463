//! openraft's state machine over SQLite: applying an entry changes the replicated tables and
//! records it as applied in the same transaction, so a crash can never apply an entry twice or
//! lose one that was reported applied.
//!
//! A snapshot is the whole replicated state ([`crate::store::dump`]) in JSON, read in one
//! transaction together with the last applied log id it corresponds to. The latest snapshot is
//! kept in `raft_snapshot` for followers that fall behind the purged log.

// openraft's `StorageError` is large and its traits return it; boxing it is not ours to do.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use sqlx::Row;
use tokio::sync::Mutex;

use super::command::Applied;
use super::log_store::{get_meta, put_meta};
use super::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::store::{Store, apply, dump};

#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    writes: Arc<Mutex<()>>,
}

impl StateMachine {
    pub fn new(store: Arc<Store>, writes: Arc<Mutex<()>>) -> StateMachine {
        StateMachine { store, writes }
    }
}

fn sm_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_snapshot(None, &e).into()
}

fn snap_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // A read transaction: in WAL mode it sees one committed state, applied id included.
        let mut tx = self.store.pool.begin().await.map_err(snap_read)?;
        let last_applied: Option<LogId> = get_meta(&mut tx, "last_applied").await?;
        let membership: StoredMembership = get_meta(&mut tx, "last_membership")
            .await?
            .unwrap_or_default();
        let state = dump::dump(&mut tx).await.map_err(snap_read)?;
        tx.commit().await.map_err(snap_read)?;
        let data = serde_json::to_vec(&state).map_err(snap_read)?;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, crate::store::now_ms()),
            None => format!("empty-{}", crate::store::now_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let _w = self.writes.lock().await;
        let mut conn = self.store.pool.acquire().await.map_err(snap_write)?;
        save_snapshot(&mut conn, &meta, &data).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "raft snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Keeps `data` as the current snapshot, replacing the previous one.
async fn save_snapshot(
    conn: &mut sqlx::SqliteConnection,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), StorageError> {
    let meta_json = serde_json::to_string(meta).map_err(snap_write)?;
    sqlx::query(
        "INSERT INTO raft_snapshot (id, meta_json, data) VALUES (1, ?, ?)
         ON CONFLICT (id) DO UPDATE SET meta_json = excluded.meta_json, data = excluded.data",
    )
    .bind(meta_json)
    .bind(data)
    .execute(&mut *conn)
    .await
    .map_err(snap_write)?;
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let mut conn = self.store.pool.acquire().await.map_err(sm_read)?;
        let last_applied = get_meta(&mut conn, "last_applied").await?;
        let membership = get_meta(&mut conn, "last_membership")
            .await?
            .unwrap_or_default();
        Ok((last_applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let _w = self.writes.lock().await;
        let mut tx = self.store.pool.begin().await.map_err(sm_write)?;
        let mut answers = Vec::new();
        let mut notify_watchers = false;
        let mut notify_registry = false;
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            let answer = match entry.payload {
                EntryPayload::Blank => Applied::Done,
                EntryPayload::Normal(command) => {
                    let outcome = apply::apply(&mut tx, command)
                        .await
                        .map_err(|e| StorageError::from(StorageIOError::apply(entry.log_id, &e)))?;
                    notify_watchers |= outcome.notify_watchers;
                    notify_registry |= outcome.notify_registry;
                    outcome.applied
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    put_meta(&mut tx, "last_membership", &stored).await?;
                    Applied::Done
                }
            };
            answers.push(answer);
        }
        if let Some(last) = last {
            put_meta(&mut tx, "last_applied", &last).await?;
        }
        tx.commit().await.map_err(sm_write)?;
        if notify_watchers {
            // Committed already: a failed re-read only delays watchers until the next change.
            if let Err(e) = self.store.republish().await {
                tracing::error!("could not tell watchers about applied entries: {e}");
            }
        }
        if notify_registry && let Err(e) = self.store.republish_registry().await {
            tracing::error!("could not tell GSLB watchers about the node registry: {e}");
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: dump::StateDump = serde_json::from_slice(&data).map_err(snap_read)?;
        let _w = self.writes.lock().await;
        let mut tx = self.store.pool.begin().await.map_err(sm_write)?;
        dump::restore(&mut tx, &state).await.map_err(sm_write)?;
        put_meta(&mut tx, "last_applied", &meta.last_log_id).await?;
        put_meta(&mut tx, "last_membership", &meta.last_membership).await?;
        save_snapshot(&mut tx, meta, &data).await?;
        tx.commit().await.map_err(sm_write)?;
        self.store.republish().await.map_err(sm_read)?;
        self.store.republish_registry().await.map_err(sm_read)?;
        tracing::info!(snapshot = %meta.snapshot_id, "raft snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let row = sqlx::query("SELECT meta_json, data FROM raft_snapshot WHERE id = 1")
            .fetch_optional(&self.store.pool)
            .await
            .map_err(snap_read)?;
        let Some(row) = row else { return Ok(None) };
        let meta_json: String = row.try_get("meta_json").map_err(snap_read)?;
        let data: Vec<u8> = row.try_get("data").map_err(snap_read)?;
        Ok(Some(Snapshot {
            meta: serde_json::from_str(&meta_json).map_err(snap_read)?,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
