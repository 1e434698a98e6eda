//! Policies from an OPA-compatible bundle server (`policy.bundle_url`).
//!
//! The bundle is fetched with `If-None-Match` (its last `ETag`) and `Prefer: wait=N`; a server
//! that answers `Content-Type: application/vnd.openpolicyagent.bundles` holds the request open
//! until a new revision exists (long polling), any other server is polled every
//! `policy.bundle_poll`. Every bundle is bounded (download and unpacked size, entries) and
//! validated before it replaces the active set; a refused one is logged and keeps the last good
//! set, as a broken file does in a policy directory. The last good bundle is written to
//! `policy.bundle_path` and used at start when the server cannot be reached.

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use portcullis_policy::{read_bundle, Bundle, BundleLimits, EngineConfig, PolicyEngine};
use portcullis_tls::rustls;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The media type a bundle server answers when it supports long polling.
pub const LONG_POLL_CONTENT_TYPE: &str = "application/vnd.openpolicyagent.bundles";

/// Time allowed to connect and receive the headers, on top of the long-poll wait.
const REQUEST_SLACK: Duration = Duration::from_secs(10);
/// Least time between two requests, so a server answering long polls at once cannot spin us.
const MIN_SPACING: Duration = Duration::from_millis(100);

/// Where bundles come from and how they are polled (`[policy]` `bundle_*`).
#[derive(Debug, Clone)]
pub struct BundleSettings {
    /// `http://` or `https://` URL of the bundle.
    pub url: String,
    /// Where the last good bundle is kept.
    pub path: PathBuf,
    /// Delay between polls without long polling, and after a failed poll.
    pub poll: Duration,
    /// `Prefer: wait=N`; zero: no long polling.
    pub long_poll: Duration,
    /// Largest download accepted; a bundle may unpack to four times this.
    pub max_bytes: u64,
    /// Extra CA certificates (PEM files) trusted for an `https://` server.
    pub extra_ca: Vec<PathBuf>,
}

impl BundleSettings {
    /// The bounds a downloaded bundle is read within.
    pub fn limits(&self) -> BundleLimits {
        BundleLimits {
            max_unpacked_bytes: self.max_bytes.saturating_mul(4),
            ..BundleLimits::default()
        }
    }
}

/// One answer of the bundle server.
#[derive(Debug)]
enum Answer {
    /// `304`: the bundle with our ETag is still current.
    NotModified { long_poll: bool },
    /// `200` with a bundle.
    Bundle {
        bytes: Bytes,
        etag: Option<String>,
        long_poll: bool,
    },
    /// `200` with a bundle refused before it was read (larger than the download bound).
    Refused {
        reason: String,
        etag: Option<String>,
        long_poll: bool,
    },
}

/// The TLS client configuration for an `https://` URL (public and system roots, plus
/// `tls.upstream_ca`), built once; `None` for `http://`.
fn client_tls(s: &BundleSettings) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if !s.url.starts_with("https://") {
        return Ok(None);
    }
    portcullis_tls::upstream_client_config(&s.extra_ca, portcullis_tls::ALPN_HTTP11)
        .map(Some)
        .map_err(|e| format!("TLS setup for {}: {e}", s.url))
}

