//! Sending an alert to one webhook: signed POST, per-attempt timeout, bounded retries with
//! exponential backoff and jitter. Runs in the webhook's own task, never on a request.

use crate::alert::{sign, Alert, SIGNATURE_HEADER};
use crate::metrics::{AlertMetrics, Outcome};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Uri};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the gateway POSTs (HTTP client with TLS in the binary; a fake in tests).
pub trait Transport: Send + Sync + 'static {
    /// POSTs `body` with `headers` to `url`; the response status, or why there is none.
    fn post(
        &self,
        url: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'static, Result<u16, String>>;
}

/// The body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The alert as JSON.
    Json,
    /// `{"text": "..."}` for a Slack incoming webhook.
    Slack,
}

/// A webhook as configured, its secret read.
#[derive(Clone)]
pub struct Webhook {
    /// Metric label and log field.
    pub name: String,
    /// Where to POST (never logged: a Slack URL is itself a secret).
    pub url: Uri,
    /// Body format.
    pub format: Format,
    /// HMAC key; `None`: no signature header.
    pub secret: Option<Vec<u8>>,
    /// Longest wait for one attempt.
    pub timeout: Duration,
    /// Retries after a failed attempt.
    pub max_retries: u32,
    /// First retry delay (doubled per retry, at most [`MAX_BACKOFF`], with jitter).
    pub retry_backoff: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("signed", &self.secret.is_some())
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The request of `alert`: its body in this webhook's format and the headers (content
    /// type, the alert id, and the signature when a secret is set).
    pub fn request(&self, alert: &Alert) -> (HeaderMap, Bytes) {
        let body = match self.format {
            Format::Json => alert.json(),
            Format::Slack => alert.slack(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("portcullis/", env!("CARGO_PKG_VERSION"))),
        );
        if let Ok(v) = HeaderValue::from_str(&alert.id) {
            h.insert("x-portcullis-alert-id", v);
        }
        if let Some(secret) = &self.secret {
            if let Ok(v) = HeaderValue::from_str(&sign(secret, &body)) {
                h.insert(SIGNATURE_HEADER, v);
            }
        }
        (h, body)
    }

    /// The wait before retry number `retry` (0-based): `retry_backoff · 2^retry`, at most
    /// [`MAX_BACKOFF`], of which a random part (up to half) is left out so replicas and
    /// webhooks that failed together do not retry in step.
    pub fn backoff(&self, retry: u32) -> Duration {
        let full = self
            .retry_backoff
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(MAX_BACKOFF);
        let jitter = rand::random::<f64>() * 0.5;
        full.mul_f64(1.0 - jitter)
    }

    /// Sends `alert` until it is accepted, refused, or the attempts are spent.
    pub async fn deliver(&self, transport: &dyn Transport, alert: &Alert) -> Outcome {
        let (headers, body) = self.request(alert);
        let mut retry = 0;
        loop {
            let attempt = transport.post(&self.url, headers.clone(), body.clone());
            let why = match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(s)) if (200..300).contains(&s) => return Outcome::Ok,
                Ok(Ok(s)) if (400..500).contains(&s) && s != 408 && s != 429 => {
                    warn!(webhook = %self.name, alert = %alert.id, status = s, "webhook refused the alert");
                    return Outcome::Rejected;
                }
                Ok(Ok(s)) => format!("status {s}"),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {:?}", self.timeout),
            };
            if retry >= self.max_retries {
                warn!(webhook = %self.name, alert = %alert.id, attempts = retry + 1, error = %why, "alert not delivered");
                return Outcome::Failed;
            }
            debug!(webhook = %self.name, alert = %alert.id, error = %why, "alert delivery failed; retrying");
            tokio::time::sleep(self.backoff(retry)).await;
            retry += 1;
        }
    }
}

