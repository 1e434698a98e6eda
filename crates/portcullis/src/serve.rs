//! `portcullis serve`: build the components, bind the listeners, print the
//! banner, run until SIGTERM/SIGINT, drain, exit 0.

use crate::bootstrap;
use anyhow::Context;
use portcullis_admin::ControlPlane;
use portcullis_admin::ReadyCheck;
use portcullis_admin::{Admin, PolicyApi};
use portcullis_app::audit::AuditRecorder;
use portcullis_app::credentials::CredentialPhase;
use portcullis_app::identity::{IdentityMetrics, ProxyAuth, TokenService};
use portcullis_app::leaves::{CertCacheCollector, Leaves};
use portcullis_app::limits::AgentLimits;
use portcullis_app::policy::{PolicyAuthorizer, PolicyMetrics, PolicyReady};
use portcullis_app::settings;
use portcullis_audit::{AuditMetrics, AuditPipeline};
use portcullis_config::{Config, LogFormat};
use portcullis_core::{Clock, SystemClock};
use portcullis_credentials::Credentials;
use portcullis_identity::{Authenticator, Registry as AgentRegistry, TokenIssuer};
use portcullis_policy::DefaultDecision;
use portcullis_proxy::phases::{CredentialInjector, Recorder};
use portcullis_proxy::{Pipeline, ProxyMetrics, Shared};
use portcullis_store::Store;
use prometheus::Registry;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn run(cfg: Config) -> ExitCode {
    init_logging(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "gateway failed");
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a log file are noise to every reader and
    // cost a tenth of a governed request's instructions (the access line is per request).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    // Before anything serves: a SIGTERM that arrives as soon as the banner is
    // out must drain, not kill the process with the default action.
    let signals = Signals::install();
    let proxy_listener = TcpListener::bind(cfg.proxy.listen)
        .await
        .with_context(|| format!("binding proxy listener {}", cfg.proxy.listen))?;
    let admin_listener = TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("binding admin listener {}", cfg.admin.listen))?;
    let listeners = (proxy_listener.local_addr()?, admin_listener.local_addr()?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let base = Base::build(&cfg, shutdown_rx.clone()).await?;
    let phases = Phases::build(&cfg, &base).await?;
    // Shared deployments: run-time policy modes come from the store (before the first load).
    if let Some(engine) = &phases.engine {
        let modes = portcullis_admin::PolicyModeSync::new(engine.clone());
        base.control.add_reload_hook(modes.clone());
        let rx = shutdown_rx.clone();
        tokio::spawn(async move { modes.follow_engine(rx).await });
    }
    let n_agents = base.control.reload_registry().await?;
    {
        let (control, rx) = (base.control.clone(), shutdown_rx.clone());
        tokio::spawn(async move { control.watch(rx).await });
    }
    tokio::spawn(portcullis_audit::run_upkeep(
        base.store.clone(),
        cfg.audit.retention,
        base.clock.clone(),
        shutdown_rx.clone(),
    ));
    let tls = intercept(&cfg, &base.registry)?;
    let mut policy = policy_status(phases.engine.as_ref(), cfg.policy.bundle_url.as_deref())?;
    policy
        .checks
        .push(Arc::new(portcullis_admin::StoreReady::new(
            base.control.clone(),
            Some(base.audit.metrics().clone()),
        )));
    // The bundle poller runs until the gateway exits.
    let _bundles = phases.bundles;
    let open = phases.pipeline.authenticator.is_open();
    let shared = Shared::with_intercept(
        cfg.proxy.clone(),
        vec![listeners.0, listeners.1],
        phases.pipeline,
        base.metrics.clone(),
        Some(tls.intercept),
    );
    let mut checks = policy.checks.clone();
    checks.push(base.limits_ready.clone());
    let admin = Admin::with_policy(
        base.registry.clone(),
        checks,
        shutdown_rx.clone(),
        base.control.clone(),
        phases.engine.clone().map(|e| {
            PolicyApi::new(e).request_reader(portcullis_admin::RequestReader {
                classifier: base.classifier.clone(),
                max_inspect_body: cfg.proxy.max_inspect_body,
                mcp: base.mcp.clone().map(mcp_reader),
            })
        }),
    );
    let console = console(&cfg, &base, listeners)?;
    if let Some(c) = &console {
        admin.set_ui(c.clone());
        let (c, store, rx) = (c.clone(), base.store.clone(), shutdown_rx.clone());
        tokio::spawn(async move { c.sweep_sessions(store, rx).await });
    }
    let banner = Banner {
        cfg: &cfg,
        listeners,
        store: base.store.describe(),
        agents: n_agents,
        policy: policy.banner.clone(),
        limits: &base.limits_banner,
        open,
        tls: (&tls.ca_cert, &tls.bundle, tls.generated),
        credentials: base.credentials.names(),
    };
    banner.print(phases.demo_secret.as_deref());
    if let Some(line) = telemetry_banner(&cfg) {
        println!("{line}");
    }
    let admin_task = tokio::spawn(portcullis_admin::serve(
        admin_listener,
        admin,
        shutdown_rx.clone(),
    ));
    let proxy_task = tokio::spawn(portcullis_proxy::serve(proxy_listener, shared, shutdown_rx));

    signals.wait().await;
    info!("shutdown requested; draining");
    let _ = shutdown_tx.send(true);
    let _ = proxy_task.await;
    // Settlements of the last requests reach a shared limits backend (bounded wait).
    let _ = tokio::time::timeout(Duration::from_secs(2), base.limits.limiter().flush()).await;
    // Alerts the last requests fired reach their webhooks (bounded wait).
    if let Some(alerts) = base.limits.alerts() {
        alerts.alerts().drain(Duration::from_secs(2)).await;
    }
    // Spans of the last requests reach the collector (bounded wait).
    if let Some((t, _)) = &base.telemetry {
        t.shutdown(Duration::from_secs(5)).await;
    }
    // Every record of every finished request is written before exit.
    base.audit.shutdown().await;
    let _ = base.audit_writer.await;
    admin_task.abort();
    base.store.close().await;
    info!("stopped");
    Ok(())
}

