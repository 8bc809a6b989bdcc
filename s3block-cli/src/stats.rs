//! `s3block stats MOUNTPOINT`: a running mount's statistics.
//!
//! A mount publishes its statistics twice at the root of its mount point,
//! from one [`MountStats`]: the text file `stats` for people and
//! `stats.json` for scripts (with `--stats-filename NAME`, `NAME` and
//! `NAME.json`). This command reads the JSON back into the same struct and
//! prints it as the mount's text, or as JSON with `--json`: stable
//! snake_case keys, integers for counts and bytes (the schema is in
//! `docs/STATS.md` and on [`MountStats`]).

use std::io::Write;
use std::path::Path;

use s3block_cache::MountStats;
use s3block_core::Error;

use crate::exit::{CliResult, OK};
use crate::format::write_json;

/// Default name of the statistics file at the root of a mount.
pub const STATS_FILE: &str = "stats";

/// The JSON twin of the stats file named `file_name`.
pub fn json_file_name(file_name: &str) -> String {
    format!("{file_name}.json")
}

/// Reads the statistics of the mount at `mountpoint` from its JSON file
/// (`file_name` plus `.json`).
pub fn read(mountpoint: &Path, file_name: &str) -> Result<MountStats, Error> {
    let path = mountpoint.join(json_file_name(file_name));
    let text = std::fs::read_to_string(&path).map_err(|source| {
        let why = if mountpoint.join(file_name).is_file() {
            format!("the mount shows {file_name} but not its JSON twin: its s3block-fuse is older; read {file_name} with cat")
        } else {
            format!("is an s3block volume mounted at {}?", mountpoint.display())
        };
        Error::Io { path: format!("{} ({why})", path.display()), source }
    })?;
    parse(&path, &text)
}

/// Parses the JSON of a stats file read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<MountStats, Error> {
    let several = serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("volumes").is_some());
    if several {
        let dir = path.parent().unwrap_or(path).display();
        return Err(Error::Config(format!(
            "{dir} is a mount of several volumes: `s3block stats {dir}/NAME` shows volume NAME's figures, \
             `cat {dir}/stats` every volume's and the total"
        )));
    }
    serde_json::from_str(text).map_err(|e| Error::Io {
        path: format!("{} (not the stats of an s3block mount)", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Prints the statistics of the mount at `mountpoint`, whose stats file is
/// `file_name`: as text, or as JSON when `json`.
pub fn run(mountpoint: &Path, file_name: &str, json: bool, out: &mut dyn Write) -> CliResult {
    let stats = read(mountpoint, file_name)?;
    if json {
        write_json(out, &stats)?;
    } else {
        write!(out, "{}", stats.render_text())?;
    }
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3block_cache::CacheStats;
    use s3block_core::RequestCounts;
    use serde_json::Value;

    fn write_stats(dir: &Path) -> MountStats {
        let mut cache = CacheStats::default();
        (cache.hits, cache.misses, cache.dirty_bytes) = (30, 10, 65_536);
        let requests = RequestCounts { gets: 10, block_fetches: 10, ..Default::default() };
        let stats = MountStats::new(&cache, &requests, 0.005, 0.0004);
        std::fs::write(dir.join("stats.json"), serde_json::to_string(&stats).unwrap()).unwrap();
        stats
    }

    #[test]
    fn prints_the_mounts_text_or_its_json() {
        let dir = tempfile::tempdir().unwrap();
        let stats = write_stats(dir.path());
        let mut out = Vec::new();
        assert_eq!(run(dir.path(), STATS_FILE, false, &mut out).unwrap(), OK);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, stats.render_text());
        assert!(text.contains("65,536 bytes (64K)"), "{text}");
        let mut out = Vec::new();
        run(dir.path(), STATS_FILE, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cache"]["dirty_bytes"], 65_536);
        assert_eq!(v["reads"]["misses"], 10);
    }

    #[test]
    fn a_mount_of_several_volumes_is_named_with_what_to_ask_instead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        let err =
            parse(&path, r#"{"budget": {}, "total": {}, "volumes": {"db": {}}}"#).unwrap_err().to_string();
        assert!(err.contains("several volumes") && err.contains("/NAME"), "{err}");
    }

    #[test]
    fn a_missing_stats_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(dir.path(), "counters", false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::LOCAL_IO);
        assert!(err.to_string().contains("counters.json"), "{err}");
        assert!(err.to_string().contains("mounted"), "{err}");
        std::fs::write(dir.path().join("stats.json"), "[cache]\nhits 3\n").unwrap();
        let err = run(dir.path(), STATS_FILE, true, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("not the stats"), "{err}");
    }
}
