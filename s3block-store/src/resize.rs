//! Changing the size of a volume that is not mounted (`s3block resize`).
//!
//! A volume's size is recorded twice: in the descriptor
//! (`s3block-volume.json`, which s3block reads first) and in block 0's
//! `s3backer-filesize` metadata (which s3backer reads with a HEAD of block 0,
//! and s3block reads when there is no descriptor). A resize rewrites both,
//! in this order:
//!
//! 1. a shrink deletes the stored blocks past the new end (only when asked
//!    to: otherwise it is refused while any holds data);
//! 2. block 0 is stored again, its bytes and every header kept, with the
//!    new `s3backer-filesize` (and `s3backer-blocksize`) metadata;
//! 3. the descriptor is written again with the new size, every other field
//!    (encryption, compression, key layout, volume id) kept.
//!
//! Each write replaces one whole object, so a crash (kill -9, lost
//! connection) stops between two of them, and every such prefix mounts:
//!
//! - after 1: both records still hold the old size; the blocks past the new
//!   end read as zeros, which is what the shrink was to make of them;
//! - after 2: the descriptor holds the old size, block 0 the new one.
//!   s3block reads the descriptor first, so it mounts at the old size
//!   (and the next write of block 0 records that size again); s3backer
//!   mounts at the new size, which it auto-detects (a `--size` given to it
//!   must be the new one). Both sizes are safe: a grow adds blocks that
//!   read as zeros, a shrink's tail is already gone;
//! - after 3: both hold the new size.
//!
//! The descriptor is the commit point: a relative size (`+10G`) given
//! again after a crash is taken from it, so the second run finishes the
//! same resize, and a resize to the size the descriptor holds rewrites a
//! block 0 that disagrees (it returns to the old size). A volume without
//! a descriptor (made by s3backer) has one write, block 0.
//!
//! When block 0 is not stored (it reads as zeros), no object is written
//! for it: creating one would be a real object that s3block's zero
//! elision deletes again at the first write of zeros to it, and the volume
//! gives s3backer no size before the resize either. s3backer then needs
//! `--size` with the new size; the report says block 0 is absent.
//!
//! The block size is never changed here: every block's object would have
//! to be rewritten (`s3block copy --block-size`).

use object_store::{Attribute, AttributeValue, GetOptions, ObjectStore, PutOptions};
use s3block_core::{BlockId, Error, Geometry, Result, format_size};

use crate::device::{META_BLOCK_SIZE, META_FILE_SIZE, max_object_size, object_metadata};
use crate::error::{is_absent, store_error};
use crate::keys::key_path;
use crate::list::{ListPlan, StoredBlock, delete_keys, list_blocks};
use crate::volume::{
    DESCRIPTOR_NAME, GeometrySource, VolumeDescriptor, VolumeInfo, descriptor_key, read_descriptor,
};

/// The test-only variable that stops a resize after one of its writes
/// (`tail`, `block0`), compiled only with the `testing` feature: the
/// process prints `S3BLOCK_RESIZE_STOP: stopped after STEP` to standard
/// error and sleeps until it is killed, so a test can kill it there.
#[cfg(feature = "testing")]
pub const RESIZE_STOP_ENV: &str = "S3BLOCK_RESIZE_STOP";

/// A resize worked out before anything is written: the geometries and
/// the stored blocks past the new end.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResizePlan {
    /// The geometry now.
    pub old: Geometry,
    /// The geometry after the resize.
    pub new: Geometry,
    /// The stored blocks at or past the new end (a shrink's tail), by number.
    pub tail: Vec<StoredBlock>,
}

impl ResizePlan {
    /// Whether the volume grows.
    pub fn grows(&self) -> bool {
        self.new.size() > self.old.size()
    }
}

