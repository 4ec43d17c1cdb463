//! The control plane's state in one SQLite file, through sqlx.
//!
//! WAL journal with `synchronous=FULL`: a transaction is fsynced when it commits, and every
//! write below is one transaction that commits before its caller replies. Writes are also
//! serialized by an in-process lock, so a read-modify-write of the working config (an edit of one
//! object) cannot lose a concurrent edit.
//!
//! Configs are stored as text in the proto3 JSON mapping (pbjson), the form the API shows; a
//! release's sha256 is taken over exactly the stored text.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_proto::controlplane::v1::{self as cp, Purge};
use outpost_proto::pb::Config;
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::watch;

use crate::auth::{self, Role};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored config is not valid JSON for the schema: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("partition {0:?} does not exist")]
    NoSuchPartition(String),
}

/// The partition of nodes without a `partition` label, and of API calls that name none.
pub const DEFAULT_PARTITION: &str = "default";

/// One immutable version of the whole config.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub version: u64,
    pub note: String,
    pub created_at_ms: i64,
    /// Hex sha256 of `config_json`.
    pub sha256: String,
    /// The version this release copied, when it is a rollback.
    pub rollback_of: Option<u64>,
    /// Sent to nodes labelled `staging` only, until promoted.
    pub staged: bool,
    pub promoted_at_ms: Option<i64>,
    /// The config, its `version` field set to `version`.
    pub config: Config,
    /// `config` in the proto3 JSON mapping, as stored and hashed.
    pub config_json: String,
}

/// A release without its config, for listings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSummary {
    pub version: u64,
    pub note: String,
    pub created_at_ms: i64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    pub staged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted_at_ms: Option<i64>,
}

impl Release {
    pub fn summary(&self) -> ReleaseSummary {
        ReleaseSummary {
            version: self.version,
            note: self.note.clone(),
            created_at_ms: self.created_at_ms,
            sha256: self.sha256.clone(),
            rollback_of: self.rollback_of,
            staged: self.staged,
            promoted_at_ms: self.promoted_at_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Edge,
    Gslb,
}

impl NodeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NodeKind::Edge => "edge",
            NodeKind::Gslb => "gslb",
        }
    }
}

/// What a node says about itself when it opens a watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHello {
    pub id: String,
    pub kind: NodeKind,
    pub region: String,
    pub labels: Vec<(String, String)>,
    pub addresses: Vec<String>,
}

/// A node as the control plane last heard from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    pub region: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub addresses: Vec<String>,
    /// Last time the node opened a watch or reported, Unix milliseconds.
    pub last_heartbeat_ms: i64,
    pub applied_version: Option<u64>,
    pub rejected_version: Option<u64>,
    pub last_error: Option<String>,
    /// Taken out of GSLB answers by an operator.
    pub drained: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
}

/// Reads of the replicated state. Writes are log entries applied by
/// [`crate::raft::state_machine`], which shares this pool.
pub struct Store {
    pub(crate) pool: SqlitePool,
    /// Per partition, what its nodes run (created on first use, so a watch can wait for a
    /// partition that has no release yet).
    targets: std::sync::Mutex<HashMap<String, Targets>>,
    /// The id of the newest purge (0: none yet).
    purges: watch::Sender<u64>,
    /// Every edge node that advertises an address, for GSLB watchers.
    registry: watch::Sender<Arc<Vec<cp::RegisteredNode>>>,
}

type ReleaseTx = watch::Sender<Option<Arc<Release>>>;

#[derive(Default)]
struct Targets {
    /// The newest release: what nodes labelled `staging` run.
    latest: ReleaseTx,
    /// The newest release that is not staged, or was promoted: what every other node runs.
    general: ReleaseTx,
}

/// A partition as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    pub name: String,
    pub created_at_ms: i64,
    pub latest_version: Option<u64>,
}

