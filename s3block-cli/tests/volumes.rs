//! The store commands on memory and local-directory stores, driven through
//! the library with a store handle.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fill, plant_bad_blocks_and_verify, put};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use s3block_cli::copy::{CopyOptions, copy};
use s3block_cli::exit::{LOCKED, OK, PROBLEMS};
use s3block_cli::maint::{erase, verify};
use s3block_cli::target::{Target, open as open_url};
use s3block_cli::unlock::unlock;
use s3block_cli::volume::{cat, create, info, ls, open, stat};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId};

fn memory(prefix: &str) -> Target {
    Target::new(Arc::new(InMemory::new()), prefix, true)
}

fn local(dir: &tempfile::TempDir) -> Target {
    open_url(&format!("file://{}", dir.path().display()), &StoreArgs::default()).expect("local store")
}

fn layout(size: &str, block_size: &str, compress: Option<u32>) -> LayoutArgs {
    LayoutArgs {
        size: Some(s3block_core::parse_size(size).unwrap()),
        block_size: Some(s3block_core::parse_size(block_size).unwrap()),
        compression: s3block_store::CompressArgs::from_compression(
            compress.map(|level| s3block_store::Compression::deflate(level).unwrap()),
        ),
        ..Default::default()
    }
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("utf-8 output")
}

async fn new_volume(t: &Target, size: &str, block_size: &str, compress: Option<u32>) {
    let l = layout(size, block_size, compress);
    create(t, &l, false, false, &mut Vec::new()).await.expect("create");
}

