//! Shared harness for the end-to-end tests: the real `portcullis` binary with a
//! temporary config, a local HTTP (and TLS) origin, a raw HTTP/1.1 client,
//! and runners for `curl` and the Python clients.
//!
//! Every wait is bounded by [`TIMEOUT`]; nothing asserts on timing.
#![allow(dead_code, unreachable_pub)]

pub mod server;
pub mod tls_origin;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Digest;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Upper bound for any single wait (process start, a response, an exit).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Size of the large download/upload bodies.
pub const BIG_LEN: usize = 10 * 1024 * 1024;

/// The SSE events the origin sends on `/sse`: the first immediately, the rest
/// only after [`Origin::release`].
pub const SSE_EVENTS: [&str; 3] = [
    "id: 1\nevent: message\ndata: {\"n\":1,\"text\":\"first\"}\n\n",
    "id: 2\nevent: message\ndata: {\"n\":2,\"text\":\"second\"}\n\n",
    "id: 3\nevent: done\ndata: [DONE]\n\n",
];

/// Proxy-related environment variables cleared for every child process so the
/// host environment cannot redirect or bypass the proxy under test.
const PROXY_ENV: [&str; 10] = [
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "PORTCULLIS_CONFIG",
    "PORTCULLIS_LOG",
];

/// A deterministic pseudo-random body of `BIG_LEN` bytes (xorshift64).
pub fn big_body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(BIG_LEN);
        while v.len() < BIG_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(BIG_LEN);
        Bytes::from(v)
    })
    .clone()
}

/// Polls `pred` (bounded by [`TIMEOUT`]) until it holds.
pub fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    let d = sha2::Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------- gateway

/// A running `portcullis serve` process; killed on drop.
pub struct Gateway {
    child: Option<Child>,
    /// Proxy listener address from the banner.
    pub proxy: SocketAddr,
    /// Admin listener address from the banner.
    pub admin: SocketAddr,
    /// The banner line.
    pub banner: String,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Options for [`Gateway::launch`]: authentication on or off, config sections, and
/// files written into the gateway's directory before it starts.
#[derive(Debug, Clone, Default)]
pub struct GatewayOpts {
    /// Require proxy authentication (omit `allow_unauthenticated = true`).
    pub auth: bool,
    /// Lines inside `[proxy]`. `{DIR}` is replaced by the gateway's directory.
    pub proxy_lines: String,
    /// Other sections, appended verbatim. `{DIR}` is replaced by the gateway's directory.
    pub rest: String,
    /// `(relative path, contents)` written before start (directories created).
    pub files: Vec<(String, Vec<u8>)>,
}

/// `[proxy]` lines allowing loopback destinations on `ports`.
pub fn loopback_proxy_section(ports: &[u16]) -> String {
    format!("allowed_ports = {ports:?}\nallow_private = [\"127.0.0.1/32\", \"::1/128\"]\n")
}

impl Gateway {
    /// Starts the gateway allowing 127.0.0.1 and ::1 on `ports`.
    pub fn start_for(ports: &[u16]) -> Self {
        Self::start(&loopback_proxy_section(ports), "")
    }

    /// Starts the gateway. `proxy_lines` go into `[proxy]` (after `listen` and
    /// `allow_unauthenticated`); `rest` is appended verbatim (other sections).
    pub fn start(proxy_lines: &str, rest: &str) -> Self {
        Self::start_on("127.0.0.1:0", "127.0.0.1:0", proxy_lines, rest)
    }

    /// Like [`Gateway::start`] with explicit listen addresses.
    pub fn start_on(proxy_listen: &str, admin_listen: &str, proxy_lines: &str, rest: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = format!(
            "[proxy]\nlisten = \"{proxy_listen}\"\nallow_unauthenticated = true\n{proxy_lines}\n\
             [admin]\nlisten = \"{admin_listen}\"\n\n[log]\nlevel = \"debug\"\n{rest}"
        );
        Self::spawn_in(dir, &doc)
    }