/// What a resize did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResizeReport {
    /// The size before, in bytes.
    pub old_size: u64,
    /// The size now, in bytes.
    pub new_size: u64,
    /// The block size (unchanged), in bytes.
    pub block_size: u64,
    /// Block objects past the new end that were deleted.
    pub discarded: u64,
    /// Whether block 0 is stored (and so was rewritten with the new size).
    pub block0_stored: bool,
    /// The size block 0 recorded before, when it differed from the old
    /// size (an earlier resize stopped between its writes).
    pub block0_disagreed: Option<u64>,
    /// Whether the volume has a descriptor (and so it was rewritten).
    pub descriptor: bool,
}

/// The new geometry of `info` at `new_size`, and the blocks stored past its
/// end. Refuses a size that is zero or not a multiple of the block size.
pub async fn plan_resize(
    store: &dyn ObjectStore,
    info: &VolumeInfo,
    new_size: u64,
    plan: ListPlan,
) -> Result<ResizePlan> {
    let old = info.geometry;
    let block_size = u64::from(old.block_size());
    if new_size == 0 || !new_size.is_multiple_of(block_size) {
        let below = new_size / block_size * block_size;
        let nearest = if below == 0 {
            format_size(block_size)
        } else {
            format!("{} or {}", format_size(below), format_size(below + block_size))
        };
        return Err(Error::InvalidGeometry(format!(
            "the new size {} ({new_size} bytes) is not a whole number of the volume's {} blocks (try {nearest}); the block size is changed by `s3block copy --block-size`",
            format_size(new_size),
            format_size(block_size)
        )));
    }
    let new = Geometry::new(new_size, block_size)?;
    let tail = if new.block_count() < old.block_count() {
        list_blocks(store, &info.layout, new.block_count()..old.block_count(), plan).await?
    } else {
        Vec::new()
    };
    Ok(ResizePlan { old, new, tail })
}

/// The refusal of a shrink whose tail holds data, naming how many blocks
/// and the first.
pub fn tail_refusal(info: &VolumeInfo, plan: &ResizePlan) -> Option<Error> {
    let first = plan.tail.first()?;
    Some(Error::Config(format!(
        "cannot shrink to {}: {} block{} past the new end hold{} data (the first is block {}, {}); \
         give --discard-tail to delete them, or resize to at least {}",
        format_size(plan.new.size()),
        plan.tail.len(),
        if plan.tail.len() == 1 { "" } else { "s" },
        if plan.tail.len() == 1 { "s" } else { "" },
        first.block.0,
        info.layout.key(first.block),
        format_size(
            (u64::from(plan.tail.last().map_or(first.block, |b| b.block).0) + 1)
                * u64::from(plan.old.block_size())
        ),
    )))
}

/// Carries out `plan` on the volume `info` under `prefix` (whose mount lock
/// the caller holds), in the order the module docs give. A tail that holds
/// data is refused unless `discard_tail`.
pub async fn apply_resize(
    store: &dyn ObjectStore,
    prefix: &str,
    info: &VolumeInfo,
    plan: &ResizePlan,
    discard_tail: bool,
) -> Result<ResizeReport> {
    if plan.new.block_size() != plan.old.block_size() {
        return Err(Error::Config(format!(
            "a resize keeps the block size ({}); `s3block copy --block-size` changes it",
            format_size(plan.old.block_size().into())
        )));
    }
    let descriptor = current_descriptor(store, prefix, info).await?;
    // 1. The tail.
    let mut discarded = 0;
    if let Some(refusal) = tail_refusal(info, plan)
        && !discard_tail
    {
        return Err(refusal);
    }
    if !plan.tail.is_empty() {
        let keys = plan.tail.iter().map(|s| info.layout.key(s.block)).collect();
        discarded = delete_keys(store, keys).await?;
        stop_point("tail");
    }
    // 2. Block 0.
    let (block0_stored, block0_size) = rewrite_block0(store, info, plan.new).await?;
    stop_point("block0");
    // 3. The descriptor.
    if let Some(d) = &descriptor {
        write_size(store, prefix, d, plan.new.size()).await?;
    }
    Ok(ResizeReport {
        old_size: plan.old.size(),
        new_size: plan.new.size(),
        block_size: plan.new.block_size().into(),
        discarded,
        block0_stored,
        block0_disagreed: block0_size.filter(|&s| s != plan.old.size()),
        descriptor: descriptor.is_some(),
    })
}

