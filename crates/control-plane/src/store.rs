//! The control plane's state in one SQLite file, through sqlx.
//!
//! WAL journal with `synchronous=FULL`: a transaction is fsynced when it commits, and every
//! write below is one transaction that commits before its caller replies. Writes are also
//! serialized by an in-process lock, so a read-modify-write of the working config (an edit of one
//! object) cannot lose a concurrent edit.
//!
//! Configs are stored as text in the proto3 JSON mapping (pbjson), the form the API shows; a
//! release's sha256 is taken over exactly the stored text.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_proto::pb::Config;
use serde::Serialize;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{Mutex, MutexGuard, watch};

use crate::auth::{self, Role};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored config is not valid JSON for the schema: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("release {0} does not exist")]
    NoSuchRelease(u64),
    #[error("node {0:?} is not known: it must open a Watch first")]
    NoSuchNode(String),
    #[error("the working config has no changes since the latest release")]
    NothingToRelease,
}

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
    /// The config, its `version` field set to `version`.
    pub config: Config,
    /// `config` in the proto3 JSON mapping, as stored and hashed.
    pub config_json: String,
}

/// A release without its config, for listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSummary {
    pub version: u64,
    pub note: String,
    pub created_at_ms: i64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
}

impl Release {
    pub fn summary(&self) -> ReleaseSummary {
        ReleaseSummary {
            version: self.version,
            note: self.note.clone(),
            created_at_ms: self.created_at_ms,
            sha256: self.sha256.clone(),
            rollback_of: self.rollback_of,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Edge,
    Gslb,
}

impl NodeKind {
    fn as_str(self) -> &'static str {
        match self {
            NodeKind::Edge => "edge",
            NodeKind::Gslb => "gslb",
        }
    }
}

/// What a node says about itself when it opens a watch.
#[derive(Debug, Clone, PartialEq)]
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
}

pub struct Store {
    pool: SqlitePool,
    writes: Mutex<()>,
    latest: watch::Sender<Option<Arc<Release>>>,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "initial".into(),
        MigrationType::Simple,
        sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/0001_initial.sql")),
        false,
    )])
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
            writes: Mutex::new(()),
            latest: watch::channel(None).0,
        };
        let latest = store.latest_release().await?;
        store.latest.send_replace(latest.map(Arc::new));
        Ok(store)
    }

    /// Closes the pool; the WAL is checkpointed by SQLite when the last connection closes.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The latest release now and after every new one.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Release>>> {
        self.latest.subscribe()
    }

    // --- the working config ---

    pub async fn working_config(&self) -> Result<Config, StoreError> {
        let row = sqlx::query("SELECT config_json FROM working_config WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let text: String = row.try_get("config_json")?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Starts an edit of the working config: other writes wait until it is committed or dropped.
    pub async fn edit(&self) -> Result<Edit<'_>, StoreError> {
        let guard = self.writes.lock().await;
        let config = self.working_config().await?;
        Ok(Edit {
            store: self,
            _guard: guard,
            config,
        })
    }

    // --- releases ---

    /// Makes the working config the next release.
    pub async fn create_release(&self, note: &str) -> Result<Release, StoreError> {
        let _guard = self.writes.lock().await;
        let working = self.working_config().await?;
        let latest = self.latest_release().await?;
        if let Some(latest) = &latest
            && same_content(&latest.config, &working)
        {
            return Err(StoreError::NothingToRelease);
        }
        let version = latest.map_or(1, |r| r.version + 1);
        let mut tx = self.pool.begin().await?;
        let release = insert_release(&mut tx, version, note, working, None).await?;
        tx.commit().await?;
        self.publish(release.clone());
        Ok(release)
    }

    /// A new release with the content of release `of`; the working config becomes that content
    /// too, so nothing is pending afterwards.
    pub async fn rollback(&self, of: u64, note: Option<&str>) -> Result<Release, StoreError> {
        let _guard = self.writes.lock().await;
        let old = self
            .release(of)
            .await?
            .ok_or(StoreError::NoSuchRelease(of))?;
        let latest = self.latest_release().await?.map_or(0, |r| r.version);
        let version = latest + 1;
        let note = match note {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("rollback to version {of}"),
        };
        let mut config = old.config;
        config.version = 0;
        let mut tx = self.pool.begin().await?;
        write_working(&mut tx, &config).await?;
        let release = insert_release(&mut tx, version, &note, config, Some(of)).await?;
        tx.commit().await?;
        self.publish(release.clone());
        Ok(release)
    }

    fn publish(&self, release: Release) {
        self.latest.send_replace(Some(Arc::new(release)));
    }

    pub async fn latest_release(&self) -> Result<Option<Release>, StoreError> {
        let row = sqlx::query(
            "SELECT version, note, created_at_ms, sha256, rollback_of, config_json
             FROM releases ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| release_from_row(&r)).transpose()
    }

    pub async fn release(&self, version: u64) -> Result<Option<Release>, StoreError> {
        let row = sqlx::query(
            "SELECT version, note, created_at_ms, sha256, rollback_of, config_json
             FROM releases WHERE version = ?",
        )
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| release_from_row(&r)).transpose()
    }

    /// Every release, newest first.
    pub async fn releases(&self) -> Result<Vec<ReleaseSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, note, created_at_ms, sha256, rollback_of
             FROM releases ORDER BY version DESC",
        )
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
                })
            })
            .collect()
    }

    // --- tokens ---

    /// Creates a token and returns it; only its hash is kept.
    pub async fn create_token(&self, name: &str, role: Role) -> Result<String, StoreError> {
        let _guard = self.writes.lock().await;
        let token = auth::new_token();
        sqlx::query(
            "INSERT INTO api_tokens (name, role, sha256, created_at_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(auth::token_hash(&token))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// Creates the first admin token if there is no token at all, and returns it.
    pub async fn bootstrap_admin_token(&self) -> Result<Option<String>, StoreError> {
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        if count > 0 {
            return Ok(None);
        }
        Ok(Some(self.create_token("bootstrap", Role::Admin).await?))
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

    /// Records (creating or updating) a node that opened a watch.
    pub async fn node_seen(&self, hello: &NodeHello) -> Result<(), StoreError> {
        let labels: serde_json::Map<String, serde_json::Value> = hello
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let _guard = self.writes.lock().await;
        sqlx::query(
            "INSERT INTO nodes (id, kind, region, labels_json, addresses_json, last_heartbeat_ms)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, region = excluded.region,
               labels_json = excluded.labels_json, addresses_json = excluded.addresses_json,
               last_heartbeat_ms = excluded.last_heartbeat_ms",
        )
        .bind(&hello.id)
        .bind(hello.kind.as_str())
        .bind(&hello.region)
        .bind(serde_json::to_string(&labels)?)
        .bind(serde_json::to_string(&hello.addresses)?)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a node's verdict on a version: applied, or rejected with a reason (the version it
    /// applied before stays recorded as the one it runs).
    pub async fn record_report(
        &self,
        node_id: &str,
        version: u64,
        ok: bool,
        error: &str,
    ) -> Result<(), StoreError> {
        let _guard = self.writes.lock().await;
        let query = if ok {
            sqlx::query(
                "UPDATE nodes SET applied_version = ?, last_error = NULL, rejected_version = NULL,
                   last_heartbeat_ms = ? WHERE id = ?",
            )
        } else {
            sqlx::query(
                "UPDATE nodes SET rejected_version = ?, last_error = ?, last_heartbeat_ms = ?
                 WHERE id = ?",
            )
        };
        let query = query.bind(version as i64);
        let query = if ok { query } else { query.bind(error) };
        let done = query
            .bind(now_ms())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchNode(node_id.to_string()));
        }
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, region, labels_json, addresses_json, last_heartbeat_ms,
                    applied_version, rejected_version, last_error
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
            });
        }
        Ok(out)
    }
}

