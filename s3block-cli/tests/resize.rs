//! `s3block resize` on local-directory volumes, through the binary: grow
//! (absolute and relative), a shrink refused while blocks past the new end
//! hold data and forced with `--discard-tail`, a mounted volume refused,
//! the block size kept, and what is kept of encrypted, hash-prefixed and
//! s3backer-made (descriptor-less) volumes. s3backer reading the result and
//! a kill between the writes are in `tests/tests/resize_*.rs` (Garage).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use s3block_core::{BlockDevice, BlockId};
use s3block_store::{Volume, read_block0_geometry, read_descriptor};

const BS: usize = 4096;

fn s3block(args: &[&str]) -> Output {
    s3block_with(args, &[])
}

fn s3block_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3block"));
    cmd.args(args).stdin(Stdio::null()).env_remove("S3BLOCK_PASSWORD").env_remove("S3BLOCK_PASSWORD_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the s3block binary runs")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn block(seed: u8) -> Bytes {
    Bytes::from((0..BS).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1).collect::<Vec<_>>())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Writes `blocks` (each its own pattern) through a read-write open.
fn write_blocks(url: &str, blocks: &[u32], env_password: Option<&str>) {
    runtime().block_on(async {
        let mut b = Volume::at(url).unwrap();
        if let Some(p) = env_password {
            b = b.password(s3block_store::PasswordSource::Given(s3block_store::Password::new(p)));
        }
        let v = b.open().await.unwrap();
        for &n in blocks {
            v.device().write_block(BlockId(n), block(n as u8)).await.unwrap();
        }
        v.close().await.unwrap();
    });
}

/// The size s3block opens the volume at, and whether `blocks` read back
/// as written.
fn size_and_check(url: &str, blocks: &[u32]) -> u64 {
    runtime().block_on(async {
        let v = Volume::at(url).unwrap().read_only(true).open().await.unwrap();
        for &n in blocks {
            assert_eq!(v.device().read_block(BlockId(n)).await.unwrap(), block(n as u8), "block {n}");
        }
        v.geometry().size()
    })
}

/// (size in the descriptor, size in block 0's metadata) of a local volume.
fn recorded(dir: &Path) -> (Option<u64>, Option<u64>) {
    runtime().block_on(async {
        let store = s3block_store::StoreConfig::new(url(dir)).open().unwrap();
        let d = read_descriptor(store.store.as_ref(), &store.prefix).await.unwrap().map(|d| d.size);
        let b0 =
            read_block0_geometry(store.store.as_ref(), &store.prefix).await.unwrap().map(|(g, _)| g.size());
        (d, b0)
    })
}

fn create(dir: &Path, extra: &[&str]) -> String {
    let u = url(dir);
    let mut args = vec!["create", u.as_str(), "--size", "1M", "--block-size", "4K"];
    args.extend_from_slice(extra);
    let o = s3block(&args);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    u
}

