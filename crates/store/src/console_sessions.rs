//! Operator console sessions, shared by every gateway on the store.
//!
//! The store holds the SHA-256 of a session id, never the id. A session signed in with an
//! operator API key stays valid only while that key is not revoked, and always takes the
//! key's tenant and role at lookup; a session from a trusted auth proxy keeps the tenant
//! and role it was mapped to. Lifetimes are bounded twice: an absolute expiry and an idle
//! timeout, both checked at every lookup. The same SQL on both backends.

use crate::agents::{to_i64, to_u64};
use crate::api_keys::Role;
use crate::backend::{on_pool, Columns};
use crate::error::{Result, StoreError};
use crate::secret::is_sha256_hex;
use crate::store::Store;

/// One console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The operator API key signed in with (`None` for a trusted-header sign-in).
    pub key_id: Option<String>,
    /// Tenant the operator sees.
    pub tenant: String,
    /// Role the operator has.
    pub role: Role,
    /// Who signed in, for display and logs: the key id or the proxy's user (never a key).
    pub subject: String,
    /// Sign-in time, Unix seconds.
    pub created_at: u64,
    /// Last request, Unix seconds.
    pub last_seen: u64,
    /// Absolute expiry, Unix seconds.
    pub expires_at: u64,
}

impl Store {
    /// Records a new session under the SHA-256 (hex) of its id.
    pub async fn create_console_session(&self, id_sha256: &str, s: &ConsoleSession) -> Result<()> {
        if !is_sha256_hex(id_sha256) {
            return Err(StoreError::invalid("session", "id hash is not SHA-256 hex"));
        }
        let created_at = to_i64("created_at", s.created_at)?;
        let last_seen = to_i64("last_seen", s.last_seen)?;
        let expires_at = to_i64("expires_at", s.expires_at)?;
        on_pool!(&self.pool, |p| sqlx::query(
            "INSERT INTO console_sessions (id_sha256, key_id, tenant, role, subject, created_at, \
             last_seen, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id_sha256)
        .bind(&s.key_id)
        .bind(&s.tenant)
        .bind(s.role.as_str())
        .bind(&s.subject)
        .bind(created_at)
        .bind(last_seen)
        .bind(expires_at)
        .execute(p)
        .await
        .map(drop))?;
        Ok(())
    }

    /// The live session with this id hash at `now`: not expired, used within `idle_secs`,
    /// and (for a key sign-in) its key still exists unrevoked, whose tenant and role it
    /// takes. `None` otherwise.
    pub async fn console_session(
        &self,
        id_sha256: &str,
        now: u64,
        idle_secs: u64,
    ) -> Result<Option<ConsoleSession>> {
        if !is_sha256_hex(id_sha256) {
            return Ok(None);
        }
        let now_i = to_i64("now", now)?;
        let idle_since = now_i.saturating_sub(to_i64("idle", idle_secs)?);
        on_pool!(&self.pool, |p| {
            let row = sqlx::query(
                "SELECT s.key_id, COALESCE(k.tenant, s.tenant) AS tenant, \
             COALESCE(k.role, s.role) AS role, s.subject, s.created_at, s.last_seen, \
             s.expires_at FROM console_sessions s \
             LEFT JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id_sha256 = $1 AND s.expires_at > $2 AND s.last_seen > $3 \
             AND (s.key_id IS NULL OR (k.id IS NOT NULL AND k.revoked_at IS NULL))",
            )
            .bind(id_sha256)
            .bind(now_i)
            .bind(idle_since)
            .fetch_optional(p)
            .await?;
            row.as_ref().map(session_of).transpose()
        })
    }

    /// Marks the session used at `now` (extends its idle timeout, never its expiry).
    pub async fn touch_console_session(&self, id_sha256: &str, now: u64) -> Result<()> {
        let now = to_i64("now", now)?;
        on_pool!(&self.pool, |p| sqlx::query(
            "UPDATE console_sessions SET last_seen = $1 WHERE id_sha256 = $2"
        )
        .bind(now)
        .bind(id_sha256)
        .execute(p)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Ends the session (sign-out); whether it existed.
    pub async fn delete_console_session(&self, id_sha256: &str) -> Result<bool> {
        let deleted = on_pool!(&self.pool, |p| sqlx::query(
            "DELETE FROM console_sessions WHERE id_sha256 = $1"
        )
        .bind(id_sha256)
        .execute(p)
        .await?
        .rows_affected());
        Ok(deleted > 0)
    }

    /// Deletes sessions expired or idle at `now`; returns how many.
    pub async fn prune_console_sessions(&self, now: u64, idle_secs: u64) -> Result<u64> {
        let now_i = to_i64("now", now)?;
        let idle_since = now_i.saturating_sub(to_i64("idle", idle_secs)?);
        Ok(on_pool!(&self.pool, |p| sqlx::query(
            "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen <= $2"
        )
        .bind(now_i)
        .bind(idle_since)
        .execute(p)
        .await?
        .rows_affected()))
    }
}

fn session_of(row: &impl Columns) -> Result<ConsoleSession> {
    let role = row.text("role")?;
    Ok(ConsoleSession {
        key_id: row.opt_text("key_id")?,
        tenant: row.text("tenant")?,
        role: role
            .parse()
            .map_err(|_| StoreError::corrupt("console_sessions.role", role))?,
        subject: row.text("subject")?,
        created_at: to_u64("created_at", row.int("created_at")?)?,
        last_seen: to_u64("last_seen", row.int("last_seen")?)?,
        expires_at: to_u64("expires_at", row.int("expires_at")?)?,
    })
}