/// Fetches the bundle once: `If-None-Match: etag`, `Prefer: wait=N` when `wait` is set.
async fn fetch(
    s: &BundleSettings,
    client_tls: Option<&Arc<rustls::ClientConfig>>,
    etag: Option<&str>,
    wait: Option<Duration>,
) -> Result<Answer, String> {
    let uri: Uri = s.url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL must be http:// or https://".to_owned()),
    };
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri
        .authority()
        .map_or(host.clone(), |a| a.as_str().to_owned());
    let budget = wait.unwrap_or_default() + REQUEST_SLACK;
    let work = async {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let mut req = Request::get(path)
            .header(header::HOST, authority)
            .header(header::USER_AGENT, "portcullis")
            .header(
                header::ACCEPT,
                "application/gzip, application/vnd.openpolicyagent.bundles",
            );
        if let Some(etag) = etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(w) = wait {
            req = req.header("prefer", format!("wait={}", w.as_secs().max(1)));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let resp = if tls {
            let config = client_tls.ok_or("no TLS configuration for an https:// URL")?;
            let name = portcullis_tls::upstream_server_name(&host).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
            send(TokioIo::new(stream), req).await?
        } else {
            send(TokioIo::new(tcp), req).await?
        };
        let long_poll = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(LONG_POLL_CONTENT_TYPE));
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(Answer::NotModified { long_poll }),
            StatusCode::OK => {
                let etag = resp
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let limit = usize::try_from(s.max_bytes).unwrap_or(usize::MAX);
                match Limited::new(resp.into_body(), limit).collect().await {
                    Ok(body) => Ok(Answer::Bundle {
                        bytes: body.to_bytes(),
                        etag,
                        long_poll,
                    }),
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => Ok(Answer::Refused {
                        reason: format!(
                            "the bundle is larger than policy.bundle_max_bytes = {limit}"
                        ),
                        etag,
                        long_poll,
                    }),
                    Err(e) => Err(format!("reading the bundle: {e}")),
                }
            }
            other => Err(format!("the server answered {other}")),
        }
    };
    tokio::time::timeout(budget, work)
        .await
        .map_err(|_| format!("no answer within {}s", budget.as_secs()))?
}

async fn send<IO>(
    io: TokioIo<IO>,
    req: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        // The connection ends with the response or the timeout; its error is the request's.
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))
}

/// Writes the last good bundle: to a temporary file beside it, then renamed over it.
fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Reads the persisted bundle (the policy CLI commands, and a start with the server down).
pub fn load_persisted(s: &BundleSettings) -> Result<Bundle, String> {
    let bytes = std::fs::read(&s.path).map_err(|e| {
        format!(
            "no persisted policy bundle at {} ({e}); it is written after the first successful \
             download from {}",
            s.path.display(),
            s.url
        )
    })?;
    read_bundle(&bytes, &s.limits()).map_err(|e| format!("{}: {e}", s.path.display()))
}

/// An engine over the bundle: from the server when it answers with a good bundle (which is
/// then persisted), else from the persisted last good bundle. Also returns the ETag to poll
/// with next.
pub async fn start_engine(
    config: EngineConfig,
    clock: Arc<dyn portcullis_core::Clock>,
    s: &BundleSettings,
) -> Result<(PolicyEngine, Option<String>), String> {
    let tls = client_tls(s)?;
    match fetch(s, tls.as_ref(), None, None).await {
        Ok(Answer::Bundle { bytes, etag, .. }) => match read_bundle(&bytes, &s.limits()) {
            Ok(bundle) => {
                let revision = bundle.revision.clone();
                match PolicyEngine::with_bundle(config.clone(), clock.clone(), bundle) {
                    Ok(engine) => {
                        if let Err(e) = persist(&s.path, &bytes) {
                            warn!(path = %s.path.display(), error = %e, "could not persist the policy bundle");
                        }
                        info!(url = %s.url, %revision, "policy bundle loaded");
                        return Ok((engine, etag));
                    }
                    Err(e) => warn!(url = %s.url, %revision, error = %e,
                        "policy bundle refused at start: using the persisted bundle"),
                }
            }
            Err(e) => warn!(url = %s.url, error = %e,
                "policy bundle refused at start: using the persisted bundle"),
        },
        Ok(Answer::Refused { reason, .. }) => warn!(url = %s.url, error = %reason,
            "policy bundle refused at start: using the persisted bundle"),
        Ok(Answer::NotModified { .. }) => {
            warn!(url = %s.url, "the bundle server answered 304 to a first request: using the persisted bundle")
        }
        Err(e) => warn!(url = %s.url, error = %e,
            "policy bundle server unreachable at start: using the persisted bundle"),
    }
    let bundle = load_persisted(s)?;
    let revision = bundle.revision.clone();
    let engine = PolicyEngine::with_bundle(config, clock, bundle)
        .map_err(|e| format!("{}: {e}", s.path.display()))?;
    info!(path = %s.path.display(), %revision, "policy bundle loaded from the last good copy");
    Ok((engine, None))
}

