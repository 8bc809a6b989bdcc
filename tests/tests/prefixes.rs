//! Key prefixes are stored exactly as the user wrote them, on every store.
//!
//! A prefix with non-ASCII or reserved characters (`ünï/`, `q?&=+/`, `%41`,
//! spaces, `..x`) must give keys with exactly those bytes, as s3backer
//! writes them, and every operation must find them again: the blocks are
//! listed, read back, copied and erased; the descriptor and the lock sit
//! under the same bytes. A prefix no store can keep as written (a leading
//! `/`, `//`, a `..` segment) is refused at open, naming the prefix.
//!
//! The property runs on memory, a local directory and Garage.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use proptest::prelude::*;
use s3block_cli::copy::{CopyOptions, copy};
use s3block_cli::maint::{erase, verify_blocks};
use s3block_cli::target::{Target, open as open_target};
use s3block_cli::volume::{create, open};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, BlockId};
use s3block_store::{LOCK_NAME, LockOptions, MountLock, check_prefix, read_lock};
use s3block_testkit::{s3_env, unique_prefix};

/// Pieces a prefix is made of: the characters that were percent-encoded or
/// folded before, and plain ones.
const PIECES: &[&str] = &[
    "ü", "ünï", "日本", "q", "?", "&", "=", "+", "#", "%", "%41", " ", "..", ".", "...", "a", "/", "//",
    "x y", "~", "*", "[", "]", "\\", "'", "\"", "^",
];

fn prefix_strategy() -> impl Strategy<Value = String> {
    (prop::collection::vec(prop::sample::select(PIECES), 1..5), any::<bool>()).prop_map(|(parts, slash)| {
        let mut p: String = parts.concat();
        if slash && !p.ends_with('/') {
            p.push('/');
        }
        p
    })
}

/// Where a case's volume lives.
#[derive(Debug, Clone, Copy)]
enum Store {
    Memory,
    Local,
    Garage,
}

/// A target for `prefix` on `store`, opened as the CLI opens one (so the
/// prefix check at open applies); `None` when the store refuses the prefix,
/// with the message checked to name it.
fn target(store: Store, dir: &std::path::Path, base: &str, prefix: &str) -> Option<Target> {
    let mut args = StoreArgs { prefix: Some(format!("{base}{prefix}")), ..Default::default() };
    let url = match store {
        Store::Memory => "memory://".to_owned(),
        Store::Local => format!("file://{}", dir.display()),
        Store::Garage => {
            let env = s3_env().expect("checked before the run");
            args.endpoint = Some(env.endpoint.clone());
            args.region = Some(env.region.clone());
            format!("s3://{}", env.bucket)
        }
    };
    let full = format!("{base}{prefix}");
    let local = matches!(store, Store::Local);
    match open_target(&url, &args) {
        Ok(t) => {
            assert!(check_prefix(&full, local).is_ok(), "{store:?} opened the refused prefix {full:?}");
            assert_eq!(t.prefix, full, "the key prefix is the bytes given");
            Some(t)
        }
        Err(e) => {
            let why = check_prefix(&full, local).expect_err("an open that fails must be a refused prefix");
            assert_eq!(e.to_string(), why.to_string());
            assert!(e.to_string().contains(&format!("{full:?}")), "the error names the prefix: {e}");
            None
        }
    }
}

/// Every key under `prefix`, as the store lists them (from the first
/// folder of the prefix down, so the raw keys are seen, not a filtered view).
async fn keys_under(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let root = match prefix.split_once('/') {
        Some((first, _)) if !first.is_empty() && first != "." && first != ".." => {
            Some(Path::parse(first).unwrap())
        }
        _ => None,
    };
    let all: Vec<_> = store.list(root.as_ref()).try_collect().await.unwrap();
    let mut keys: Vec<String> =
        all.into_iter().map(|m| m.location.as_ref().to_owned()).filter(|k| k.starts_with(prefix)).collect();
    keys.sort();
    keys
}

fn pattern(block: u32) -> Bytes {
    Bytes::from(
        (0..4096u32).map(|i| (i.wrapping_mul(7) ^ block.wrapping_mul(131)) as u8 | 1).collect::<Vec<_>>(),
    )
}

