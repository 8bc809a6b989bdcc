//! `s3block-nbd STORE [--socket PATH | --listen ADDR:PORT]`: an
//! object-store volume served as a network block device.
//!
//! The protocol and the server are the library's ([`s3block_nbd::Server`]);
//! the volume and cache options, the stack, the stats and the exit sequence
//! are shared with the mount program ([`s3block_cache::frontend`]). This
//! program parses its options, listens, and stops cleanly: see `cli`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run(std::env::args_os())
}
