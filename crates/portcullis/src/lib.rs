//! Wiring of the `portcullis` binary: config → components → listeners.
//!
//! Kept in a library so end-to-end tests can reuse what the binary does.
#![warn(missing_docs)]

mod bootstrap;
pub mod cli;
mod identity;
mod serve;

use cli::{Cli, Command};
use portcullis_config::Config;
use std::path::Path;
use std::process::ExitCode;

/// Exit code for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

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
        Command::CheckConfig { config } => match load(Some(&config)) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    let res = match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    };
    res.map_err(|e| {
        eprintln!("portcullis: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}
