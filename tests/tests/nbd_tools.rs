//! The `s3block-nbd` program as the standard user-space NBD clients see
//! it: `nbdinfo` (size, block size constraints, flags, a map that matches
//! the stored blocks after writes and after a TRIM), `nbdcopy` of a large
//! pattern in and out over four connections, and qemu's `qemu-img convert`,
//! `compare` and `map`; on a local directory, in memory and on Garage.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

mod nbd_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nbd_support::{Server, Store, output, run, sha256, tools, write_pattern};
use serde_json::Value;

const BLOCK: u64 = 64 << 10;

/// The blocks of 64K the data extents of `nbdinfo --map --json` cover.
fn mapped_blocks(server: &Server) -> BTreeSet<u64> {
    let map: Value = serde_json::from_str(&run("nbdinfo", &["--map", "--json", &server.uri()])).unwrap();
    let mut blocks = BTreeSet::new();
    for extent in map.as_array().expect("a list of extents") {
        let (offset, length, kind) = (
            extent["offset"].as_u64().unwrap(),
            extent["length"].as_u64().unwrap(),
            extent["type"].as_u64().unwrap(),
        );
        if kind & 1 == 0 {
            // Not a hole: data. Extents are whole blocks.
            assert_eq!((offset % BLOCK, length % BLOCK), (0, 0), "extent {extent}");
            blocks.extend(offset / BLOCK..(offset + length) / BLOCK);
        }
    }
    blocks
}

/// Runs qemu-io commands on the export (`-d unmap` so discards reach it).
fn qemu_io(server: &Server, commands: &[&str]) {
    let mut args = vec!["-f", "raw", "-d", "unmap"];
    for c in commands {
        args.extend(["-c", c]);
    }
    let uri = server.uri();
    args.push(&uri);
    run("qemu-io", &args);
}

#[test]
fn nbdinfo_reports_the_volume_and_its_map_matches_the_stored_blocks() {
    if !tools(&["nbdinfo", "qemu-io"]) {
        return;
    }
    for store in Store::local_and_garage("nbdinfo_map") {
        nbdinfo_on(&store);
    }
}

