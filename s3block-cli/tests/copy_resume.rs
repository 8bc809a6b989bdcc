//! `copy --resume` on memory stores: an interrupted copy is continued
//! (missing blocks written, corrupt and changed ones rewritten, equal ones
//! skipped, blocks the source does not hold deleted, then verified), and a
//! destination holding another volume is refused, naming the difference.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use s3block_cli::LayoutArgs;
use s3block_cli::copy::{CopyOptions, copy};
use s3block_cli::exit::OK;
use s3block_cli::target::Target;
use s3block_cli::volume::{create, open};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId};

fn memory(prefix: &str) -> Target {
    Target::new(Arc::new(InMemory::new()), prefix, true)
}

fn layout(size: u64, block_size: u64, compress: Option<u32>) -> LayoutArgs {
    LayoutArgs {
        size: Some(size),
        block_size: Some(block_size),
        compression: s3block_store::CompressArgs::from_compression(
            compress.map(|level| s3block_store::Compression::deflate(level).unwrap()),
        ),
        ..Default::default()
    }
}

fn block(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len).map(|i| ((i / 5) as u8).wrapping_mul(29).wrapping_add(seed) | 1).collect::<Vec<u8>>(),
    )
}

/// A 1 MiB source of 4K blocks with blocks 0..40 written.
async fn source() -> Target {
    let src = memory("s/");
    create(&src, &layout(1 << 20, 4096, None), false, false, &mut Vec::new()).await.unwrap();
    let s = open(&src, &LayoutArgs::default()).await.unwrap();
    for b in 0..40u32 {
        s.device.write_block(BlockId(b), block(4096, b as u8)).await.unwrap();
    }
    src
}

async fn run(src: &Target, dst: &Target, opts: &CopyOptions) -> serde_json::Value {
    let mut out = Vec::new();
    assert_eq!(copy(src, dst, opts, true, &mut out).await.unwrap(), OK);
    serde_json::from_slice(&out).unwrap()
}

async fn same_contents(src: &Target, dst: &Target) {
    let s = open(src, &LayoutArgs::default()).await.unwrap();
    let d = open(dst, &LayoutArgs::default()).await.unwrap();
    let a = s.device.read_at(0, 1 << 20).await.unwrap();
    let b = d.device.read_at(0, 1 << 20).await.unwrap();
    assert!(a == b, "the copy differs from its source");
}

#[tokio::test]
async fn an_interrupted_copy_resumes_writing_missing_and_corrupt_blocks_and_skipping_equal_ones() {
    let (src, dst) = (source().await, memory("d/"));
    let opts = CopyOptions { parallel: 4, quiet: true, ..Default::default() };
    let first = run(&src, &dst, &opts).await;
    assert_eq!(first["blocks_written"], 40, "{first}");
    assert_eq!(first["resumed"], false, "{first}");

    // The interruption: blocks 3, 4 and 5 never arrived, block 7 arrived
    // torn, block 8 holds other bytes, and block 100 (zeros in the source)
    // holds data.
    for b in [3u32, 4, 5] {
        dst.store.delete(&Path::from(format!("d/{b:08x}"))).await.unwrap();
    }
    dst.store.put(&Path::from("d/00000007"), Bytes::from_static(b"torn").into()).await.unwrap();
    let d = open(&dst, &LayoutArgs::default()).await.unwrap();
    d.device.write_block(BlockId(8), block(4096, 200)).await.unwrap();
    d.device.write_block(BlockId(100), block(4096, 100)).await.unwrap();

    // Without --resume, the existing destination is refused.
    let err = copy(&src, &dst, &opts, false, &mut Vec::new()).await.unwrap_err().to_string();
    assert!(err.contains("refusing to overwrite") && err.contains("--resume"), "{err}");

    let resume = CopyOptions { resume: true, ..opts.clone() };
    let report = run(&src, &dst, &resume).await;
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(report["blocks_written"], 5, "3 missing, 1 torn, 1 changed: {report}");
    assert_eq!(report["blocks_skipped"], 35, "{report}");
    assert_eq!(report["blocks_deleted"], 1, "{report}");
    assert!(report["chunks_verified"].as_u64().unwrap() >= 40, "{report}");
    assert_eq!(report["mismatched_chunks"].as_array().unwrap().len(), 0, "{report}");
    same_contents(&src, &dst).await;

    // Resumed again: nothing left to write, and the summary says so.
    let mut out = Vec::new();
    assert_eq!(copy(&src, &dst, &resume, false, &mut out).await.unwrap(), OK);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("40 blocks already equal were skipped, 0 written, 0 deleted"), "{text}");
}

#[tokio::test]
async fn a_reblocking_copy_resumes_too() {
    let (src, dst) = (source().await, memory("d/"));
    let opts = CopyOptions { block_size: Some(64 << 10), parallel: 2, quiet: true, ..Default::default() };
    assert_eq!(run(&src, &dst, &opts).await["blocks_written"], 3);
    dst.store.delete(&Path::from("d/00000001")).await.unwrap();
    let report = run(&src, &dst, &CopyOptions { resume: true, ..opts }).await;
    assert_eq!((report["blocks_written"].as_u64(), report["blocks_skipped"].as_u64()), (Some(1), Some(2)));
    assert_eq!(report["mismatched_chunks"].as_array().unwrap().len(), 0, "{report}");
    same_contents(&src, &dst).await;
}

