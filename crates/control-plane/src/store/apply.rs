//! Applying one command to the tables, inside the transaction of the log entry that carries it.
//!
//! Only [`crate::raft::state_machine`] calls this, in log order, so the same commands give the
//! same tables on every node. Nothing here reads the clock or a random source: the command
//! carries what it needs.

use sqlx::{Row, SqliteConnection};

use super::{StoreError, cluster_ca};
use crate::auth;
use crate::raft::{Applied, Command, Refusal};

mod releases;

/// What applying a command did: the answer for the proposer, and whether watchers must be told
/// (a release, a promotion or a purge; a change to the node registry) once the transaction
/// commits.
pub struct Outcome {
    pub applied: Applied,
    pub notify_watchers: bool,
    pub notify_registry: bool,
}

impl Outcome {
    fn registry_changed(applied: Applied) -> Outcome {
        Outcome {
            applied,
            notify_watchers: false,
            notify_registry: true,
        }
    }
}

impl From<Applied> for Outcome {
    fn from(applied: Applied) -> Self {
        Outcome {
            applied,
            notify_watchers: false,
            notify_registry: false,
        }
    }
}

/// How many purges are kept for nodes that reconnect.
const PURGES_KEPT: i64 = 1000;

pub async fn apply(conn: &mut SqliteConnection, command: Command) -> Result<Outcome, StoreError> {
    match command {
        Command::SetWorking {
            partition,
            base_revision,
            config_json,
            at_ms,
        } => releases::set_working(conn, &partition, base_revision, &config_json, at_ms).await,
        Command::Release {
            partition,
            note,
            staged,
            at_ms,
        } => releases::release(conn, &partition, &note, staged, at_ms).await,
        Command::Promote {
            partition,
            version,
            at_ms,
        } => releases::promote(conn, &partition, version, at_ms).await,
        Command::CreatePartition { name, at_ms } => {
            releases::create_partition(conn, &name, at_ms).await
        }
        Command::DeletePartition { name } => releases::delete_partition(conn, &name).await,
        Command::Purge {
            request_json,
            at_ms,
        } => {
            let last: Option<i64> = sqlx::query("SELECT MAX(id) AS id FROM purges")
                .fetch_one(&mut *conn)
                .await?
                .try_get("id")?;
            let id = last.unwrap_or(0) + 1;
            sqlx::query("INSERT INTO purges (id, created_at_ms, request_json) VALUES (?, ?, ?)")
                .bind(id)
                .bind(at_ms)
                .bind(&request_json)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM purges WHERE id <= ?")
                .bind(id - PURGES_KEPT)
                .execute(&mut *conn)
                .await?;
            Ok(Outcome {
                applied: Applied::Purge(id as u64),
                notify_watchers: true,
                notify_registry: false,
            })
        }
        Command::Rollback {
            partition,
            of,
            note,
            at_ms,
        } => releases::rollback(conn, &partition, of, &note, at_ms).await,
        Command::CreateToken {
            name,
            role,
            sha256,
            at_ms,
        } => insert_token(conn, &name, role, &sha256, at_ms).await,
        Command::BootstrapToken { sha256, at_ms } => {
            let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
                .fetch_one(&mut *conn)
                .await?
                .try_get("n")?;
            if count > 0 {
                return Ok(Applied::Refused(Refusal::TokensExist).into());
            }
            insert_token(conn, "bootstrap", auth::Role::Admin, &sha256, at_ms).await
        }
        Command::NodeSeen { hello, at_ms } => {
            let labels: serde_json::Map<String, serde_json::Value> = hello
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
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
            .bind(at_ms)
            .execute(&mut *conn)
            .await?;
            Ok(Outcome::registry_changed(Applied::Done))
        }
        Command::NodeDrain { node_id, drained } => {
            let done = sqlx::query("UPDATE nodes SET drained = ? WHERE id = ?")
                .bind(drained)
                .bind(&node_id)
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                return Ok(Applied::Refused(Refusal::NoSuchNode(node_id)).into());
            }
            Ok(Outcome::registry_changed(Applied::Done))
        }
        Command::NodeReport {
            node_id,
            version,
            ok,
            error,
            at_ms,
        } => {
            // A rejection leaves the applied version as it was: the node still runs it.
            let done = if ok {
                sqlx::query(
                    "UPDATE nodes SET applied_version = ?, last_error = NULL,
                       rejected_version = NULL, last_heartbeat_ms = ? WHERE id = ?",
                )
                .bind(version as i64)
                .bind(at_ms)
                .bind(&node_id)
                .execute(&mut *conn)
                .await?
            } else {
                sqlx::query(
                    "UPDATE nodes SET rejected_version = ?, last_error = ?, last_heartbeat_ms = ?
                     WHERE id = ?",
                )
                .bind(version as i64)
                .bind(&error)
                .bind(at_ms)
                .bind(&node_id)
                .execute(&mut *conn)
                .await?
            };
            if done.rows_affected() == 0 {
                return Ok(Applied::Refused(Refusal::NoSuchNode(node_id)).into());
            }
            Ok(Outcome::registry_changed(Applied::Done))
        }
        Command::SetClusterCa {
            cert_pem,
            key_pem,
            at_ms,
        } => cluster_ca::set_ca(conn, &cert_pem, &key_pem, at_ms).await,
        Command::CreateJoinToken {
            sha256,
            role,
            expires_at_ms,
            at_ms,
        } => cluster_ca::insert_join_token(conn, &sha256, role, expires_at_ms, at_ms).await,
    }
}

async fn insert_token(
    conn: &mut SqliteConnection,
    name: &str,
    role: auth::Role,
    sha256: &str,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let taken = sqlx::query("SELECT 1 FROM api_tokens WHERE sha256 = ?")
        .bind(sha256)
        .fetch_optional(&mut *conn)
        .await?;
    if taken.is_some() {
        return Ok(Applied::Refused(Refusal::DuplicateToken).into());
    }
    let done = sqlx::query(
        "INSERT INTO api_tokens (name, role, sha256, created_at_ms) VALUES (?, ?, ?, ?)",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(sha256)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Applied::Token(done.last_insert_rowid()).into())
}