/// `[telemetry]`: starts the OTLP exporter (its drop counters on /metrics); `None` when no
/// endpoint is set, and then nothing runs per request.
fn start_telemetry(
    cfg: &Config,
    registry: &Registry,
) -> anyhow::Result<Option<(portcullis_telemetry::Telemetry, tokio::task::JoinHandle<()>)>> {
    let Some(s) = settings::telemetry_settings(cfg) else {
        return Ok(None);
    };
    let metrics = portcullis_telemetry::TelemetryMetrics::register(registry)?;
    Ok(Some(portcullis_telemetry::Telemetry::start(s, metrics)?))
}

/// The banner's telemetry line, when telemetry is on.
fn telemetry_banner(cfg: &Config) -> Option<String> {
    let t = &cfg.telemetry;
    let endpoint = t.otlp_endpoint.as_deref()?;
    Some(format!(
        "telemetry: otlp={endpoint} service={} propagate={} (spans and GenAI metrics; no content exported)",
        t.service_name, t.propagate
    ))
}

/// How the simulator recognises MCP endpoints: the data plane's own matcher and bounds.
pub(crate) fn mcp_reader(gate: Arc<portcullis_proxy::mcp::McpGate>) -> portcullis_admin::McpReader {
    let limits = gate.limits();
    portcullis_admin::McpReader {
        server: Arc::new(move |host: &str, path: &str| {
            gate.server_name(host, path).map(str::to_owned)
        }),
        limits,
    }
}

/// What every phase and the control plane share: the store, the agent registry, metrics, the
/// audit trail, limits, credentials and the classifier.
struct Base {
    clock: Arc<dyn Clock>,
    registry: Registry,
    metrics: ProxyMetrics,
    store: Store,
    agents: Arc<AgentRegistry>,
    classifier: Arc<portcullis_llm::Classifier>,
    audit: portcullis_audit::AuditHandle,
    audit_writer: tokio::task::JoinHandle<()>,
    recorder: Arc<dyn Recorder>,
    limits: Arc<AgentLimits>,
    limits_ready: Arc<dyn ReadyCheck>,
    limits_banner: String,
    credentials: Arc<Credentials>,
    injector: Arc<CredentialPhase>,
    control: Arc<ControlPlane>,
    mcp: Option<Arc<portcullis_proxy::mcp::McpGate>>,
    /// The OTLP exporter and its task (`[telemetry]`; `None` when off).
    telemetry: Option<(portcullis_telemetry::Telemetry, tokio::task::JoinHandle<()>)>,
}

