//! Agents and sub-agents.
//!
//! Key decision: a top-level agent's id is globally unique (the proxy authenticates with an
//! id alone, without a tenant), so it is stored with `parent = ''`; a sub-agent's id is its
//! name, unique under its parent: the primary key is `(parent, id)`. A sub-agent lives in its
//! parent's tenant. Groups, scopes, attributes and limits are stored as JSON text; status,
//! mode, risk level and source as their serde names (`active`, `HIGH`, ...).

use crate::backend::{on_pool, on_tx, Columns, Tx};
use crate::error::{Result, StoreError};
use crate::store::{bump_revision, Store};
use portcullis_core::{is_valid_id, is_valid_scope, Agent, AgentSource, ConfigOverrides};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Database, Encode, Type};

const COLUMNS: &str = "parent, id, tenant, groups_json, status, mode, risk_level, scopes_json, \
     token_ttl_secs, attributes_json, generation, secret_sha256, limits_json, source, \
     created_at, updated_at, overridden_config_mode, rotated_config_secret_sha256";

const INSERT: &str = "INSERT INTO agents (parent, id, tenant, groups_json, status, mode, \
     risk_level, scopes_json, token_ttl_secs, attributes_json, generation, secret_sha256, \
     limits_json, source, created_at, updated_at, overridden_config_mode, \
     rotated_config_secret_sha256) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

const UPDATE: &str = "UPDATE agents SET tenant = $3, groups_json = $4, status = $5, mode = $6, \
     risk_level = $7, scopes_json = $8, token_ttl_secs = $9, attributes_json = $10, \
     generation = $11, secret_sha256 = $12, limits_json = $13, source = $14, \
     created_at = $15, updated_at = $16, overridden_config_mode = $17, \
     rotated_config_secret_sha256 = $18 \
     WHERE parent = $1 AND id = $2";

/// Longest tenant name accepted.
const MAX_TENANT_LEN: usize = 128;