/// An edit in progress of the working config. Change `config`, check it, then `commit`;
/// dropping it discards the edit.
pub struct Edit<'a> {
    store: &'a Store,
    _guard: MutexGuard<'a, ()>,
    pub config: Config,
}

impl Edit<'_> {
    /// Stores the edited config; it is on disk when this returns.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        // The working config has no version of its own: a release assigns one.
        self.config.version = 0;
        let mut tx = self.store.pool.begin().await?;
        write_working(&mut tx, &self.config).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn write_working(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    config: &Config,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE working_config SET config_json = ?, updated_at_ms = ? WHERE id = 1")
        .bind(config_to_json(config)?)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_release(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    version: u64,
    note: &str,
    mut config: Config,
    rollback_of: Option<u64>,
) -> Result<Release, StoreError> {
    config.version = version;
    let config_json = config_to_json(&config)?;
    let sha256 = auth::sha256_hex(config_json.as_bytes());
    let created_at_ms = now_ms();
    sqlx::query(
        "INSERT INTO releases (version, note, created_at_ms, config_json, sha256, rollback_of)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(version as i64)
    .bind(note)
    .bind(created_at_ms)
    .bind(&config_json)
    .bind(&sha256)
    .bind(rollback_of.map(|v| v as i64))
    .execute(&mut **tx)
    .await?;
    Ok(Release {
        version,
        note: note.to_string(),
        created_at_ms,
        sha256,
        rollback_of,
        config,
        config_json,
    })
}

fn release_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Release, StoreError> {
    let config_json: String = r.try_get("config_json")?;
    Ok(Release {
        version: r.try_get::<i64, _>("version")? as u64,
        note: r.try_get("note")?,
        created_at_ms: r.try_get("created_at_ms")?,
        sha256: r.try_get("sha256")?,
        rollback_of: r
            .try_get::<Option<i64>, _>("rollback_of")?
            .map(|v| v as u64),
        config: serde_json::from_str(&config_json)?,
        config_json,
    })
}

#[cfg(test)]
mod tests;
