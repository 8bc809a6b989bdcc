//! The `s3block` binary: parses the command line and calls [`s3block_cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = s3block_cli::Cli::parse();
    ExitCode::from(s3block_cli::run(cli, &mut std::io::stdout().lock(), &mut std::io::stderr().lock()))
}
