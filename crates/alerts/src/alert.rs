//! One fired alert: its JSON and Slack bodies, its signature, its audit record.

use crate::budget::{BudgetUse, Period, Scope};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use portcullis_core::{format_rfc3339_ms, AuditRecord, RequestKind, Verdict};
use serde_json::{json, Number, Value};
use sha2::Sha256;

/// The signature header: `sha256=<hex HMAC-SHA256 of the body bytes>`.
pub const SIGNATURE_HEADER: &str = "x-portcullis-signature";

/// A threshold one budget crossed for the first time in its period.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Unique, time-ordered id (also the audit record's id).
    pub id: String,
    /// When it fired, Unix milliseconds.
    pub ts_ms: i64,
    /// Whose budget.
    pub scope: Scope,
    /// The agent (`None` for a tenant budget).
    pub agent: Option<String>,
    /// The tenant.
    pub tenant: String,
    /// The budget's name (`tokens_per_day`, ...).
    pub budget: &'static str,
    /// The fraction reached.
    pub threshold: f64,
    /// Spent when it fired.
    pub spent: f64,
    /// The budget.
    pub limit: f64,
    /// The period.
    pub period: Period,
}

impl Alert {
    /// The alert for threshold `threshold` of `u`.
    pub fn new(id: String, ts_ms: i64, u: &BudgetUse<'_>, threshold: f64) -> Self {
        Self {
            id,
            ts_ms,
            scope: u.scope,
            agent: (u.scope == Scope::Agent).then(|| u.id.to_owned()),
            tenant: u.tenant.to_owned(),
            budget: u.budget,
            threshold,
            spent: u.spent,
            limit: u.limit,
            period: u.period,
        }
    }

    /// The id of the budget it is about: the agent's, or the tenant's.
    pub fn subject(&self) -> &str {
        self.agent.as_deref().unwrap_or(&self.tenant)
    }

    /// The key that makes it fire once across replicas: scope, budget, period, threshold, id.
    pub fn dedupe_key(&self) -> String {
        format!(
            "alert:{}:{}:{}:{}:{}",
            self.scope.as_str(),
            self.budget,
            self.period.start,
            number_text(self.threshold),
            self.subject()
        )
    }

    /// The JSON body (`format = "json"`).
    pub fn json(&self) -> Bytes {
        let doc = json!({
            "type": "budget_threshold",
            "scope": self.scope.as_str(),
            "agent": self.agent,
            "tenant": self.tenant,
            "budget": self.budget,
            "threshold": Number::from_f64(self.threshold).map_or(Value::Null, Value::Number),
            "spent": number(self.spent),
            "limit": number(self.limit),
            "period": {
                "start": format_rfc3339_ms(self.period.start.saturating_mul(1000)),
                "end": format_rfc3339_ms(self.period.end.saturating_mul(1000)),
            },
            "ts": format_rfc3339_ms(self.ts_ms),
            "id": self.id,
        });
        Bytes::from(doc.to_string())
    }

    /// The Slack incoming-webhook body (`format = "slack"`): one readable line, with `&`, `<`
    /// and `>` of every id escaped as Slack requires (ids may come from agents).
    pub fn slack(&self) -> Bytes {
        Bytes::from(json!({ "text": self.line(true) }).to_string())
    }

    /// One line saying what happened; `slack` escapes ids for Slack's markup.
    pub fn line(&self, slack: bool) -> String {
        let esc = |s: &str| if slack { slack_escape(s) } else { s.to_owned() };
        let who = match &self.agent {
            Some(a) => format!("agent {} (tenant {})", esc(a), esc(&self.tenant)),
            None => format!("tenant {}", esc(&self.tenant)),
        };
        format!(
            "Portcullis: {who} reached {}% of its {} budget: {} of {} (period {} to {})",
            number_text(self.threshold * 100.0),
            self.budget,
            number_text(self.spent),
            number_text(self.limit),
            format_rfc3339_ms(self.period.start.saturating_mul(1000)),
            format_rfc3339_ms(self.period.end.saturating_mul(1000)),
        )
    }

    /// The audit record of the alert: kind `alert`, the alert's id, and `reasons` saying
    /// which budget reached which threshold.
    pub fn audit_record(&self) -> AuditRecord {
        let mut r = AuditRecord::new(
            self.id.clone(),
            self.ts_ms,
            self.tenant.clone(),
            self.agent.clone().unwrap_or_default(),
            RequestKind::Alert,
            Verdict::Allow,
        );
        r.reasons = vec![format!("budget_threshold: {}", self.line(false))];
        r
    }
}