impl Base {
    async fn build(cfg: &Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let registry = Registry::new();
        portcullis_admin::register_build_info(&registry, VERSION)?;
        let metrics = ProxyMetrics::new(&registry)?;
        let store = bootstrap::open_store(cfg).await?;
        let classifier = Arc::new(
            portcullis_llm::Classifier::new(&settings::providers(cfg)).context("llm.providers")?,
        );
        let agents = Arc::new(AgentRegistry::new());
        let (audit, audit_writer) = AuditPipeline::start(
            portcullis_app::audit::settings(&cfg.audit),
            Some(store.clone()),
            AuditMetrics::register(&registry)?,
        )
        .context("starting the audit pipeline")?;
        let prices =
            Arc::new(portcullis_app::pricing::PriceTable::from_config(cfg).context("llm.prices")?);
        let pricing =
            portcullis_app::pricing::Pricing::new(prices.clone(), &registry, metrics.clone())?;
        let telemetry = start_telemetry(cfg, &registry)?;
        let recorder: Arc<dyn Recorder> = Arc::new(
            AuditRecorder::new(audit.clone())
                .with_pricing(pricing)
                .with_telemetry(telemetry.as_ref().map(|t| t.0.clone())),
        );
        let (limits, limits_ready, limits_banner) = portcullis_app::limits::from_config(
            cfg,
            &registry,
            agents.clone(),
            clock.clone(),
            prices.clone(),
        )
        .await
        .map_err(anyhow::Error::msg)
        .context("starting the limiter")?;
        // Budget alerts (`[alerts]`): nothing runs without webhooks.
        let alerts = portcullis_app::alerts::start(
            cfg,
            &registry,
            audit.clone(),
            clock.clone(),
            limits.limiter().clone(),
            portcullis_proxy::ids::new_id,
        )
        .map_err(anyhow::Error::msg)
        .context("starting the budget alerts")?;
        let limits = match alerts {
            Some(alerts) => limits.with_alerts(alerts),
            None => limits,
        };
        let limits = Arc::new(limits);
        let limits_ready: Arc<dyn ReadyCheck> = Arc::new(limits_ready);
        limits.spawn_sweeper(shutdown);
        let (seal_key, generated_key) = bootstrap::credentials_key(cfg)?;
        if generated_key {
            info!(path = %cfg.store.credentials_key.display(), "generated the credentials sealing key");
        }
        let seal_key = Arc::new(seal_key);
        let credentials = Arc::new(Credentials::load(&cfg.credentials, Some(seal_key.clone()))?);
        let injector = Arc::new(CredentialPhase(credentials.clone()));
        let control = ControlPlane::new(store.clone(), agents.clone(), clock.clone());
        control.add_reload_hook(injector.clone());
        control.enable_credentials(portcullis_admin::CredentialsApi {
            key: seal_key,
            config: cfg.credentials.clone(),
        });
        let mcp = settings::mcp_settings(cfg)?
            .map(|s| Arc::new(portcullis_proxy::mcp::McpGate::new(s, clock.clone())));
        Ok(Self {
            mcp,
            telemetry,
            clock,
            registry,
            metrics,
            store,
            agents,
            classifier,
            audit,
            audit_writer,
            recorder,
            limits,
            limits_ready,
            limits_banner,
            credentials,
            injector,
            control,
        })
    }
}

/// The data plane's phases, the policy engine (none without authentication) and the demo
/// agent's secret on a first run.
struct Phases {
    pipeline: Pipeline,
    engine: Option<Arc<portcullis_policy::PolicyEngine>>,
    /// The bundle poller (`policy.bundle_url`), kept alive while the gateway runs.
    bundles: Option<portcullis_app::bundles::BundlePoller>,
    demo_secret: Option<String>,
}