    /// Starts the gateway as [`GatewayOpts`] describe, on `127.0.0.1:0` for both listeners.
    pub fn launch(opts: GatewayOpts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, data) in &opts.files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("create dir");
            }
            std::fs::write(&p, data).expect("write file");
        }
        let d = dir.path().display().to_string();
        let auth = if opts.auth {
            ""
        } else {
            "allow_unauthenticated = true\n"
        };
        let doc = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n{auth}{}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n[log]\nlevel = \"debug\"\n{}",
            opts.proxy_lines.replace("{DIR}", &d),
            opts.rest.replace("{DIR}", &d)
        );
        Self::spawn_in(dir, &doc)
    }

    fn spawn_in(dir: tempfile::TempDir, doc: &str) -> Self {
        let cfg = dir.path().join("portcullis.toml");
        std::fs::write(&cfg, doc).expect("write config");
        let mut gw = Self {
            child: None,
            proxy: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            banner: String::new(),
            dir,
            cfg,
            lines: Arc::default(),
        };
        gw.spawn();
        gw
    }

    /// Starts the process in [`Gateway::dir`] with [`Gateway::config_path`] and reads its
    /// banner (stderr is appended to `stderr.log`).
    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.current_dir(self.dir.path())
            .arg("serve")
            .arg("--config")
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for k in PROXY_ENV {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("spawn portcullis");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let all = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = all.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the child never blocks on a full pipe; keep
            // the lines after the banner for [`Gateway::stdout_lines`].
            for line in lines.map_while(Result::ok) {
                if let Ok(mut v) = sink.lock() {
                    v.push(line);
                }
            }
        });
        self.child = Some(child);
        self.lines = all;
        let banner = match rx.recv_timeout(TIMEOUT) {
            Ok(b) => b,
            Err(_) => panic!("no banner from portcullis; stderr:\n{}", self.stderr()),
        };
        self.proxy = banner_addr(&banner, "proxy=");
        self.admin = banner_addr(&banner, "admin=");
        self.banner = banner;
    }

    /// Stops the gateway (SIGTERM, bounded wait) and starts it again in the same directory
    /// with the same config file, as an operator's restart would. Listeners on port 0 get
    /// new ports: read [`Gateway::proxy`] and [`Gateway::admin`] again.
    pub fn restart(&mut self) {
        self.sigterm();
        let st = self.wait_exit(TIMEOUT);
        assert!(st.success(), "gateway exited with {st} on SIGTERM");
        self.spawn();
    }

    /// Starts the gateway with `doc` as its whole config file (nothing added: set
    /// `proxy.listen` and `admin.listen`, e.g. to `127.0.0.1:0`).
    pub fn start_with_config(doc: &str) -> Self {
        Self::spawn_in(tempfile::tempdir().expect("tempdir"), doc)
    }

    /// The gateway's working directory (holds `data/`, the config, `stderr.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the gateway was started with.
    pub fn config_path(&self) -> &Path {
        &self.cfg
    }

    /// Stdout lines printed after the banner so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The first-run `demo` agent's secret, parsed (bounded wait) from the
    /// `export HTTP_PROXY=http://demo:SECRET@ADDR ...` line after the banner.
    pub fn demo_secret(&self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for l in self.stdout_lines() {
                let Some(rest) = l.trim().strip_prefix("export HTTP_PROXY=http://demo:") else {
                    continue;
                };
                if let Some((secret, _)) = rest.split_once('@') {
                    return secret.to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no demo secret on stdout: {:?}",
                self.stdout_lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `portcullis ARGS` in the gateway's directory (so relative store and
    /// key paths resolve to the gateway's) with proxy variables cleared.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        for k in PROXY_ENV {
            cmd.env_remove(k);
        }
        cmd.output().expect("run portcullis")
    }

    /// Runs `portcullis ARGS --config CONFIG`; panics with its output unless it
    /// exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let cfg = self.cfg.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", cfg.as_str()]);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "portcullis {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `portcullis agent create ID --tenant T [EXTRA...]`; returns the secret
    /// (the second stdout line).
    pub fn create_agent(&self, id: &str, tenant: &str, extra: &[&str]) -> String {
        let mut args = vec!["agent", "create", id, "--tenant", tenant];
        args.extend_from_slice(extra);
        let out = self.cli_ok(&args);
        out.lines()
            .nth(1)
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no secret in: {out}"))
    }

    /// `portcullis apikey create --tenant T --role R`; returns the key (second line).
    pub fn create_api_key(&self, tenant: &str, role: &str) -> String {
        let out = self.cli_ok(&["apikey", "create", "--tenant", tenant, "--role", role]);
        out.lines()
            .nth(1)
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no key in: {out}"))
    }

    /// An admin API request with `Authorization: Bearer KEY` (when given) and a JSON body.
    pub fn admin_call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> RawResponse {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
        if let Some(k) = key {
            req.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        let body = body
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&body);
        send_raw(self.admin, &bytes)
    }

    /// Polls `pred` against the gateway (bounded by [`TIMEOUT`]), returning its
    /// last value once it holds; panics with `what` and the stderr log otherwise.
    pub fn eventually<T: std::fmt::Debug>(
        &self,
        what: &str,
        f: impl Fn() -> T,
        pred: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let v = f();
            if pred(&v) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting until {what}; last: {v:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The proxy URL for clients (`http://127.0.0.1:PORT`).
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            if Instant::now() >= deadline {
                panic!("portcullis did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Admin `GET path`.
    pub fn admin_get(&self, path: &str) -> RawResponse {
        send_raw(
            self.admin,
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    /// The Prometheus exposition from the admin listener.
    pub fn metrics(&self) -> Metrics {
        let r = self.admin_get("/metrics");
        assert_eq!(r.status, 200, "metrics: {r:?}");
        Metrics(String::from_utf8(r.body).expect("utf-8 metrics"))
    }

    /// Polls `/metrics` until `pred` holds (bounded); returns the last scrape.
    /// Used where the gateway updates a metric just after the client saw the
    /// response end (tunnel close, body end).
    pub fn metrics_until(&self, what: &str, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let m = self.metrics();
            if pred(&m) {
                return m;
            }
            if Instant::now() >= deadline {
                panic!("metrics never satisfied {what}:\n{}", m.0);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- portcullis stderr ----\n{}", self.stderr());
        }
    }
}

fn banner_addr(banner: &str, key: &str) -> SocketAddr {
    banner
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("banner has no {key}: {banner}"))
}

/// A Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include every pair in `labels`.
    /// `None` when no sample matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let (n, lbls) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            if n != name {
                continue;
            }
            if labels
                .iter()
                .all(|(k, v)| lbls.get(*k).map(String::as_str) == Some(*v))
            {
                let v: f64 = value.parse().expect("metric value");
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
        found
    }

    /// Like [`Metrics::get`] with absent meaning zero.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for pair in s.split("\",") {
        if let Some((k, v)) = pair.split_once("=\"") {
            m.insert(k.trim().to_owned(), v.trim_end_matches('"').to_owned());
        }
    }
    m
}

// ---------------------------------------------------------------- origin

struct OriginState {
    requests: AtomicUsize,
    connections: AtomicUsize,
    gate: Semaphore,
}

/// A local origin on `127.0.0.1:0` (plain HTTP or TLS) with test routes:
///
/// - `/echo*` (any method): JSON `{method, uri, headers: [[name, value]...],
///   body_len, body_sha256, peer}` describing what it received.
/// - `/big/cl`, `/big/chunked`: [`big_body`] with Content-Length / chunked.
/// - `/sse`: `text/event-stream`, first event at once, the rest after [`Origin::release`].
/// - `/ws`: WebSocket handshake and a frame-level echo.
pub struct Origin {
    /// Listening address.
    pub addr: SocketAddr,
    /// PEM file of the self-signed certificate (TLS origins).
    pub cert_pem: Option<PathBuf>,
    state: Arc<OriginState>,
    rt: Option<tokio::runtime::Runtime>,
    _dir: Option<tempfile::TempDir>,
}

impl Origin {
    /// A plain HTTP origin.
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// A TLS origin with a self-signed certificate for `localhost` and 127.0.0.1.
    pub fn start_tls() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("origin runtime");
        let state = Arc::new(OriginState {
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let (acceptor, dir, cert_pem) = if tls {
            let (acc, dir, pem) = tls_acceptor();
            (Some(acc), Some(dir), Some(pem))
        } else {
            (None, None, None)
        };
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = {
                        let st = st.clone();
                        service_fn(move |req| route(st.clone(), peer, req))
                    };
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acc) => {
                            if let Ok(tls) = acc.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(tls), svc)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            cert_pem,
            state,
            rt: Some(rt),
            _dir: dir,
        }
    }

    /// The origin's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests the origin has received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// TCP connections the origin has accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Lets one gated stream (`/sse`) continue past its first event.
    pub fn release(&self) {
        self.state.gate.add_permits(1);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, tempfile::TempDir, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("self-signed cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("origin.pem");
    std::fs::write(&pem, ck.cert.pem()).expect("write pem");
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .expect("key der");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), dir, pem)
}

type OBody = BoxBody<Bytes, Infallible>;

fn full_body(b: impl Into<Bytes>) -> OBody {
    Full::new(b.into()).boxed()
}

async fn route(
    st: Arc<OriginState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<OBody>, Infallible> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let resp = if path.starts_with("/echo") {
        echo(peer, req).await
    } else if path == "/big/cl" {
        let mut r = Response::new(SliceBody::new(big_body(), true).boxed());
        r.headers_mut()
            .insert("content-length", BIG_LEN.to_string().parse().expect("cl"));
        r
    } else if path == "/big/chunked" {
        Response::new(SliceBody::new(big_body(), false).boxed())
    } else if path == "/sse" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let st = st.clone();
        tokio::spawn(async move {
            if tx
                .send(Bytes::from_static(SSE_EVENTS[0].as_bytes()))
                .await
                .is_err()
            {
                return;
            }
            match st.gate.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return,
            }
            for e in &SSE_EVENTS[1..] {
                if tx.send(Bytes::from_static(e.as_bytes())).await.is_err() {
                    return;
                }
            }
        });
        let mut r = Response::new(ChannelBody { rx }.boxed());
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().expect("ct"));
        r.headers_mut()
            .insert("cache-control", "no-cache".parse().expect("cc"));
        r
    } else if path == "/ws" {
        ws_upgrade(req)
    } else {
        let mut r = Response::new(full_body("no such route\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    Ok(resp)
}

async fn echo(peer: SocketAddr, req: Request<Incoming>) -> Response<OBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let mut r = Response::new(full_body(format!("body error: {e}\n")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let v = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
        "body_sha256": sha256_hex(&body),
        "peer": peer.to_string(),
    });
    let mut r = Response::new(full_body(serde_json::to_vec(&v).expect("json")));
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("ct"));
    r
}