/// Applies a downloaded bundle: read within bounds, compiled, swapped in and persisted; a
/// refused one is logged and recorded as a failed reload, the last good set stays.
fn apply(engine: &PolicyEngine, s: &BundleSettings, bytes: &[u8]) {
    let bundle = match read_bundle(bytes, &s.limits()) {
        Ok(b) => b,
        Err(e) => {
            warn!(url = %s.url, error = %e, "policy bundle refused: keeping the last good set");
            engine.record_bundle_error("bundle", &e.to_string());
            return;
        }
    };
    let revision = bundle.revision.clone();
    match engine.reload_bundle(bundle) {
        Ok(_) => {
            if let Err(e) = persist(&s.path, bytes) {
                warn!(path = %s.path.display(), error = %e, "could not persist the policy bundle");
            }
            info!(url = %s.url, %revision, "policy bundle applied");
        }
        Err(e) => {
            warn!(url = %s.url, %revision, error = %e, "policy bundle refused: keeping the last good set")
        }
    }
}

/// The running poller; dropping it stops polling.
#[derive(Debug)]
pub struct BundlePoller(JoinHandle<()>);

impl Drop for BundlePoller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls the bundle server for new revisions, applying each to `engine`.
pub fn spawn(engine: Arc<PolicyEngine>, s: BundleSettings, etag: Option<String>) -> BundlePoller {
    BundlePoller(tokio::spawn(poll_loop(engine, s, etag)))
}

async fn poll_loop(engine: Arc<PolicyEngine>, s: BundleSettings, mut etag: Option<String>) {
    // Built once; it was built at start already, so it cannot fail differently here.
    let tls = match client_tls(&s) {
        Ok(t) => t,
        Err(e) => {
            warn!(url = %s.url, error = %e, "policy bundle polling stopped");
            return;
        }
    };
    let wait = (!s.long_poll.is_zero()).then_some(s.long_poll);
    // Long polling is used once the server has said it supports it.
    let mut long_poll = false;
    let mut failing = false;
    loop {
        let started = Instant::now();
        let asked = if long_poll { wait } else { None };
        let answer = fetch(&s, tls.as_ref(), etag.as_deref(), asked).await;
        let delay = match answer {
            Ok(answer) => {
                if failing {
                    info!(url = %s.url, "policy bundle server reachable again");
                    failing = false;
                }
                let (lp, bytes) = match answer {
                    Answer::NotModified { long_poll } => (long_poll, None),
                    Answer::Refused {
                        reason,
                        etag: new,
                        long_poll,
                    } => {
                        // Not asked for again until the server has another bundle.
                        etag = new;
                        warn!(url = %s.url, error = %reason,
                            "policy bundle refused: keeping the last good set");
                        engine.record_bundle_error("bundle", &reason);
                        (long_poll, None)
                    }
                    Answer::Bundle {
                        bytes,
                        etag: new,
                        long_poll,
                    } => {
                        etag = new;
                        (long_poll, Some(bytes))
                    }
                };
                if let Some(bytes) = bytes {
                    let (engine, settings) = (engine.clone(), s.clone());
                    // Reading and compiling is CPU work: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || apply(&engine, &settings, &bytes))
                        .await;
                }
                long_poll = lp && wait.is_some();
                // Without an ETag the server cannot hold the next poll: wait the interval.
                if long_poll && etag.is_some() {
                    MIN_SPACING.saturating_sub(started.elapsed())
                } else {
                    s.poll
                }
            }
            Err(e) => {
                if !failing {
                    warn!(url = %s.url, error = %e,
                        "policy bundle poll failed: keeping the current set, retrying every poll");
                    failing = true;
                }
                long_poll = false;
                s.poll
            }
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisting_replaces_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("portcullis-bundle-{}", std::process::id()));
        let path = dir.join("sub").join("b.tar.gz");
        persist(&path, b"one").unwrap();
        persist(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.join("sub").join("b.tar.gz.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
