//! `portcullis serve`: build the components, bind the listeners, print the
//! banner, run until SIGTERM/SIGINT, drain, exit 0.

use anyhow::{bail, Context};
use portcullis_admin::Admin;
use portcullis_config::{Config, LogFormat};
use portcullis_proxy::{Pipeline, ProxyMetrics, Shared};
use prometheus::Registry;
use std::process::ExitCode;
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    if !cfg.proxy.allow_unauthenticated {
        bail!(
            "agent authentication is not available in this build; set `proxy.allow_unauthenticated = true` \
             to run the data plane without it (development only)"
        );
    }
    // Before anything serves: a SIGTERM that arrives as soon as the banner is
    // out must drain, not kill the process with the default action.
    let signals = Signals::install();
    let proxy_listener = TcpListener::bind(cfg.proxy.listen)
        .await
        .with_context(|| format!("binding proxy listener {}", cfg.proxy.listen))?;
    let admin_listener = TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("binding admin listener {}", cfg.admin.listen))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let registry = Registry::new();
    portcullis_admin::register_build_info(&registry, VERSION)?;
    let metrics = ProxyMetrics::new(&registry)?;
    let pipeline = Pipeline::unauthenticated();
    let shared = Shared::new(
        cfg.proxy.clone(),
        vec![proxy_addr, admin_addr],
        pipeline,
        metrics,
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let admin = Admin::new(registry, Vec::new(), shutdown_rx.clone());

    println!(
        "portcullis {VERSION} proxy={proxy_addr} admin={admin_addr} auth={} default=allow ports={:?} allow_private={} log={}",
        if shared.pipeline.authenticator.is_open() { "DISABLED(proxy.allow_unauthenticated=true: every client is trusted, development only)" } else { "required" },
        cfg.proxy.allowed_ports,
        cfg.proxy.allow_private.len(),
        match cfg.log.format { LogFormat::Json => "json", LogFormat::Text => "text" },
    );
    warn!("authentication is DISABLED (proxy.allow_unauthenticated = true): development only");

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
    admin_task.abort();
    info!("stopped");
    Ok(())
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
