//! The `portcullis` binary: parse the command line, load config, run.

use clap::Parser;
use portcullis::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    portcullis::run(cli)
}