/// The descriptor of `info` as stored now under `prefix`, `None` for a
/// volume without one. It must still be the one `info` was opened with
/// (else nothing is to be resized: another program changed it).
pub async fn current_descriptor(
    store: &dyn ObjectStore,
    prefix: &str,
    info: &VolumeInfo,
) -> Result<Option<VolumeDescriptor>> {
    match &info.source {
        GeometrySource::Descriptor(opened) => {
            let key = descriptor_key(prefix);
            match read_descriptor(store, prefix).await? {
                Some(now) if now == *opened => Ok(Some(now)),
                _ => Err(Error::Config(format!(
                    "{key} changed since the volume was opened; nothing was resized, try again"
                ))),
            }
        }
        _ => Ok(None),
    }
}

/// Stores block 0 again with `new`'s size in its metadata: the same bytes
/// and headers (encoding, HMAC), so its data and signature stay valid.
/// Returns whether it is stored, and the size it recorded before.
async fn rewrite_block0(
    store: &dyn ObjectStore,
    info: &VolumeInfo,
    new: Geometry,
) -> Result<(bool, Option<u64>)> {
    let block = BlockId(0);
    let key = info.layout.key(block);
    let path = key_path(&key)?;
    let res = match store.get_opts(&path, GetOptions::default()).await {
        Ok(r) => r,
        Err(e) if is_absent(&e) => return Ok((false, None)),
        Err(e) => return Err(store_error(e, &key, Some(block))),
    };
    let max = max_object_size(info.geometry.block_len());
    if res.meta.size > max {
        return Err(Error::Corrupt {
            block,
            key,
            reason: format!(
                "the object is {} bytes, more than any encoding of a block (at most {max})",
                res.meta.size
            ),
        });
    }
    let mut attributes = res.attributes.clone();
    let before = object_metadata(&attributes)
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(META_FILE_SIZE))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok());
    let body = res.bytes().await.map_err(|e| store_error(e, &key, Some(block)))?;
    // Any spelling of the two names goes; s3block's is written.
    let stale: Vec<Attribute> = attributes
        .iter()
        .filter_map(|(k, _)| match k {
            Attribute::Metadata(name)
                if name.eq_ignore_ascii_case(META_FILE_SIZE)
                    || name.eq_ignore_ascii_case(META_BLOCK_SIZE) =>
            {
                Some(k.clone())
            }
            _ => None,
        })
        .collect();
    for k in stale {
        attributes.remove(&k);
    }
    attributes.insert(
        Attribute::Metadata(META_BLOCK_SIZE.into()),
        AttributeValue::from(new.block_size().to_string()),
    );
    attributes
        .insert(Attribute::Metadata(META_FILE_SIZE.into()), AttributeValue::from(new.size().to_string()));
    let opts = PutOptions { attributes, ..Default::default() };
    store.put_opts(&path, body.into(), opts).await.map_err(|e| store_error(e, &key, Some(block)))?;
    Ok((true, before))
}

/// Writes `d` again with `size`, every other field kept: a resize's last
/// write, its commit point.
pub async fn write_size(
    store: &dyn ObjectStore,
    prefix: &str,
    d: &VolumeDescriptor,
    size: u64,
) -> Result<()> {
    let key = descriptor_key(prefix);
    let mut d = d.clone();
    d.size = size;
    let body = serde_json::to_vec_pretty(&d)
        .map_err(|e| Error::Config(format!("cannot encode {DESCRIPTOR_NAME}: {e}")))?;
    store
        .put_opts(&key_path(&key)?, body.into(), PutOptions::default())
        .await
        .map_err(|e| store_error(e, &key, None))?;
    Ok(())
}

