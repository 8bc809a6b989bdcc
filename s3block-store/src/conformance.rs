//! The conformance suite: checks every store must pass (memory, local
//! directory, S3 servers).
//!
//! Each check takes the raw store (`Arc<dyn ObjectStore>`, used both under
//! the devices it builds and to look at the objects themselves) and a key
//! prefix no other check uses, and panics with a message on failure. The
//! workspace tests call the same functions against Garage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attribute, Attributes, GetOptions, ObjectStore, PutOptions};
use s3block_core::{BlockDevice, BlockId, Error, Geometry, KeyLayout, RequestCounters};

use crate::{
    CodecChain, CountingStore, Deflate, EncryptionOptions, EncryptionScheme, FaultConfig, FaultStore,
    GeometrySource, KdfParams, ListPlan, LockOptions, ObjectBlockDevice, Password, RetryConfig, RetryStore,
    StoredBlock, VolumeOptions, Zstd, break_lock, create_volume, create_volume_with, open_volume,
    open_volume_with, read_descriptor, read_lock,
};

const BS: u64 = 4096;

fn geometry() -> Geometry {
    Geometry::new(1024 * BS, BS).expect("a valid test geometry")
}

fn device(store: &Arc<dyn ObjectStore>, prefix: &str) -> ObjectBlockDevice {
    ObjectBlockDevice::new(store.clone(), KeyLayout::new(prefix, false), geometry())
}

fn pattern(seed: u8) -> Bytes {
    (0..BS as usize).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect::<Vec<u8>>().into()
}

fn compressible(seed: u8) -> Bytes {
    let mut v = vec![0u8; BS as usize];
    v[..64].fill(seed | 1);
    v.into()
}

/// The object's attributes, or `None` when it does not exist.
pub async fn object_attributes(store: &dyn ObjectStore, key: &str) -> Option<(u64, Attributes)> {
    match store.get_opts(&Path::from(key), GetOptions { head: true, ..Default::default() }).await {
        Ok(r) => Some((r.meta.size, r.attributes)),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("HEAD {key}: {e}"),
    }
}

fn metadata(attrs: &Attributes, name: &str) -> Option<String> {
    attrs.get(&Attribute::Metadata(name.to_owned().into())).map(|v| v.as_ref().to_owned())
}

/// Full and partial blocks round-trip; an absent block reads as zeros.
pub async fn round_trips(store: Arc<dyn ObjectStore>, prefix: &str) {
    let dev = device(&store, prefix);
    dev.write_block(BlockId(1), pattern(1)).await.expect("write block 1");
    assert_eq!(dev.read_block(BlockId(1)).await.expect("read block 1"), pattern(1));
    assert!(object_attributes(store.as_ref(), &dev.key(BlockId(1))).await.is_some(), "block 1 has no object");
    assert!(dev.read_block(BlockId(5)).await.expect("read absent").iter().all(|&b| b == 0));
    dev.write_partial(BlockId(2), 100, Bytes::from_static(b"hello")).await.expect("partial write");
    assert_eq!(&dev.read_partial(BlockId(2), 98, 9).await.expect("partial read")[..], b"\0\0hello\0\0");
    dev.write_partial(BlockId(1), 0, Bytes::from_static(b"xy")).await.expect("partial over data");
    let mut want = pattern(1).to_vec();
    want[..2].copy_from_slice(b"xy");
    assert_eq!(&dev.read_block(BlockId(1)).await.expect("read merged")[..], &want[..]);
    let err = dev.write_block(BlockId(3), Bytes::from_static(b"short")).await.expect_err("short block");
    assert!(matches!(err, Error::WrongLength { block: BlockId(3), .. }), "{err}");
    let err = dev.read_block(BlockId(1024)).await.expect_err("past the end");
    assert!(matches!(err, Error::BlockOutOfRange { .. }), "{err}");
}

