//! Applying one command to the tables, inside the transaction of the log entry that carries it.
//!
//! Only [`crate::raft::state_machine`] calls this, in log order, so the same commands give the
//! same tables on every node. Nothing here reads the clock or a random source: the command
//! carries what it needs.

use outpost_proto::pb::Config;
use sqlx::{Row, SqliteConnection};

use super::{RELEASE_COLUMNS, Release, StoreError, config_to_json, release_from_row, same_content};
use crate::auth;
use crate::raft::{Applied, Command, Refusal};

/// What applying a command did: the answer for the proposer, and whether watchers must be told
/// (a release, a promotion or a purge) once the transaction commits.
pub struct Outcome {
    pub applied: Applied,
    pub notify_watchers: bool,
}

impl From<Applied> for Outcome {
    fn from(applied: Applied) -> Self {
        Outcome {
            applied,
            notify_watchers: false,
        }
    }
}

/// How many purges are kept for nodes that reconnect.
const PURGES_KEPT: i64 = 1000;

pub async fn apply(conn: &mut SqliteConnection, command: Command) -> Result<Outcome, StoreError> {
    match command {
        Command::SetWorking {
            base_revision,
            config_json,
            at_ms,
        } => set_working(conn, base_revision, &config_json, at_ms).await,
        Command::Release {
            note,
            staged,
            at_ms,
        } => release(conn, &note, staged, at_ms).await,
        Command::Promote { version, at_ms } => promote(conn, version, at_ms).await,
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
            })
        }
        Command::Rollback { of, note, at_ms } => rollback(conn, of, &note, at_ms).await,
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
            Ok(Applied::Done.into())
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
            Ok(Applied::Done.into())
        }
    }
}

async fn working(conn: &mut SqliteConnection) -> Result<(Config, u64), StoreError> {
    let row = sqlx::query("SELECT config_json, revision FROM working_config WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let text: String = row.try_get("config_json")?;
    Ok((
        serde_json::from_str(&text)?,
        row.try_get::<i64, _>("revision")? as u64,
    ))
}

async fn write_working(
    conn: &mut SqliteConnection,
    config: &Config,
    revision: u64,
    at_ms: i64,
) -> Result<(), StoreError> {
    let mut config = config.clone();
    // The working config has no version of its own: a release assigns one.
    config.version = 0;
    sqlx::query(
        "UPDATE working_config SET config_json = ?, revision = ?, updated_at_ms = ? WHERE id = 1",
    )
    .bind(config_to_json(&config)?)
    .bind(revision as i64)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_working(
    conn: &mut SqliteConnection,
    base_revision: u64,
    config_json: &str,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let (_, current) = working(conn).await?;
    if current != base_revision {
        return Ok(Applied::Refused(Refusal::Conflict { current }).into());
    }
    // Proposers validate first; a command that still does not parse changes nothing rather
    // than stopping the state machine.
    let Ok(config) = serde_json::from_str::<Config>(config_json) else {
        return Ok(Applied::Refused(Refusal::BadConfig).into());
    };
    write_working(conn, &config, current + 1, at_ms).await?;
    Ok(Applied::Revision(current + 1).into())
}

async fn release_where(
    conn: &mut SqliteConnection,
    condition: &str,
) -> Result<Option<Release>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RELEASE_COLUMNS} FROM releases WHERE {condition} ORDER BY version DESC LIMIT 1"
    )))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| release_from_row(&r)).transpose()
}

async fn latest_release(conn: &mut SqliteConnection) -> Result<Option<Release>, StoreError> {
    release_where(conn, "1 = 1").await
}

async fn promote(
    conn: &mut SqliteConnection,
    version: u64,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let Some(r) = release_where(conn, &format!("version = {version}")).await? else {
        return Ok(Applied::Refused(Refusal::NoSuchRelease(version)).into());
    };
    if !r.staged || r.promoted_at_ms.is_some() {
        return Ok(Applied::Refused(Refusal::NotStaged(version)).into());
    }
    let general = release_where(conn, "staged = 0 OR promoted_at_ms IS NOT NULL").await?;
    if let Some(g) = general
        && g.version > version
    {
        return Ok(Applied::Refused(Refusal::OlderThanGeneral {
            version,
            general: g.version,
        })
        .into());
    }
    sqlx::query("UPDATE releases SET promoted_at_ms = ? WHERE version = ?")
        .bind(at_ms)
        .bind(version as i64)
        .execute(&mut *conn)
        .await?;
    let mut summary = r.summary();
    summary.promoted_at_ms = Some(at_ms);
    Ok(Outcome {
        applied: Applied::Release(summary),
        notify_watchers: true,
    })
}

async fn release(
    conn: &mut SqliteConnection,
    note: &str,
    staged: bool,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let (working, _) = working(conn).await?;
    let latest = latest_release(conn).await?;
    if let Some(latest) = &latest
        && same_content(&latest.config, &working)
    {
        return Ok(Applied::Refused(Refusal::NothingToRelease).into());
    }
    let version = latest.map_or(1, |r| r.version + 1);
    let release = insert_release(conn, version, note, working, None, staged, at_ms).await?;
    Ok(Outcome {
        applied: Applied::Release(release.summary()),
        notify_watchers: true,
    })
}

async fn rollback(
    conn: &mut SqliteConnection,
    of: u64,
    note: &str,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let Some(old) = release_where(conn, &format!("version = {of}")).await? else {
        return Ok(Applied::Refused(Refusal::NoSuchRelease(of)).into());
    };
    let version = latest_release(conn).await?.map_or(0, |r| r.version) + 1;
    let note = if note.is_empty() {
        format!("rollback to version {of}")
    } else {
        note.to_string()
    };
    let (_, revision) = working(conn).await?;
    write_working(conn, &old.config, revision + 1, at_ms).await?;
    let mut config = old.config;
    config.version = 0;
    let release = insert_release(conn, version, &note, config, Some(of), false, at_ms).await?;
    Ok(Outcome {
        applied: Applied::Release(release.summary()),
        notify_watchers: true,
    })
}

async fn insert_release(
    conn: &mut SqliteConnection,
    version: u64,
    note: &str,
    mut config: Config,
    rollback_of: Option<u64>,
    staged: bool,
    created_at_ms: i64,
) -> Result<Release, StoreError> {
    config.version = version;
    let config_json = config_to_json(&config)?;
    let sha256 = auth::sha256_hex(config_json.as_bytes());
    sqlx::query(
        "INSERT INTO releases (version, note, created_at_ms, config_json, sha256, rollback_of,
                               staged)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(version as i64)
    .bind(note)
    .bind(created_at_ms)
    .bind(&config_json)
    .bind(&sha256)
    .bind(rollback_of.map(|v| v as i64))
    .bind(staged)
    .execute(&mut *conn)
    .await?;
    Ok(Release {
        version,
        note: note.to_string(),
        created_at_ms,
        sha256,
        rollback_of,
        staged,
        promoted_at_ms: None,
        config,
        config_json,
    })
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
