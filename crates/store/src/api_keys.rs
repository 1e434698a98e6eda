//! Operator API keys for the admin API: bound to a tenant and a role, stored as SHA-256.

use crate::agents::{enum_name, parse_enum, to_i64, to_u64};
use crate::backend::{on_pool, on_tx, Columns};
use crate::error::{Result, StoreError};
use crate::secret::{generate_api_key, is_sha256_hex, sha256_hex};
use crate::store::{bump_revision, Store};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

const COLUMNS: &str = "id, tenant, role, name, key_prefix, created_at, revoked_at";
/// Characters of the plaintext key kept for display (`pck_` and four more).
const DISPLAY_PREFIX_LEN: usize = 8;
/// Longest tenant or key name accepted.
const MAX_NAME_LEN: usize = 128;

/// What an operator may do within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read and write.
    Admin,
    /// Read only.
    Viewer,
}

impl Role {
    /// `admin` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            _ => Err(StoreError::invalid(
                "role",
                format!("{s:?} is not admin or viewer"),
            )),
        }
    }
}

/// A stored operator API key (never the key itself nor its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Key id, `key_` + 16 hex characters; used to list and revoke.
    pub id: String,
    /// Tenant the key is bound to.
    pub tenant: String,
    /// Role granted.
    pub role: Role,
    /// Operator-chosen label.
    pub name: String,
    /// First characters of the key (`pck_xxxx`), to recognise it in listings.
    pub key_prefix: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Revocation time, Unix seconds; a revoked key no longer authenticates.
    pub revoked_at: Option<u64>,
}

impl Store {
    /// Creates an API key for `tenant` with `role`; returns the record and the plaintext key,
    /// which is not stored and cannot be shown again.
    pub async fn create_api_key(
        &self,
        tenant: &str,
        role: Role,
        name: &str,
        now_unix: u64,
    ) -> Result<(ApiKeyRecord, String)> {
        check_label("tenant", tenant, false)?;
        check_label("api key name", name, true)?;
        let plaintext = generate_api_key();
        let record = ApiKeyRecord {
            id: new_key_id(),
            tenant: tenant.to_owned(),
            role,
            name: name.to_owned(),
            key_prefix: plaintext.chars().take(DISPLAY_PREFIX_LEN).collect(),
            created_at: now_unix,
            revoked_at: None,
        };
        let role = enum_name("role", &record.role)?;
        let created_at = to_i64("created_at", now_unix)?;
        let mut tx = self.write_tx().await?;
        bump_revision(&mut tx).await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO api_keys (id, tenant, role, name, key_sha256, key_prefix, \
                 created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
            )
            .bind(&record.id)
            .bind(&record.tenant)
            .bind(&role)
            .bind(&record.name)
            .bind(sha256_hex(&plaintext))
            .bind(&record.key_prefix)
            .bind(created_at)
            .execute(&mut *c)
            .await?;
        });
        tx.commit().await?;
        Ok((record, plaintext))
    }

    /// The unrevoked key whose SHA-256 (lower-case hex) is `sha256_hex`, if any.
    /// Authenticate a presented key with `find_api_key_by_hash(&sha256_hex(key))`.
    pub async fn find_api_key_by_hash(&self, sha256_hex: &str) -> Result<Option<ApiKeyRecord>> {
        if !is_sha256_hex(sha256_hex) {
            return Ok(None);
        }
        let sql =
            format!("SELECT {COLUMNS} FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL");
        on_pool!(&self.pool, |p| {
            let row = sqlx::query(&sql).bind(sha256_hex).fetch_optional(p).await?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// Keys of one tenant (or all), revoked ones included, oldest first.
    pub async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let sql = match tenant {
            Some(_) => {
                format!("SELECT {COLUMNS} FROM api_keys WHERE tenant = $1 ORDER BY created_at, id")
            }
            None => format!("SELECT {COLUMNS} FROM api_keys ORDER BY tenant, created_at, id"),
        };
        on_pool!(&self.pool, |p| {
            let q = sqlx::query(&sql);
            let q = match tenant {
                Some(t) => q.bind(t),
                None => q,
            };
            q.fetch_all(p).await?.iter().map(decode).collect()
        })
    }

    /// Revokes key `id`, visible only within `tenant` when given. Revoking an already revoked
    /// key changes nothing. Fails with [`StoreError::NotFound`] for an unknown (or other
    /// tenant's) key.
    pub async fn revoke_api_key(
        &self,
        tenant: Option<&str>,
        id: &str,
        now_unix: u64,
    ) -> Result<ApiKeyRecord> {
        let now = to_i64("revoked_at", now_unix)?;
        let mut tx = self.write_tx().await?;
        bump_revision(&mut tx).await?;
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        let found = on_tx!(&mut tx, |c| {
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *c).await?;
            row.as_ref().map(decode).transpose()?
        });
        let Some(mut record) = found.filter(|r| tenant.is_none_or(|t| t == r.tenant)) else {
            return Err(StoreError::NotFound {
                what: "api key",
                id: id.to_owned(),
            });
        };
        if record.revoked_at.is_some() {
            tx.rollback().await?;
            return Ok(record);
        }
        on_tx!(&mut tx, |c| {
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *c)
                .await?;
        });
        tx.commit().await?;
        record.revoked_at = Some(now_unix);
        Ok(record)
    }
}

fn new_key_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::from("key_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

fn check_label(what: &'static str, s: &str, may_be_empty: bool) -> Result<()> {
    if (s.is_empty() && !may_be_empty) || s.len() > MAX_NAME_LEN || s.chars().any(char::is_control)
    {
        return Err(StoreError::invalid(
            what,
            format!("{s:?} must be 1-{MAX_NAME_LEN} printable characters"),
        ));
    }
    Ok(())
}

fn decode(row: &impl Columns) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.text("id")?,
        tenant: row.text("tenant")?,
        role: parse_enum("api_keys.role", row.text("role")?)?,
        name: row.text("name")?,
        key_prefix: row.text("key_prefix")?,
        created_at: to_u64("api_keys.created_at", row.int("created_at")?)?,
        revoked_at: row
            .opt_int("revoked_at")?
            .map(|v| to_u64("api_keys.revoked_at", v))
            .transpose()?,
    })
}