#[test]
fn grow_then_a_refused_and_a_forced_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let u = create(dir.path(), &[]);
    write_blocks(&u, &[0, 3, 200], None);

    let o = s3block(&["resize", &u, "--size", "+1M"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(out(&o).contains("from 1M (256 blocks) to 2M (512 blocks)"), "{}", out(&o));
    assert_eq!(recorded(dir.path()), (Some(2 << 20), Some(2 << 20)), "descriptor and block 0 both grown");
    assert_eq!(size_and_check(&u, &[0, 3, 200]), 2 << 20);
    write_blocks(&u, &[300], None);

    // Blocks 200 and 300 are past 512K (block 128 on): refused, naming both.
    let o = s3block(&["resize", &u, "--size", "512K"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let e = err(&o);
    assert!(
        e.contains("2 blocks past the new end") && e.contains("block 200") && e.contains("--discard-tail"),
        "{e}"
    );
    assert!(e.contains("at least 1204K"), "the smallest size that keeps them: {e}");
    assert_eq!(recorded(dir.path()), (Some(2 << 20), Some(2 << 20)), "nothing written");
    // --discard-tail asks first; without a terminal it says to pass --force.
    let o = s3block(&["resize", &u, "--size", "512K", "--discard-tail"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(err(&o).contains("--force"), "{}", err(&o));
    assert!(dir.path().join("000000c8").exists(), "block 200 kept");

    let o = s3block(&["resize", &u, "--size", "-1536K", "--discard-tail", "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["old_size"], 2 << 20);
    assert_eq!(j["new_size"], 512 << 10);
    assert_eq!(j["discarded_blocks"], 2);
    assert_eq!((j["block0_stored"].as_bool(), j["descriptor"].as_bool()), (Some(true), Some(true)));
    assert!(!dir.path().join("000000c8").exists() && !dir.path().join("0000012c").exists());
    assert_eq!(recorded(dir.path()), (Some(512 << 10), Some(512 << 10)));
    assert_eq!(size_and_check(&u, &[0, 3]), 512 << 10);
    // The lock was released.
    assert!(!dir.path().join("s3backer-mounted").exists());
}

#[test]
fn bad_sizes_and_a_block_size_change_are_refused_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let u = create(dir.path(), &[]);
    let cases: [(&[&str], &str); 4] = [
        (&["--size", "1000000"], "not a whole number of the volume's 4K blocks"),
        (&["--size", "-1M"], "leaves nothing"),
        (&["--size", "2M", "--block-size", "64K"], "copy --block-size"),
        (&["--size", "+0"], "changes nothing"),
    ];
    for (args, want) in cases {
        let mut all = vec!["resize", u.as_str()];
        all.extend_from_slice(args);
        let o = s3block(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(err(&o).contains(want), "{args:?}: {}", err(&o));
    }
    assert_eq!(recorded(dir.path()), (Some(1 << 20), None));
    // The block size given and equal is fine.
    let o = s3block(&["resize", &u, "--size", "2M", "--block-size", "4K"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // No block 0: no object is made for it, and the output says what s3backer needs.
    assert!(out(&o).contains("Block 0 is not stored") && out(&o).contains("--size=2097152"), "{}", out(&o));
    assert!(!dir.path().join("00000000").exists());
    assert_eq!(recorded(dir.path()), (Some(2 << 20), None));
}

#[test]
fn a_mounted_volume_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let u = create(dir.path(), &[]);
    std::fs::write(dir.path().join("s3backer-mounted"), "elsewhere\n20260101T000000Z\n").unwrap();
    let o = s3block(&["resize", &u, "--size", "2M"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(err(&o).contains("elsewhere"), "{}", err(&o));
    assert_eq!(recorded(dir.path()), (Some(1 << 20), None));
}

#[test]
fn encryption_hash_prefix_and_the_volume_id_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let pw = [("S3BLOCK_PASSWORD", "correct horse")];
    let u = url(dir.path());
    let o = s3block_with(
        &["create", &u, "--size", "1M", "--block-size", "4K", "--hash-prefix", "--encrypt", "--compress"],
        &pw,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("s3block-volume.json")).unwrap()).unwrap();
    write_blocks(&u, &[0, 255], Some("correct horse"));
    // No password is needed to resize: blocks are not decoded.
    let o = s3block(&["resize", &u, "--size", "3M"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let mut after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("s3block-volume.json")).unwrap()).unwrap();
    assert_eq!(after["size"], 3 << 20);
    after["size"] = before["size"].clone();
    assert_eq!(after, before, "every field but the size kept");
    runtime().block_on(async {
        let store = s3block_store::StoreConfig::new(&u).open().unwrap();
        let (g, hashed) = read_block0_geometry(store.store.as_ref(), &store.prefix).await.unwrap().unwrap();
        assert_eq!((g.size(), hashed), (3 << 20, true), "block 0's hashed key rewritten");
        let v = Volume::at(&u)
            .unwrap()
            .read_only(true)
            .password(s3block_store::PasswordSource::Given(s3block_store::Password::new("correct horse")))
            .open()
            .await
            .unwrap();
        assert_eq!(v.geometry().size(), 3 << 20);
        for n in [0u32, 255] {
            assert_eq!(v.device().read_block(BlockId(n)).await.unwrap(), block(n as u8), "block {n} decodes");
        }
    });
}

#[test]
fn a_volume_without_descriptor_is_resized_in_block_0() {
    let dir = tempfile::tempdir().unwrap();
    let u = create(dir.path(), &[]);
    write_blocks(&u, &[0, 7], None);
    // As s3backer leaves it: geometry in block 0 only.
    std::fs::remove_file(dir.path().join("s3block-volume.json")).unwrap();
    let o = s3block(&["resize", &u, "--size", "+3M", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["new_size"].as_u64(), j["descriptor"].as_bool()), (Some(4 << 20), Some(false)));
    assert!(!dir.path().join("s3block-volume.json").exists(), "no descriptor made");
    assert_eq!(recorded(dir.path()), (None, Some(4 << 20)));
    assert_eq!(size_and_check(&u, &[0, 7]), 4 << 20);
}

#[test]
fn block_0_that_disagrees_is_reported_and_brought_back() {
    // A resize stopped between its writes: block 0 grown, the descriptor not.
    let dir = tempfile::tempdir().unwrap();
    let u = create(dir.path(), &[]);
    write_blocks(&u, &[0], None);
    let o = s3block(&["resize", &u, "--size", "2M"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let d = dir.path().join("s3block-volume.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&d).unwrap()).unwrap();
    j["size"] = (1u64 << 20).into();
    // Through the store: a local directory keeps a checksum of each object.
    runtime().block_on(async {
        let store = s3block_store::StoreConfig::new(&u).open().unwrap();
        let key = s3block_store::key_path("s3block-volume.json").unwrap();
        let body = serde_json::to_vec_pretty(&j).unwrap();
        store.store.put_opts(&key, body.into(), Default::default()).await.unwrap();
    });
    assert_eq!(recorded(dir.path()), (Some(1 << 20), Some(2 << 20)));
    assert_eq!(size_and_check(&u, &[0]), 1 << 20, "the descriptor wins");
    // Resizing to the size s3block shows takes block 0 back.
    let o = s3block(&["resize", &u, "--size", "1M"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(out(&o).contains("already") && out(&o).contains("Block 0 recorded 2M"), "{}", out(&o));
    assert_eq!(recorded(dir.path()), (Some(1 << 20), Some(1 << 20)));
}
