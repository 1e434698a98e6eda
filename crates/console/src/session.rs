//! Sessions: a random 256-bit id in an `HttpOnly; SameSite=Strict; Path=/ui` cookie, its
//! SHA-256 in the store (so every gateway on the store knows it and a database reader
//! cannot use it), a CSRF token derived from the id, sign-in with an operator API key
//! (checked like the API's bearer key, never kept) or from a trusted proxy's headers.

use crate::settings::{ConsoleSettings, TrustedHeaders};
use crate::web;
use http::HeaderMap;
use portcullis_admin::{ControlPlane, Operator};
use portcullis_core::ApiError;
use portcullis_store::{sha256_hex, ConsoleSession, Role, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "portcullis_session";
/// Length of a session id in the cookie: 32 bytes, hex.
const ID_LEN: usize = 64;
/// A session's `last_seen` is written at most this often (seconds).
const TOUCH_EVERY: u64 = 60;
/// Longest user or e-mail taken from a trusted header.
const MAX_SUBJECT: usize = 256;

/// A signed-in operator.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The operator the session acts as (its tenant and role are checked by every operation).
    pub(crate) operator: Operator,
    /// Who signed in, for display.
    pub(crate) subject: String,
    /// The CSRF token every state-changing request must carry.
    pub(crate) csrf: String,
    /// The store key (SHA-256 of the id), for sign-out.
    pub(crate) id_sha256: String,
}

/// A new random session id (hex of 32 bytes from the thread's CSPRNG).
fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The CSRF token of session `id`: a hash of the id, so it needs no storage, is the same
/// on every gateway, and reveals nothing of the id.
fn csrf_of(id: &str) -> String {
    let d = Sha256::new()
        .chain_update(b"portcullis-console-csrf\0")
        .chain_update(id.as_bytes())
        .finalize();
    d.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `given` is the session's CSRF token (constant time).
pub(crate) fn csrf_ok(session: &Session, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// The `Set-Cookie` value starting session `id`.
pub(crate) fn set_cookie(id: &str, settings: &ConsoleSettings) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        settings.session_ttl.as_secs(),
        if settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    )
}

/// The `Set-Cookie` value ending the session in the browser.
pub(crate) fn clear_cookie(settings: &ConsoleSettings) -> String {
    format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    )
}

/// The session id in the request's cookie, when it has the right shape.
fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    web::cookie(headers, COOKIE)
        .filter(|v| v.len() == ID_LEN && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn store_down(e: StoreError) -> ApiError {
    warn!(error = %e, "console session store operation failed");
    ApiError::new(
        portcullis_core::Status::ServiceUnavailable,
        "store_unavailable",
        "the store is unavailable; try again",
        portcullis_core::ErrorSource::Internal,
    )
}

/// The live session of the request's cookie, if any.
pub(crate) async fn current(
    store: &Store,
    headers: &HeaderMap,
    settings: &ConsoleSettings,
    now: u64,
) -> Result<Option<Session>, ApiError> {
    let Some(id) = cookie_id(headers) else {
        return Ok(None);
    };
    let id_sha256 = sha256_hex(id);
    let found = store
        .console_session(&id_sha256, now, settings.idle_timeout.as_secs())
        .await
        .map_err(store_down)?;
    let Some(s) = found else {
        return Ok(None);
    };
    if now.saturating_sub(s.last_seen) >= TOUCH_EVERY {
        store
            .touch_console_session(&id_sha256, now)
            .await
            .map_err(store_down)?;
    }
    Ok(Some(Session {
        operator: operator_of(&s),
        subject: s.subject,
        csrf: csrf_of(id),
        id_sha256,
    }))
}

fn operator_of(s: &ConsoleSession) -> Operator {
    Operator {
        tenant: s.tenant.clone(),
        role: s.role,
        key_id: s
            .key_id
            .clone()
            .unwrap_or_else(|| format!("console:{}", s.subject)),
    }
}

/// Starts a session for `record`; returns its id (for the cookie) and the session.
async fn start(store: &Store, record: &ConsoleSession) -> Result<(String, Session), ApiError> {
    let id = new_id();
    let id_sha256 = sha256_hex(&id);
    store
        .create_console_session(&id_sha256, record)
        .await
        .map_err(store_down)?;
    let session = Session {
        operator: operator_of(record),
        subject: record.subject.clone(),
        csrf: csrf_of(&id),
        id_sha256,
    };
    Ok((id, session))
}

/// Signs in with an operator API key: the same check as the API's bearer key. The key
/// is used for this check only: neither the store nor the browser keeps it.
pub(crate) async fn sign_in_with_key(
    cp: &ControlPlane,
    key: &str,
    settings: &ConsoleSettings,
    now: u64,
    peer: SocketAddr,
) -> Result<(String, Session), ApiError> {
    let op = portcullis_admin::ops::sign_in(cp, key.trim()).await?;
    let started = start(
        cp.store(),
        &ConsoleSession {
            key_id: Some(op.key_id.clone()),
            tenant: op.tenant.clone(),
            role: op.role,
            subject: format!("key {}", op.key_id),
            created_at: now,
            last_seen: now,
            expires_at: now.saturating_add(settings.session_ttl.as_secs()),
        },
    )
    .await?;
    info!(operator = %op.key_id, tenant = %op.tenant, role = %op.role, client = %peer, "console sign-in");
    Ok(started)
}

/// What a trusted proxy asserts about the request's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asserted {
    /// User (or e-mail) shown as the subject.
    pub(crate) subject: String,
    /// Mapped tenant.
    pub(crate) tenant: String,
    /// Mapped role.
    pub(crate) role: Role,
}

