//! Listing a volume's stored blocks, in parallel key ranges, and deleting
//! many blocks with S3's multi-object delete.
//!
//! A volume's blocks are listed under the longest folder of its key prefix
//! and filtered by [`KeyLayout::parse`], so the lock, the descriptor and any
//! other object are never mistaken for blocks. On stores that list keys in
//! order (S3 and memory) the key space is split into ranges listed at the
//! same time with `list_with_offset`, each stopping at the start of the next:
//! by block number for plain keys, by hash for hashed keys (whose order is
//! the hash's). On a local directory, whose listing has no order, one
//! listing is filtered instead.

use std::ops::Range;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use s3block_core::{BlockId, Error, KeyLayout, Result};

use crate::error::{is_absent, store_error};
use crate::keys::key_path;

/// The folder to list for a key prefix: `a/b/` and `a/b/x` list under `a/b`.
pub(crate) fn list_root(prefix: &str) -> Result<Option<Path>> {
    match prefix.rfind('/') {
        Some(i) if i > 0 => key_path(&prefix[..i]).map(Some),
        _ => Ok(None),
    }
}

/// A stored block and the size of its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct StoredBlock {
    /// The block.
    pub block: BlockId,
    /// Size of its object in bytes (after compression).
    pub size: u64,
}

impl StoredBlock {
    /// `block`, stored in an object of `size` bytes.
    pub fn new(block: BlockId, size: u64) -> Self {
        StoredBlock { block, size }
    }
}

/// How to list: in how many parallel ranges, and whether the store lists in key order.
#[derive(Debug, Clone, Copy)]
pub struct ListPlan {
    /// Ranges listed at the same time (1 lists in one go).
    pub parallelism: usize,
    /// Whether the store returns keys in lexicographic order (S3, memory).
    pub sorted: bool,
}

/// Lists the stored blocks of `layout` among `blocks`, sorted by block number.
pub async fn list_blocks(
    store: &dyn ObjectStore,
    layout: &KeyLayout,
    blocks: Range<u64>,
    plan: ListPlan,
) -> Result<Vec<StoredBlock>> {
    let all = std::sync::Mutex::new(Vec::new());
    for_each_stored_block(store, layout, blocks, plan, &|b| {
        all.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(b);
    })
    .await?;
    let mut all = all.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    all.sort();
    all.dedup_by_key(|b| b.block);
    Ok(all)
}

/// Lists the stored blocks of `layout` among `blocks` as [`list_blocks`]
/// does, handing each to `each` as it comes instead of keeping them: in no
/// particular order (the ranges are listed at the same time), each block
/// once. The memory it takes is a page of keys per range, however many
/// blocks are stored.
pub async fn for_each_stored_block(
    store: &dyn ObjectStore,
    layout: &KeyLayout,
    blocks: Range<u64>,
    plan: ListPlan,
    each: &(dyn Fn(StoredBlock) + Sync),
) -> Result<()> {
    let root = list_root(layout.prefix())?;
    let parts = if plan.sorted { plan.parallelism.max(1) as u64 } else { 1 };
    // Each part: an exclusive start key (strictly before every key in it),
    // its first key, and an end key (the first key past it, the next part's
    // first key). The exclusive start is the first key one character short,
    // so a listing from it may begin with keys of the part before: those are
    // skipped, and each key is handed by one part only.
    let (lo, hi) = if layout.hash_prefix() { (0u64, 1u64 << 32) } else { (blocks.start, blocks.end) };
    let span = hi.saturating_sub(lo);
    let parts = parts.min(span.max(1));
    let mut ranges = Vec::new();
    for i in 0..parts {
        let a = lo + span * i / parts;
        let b = lo + span * (i + 1) / parts;
        let start = (a > 0 || plan.sorted).then(|| {
            let mut s = format!("{}{a:08x}", layout.prefix());
            s.pop();
            s
        });
        let end = (b < (1u64 << 32) && plan.sorted).then(|| format!("{}{b:08x}", layout.prefix()));
        let first = (i > 0).then(|| format!("{}{a:08x}", layout.prefix()));
        let start = start.map(|s| key_path(&s)).transpose()?;
        ranges.push((start, first, end));
    }
    let tasks = ranges.into_iter().map(|(start, first, end)| {
        let root = root.clone();
        let blocks = blocks.clone();
        async move {
            let stream = match (&start, plan.sorted) {
                (Some(s), true) => store.list_with_offset(root.as_ref(), s),
                _ => store.list(root.as_ref()),
            };
            let mut stream =
                stream.map_err(|e| store_error(e, &format!("listing of {}", layout.prefix()), None));
            while let Some(meta) = stream.try_next().await? {
                let key = meta.location.as_ref();
                if let Some(end) = &end
                    && key >= end.as_str()
                {
                    break;
                }
                if let Some(first) = &first
                    && key < first.as_str()
                {
                    continue;
                }
                if let Some(block) = layout.parse(key)
                    && blocks.contains(&u64::from(block.0))
                {
                    each(StoredBlock { block, size: meta.size });
                }
            }
            Ok::<_, Error>(())
        }
    });
    futures::future::try_join_all(tasks).await?;
    Ok(())
}

