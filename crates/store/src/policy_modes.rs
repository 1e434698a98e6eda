//! Policy modes set at run time (`PUT /v1/policies/{name}/mode`): a mode per policy name
//! overriding the mode the policy declares, shared by every gateway on the store and kept
//! across restarts. The store checks the shape of names and modes; whether a policy of
//! that name is loaded is the caller's business (a replica that does not know it yet
//! applies the mode once it loads it).

use crate::agents::to_i64;
use crate::backend::{on_pool, on_tx, Columns};
use crate::error::{Result, StoreError};
use crate::store::{bump_revision, Store};
use std::collections::BTreeMap;

/// The modes a policy can be set to.
pub const POLICY_MODES: [&str; 3] = ["active", "shadow", "disabled"];
/// Longest policy name accepted.
const MAX_POLICY_NAME: usize = 128;

impl Store {
    /// Sets policy `name` to `mode` (`active`, `shadow` or `disabled`), or with `None`
    /// removes its run-time mode (the policy's declared mode applies again). Bumps the
    /// revision when something changed; returns whether it did.
    pub async fn set_policy_mode(
        &self,
        name: &str,
        mode: Option<&str>,
        now_unix: u64,
    ) -> Result<bool> {
        check_name(name)?;
        if let Some(m) = mode {
            if !POLICY_MODES.contains(&m) {
                return Err(StoreError::invalid(
                    "policy mode",
                    format!("{m:?} is not active, shadow or disabled"),
                ));
            }
        }
        let now = to_i64("updated_at", now_unix)?;
        let mut tx = self.write_tx().await?;
        let current: Option<String> = on_tx!(&mut tx, |c| {
            sqlx::query_scalar("SELECT mode FROM policy_modes WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *c)
                .await?
        });
        if current.as_deref() == mode {
            tx.rollback().await?;
            return Ok(false);
        }
        bump_revision(&mut tx).await?;
        on_tx!(&mut tx, |c| match mode {
            Some(m) => {
                sqlx::query(
                    "INSERT INTO policy_modes (name, mode, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET mode = excluded.mode, \
                     updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(m)
                .bind(now)
                .execute(&mut *c)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM policy_modes WHERE name = $1")
                    .bind(name)
                    .execute(&mut *c)
                    .await?;
            }
        });
        tx.commit().await?;
        Ok(true)
    }

    /// Every run-time policy mode, by policy name.
    pub async fn policy_modes(&self) -> Result<BTreeMap<String, String>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query("SELECT name, mode FROM policy_modes ORDER BY name")
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Ok((r.text("name")?, r.text("mode")?)))
                .collect()
        })
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POLICY_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "policy name",
            format!("{name:?} must be 1-{MAX_POLICY_NAME} letters, digits or underscores"),
        ))
    }
}
