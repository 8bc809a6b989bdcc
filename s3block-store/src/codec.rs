//! Codecs between a block's bytes and its object's bytes.
//!
//! Writing runs the configured codecs in order and records their names in the
//! object's `Content-Encoding` (`deflate`, later `deflate, encrypt-...`).
//! Reading runs the decoders named by the object's own `Content-Encoding`,
//! right to left, whatever the local options say, so a volume written with
//! compression reads back on a mount without it and the other way round.
//!
//! Zero elision is not a codec: an all-zero block has no object at all
//! ([`ObjectBlockDevice`](crate::ObjectBlockDevice) deletes it).
//!
//! Encryption plugs in as another [`Codec`]: it gets the block number (for
//! its IV), can add metadata (s3backer's HMAC header) on encode and read it
//! back on decode, and registers its name so the decoder finds it.

use std::fmt::Debug;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::read::{ZlibDecoder, ZlibEncoder};
use s3block_core::{BlockId, Error, Result};

/// Extra metadata a codec attaches to an object (sent as `x-amz-meta-*`).
pub type CodecMeta = Vec<(String, String)>;

/// What a codec needs to know about the object it works on.
#[derive(Debug, Clone, Copy)]
pub struct CodecContext<'a> {
    /// The block.
    pub block: BlockId,
    /// Its object key.
    pub key: &'a str,
    /// The volume's block size: no decoded block may exceed it.
    pub block_size: usize,
}

impl CodecContext<'_> {
    /// A corrupt-block error for this object.
    pub fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt { block: self.block, key: self.key.to_owned(), reason: reason.into() }
    }
}

/// One reversible transformation of a block's bytes.
pub trait Codec: Send + Sync + Debug {
    /// Its `Content-Encoding` token, e.g. `deflate`.
    fn name(&self) -> &str;

    /// Transforms `data` for storage; may add metadata.
    fn encode(&self, cx: &CodecContext<'_>, data: Bytes, meta: &mut CodecMeta) -> Result<Bytes>;

    /// Reverses [`encode`](Codec::encode); `meta` is the object's metadata.
    fn decode(&self, cx: &CodecContext<'_>, data: Bytes, meta: &CodecMeta) -> Result<Bytes>;
}

/// zlib (RFC 1950) compression, `Content-Encoding: deflate`, as s3backer
/// writes it with zlib's `compress2`.
#[derive(Debug, Clone, Copy)]
pub struct Deflate {
    level: u32,
}

impl Deflate {
    /// The `Content-Encoding` token.
    pub const NAME: &'static str = "deflate";

    /// Compression at `level` 1 (fastest) to 9 (smallest).
    pub fn new(level: u32) -> Result<Self> {
        if (1..=9).contains(&level) {
            Ok(Deflate { level })
        } else {
            Err(Error::Config(format!("compression level {level} is not between 1 and 9")))
        }
    }

    /// The compression level.
    pub fn level(&self) -> u32 {
        self.level
    }
}

impl Codec for Deflate {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn encode(&self, _cx: &CodecContext<'_>, data: Bytes, _meta: &mut CodecMeta) -> Result<Bytes> {
        let mut out = Vec::with_capacity(data.len() / 4 + 64);
        ZlibEncoder::new(&data[..], Compression::new(self.level))
            .read_to_end(&mut out)
            .map_err(|e| Error::Config(format!("compression failed: {e}")))?;
        Ok(out.into())
    }

    fn decode(&self, cx: &CodecContext<'_>, data: Bytes, _meta: &CodecMeta) -> Result<Bytes> {
        // Never inflate past one byte more than a block: a hostile or broken
        // object must not make s3block allocate without bound.
        let limit = cx.block_size as u64 + 1;
        let mut out = Vec::with_capacity(cx.block_size);
        ZlibDecoder::new(&data[..])
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| cx.corrupt(format!("deflate data does not decompress: {e}")))?;
        Ok(out.into())
    }
}

/// The codecs a device writes with, and those it can read.
#[derive(Debug, Clone)]
pub struct CodecChain {
    write: Vec<Arc<dyn Codec>>,
    known: Vec<Arc<dyn Codec>>,
}

impl Default for CodecChain {
    fn default() -> Self {
        CodecChain { write: Vec::new(), known: vec![Arc::new(Deflate { level: 6 })] }
    }
}

impl CodecChain {
    /// A chain that writes blocks as they are and reads every known encoding.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `codec` to the write pipeline (applied after those already
    /// added) and to the decoders.
    pub fn with(mut self, codec: Arc<dyn Codec>) -> Self {
        self.known.retain(|c| c.name() != codec.name());
        self.known.push(codec.clone());
        self.write.push(codec);
        self
    }