/// An all-zero block has no object, and deleting an absent one is fine.
pub async fn zero_elision(store: Arc<dyn ObjectStore>, prefix: &str) {
    let dev = device(&store, prefix);
    let key = dev.key(BlockId(3));
    dev.write_block(BlockId(3), pattern(3)).await.expect("write");
    assert!(object_attributes(store.as_ref(), &key).await.is_some(), "{key} missing after write");
    dev.write_block(BlockId(3), Bytes::from(vec![0u8; BS as usize])).await.expect("write zeros");
    assert!(
        object_attributes(store.as_ref(), &key).await.is_none(),
        "{key} still stored after writing zeros"
    );
    assert!(dev.read_block(BlockId(3)).await.expect("read").iter().all(|&b| b == 0));
    dev.write_block(BlockId(3), Bytes::from(vec![0u8; BS as usize])).await.expect("zeros over absent");
    dev.write_block(BlockId(4), pattern(4)).await.expect("write 4");
    dev.discard(4..6).await.expect("discard");
    assert!(object_attributes(store.as_ref(), &dev.key(BlockId(4))).await.is_none(), "discard left block 4");
}

/// Compression on and off, each reading what the other wrote.
pub async fn compression(store: Arc<dyn ObjectStore>, prefix: &str) {
    let plain = device(&store, prefix);
    let deflate = device(&store, prefix)
        .with_codecs(CodecChain::new().with(Arc::new(Deflate::new(6).expect("level 6"))));
    deflate.write_block(BlockId(1), compressible(1)).await.expect("compressed write");
    let (size, attrs) = object_attributes(store.as_ref(), &deflate.key(BlockId(1))).await.expect("object");
    assert!(size < BS / 4, "compressed object is {size} bytes");
    assert_eq!(attrs.get(&Attribute::ContentEncoding).map(|v| v.as_ref()), Some("deflate"));
    assert_eq!(attrs.get(&Attribute::ContentType).map(|v| v.as_ref()), Some(crate::BLOCK_CONTENT_TYPE));
    assert_eq!(plain.read_block(BlockId(1)).await.expect("plain reads deflate"), compressible(1));
    plain.write_block(BlockId(2), compressible(2)).await.expect("plain write");
    let (size, attrs) = object_attributes(store.as_ref(), &plain.key(BlockId(2))).await.expect("object");
    assert_eq!(size, BS);
    assert!(attrs.get(&Attribute::ContentEncoding).is_none());
    assert_eq!(deflate.read_block(BlockId(2)).await.expect("deflate reads plain"), compressible(2));
    // zstd, as s3backer 2.x writes it: read back by every device, each
    // block by its own Content-Encoding.
    let zstd =
        device(&store, prefix).with_codecs(CodecChain::new().with(Arc::new(Zstd::new(3).expect("level 3"))));
    zstd.write_block(BlockId(3), compressible(3)).await.expect("zstd write");
    let (size, attrs) = object_attributes(store.as_ref(), &zstd.key(BlockId(3))).await.expect("object");
    assert!(size < BS / 4, "zstd object is {size} bytes");
    assert_eq!(attrs.get(&Attribute::ContentEncoding).map(|v| v.as_ref()), Some("zstd"));
    assert_eq!(plain.read_block(BlockId(3)).await.expect("plain reads zstd"), compressible(3));
    assert_eq!(deflate.read_block(BlockId(3)).await.expect("deflate reads zstd"), compressible(3));
    assert_eq!(zstd.read_block(BlockId(1)).await.expect("zstd reads deflate"), compressible(1));
}

/// Every PUT of block 0 carries the s3backer geometry metadata.
pub async fn block0_metadata(store: Arc<dyn ObjectStore>, prefix: &str) {
    let dev = device(&store, prefix);
    dev.write_block(BlockId(0), pattern(0)).await.expect("write block 0");
    let (_, attrs) = object_attributes(store.as_ref(), &dev.key(BlockId(0))).await.expect("block 0 object");
    assert_eq!(metadata(&attrs, crate::META_BLOCK_SIZE).as_deref(), Some("4096"));
    assert_eq!(metadata(&attrs, crate::META_FILE_SIZE), Some((1024 * BS).to_string()));
    dev.write_block(BlockId(1), pattern(1)).await.expect("write block 1");
    let (_, attrs) = object_attributes(store.as_ref(), &dev.key(BlockId(1))).await.expect("block 1 object");
    assert_eq!(metadata(&attrs, crate::META_BLOCK_SIZE), None);
}

