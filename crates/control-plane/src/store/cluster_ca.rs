//! The replicated PKI tables: the cluster CA and join tokens. Reads for the join service,
//! the commands that write them (applied in log order, like everything in
//! [`super::apply`]), and their part of a snapshot.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::apply::Outcome;
use super::{Store, StoreError};
use crate::pki::{CaKeys, JoinTokenRecord, NodeRole};
use crate::raft::{Applied, Refusal};

impl Store {
    /// The cluster CA, once the first node has written it.
    pub async fn cluster_ca(&self) -> Result<Option<CaKeys>, StoreError> {
        let row = sqlx::query("SELECT cert_pem, key_pem FROM cluster_ca WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(CaKeys {
                cert_pem: r.try_get("cert_pem")?,
                key_pem: r.try_get("key_pem")?,
            })
        })
        .transpose()
    }

    /// The join token with this secret hash, if there is one.
    pub async fn join_token(&self, sha256: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        let row = sqlx::query("SELECT role, expires_at_ms FROM join_tokens WHERE sha256 = ?")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let role: String = r.try_get("role")?;
        // The table's CHECK admits only known roles; anything else is not a usable token.
        Ok(NodeRole::parse(&role).map(|role| JoinTokenRecord {
            role,
            expires_at_ms: r.try_get("expires_at_ms").unwrap_or(0),
        }))
    }
}

/// `Command::SetClusterCa`: the first CA written stays; later ones are refused.
pub(crate) async fn set_ca(
    conn: &mut SqliteConnection,
    cert_pem: &str,
    key_pem: &str,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let done = sqlx::query(
        "INSERT INTO cluster_ca (id, cert_pem, key_pem, created_at_ms) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(cert_pem)
    .bind(key_pem)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(Applied::Refused(Refusal::CaExists).into());
    }
    Ok(Applied::Done.into())
}

/// `Command::CreateJoinToken`.
pub(crate) async fn insert_join_token(
    conn: &mut SqliteConnection,
    sha256: &str,
    role: NodeRole,
    expires_at_ms: i64,
    at_ms: i64,
) -> Result<Outcome, StoreError> {
    let done = sqlx::query(
        "INSERT INTO join_tokens (sha256, role, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(role.as_str())
    .bind(at_ms)
    .bind(expires_at_ms)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(Applied::Refused(Refusal::DuplicateToken).into());
    }
    Ok(Applied::Done.into())
}

/// The PKI tables in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PkiDump {
    pub ca: Option<CaRow>,
    pub join_tokens: Vec<JoinTokenRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaRow {
    pub cert_pem: String,
    pub key_pem: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinTokenRow {
    pub id: i64,
    pub sha256: String,
    pub role: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

pub(crate) async fn dump(conn: &mut SqliteConnection) -> Result<PkiDump, StoreError> {
    let ca = sqlx::query("SELECT cert_pem, key_pem, created_at_ms FROM cluster_ca WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| {
            Ok::<_, sqlx::Error>(CaRow {
                cert_pem: r.try_get("cert_pem")?,
                key_pem: r.try_get("key_pem")?,
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .transpose()?;
    let join_tokens = sqlx::query(
        "SELECT id, sha256, role, created_at_ms, expires_at_ms FROM join_tokens ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(JoinTokenRow {
            id: r.try_get("id")?,
            sha256: r.try_get("sha256")?,
            role: r.try_get("role")?,
            created_at_ms: r.try_get("created_at_ms")?,
            expires_at_ms: r.try_get("expires_at_ms")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(PkiDump { ca, join_tokens })
}

pub(crate) async fn restore(
    conn: &mut SqliteConnection,
    state: &PkiDump,
) -> Result<(), StoreError> {
    for table in ["cluster_ca", "join_tokens"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *conn)
            .await?;
    }
    if let Some(ca) = &state.ca {
        sqlx::query(
            "INSERT INTO cluster_ca (id, cert_pem, key_pem, created_at_ms) VALUES (1, ?, ?, ?)",
        )
        .bind(&ca.cert_pem)
        .bind(&ca.key_pem)
        .bind(ca.created_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    for t in &state.join_tokens {
        sqlx::query(
            "INSERT INTO join_tokens (id, sha256, role, created_at_ms, expires_at_ms)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(t.id)
        .bind(&t.sha256)
        .bind(&t.role)
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