impl Phases {
    async fn build(cfg: &Config, b: &Base) -> anyhow::Result<Self> {
        let common = Pipeline {
            mcp: b.mcp.clone(),
            classifier: Some(b.classifier.clone()),
            recorder: b.recorder.clone(),
            limits: Some(b.limits.clone()),
            credentials: Some(b.injector.clone() as Arc<dyn CredentialInjector>),
            trace: settings::trace_mode(cfg),
            ..Pipeline::unauthenticated()
        };
        if cfg.proxy.allow_unauthenticated {
            return Ok(Self {
                pipeline: common,
                engine: None,
                bundles: None,
                demo_secret: None,
            });
        }
        let (key, generated) = bootstrap::signing_key(cfg)?;
        if generated {
            info!(path = %cfg.identity.signing_key.display(), "generated token signing key");
        }
        let key = Arc::new(key);
        let issuer = Arc::new(TokenIssuer::new(cfg.identity.issuer.clone(), key.clone()));
        bootstrap::upsert_config_agents(cfg, &b.store, b.clock.as_ref()).await?;
        let demo_secret = bootstrap::create_demo_agent(cfg, &b.store, b.clock.as_ref()).await?;
        let imetrics = IdentityMetrics::new(&b.registry)?;
        let (engine, bundles) = match portcullis_app::settings::bundle_settings(cfg) {
            Some(bs) => {
                let ec = portcullis_app::settings::policy_settings(cfg, None);
                let (engine, etag) =
                    portcullis_app::bundles::start_engine(ec, b.clock.clone(), &bs)
                        .await
                        .map_err(anyhow::Error::msg)
                        .context("loading the policy bundle")?;
                let engine = Arc::new(engine);
                let poller = portcullis_app::bundles::spawn(engine.clone(), bs, etag);
                (engine, Some(poller))
            }
            None => (bootstrap::policy_engine(cfg, b.clock.clone())?, None),
        };
        let pmetrics = PolicyMetrics::new(&b.registry, engine.clone())?;
        let authorizer = Arc::new(PolicyAuthorizer::new(engine.clone(), pmetrics));
        let throttle = portcullis_app::identity::auth_throttle(&cfg.identity, b.clock.clone());
        let auth = Authenticator::new(b.agents.clone(), issuer.clone(), b.clock.clone())
            .with_throttle(throttle.clone());
        let proxy_auth = ProxyAuth::new(auth, b.store.clone(), b.clock.clone(), imetrics.clone())
            .with_sidecar(cfg.sidecar.agent.clone());
        let tokens = TokenService::new(
            b.agents.clone(),
            issuer.clone(),
            key.jwks(),
            b.clock.clone(),
            imetrics,
            Some(authorizer.clone()),
        )
        .with_throttle(throttle);
        Ok(Self {
            pipeline: Pipeline {
                authenticator: Arc::new(proxy_auth),
                authorizer,
                local: Some(Arc::new(tokens)),
                ..common
            },
            engine: Some(engine),
            bundles,
            demo_secret,
        })
    }
}

/// The operator console on the admin listener (`None` with `console.enabled = false`),
/// showing what the banner shows.
fn console(
    cfg: &Config,
    base: &Base,
    listeners: (std::net::SocketAddr, std::net::SocketAddr),
) -> anyhow::Result<Option<Arc<portcullis_console::Console>>> {
    let Some(settings) = settings::console_settings(cfg)? else {
        return Ok(None);
    };
    let l = &cfg.limits;
    let overview = portcullis_console::Overview {
        version: VERSION.to_owned(),
        proxy: listeners.0,
        admin: listeners.1,
        store: base.store.describe().to_owned(),
        intercept: intercept_banner(cfg),
        audit: Some((
            base.audit.metrics().clone(),
            portcullis_app::audit::settings(&cfg.audit).sinks,
        )),
        default_limits: [l.rpm, l.tpm, l.tokens_per_day, l.max_concurrent],
    };
    Ok(Some(portcullis_console::Console::new(settings, overview)))
}

/// The policy engine's readiness checks, the banner's policy part and the directory watcher
/// (kept alive while the gateway runs).
struct PolicyStatus {
    checks: Vec<Arc<dyn ReadyCheck>>,
    banner: String,
    _watch: Option<portcullis_policy::WatchHandle>,
}

fn policy_status(
    engine: Option<&Arc<portcullis_policy::PolicyEngine>>,
    cfg_bundle_url: Option<&str>,
) -> anyhow::Result<PolicyStatus> {
    let Some(engine) = engine else {
        let off = "policies=OFF(proxy.allow_unauthenticated=true: no policy is evaluated, every request is allowed) default=allow";
        return Ok(PolicyStatus {
            checks: Vec::new(),
            banner: off.to_owned(),
            _watch: None,
        });
    };
    let checks: Vec<Arc<dyn ReadyCheck>> = vec![Arc::new(PolicyReady(engine.clone()))];
    let watch = match engine.config().dir {
        Some(_) => Some(
            portcullis_policy::watch(engine.clone(), Duration::from_millis(200))
                .context("watching the policy directory")?,
        ),
        None => None,
    };
    let st = engine.reload_status();
    let src = match (&engine.config().dir, cfg_bundle_url) {
        (_, Some(url)) => format!("bundle {url} revision {}", st.revision),
        (Some(d), None) => d.display().to_string(),
        (None, None) => "built-in".to_owned(),
    };
    let default = match engine.config().default {
        DefaultDecision::Deny => "deny",
        DefaultDecision::Allow => {
            warn!("policy.default = \"allow\": requests no policy applies to are ALLOWED");
            "ALLOW(warning)"
        }
    };
    let banner = format!(
        "policies={}({src}, errors={}) default={default}",
        st.policies,
        st.errors.len()
    );
    Ok(PolicyStatus {
        checks,
        banner,
        _watch: watch,
    })
}