#[tokio::test]
async fn create_info_ls_cat_stat_on_memory_and_local() {
    let dir = tempfile::tempdir().unwrap();
    for t in [memory("vol/"), local(&dir)] {
        new_volume(&t, "1M", "64K", Some(6)).await;
        // A second create is refused.
        let err = create(&t, &layout("1M", "64K", None), false, false, &mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        let v = open(&t, &LayoutArgs::default()).await.unwrap();
        let block = Bytes::from(fill(64 << 10, 1));
        v.device.write_block(BlockId(3), block.clone()).await.unwrap();
        v.device.write_block(BlockId(4), block.clone()).await.unwrap();
        v.device.write_block(BlockId(9), block.clone()).await.unwrap();

        let mut out = Vec::new();
        assert_eq!(info(&t, &LayoutArgs::default(), false, &mut out).await.unwrap(), OK);
        let s = text(out);
        assert!(s.contains("blocks stored      3"), "{s}");
        assert!(s.contains("deflate, level 6"), "{s}");

        let mut out = Vec::new();
        ls(&t, &LayoutArgs::default(), None, false, true, false, &mut out).await.unwrap();
        let s = text(out);
        assert!(s.contains(&v.volume.layout.key(BlockId(9))), "{s}");
        assert!(s.contains("deflate"), "{s}");
        let mut out = Vec::new();
        ls(&t, &LayoutArgs::default(), None, true, false, true, &mut out).await.unwrap();
        let runs: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
        assert_eq!(runs[0]["first"], 3);
        assert_eq!(runs[0]["blocks"], 2);
        let range = s3block_cli::parse_block_range("5..").unwrap();
        let mut out = Vec::new();
        ls(&t, &LayoutArgs::default(), Some(range), false, false, true, &mut out).await.unwrap();
        let entries: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(entries.as_array().unwrap().len(), 1);
        assert_eq!(entries[0]["block"], 9);

        let mut out = Vec::new();
        cat(&t, &LayoutArgs::default(), 3, false, &mut out).await.unwrap();
        assert_eq!(out, block.to_vec());
        let mut raw = Vec::new();
        cat(&t, &LayoutArgs::default(), 3, true, &mut raw).await.unwrap();
        assert!(raw.len() < out.len(), "the raw object is compressed");
        let mut zeros = Vec::new();
        cat(&t, &LayoutArgs::default(), 5, false, &mut zeros).await.unwrap();
        assert_eq!(zeros, vec![0u8; 64 << 10]);

        let mut out = Vec::new();
        stat(&t, &LayoutArgs::default(), 3, false, &mut out).await.unwrap();
        let s = text(out);
        assert!(s.contains("Content-Encoding") && s.contains("zlib-compressed"), "{s}");
        let mut out = Vec::new();
        stat(&t, &LayoutArgs::default(), 6, false, &mut out).await.unwrap();
        assert!(text(out).contains("all zeros"));
        // A geometry contradicting the volume is refused, naming both values.
        let err = info(&t, &layout("1M", "4K", None), false, &mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("64K") && err.to_string().contains("4K"), "{err}");
    }
}

#[tokio::test]
async fn verify_names_truncated_garbage_and_wrongly_encoded_blocks() {
    let dir = tempfile::tempdir().unwrap();
    for t in [memory(""), local(&dir)] {
        new_volume(&t, "1M", "4K", None).await;
        let [_, key2, _] = plant_bad_blocks_and_verify(&t, &[0]).await;
        let mut out = Vec::new();
        assert_eq!(verify(&t, &LayoutArgs::default(), 4, true, false, &mut out).await.unwrap(), PROBLEMS);
        let s = text(out);
        assert!(s.contains(&key2) && s.contains("3 of 4 blocks are bad"), "{s}");
    }
}

async fn object_count(store: &dyn ObjectStore) -> usize {
    store.list(None).try_collect::<Vec<_>>().await.unwrap().len()
}

#[tokio::test]
async fn erase_leaves_no_object_and_respects_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    for t in [memory("v/"), local(&dir)] {
        new_volume(&t, "4M", "4K", Some(1)).await;
        let v = open(&t, &LayoutArgs::default()).await.unwrap();
        for b in (0..1024).step_by(3) {
            v.device.write_block(BlockId(b), Bytes::from(fill(4096, b as u8))).await.unwrap();
        }
        put(
            t.store.as_ref(),
            &format!("{}s3backer-mounted", t.prefix),
            b"vps\n20090202T000000Z\n".to_vec(),
            None,
        )
        .await;
        // Locked: refused without --force; declined: nothing deleted.
        let err =
            erase(&t, &LayoutArgs::default(), false, true, &mut |_| true, &mut Vec::new()).await.unwrap_err();
        assert_eq!(err.exit_code(), LOCKED);
        assert!(err.to_string().contains("vps"), "{err}");
        let mut out = Vec::new();
        unlock(&t, &mut |info| Ok(info.host == "vps"), false, &mut out).await.unwrap();
        assert!(text(out).contains("Locked by vps"));
        let before = object_count(t.store.as_ref()).await;
        let err = erase(&t, &LayoutArgs::default(), false, true, &mut |_| false, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), s3block_cli::exit::CANCELLED);
        assert_eq!(object_count(t.store.as_ref()).await, before);
        let mut asked = 0;
        erase(
            &t,
            &LayoutArgs::default(),
            false,
            true,
            &mut |n| {
                asked = n;
                true
            },
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(asked, 342);
        assert_eq!(object_count(t.store.as_ref()).await, 0, "erase left objects behind");
    }
    // Not even an attribute sidecar is left in the directory.
    let mut left = Vec::new();
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { dirs.push(p) } else { left.push(p) }
        }
    }
    assert!(left.is_empty(), "files left: {left:?}");
}

async fn copy_and_compare(src: Target, dst: Target, from: &str, to: &str) {
    new_volume(&src, "4M", from, None).await;
    let s = open(&src, &LayoutArgs::default()).await.unwrap();
    // Data across block boundaries of both sizes, and zero gaps.
    s.device.write_at(100, Bytes::from(fill(200_000, 7))).await.unwrap();
    s.device.write_at(3 << 20, Bytes::from(fill(70_000, 9))).await.unwrap();
    let opts = CopyOptions {
        block_size: Some(s3block_core::parse_size(to).unwrap()),
        parallel: 4,
        quiet: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    assert_eq!(copy(&src, &dst, &opts, true, &mut out).await.unwrap(), OK);
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["mismatched_chunks"].as_array().unwrap().len(), 0);
    let d = open(&dst, &LayoutArgs::default()).await.unwrap();
    assert_eq!(u64::from(d.volume.geometry.block_size()), s3block_core::parse_size(to).unwrap());
    let whole_src = s.device.read_at(0, 4 << 20).await.unwrap();
    let whole_dst = d.device.read_at(0, 4 << 20).await.unwrap();
    assert!(whole_src == whole_dst, "copy {from} -> {to} differs");
    // Zero blocks were skipped: the copy stores only blocks holding data.
    let stored = d.device.list_blocks().await.unwrap().len();
    let bs = u64::from(d.volume.geometry.block_size()) as usize;
    let nonzero = whole_dst.chunks(bs).filter(|c| c.iter().any(|&x| x != 0)).count();
    assert_eq!(stored, nonzero);
}

