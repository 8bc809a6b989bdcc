//! The `s3block` command, built inside the test package so the reliability
//! tests run the code of this tree (`CARGO_BIN_EXE_rel-s3block`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = s3block_cli::Cli::parse();
    std::process::ExitCode::from(s3block_cli::run(
        cli,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ))
}
