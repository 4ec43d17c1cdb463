//! The whole replicated state as one value: what a Raft snapshot carries.
//!
//! [`dump`] reads every replicated table in the caller's transaction (one consistent view);
//! [`restore`] replaces them all in the caller's transaction.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDump {
    pub working_json: String,
    pub working_revision: i64,
    pub working_updated_at_ms: i64,
    pub releases: Vec<ReleaseRow>,
    pub tokens: Vec<TokenRow>,
    pub nodes: Vec<NodeRow>,
    #[serde(default)]
    pub purges: Vec<PurgeRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeRow {
    pub id: i64,
    pub created_at_ms: i64,
    pub request_json: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRow {
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
}

pub async fn dump(conn: &mut SqliteConnection) -> Result<StateDump, StoreError> {
    let w = sqlx::query("SELECT config_json, revision, updated_at_ms FROM working_config")
        .fetch_one(&mut *conn)
        .await?;
    let releases = sqlx::query(
        "SELECT version, note, created_at_ms, config_json, sha256, rollback_of, staged,
                promoted_at_ms
         FROM releases ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(ReleaseRow {
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
                applied_version, rejected_version, last_error
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
        working_json: w.try_get("config_json")?,
        working_revision: w.try_get("revision")?,
        working_updated_at_ms: w.try_get("updated_at_ms")?,
        releases,
        tokens,
        nodes,
        purges,
    })
}

pub async fn restore(conn: &mut SqliteConnection, state: &StateDump) -> Result<(), StoreError> {
    for table in ["nodes", "api_tokens", "releases", "purges"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "UPDATE working_config SET config_json = ?, revision = ?, updated_at_ms = ? WHERE id = 1",
    )
    .bind(&state.working_json)
    .bind(state.working_revision)
    .bind(state.working_updated_at_ms)
    .execute(&mut *conn)
    .await?;
    // Oldest first: a rollback refers to an earlier version.
    for r in &state.releases {
        sqlx::query(
            "INSERT INTO releases (version, note, created_at_ms, config_json, sha256, rollback_of,
                                   staged, promoted_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
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
                                applied_version, rejected_version, last_error)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    Ok(())
}
