//! What the audit trail cost, grouped: the exact sum of `cost_usd_micros` per agent, tenant,
//! provider or model over the records an [`AuditQuery`] matches.

use crate::audit::push_filters;
use crate::backend::{on_pool, Columns};
use crate::error::Result;
use crate::store::Store;
use crate::AuditQuery;
use sqlx::QueryBuilder;

/// Most groups [`Store::audit_cost_by`] returns.
pub const MAX_COST_GROUPS: u32 = 1_000;

/// What to group the cost by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGroup {
    /// `agent_id`.
    Agent,
    /// `tenant`.
    Tenant,
    /// `provider` (records without one are left out).
    Provider,
    /// `model` (records without one are left out).
    Model,
}

impl CostGroup {
    /// `agent`, `tenant`, `provider` or `model`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(Self::Agent),
            "tenant" => Some(Self::Tenant),
            "provider" => Some(Self::Provider),
            "model" => Some(Self::Model),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Agent => "agent_id",
            Self::Tenant => "tenant",
            Self::Provider => "provider",
            Self::Model => "model",
        }
    }
}

/// The cost of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostRow {
    /// The agent, tenant, provider or model.
    pub key: String,
    /// Records in the group.
    pub records: u64,
    /// Records with a cost (the others' is unknown).
    pub priced: u64,
    /// The exact sum of the priced records' cost, micro-dollars (`None`: none priced).
    pub cost_usd_micros: Option<u64>,
}

impl Store {
    /// The cost of the records `q` matches (its limit and offset ignored), per `by`, dearest
    /// first, at most [`MAX_COST_GROUPS`] groups.
    pub async fn audit_cost_by(&self, q: &AuditQuery, by: CostGroup) -> Result<Vec<CostRow>> {
        let col = by.column();
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {col} AS k, COUNT(*) AS n, COUNT(cost_usd_micros) AS priced, \
                 CAST(SUM(cost_usd_micros) AS BIGINT) AS cost FROM audit_records"
            ));
            let filtered = push_filters(&mut qb, q);
            qb.push(if filtered { " AND " } else { " WHERE " })
                .push(format!("{col} IS NOT NULL"));
            qb.push(format!(
                " GROUP BY {col} ORDER BY COALESCE(SUM(cost_usd_micros), -1) DESC, {col} LIMIT "
            ))
            .push_bind(i64::from(MAX_COST_GROUPS));
            let rows = qb.build().fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    let n = |c: &str| r.int(c).map(|v| u64::try_from(v).unwrap_or(0));
                    Ok(CostRow {
                        key: r.text("k")?,
                        records: n("n")?,
                        priced: n("priced")?,
                        cost_usd_micros: r.opt_int("cost")?.map(|c| u64::try_from(c).unwrap_or(0)),
                    })
                })
                .collect()
        })
    }
}
