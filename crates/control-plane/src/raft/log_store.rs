//! openraft's log storage over SQLite: entries in `raft_log`, the vote, the committed id and
//! the purge point in `raft_meta`.
//!
//! Every call is one transaction, fsynced at commit (WAL, `synchronous=FULL`): `append` reports
//! the entries flushed only after its commit returns, so a vote or an entry openraft counts on
//! is on disk.

// openraft's `StorageError` is large and its traits return it; boxing it is not ours to do.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The log of one node. Clones share the pool and the write lock.
#[derive(Clone)]
pub struct LogStore {
    pool: SqlitePool,
    /// Serializes this node's writers (log and state machine) so a transaction never waits on
    /// SQLite's busy handler.
    writes: Arc<Mutex<()>>,
}

impl LogStore {
    pub fn new(pool: SqlitePool, writes: Arc<Mutex<()>>) -> LogStore {
        LogStore { pool, writes }
    }
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

/// A value of `raft_meta`, or `None` when it was never written.
pub(crate) async fn get_meta<T: DeserializeOwned>(
    conn: &mut SqliteConnection,
    key: &str,
) -> Result<Option<T>, StorageError> {
    let row = sqlx::query("SELECT value_json FROM raft_meta WHERE key = ?")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(read_err)?;
    match row {
        None => Ok(None),
        Some(r) => {
            let text: String = r.try_get("value_json").map_err(read_err)?;
            serde_json::from_str(&text).map(Some).map_err(read_err)
        }
    }
}

pub(crate) async fn put_meta<T: Serialize>(
    conn: &mut SqliteConnection,
    key: &str,
    value: &T,
) -> Result<(), StorageError> {
    let text = serde_json::to_string(value).map_err(write_err)?;
    sqlx::query(
        "INSERT INTO raft_meta (key, value_json) VALUES (?, ?)
         ON CONFLICT (key) DO UPDATE SET value_json = excluded.value_json",
    )
    .bind(key)
    .bind(text)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

fn index_bounds<RB: RangeBounds<u64>>(range: &RB) -> (i64, i64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s as i64,
        Bound::Excluded(&s) => s as i64 + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.min(i64::MAX as u64) as i64,
        Bound::Excluded(&e) => e as i64 - 1,
        Bound::Unbounded => i64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = index_bounds(&range);
        let rows = sqlx::query(
            "SELECT entry_json FROM raft_log WHERE log_index >= ? AND log_index <= ?
             ORDER BY log_index",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await
        .map_err(read_err)?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("entry_json").map_err(read_err)?;
                serde_json::from_str(&text).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mut conn = self.pool.acquire().await.map_err(read_err)?;
        let last_purged: Option<LogId> = get_meta(&mut conn, "last_purged").await?;
        let row = sqlx::query("SELECT entry_json FROM raft_log ORDER BY log_index DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(read_err)?;
        let last = match row {
            Some(r) => {
                let text: String = r.try_get("entry_json").map_err(read_err)?;
                let entry: Entry = serde_json::from_str(&text).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let _w = self.writes.lock().await;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        put_meta(&mut conn, "vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StorageIOError::read_vote(&e))?;
        get_meta(&mut conn, "vote").await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let _w = self.writes.lock().await;
        let mut conn = self.pool.acquire().await.map_err(write_err)?;
        put_meta(&mut conn, "committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let mut conn = self.pool.acquire().await.map_err(read_err)?;
        Ok(get_meta::<Option<LogId>>(&mut conn, "committed")
            .await?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let _w = self.writes.lock().await;
        let mut tx = self.pool.begin().await.map_err(write_err)?;
        for entry in entries {
            let text = serde_json::to_string(&entry).map_err(write_err)?;
            sqlx::query("INSERT OR REPLACE INTO raft_log (log_index, entry_json) VALUES (?, ?)")
                .bind(entry.log_id.index as i64)
                .bind(text)
                .execute(&mut *tx)
                .await
                .map_err(write_err)?;
        }
        tx.commit().await.map_err(write_err)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let _w = self.writes.lock().await;
        sqlx::query("DELETE FROM raft_log WHERE log_index >= ?")
            .bind(log_id.index as i64)
            .execute(&self.pool)
            .await
            .map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let _w = self.writes.lock().await;
        let mut tx = self.pool.begin().await.map_err(write_err)?;
        // The purge point first, in the same transaction: a crash never leaves a gap unnoted.
        put_meta(&mut tx, "last_purged", &log_id).await?;
        sqlx::query("DELETE FROM raft_log WHERE log_index <= ?")
            .bind(log_id.index as i64)
            .execute(&mut *tx)
            .await
            .map_err(write_err)?;
        tx.commit().await.map_err(write_err)?;
        Ok(())
    }
}