/// The one startup line, and the first-run and development-CA hints.
struct Banner<'a> {
    cfg: &'a Config,
    listeners: (std::net::SocketAddr, std::net::SocketAddr),
    store: &'a str,
    agents: usize,
    policy: String,
    limits: &'a str,
    open: bool,
    /// CA certificate, bundle, generated now.
    tls: (&'a Path, &'a Path, bool),
    credentials: Vec<String>,
}

impl Banner<'_> {
    fn print(&self, demo_secret: Option<&str>) {
        let cfg = self.cfg;
        let (proxy, admin) = self.listeners;
        let (ca_cert, bundle, generated) = self.tls;
        let creds = &self.credentials;
        println!(
            "portcullis {VERSION} proxy={proxy} admin={admin} store={} agents={} {} {} auth={}{} ports={:?} allow_private={} ca={} intercept={}{} credentials={}{} log={}",
            self.store,
            self.agents,
            self.policy,
            self.limits,
            if self.open { "DISABLED(proxy.allow_unauthenticated=true: every client is trusted, development only)" } else { "required" },
            cfg.sidecar.agent.as_ref().map(|a| format!(" sidecar={a}(loopback clients without credentials)")).unwrap_or_default(),
            cfg.proxy.allowed_ports,
            cfg.proxy.allow_private.len(),
            ca_cert.display(),
            intercept_banner(cfg),
            if cfg.tls.splice_unknown.is_empty() { String::new() } else { format!(" splice_unknown=({}: non-TLS, non-HTTP tunnels spliced unexamined)", cfg.tls.splice_unknown.join(",")) },
            creds.len(),
            if creds.is_empty() { String::new() } else { format!("({})", creds.join(",")) },
            match cfg.log.format { LogFormat::Json => "json", LogFormat::Text => "text" },
        );
        if self.open {
            warn!(
                "authentication is DISABLED (proxy.allow_unauthenticated = true): development only"
            );
        }
        if let Some(secret) = demo_secret {
            let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            println!(
                "first run: created agent `demo`; its secret is shown once. Point an agent at the gateway \
                 with (in the agent's shell only: every tool there, package managers included, is then \
                 governed by the gateway):\n  \
                 export HTTP_PROXY=http://demo:{secret}@{proxy} HTTPS_PROXY=http://demo:{secret}@{proxy} NO_PROXY=localhost,127.0.0.1,::1\n  \
                 export SSL_CERT_FILE={b} REQUESTS_CA_BUNDLE={b} NODE_EXTRA_CA_CERTS={ca}   # trust the gateway CA for intercepted HTTPS",
                b = abs(bundle).display(),
                ca = abs(ca_cert).display(),
            );
        }
        if generated {
            println!(
                "generated a development gateway CA at {}: clients must trust it for intercepted hosts (e.g. SSL_CERT_FILE={}; `portcullis ca init --help`)",
                ca_cert.display(),
                bundle.display(),
            );
        }
    }
}

/// The interception setup and what the banner says about it.
struct TlsSetup {
    intercept: portcullis_proxy::Intercept,
    ca_cert: PathBuf,
    bundle: PathBuf,
    generated: bool,
}

