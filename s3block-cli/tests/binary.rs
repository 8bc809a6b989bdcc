//! Runs the built `s3block` binary: exit codes, help, and the commands that
//! need no store.

use std::process::{Command, Output, Stdio};

fn s3block(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3block")).args(args).output().expect("the s3block binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cost_reproduces_the_how_to_volume() {
    let o = s3block(&["cost", "--size", "30G", "--block-size", "4K", "--prices", "s3-2009"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("7,864,320"), "{text}");
    assert!(text.contains("$78.64"), "{text}");
    assert!(text.contains("2009"), "the price source is shown: {text}");
}

#[test]
fn cost_json_is_machine_readable() {
    let o = s3block(&["cost", "--size", "30G", "--block-size", "4K..16K", "--put-price", "0.01", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("cost --json prints JSON");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["objects_to_fill"], 7_864_320);
    assert_eq!(rows[2]["block_size"], 16384);
    assert!((rows[0]["fill_put_cost"].as_f64().expect("a number") - 78.6432).abs() < 1e-9);
    assert_eq!(v["prices"]["get_per_1000"], 0.0004);
}

#[test]
fn bad_values_are_usage_errors_that_name_the_value() {
    let o = s3block(&["cost", "--size", "30G", "--block-size", "3K"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("3K"));
    let o = s3block(&["cost", "--size", "1G", "--stored", "2G"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--stored"));
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["verify", "--help"], &["cost", "--help"]] {
        let o = s3block(args);
        assert_eq!(o.status.code(), Some(0));
        let text = stdout(&o);
        assert!(text.contains("Exit codes"), "{args:?}: {text}");
        assert!(text.contains("4  volume locked"), "{args:?}: {text}");
    }
}

#[test]
fn stats_formats_a_mount_stats_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cache = s3block_cache::CacheStats::default();
    (cache.hits, cache.dirty_bytes) = (1_234_567, 65_536);
    let stats = s3block_cache::MountStats::new(&cache, &Default::default(), 0.005, 0.0004);
    let json = serde_json::to_string(&stats).expect("JSON");
    std::fs::write(dir.path().join("stats.json"), json).expect("write stats");
    let path = dir.path().to_str().expect("utf-8 temp path");
    let o = s3block(&["stats", path]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).contains("1,234,567"), "{}", stdout(&o));
    assert!(stdout(&o).contains("65,536 bytes (64K)"), "{}", stdout(&o));
    let o = s3block(&["stats", path, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stats --json prints JSON");
    assert_eq!(v["reads"]["hits"], 1_234_567);
    assert_eq!(v["cache"]["dirty_bytes"], 65_536);
    let missing = dir.path().join("nowhere");
    let o = s3block(&["stats", missing.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere"));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A local volume of 1M in 64K blocks, locked by `host`; returns its URL.
fn locked_volume(dir: &tempfile::TempDir, host: &str) -> String {
    let url = format!("file://{}", dir.path().display());
    let o = s3block(&["create", &url, "--size", "1M", "--block-size", "64K"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    std::fs::write(dir.path().join("s3backer-mounted"), format!("{host}\n20260101T000000Z\n")).expect("lock");
    url
}

#[test]
fn confirmations_without_a_terminal_say_to_pass_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = locked_volume(&dir, "elsewhere");
    // Standard input is not a terminal (here: empty).
    let o = Command::new(env!("CARGO_BIN_EXE_s3block"))
        .args(["unlock", &url])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("terminal") && stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(dir.path().join("s3backer-mounted").exists(), "the lock was kept");
    let o = s3block(&["unlock", &url, "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("unlock --json");
    assert_eq!((v["host"].as_str(), v["removed"].as_bool()), (Some("elsewhere"), Some(true)));
    let o = Command::new(env!("CARGO_BIN_EXE_s3block"))
        .args(["erase", &url, "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(dir.path().join("s3block-volume.json").exists(), "nothing was erased");
}

#[test]
fn a_lock_held_by_this_host_is_named_as_this_machine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let here = s3block_core::local_hostname();
    let url = locked_volume(&dir, &here);
    let o = s3block(&["erase", &url, "--quiet"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(stderr(&o).contains(&format!("{here} is this machine")), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_s3block"))
        .args(["unlock", &url])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(stdout(&o).contains(&format!("{here} is this machine")), "{}", stdout(&o));
}

#[test]
fn every_bad_option_value_exits_2_with_a_plain_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    let cases: &[(&[&str], &str)] = &[
        (&["cost", "--size", "-1"], "positive number of bytes"),
        (&["cost", "--size=-1"], "positive number of bytes"),
        (&["create", &url, "--size", "-5G"], "positive number of bytes"),
        (&["cost", "--size", "1K", "--block-size", "4K"], "smaller than one block"),
        (&["cost", "--size", "0"], "--size"),
        (&["cost", "--size", "1G", "--block-size", "-4K"], "positive"),
        (&["create", &url, "--size", "1M", "--block-size", "3K"], "power of two"),
        (&["create", &url, "--size", "1000", "--block-size", "4K"], "1000"),
        (&["verify", &url, "--parallel", "0"], "0"),
        (&["ls", &url, "--range", "5..2"], "backwards"),
        (&["cat", &url, "-1"], "-1"),
        // Geometry options mean nothing to commands that read the volume's own.
        (&["info", &url, "--size", "1M"], "--size"),
        (&["ls", &url, "--block-size", "4K"], "--block-size"),
        (&["erase", &url, "--compress"], "--compress"),
        (&["verify", &url, "--hash-prefix"], "--hash-prefix"),
    ];
    for (args, says) in cases {
        let o = s3block(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?} does not say {says:?}: {}", stderr(&o));
    }
}

#[test]
fn cost_leaves_out_block_sizes_larger_than_the_volume() {
    let o = s3block(&["cost", "--size", "16K", "--block-size", "4K..64K", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(3), "{v}");
}

#[test]
fn copy_takes_a_prefix_for_each_side_and_names_both() {
    let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (src, dst) = (format!("file://{}", a.path().display()), format!("file://{}", b.path().display()));
    let o = s3block(&["create", &src, "--prefix", "src-", "--size", "1M", "--block-size", "64K"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // --prefix is the source's only: the copy has no prefix.
    let o = s3block(&["copy", &src, &dst, "--prefix", "src-", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        b.path().join("s3block-volume.json").exists(),
        "{:?}",
        std::fs::read_dir(b.path()).map(|d| d.count())
    );
    assert!(
        stdout(&o).contains("key prefix \"src-\"") && stdout(&o).contains("no key prefix"),
        "{}",
        stdout(&o)
    );
    // --dst-prefix is the copy's.
    let o = s3block(&["copy", &src, &src, "--prefix", "src-", "--dst-prefix", "dst-", "--quiet", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(a.path().join("dst-s3block-volume.json").exists());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("copy --json");
    assert_eq!(
        (v["source"]["prefix"].as_str(), v["destination"]["prefix"].as_str()),
        (Some("src-"), Some("dst-"))
    );
}

#[test]
fn store_commands_on_a_local_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    let o = s3block(&["create", &url, "--size", "1M", "--block-size", "64K"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = s3block(&["create", &url, "--size", "1M"]);
    assert_eq!(o.status.code(), Some(2), "a second create is refused: {o:?}");
    // A stray block object of the wrong length: verify names it and exits 1.
    std::fs::write(dir.path().join("00000002"), b"short").expect("write object");
    let o = s3block(&["ls", &url, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ls --json");
    assert_eq!(v[0]["key"], "00000002");
    let o = s3block(&["verify", &url, "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("00000002"), "{}", stdout(&o));
    let o = s3block(&["cat", &url, "2", "--raw"]);
    assert_eq!(o.stdout, b"short");
    let o = s3block(&["cat", &url, "2"]);
    assert_eq!(o.status.code(), Some(1), "a corrupt block is a problem found: {o:?}");
    let o = s3block(&["erase", &url, "--force", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    let o = s3block(&["info", &url]);
    assert_eq!(o.status.code(), Some(2), "no volume any more: {o:?}");
}

/// `s3block create` without `--block-size` makes 256 KiB blocks, the
/// mount's default too (one constant for every frontend).
#[test]
fn create_defaults_to_256k_blocks_like_the_mount() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/vol", dir.path().display());
    let o = s3block(&["create", &url, "--size", "1G", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("the descriptor as JSON");
    assert_eq!(d["block_size"], 262_144, "{d}");
    assert_eq!(s3block_fuse::DEFAULT_BLOCK_SIZE, 262_144, "the mount's default");
}
