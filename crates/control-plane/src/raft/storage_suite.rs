//! openraft's own storage test suite, run against our SQLite log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};
use crate::store::Store;

/// A fresh store in its own temp dir per test case; the dir is the guard that outlives it.
struct SqliteBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SqliteBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            Store::open(&dir.path().join("cp.db"))
                .await
                .expect("store opens"),
        );
        let writes = Arc::new(tokio::sync::Mutex::new(()));
        let log = LogStore::new(store.pool.clone(), writes.clone());
        let sm = StateMachine::new(store, writes);
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_sqlite() {
    Suite::test_all(SqliteBuilder).expect("every storage test of the suite passes");
}
