//! Provider credentials managed through the admin API and the CLI: a binding (JSON, opaque
//! to the store) and a secret sealed with a [`SealKey`]. The secret is write-only: nothing
//! here returns it except [`StoredCredential::secret`], which needs the key.

use crate::agents::{to_i64, to_u64};
use crate::backend::{on_pool, on_tx, Columns};
use crate::error::{Result, StoreError};
use crate::seal::SealKey;
use crate::store::{bump_revision, Store};
use serde_json::Value;

const COLUMNS: &str = "name, tenant, spec_json, secret_sealed, created_at, updated_at";

/// A stored credential. Its `Debug` and serialisation never include the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// Name (unique).
    pub name: String,
    /// Tenant of the operator who manages it; it applies to that tenant's agents only.
    pub tenant: String,
    /// The binding: hosts, header, format, agents, groups, tenants, mode.
    pub spec: Value,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Last change, Unix seconds.
    pub updated_at: u64,
    sealed: String,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl StoredCredential {
    /// The plaintext secret (fails with another key or a tampered row).
    pub fn secret(&self, key: &SealKey) -> Result<String> {
        key.open(&self.name, &self.sealed)
    }
}

fn decode(row: &impl Columns) -> Result<StoredCredential> {
    let spec = row.text("spec_json")?;
    Ok(StoredCredential {
        name: row.text("name")?,
        tenant: row.text("tenant")?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::corrupt("credentials.spec_json", e))?,
        created_at: to_u64("credentials.created_at", row.int("created_at")?)?,
        updated_at: to_u64("credentials.updated_at", row.int("updated_at")?)?,
        sealed: row.text("secret_sealed")?,
    })
}

impl Store {
    /// Creates or replaces the credential `name` of `tenant`. A new credential needs a
    /// `secret`; an update without one keeps the stored secret. Another tenant's credential
    /// of the same name is a conflict (names are global: they label metrics and audit).
    pub async fn put_credential(
        &self,
        name: &str,
        tenant: &str,
        spec: &Value,
        secret: Option<&str>,
        key: &SealKey,
        now_unix: u64,
    ) -> Result<StoredCredential> {
        let mut tx = self.write_tx().await?;
        let sql = format!("SELECT {COLUMNS} FROM credentials WHERE name = $1");
        let existing = on_tx!(&mut tx, |c| {
            let row = sqlx::query(&sql).bind(name).fetch_optional(&mut *c).await?;
            row.as_ref().map(decode).transpose()?
        });
        if let Some(e) = &existing {
            if e.tenant != tenant {
                return Err(StoreError::Conflict {
                    what: "credential",
                    id: name.to_owned(),
                });
            }
        }
        let sealed = match (secret, &existing) {
            (Some(s), _) => key.seal(name, s)?,
            (None, Some(e)) => {
                // Prove the stored secret still opens with this key before keeping it.
                e.secret(key)?;
                e.sealed.clone()
            }
            (None, None) => {
                return Err(StoreError::invalid(
                    "credential",
                    "a new credential needs a secret",
                ))
            }
        };
        let created = existing.as_ref().map_or(now_unix, |e| e.created_at);
        let spec_json = serde_json::to_string(spec)
            .map_err(|e| StoreError::invalid("credential", e.to_string()))?;
        let (created_at, updated_at) = (
            to_i64("created_at", created)?,
            to_i64("updated_at", now_unix)?,
        );
        bump_revision(&mut tx).await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO credentials (name, tenant, spec_json, secret_sealed, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET \
                 spec_json = excluded.spec_json, secret_sealed = excluded.secret_sealed, \
                 updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(tenant)
            .bind(&spec_json)
            .bind(&sealed)
            .bind(created_at)
            .bind(updated_at)
            .execute(&mut *c)
            .await?;
        });
        tx.commit().await?;
        Ok(StoredCredential {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            spec: spec.clone(),
            created_at: created,
            updated_at: now_unix,
            sealed,
        })
    }

    /// One credential by name.
    pub async fn get_credential(&self, name: &str) -> Result<Option<StoredCredential>> {
        let sql = format!("SELECT {COLUMNS} FROM credentials WHERE name = $1");
        on_pool!(&self.pool, |p| {
            let row = sqlx::query(&sql).bind(name).fetch_optional(p).await?;
            row.as_ref().map(decode).transpose()
        })
    }

    /// Credentials of one tenant (or all), by name.
    pub async fn list_credentials(&self, tenant: Option<&str>) -> Result<Vec<StoredCredential>> {
        let sql = match tenant {
            Some(_) => format!("SELECT {COLUMNS} FROM credentials WHERE tenant = $1 ORDER BY name"),
            None => format!("SELECT {COLUMNS} FROM credentials ORDER BY name"),
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

    /// Deletes the credential `name` of `tenant`; `false` when there was none.
    pub async fn delete_credential(&self, name: &str, tenant: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = on_tx!(&mut tx, |c| {
            sqlx::query("DELETE FROM credentials WHERE name = $1 AND tenant = $2")
                .bind(name)
                .bind(tenant)
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        if n > 0 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}