/// The WebSocket accept key for a client key (RFC 6455 §4.2.2).
pub fn ws_accept(key: &str) -> String {
    use base64::Engine;
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn ws_upgrade(mut req: Request<Incoming>) -> Response<OBody> {
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (true, Some(key)) = (is_ws, key) else {
        let mut r = Response::new(full_body("websocket upgrade required\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let _ = ws_echo(TokioIo::new(up)).await;
        }
    });
    let mut r = Response::new(full_body(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", "websocket".parse().expect("h"));
    h.insert("connection", "Upgrade".parse().expect("h"));
    h.insert("sec-websocket-accept", ws_accept(&key).parse().expect("h"));
    r
}

/// Echoes WebSocket frames (unmasked, same opcode) until a close frame.
async fn ws_echo<T>(mut io: T) -> std::io::Result<()>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let mut h = [0u8; 2];
        io.read_exact(&mut h).await?;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                io.read_exact(&mut b).await?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                io.read_exact(&mut b).await?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if len > 16 * 1024 * 1024 {
            return Ok(());
        }
        let mut mask = [0u8; 4];
        if masked {
            io.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        io.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        io.write_all(&ws_frame(opcode, &payload, None)).await?;
        io.flush().await?;
        if opcode == 8 {
            return Ok(());
        }
    }
}

/// Encodes one final WebSocket frame, masked when `mask` is given.
pub fn ws_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A body handing out `data` in 64 KiB frames; `exact` gives it a known length
/// (Content-Length), otherwise hyper sends it chunked.
struct SliceBody {
    data: Bytes,
    exact: bool,
}

impl SliceBody {
    fn new(data: Bytes, exact: bool) -> Self {
        Self { data, exact }
    }
}

impl Body for SliceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(64 * 1024);
        let chunk = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.data.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

/// A body fed by a channel; ends when the sender is dropped.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

// ---------------------------------------------------------------- raw client

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {} {} {:?}",
                self.status,
                self.reason,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a gateway error: status, JSON `code`, a `detail` string and the
    /// `x-portcullis-error` header; returns the JSON.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            (self.status, self.header("x-portcullis-error")),
            (status, Some(code)),
            "unexpected response: {self:?} body={:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "detail missing: {v}"
        );
        v
    }
}

