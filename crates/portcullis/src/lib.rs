//! Wiring of the `portcullis` binary: config → components → listeners.
//!
//! Kept in a library so end-to-end tests can reuse what the binary does.
#![warn(missing_docs)]

mod bootstrap;
pub mod cli;
mod commands;
mod serve;

use cli::{Cli, Command};
use portcullis_config::Config;
use std::path::Path;
use std::process::ExitCode;

/// Exit code for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

/// Exit code of `policy eval` when it cannot decide (1 means "denied").
pub const EXIT_EVAL_ERROR: u8 = 2;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            serve::run(cfg)
        }
        Command::Agent { config, action } => with_store(config.as_deref(), |cfg| async move {
            commands::agent(&cfg, action).await
        }),
        Command::Token {
            config,
            agent,
            scopes,
        } => with_store(config.as_deref(), |cfg| async move {
            commands::token(&cfg, &agent, scopes).await
        }),
        Command::Apikey { config, action } => with_store(config.as_deref(), |cfg| async move {
            commands::apikey(&cfg, action).await
        }),
        Command::Credential { config, action } => with_store(config.as_deref(), |cfg| async move {
            commands::credential(&cfg, action).await
        }),
        Command::Audit { config, action } => with_store(config.as_deref(), |cfg| async move {
            commands::audit(&cfg, action).await
        }),
        Command::Policy { action } => {
            let (cfg_path, eval) = match &action {
                cli::PolicyAction::Eval { config, .. } => (config.clone(), true),
                _ => (None, false),
            };
            let mut ok = true;
            let code = with_store(cfg_path.as_deref(), |cfg| {
                let ok = &mut ok;
                async move {
                    *ok = commands::policy(action, Some(cfg)).await?;
                    Ok(())
                }
            });
            match (code == ExitCode::SUCCESS, ok) {
                (true, true) => code,
                // A failed check or test, or a denied `policy eval`.
                (true, false) => ExitCode::FAILURE,
                // `policy eval` could not decide: 2, so 1 always means "denied".
                (false, _) if eval => ExitCode::from(EXIT_EVAL_ERROR),
                (false, _) => code,
            }
        }
        Command::Ca {
            action: cli::CaAction::Init { dir },
        } => match ca_init(&dir) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { config } => match load(Some(&config)) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

/// `portcullis ca init`: generates a CA into `dir` unless one is there; returns
/// what to print.
fn ca_init(dir: &Path) -> anyhow::Result<String> {
    use portcullis_ca::{trust_instructions, CaPaths, CertificateAuthority};
    let paths = CaPaths::in_dir(dir);
    for p in [&paths.cert, &paths.key] {
        if p.exists() {
            anyhow::bail!(
                "{} already exists; refusing to overwrite the gateway CA (remove it first to replace it)",
                p.display()
            );
        }
    }
    let ca = CertificateAuthority::generate(portcullis_ca::DEFAULT_CA_COMMON_NAME)?;
    let paths = ca.write(dir)?;
    Ok(format!(
        "wrote the gateway CA: {} (key {}, bundle {})\n{}",
        paths.cert.display(),
        paths.key.display(),
        paths.bundle.display(),
        trust_instructions(&paths)
    ))
}

/// Reads and validates the config (the config's own checks, then the domain checks of
/// [`portcullis_app::settings::validate`]) with `PORTCULLIS_STORE_URL` applied; an invalid
/// one is reported and exits with [`EXIT_CONFIG`].
fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    let res = match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    };
    res.and_then(|mut cfg| {
        // PORTCULLIS_STORE_URL wins over store.url (a password stays in a Secret); the
        // replaced URL is validated like the file's.
        if cfg.store.apply_env(|k| std::env::var(k).ok()) {
            cfg.validate()?;
        }
        portcullis_app::settings::validate(&cfg).map(|()| cfg)
    })
    .map_err(|e| {
        eprintln!("portcullis: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Runs a store-backed command on a small runtime; errors exit 1.
fn with_store<F, Fut>(path: Option<&Path>, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}