fn nbdinfo_on(store: &Store) {
    let server = Server::start(store, &["--size=64M", "--block-size=64K"]);
    let info: Value = serde_json::from_str(&run("nbdinfo", &["--json", &server.uri()])).unwrap();
    let export = &info["exports"][0];
    assert_eq!(export["export-size"], 64 << 20, "{info}");
    assert_eq!(export["block_size_preferred"], BLOCK, "{info}");
    assert_eq!(export["block_size_maximum"], 32 << 20, "{info}");
    assert_eq!(export["block_size_minimum"].as_u64(), Some(512), "{info}");
    for flag in
        ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn"]
    {
        assert_eq!(export[flag], true, "{flag}: {info}");
    }
    assert_eq!(export["is_read_only"], false, "{info}");
    assert!(export["description"].as_str().unwrap().contains("64K"), "{info}");
    assert_eq!(mapped_blocks(&server), BTreeSet::new(), "a new volume is one hole");

    // A whole block, part of one, and three in a row; some still dirty.
    qemu_io(&server, &["write -P 0x11 0 64k", "write -P 0x22 200k 10", "write -P 0x33 1M 192k"]);
    let written: BTreeSet<u64> = [0, 3, 16, 17, 18].into();
    assert_eq!(mapped_blocks(&server), written);
    qemu_io(&server, &["flush"]);
    assert_eq!(store.stored_blocks(), written.iter().copied().collect::<Vec<_>>());
    assert_eq!(mapped_blocks(&server), written);

    // TRIM of two whole blocks: holes in the map, deleted from the store.
    qemu_io(&server, &["discard 1M 128k", "flush"]);
    let left: BTreeSet<u64> = [0, 3, 18].into();
    assert_eq!(mapped_blocks(&server), left);
    assert_eq!(store.stored_blocks(), left.iter().copied().collect::<Vec<_>>());
    server.stop();

    // A new server reads the same map from the store's listing, made in
    // the background once it serves (until then unknown blocks are data).
    let again = Server::start(store, &["--list-blocks", "--read-only"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !again.log().contains("are known to be zero") {
        assert!(Instant::now() < deadline, "no listing after 30 s:\n{}", again.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: Value = serde_json::from_str(&run("nbdinfo", &["--json", &again.uri()])).unwrap();
    assert_eq!(info["exports"][0]["is_read_only"], true, "{info}");
    assert_eq!(mapped_blocks(&again), left);
    again.stop();
}

/// nbdcopy of `size` bytes in and out with four connections; the hashes
/// match, and a new server of the same store (unless in memory) returns
/// the same bytes. Prints the throughput.
fn copy_in_and_out(store: &Store, size: u64, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (source, back) = (dir.path().join("in"), dir.path().join("out"));
    write_pattern(&source, size, 0x5eed);
    let mut server_args = vec![format!("--size={size}"), "--block-size=256K".to_owned()];
    server_args.extend(args.iter().map(|a| (*a).to_owned()));
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = Server::start(store, &server_args);
    let started = Instant::now();
    run("nbdcopy", &["--connections=4", "--flush", source.to_str().unwrap(), &server.uri()]);
    let write = started.elapsed();
    let started = Instant::now();
    run("nbdcopy", &["--connections=4", &server.uri(), back.to_str().unwrap()]);
    let read = started.elapsed();
    let mib = size as f64 / f64::from(1 << 20);
    eprintln!(
        "nbdcopy on {}: {mib:.0} MiB in {:.1}s ({:.0} MiB/s), out in {:.1}s ({:.0} MiB/s)",
        store.kind(),
        write.as_secs_f64(),
        mib / write.as_secs_f64(),
        read.as_secs_f64(),
        mib / read.as_secs_f64()
    );
    let expected = sha256(&source);
    assert_eq!(sha256(&back), expected, "the bytes read back differ from those written");
    server.stop();
    if store.kind() == "memory" {
        return;
    }
    std::fs::remove_file(&back).unwrap();
    let again = Server::start(store, &["--read-only"]);
    run("nbdcopy", &["--connections=4", &again.uri(), back.to_str().unwrap()]);
    assert_eq!(sha256(&back), expected, "a new server returns other bytes");
    again.stop();
}

#[test]
fn nbdcopy_of_1_gib_in_and_out_over_four_connections_in_memory() {
    if !tools(&["nbdcopy", "sha256sum"]) {
        return;
    }
    let store = Store::memory();
    copy_in_and_out(&store, 1 << 30, &["--cache-size=64M"]);
}

#[test]
fn nbdcopy_in_and_out_on_garage_and_back_from_a_new_server() {
    if !tools(&["nbdcopy", "sha256sum"]) {
        return;
    }
    let Some(store) = Store::garage("nbdcopy") else { return };
    copy_in_and_out(&store, 256 << 20, &["--cache-size=32M"]);
}

#[test]
fn qemu_img_convert_compare_and_map_agree_with_the_image() {
    if !tools(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    // A sparse 32M image with data in blocks 2-3 and 100, a partial block 300.
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(32 << 20).unwrap();
    let mut data = Vec::new();
    write_pattern(&dir.path().join("p"), 2 * BLOCK, 7);
    data.extend(std::fs::read(dir.path().join("p")).unwrap());
    use std::os::unix::fs::FileExt;
    file.write_all_at(&data, 2 * BLOCK).unwrap();
    file.write_all_at(&data[..BLOCK as usize], 100 * BLOCK).unwrap();
    file.write_all_at(b"a few bytes", 300 * BLOCK + 1000).unwrap();
    drop(file);

    for store in Store::local_and_garage("qemu_img") {
        let server = Server::start(&store, &["--size=32M", "--block-size=64K"]);
        let uri = server.uri();
        run("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", image.to_str().unwrap(), &uri]);
        let same = run("qemu-img", &["compare", "-f", "raw", "-F", "raw", image.to_str().unwrap(), &uri]);
        assert!(same.contains("identical"), "{same}");
        let map: Value =
            serde_json::from_str(&run("qemu-img", &["map", "--output=json", "-f", "raw", &uri])).unwrap();
        let data_blocks: BTreeSet<u64> = map
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"] == true)
            .flat_map(|e| {
                let (start, length) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
                start / BLOCK..(start + length).div_ceil(BLOCK)
            })
            .collect();
        assert_eq!(data_blocks, [2, 3, 100, 300].into(), "{}: {map}", store.kind());
        // A changed byte is found.
        run("qemu-io", &["-f", "raw", "-c", "write -P 0x01 5M 1", &uri]);
        let differ =
            output("qemu-img", &["compare", "-f", "raw", "-F", "raw", image.to_str().unwrap(), &uri]);
        assert_eq!(differ.status.code(), Some(1), "{}", String::from_utf8_lossy(&differ.stdout));
        server.stop();
    }
}

#[test]
fn the_stats_files_are_the_mounts_and_s3block_stats_reads_them() {
    if !tools(&["qemu-io"]) {
        return;
    }
    let store = Store::local();
    let server = Server::start(&store, &["--size=16M", "--block-size=64K"]);
    qemu_io(&server, &["write -P 0x42 0 256k", "flush"]);
    // Rewritten every second (the tests' --stats-interval).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let text = std::fs::read_to_string(server.stats_file()).unwrap();
    assert!(text.starts_with("[cache]"), "{text}");
    assert!(text.contains("[nbd]") && text.contains("write 1 ") && text.contains("262144 written"), "{text}");
    let dir = server.stats_file().parent().unwrap().to_owned();
    let shown = run(env!("CARGO_BIN_EXE_rel-s3block"), &["stats", dir.to_str().unwrap(), "--json"]);
    let json: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(json["requests"]["block_uploads"], 4, "{shown}");
    server.stop();
}
