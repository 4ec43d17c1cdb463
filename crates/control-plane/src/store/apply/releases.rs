//! How commands change a partition's working config and its releases.

use outpost_proto::pb::Config;
use sqlx::{Row, SqliteConnection};

use super::Outcome;
use crate::auth;
use crate::raft::{Applied, Refusal};
use crate::store::{
    RELEASE_COLUMNS, Release, StoreError, config_to_json, release_from_row, same_content,
};

/// A new partition, with an empty working config.
pub(super) async fn create_partition(
    conn: &mut SqliteConnection,
    name: &str,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    if working(conn, name).await?.is_some() {
        return Ok(Applied::Refused(Refusal::PartitionExists(name.to_string())).into());
    }
    sqlx::query("INSERT INTO partitions (name, created_at_ms) VALUES (?, ?)")
        .bind(name)
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO working_config (partition, config_json, revision, updated_at_ms)
         VALUES (?, '{}', 0, ?)",
    )
    .bind(name)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Applied::Done.into())
}

/// Deletes a partition with its working config and releases (cascade).
pub(super) async fn delete_partition(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Outcome, StoreError> {
    if name == crate::store::DEFAULT_PARTITION {
        return Ok(Applied::Refused(Refusal::DefaultPartition).into());
    }
    let done = sqlx::query("DELETE FROM partitions WHERE name = ?")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(no_partition(name));
    }
    Ok(Outcome {
        applied: Applied::Done,
        notify_watchers: true,
        notify_registry: false,
    })
}

/// The partition's working config and revision; `None` when the partition does not exist.
async fn working(
    conn: &mut SqliteConnection,
    partition: &str,
) -> Result<Option<(Config, u64)>, StoreError> {
    let Some(row) =
        sqlx::query("SELECT config_json, revision FROM working_config WHERE partition = ?")
            .bind(partition)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let text: String = row.try_get("config_json")?;
    Ok(Some((
        serde_json::from_str(&text)?,
        row.try_get::<i64, _>("revision")? as u64,
    )))
}

async fn write_working(
    conn: &mut SqliteConnection,
    partition: &str,
    config: &Config,
    revision: u64,
    at_ms: i64,
) -> Result<(), StoreError> {
    let mut config = config.clone();
    // The working config has no version of its own: a release assigns one.
    config.version = 0;
    sqlx::query(
        "UPDATE working_config SET config_json = ?, revision = ?, updated_at_ms = ?
         WHERE partition = ?",
    )
    .bind(config_to_json(&config)?)
    .bind(revision as i64)
    .bind(at_ms)
    .bind(partition)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn set_working(
    conn: &mut SqliteConnection,
    partition: &str,
    base_revision: u64,
    config_json: &str,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let Some((_, current)) = working(conn, partition).await? else {
        return Ok(no_partition(partition));
    };
    if current != base_revision {
        return Ok(Applied::Refused(Refusal::Conflict { current }).into());
    }
    // Proposers validate first; a command that still does not parse changes nothing rather
    // than stopping the state machine.
    let Ok(config) = serde_json::from_str::<Config>(config_json) else {
        return Ok(Applied::Refused(Refusal::BadConfig).into());
    };
    write_working(conn, partition, &config, current + 1, at_ms).await?;
    Ok(Applied::Revision(current + 1).into())
}

async fn release_where(
    conn: &mut SqliteConnection,
    partition: &str,
    condition: &str,
) -> Result<Option<Release>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RELEASE_COLUMNS} FROM releases WHERE partition = ? AND {condition}
         ORDER BY version DESC LIMIT 1"
    )))
    .bind(partition)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| release_from_row(&r)).transpose()
}

async fn latest_release(
    conn: &mut SqliteConnection,
    partition: &str,
) -> Result<Option<Release>, StoreError> {
    release_where(conn, partition, "1 = 1").await
}

fn no_partition(partition: &str) -> Outcome {
    Applied::Refused(Refusal::NoSuchPartition(partition.to_string())).into()
}

pub(super) async fn promote(
    conn: &mut SqliteConnection,
    partition: &str,
    version: u64,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    if working(conn, partition).await?.is_none() {
        return Ok(no_partition(partition));
    }
    let Some(r) = release_where(conn, partition, &format!("version = {version}")).await? else {
        return Ok(Applied::Refused(Refusal::NoSuchRelease(version)).into());
    };
    if !r.staged || r.promoted_at_ms.is_some() {
        return Ok(Applied::Refused(Refusal::NotStaged(version)).into());
    }
    let general = release_where(
        conn,
        partition,
        "(staged = 0 OR promoted_at_ms IS NOT NULL)",
    )
    .await?;
    if let Some(g) = general
        && g.version > version
    {
        return Ok(Applied::Refused(Refusal::OlderThanGeneral {
            version,
            general: g.version,
        })
        .into());
    }
    sqlx::query("UPDATE releases SET promoted_at_ms = ? WHERE partition = ? AND version = ?")
        .bind(at_ms)
        .bind(partition)
        .bind(version as i64)
        .execute(&mut *conn)
        .await?;
    let mut summary = r.summary();
    summary.promoted_at_ms = Some(at_ms);
    Ok(Outcome {
        applied: Applied::Release(summary),
        notify_watchers: true,
        notify_registry: false,
    })
}

pub(super) async fn release(
    conn: &mut SqliteConnection,
    partition: &str,
    note: &str,
    staged: bool,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let Some((working, _)) = working(conn, partition).await? else {
        return Ok(no_partition(partition));
    };
    let latest = latest_release(conn, partition).await?;
    if let Some(latest) = &latest
        && same_content(&latest.config, &working)
    {
        return Ok(Applied::Refused(Refusal::NothingToRelease).into());
    }
    let version = latest.map_or(1, |r| r.version + 1);
    let release =
        insert_release(conn, partition, version, note, working, None, staged, at_ms).await?;
    Ok(Outcome {
        applied: Applied::Release(release.summary()),
        notify_watchers: true,
        notify_registry: false,
    })
}

pub(super) async fn rollback(
    conn: &mut SqliteConnection,
    partition: &str,
    of: u64,
    note: &str,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let Some((_, revision)) = working(conn, partition).await? else {
        return Ok(no_partition(partition));
    };
    let Some(old) = release_where(conn, partition, &format!("version = {of}")).await? else {
        return Ok(Applied::Refused(Refusal::NoSuchRelease(of)).into());
    };
    let version = latest_release(conn, partition)
        .await?
        .map_or(0, |r| r.version)
        + 1;
    let note = if note.is_empty() {
        format!("rollback to version {of}")
    } else {
        note.to_string()
    };
    write_working(conn, partition, &old.config, revision + 1, at_ms).await?;
    let mut config = old.config;
    config.version = 0;
    let release = insert_release(
        conn,
        partition,
        version,
        &note,
        config,
        Some(of),
        false,
        at_ms,
    )
    .await?;
    Ok(Outcome {
        applied: Applied::Release(release.summary()),
        notify_watchers: true,
        notify_registry: false,
    })
}

#[allow(clippy::too_many_arguments)]
async fn insert_release(
    conn: &mut SqliteConnection,
    partition: &str,
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
        "INSERT INTO releases (partition, version, note, created_at_ms, config_json, sha256,
                               rollback_of, staged)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(partition)
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
