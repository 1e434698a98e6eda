//! `GET /v1/decisions` and `GET /v1/decisions/{id}`: the operator's tenant's audit
//! records, filtered and paged by [`portcullis_audit::build_query`], newest first.
//!
//! Records of requests refused before any agent was identified (missing or wrong
//! credentials, throttled guessing, malformed token requests) carry no tenant. They belong
//! to the gateway's operators: the platform tenant ([`DEFAULT_PLATFORM_TENANT`]) sees them
//! beside its own; every other tenant never does.

use crate::control::ControlPlane;
use crate::operator::{Operator, DEFAULT_PLATFORM_TENANT};
use crate::respond::{json_response, store_error};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_audit::{build_query, QueryError};
use portcullis_core::{ApiError, ErrorSource, Status, Usd};
use portcullis_store::{AuditPage, AuditQuery, CostGroup, Scope};
use serde_json::{json, Value};
use std::time::UNIX_EPOCH;

/// `GET /v1/decisions?...`: `{"decisions": [...], "total", "limit", "offset", "cost_usd",
/// "priced"}` (`cost_usd`: what every matching record cost in all, `null` when none is
/// priced; `priced`: how many are); a bad, unknown or repeated parameter is 422.
pub(crate) async fn list(
    cp: &ControlPlane,
    op: &Operator,
    raw_query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let params = decode_query(raw_query.unwrap_or("")).map_err(|e| e.to_api_error())?;
    let (page, q) = query(cp, op, &params).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "decisions": page.records,
            "total": page.total,
            "limit": q.limit,
            "offset": q.offset,
            "cost_usd": page.cost_usd_micros.map(|c| Usd::from_micros(c).dollars()),
            "priced": page.priced,
        }),
    ))
}

/// `GET /v1/spend?by=agent|tenant|provider|model&...`: what the operator's records matching
/// the `/v1/decisions` filters (`limit` and `offset` aside) cost, per group, dearest first:
/// `{"by", "groups": [{"key", "records", "priced", "cost_usd"}], "cost_usd", "priced"}`.
/// `cost_usd` is the exact sum of the priced records (`null` when none is); `by` defaults to
/// `agent`. A bad, unknown or repeated parameter is 422.
pub(crate) async fn spend(
    cp: &ControlPlane,
    op: &Operator,
    raw_query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut params = decode_query(raw_query.unwrap_or("")).map_err(|e| e.to_api_error())?;
    let mut by = None;
    let mut i = 0;
    while i < params.len() {
        if params[i].0 == "by" {
            let (_, v) = params.remove(i);
            let refuse = |reason: &str| {
                QueryError {
                    field: "by".to_owned(),
                    reason: reason.to_owned(),
                }
                .to_api_error()
            };
            let group = CostGroup::parse(&v)
                .ok_or_else(|| refuse("must be agent, tenant, provider or model"))?;
            if by.replace((v, group)).is_some() {
                return Err(refuse("given more than once"));
            }
        } else {
            i += 1;
        }
    }
    let (by, group) = by.unwrap_or_else(|| ("agent".to_owned(), CostGroup::Agent));
    // Only the totals: no record is read.
    let q = AuditQuery {
        limit: 0,
        offset: 0,
        ..operator_query(cp, op, &params)?
    };
    let page = cp.store().query_audit(&q).await.map_err(store_error)?;
    let groups = cp
        .store()
        .audit_cost_by(&q, group)
        .await
        .map_err(store_error)?;
    let dollars = |m: Option<u64>| m.map(|c| Usd::from_micros(c).dollars());
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({"key": g.key, "records": g.records, "priced": g.priced,
                   "cost_usd": dollars(g.cost_usd_micros)})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "by": by,
            "groups": groups,
            "cost_usd": dollars(page.cost_usd_micros),
            "priced": page.priced,
            "records": page.total,
        }),
    ))
}

