//! Command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Portcullis: a forward HTTP proxy gateway that governs AI agents.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (proxy and admin listeners).
    Serve {
        /// Config file (TOML). Without one, embedded defaults are used.
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file and print the effective configuration.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
}
