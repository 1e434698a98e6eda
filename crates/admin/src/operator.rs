//! Operator authentication: `Authorization: Bearer <api key>` looked up by SHA-256 in
//! the store, with a short-lived cache so a burst of calls costs one query while a
//! revoked key stops working within [`KEY_CACHE_TTL`].

use portcullis_core::{ApiError, ErrorSource, Status};
use portcullis_store::{sha256_hex, ApiKeyRecord, Role, Store};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::warn;

/// The tenant whose admins may change policy modes unless configured otherwise
/// (the tenant `portcullis admin key create` uses by default).
pub const DEFAULT_PLATFORM_TENANT: &str = "default";

/// How long a key lookup (found or not) is trusted. Below one second, so a revocation
/// through the CLI or the store applies within a second.
pub const KEY_CACHE_TTL: Duration = Duration::from_millis(500);

/// Most cached lookups; the cache is emptied when full (a flood of random keys cannot
/// grow it without bound).
const KEY_CACHE_CAPACITY: usize = 1024;

/// Longest `Authorization` header value considered.
const MAX_AUTHORIZATION_LEN: usize = 1024;

/// The authenticated caller of an admin API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Tenant the key is bound to; the caller sees nothing outside it.
    pub tenant: String,
    /// Role the key grants.
    pub role: Role,
    /// Key id (for logs; never the key).
    pub key_id: String,
}

impl Operator {
    /// Whether the operator may change things (role `admin`).
    pub fn can_write(&self) -> bool {
        self.role == Role::Admin
    }

    /// 403 `forbidden` unless the operator may change things: every write operation
    /// calls this itself, whichever front end (API or console) asked for it.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.can_write() {
            Ok(())
        } else {
            Err(ApiError::new(
                Status::Forbidden,
                "forbidden",
                "role viewer may only read",
                ErrorSource::Policy,
            ))
        }
    }
}

impl From<ApiKeyRecord> for Operator {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            tenant: r.tenant,
            role: r.role,
            key_id: r.id,
        }
    }
}

/// Cached key lookups by key hash.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<String, (Instant, Option<Operator>)>>,
}

impl KeyCache {
    fn get(&self, hash: &str, now: Instant) -> Option<Option<Operator>> {
        let map = self.entries.lock().ok()?;
        match map.get(hash) {
            Some((at, op)) if now.saturating_duration_since(*at) < KEY_CACHE_TTL => {
                Some(op.clone())
            }
            _ => None,
        }
    }

    fn put(&self, hash: String, now: Instant, op: Option<Operator>) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= KEY_CACHE_CAPACITY {
                map.clear();
            }
            map.insert(hash, (now, op));
        }
    }

    /// Forgets every cached lookup.
    pub(crate) fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }
}

/// 401 `unauthorized`, the same body whatever was wrong with the credentials.
pub(crate) fn unauthorized() -> ApiError {
    ApiError::new(
        Status::Unauthorized,
        "unauthorized",
        "a valid operator API key is required: Authorization: Bearer <key>",
        ErrorSource::Client,
    )
}

/// Extracts the bearer key from an `Authorization` header value.
pub(crate) fn bearer(value: Option<&[u8]>) -> Option<&str> {
    let v = value?;
    if v.len() > MAX_AUTHORIZATION_LEN {
        return None;
    }
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, key) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = key.trim();
    if key.is_empty()
        || key
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return None;
    }
    Some(key)
}

/// Authenticates the `Authorization` header against the store (through `cache`).
pub(crate) async fn authenticate(
    store: &Store,
    cache: &KeyCache,
    header: Option<&[u8]>,
) -> Result<Operator, ApiError> {
    let key = bearer(header).ok_or_else(unauthorized)?;
    authenticate_key(store, cache, key).await
}

/// Authenticates a plaintext operator key against the store (through `cache`): the
/// check behind the API's bearer header and the console's sign-in form.
pub(crate) async fn authenticate_key(
    store: &Store,
    cache: &KeyCache,
    key: &str,
) -> Result<Operator, ApiError> {
    if key.is_empty()
        || key.len() > MAX_AUTHORIZATION_LEN
        || key
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(unauthorized());
    }
    let hash = sha256_hex(key);
    let now = Instant::now();
    if let Some(cached) = cache.get(&hash, now) {
        return cached.ok_or_else(unauthorized);
    }
    let found = match store.find_api_key_by_hash(&hash).await {
        Ok(r) => r.map(Operator::from),
        Err(e) => {
            warn!(error = %e, "operator key lookup failed");
            return Err(ApiError::new(
                Status::ServiceUnavailable,
                "store_unavailable",
                "the store is unavailable; try again",
                ErrorSource::Internal,
            ));
        }
    };
    cache.put(hash, now, found.clone());
    found.ok_or_else(unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some(b"Bearer pck_abc")), Some("pck_abc"));
        assert_eq!(bearer(Some(b"bearer   pck_abc ")), Some("pck_abc"));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic pck_abc",
            b"Bearer a b",
            b"Bearer \xff\xfe",
            b"pck_abc",
        ] {
            assert_eq!(bearer(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(bearer(None), None);
        let long = format!("Bearer {}", "a".repeat(2000));
        assert_eq!(bearer(Some(long.as_bytes())), None);
    }

    #[test]
    fn cache_expires_and_is_bounded() {
        let c = KeyCache::default();
        let t0 = Instant::now();
        let op = Operator {
            tenant: "acme".into(),
            role: Role::Viewer,
            key_id: "key_1".into(),
        };
        c.put("h".into(), t0, Some(op.clone()));
        assert_eq!(c.get("h", t0), Some(Some(op)));
        assert_eq!(c.get("h", t0 + KEY_CACHE_TTL), None);
        c.put("miss".into(), t0, None);
        assert_eq!(c.get("miss", t0), Some(None));
        for i in 0..KEY_CACHE_CAPACITY + 5 {
            c.put(format!("k{i}"), t0, None);
        }
        assert!(c.entries.lock().map(|m| m.len()).unwrap_or(0) <= KEY_CACHE_CAPACITY);
        c.clear();
        assert_eq!(c.get("k1", t0), None);
    }
}