/// Loads (or, with no `tls.ca_cert`, loads or generates in `data/ca/`) the gateway CA,
/// the upstream roots and the interception rules.
fn intercept(cfg: &Config, registry: &Registry) -> anyhow::Result<TlsSetup> {
    use portcullis_ca::{CaPaths, CertificateAuthority, LeafCache, LeafCacheConfig};
    use portcullis_tls::{UpstreamRoots, UpstreamTls};
    let t = &cfg.tls;
    let (ca, ca_cert, bundle, generated) = match (&t.ca_cert, &t.ca_key) {
        (Some(cert), Some(key)) => {
            let ca = CertificateAuthority::load(cert, key)
                .with_context(|| format!("loading the gateway CA {}", cert.display()))?;
            // `portcullis ca init` writes the bundle (public roots + the CA) beside the CA.
            let bundle = cert.with_file_name("ca-bundle.pem");
            let bundle = if bundle.exists() {
                bundle
            } else {
                cert.clone()
            };
            (ca, cert.clone(), bundle, false)
        }
        _ => {
            let dir = Path::new(portcullis_config::TlsConfig::DEFAULT_CA_DIR);
            let (ca, generated) = CertificateAuthority::load_or_generate(dir)
                .with_context(|| format!("loading the gateway CA in {}", dir.display()))?;
            let paths = CaPaths::in_dir(dir);
            if generated {
                info!(path = %paths.cert.display(), "generated a development gateway CA");
            }
            (ca, paths.cert, paths.bundle, generated)
        }
    };
    let cache = Arc::new(
        LeafCache::new(Arc::new(ca), LeafCacheConfig::default())
            .context("the certificate cache")?,
    );
    CertCacheCollector::register(registry, cache.clone())?;
    let upstream = UpstreamTls::new(&UpstreamRoots {
        extra_ca_pems: t.upstream_ca.clone(),
        ..UpstreamRoots::default()
    })
    .context("tls.upstream_ca")?;
    let rules = settings::intercept_rules(cfg)?;
    for w in settings::provider_warnings(cfg) {
        warn!("{w}");
    }
    Ok(TlsSetup {
        intercept: portcullis_proxy::Intercept::new(Arc::new(Leaves(cache)), rules, upstream.http1)
            .with_splice_unknown(settings::splice_unknown(cfg)?),
        ca_cert,
        bundle,
        generated,
    })
}

/// Most non-default intercepted hosts named in the banner.
const BANNER_HOSTS: usize = 8;

/// The banner's `intercept=`: `all`, or how many host globs are intercepted and which
/// (`defaults` for the built-in provider hosts, then the others: `tls.intercept` and the
/// `[[llm.providers]]` hosts).
fn intercept_banner(cfg: &Config) -> String {
    if cfg.tls.intercept_all {
        return "all".to_owned();
    }
    let hosts = settings::intercept_hosts(cfg).unwrap_or_default();
    let skip = if cfg.tls.intercept_defaults {
        portcullis_tls::DEFAULT_INTERCEPT_HOSTS.len()
    } else {
        0
    };
    let extra = hosts.get(skip..).unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    if skip > 0 {
        names.push("defaults");
    }
    names.extend(extra.iter().take(BANNER_HOSTS).map(String::as_str));
    let more = extra.len().saturating_sub(BANNER_HOSTS);
    let more = if more > 0 {
        format!(",+{more} more")
    } else {
        String::new()
    };
    if names.is_empty() {
        format!("{}hosts", hosts.len())
    } else {
        format!("{}hosts({}{more})", hosts.len(), names.join(","))
    }
}

/// SIGTERM and SIGINT, registered up front.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => None,
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = self.streams {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banner(doc: &str) -> String {
        let cfg = Config::from_toml(doc).expect("config");
        cfg.validate().expect("valid");
        intercept_banner(&cfg)
    }

    #[test]
    fn the_banner_names_what_is_intercepted() {
        let n = portcullis_tls::DEFAULT_INTERCEPT_HOSTS.len();
        assert_eq!(banner(""), format!("{n}hosts(defaults)"));
        let vllm = "[[llm.providers]]\nname = \"vllm\"\nhost = \"vllm.internal:8000\"\n";
        assert_eq!(
            banner(&format!("[tls]\nintercept = [\"localhost\"]\n{vllm}")),
            format!("{}hosts(defaults,localhost,vllm.internal)", n + 2)
        );
        assert_eq!(
            banner(&format!("[tls]\nintercept_defaults = false\n{vllm}")),
            "1hosts(vllm.internal)"
        );
        assert_eq!(banner("[tls]\nintercept_defaults = false\n"), "0hosts");
        assert_eq!(banner("[tls]\nintercept_all = true\n"), "all");
        let many: Vec<String> = (0..10).map(|i| format!("\"h{i}.example\"")).collect();
        assert_eq!(
            banner(&format!(
                "[tls]\nintercept_defaults = false\nintercept = [{}]\n",
                many.join(",")
            )),
            "10hosts(h0.example,h1.example,h2.example,h3.example,h4.example,h5.example,h6.example,h7.example,+2 more)"
        );
    }
}