async fn round_trip(store: Store, prefix: String, blocks: Vec<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let base = match store {
        Store::Garage => unique_prefix("prefix"),
        _ => String::new(),
    };
    let Some(t) = target(store, dir.path(), &base, &prefix) else { return };
    let layout = LayoutArgs { size: Some(64 << 10), block_size: Some(4096), ..Default::default() };
    create(&t, &layout, false, false, &mut Vec::new()).await.unwrap();
    let v = open(&t, &LayoutArgs::default()).await.unwrap();
    for &b in &blocks {
        v.device.write_block(BlockId(b), pattern(b)).await.unwrap();
    }
    let mut want: Vec<u32> = blocks.clone();
    want.sort();
    want.dedup();

    // The keys are the prefix's bytes followed by the block's hex number.
    let mut expected: Vec<String> = want.iter().map(|b| format!("{}{b:08x}", t.prefix)).collect();
    expected.push(format!("{}s3block-volume.json", t.prefix));
    expected.sort();
    assert_eq!(keys_under(t.store.as_ref(), &t.prefix).await, expected, "{store:?} {:?}", t.prefix);

    // Listed and read back.
    let listed: Vec<u32> = v.device.list_blocks().await.unwrap().iter().map(|s| s.block.0).collect();
    assert_eq!(listed, want, "listed");
    let report = verify_blocks(&t, &LayoutArgs::default(), 4, true).await.unwrap();
    assert_eq!((report.checked, report.bad.len()), (want.len() as u64, 0));
    for &b in &want {
        assert_eq!(v.device.read_block(BlockId(b)).await.unwrap(), pattern(b), "block {b} read back");
    }

    // The lock sits under the same bytes.
    let opts = LockOptions { host: "prefix-test".into(), enforced: Some(false), ..Default::default() };
    let lock = MountLock::acquire(t.store.clone(), &t.prefix, opts).await.unwrap();
    assert!(keys_under(t.store.as_ref(), &t.prefix).await.contains(&format!("{}{LOCK_NAME}", t.prefix)));
    assert_eq!(read_lock(t.store.as_ref(), &t.prefix).await.unwrap().unwrap().host, "prefix-test");
    assert!(lock.release().await.unwrap(), "the lock is found again to be released");

    // Copied to another prefix that shares the same characters.
    let copy_prefix = format!("{prefix}copy-");
    let dst = target(store, dir.path(), &base, &copy_prefix).expect("the copy's prefix is valid too");
    let dst = Target { store: t.store.clone(), ..dst };
    let opts = CopyOptions { quiet: true, parallel: 4, ..Default::default() };
    copy(&t, &dst, &opts, true, &mut Vec::new()).await.unwrap();
    let d = open(&dst, &LayoutArgs::default()).await.unwrap();
    let copied: Vec<u32> = d.device.list_blocks().await.unwrap().iter().map(|s| s.block.0).collect();
    assert_eq!(copied, want, "copied");

    // Erased: no object of either volume is left behind.
    for target in [&dst, &t] {
        erase(target, &LayoutArgs::default(), true, true, &mut |_| true, &mut Vec::new()).await.unwrap();
    }
    let left = keys_under(t.store.as_ref(), &t.prefix).await;
    assert_eq!(left, Vec::<String>::new(), "{store:?}: objects left after erase of {:?}", t.prefix);
}

fn run_property(store: Store, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(prefix in prefix_strategy(), blocks in prop::collection::vec(0u32..16, 1..4))| {
        rt.block_on(round_trip(store, prefix, blocks));
    });
}

/// Prefixes named in the defect report, checked on every store before the
/// random ones.
const NAMED: &[&str] = &["ünï/", "q?&=+/", "../x/", "/abs/", "x//y/", "a b/%41/", "..x/", "vol#", "#1/"];

fn run_named(store: Store) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for p in NAMED {
        rt.block_on(round_trip(store, (*p).to_owned(), vec![0, 3, 15]));
    }
}

#[test]
fn prefixes_round_trip_on_memory() {
    run_named(Store::Memory);
    run_property(Store::Memory, 64);
}

#[test]
fn prefixes_round_trip_on_a_local_directory() {
    run_named(Store::Local);
    run_property(Store::Local, 48);
}

#[test]
fn prefixes_round_trip_on_garage() {
    if s3_env().is_none() {
        return;
    }
    // Each case costs about two seconds of store round trips (the lock's
    // settle time among them); the named prefixes and the cases on the
    // other stores cover the characters, these check the S3 signing of them.
    run_named(Store::Garage);
    run_property(Store::Garage, 8);
}

/// The refusals name what is wrong, so the user can fix the prefix.
#[test]
fn unrepresentable_prefixes_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    for (prefix, said) in [("/abs/", "starts with '/'"), ("x//y/", "empty segment"), ("../x/", "\"..\"")] {
        for url in ["memory://".to_owned(), format!("file://{}", dir.path().display())] {
            let args = StoreArgs { prefix: Some(prefix.into()), ..Default::default() };
            let err = open_target(&url, &args).expect_err(prefix).to_string();
            assert!(err.contains(said), "{url} {prefix}: {err}");
        }
    }
    // In a URL the path is decoded: s3://b/%C3%BC/ is the prefix "ü/".
    let t = open_target("memory:///%C3%BCn%C3%AF/", &StoreArgs::default()).unwrap();
    assert_eq!(t.prefix, "ünï/");
    let err = open_target("memory:///q?x=1", &StoreArgs::default()).expect_err("a query").to_string();
    assert!(err.contains("%3F"), "{err}");
}
