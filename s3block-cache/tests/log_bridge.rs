//! The frontends' log takes the records of libraries that log through the
//! `log` crate (fuser's): one process, one log, so this is a test of its
//! own.

#![allow(clippy::unwrap_used)]

use s3block_cache::frontend::log::{self, LogArgs, LogLevel};

#[test]
fn records_of_the_log_crate_reach_the_log_at_its_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s3block.log");
    let args = LogArgs { log_file: Some(path.clone()), log_level: Some(LogLevel::Info), debug: false };
    log::init("s3block-test", &args, true).unwrap();
    ::log::warn!(target: "a_library", "a record of the log crate");
    ::log::debug!(target: "a_library", "below the level");
    // fuser's expected warnings are left out below debug, its errors kept.
    ::log::warn!(target: "fuser", "[Not Implemented] getxattr");
    ::log::error!(target: "fuser::session", "a FUSE error");
    tracing::info!("a tracing event");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("WARN") && text.contains("a record of the log crate"), "{text}");
    assert!(text.contains("a tracing event") && text.contains("a FUSE error"), "{text}");
    if std::env::var_os("RUST_LOG").is_none() {
        assert!(!text.contains("below the level") && !text.contains("Not Implemented"), "{text}");
    }
    // A log file is never coloured.
    assert!(!text.contains('\u{1b}'), "{text:?}");
}