/// Delivers every alert `rx` receives to `hook`, one after the other, until every sender is
/// gone.
pub(crate) async fn run(
    hook: Webhook,
    transport: Arc<dyn Transport>,
    mut rx: mpsc::Receiver<Arc<Alert>>,
    metrics: AlertMetrics,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(alert) = rx.recv().await {
        let outcome = hook.deliver(transport.as_ref(), &alert).await;
        metrics.sent(&hook.name, outcome);
        pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BudgetUse, Period, Scope};
    use std::sync::Mutex;

    /// Answers each POST with the next scripted result (the last one repeats), recording
    /// the requests; `None` never answers.
    #[derive(Default)]
    pub(crate) struct Scripted {
        pub(crate) answers: Mutex<Vec<Option<Result<u16, String>>>>,
        pub(crate) seen: Mutex<Vec<(HeaderMap, Bytes)>>,
    }

    impl Transport for Scripted {
        fn post(&self, _: &Uri, h: HeaderMap, b: Bytes) -> BoxFuture<'static, Result<u16, String>> {
            self.seen.lock().unwrap().push((h, b));
            let mut a = self.answers.lock().unwrap();
            let next = if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            };
            Box::pin(async move {
                match next {
                    Some(r) => r,
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn alert() -> Alert {
        let u = BudgetUse {
            scope: Scope::Agent,
            id: "bot",
            tenant: "acme",
            budget: "tokens_per_day",
            spent: 500.0,
            limit: 1000.0,
            period: Period {
                start: 0,
                end: 86_400,
            },
        };
        Alert::new("id1".into(), 1000, &u, 0.5)
    }

    fn hook(retries: u32) -> Webhook {
        Webhook {
            name: "ops".into(),
            url: Uri::from_static("http://127.0.0.1:9/hook"),
            format: Format::Json,
            secret: Some(b"s3cret".to_vec()),
            timeout: Duration::from_secs(1),
            max_retries: retries,
            retry_backoff: Duration::from_millis(100),
        }
    }

    fn scripted(answers: Vec<Option<Result<u16, String>>>) -> Scripted {
        Scripted {
            answers: Mutex::new(answers),
            seen: Mutex::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_failures_then_succeeds_with_the_same_signed_body() {
        let t = scripted(vec![
            Some(Ok(500)),
            Some(Err("refused".into())),
            None,
            Some(Ok(204)),
        ]);
        assert_eq!(hook(3).deliver(&t, &alert()).await, Outcome::Ok);
        let seen = t.seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "500, connection error, timeout, then 204");
        let (h, body) = &seen[0];
        assert_eq!(h[SIGNATURE_HEADER], sign(b"s3cret", body).as_str());
        assert_eq!(h["x-portcullis-alert-id"], "id1");
        assert_eq!(h["content-type"], "application/json");
        assert!(
            seen.iter().all(|(_, b)| b == body),
            "every attempt sends the same bytes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_client_errors_are_not_retried() {
        let t = scripted(vec![Some(Ok(503))]);
        assert_eq!(hook(2).deliver(&t, &alert()).await, Outcome::Failed);
        assert_eq!(
            t.seen.lock().unwrap().len(),
            3,
            "one attempt and two retries"
        );
        let t = scripted(vec![Some(Ok(429)), Some(Ok(200))]);
        assert_eq!(
            hook(2).deliver(&t, &alert()).await,
            Outcome::Ok,
            "429 is retried"
        );
        let t = scripted(vec![Some(Ok(401))]);
        assert_eq!(hook(5).deliver(&t, &alert()).await, Outcome::Rejected);
        assert_eq!(t.seen.lock().unwrap().len(), 1);
        let t = scripted(vec![None]);
        assert_eq!(
            hook(1).deliver(&t, &alert()).await,
            Outcome::Failed,
            "a webhook that never answers"
        );
        assert_eq!(t.seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let h = hook(10);
        for retry in 0..4u32 {
            let full = Duration::from_millis(100 * (1 << retry));
            for _ in 0..50 {
                let d = h.backoff(retry);
                assert!(d <= full && d >= full / 2, "retry {retry}: {d:?}");
            }
        }
        assert!(h.backoff(40) <= MAX_BACKOFF);
        assert!(h.backoff(40) >= MAX_BACKOFF / 2);
    }

    #[test]
    fn slack_bodies_and_unsigned_hooks() {
        let mut h = hook(0);
        h.format = Format::Slack;
        h.secret = None;
        let (headers, body) = h.request(&alert());
        assert!(headers.get(SIGNATURE_HEADER).is_none());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["text"].as_str().unwrap().contains("reached 50%"));
        assert!(
            !format!("{h:?}").contains("127.0.0.1"),
            "the URL is never shown"
        );
    }
}
