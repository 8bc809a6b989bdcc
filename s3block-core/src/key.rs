//! Block numbers and the object keys they are stored under (s3backer's naming).

use std::fmt;

/// A block number. Volumes have at most 2^32 blocks, so it fits eight hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockId(pub u32);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for BlockId {
    fn from(v: u32) -> Self {
        BlockId(v)
    }
}

/// s3backer's block hash, used to spread keys over an S3 key space:
/// `h = block; for n in 12..=1 { h = ((h >> 8) ^ h) * 0x6b + n }` on u32.
pub fn block_hash(block: BlockId) -> u32 {
    let mut h = block.0;
    for n in (1..=12u32).rev() {
        h = ((h >> 8) ^ h).wrapping_mul(0x6b).wrapping_add(n);
    }
    h
}

/// How block numbers become object keys: `{prefix}{block:08x}`, or with the
/// hash prefix `{prefix}{hash:08x}-{block:08x}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeyLayout {
    prefix: String,
    hash_prefix: bool,
}

impl KeyLayout {
    /// A layout under `prefix` (used as given: include a trailing `/` for a folder).
    pub fn new(prefix: impl Into<String>, hash_prefix: bool) -> Self {
        KeyLayout { prefix: prefix.into(), hash_prefix }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether keys carry the hash prefix.
    pub fn hash_prefix(&self) -> bool {
        self.hash_prefix
    }

    /// The object key of `block`.
    ///
    /// ```
    /// use s3block_core::{BlockId, KeyLayout};
    /// assert_eq!(KeyLayout::new("vol/", false).key(BlockId(0x1f)), "vol/0000001f");
    /// ```
    pub fn key(&self, block: BlockId) -> String {
        if self.hash_prefix {
            format!("{}{:08x}-{:08x}", self.prefix, block_hash(block), block.0)
        } else {
            format!("{}{:08x}", self.prefix, block.0)
        }
    }

    /// The key of another object of the volume (the lock, the descriptor).
    pub fn meta_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The block a key names, or `None` when the key is not a block of this
    /// volume (another prefix, another layout, a wrong hash, metadata objects).
    pub fn parse(&self, key: &str) -> Option<BlockId> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let block = if self.hash_prefix {
            let (hash, block) = rest.split_once('-')?;
            let block = BlockId(parse_hex8(block)?);
            if parse_hex8(hash)? != block_hash(block) {
                return None;
            }
            block
        } else {
            BlockId(parse_hex8(rest)?)
        };
        Some(block)
    }
}

fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_keys() {
        let l = KeyLayout::new("some/prefix/", false);
        assert_eq!(l.key(BlockId(0)), "some/prefix/00000000");
        assert_eq!(l.key(BlockId(0xdeadbeef)), "some/prefix/deadbeef");
        assert_eq!(l.parse("some/prefix/deadbeef"), Some(BlockId(0xdeadbeef)));
        assert_eq!(l.parse("some/prefix/DEADBEEF"), None);
        assert_eq!(l.parse("some/prefix/s3backer-mounted"), None);
        assert_eq!(l.parse("other/00000000"), None);
        assert_eq!(l.parse("some/prefix/0000000"), None);
        assert_eq!(l.parse("some/prefix/+0000000"), None);
    }

    #[test]
    fn hash_matches_the_formula_by_hand() {
        // Computed step by step from the formula in the design.
        let mut h: u32 = 1;
        for n in (1..=12u32).rev() {
            h = ((h >> 8) ^ h).wrapping_mul(0x6b).wrapping_add(n);
        }
        assert_eq!(block_hash(BlockId(1)), h);
        assert_ne!(block_hash(BlockId(1)), block_hash(BlockId(2)));
        let l = KeyLayout::new("", true);
        let k = l.key(BlockId(1));
        assert_eq!(k, format!("{h:08x}-00000001"));
        assert_eq!(l.parse(&k), Some(BlockId(1)));
        // A key with the wrong hash is not a block of the volume.
        assert_eq!(l.parse("00000000-00000001"), None);
        assert_eq!(l.parse("00000001"), None);
    }

    proptest! {
        #[test]
        fn keys_round_trip(block: u32, hash: bool, prefix in "[a-z/]{0,8}") {
            let l = KeyLayout::new(prefix, hash);
            prop_assert_eq!(l.parse(&l.key(BlockId(block))), Some(BlockId(block)));
            prop_assert_eq!(l.parse(&l.meta_key("s3backer-mounted")), None);
        }
    }
}
