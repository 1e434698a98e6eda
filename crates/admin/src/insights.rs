//! Reads of the audit trail beyond `/v1/decisions`, for the console: keyset pages with
//! host and status filters, capped counts, usage aggregates, the shadow report, per-agent
//! activity and the sub-agents seen. Each is scoped to the operator's tenant by
//! [`crate::decisions::scope`], the one rule every audit read follows.

use crate::control::ControlPlane;
use crate::decisions::scope;
use crate::operator::Operator;
use crate::respond::store_error;
use portcullis_core::ApiError;
use portcullis_store::{
    AgentActivity, ConsoleRecord, Cursor, Dimension, RefusalRow, RequestFilter, ShadowRow,
    SubagentSeen, TokenBucket, TopRow, VerdictBucket,
};

/// The operator's records matching `f`, newest first, older than `before` when given.
pub async fn requests(
    cp: &ControlPlane,
    op: &Operator,
    f: &RequestFilter,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<Vec<ConsoleRecord>, ApiError> {
    cp.store()
        .console_requests(&scope(op), f, before, limit)
        .await
        .map_err(store_error)
}

/// How many of the operator's records match `f`, counting at most `cap`.
pub async fn count(
    cp: &ControlPlane,
    op: &Operator,
    f: &RequestFilter,
    cap: u64,
) -> Result<u64, ApiError> {
    cp.store()
        .console_count(&scope(op), f, cap)
        .await
        .map_err(store_error)
}

/// Usage over `[since, until)` in buckets of `bucket_ms`, tokens grouped by `dim`.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Records per verdict per bucket.
    pub verdicts: Vec<VerdictBucket>,
    /// Tokens per group per bucket.
    pub tokens: Vec<TokenBucket>,
    /// Top agents.
    pub top_agents: Vec<TopRow>,
    /// Top models.
    pub top_models: Vec<TopRow>,
    /// Top providers.
    pub top_providers: Vec<TopRow>,
    /// Refusals by cause.
    pub refusals: Vec<RefusalRow>,
}

/// Most rows of a top list or of the refusals table.
const TOP: u32 = 10;

/// The operator's usage over `[since_ms, until_ms)`.
pub async fn usage(
    cp: &ControlPlane,
    op: &Operator,
    since_ms: i64,
    until_ms: i64,
    bucket_ms: i64,
    dim: Dimension,
) -> Result<Usage, ApiError> {
    let s = cp.store();
    let sc = scope(op);
    Ok(Usage {
        verdicts: s
            .console_verdict_series(&sc, since_ms, until_ms, bucket_ms)
            .await
            .map_err(store_error)?,
        tokens: s
            .console_token_series(&sc, since_ms, until_ms, bucket_ms, dim)
            .await
            .map_err(store_error)?,
        top_agents: s
            .console_top(&sc, since_ms, until_ms, Dimension::Agent, TOP)
            .await
            .map_err(store_error)?,
        top_models: s
            .console_top(&sc, since_ms, until_ms, Dimension::Model, TOP)
            .await
            .map_err(store_error)?,
        top_providers: s
            .console_top(&sc, since_ms, until_ms, Dimension::Provider, TOP)
            .await
            .map_err(store_error)?,
        refusals: s
            .console_refusals(&sc, since_ms, until_ms, TOP)
            .await
            .map_err(store_error)?,
    })
}

/// The shadow report of the operator's records over `[since_ms, until_ms)`.
pub async fn shadow(
    cp: &ControlPlane,
    op: &Operator,
    since_ms: i64,
    until_ms: i64,
    examples: u32,
) -> Result<Vec<ShadowRow>, ApiError> {
    cp.store()
        .console_shadow(&scope(op), since_ms, until_ms, examples)
        .await
        .map_err(store_error)
}

/// Per agent of the operator's tenant: records since `minute_ms`, tokens since `day_ms`.
pub async fn activity(
    cp: &ControlPlane,
    op: &Operator,
    minute_ms: i64,
    day_ms: i64,
) -> Result<Vec<(String, AgentActivity)>, ApiError> {
    cp.store()
        .console_agent_activity(&scope(op), minute_ms, day_ms)
        .await
        .map_err(store_error)
}

/// Sub-agents of the operator's agents seen since `since_ms`.
pub async fn subagents(
    cp: &ControlPlane,
    op: &Operator,
    since_ms: i64,
    limit: u32,
) -> Result<Vec<SubagentSeen>, ApiError> {
    cp.store()
        .console_subagents(&scope(op), since_ms, limit)
        .await
        .map_err(store_error)
}