/// Geometry from the descriptor and from block 0; mismatches name both values.
pub async fn geometry_detection(store: Arc<dyn ObjectStore>, prefix: &str) {
    let s = store.as_ref();
    let missing = open_volume(s, prefix, &VolumeOptions::default()).await.expect_err("no volume yet");
    assert!(missing.to_string().contains("s3block-volume.json"), "{missing}");
    let opts = VolumeOptions {
        size: Some(1 << 20),
        block_size: Some(8192),
        hash_prefix: Some(true),
        compression: Some(3),
        ..Default::default()
    };
    let d = create_volume(s, prefix, &opts).await.expect("create");
    assert_eq!((d.size, d.block_size, d.hash_prefix, d.compression), (1 << 20, 8192, true, Some(3)));
    assert_eq!(d.volume_id.len(), 32);
    let again = create_volume(s, prefix, &opts).await.expect_err("second create");
    assert!(again.to_string().contains("already exists"), "{again}");
    let v = open_volume(s, prefix, &VolumeOptions::default()).await.expect("open");
    assert_eq!(v.geometry, Geometry::new(1 << 20, 8192).expect("geometry"));
    assert!(v.layout.hash_prefix());
    assert!(matches!(v.source, GeometrySource::Descriptor(_)));
    let err = open_volume(s, prefix, &VolumeOptions { block_size: Some(4096), ..Default::default() })
        .await
        .expect_err("wrong block size");
    match &err {
        Error::Mismatch { what, stored, requested } => {
            assert_eq!(*what, "block size");
            assert!(stored.contains("8192") && requested.contains("4096"), "{err}");
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    // A volume made by s3backer: only block 0's metadata tells its geometry.
    let s3b = format!("{prefix}s3b/");
    let g = Geometry::new(64 * 1024, 1024).expect("geometry");
    let dev = ObjectBlockDevice::new(store.clone(), KeyLayout::new(s3b.clone(), false), g);
    dev.write_block(BlockId(0), Bytes::from(vec![9u8; 1024])).await.expect("write block 0");
    let v = open_volume(s, &s3b, &VolumeOptions::default()).await.expect("open s3backer volume");
    assert_eq!((v.geometry, v.source), (g, GeometrySource::Block0));
    let err = open_volume(s, &s3b, &VolumeOptions { size: Some(1 << 30), ..Default::default() })
        .await
        .expect_err("wrong size");
    assert!(matches!(err, Error::Mismatch { what: "size", .. }), "{err}");
    // A corrupt descriptor names its key.
    let bad = format!("{prefix}bad/");
    let key = format!("{bad}{}", crate::DESCRIPTOR_NAME);
    s.put_opts(&Path::from(key.as_str()), "{not json".into(), PutOptions::default()).await.expect("put");
    let err = open_volume(s, &bad, &VolumeOptions::default()).await.expect_err("corrupt descriptor");
    assert!(matches!(&err, Error::BadMetadata { key: k, .. } if *k == key), "{err}");
}

/// The mount lock: a second mount is refused naming the holder; release and
/// break; [`MountLock::check`](crate::MountLock::check) tells the lock held,
/// removed and taken by another mount apart. `enforced` is passed to
/// [`LockOptions::enforced`] (`None` probes).
pub async fn mount_lock(store: Arc<dyn ObjectStore>, prefix: &str, enforced: Option<bool>) {
    let opts = |host: &str| LockOptions { host: host.into(), now: std::time::SystemTime::now(), enforced };
    let a = crate::MountLock::acquire(store.clone(), prefix, opts("host-a")).await.expect("first lock");
    let err =
        crate::MountLock::acquire(store.clone(), prefix, opts("host-b")).await.expect_err("second lock");
    match &err {
        Error::Locked { host, since, .. } => {
            assert_eq!(host, "host-a");
            assert_eq!(since.len(), 16, "{since}");
        }
        other => panic!("expected Locked, got {other}"),
    }
    let info = read_lock(store.as_ref(), prefix).await.expect("read").expect("locked");
    assert_eq!(info.token.as_deref(), Some(a.token()));
    assert!(a.release().await.expect("release"), "release did not delete the lock");
    assert!(read_lock(store.as_ref(), prefix).await.expect("read").is_none());
    let b =
        crate::MountLock::acquire(store.clone(), prefix, opts("host-b")).await.expect("lock after release");
    assert_eq!(b.check().await.expect("check b"), crate::LockCheck::Held);
    let broken = break_lock(store.as_ref(), prefix).await.expect("break").expect("there was a lock");
    assert_eq!(broken.host, "host-b");
    // What a fenced mount finds: its lock removed, then another mount's.
    assert_eq!(b.check().await.expect("check b after the break"), crate::LockCheck::Removed);
    let c = crate::MountLock::acquire(store.clone(), prefix, opts("host-c")).await.expect("lock after break");
    match b.probe().check().await.expect("check b after another mount") {
        crate::LockCheck::Taken(info) => assert_eq!(info.host, "host-c"),
        other => panic!("expected the lock taken by host-c, got {other:?}"),
    }
    assert_eq!(c.check().await.expect("check c"), crate::LockCheck::Held);
    // The broken mount's release must not remove the new holder's lock.
    assert!(!b.release().await.expect("stale release"));
    assert_eq!(read_lock(store.as_ref(), prefix).await.expect("read").expect("locked").host, "host-c");
    assert!(c.release().await.expect("release c"));
}

/// A process id no process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("start `true`");
    child.wait().expect("reap `true`");
    child.id()
}

/// Writes a lock object with `body` (and a token), as a mount that is gone
/// left it.
async fn put_lock(store: &dyn ObjectStore, prefix: &str, body: String) {
    let key = KeyLayout::new(prefix, false).meta_key(crate::LOCK_NAME);
    let mut attrs = Attributes::new();
    attrs.insert(Attribute::Metadata(crate::META_MOUNT_TOKEN.into()), "1badcafe".into());
    let put = PutOptions { attributes: attrs, ..Default::default() };
    store.put_opts(&Path::from(key.as_str()), body.into(), put).await.expect("put the lock");
}

/// Stale locks of this host: one whose process is not running, or written
/// before this machine restarted (another boot id), is taken over; one
/// whose process runs (this test's), one of another host and one that
/// records no process (s3backer's, an older s3block's) are refused naming
/// the host and left as they were. Of two mounts taking over one stale lock
/// at the same moment, exactly one gets it. `enforced` as in [`mount_lock`].
pub async fn stale_lock_takeover(store: Arc<dyn ObjectStore>, prefix: &str, enforced: Option<bool>) {
    let here = crate::hostname();
    let opts = || LockOptions { enforced, ..Default::default() };
    let alive = s3block_core::HolderProcess::current();
    let body = |host: &str, process: &s3block_core::HolderProcess| {
        crate::LockInfo::new(host, "20250101T000000Z", None).with_process(process.clone()).body()
    };
    let mut dead = alive.clone();
    dead.pid = Some(dead_pid());
    dead.start = None;
    let mut rebooted = alive.clone();
    rebooted.boot_id = Some("00000000-0000-4000-8000-000000000000".into());
    for (case, stale) in [("a dead process", &dead), ("another boot", &rebooted)] {
        let p = format!("{prefix}{}/", case.replace(' ', "-"));
        put_lock(store.as_ref(), &p, body(&here, stale)).await;
        let lock = crate::MountLock::acquire(store.clone(), &p, opts())
            .await
            .unwrap_or_else(|e| panic!("{case}: the stale lock was not taken over: {e}"));
        let now = read_lock(store.as_ref(), &p).await.expect("read").expect("the new lock");
        assert_eq!(now.token.as_deref(), Some(lock.token()), "{case}");
        assert_eq!(now.process.pid, Some(std::process::id()), "{case}: {now:?}");
        assert!(now.since != "20250101T000000Z", "{case}: {now:?}");
        assert!(lock.release().await.expect("release"), "{case}");
        assert!(read_lock(store.as_ref(), &p).await.expect("read").is_none(), "{case}");
    }
    let old_body = format!("{here}\n20250101T000000Z\n");
    let refused = [
        ("a live process", body(&here, &alive), here.as_str()),
        ("another host", body("otherhost.example", &dead), "otherhost.example"),
        ("an old lock", old_body, here.as_str()),
    ];
    for (case, stale, holder) in refused {
        let p = format!("{prefix}{}/", case.replace(' ', "-"));
        put_lock(store.as_ref(), &p, stale.clone()).await;
        let before = read_lock(store.as_ref(), &p).await.expect("read").expect("the lock");
        let err = crate::MountLock::acquire(store.clone(), &p, opts()).await.expect_err(case);
        match &err {
            Error::Locked { host, since, .. } => {
                assert_eq!((host.as_str(), since.as_str()), (holder, "20250101T000000Z"), "{case}")
            }
            other => panic!("{case}: expected Locked, got {other}"),
        }
        let after = read_lock(store.as_ref(), &p).await.expect("read").expect("the lock kept");
        assert_eq!(after, before, "{case}: a refused mount changed the lock");
        assert!(break_lock(store.as_ref(), &p).await.expect("break").is_some());
    }
    for pair in 0..5 {
        let p = format!("{prefix}race-{pair}/");
        put_lock(store.as_ref(), &p, body(&here, &dead)).await;
        let (a, b) = futures::join!(
            crate::MountLock::acquire(store.clone(), &p, opts()),
            crate::MountLock::acquire(store.clone(), &p, opts()),
        );
        let winner = match (a, b) {
            (Ok(w), Err(Error::Locked { host, .. })) | (Err(Error::Locked { host, .. }), Ok(w)) => {
                assert_eq!(host, here, "pair {pair}: the loser names the winner's host");
                w
            }
            (Ok(_), Ok(_)) => panic!("pair {pair}: both mounts took over the stale lock of {p}"),
            (Err(a), Err(b)) => {
                panic!("pair {pair}: neither mount took over the stale lock of {p}: {a}; {b}")
            }
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => panic!("pair {pair}: the loser failed otherwise: {e}"),
        };
        let holder = read_lock(store.as_ref(), &p).await.expect("read").expect("the winner's lock");
        assert_eq!(holder.token.as_deref(), Some(winner.token()), "pair {pair}");
        assert!(winner.release().await.expect("release"), "pair {pair}");
    }
}

/// Mounts and creates started at the same moment: of ten pairs of lock
/// takers, and of ten pairs of creates of one volume, exactly one of each
/// pair succeeds, whether the store enforces conditional creates or not
/// (`enforced` as in [`mount_lock`]; `Some(false)` takes the lock the way a
/// store that ignores them needs). The loser of a lock names the winner.
pub async fn simultaneous_mounts(store: Arc<dyn ObjectStore>, prefix: &str, enforced: Option<bool>) {
    let opts = |host: &str| LockOptions { host: host.into(), now: std::time::SystemTime::now(), enforced };
    for pair in 0..10 {
        let p = format!("{prefix}race-{pair}/");
        let (a, b) = futures::join!(
            crate::MountLock::acquire(store.clone(), &p, opts("host-a")),
            crate::MountLock::acquire(store.clone(), &p, opts("host-b")),
        );
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) => (w, l),
            (Err(l), Ok(w)) => (w, l),
            (Ok(_), Ok(_)) => panic!("pair {pair}: both mounts took the lock of {p}"),
            (Err(a), Err(b)) => panic!("pair {pair}: neither mount took the lock of {p}: {a}; {b}"),
        };
        let holder = read_lock(store.as_ref(), &p).await.expect("read").expect("the winner's lock");
        assert_eq!(holder.token.as_deref(), Some(winner.token()), "pair {pair}: the lock is the winner's");
        match &loser {
            Error::Locked { host, .. } => {
                assert_eq!(host, &holder.host, "pair {pair}: the loser names the winner")
            }
            other => panic!("pair {pair}: expected Locked, got {other}"),
        }
        assert!(winner.release().await.expect("release"), "pair {pair}");

        let opts = VolumeOptions { size: Some(1 << 20), block_size: Some(4096), ..Default::default() };
        let (a, b) = futures::join!(
            create_volume(store.as_ref(), &p, &opts),
            create_volume(store.as_ref(), &p, &opts)
        );
        let created = match (a, b) {
            (Ok(d), Err(_)) | (Err(_), Ok(d)) => d,
            (Ok(_), Ok(_)) => panic!("pair {pair}: both creates of {p} succeeded"),
            (Err(a), Err(b)) => panic!("pair {pair}: neither create of {p} succeeded: {a}; {b}"),
        };
        let stored = read_descriptor(store.as_ref(), &p).await.expect("read").expect("a descriptor");
        assert_eq!(
            stored.volume_id, created.volume_id,
            "pair {pair}: the winner's descriptor is the one stored"
        );
    }
}