/// The columns [`release_from_row`] reads.
pub(crate) const RELEASE_COLUMNS: &str =
    "version, note, created_at_ms, sha256, rollback_of, config_json, staged, promoted_at_ms";

/// A purge as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeInfo {
    pub id: u64,
    pub created_at_ms: i64,
    pub request: serde_json::Value,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "initial".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0001_initial.sql")),
            false,
        ),
        Migration::new(
            2,
            "raft".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0002_raft.sql")),
            false,
        ),
        Migration::new(
            3,
            "staging and purges".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0003_staging_purges.sql")),
            false,
        ),
        Migration::new(
            4,
            "cluster_ca".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0004_cluster_ca.sql")),
            false,
        ),
        Migration::new(
            5,
            "partitions".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0005_partitions.sql")),
            false,
        ),
        Migration::new(
            6,
            "node drain".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0006_node_drain.sql")),
            false,
        ),
    ])
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The text form a config is stored and hashed in.
pub fn config_to_json(config: &Config) -> Result<String, StoreError> {
    Ok(serde_json::to_string(config)?)
}

/// The two configs say the same thing, whatever their `version`.
pub fn same_content(a: &Config, b: &Config) -> bool {
    let mut a = a.clone();
    a.version = 0;
    let mut b = b.clone();
    b.version = 0;
    a == b
}

