//! Runs the built `s3block` binary: exit codes, help, and the commands that
//! need no store.

use std::process::{Command, Output};

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
        assert!(text.contains("Exit codes:"), "{args:?}: {text}");
        assert!(text.contains("4  volume locked"), "{args:?}: {text}");
    }
}

#[test]
fn stats_formats_a_mount_stats_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("stats"), "http_puts 1234567\n").expect("write stats");
    let path = dir.path().to_str().expect("utf-8 temp path");
    let o = s3block(&["stats", path]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).contains("1,234,567"));
    let missing = dir.path().join("nowhere");
    let o = s3block(&["stats", missing.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere"));
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