/// Listing (plain and hashed keys, block ranges) and bulk delete counts.
/// `plan` is how this store lists (see [`OpenedStore`](crate::OpenedStore)).
pub async fn listing_and_bulk_delete(store: Arc<dyn ObjectStore>, prefix: &str, plan: ListPlan) {
    let blocks = [0u32, 5, 17, 300, 511, 512, 1023];
    for hashed in [false, true] {
        let p = format!("{prefix}{}/", if hashed { "hashed" } else { "plain" });
        let counters = Arc::new(RequestCounters::default());
        let counted: Arc<dyn ObjectStore> = Arc::new(CountingStore::new(store.clone(), counters.clone()));
        let dev = ObjectBlockDevice::new(counted, KeyLayout::new(p.clone(), hashed), geometry())
            .with_list_plan(plan)
            .with_counters(counters.clone());
        for &b in &blocks {
            dev.write_block(BlockId(b), compressible(b as u8)).await.expect("write");
        }
        // Objects that are not blocks are never listed as blocks.
        crate::MountLock::acquire(
            dev.store().clone(),
            &p,
            LockOptions { enforced: Some(false), ..Default::default() },
        )
        .await
        .expect("lock");
        let listed = dev.list_blocks().await.expect("list");
        let want: Vec<StoredBlock> =
            blocks.iter().map(|&b| StoredBlock { block: BlockId(b), size: BS }).collect();
        assert_eq!(listed, want, "hashed={hashed}");
        let some = dev.list_blocks_in(5..512).await.expect("list range");
        assert_eq!(
            some.iter().map(|s| s.block.0).collect::<Vec<_>>(),
            vec![5, 17, 300, 511],
            "hashed={hashed}"
        );
        counters.reset();
        dev.discard(1..1024).await.expect("discard");
        let c = counters.snapshot();
        assert_eq!(c.deletes, 6, "only stored blocks are deleted: {c:?}");
        assert_eq!(c.bulk_deletes, 1, "{c:?}");
        assert_eq!(dev.list_blocks().await.expect("list").len(), 1);
        assert!(object_attributes(store.as_ref(), &dev.key(BlockId(0))).await.is_some());
        counters.reset();
        assert_eq!(dev.erase().await.expect("erase"), 1);
        assert!(dev.list_blocks().await.expect("list").is_empty());
        assert!(crate::break_lock(store.as_ref(), &p).await.expect("unlock").is_some());
    }
}