impl Store {
    /// Opens (creating on first use) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        let store = Store {
            pool,
            targets: Default::default(),
            purges: watch::channel(0).0,
            registry: watch::channel(Arc::new(Vec::new())).0,
        };
        store.republish().await?;
        store.republish_registry().await?;
        Ok(store)
    }

    /// Closes the pool; the WAL is checkpointed by SQLite when the last connection closes.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn with_targets<T>(&self, partition: &str, f: impl FnOnce(&Targets) -> T) -> T {
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(partition.to_string()).or_default())
    }

    /// A partition's latest release now and after every new one (staged ones included).
    pub fn subscribe(&self, partition: &str) -> watch::Receiver<Option<Arc<Release>>> {
        self.with_targets(partition, |t| t.latest.subscribe())
    }

    /// The release a partition's nodes not labelled `staging` run, now and after every change.
    pub fn subscribe_general(&self, partition: &str) -> watch::Receiver<Option<Arc<Release>>> {
        self.with_targets(partition, |t| t.general.subscribe())
    }

    /// The edge nodes GSLB servers may answer with (all partitions), now and after each change.
    pub fn subscribe_registry(&self) -> watch::Receiver<Arc<Vec<cp::RegisteredNode>>> {
        self.registry.subscribe()
    }

    /// Re-reads the node registry and tells GSLB watchers when it changed.
    pub(crate) async fn republish_registry(&self) -> Result<(), StoreError> {
        let registry: Vec<cp::RegisteredNode> = self
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.kind == NodeKind::Edge && !n.addresses.is_empty())
            .map(|n| cp::RegisteredNode {
                id: n.id,
                region: n.region,
                labels: n
                    .labels
                    .into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect(),
                addresses: n.addresses,
                drained: n.drained,
                applied_version: n.applied_version.unwrap_or(0),
            })
            .collect();
        self.registry
            .send_if_modified(|r| (**r != registry).then(|| *r = Arc::new(registry)).is_some());
        Ok(())
    }

    /// The newest purge's id, now and after every new purge.
    pub fn subscribe_purges(&self) -> watch::Receiver<u64> {
        self.purges.subscribe()
    }

    // --- the working config ---

    pub async fn working_config(&self, partition: &str) -> Result<Config, StoreError> {
        Ok(self.working(partition).await?.0)
    }

    /// A partition's working config and its revision (the number of edits applied to it).
    pub async fn working(&self, partition: &str) -> Result<(Config, u64), StoreError> {
        let row =
            sqlx::query("SELECT config_json, revision FROM working_config WHERE partition = ?")
                .bind(partition)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NoSuchPartition(partition.to_string()))?;
        let text: String = row.try_get("config_json")?;
        let revision: i64 = row.try_get("revision")?;
        Ok((serde_json::from_str(&text)?, revision as u64))
    }

    // --- partitions ---

    pub async fn partitions(&self) -> Result<Vec<PartitionInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.name, p.created_at_ms, MAX(r.version) AS latest
             FROM partitions p LEFT JOIN releases r ON r.partition = p.name
             GROUP BY p.name ORDER BY p.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PartitionInfo {
                    name: r.try_get("name")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    latest_version: r.try_get::<Option<i64>, _>("latest")?.map(|v| v as u64),
                })
            })
            .collect()
    }

    pub async fn partition_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM partitions WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    // --- releases ---

    /// Re-reads the release targets and the newest purge and tells watchers (after applied
    /// entries or a snapshot changed the tables). Unchanged values wake no one.
    pub(crate) async fn republish(&self) -> Result<(), StoreError> {
        let mut names: Vec<String> = self
            .partitions()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        // Partitions deleted meanwhile: their watchers are told there is nothing to run.
        names.extend(
            self.targets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        names.sort();
        names.dedup();
        for name in names {
            let latest = self.latest_release(&name).await?;
            let general = self.general_release(&name).await?;
            let same = |a: &Option<Arc<Release>>, b: &Option<Release>| {
                a.as_ref()
                    .map(|r| (r.version, r.promoted_at_ms, r.sha256.clone()))
                    == b.as_ref()
                        .map(|r| (r.version, r.promoted_at_ms, r.sha256.clone()))
            };
            self.with_targets(&name, |t| {
                if !same(&t.latest.borrow(), &latest) {
                    t.latest.send_replace(latest.map(Arc::new));
                }
                if !same(&t.general.borrow(), &general) {
                    t.general.send_replace(general.map(Arc::new));
                }
            });
        }
        let purge = self.last_purge_id().await?;
        self.purges
            .send_if_modified(|id| std::mem::replace(id, purge) != purge);
        Ok(())
    }

    pub async fn latest_release(&self, partition: &str) -> Result<Option<Release>, StoreError> {
        self.release_where(partition, "1 = 1").await
    }

    /// The newest release that is not staged, or was promoted.
    pub async fn general_release(&self, partition: &str) -> Result<Option<Release>, StoreError> {
        self.release_where(partition, "(staged = 0 OR promoted_at_ms IS NOT NULL)")
            .await
    }

    async fn release_where(
        &self,
        partition: &str,
        condition: &str,
    ) -> Result<Option<Release>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE partition = ? AND {condition}
             ORDER BY version DESC LIMIT 1"
        )))
        .bind(partition)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| release_from_row(&r)).transpose()
    }

    pub async fn release(
        &self,
        partition: &str,
        version: u64,
    ) -> Result<Option<Release>, StoreError> {
        self.release_where(partition, &format!("version = {version}"))
            .await
    }

    /// A partition's releases, newest first.
    pub async fn releases(&self, partition: &str) -> Result<Vec<ReleaseSummary>, StoreError> {
        if !self.partition_exists(partition).await? {
            return Err(StoreError::NoSuchPartition(partition.to_string()));
        }
        let rows = sqlx::query(
            "SELECT version, note, created_at_ms, sha256, rollback_of, staged, promoted_at_ms
             FROM releases WHERE partition = ? ORDER BY version DESC",
        )
        .bind(partition)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReleaseSummary {
                    version: r.try_get::<i64, _>("version")? as u64,
                    note: r.try_get("note")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    sha256: r.try_get("sha256")?,
                    rollback_of: r
                        .try_get::<Option<i64>, _>("rollback_of")?
                        .map(|v| v as u64),
                    staged: r.try_get("staged")?,
                    promoted_at_ms: r.try_get("promoted_at_ms")?,
                })
            })
            .collect()
    }

    // --- purges ---

    pub async fn last_purge_id(&self) -> Result<u64, StoreError> {
        let id: Option<i64> = sqlx::query("SELECT MAX(id) AS id FROM purges")
            .fetch_one(&self.pool)
            .await?
            .try_get("id")?;
        Ok(id.unwrap_or(0) as u64)
    }

    /// The purges after `id`, oldest first, and whether all of them are still kept (`false`:
    /// some purges after `id` were dropped as old).
    pub async fn purges_after(&self, id: u64) -> Result<(Vec<Purge>, bool), StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_at_ms, request_json FROM purges WHERE id > ? ORDER BY id",
        )
        .bind(id as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let text: String = r.try_get("request_json")?;
            let mut p = outpost_proto::purge::parse_request(text.as_bytes())
                .map_err(|e| StoreError::Corrupt(serde::de::Error::custom(e)))?;
            p.id = r.try_get::<i64, _>("id")? as u64;
            p.created_at_ms = r.try_get("created_at_ms")?;
            out.push(p);
        }
        let complete = out.first().is_none_or(|p| p.id == id + 1);
        Ok((out, complete))
    }

    /// The newest purges, newest first.
    pub async fn purges(&self, limit: u32) -> Result<Vec<PurgeInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_at_ms, request_json FROM purges ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(PurgeInfo {
                id: r.try_get::<i64, _>("id")? as u64,
                created_at_ms: r.try_get("created_at_ms")?,
                request: serde_json::from_str(&r.try_get::<String, _>("request_json")?)?,
            });
        }
        Ok(out)
    }

    // --- tokens ---

    pub async fn has_tokens(&self) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(count > 0)
    }

    /// The role of a presented token, if it is one of ours.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Role>, StoreError> {
        let row = sqlx::query("SELECT role FROM api_tokens WHERE sha256 = ?")
            .bind(auth::token_hash(token))
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Role::parse(&r.try_get::<String, _>("role")?)),
        }
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query("SELECT id, name, role, created_at_ms FROM api_tokens ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let role: String = r.try_get("role")?;
            out.push(TokenInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
                created_at_ms: r.try_get("created_at_ms")?,
            });
        }
        Ok(out)
    }

    // --- nodes ---

    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, region, labels_json, addresses_json, last_heartbeat_ms,
                    applied_version, rejected_version, last_error, drained
             FROM nodes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get("kind")?;
            out.push(Node {
                id: r.try_get("id")?,
                kind: if kind == "gslb" {
                    NodeKind::Gslb
                } else {
                    NodeKind::Edge
                },
                region: r.try_get("region")?,
                labels: serde_json::from_str(&r.try_get::<String, _>("labels_json")?)?,
                addresses: serde_json::from_str(&r.try_get::<String, _>("addresses_json")?)?,
                last_heartbeat_ms: r.try_get("last_heartbeat_ms")?,
                applied_version: r
                    .try_get::<Option<i64>, _>("applied_version")?
                    .map(|v| v as u64),
                rejected_version: r
                    .try_get::<Option<i64>, _>("rejected_version")?
                    .map(|v| v as u64),
                last_error: r.try_get("last_error")?,
                drained: r.try_get("drained")?,
            });
        }
        Ok(out)
    }
}

pub(crate) fn release_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Release, StoreError> {
    let config_json: String = r.try_get("config_json")?;
    Ok(Release {
        version: r.try_get::<i64, _>("version")? as u64,
        note: r.try_get("note")?,
        created_at_ms: r.try_get("created_at_ms")?,
        sha256: r.try_get("sha256")?,
        rollback_of: r
            .try_get::<Option<i64>, _>("rollback_of")?
            .map(|v| v as u64),
        staged: r.try_get("staged")?,
        promoted_at_ms: r.try_get("promoted_at_ms")?,
        config: serde_json::from_str(&config_json)?,
        config_json,
    })
}

pub(crate) mod apply;
pub(crate) mod cluster_ca;
pub(crate) mod dump;

#[cfg(test)]
mod tests;