/// `GET /v1/decisions/{id}` (`id` as it appears in the path): the record; 404 when
/// unknown or another tenant's.
pub(crate) async fn get_json(
    cp: &ControlPlane,
    op: &Operator,
    id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let id = percent_decode(id, false).map_err(|_| not_found())?;
    let record = get(cp, op, &id).await?;
    Ok(json_response(StatusCode::OK, &record))
}

/// One page of the operator's decisions for query `params` (see
/// [`portcullis_audit::build_query`]), and the query it ran.
pub async fn query(
    cp: &ControlPlane,
    op: &Operator,
    params: &[(String, String)],
) -> Result<(AuditPage, AuditQuery), ApiError> {
    let q = operator_query(cp, op, params)?;
    let page = cp.store().query_audit(&q).await.map_err(store_error)?;
    Ok((page, q))
}

/// The audit query of `params` within the operator's tenant.
fn operator_query(
    cp: &ControlPlane,
    op: &Operator,
    params: &[(String, String)],
) -> Result<AuditQuery, ApiError> {
    let q = build_query(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        Some(&op.tenant),
        now_ms(cp),
    )
    .map_err(|e| e.to_api_error())?;
    Ok(AuditQuery {
        include_unattributed: scope(op).include_unattributed,
        ..q
    })
}

/// The audit record `id`; 404 when unknown or another tenant's.
pub async fn get(cp: &ControlPlane, op: &Operator, id: &str) -> Result<Value, ApiError> {
    let store = cp.store();
    let mut found = store
        .get_audit(Some(&op.tenant), id)
        .await
        .map_err(store_error)?;
    if found.is_none() && is_platform(op) {
        found = store.get_audit(Some(""), id).await.map_err(store_error)?;
    }
    found.ok_or_else(not_found)
}

/// The records an operator may see: its tenant's, and for the platform tenant also the
/// unattributed ones. Every read of the audit table goes through this.
pub fn scope(op: &Operator) -> Scope {
    Scope {
        tenant: Some(op.tenant.clone()),
        include_unattributed: is_platform(op),
    }
}

/// Whether the operator belongs to the platform tenant, which also sees unattributed records.
fn is_platform(op: &Operator) -> bool {
    op.tenant == DEFAULT_PLATFORM_TENANT
}

fn not_found() -> ApiError {
    ApiError::new(
        Status::NotFound,
        "not_found",
        "decision not found",
        ErrorSource::Client,
    )
}

/// The control plane's clock in Unix milliseconds.
pub fn now_ms(cp: &ControlPlane) -> i64 {
    cp.clock()
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Splits and decodes an `application/x-www-form-urlencoded` query string into
/// key/value pairs (empty segments skipped; `key` alone has an empty value).
pub fn decode_query(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut out = Vec::new();
    for segment in raw.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = segment.split_once('=').unwrap_or((segment, ""));
        let key = percent_decode(k, true).map_err(|reason| QueryError {
            field: k.to_owned(),
            reason,
        })?;
        let value = percent_decode(v, true).map_err(|reason| QueryError {
            field: key.clone(),
            reason,
        })?;
        out.push((key, value));
    }
    Ok(out)
}

/// Percent-decodes `s` (and `+` as a space when `plus` is set); malformed escapes and
/// non-UTF-8 results are refused.
pub fn percent_decode(s: &str, plus: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "malformed percent-encoding".to_owned())?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not valid UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_queries() {
        let q = decode_query("agent_id=a%20b&since=2026-01-01T00:00:00%2B01:00&&model=x+y&limit")
            .unwrap();
        assert_eq!(
            q,
            vec![
                ("agent_id".into(), "a b".into()),
                ("since".into(), "2026-01-01T00:00:00+01:00".into()),
                ("model".into(), "x y".into()),
                ("limit".into(), String::new()),
            ]
        );
        assert!(decode_query("").unwrap().is_empty());
    }

    #[test]
    fn refuses_malformed_escapes() {
        for bad in ["a=%", "a=%4", "a=%zz", "a=%ff", "%e2%82=1"] {
            assert!(decode_query(bad).is_err(), "{bad}");
        }
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
    }
}