/// Objects that cannot be a block are [`Error::Corrupt`], naming block and key.
pub async fn corrupt_objects(store: Arc<dyn ObjectStore>, prefix: &str) {
    let dev = device(&store, prefix);
    let key = dev.key(BlockId(7));
    store
        .put_opts(&Path::from(key.as_str()), vec![1u8; 100].into(), PutOptions::default())
        .await
        .expect("put");
    let err = dev.read_block(BlockId(7)).await.expect_err("short object");
    assert!(matches!(&err, Error::Corrupt { block: BlockId(7), key: k, .. } if *k == key), "{err}");
    let mut attrs = Attributes::new();
    attrs.insert(Attribute::ContentEncoding, "deflate".into());
    let opts = PutOptions { attributes: attrs, ..Default::default() };
    store.put_opts(&Path::from(key.as_str()), vec![1u8; BS as usize].into(), opts).await.expect("put");
    let err = dev.read_block(BlockId(7)).await.expect_err("bad deflate");
    assert!(matches!(&err, Error::Corrupt { block: BlockId(7), .. }), "{err}");
    let mut attrs = Attributes::new();
    attrs.insert(Attribute::ContentEncoding, "zstd".into());
    let opts = PutOptions { attributes: attrs, ..Default::default() };
    store.put_opts(&Path::from(key.as_str()), vec![1u8; BS as usize].into(), opts).await.expect("put");
    let err = dev.read_block(BlockId(7)).await.expect_err("bad zstd");
    assert!(matches!(&err, Error::Corrupt { block: BlockId(7), key: k, .. } if *k == key), "{err}");
    assert!(err.to_string().contains("zstd"), "{err}");
}