/// Connects to `addr` with read/write timeouts of [`TIMEOUT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    s
}

/// Sends `req` on a fresh connection and reads one response.
pub fn send_raw(addr: SocketAddr, req: &[u8]) -> RawResponse {
    let mut s = connect(addr);
    s.write_all(req).expect("write request");
    let mut r = BufReader::new(s);
    read_response(&mut r, false).expect("read response")
}

/// Reads one response. `no_body` for responses to HEAD/CONNECT-2xx.
pub fn read_response<R: BufRead>(r: &mut R, no_body: bool) -> std::io::Result<RawResponse> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let line = line.trim_end();
    let mut it = line.splitn(3, ' ');
    let _version = it.next();
    let status: u16 = it
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let reason = it.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    for _ in 0..1000 {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in headers",
            ));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut resp = RawResponse {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    if no_body || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(resp);
    }
    if let Some(cl) = resp.header("content-length") {
        let n: usize = cl
            .parse()
            .map_err(|_| std::io::Error::other("bad content-length"))?;
        let mut b = vec![0u8; n];
        r.read_exact(&mut b)?;
        resp.body = b;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
            if n == 0 {
                // trailers until the empty line
                for _ in 0..100 {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + n, 0);
            r.read_exact(&mut resp.body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Reads until the peer closes (or errors); returns what arrived and whether
/// the connection ended with EOF/reset (as opposed to the read timeout).
pub fn read_until_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false)
            }
            Err(_) => return (out, true),
        }
    }
}

