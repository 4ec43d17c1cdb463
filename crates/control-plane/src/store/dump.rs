//! The whole replicated state as one value: what a Raft snapshot carries.
//!
//! [`dump`] reads every replicated table in the caller's transaction (one consistent view);
//! [`restore`] replaces them all in the caller's transaction.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::{DEFAULT_PARTITION, StoreError};

fn default_partition() -> String {
    DEFAULT_PARTITION.to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDump {
    #[serde(default)]
    pub partitions: Vec<PartitionRow>,
    #[serde(default)]
    pub working: Vec<WorkingRow>,
    /// Snapshots made before partitions had one working config, for `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_revision: Option<i64>,
    pub releases: Vec<ReleaseRow>,
    pub tokens: Vec<TokenRow>,
    pub nodes: Vec<NodeRow>,
    #[serde(default)]
    pub purges: Vec<PurgeRow>,
    /// The cluster CA and join tokens (absent from snapshots made before they existed).
    #[serde(default)]
    pub pki: super::cluster_ca::PkiDump,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeRow {
    pub id: i64,
    pub created_at_ms: i64,
    pub request_json: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionRow {
    pub name: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkingRow {
    pub partition: String,
    pub config_json: String,
    pub revision: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRow {
    #[serde(default = "default_partition")]
    pub partition: String,
    pub version: i64,
    pub note: String,
    pub created_at_ms: i64,
    pub config_json: String,
    pub sha256: String,
    pub rollback_of: Option<i64>,
    #[serde(default)]
    pub staged: bool,
    #[serde(default)]
    pub promoted_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub sha256: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub id: String,
    pub kind: String,
    pub region: String,
    pub labels_json: String,
    pub addresses_json: String,
    pub last_heartbeat_ms: i64,
    pub applied_version: Option<i64>,
    pub rejected_version: Option<i64>,
    pub last_error: Option<String>,
    /// Missing from snapshots made before draining existed.
    #[serde(default)]
    pub drained: bool,
}

pub async fn dump(conn: &mut SqliteConnection) -> Result<StateDump, StoreError> {
    let partitions = sqlx::query("SELECT name, created_at_ms FROM partitions ORDER BY name")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(PartitionRow {
                name: r.try_get("name")?,
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let working = sqlx::query(
        "SELECT partition, config_json, revision, updated_at_ms FROM working_config
         ORDER BY partition",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(WorkingRow {
            partition: r.try_get("partition")?,
            config_json: r.try_get("config_json")?,
            revision: r.try_get("revision")?,
            updated_at_ms: r.try_get("updated_at_ms")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let releases = sqlx::query(
        "SELECT partition, version, note, created_at_ms, config_json, sha256, rollback_of,
                staged, promoted_at_ms
         FROM releases ORDER BY partition, version",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(ReleaseRow {
            partition: r.try_get("partition")?,
            version: r.try_get("version")?,
            note: r.try_get("note")?,
            created_at_ms: r.try_get("created_at_ms")?,
            config_json: r.try_get("config_json")?,
            sha256: r.try_get("sha256")?,
            rollback_of: r.try_get("rollback_of")?,
            staged: r.try_get("staged")?,
            promoted_at_ms: r.try_get("promoted_at_ms")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let tokens =
        sqlx::query("SELECT id, name, role, sha256, created_at_ms FROM api_tokens ORDER BY id")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| {
                Ok(TokenRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    role: r.try_get("role")?,
                    sha256: r.try_get("sha256")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
    let nodes = sqlx::query(
        "SELECT id, kind, region, labels_json, addresses_json, last_heartbeat_ms,
                applied_version, rejected_version, last_error, drained
         FROM nodes ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(NodeRow {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            region: r.try_get("region")?,
            labels_json: r.try_get("labels_json")?,
            addresses_json: r.try_get("addresses_json")?,
            last_heartbeat_ms: r.try_get("last_heartbeat_ms")?,
            applied_version: r.try_get("applied_version")?,
            rejected_version: r.try_get("rejected_version")?,
            last_error: r.try_get("last_error")?,
            drained: r.try_get("drained")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let purges = sqlx::query("SELECT id, created_at_ms, request_json FROM purges ORDER BY id")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(PurgeRow {
                id: r.try_get("id")?,
                created_at_ms: r.try_get("created_at_ms")?,
                request_json: r.try_get("request_json")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(StateDump {
        partitions,
        working,
        working_json: None,
        working_revision: None,
        releases,
        tokens,
        nodes,
        purges,
        pki: super::cluster_ca::dump(conn).await?,
    })
}

pub async fn restore(conn: &mut SqliteConnection, state: &StateDump) -> Result<(), StoreError> {
    for table in [
        "nodes",
        "api_tokens",
        "releases",
        "purges",
        "working_config",
        "partitions",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *conn)
            .await?;
    }
    let mut state = state.clone();
    if state.partitions.is_empty() {
        state.partitions.push(PartitionRow {
            name: DEFAULT_PARTITION.into(),
            created_at_ms: 0,
        });
    }
    if state.working.is_empty() {
        state.working.push(WorkingRow {
            partition: DEFAULT_PARTITION.into(),
            config_json: state.working_json.clone().unwrap_or_else(|| "{}".into()),
            revision: state.working_revision.unwrap_or(0),
            updated_at_ms: 0,
        });
    }
    for p in &state.partitions {
        sqlx::query("INSERT INTO partitions (name, created_at_ms) VALUES (?, ?)")
            .bind(&p.name)
            .bind(p.created_at_ms)
            .execute(&mut *conn)
            .await?;
    }
    for w in &state.working {
        sqlx::query(
            "INSERT INTO working_config (partition, config_json, revision, updated_at_ms)
             VALUES (?, ?, ?, ?)",
        )
        .bind(&w.partition)
        .bind(&w.config_json)
        .bind(w.revision)
        .bind(w.updated_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    // Oldest first: a rollback refers to an earlier version.
    for r in &state.releases {
        sqlx::query(
            "INSERT INTO releases (partition, version, note, created_at_ms, config_json, sha256,
                                   rollback_of, staged, promoted_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.partition)
        .bind(r.version)
        .bind(&r.note)
        .bind(r.created_at_ms)
        .bind(&r.config_json)
        .bind(&r.sha256)
        .bind(r.rollback_of)
        .bind(r.staged)
        .bind(r.promoted_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    for t in &state.tokens {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, sha256, created_at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.sha256)
        .bind(t.created_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    for n in &state.nodes {
        sqlx::query(
            "INSERT INTO nodes (id, kind, region, labels_json, addresses_json, last_heartbeat_ms,
                                applied_version, rejected_version, last_error, drained)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&n.id)
        .bind(&n.kind)
        .bind(&n.region)
        .bind(&n.labels_json)
        .bind(&n.addresses_json)
        .bind(n.last_heartbeat_ms)
        .bind(n.applied_version)
        .bind(n.rejected_version)
        .bind(&n.last_error)
        .bind(n.drained)
        .execute(&mut *conn)
        .await?;
    }
    for p in &state.purges {
        sqlx::query("INSERT INTO purges (id, created_at_ms, request_json) VALUES (?, ?, ?)")
            .bind(p.id)
            .bind(p.created_at_ms)
            .bind(&p.request_json)
            .execute(&mut *conn)
            .await?;
    }
    super::cluster_ca::restore(conn, &state.pki).await
}