/// Retries under injected faults: data stays right and retries are counted;
/// permanent errors are not retried.
pub async fn retries_under_faults(store: Arc<dyn ObjectStore>, prefix: &str) {
    let counters = Arc::new(RequestCounters::default());
    let faulty = Arc::new(FaultStore::new(store.clone(), FaultConfig::errors(0.3), 7));
    let retry = RetryConfig::default()
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(5))
        .max_elapsed(Duration::from_secs(30))
        .max_attempts(50)
        .seed(1)
        .connect_budget(Duration::from_secs(30));
    let stack: Arc<dyn ObjectStore> = Arc::new(RetryStore::new(
        CountingStore::new(faulty.clone(), counters.clone()),
        retry.clone(),
        counters.clone(),
    ));
    let dev = ObjectBlockDevice::new(stack.clone(), KeyLayout::new(prefix, false), geometry())
        .with_counters(counters.clone());
    for b in 0..16u32 {
        dev.write_block(BlockId(b), pattern(b as u8)).await.expect("write under faults");
    }
    for b in 0..16u32 {
        assert_eq!(dev.read_block(BlockId(b)).await.expect("read under faults"), pattern(b as u8));
    }
    dev.discard(0..16).await.expect("discard under faults");
    faulty.set_enabled(false);
    assert!(dev.list_blocks().await.expect("list").is_empty());
    let c = counters.snapshot();
    assert!(faulty.injected() > 0 && c.retries > 0, "no faults were retried: {c:?}");
    assert_eq!(c.errors, 0, "{c:?}");
    // Permanent errors fail at once.
    faulty.set_config(FaultConfig { permanent_rate: 1.0, ..Default::default() });
    faulty.set_enabled(true);
    counters.reset();
    let err = dev.write_block(BlockId(1), pattern(1)).await.expect_err("permanent fault");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(counters.snapshot().retries, 0);
    assert_eq!(counters.snapshot().puts, 1);
    faulty.set_enabled(false);
}