/// `sha256=<hex HMAC-SHA256 of body>` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!(
        "sha256={}",
        portcullis_core::to_hex(&mac.finalize().into_bytes())
    )
}

/// Slack's escaping of message text: `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;` (so an id
/// cannot open a link or a mention); control characters become spaces.
pub fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A whole number as a JSON integer, anything else as a float.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        return Value::Number(Number::from(v as i64));
    }
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A number as people write it: `800`, `12.5`, `33.33`, and below one up to six decimals
/// (`0.0015`: a dollar budget's spend in micro-dollars is not rounded away).
fn number_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        return format!("{}", v as i64);
    }
    let s = if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.6}")
    };
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(agent: &str) -> Alert {
        let u = BudgetUse {
            scope: Scope::Agent,
            id: agent,
            tenant: "acme",
            budget: "tokens_per_day",
            spent: 800.0,
            limit: 1000.0,
            period: Period {
                start: 1_796_256_000,
                end: 1_796_342_400,
            },
        };
        Alert::new("0190abc".into(), 1_796_300_000_123, &u, 0.8)
    }

    #[test]
    fn hmac_sha256_known_answers() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // RFC 4231 test case 1 (a 20-byte key of 0x0b).
        assert_eq!(
            sign(&[0x0b; 20], b"Hi There"),
            "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn the_json_payload_names_everything() {
        let a = alert("bot");
        let v: Value = serde_json::from_slice(&a.json()).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "budget_threshold", "scope": "agent", "agent": "bot", "tenant": "acme",
                "budget": "tokens_per_day", "threshold": 0.8, "spent": 800, "limit": 1000,
                "period": {"start": "2026-12-03T00:00:00.000Z", "end": "2026-12-04T00:00:00.000Z"},
                "ts": "2026-12-03T12:13:20.123Z", "id": "0190abc",
            })
        );
        let mut t = a.clone();
        t.scope = Scope::Tenant;
        t.agent = None;
        t.spent = 12.5;
        let v: Value = serde_json::from_slice(&t.json()).unwrap();
        assert_eq!(
            (&v["scope"], &v["agent"], &v["spent"]),
            (&json!("tenant"), &Value::Null, &json!(12.5))
        );
        assert_eq!(
            t.dedupe_key(),
            "alert:tenant:tokens_per_day:1796256000:0.8:acme"
        );
        assert_eq!(
            a.dedupe_key(),
            "alert:agent:tokens_per_day:1796256000:0.8:bot"
        );
    }

    #[test]
    fn slack_text_escapes_what_an_agent_controls() {
        let a = alert("<!channel> & <http://evil|click>");
        let v: Value = serde_json::from_slice(&a.slack()).unwrap();
        let text = v["text"].as_str().unwrap();
        assert_eq!(
            text,
            "Portcullis: agent &lt;!channel&gt; &amp; &lt;http://evil|click&gt; (tenant acme) \
             reached 80% of its tokens_per_day budget: 800 of 1000 \
             (period 2026-12-03T00:00:00.000Z to 2026-12-04T00:00:00.000Z)"
        );
        assert!(!text.contains('<') && !text.contains('>'));
        assert_eq!(slack_escape("a\nb\u{7}c"), "a b c");
    }

    #[test]
    fn the_audit_record_is_an_alert_kind_with_the_reason() {
        let r = alert("bot").audit_record();
        assert_eq!((r.kind, r.verdict), (RequestKind::Alert, Verdict::Allow));
        assert_eq!(
            (r.id.as_str(), r.agent_id.as_str(), r.tenant.as_str()),
            ("0190abc", "bot", "acme")
        );
        assert_eq!(r.reasons.len(), 1);
        assert!(
            r.reasons[0].starts_with("budget_threshold: Portcullis: agent bot"),
            "{:?}",
            r.reasons
        );
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["kind"], "alert");
    }

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(number_text(80.0), "80");
        assert_eq!(number_text(33.333), "33.33");
        assert_eq!(number_text(12.5), "12.5");
        assert_eq!(number(3.0), json!(3));
        assert_eq!(number(f64::NAN), Value::Null);
    }
}
