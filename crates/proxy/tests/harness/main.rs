//! The proxy driven in-process: the real listener on `127.0.0.1:0` with fake phases
//! (`fakes.rs`), a loopback origin and raw clients. Covers what needs neither the real policy
//! engine nor real clients: every refusal cause, one record per exit, framing, header hygiene,
//! CONNECT and tunnel rules.
#![allow(unreachable_pub)]

mod client;
mod exits;
mod fakes;
mod refusals;
mod rules;

use fakes::{FakeAuth, FakeCredentials, FakeLimits, FakePolicy, FakeRecorder};
use portcullis_config::ProxyConfig;
use portcullis_core::AuditRecord;
use portcullis_proxy::{Intercept, LeafSource, Pipeline, ProxyMetrics, Shared};
use portcullis_tls::rustls;
use portcullis_tls::{HostMatcher, InterceptRules};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Upper bound of every wait.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running proxy with fake phases.
pub struct Harness {
    /// The proxy listener.
    pub addr: SocketAddr,
    /// What the recorder captured.
    pub recorder: FakeRecorder,
    /// The loopback origin's port.
    pub origin: u16,
    /// The certificate the intercepted tunnels present (self-signed for `localhost`).
    pub leaf_der: Vec<u8>,
    /// Metrics registry.
    pub registry: prometheus::Registry,
    _shutdown: watch::Sender<bool>,
}

impl Harness {
    /// Starts a proxy allowing loopback on the origin's port, intercepting `localhost`.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a proxy, letting `tweak` change its settings first.
    pub async fn start_with(tweak: impl FnOnce(&mut ProxyConfig)) -> Self {
        let origin = client::origin().await;
        let mut cfg = ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            allowed_ports: vec![80, 443, 444, origin],
            allow_private: vec!["127.0.0.1/32".parse().expect("net")],
            header_read_timeout: Duration::from_secs(5),
            ..ProxyConfig::default()
        };
        tweak(&mut cfg);
        let recorder = FakeRecorder::default();
        let pipeline = Pipeline {
            authenticator: Arc::new(FakeAuth),
            authorizer: Arc::new(FakePolicy),
            recorder: Arc::new(recorder.clone()),
            limits: Some(Arc::new(FakeLimits)),
            credentials: Some(Arc::new(FakeCredentials)),
            local: None,
            classifier: None,
            mcp: Some(Arc::new(mcp_gate())),
            trace: portcullis_proxy::trace::TraceMode::Off,
        };
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).expect("metrics");
        let (leaf, leaf_der) = self_signed_leaf();
        let intercept = Intercept::new(
            Arc::new(leaf),
            InterceptRules {
                intercept: HostMatcher::new(["localhost"]).expect("matcher"),
                intercept_all: false,
                passthrough: HostMatcher::default(),
            },
            Arc::new(client_config(None)),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Shared::with_intercept(cfg, vec![addr], pipeline, metrics, Some(intercept));
        let (tx, rx) = watch::channel(false);
        tokio::spawn(portcullis_proxy::serve(listener, shared, rx));
        Self {
            addr,
            recorder,
            origin,
            leaf_der,
            registry,
            _shutdown: tx,
        }
    }

    /// The records written so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.recorder.records.lock().expect("records").clone()
    }

    /// Waits (bounded) until `pred` holds for the records, and returns them.
    pub async fn records_until(
        &self,
        what: &str,
        pred: impl Fn(&[AuditRecord]) -> bool,
    ) -> Vec<AuditRecord> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let r = self.records();
            if pred(&r) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}: {r:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A counter's value (0 when absent).
    pub fn counter(&self, name: &str, label: (&str, &str)) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == label.0 && l.value() == label.1)
            })
            .map(|m| m.get_counter().get_value())
            .sum()
    }
}

/// Leaves: one self-signed certificate for `localhost`, whatever host is asked.
struct FixedLeaf(Arc<rustls::ServerConfig>);

impl LeafSource for FixedLeaf {
    fn server_config<'a>(
        &'a self,
        _host: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<Arc<rustls::ServerConfig>, String>> {
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn self_signed_leaf() -> (FixedLeaf, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let der = ck.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)
        .expect("server config");
    (FixedLeaf(Arc::new(cfg)), der)
}

/// A client configuration trusting `trusted` (nothing when `None`).
pub fn client_config(trusted: Option<&[u8]>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(der) = trusted {
        roots.add(der.to_vec().into()).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// `/mcp` on `localhost` (already intercepted) as an MCP endpoint named `files`.
fn mcp_gate() -> portcullis_proxy::mcp::McpGate {
    use portcullis_proxy::mcp::{McpGate, McpServer, McpSettings};
    let settings = McpSettings {
        servers: vec![McpServer {
            name: "files".to_owned(),
            hosts: HostMatcher::new(["localhost"]).expect("matcher"),
            path: Some("/mcp".to_owned()),
        }],
        on_block: portcullis_mcp::OnBlock::Error,
        filter_tools_list: false,
        limits: portcullis_mcp::Limits::default(),
        max_answer: 1024 * 1024,
        arguments: portcullis_mcp::ArgumentsAudit::Hash,
        calls_per_minute: None,
        max_tool_labels: 16,
    };
    McpGate::new(settings, Arc::new(portcullis_core::SystemClock))
}