/// Encrypted volumes under both schemes, with compression: blocks round-trip
/// through a reopen, the objects hide the data, a wrong password is refused
/// at open, and a tampered object or one copied onto another block's key
/// fails authentication. Uses cheap Argon2id costs.
pub async fn encryption(store: Arc<dyn ObjectStore>, prefix: &str) {
    for scheme in [EncryptionScheme::XChaCha20Poly1305, EncryptionScheme::Aes128Cbc] {
        let prefix = format!("{prefix}{}/", scheme.as_str());
        let enc = |pw: &str| {
            let mut o = EncryptionOptions::new(Password::new(pw), "conformance-bucket").scheme(scheme);
            o.kdf = Some(KdfParams::with_cost(256, 1, 1));
            o
        };
        let opts = VolumeOptions {
            size: Some(geometry().size()),
            block_size: Some(BS),
            compression: Some(6),
            ..Default::default()
        };
        let (_, codecs) =
            create_volume_with(store.as_ref(), &prefix, &opts, Some(&enc("right"))).await.expect("create");
        let dev = device(&store, &prefix).with_codecs(codecs);
        dev.write_block(BlockId(0), compressible(1)).await.expect("write block 0");
        dev.write_block(BlockId(2), compressible(2)).await.expect("write block 2");
        dev.write_block(BlockId(3), pattern(3)).await.expect("write block 3");

        let key = |b: u32| KeyLayout::new(&prefix, false).key(BlockId(b));
        let (size, attrs) = object_attributes(store.as_ref(), &key(2)).await.expect("block 2 stored");
        let encoding = attrs.get(&Attribute::ContentEncoding).map(|v| v.as_ref().to_owned());
        let expected = match scheme {
            EncryptionScheme::XChaCha20Poly1305 => "deflate, encrypt-XChaCha20-Poly1305-64K",
            EncryptionScheme::Aes128Cbc => "deflate, encrypt-AES-128-CBC",
        };
        assert_eq!(encoding.as_deref(), Some(expected), "{scheme}");
        assert!(size < 200, "{scheme}: compressed before encryption, got {size} bytes");
        let raw = store
            .get_opts(&Path::from(key(3)), GetOptions::default())
            .await
            .expect("get block 3")
            .bytes()
            .await
            .expect("body");
        assert!(
            !raw.windows(16).any(|w| pattern(3).windows(16).any(|p| p == w)),
            "{scheme}: plaintext visible"
        );

        // Reopen with the right password, without giving the scheme.
        let mut right = enc("right");
        right.scheme = None;
        let (_, codecs) = open_volume_with(store.as_ref(), &prefix, &VolumeOptions::default(), Some(&right))
            .await
            .expect("reopen");
        let dev = device(&store, &prefix).with_codecs(codecs);
        assert_eq!(dev.read_block(BlockId(2)).await.expect("read 2"), compressible(2), "{scheme}");
        assert_eq!(dev.read_block(BlockId(3)).await.expect("read 3"), pattern(3), "{scheme}");
        assert!(is_zero_block(&dev.read_block(BlockId(4)).await.expect("read 4")), "{scheme}");

        // A wrong password fails at open, not later.
        let err = open_volume_with(store.as_ref(), &prefix, &VolumeOptions::default(), Some(&enc("wrong")))
            .await
            .expect_err("a wrong password must be refused");
        assert!(
            matches!(err, Error::WrongPassword { .. }) && err.to_string().contains("wrong password"),
            "{err}"
        );
        // No password for an encrypted volume.
        let err = open_volume_with(store.as_ref(), &prefix, &VolumeOptions::default(), None)
            .await
            .expect_err("no password must be refused");
        assert!(err.to_string().contains("encrypted"), "{err}");

        // Block 2's object copied onto block 5's key, with its attributes.
        let got = store.get_opts(&Path::from(key(2)), GetOptions::default()).await.expect("get block 2");
        let attrs = got.attributes.clone();
        let body = got.bytes().await.expect("body");
        let put = PutOptions { attributes: attrs.clone(), ..Default::default() };
        store.put_opts(&Path::from(key(5)), body.clone().into(), put).await.expect("copy");
        let err = dev.read_block(BlockId(5)).await.expect_err("a moved block must fail");
        assert!(
            matches!(&err, Error::Corrupt { block: BlockId(5), reason, .. } if reason.contains("authentication failed")),
            "{scheme}: {err}"
        );
        // One flipped bit in block 2.
        let mut bad = body.to_vec();
        let at = bad.len() - 20;
        bad[at] ^= 0x10;
        let put = PutOptions { attributes: attrs, ..Default::default() };
        store.put_opts(&Path::from(key(2)), bad.into(), put).await.expect("tamper");
        let err = dev.read_block(BlockId(2)).await.expect_err("a tampered block must fail");
        assert!(
            err.to_string().contains("authentication failed") && err.to_string().contains(&key(2)),
            "{err}"
        );
    }
}

fn is_zero_block(b: &[u8]) -> bool {
    b.len() == BS as usize && b.iter().all(|&x| x == 0)
}