/// The key of the first block object stored under `prefix`, in either key
/// layout (plain or hash-prefixed), or `None` when there is none. Stops at
/// the first one found.
pub async fn first_block_key(store: &dyn ObjectStore, prefix: &str) -> Result<Option<String>> {
    let root = list_root(prefix)?;
    let layouts = [KeyLayout::new(prefix, false), KeyLayout::new(prefix, true)];
    let mut stream =
        store.list(root.as_ref()).map_err(|e| store_error(e, &format!("listing of {prefix}"), None));
    while let Some(meta) = stream.try_next().await? {
        let key = meta.location.as_ref();
        if layouts.iter().any(|l| l.parse(key).is_some()) {
            return Ok(Some(key.to_owned()));
        }
    }
    Ok(None)
}

/// Whether any block object of `layout` is stored, with one LIST on a store
/// that lists keys in order: the keys from the first possible block key
/// on, until one is a block or the keys pass every hex digit. An empty
/// volume then costs that one request instead of one per range of a
/// parallel listing.
pub async fn any_block_stored(store: &dyn ObjectStore, layout: &KeyLayout) -> Result<bool> {
    let prefix = layout.prefix();
    let root = list_root(prefix)?;
    let offset = key_path(&format!("{prefix}0000000"))?;
    let past = format!("{prefix}g");
    let mut keys = store.list_with_offset(root.as_ref(), &offset);
    while let Some(meta) =
        keys.try_next().await.map_err(|e| store_error(e, &format!("listing of {prefix}"), None))?
    {
        let key = meta.location.as_ref();
        if layout.parse(key).is_some() {
            return Ok(true);
        }
        if !key.starts_with(prefix) || key >= past.as_str() {
            return Ok(false);
        }
    }
    Ok(false)
}

/// Deletes `keys` with bulk deletes (up to 1000 keys per request); keys
/// already absent count as deleted. Returns how many keys were sent.
pub async fn delete_keys(store: &dyn ObjectStore, keys: Vec<String>) -> Result<u64> {
    let n = keys.len() as u64;
    if n == 0 {
        return Ok(0);
    }
    let first = keys[0].clone();
    let paths = keys.iter().map(|k| key_path(k)).collect::<Result<Vec<_>>>()?;
    let paths = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
    let mut results = store.delete_stream(paths);
    while let Some(r) = results.next().await {
        match r {
            Ok(_) => {}
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(store_error(e, &format!("bulk delete of {n} keys from {first}"), None)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    /// Parts of the key space that start inside a run of keys sharing all
    /// but their last character (block 0x15 in a part of its own, after one
    /// from 0x00) are listed from before that run: the blocks of the part
    /// before are handed by that part alone, in both key layouts.
    #[tokio::test]
    async fn each_stored_block_is_handed_once_whatever_the_parts() {
        for hash_prefix in [false, true] {
            let layout = KeyLayout::new("vol/", hash_prefix);
            let store = InMemory::new();
            let stored: Vec<u32> = (0..300).filter(|n| n % 3 != 1).collect();
            for &n in &stored {
                let key = key_path(&layout.key(BlockId(n))).unwrap();
                store.put(&key, PutPayload::from_static(b"x")).await.unwrap();
            }
            for parallelism in [1, 2, 7, 16] {
                let plan = ListPlan { parallelism, sorted: true };
                let handed = Mutex::new(BTreeMap::<u32, u32>::new());
                for_each_stored_block(&store, &layout, 0..300, plan, &|b| {
                    *handed.lock().unwrap().entry(b.block.0).or_default() += 1;
                })
                .await
                .unwrap();
                let handed = handed.into_inner().unwrap();
                let twice: Vec<_> = handed.iter().filter(|&(_, &n)| n > 1).collect();
                assert!(
                    twice.is_empty(),
                    "hash prefix {hash_prefix}, {parallelism} parts: handed more than once: {twice:?}"
                );
                assert_eq!(
                    handed.keys().copied().collect::<Vec<_>>(),
                    stored,
                    "hash prefix {hash_prefix}, {parallelism} parts"
                );
            }
        }
    }
}