// ---------------------------------------------------------------- curl, python

/// Runs `curl -sS --max-time 60 ARGS` with proxy variables cleared.
pub fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60"]).args(args);
    for k in PROXY_ENV {
        cmd.env_remove(k);
    }
    cmd.output()
        .expect("run curl (is curl installed? run scripts/test.sh)")
}

/// The Python interpreter for client tests: `PORTCULLIS_TEST_PYTHON`
/// (set by `scripts/test.sh`) or `python3`. Panics when it lacks the clients.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let py = std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let ok = Command::new(&py)
            .args(["-c", "import requests, websocket"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{py} cannot import `requests` and `websocket` (websocket-client); run the suite \
             through scripts/test.sh, which prepares a venv and sets PORTCULLIS_TEST_PYTHON"
        );
        py
    })
}

/// Runs a Python script with `args`; panics (with its output) unless it exits 0.
/// Returns stdout.
pub fn run_python(script: &str, args: &[String]) -> String {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).args(args);
    for k in PROXY_ENV {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "python failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Writes `data` into a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write file");
    p
}

// ---------------------------------------------------------------- proxy auth

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// An absolute-form request for `url` as sent to a proxy, with an optional
/// `Proxy-Authorization` value and extra header lines (`"Name: value"`).
pub fn proxy_request(method: &str, url: &str, auth: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    let mut req = format!("{method} {url} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if method != "GET" && method != "HEAD" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends one proxied request on a fresh connection (`Connection: close`).
pub fn proxy_send(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    auth: Option<&str>,
    extra: &[&str],
) -> RawResponse {
    let mut all: Vec<&str> = extra.to_vec();
    all.push("Connection: close");
    send_raw(proxy, &proxy_request(method, url, auth, &all))
}

/// The log without ANSI colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