/// The identity trusted headers assert, when the request comes from a trusted source.
/// `Ok(None)`: no assertion (header sign-in off, untrusted source, or no user header);
/// `Err`: a trusted proxy named a user who is in no mapped group (403).
pub(crate) fn asserted(
    t: &TrustedHeaders,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Option<Asserted>, ApiError> {
    if !t.trusts(peer.ip()) {
        return Ok(None);
    }
    let text = |name: &http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty() && v.len() <= MAX_SUBJECT && !v.bytes().any(|b| b.is_ascii_control())
            })
    };
    let Some(user) = text(&t.user) else {
        return Ok(None);
    };
    let subject = text(&t.email).unwrap_or(user).to_owned();
    let groups = headers
        .get(&t.groups)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let groups = groups.split(',').map(str::trim).filter(|g| !g.is_empty());
    match t.role_for(groups) {
        Some((tenant, role)) => Ok(Some(Asserted {
            subject,
            tenant: tenant.to_owned(),
            role,
        })),
        None => Err(ApiError::forbidden(
            "forbidden",
            "your groups give no access to this console",
        )),
    }
}

/// Starts a session for an identity asserted by a trusted proxy.
pub(crate) async fn sign_in_asserted(
    store: &Store,
    a: &Asserted,
    settings: &ConsoleSettings,
    now: u64,
    peer: SocketAddr,
) -> Result<(String, Session), ApiError> {
    let started = start(
        store,
        &ConsoleSession {
            key_id: None,
            tenant: a.tenant.clone(),
            role: a.role,
            subject: a.subject.clone(),
            created_at: now,
            last_seen: now,
            expires_at: now.saturating_add(settings.session_ttl.as_secs()),
        },
    )
    .await?;
    info!(user = %a.subject, tenant = %a.tenant, role = %a.role, client = %peer, "console sign-in by trusted header");
    Ok(started)
}

/// Ends the session in the store.
pub(crate) async fn sign_out(store: &Store, s: &Session) -> Result<(), ApiError> {
    store
        .delete_console_session(&s.id_sha256)
        .await
        .map_err(store_down)?;
    info!(operator = %s.operator.key_id, "console sign-out");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex_and_tokens_derive_from_them() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), ID_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(csrf_of(&a), csrf_of(&a));
        assert_ne!(csrf_of(&a), csrf_of(&b));
        assert_ne!(
            csrf_of(&a),
            sha256_hex(&a),
            "the token is not the store key"
        );
    }

    #[test]
    fn cookies_carry_the_flags() {
        let mut s = ConsoleSettings::default();
        let c = set_cookie("ab", &s);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"));
        assert!(!c.contains("Secure"));
        s.secure_cookie = true;
        assert!(set_cookie("ab", &s).ends_with("; Secure"));
        assert!(clear_cookie(&s).contains("Max-Age=0"));
    }
}