#[tokio::test]
async fn resume_into_an_empty_destination_is_a_plain_copy() {
    let (src, dst) = (source().await, memory("d/"));
    let report = run(&src, &dst, &CopyOptions { resume: true, quiet: true, ..Default::default() }).await;
    assert_eq!((report["resumed"].as_bool(), report["blocks_written"].as_u64()), (Some(false), Some(40)));
}

#[tokio::test]
async fn resume_refuses_a_destination_holding_another_volume_naming_the_differences() {
    let src = source().await;
    let dst = memory("d/");
    create(&dst, &layout(2 << 20, 64 << 10, Some(6)), false, false, &mut Vec::new()).await.unwrap();
    let d = open(&dst, &LayoutArgs::default()).await.unwrap();
    d.device.write_block(BlockId(0), block(64 << 10, 1)).await.unwrap();
    let resume = CopyOptions { resume: true, quiet: true, ..Default::default() };
    let err = copy(&src, &dst, &resume, false, &mut Vec::new()).await.unwrap_err().to_string();
    assert!(
        err.contains("refusing to resume") && err.contains("is not the copy this command makes"),
        "{err}"
    );
    assert!(err.contains("size: 2M there, 1M for this copy"), "{err}");
    assert!(err.contains("block size: 64K there, 4K for this copy"), "{err}");
    assert!(err.contains("compression: deflate") && err.contains("none for this copy"), "{err}");
    // Untouched.
    assert_eq!(d.device.read_block(BlockId(0)).await.unwrap(), block(64 << 10, 1));

    // The same geometry with other key naming is refused as well.
    let other = memory("h/");
    let hashed = LayoutArgs { hash_prefix: true, ..layout(1 << 20, 4096, None) };
    create(&other, &hashed, false, false, &mut Vec::new()).await.unwrap();
    let err = copy(&src, &other, &resume, false, &mut Vec::new()).await.unwrap_err().to_string();
    assert!(err.contains("keys: hash-prefixed there, plain for this copy"), "{err}");
}

fn s3block(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_s3block"))
        .args(args)
        .env_remove("S3BLOCK_PASSWORD")
        .env_remove("S3BLOCK_PASSWORD_FILE")
        .env_remove("S3BLOCK_DEST_PASSWORD")
        .env_remove("S3BLOCK_DEST_PASSWORD_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn an_encrypted_copy_between_directories_resumes_with_its_password_only() {
    use s3block_cli::StoreArgs;
    use s3block_cli::exit::{USAGE, WRONG_PASSWORD};
    let tmp = tempfile::tempdir().unwrap();
    let (plain, enc) = (tmp.path().join("plain"), tmp.path().join("enc"));
    let url = |p: &std::path::Path| format!("file://{}", p.display());
    std::fs::create_dir(&plain).unwrap();
    let src = s3block_cli::target::open(&url(&plain), &StoreArgs::default()).unwrap();
    create(&src, &layout(1 << 20, 64 << 10, None), false, false, &mut Vec::new()).await.unwrap();
    let s = open(&src, &LayoutArgs::default()).await.unwrap();
    for b in [1u32, 2, 5, 7, 9] {
        s.device.write_block(BlockId(b), block(64 << 10, b as u8)).await.unwrap();
    }
    let (right, wrong) = (tmp.path().join("right"), tmp.path().join("wrong"));
    std::fs::write(&right, "open sesame\n").unwrap();
    std::fs::write(&wrong, "close sesame\n").unwrap();
    let dest_pw = |p: &std::path::Path| format!("--dest-password-file={}", p.display());
    let copy_args = |pw: &std::path::Path, extra: &[&str]| {
        let mut a = vec!["copy".to_owned(), url(&plain), url(&enc), "--dest-encrypt".into(), dest_pw(pw)];
        a.extend(["-q", "--json"].iter().chain(extra).map(|s| s.to_string()));
        a
    };
    let run_bin = |a: Vec<String>| s3block(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run_bin(copy_args(&right, &[]));
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    // Interrupted: block 2 missing, block 7 tampered with (it no longer authenticates).
    let dst = s3block_cli::target::open(&url(&enc), &StoreArgs::default()).unwrap();
    dst.store.delete(&Path::from("00000002")).await.unwrap();
    let got = dst.store.get(&Path::from("00000007")).await.unwrap();
    let attributes = got.attributes.clone();
    let mut body = got.bytes().await.unwrap().to_vec();
    let last = body.len() - 1;
    body[last] ^= 0x40;
    let put = object_store::PutOptions { attributes, ..Default::default() };
    dst.store.put_opts(&Path::from("00000007"), body.into(), put).await.unwrap();

    // The wrong password for the copy: refused before anything is written.
    let o = run_bin(copy_args(&wrong, &["--resume"]));
    assert_eq!(o.status.code(), Some(i32::from(WRONG_PASSWORD)), "{o:?}");
    // A plaintext copy is not this one.
    let mut plain_copy = copy_args(&right, &["--resume"]);
    plain_copy[3] = "--dest-encrypt=none".into();
    let o = run_bin(plain_copy);
    assert_eq!(o.status.code(), Some(i32::from(USAGE)), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("encryption: xchacha20poly1305 there, none for this copy"), "{err}");

    let o = run_bin(copy_args(&right, &["--resume"]));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!((report["blocks_written"].as_u64(), report["blocks_skipped"].as_u64()), (Some(2), Some(3)));
    assert_eq!(report["mismatched_chunks"].as_array().unwrap().len(), 0, "{report}");
}
