//! `s3block-nbd STORE [--socket PATH | --listen ADDR:PORT]`: an
//! object-store volume served as a network block device.
//!
//! Everything is in the library: [`s3block_nbd::run`] parses the options,
//! listens, serves and stops cleanly; the protocol is
//! [`s3block_nbd::Server`], and the volume and cache options, the stack, the
//! stats and the exit sequence are shared with the mount program
//! ([`s3block_cache::frontend`]).

fn main() -> std::process::ExitCode {
    s3block_nbd::run(std::env::args_os())
}