    /// Adds a decoder only (to read objects written with other options).
    pub fn with_decoder(mut self, codec: Arc<dyn Codec>) -> Self {
        if !self.known.iter().any(|c| c.name() == codec.name()) {
            self.known.push(codec);
        }
        self
    }

    /// Names of the write pipeline, in order.
    pub fn write_names(&self) -> Vec<String> {
        self.write.iter().map(|c| c.name().to_owned()).collect()
    }

    /// Encodes a block: its object bytes, `Content-Encoding` (if any) and metadata.
    pub fn encode(&self, cx: &CodecContext<'_>, data: Bytes) -> Result<(Bytes, Option<String>, CodecMeta)> {
        let mut meta = CodecMeta::new();
        let mut data = data;
        for c in &self.write {
            data = c.encode(cx, data, &mut meta)?;
        }
        let encoding = (!self.write.is_empty()).then(|| self.write_names().join(", "));
        Ok((data, encoding, meta))
    }

    /// Decodes an object by its own `Content-Encoding` and checks the block length.
    pub fn decode(
        &self,
        cx: &CodecContext<'_>,
        data: Bytes,
        encoding: Option<&str>,
        meta: &CodecMeta,
    ) -> Result<Bytes> {
        let mut data = data;
        let names: Vec<&str> = encoding
            .map(|e| e.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        for name in names.iter().rev() {
            let codec = self
                .known
                .iter()
                .find(|c| c.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| cx.corrupt(format!("unknown Content-Encoding {name:?}")))?;
            data = codec.decode(cx, data, meta)?;
        }
        if data.len() != cx.block_size {
            return Err(cx.corrupt(format!(
                "decodes to {} bytes, the block size is {}",
                if data.len() > cx.block_size {
                    format!("more than {}", cx.block_size)
                } else {
                    data.len().to_string()
                },
                cx.block_size
            )));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> CodecContext<'static> {
        CodecContext { block: BlockId(3), key: "v/00000003", block_size: 4096 }
    }

    #[test]
    fn deflate_round_trip_and_smaller() {
        let chain = CodecChain::new().with(Arc::new(Deflate::new(9).expect("level")));
        let mut block = vec![0u8; 4096];
        block[100..110].copy_from_slice(b"0123456789");
        let (obj, enc, _) = chain.encode(&cx(), Bytes::from(block.clone())).expect("encode");
        assert_eq!(enc.as_deref(), Some("deflate"));
        assert!(obj.len() < 200, "{}", obj.len());
        // zlib header (RFC 1950): CM=8, and the check bits make it divisible by 31.
        assert_eq!(obj[0] & 0x0f, 8);
        assert_eq!(((obj[0] as u16) << 8 | obj[1] as u16) % 31, 0);
        // A chain without compression still reads it.
        let back = CodecChain::new().decode(&cx(), obj, enc.as_deref(), &vec![]).expect("decode");
        assert_eq!(&back[..], &block[..]);
    }

    #[test]
    fn bad_objects_are_corrupt() {
        let chain = CodecChain::new();
        let err = chain.decode(&cx(), Bytes::from(vec![1u8; 4096]), Some("br"), &vec![]).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { block: BlockId(3), key, reason } if key == "v/00000003" && reason.contains("br")),
            "{err}"
        );
        let err = chain.decode(&cx(), Bytes::from(vec![1u8; 100]), None, &vec![]).unwrap_err();
        assert!(err.to_string().contains("100 bytes"), "{err}");
        let err = chain.decode(&cx(), Bytes::from_static(b"not zlib"), Some("deflate"), &vec![]).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        // A bomb that inflates past the block size is cut off, not allocated.
        let big = vec![7u8; 1 << 20];
        let (obj, enc, _) = CodecChain::new()
            .with(Arc::new(Deflate::new(1).expect("level")))
            .encode(&cx(), Bytes::from(big))
            .expect("encode");
        let err = chain.decode(&cx(), obj, enc.as_deref(), &vec![]).unwrap_err();
        assert!(err.to_string().contains("more than 4096"), "{err}");
        assert!(Deflate::new(0).is_err() && Deflate::new(10).is_err());
    }
}