/// Where a test may stop the resize (see `RESIZE_STOP_ENV`); nothing
/// without the `testing` feature.
fn stop_point(step: &str) {
    #[cfg(feature = "testing")]
    if std::env::var(RESIZE_STOP_ENV).is_ok_and(|v| v == step) {
        eprintln!("{RESIZE_STOP_ENV}: stopped after {step}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let _ = step;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use s3block_core::{BlockDevice, Bytes};

    use object_store::ObjectStoreExt;

    use super::*;
    use crate::{Create, StoreConfig, Volume, read_block0_geometry};

    const BS: u64 = 4096;

    async fn volume(url: &str, size: u64, hash: bool) -> Volume {
        let store = StoreConfig::new(url).open().unwrap();
        Volume::builder(store)
            .size(size)
            .block_size(BS)
            .hash_prefix(hash)
            .create(Create::New)
            .open()
            .await
            .unwrap()
    }

    fn block(fill: u8) -> Bytes {
        Bytes::from(vec![fill; BS as usize])
    }

    #[tokio::test]
    async fn grow_rewrites_block0_and_descriptor_keeping_the_data() {
        for hash in [false, true] {
            let v = volume("memory:///v/", 16 * BS, hash).await;
            v.device().write_block(BlockId(0), block(7)).await.unwrap();
            let store: Arc<dyn ObjectStore> = v.store().store.clone();
            let plan = plan_resize(store.as_ref(), v.info(), 64 * BS, v.store().list_plan).await.unwrap();
            assert!(plan.grows() && plan.tail.is_empty());
            let r = apply_resize(store.as_ref(), "v/", v.info(), &plan, false).await.unwrap();
            assert!(r.block0_stored && r.descriptor && r.discarded == 0, "{r:?}");
            let d = read_descriptor(store.as_ref(), "v/").await.unwrap().unwrap();
            assert_eq!(d.size, 64 * BS);
            assert_eq!(Some(d.volume_id.clone()), v.descriptor().map(|d| d.volume_id.clone()));
            let (g, hashed) = read_block0_geometry(store.as_ref(), "v/").await.unwrap().unwrap();
            assert_eq!((g.size(), hashed), (64 * BS, hash));
            let device = v.device().clone();
            assert_eq!(device.read_block(BlockId(0)).await.unwrap(), block(7), "block 0's data kept");
        }
    }

    #[tokio::test]
    async fn shrink_refuses_a_tail_with_data_naming_it_then_discards_it() {
        let v = volume("memory:///v/", 16 * BS, false).await;
        for b in [1u32, 9, 12] {
            v.device().write_block(BlockId(b), block(1)).await.unwrap();
        }
        let store = v.store().store.clone();
        let plan = plan_resize(store.as_ref(), v.info(), 8 * BS, v.store().list_plan).await.unwrap();
        assert_eq!(plan.tail.len(), 2);
        let e = apply_resize(store.as_ref(), "v/", v.info(), &plan, false).await.unwrap_err().to_string();
        assert!(
            e.contains("2 blocks past the new end") && e.contains("block 9") && e.contains("v/00000009"),
            "{e}"
        );
        assert_eq!(
            read_descriptor(store.as_ref(), "v/").await.unwrap().unwrap().size,
            16 * BS,
            "nothing written"
        );
        let r = apply_resize(store.as_ref(), "v/", v.info(), &plan, true).await.unwrap();
        assert_eq!(r.discarded, 2);
        assert!(!r.block0_stored, "block 0 is zero: no object is made for it");
        let left = list_blocks(store.as_ref(), &v.info().layout, 0..16, v.store().list_plan).await.unwrap();
        assert_eq!(left.iter().map(|s| s.block.0).collect::<Vec<_>>(), vec![1]);
        assert!(store.head(&key_path("v/00000000").unwrap()).await.is_err());
        assert_eq!(read_descriptor(store.as_ref(), "v/").await.unwrap().unwrap().size, 8 * BS);
    }

    #[tokio::test]
    async fn a_size_that_is_not_whole_blocks_is_refused_naming_both() {
        let v = volume("memory:///v/", 16 * BS, false).await;
        let store = v.store().store.clone();
        let e = plan_resize(store.as_ref(), v.info(), 16 * BS + 100, v.store().list_plan).await.unwrap_err();
        assert!(e.to_string().contains("4K blocks") && e.to_string().contains("copy --block-size"), "{e}");
    }
}