#[tokio::test]
async fn copy_reblocks_64k_to_1m_and_back_byte_identical() {
    copy_and_compare(memory("a/"), memory("b/"), "64K", "1M").await;
    copy_and_compare(memory("a/"), memory("b/"), "1M", "64K").await;
    let (d1, d2, d3, d4) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    copy_and_compare(local(&d1), local(&d2), "64K", "1M").await;
    copy_and_compare(local(&d3), local(&d4), "1M", "64K").await;
}

#[tokio::test]
async fn copy_refuses_a_mounted_source_and_an_existing_destination() {
    let (src, dst) = (memory("s/"), memory("d/"));
    new_volume(&src, "1M", "64K", None).await;
    put(src.store.as_ref(), "s/s3backer-mounted", b"host\nnow\n".to_vec(), None).await;
    let opts = CopyOptions { parallel: 2, quiet: true, ..Default::default() };
    let err = copy(&src, &dst, &opts, false, &mut Vec::new()).await.unwrap_err();
    assert_eq!(err.exit_code(), LOCKED);
    let forced = CopyOptions { force: true, ..opts.clone() };
    assert_eq!(copy(&src, &dst, &forced, false, &mut Vec::new()).await.unwrap(), OK);
    let err = copy(&src, &dst, &forced, false, &mut Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
}

#[tokio::test]
async fn a_lock_naming_this_host_says_so_and_unlock_reports_json() {
    let t = memory("v/");
    new_volume(&t, "1M", "64K", None).await;
    let here = s3block_core::local_hostname();
    let lock = format!("{here}\n20260101T000000Z\n").into_bytes();
    put(t.store.as_ref(), &format!("{}s3backer-mounted", t.prefix), lock, None).await;
    let err =
        erase(&t, &LayoutArgs::default(), false, true, &mut |_| true, &mut Vec::new()).await.unwrap_err();
    assert_eq!(err.exit_code(), LOCKED);
    let msg = err.to_string();
    assert!(msg.contains(&format!("{here} is this machine")), "{msg}");
    // The library names no command; the program adds which one breaks the lock.
    assert!(!msg.contains("s3block unlock"), "{msg}");
    let hint = match &err {
        s3block_cli::CliError::Core(e) => s3block_store::command_hint(e).unwrap_or_default(),
        other => panic!("not a library error: {other}"),
    };
    assert!(hint.contains("s3block unlock"), "{hint}");
    // unlock --json: who held it, that it is this host, that it was removed.
    let mut out = Vec::new();
    unlock(&t, &mut |_| Ok(true), true, &mut out).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["locked"].as_bool(), v["this_host"].as_bool(), v["removed"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(v["host"], here.as_str());
    let mut out = Vec::new();
    unlock(&t, &mut |_| Ok(true), true, &mut out).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["locked"], false);
}

#[tokio::test]
async fn info_on_an_empty_volume_makes_one_list() {
    // memory:// opened from a URL lists in 8 parallel ranges, as S3 does.
    let t = open_url("memory:///vol/", &StoreArgs::default()).unwrap();
    new_volume(&t, "30G", "256K", None).await;
    t.counters.reset();
    let mut out = Vec::new();
    info(&t, &LayoutArgs::default(), true, &mut out).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["blocks_stored"], 0);
    assert_eq!(t.counters.snapshot().lists, 1, "{v}");
    // With blocks stored, the listing still finds them all.
    let vol = open(&t, &LayoutArgs::default()).await.unwrap();
    for b in [0u32, 7, 100_000] {
        vol.device.write_block(BlockId(b), Bytes::from(fill(256 << 10, 1))).await.unwrap();
    }
    let mut out = Vec::new();
    info(&t, &LayoutArgs::default(), true, &mut out).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["blocks_stored"], 3);
}

#[tokio::test]
async fn no_volume_says_how_to_make_one_without_naming_geometry_options() {
    let t = memory("nothing/");
    let err = info(&t, &LayoutArgs::default(), false, &mut Vec::new()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("s3block create") && msg.contains("--adopt"), "{msg}");
    assert!(!msg.contains("give the size"), "{msg}");
}