impl Store {
    /// Stores a new agent (or sub-agent when `parent` is set).
    ///
    /// Fails with [`StoreError::Conflict`] when the id is taken (under the same parent), with
    /// [`StoreError::Invalid`] when the id, tenant, scopes or secret hash are malformed or a
    /// sub-agent's tenant differs from its parent's, and with [`StoreError::NotFound`] when a
    /// sub-agent's parent does not exist.
    pub async fn create_agent(&self, agent: &Agent) -> Result<()> {
        let row = Encoded::new(agent)?;
        let mut tx = self.write_tx().await?;
        bump_revision(&mut tx).await?;
        if let Some(parent) = &agent.parent {
            let Some(p) = fetch_in(&mut tx, "", parent).await? else {
                return Err(StoreError::NotFound {
                    what: "agent",
                    id: parent.clone(),
                });
            };
            if p.tenant != agent.tenant {
                return Err(StoreError::invalid(
                    "tenant",
                    format!("a sub-agent lives in its parent's tenant {:?}", p.tenant),
                ));
            }
        }
        let inserted = on_tx!(&mut tx, |c| {
            row.bind(sqlx::query(INSERT))
                .execute(&mut *c)
                .await
                .map(|r| r.rows_affected())
        });
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict {
                    what: "agent",
                    id: agent.id.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(())
    }

    /// The top-level agent with this id, if any.
    pub async fn get_agent(&self, id: &str) -> Result<Option<Agent>> {
        self.fetch_agent("", id).await
    }

    /// The sub-agent `name` of agent `parent`, if registered.
    pub async fn get_subagent(&self, parent: &str, name: &str) -> Result<Option<Agent>> {
        self.fetch_agent(parent, name).await
    }

    /// Every agent and sub-agent, of one tenant or of all; each parent is followed by its
    /// sub-agents, ordered by tenant then id.
    pub async fn list_agents(&self, tenant: Option<&str>) -> Result<Vec<Agent>> {
        let order = "ORDER BY tenant, COALESCE(NULLIF(parent, ''), id), parent, id";
        let sql = match tenant {
            Some(_) => format!("SELECT {COLUMNS} FROM agents WHERE tenant = $1 {order}"),
            None => format!("SELECT {COLUMNS} FROM agents {order}"),
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

    /// Replaces the stored record of `agent` (matched by parent and id) with `agent`,
    /// keeping its `created_at` and setting `updated_at = now_unix`. Returns the stored record.
    ///
    /// This is the run-time write (CLI, admin API): on a config-declared agent, a changed
    /// mode or secret is remembered as overriding the config
    /// ([`Agent::note_runtime_change`]), so the next start's config upsert keeps it. The
    /// overrides are the store's to keep: what the caller passes in is ignored.
    ///
    /// Fails with [`StoreError::NotFound`] when no such agent exists.
    pub async fn update_agent(&self, agent: &Agent, now_unix: u64) -> Result<Agent> {
        Encoded::new(agent)?;
        let mut tx = self.write_tx().await?;
        bump_revision(&mut tx).await?;
        let parent = agent.parent.clone().unwrap_or_default();
        let Some(existing) = fetch_in(&mut tx, &parent, &agent.id).await? else {
            return Err(StoreError::NotFound {
                what: "agent",
                id: agent.id.clone(),
            });
        };
        let mut agent = agent.clone();
        agent.note_runtime_change(&existing);
        let mut row = Encoded::new(&agent)?;
        row.updated_at = to_i64("updated_at", now_unix)?;
        row.created_at = to_i64("created_at", existing.created_at)?;
        on_tx!(&mut tx, |c| {
            row.bind(sqlx::query(UPDATE)).execute(&mut *c).await?;
        });
        propagate_tenant(&mut tx, &row).await?;
        let stored = fetch_in(&mut tx, &row.parent, &agent.id).await?;
        tx.commit().await?;
        stored.ok_or_else(|| StoreError::NotFound {
            what: "agent",
            id: agent.id.clone(),
        })
    }

    /// Read-modify-write of the top-level agent `id` as one transaction under the store's
    /// write lock, so concurrent changes through several gateways (or a gateway and the CLI)
    /// never undo each other: `f` sees the stored agent as of the lock and edits it, and
    /// returns `Ok(true)` to write it (as [`Store::update_agent`] does: `updated_at =
    /// now_unix`, run-time overrides of config agents noted), `Ok(false)` to leave it as is,
    /// or `Err(e)` to refuse (nothing written). Returns the stored agent.
    ///
    /// Fails with [`StoreError::NotFound`] (in [`Modified::Store`]) when there is no such
    /// agent; `f` never runs then.
    pub async fn modify_agent<E>(
        &self,
        id: &str,
        now_unix: u64,
        f: impl FnOnce(&mut Agent) -> std::result::Result<bool, E>,
    ) -> std::result::Result<Agent, Modified<E>> {
        let mut tx = self.write_tx().await?;
        let Some(existing) = fetch_in(&mut tx, "", id).await? else {
            return Err(StoreError::NotFound {
                what: "agent",
                id: id.to_owned(),
            }
            .into());
        };
        let mut agent = existing.clone();
        match f(&mut agent) {
            Ok(true) => {}
            Ok(false) => {
                tx.rollback().await?;
                return Ok(existing);
            }
            Err(e) => {
                tx.rollback().await?;
                return Err(Modified::Refused(e));
            }
        }
        agent.id = existing.id.clone();
        agent.parent = None;
        agent.note_runtime_change(&existing);
        let mut row = Encoded::new(&agent)?;
        row.updated_at = to_i64("updated_at", now_unix)?;
        row.created_at = to_i64("created_at", existing.created_at)?;
        bump_revision(&mut tx).await?;
        on_tx!(&mut tx, |c| {
            row.bind(sqlx::query(UPDATE)).execute(&mut *c).await?;
        });
        propagate_tenant(&mut tx, &row).await?;
        let stored = fetch_in(&mut tx, "", id).await?;
        tx.commit().await?;
        stored.ok_or_else(|| {
            StoreError::NotFound {
                what: "agent",
                id: id.to_owned(),
            }
            .into()
        })
    }

    /// Creates or replaces an agent declared in the config file (GitOps). An existing record
    /// keeps its `created_at`; when nothing but the timestamps would change, nothing is written
    /// and the revision stays. Returns the stored record.
    ///
    /// The record is written as given, overrides included: the caller decides what the
    /// config may change ([`Agent::reconcile_config`]).
    pub async fn upsert_agent(&self, agent: &Agent, now_unix: u64) -> Result<Agent> {
        let mut row = Encoded::new(agent)?;
        let mut tx = self.write_tx().await?;
        let existing = fetch_in(&mut tx, &row.parent, &agent.id).await?;
        if let Some(existing) = &existing {
            if same_content(existing, agent) {
                tx.rollback().await?;
                return Ok(existing.clone());
            }
            row.created_at = to_i64("created_at", existing.created_at)?;
        }
        row.updated_at = to_i64("updated_at", now_unix)?;
        bump_revision(&mut tx).await?;
        let sql = if existing.is_some() { UPDATE } else { INSERT };
        on_tx!(&mut tx, |c| {
            row.bind(sqlx::query(sql)).execute(&mut *c).await?;
        });
        propagate_tenant(&mut tx, &row).await?;
        let stored = fetch_in(&mut tx, &row.parent, &agent.id).await?;
        tx.commit().await?;
        stored.ok_or_else(|| StoreError::NotFound {
            what: "agent",
            id: agent.id.clone(),
        })
    }

    /// Registers sub-agent `name` under agent `parent` on first use and returns it; returns
    /// the existing record unchanged (no write) when it is already registered.
    ///
    /// The sub-agent takes its parent's tenant; fails with [`StoreError::NotFound`] when the
    /// parent is not a registered top-level agent and [`StoreError::Invalid`] for a bad name.
    pub async fn register_subagent(
        &self,
        parent: &str,
        name: &str,
        now_unix: u64,
    ) -> Result<Agent> {
        if !is_valid_id(name) {
            return Err(StoreError::invalid(
                "subagent",
                "must match ^[a-z][a-z0-9_]{1,63}$",
            ));
        }
        if let Some(existing) = self.fetch_agent(parent, name).await? {
            return Ok(existing);
        }
        let mut tx = self.write_tx().await?;
        if let Some(existing) = fetch_in(&mut tx, parent, name).await? {
            tx.rollback().await?;
            return Ok(existing);
        }
        let Some(parent_agent) = fetch_in(&mut tx, "", parent).await? else {
            return Err(StoreError::NotFound {
                what: "agent",
                id: parent.to_owned(),
            });
        };
        let mut sub = Agent::new(name, parent_agent.tenant, now_unix);
        sub.parent = Some(parent.to_owned());
        sub.source = AgentSource::Subagent;
        let row = Encoded::new(&sub)?;
        bump_revision(&mut tx).await?;
        on_tx!(&mut tx, |c| {
            row.bind(sqlx::query(INSERT)).execute(&mut *c).await?;
        });
        tx.commit().await?;
        Ok(sub)
    }

    async fn fetch_agent(&self, parent: &str, id: &str) -> Result<Option<Agent>> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE parent = $1 AND id = $2");
        on_pool!(&self.pool, |p| {
            let row = sqlx::query(&sql)
                .bind(parent)
                .bind(id)
                .fetch_optional(p)
                .await?;
            row.as_ref().map(decode).transpose()
        })
    }
}

/// Why [`Store::modify_agent`] wrote nothing: the store failed, or the edit refused.
#[derive(Debug)]
pub enum Modified<E> {
    /// The store failed (or has no such agent).
    Store(StoreError),
    /// The edit returned this error.
    Refused(E),
}

impl<E> From<StoreError> for Modified<E> {
    fn from(e: StoreError) -> Self {
        Modified::Store(e)
    }
}

impl<E> From<sqlx::Error> for Modified<E> {
    fn from(e: sqlx::Error) -> Self {
        Modified::Store(e.into())
    }
}

impl<E: std::fmt::Display> std::fmt::Display for Modified<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Modified::Store(e) => e.fmt(f),
            Modified::Refused(e) => e.fmt(f),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for Modified<E> {}

async fn fetch_in(tx: &mut Tx, parent: &str, id: &str) -> Result<Option<Agent>> {
    let sql = format!("SELECT {COLUMNS} FROM agents WHERE parent = $1 AND id = $2");
    on_tx!(tx, |c| {
        let row = sqlx::query(&sql)
            .bind(parent)
            .bind(id)
            .fetch_optional(&mut *c)
            .await?;
        row.as_ref().map(decode).transpose()
    })
}

/// Keeps sub-agents in their parent's tenant when a top-level agent moves.
async fn propagate_tenant(tx: &mut Tx, row: &Encoded) -> Result<()> {
    if row.parent.is_empty() {
        on_tx!(tx, |c| {
            sqlx::query("UPDATE agents SET tenant = $1 WHERE parent = $2 AND tenant <> $1")
                .bind(&row.tenant)
                .bind(&row.id)
                .execute(&mut *c)
                .await?;
        });
    }
    Ok(())
}

/// Equal apart from the timestamps (and the secret hash compared as stored).
fn same_content(stored: &Agent, wanted: &Agent) -> bool {
    let mut a = stored.clone();
    let mut b = wanted.clone();
    a.created_at = 0;
    a.updated_at = 0;
    b.created_at = 0;
    b.updated_at = 0;
    a == b
}

/// An agent turned into column values, validated.
struct Encoded {
    parent: String,
    id: String,
    tenant: String,
    groups: String,
    status: String,
    mode: String,
    risk_level: String,
    scopes: String,
    token_ttl_secs: i64,
    attributes: String,
    generation: i64,
    secret_sha256: Option<String>,
    limits: String,
    source: String,
    created_at: i64,
    updated_at: i64,
    overridden_mode: Option<String>,
    rotated_secret: Option<String>,
}

impl Encoded {
    fn new(a: &Agent) -> Result<Self> {
        validate(a)?;
        Ok(Self {
            parent: a.parent.clone().unwrap_or_default(),
            id: a.id.clone(),
            tenant: a.tenant.clone(),
            groups: to_json("groups", &a.groups)?,
            status: enum_name("status", &a.status)?,
            mode: enum_name("mode", &a.mode)?,
            risk_level: enum_name("risk_level", &a.risk_level)?,
            scopes: to_json("allowed_scopes", &a.allowed_scopes)?,
            token_ttl_secs: to_i64("token_ttl_secs", a.token_ttl_secs)?,
            attributes: to_json("attributes", &a.attributes)?,
            generation: to_i64("generation", a.generation)?,
            secret_sha256: a.secret_sha256.clone(),
            limits: to_json("limits", &a.limits)?,
            source: enum_name("source", &a.source)?,
            created_at: to_i64("created_at", a.created_at)?,
            updated_at: to_i64("updated_at", a.updated_at)?,
            overridden_mode: a
                .config_overrides
                .mode
                .as_ref()
                .map(|m| enum_name("overridden mode", m))
                .transpose()?,
            rotated_secret: a.config_overrides.secret_sha256.clone(),
        })
    }

    /// Binds the 18 columns, in [`COLUMNS`] order, on either backend.
    fn bind<'q, DB: Database>(
        &'q self,
        q: sqlx::query::Query<'q, DB, DB::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
    where
        &'q str: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        i64: Encode<'q, DB> + Type<DB>,
    {
        q.bind(self.parent.as_str())
            .bind(self.id.as_str())
            .bind(self.tenant.as_str())
            .bind(self.groups.as_str())
            .bind(self.status.as_str())
            .bind(self.mode.as_str())
            .bind(self.risk_level.as_str())
            .bind(self.scopes.as_str())
            .bind(self.token_ttl_secs)
            .bind(self.attributes.as_str())
            .bind(self.generation)
            .bind(self.secret_sha256.as_deref())
            .bind(self.limits.as_str())
            .bind(self.source.as_str())
            .bind(self.created_at)
            .bind(self.updated_at)
            .bind(self.overridden_mode.as_deref())
            .bind(self.rotated_secret.as_deref())
    }
}

fn validate(a: &Agent) -> Result<()> {
    if !is_valid_id(&a.id) {
        return Err(StoreError::invalid(
            "agent id",
            format!("{:?} must match ^[a-z][a-z0-9_]{{1,63}}$", a.id),
        ));
    }
    if let Some(parent) = &a.parent {
        if !is_valid_id(parent) {
            return Err(StoreError::invalid(
                "parent agent id",
                format!("{parent:?} must match ^[a-z][a-z0-9_]{{1,63}}$"),
            ));
        }
    }
    if a.tenant.is_empty()
        || a.tenant.len() > MAX_TENANT_LEN
        || a.tenant.chars().any(char::is_control)
    {
        return Err(StoreError::invalid(
            "tenant",
            format!(
                "{:?} must be 1-{MAX_TENANT_LEN} printable characters",
                a.tenant
            ),
        ));
    }
    if let Some(bad) = a.allowed_scopes.iter().find(|s| !is_valid_scope(s)) {
        return Err(StoreError::invalid("scope", format!("{bad:?}")));
    }
    if a.groups.iter().any(|g| g.is_empty()) {
        return Err(StoreError::invalid("group", "empty group name"));
    }
    for h in [&a.secret_sha256, &a.config_overrides.secret_sha256]
        .into_iter()
        .flatten()
    {
        if !crate::secret::is_sha256_hex(h) {
            return Err(StoreError::invalid(
                "secret_sha256",
                "must be 64 lower-case hex characters",
            ));
        }
    }
    Ok(())
}

fn decode(row: &impl Columns) -> Result<Agent> {
    let parent = row.text("parent")?;
    Ok(Agent {
        id: row.text("id")?,
        tenant: row.text("tenant")?,
        parent: (!parent.is_empty()).then_some(parent),
        groups: from_json("agents.groups_json", &row.text("groups_json")?)?,
        status: parse_enum("agents.status", row.text("status")?)?,
        mode: parse_enum("agents.mode", row.text("mode")?)?,
        risk_level: parse_enum("agents.risk_level", row.text("risk_level")?)?,
        allowed_scopes: from_json("agents.scopes_json", &row.text("scopes_json")?)?,
        token_ttl_secs: to_u64("agents.token_ttl_secs", row.int("token_ttl_secs")?)?,
        attributes: from_json("agents.attributes_json", &row.text("attributes_json")?)?,
        generation: to_u64("agents.generation", row.int("generation")?)?,
        secret_sha256: row.opt_text("secret_sha256")?,
        limits: from_json("agents.limits_json", &row.text("limits_json")?)?,
        source: parse_enum("agents.source", row.text("source")?)?,
        config_overrides: ConfigOverrides {
            mode: row
                .opt_text("overridden_config_mode")?
                .map(|m| parse_enum("agents.overridden_config_mode", m))
                .transpose()?,
            secret_sha256: row.opt_text("rotated_config_secret_sha256")?,
        },
        created_at: to_u64("agents.created_at", row.int("created_at")?)?,
        updated_at: to_u64("agents.updated_at", row.int("updated_at")?)?,
    })
}

fn to_json<T: Serialize + ?Sized>(what: &'static str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::invalid(what, e.to_string()))
}

fn from_json<T: DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(what, e))
}

/// The serde name of a unit enum variant (`active`, `HIGH`).
pub(crate) fn enum_name<T: Serialize>(what: &'static str, v: &T) -> Result<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Err(StoreError::invalid(what, format!("not a name: {other}"))),
        Err(e) => Err(StoreError::invalid(what, e.to_string())),
    }
}

pub(crate) fn parse_enum<T: DeserializeOwned>(what: &'static str, s: String) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| StoreError::corrupt(what, e))
}

pub(crate) fn to_i64(what: &'static str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::invalid(what, format!("{v} is too large")))
}

pub(crate) fn to_u64(what: &'static str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(what, format!("negative value {v}")))
}
