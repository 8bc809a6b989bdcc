//! Codecs between a block's bytes and its object's bytes.
//!
//! Writing runs the configured codecs in order and records their names in the
//! object's `Content-Encoding` (`deflate` or `zstd`, then `..., encrypt-...`).
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
use flate2::Compression as ZlibLevel;
use flate2::read::{ZlibDecoder, ZlibEncoder};
use s3block_core::{BlockId, Error, Result};
use serde::{Deserialize, Serialize};

use crate::native::ChunkedXChaChaCodec;

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

    /// A corrupt-block error for an object that did not authenticate,
    /// `authentication failed: {why}`, also logged as an error naming the
    /// block and key: a wrong key or an altered object is worth a line in
    /// the log even when the caller retries or reports it elsewhere.
    pub fn authentication_failed(&self, why: &str) -> Error {
        tracing::error!(
            block = self.block.0,
            key = self.key,
            "block {} (key {}): authentication failed: {why}",
            self.block,
            self.key
        );
        self.corrupt(format!("authentication failed: {why}"))
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
        ZlibEncoder::new(&data[..], ZlibLevel::new(self.level))
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

/// zstd compression, `Content-Encoding: zstd`, as s3backer 2.x writes it:
/// one zstd frame per block from the one-shot compressor (the frame header
/// records the block's length; no checksum, no dictionary).
#[derive(Debug, Clone, Copy)]
pub struct Zstd {
    level: u32,
}

impl Zstd {
    /// The `Content-Encoding` token.
    pub const NAME: &'static str = "zstd";
    /// zstd's own default level, s3backer's when no level is given.
    pub const DEFAULT_LEVEL: u32 = 3;
    /// The highest level zstd offers.
    pub const MAX_LEVEL: u32 = 22;

    /// Compression at `level` 1 (fastest) to 22 (smallest).
    pub fn new(level: u32) -> Result<Self> {
        if (1..=Self::MAX_LEVEL).contains(&level) {
            Ok(Zstd { level })
        } else {
            Err(Error::Config(format!(
                "zstd compression level {level} is not between 1 and {}",
                Self::MAX_LEVEL
            )))
        }
    }

    /// The compression level.
    pub fn level(&self) -> u32 {
        self.level
    }
}

impl Codec for Zstd {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn encode(&self, _cx: &CodecContext<'_>, data: Bytes, _meta: &mut CodecMeta) -> Result<Bytes> {
        // Levels are 1..=22, checked in `new`.
        let level = i32::try_from(self.level).unwrap_or(Self::DEFAULT_LEVEL as i32);
        zstd::bulk::compress(&data, level)
            .map(Bytes::from)
            .map_err(|e| Error::Config(format!("zstd compression failed: {e}")))
    }

    fn decode(&self, cx: &CodecContext<'_>, data: Bytes, _meta: &CodecMeta) -> Result<Bytes> {
        // At most one byte more than a block is allocated or written, as for
        // deflate: a frame that claims or yields more is refused.
        zstd::bulk::decompress(&data, cx.block_size + 1).map(Bytes::from).map_err(|e| {
            // zstd's words for a frame that yields more than it may.
            if e.to_string().contains("Destination buffer is too small") {
                cx.corrupt(format!("zstd data decodes to more than {} bytes, the block size", cx.block_size))
            } else {
                cx.corrupt(format!("zstd data does not decompress: {e}"))
            }
        })
    }
}

/// A compression algorithm blocks can be written with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CompressionAlgorithm {
    /// zlib, `Content-Encoding: deflate` (s3backer 1.x and 2.x).
    #[default]
    Deflate,
    /// zstd, `Content-Encoding: zstd` (s3backer 2.x).
    Zstd,
}

impl CompressionAlgorithm {
    /// Its `Content-Encoding` token, also its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CompressionAlgorithm::Deflate => Deflate::NAME,
            CompressionAlgorithm::Zstd => Zstd::NAME,
        }
    }

    /// The level used when none is given: 6 for deflate (zlib's default),
    /// 3 for zstd (zstd's), as s3backer.
    pub fn default_level(self) -> u32 {
        match self {
            CompressionAlgorithm::Deflate => 6,
            CompressionAlgorithm::Zstd => Zstd::DEFAULT_LEVEL,
        }
    }

    /// Whether this is deflate, the algorithm of descriptors that name none.
    pub fn is_deflate(&self) -> bool {
        *self == CompressionAlgorithm::Deflate
    }
}

impl std::fmt::Display for CompressionAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CompressionAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case(Deflate::NAME) {
            Ok(CompressionAlgorithm::Deflate)
        } else if s.eq_ignore_ascii_case(Zstd::NAME) {
            Ok(CompressionAlgorithm::Zstd)
        } else {
            Err(Error::Config(format!("unknown compression algorithm {s:?} (deflate or zstd)")))
        }
    }
}

/// How new blocks are compressed: an algorithm and its level, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Compression {
    algorithm: CompressionAlgorithm,
    level: u32,
}

impl Compression {
    /// `algorithm` at `level` (its default when `None`); refuses a level
    /// the algorithm does not have (deflate 1-9, zstd 1-22).
    pub fn new(algorithm: CompressionAlgorithm, level: Option<u32>) -> Result<Self> {
        let level = level.unwrap_or(algorithm.default_level());
        let c = Compression { algorithm, level };
        c.codec()?;
        Ok(c)
    }

    /// Deflate at `level` 1-9.
    pub fn deflate(level: u32) -> Result<Self> {
        Self::new(CompressionAlgorithm::Deflate, Some(level))
    }

    /// zstd at `level` 1-22.
    pub fn zstd(level: u32) -> Result<Self> {
        Self::new(CompressionAlgorithm::Zstd, Some(level))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> CompressionAlgorithm {
        self.algorithm
    }

    /// The level.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// The codec that writes (and reads) blocks so.
    pub fn codec(&self) -> Result<Arc<dyn Codec>> {
        Ok(match self.algorithm {
            CompressionAlgorithm::Deflate => Arc::new(Deflate::new(self.level)?),
            CompressionAlgorithm::Zstd => Arc::new(Zstd::new(self.level)?),
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} level {}", self.algorithm, self.level)
    }
}

/// Most codings one object's `Content-Encoding` may name: s3block and
/// s3backer write at most two (compression, then encryption).
const MAX_CODINGS: usize = 4;

/// The codecs a device writes with, and those it can read.
#[derive(Debug, Clone)]
pub struct CodecChain {
    write: Vec<Arc<dyn Codec>>,
    known: Vec<Arc<dyn Codec>>,
    /// The `Content-Encoding` of an object that has none.
    default_encoding: Option<String>,
    /// The chunked native encryption, when added with
    /// [`with_chunked`](CodecChain::with_chunked): ranged reads use it.
    chunked: Option<Arc<ChunkedXChaChaCodec>>,
}

impl Default for CodecChain {
    fn default() -> Self {
        CodecChain {
            write: Vec::new(),
            known: vec![Arc::new(Deflate { level: 6 }), Arc::new(Zstd { level: Zstd::DEFAULT_LEVEL })],
            default_encoding: None,
            chunked: None,
        }
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

    /// Adds the chunked native encryption to the write pipeline (after the
    /// codecs already added) and to the decoders, like [`with`](Self::with);
    /// when it is the only codec written, parts of blocks can be read with
    /// ranged GETs (see [`ranged_chunked`](Self::ranged_chunked)).
    pub fn with_chunked(mut self, codec: Arc<ChunkedXChaChaCodec>) -> Self {
        self.chunked = Some(codec.clone());
        self.with(codec)
    }

    /// The chunked native encryption when blocks are written with it alone
    /// (no compression): a chunk of such an object is then at a known
    /// offset, and can be fetched, authenticated and decrypted on its own.
    pub fn ranged_chunked(&self) -> Option<&Arc<ChunkedXChaChaCodec>> {
        match (&self.chunked, self.write.as_slice()) {
            (Some(chunked), [only]) if only.name() == ChunkedXChaChaCodec::NAME => Some(chunked),
            _ => None,
        }
    }

    /// Adds a decoder only (to read objects written with other options).
    pub fn with_decoder(mut self, codec: Arc<dyn Codec>) -> Self {
        if !self.known.iter().any(|c| c.name() == codec.name()) {
            self.known.push(codec);
        }
        self
    }

    /// Decodes an object stored without a `Content-Encoding` (or with an
    /// empty one) as if it had `encoding`: for stores that drop the header.
    /// Objects with their own keep being read by it. `None`: such an object
    /// is the block as it is.
    pub fn with_default_encoding(mut self, encoding: Option<String>) -> Self {
        self.default_encoding = encoding;
        self
    }

    /// The `Content-Encoding` assumed for an object without one.
    pub fn default_encoding(&self) -> Option<&str> {
        self.default_encoding.as_deref()
    }

    /// True when blocks are written through at least one codec (else as
    /// they are).
    pub fn encodes(&self) -> bool {
        !self.write.is_empty()
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
        let encoding = encoding.filter(|e| !e.trim().is_empty()).or(self.default_encoding.as_deref());
        let names: Vec<&str> = encoding
            .map(|e| e.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        // Each name is a pass over up to a block: a header naming "deflate"
        // a thousand times over nested streams would take minutes of CPU.
        if names.len() > MAX_CODINGS {
            return Err(cx.corrupt(format!(
                "Content-Encoding names {} codings; a block has at most {MAX_CODINGS} (compression, then encryption)",
                names.len()
            )));
        }
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

/// The codings s3block can read, as `Content-Encoding` names them.
pub const KNOWN_ENCODINGS: &[&str] = &[
    Deflate::NAME,
    Zstd::NAME,
    crate::s3backer_crypto::S3backerCodec::NAME,
    crate::native::XChaChaCodec::NAME,
    ChunkedXChaChaCodec::NAME,
];

/// Checks a `Content-Encoding` value given by the user (`deflate`,
/// `deflate, encrypt-AES-128-CBC`): every coding known, at most
/// four of them. Returns it as s3block writes it (`, `
/// between the codings, each spelled as in [`KNOWN_ENCODINGS`]).
pub fn parse_content_encoding(text: &str) -> std::result::Result<String, String> {
    let names: Vec<&str> = text.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Err(format!("{text:?}: name a coding ({})", KNOWN_ENCODINGS.join(", ")));
    }
    if names.len() > MAX_CODINGS {
        return Err(format!("{text:?}: at most {MAX_CODINGS} codings (compression, then encryption)"));
    }
    let known = names
        .iter()
        .map(|n| {
            KNOWN_ENCODINGS.iter().find(|k| k.eq_ignore_ascii_case(n)).copied().ok_or_else(|| {
                format!("{text:?}: unknown coding {n:?}; s3block reads {}", KNOWN_ENCODINGS.join(", "))
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(known.join(", "))
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
    fn zstd_round_trip_in_s3backers_frame_format() {
        let chain = CodecChain::new().with(Compression::zstd(3).expect("level").codec().expect("codec"));
        let mut block = vec![0u8; 4096];
        block[100..110].copy_from_slice(b"0123456789");
        let (obj, enc, _) = chain.encode(&cx(), Bytes::from(block.clone())).expect("encode");
        assert_eq!(enc.as_deref(), Some("zstd"));
        assert!(obj.len() < 100, "{}", obj.len());
        // A zstd frame (magic 0xFD2FB528, little-endian) whose header records
        // the block's length: the frame header descriptor's content-size flag.
        assert_eq!(&obj[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_ne!(obj[4] >> 6, 0, "no content size in the frame header");
        assert_eq!(obj[4] & 0x04, 0, "s3backer writes no checksum");
        // What the C library's one-shot decoder (s3backer's) reads back.
        assert_eq!(zstd::bulk::decompress(&obj, 4096).expect("zstd"), block);
        // A chain without compression reads it by its Content-Encoding.
        let back = CodecChain::new().decode(&cx(), obj, enc.as_deref(), &vec![]).expect("decode");
        assert_eq!(&back[..], &block[..]);
    }

    #[test]
    fn an_object_without_content_encoding_is_read_with_the_default() {
        let deflate = CodecChain::new().with(Arc::new(Deflate::new(6).expect("level")));
        let mut block = vec![0u8; 4096];
        block[7..12].copy_from_slice(b"hello");
        let (obj, enc, _) = deflate.encode(&cx(), Bytes::from(block.clone())).expect("encode");
        // The store dropped the header: without a default the zlib stream is
        // taken for the block itself and refused by its length.
        let plain = CodecChain::new();
        let err = plain.decode(&cx(), obj.clone(), None, &vec![]).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        let with_default = CodecChain::new().with_default_encoding(Some("deflate".into()));
        assert_eq!(with_default.default_encoding(), Some("deflate"));
        for missing in [None, Some(""), Some("  ")] {
            let back = with_default.decode(&cx(), obj.clone(), missing, &vec![]).expect("decode");
            assert_eq!(&back[..], &block[..], "{missing:?}");
        }
        // An object with its own Content-Encoding is read by it.
        let (zobj, zenc, _) = CodecChain::new()
            .with(Compression::zstd(3).expect("level").codec().expect("codec"))
            .encode(&cx(), Bytes::from(block.clone()))
            .expect("encode");
        let back = with_default.decode(&cx(), zobj, zenc.as_deref(), &vec![]).expect("decode");
        assert_eq!(&back[..], &block[..]);
        let back = with_default.decode(&cx(), obj, enc.as_deref(), &vec![]).expect("decode");
        assert_eq!(&back[..], &block[..]);
        // A plain block in such a store then fails as not deflate: the
        // default is for stores where every block is encoded.
        let err = with_default.decode(&cx(), Bytes::from(block), None, &vec![]).unwrap_err();
        assert!(matches!(&err, Error::Corrupt { reason, .. } if reason.contains("deflate")), "{err}");
        // The values a user may give.
        assert_eq!(parse_content_encoding("DEFLATE").as_deref(), Ok("deflate"));
        assert_eq!(
            parse_content_encoding("deflate,encrypt-aes-128-cbc").as_deref(),
            Ok("deflate, encrypt-AES-128-CBC")
        );
        assert!(parse_content_encoding("gzip").unwrap_err().contains("unknown coding \"gzip\""));
        assert!(parse_content_encoding(" , ").is_err());
        assert!(parse_content_encoding("zstd,zstd,zstd,zstd,zstd").is_err());
    }

    #[test]
    fn compression_levels_and_names() {
        assert_eq!(Compression::new(CompressionAlgorithm::Zstd, None).expect("zstd").level(), 3);
        assert_eq!(Compression::new(CompressionAlgorithm::Deflate, None).expect("deflate").level(), 6);
        assert!(
            Compression::zstd(0).is_err() && Compression::zstd(23).is_err() && Compression::zstd(22).is_ok()
        );
        assert!(Compression::deflate(10).is_err());
        assert_eq!(Compression::zstd(19).expect("zstd").to_string(), "zstd level 19");
        assert_eq!("ZSTD".parse::<CompressionAlgorithm>().expect("zstd"), CompressionAlgorithm::Zstd);
        assert!("brotli".parse::<CompressionAlgorithm>().is_err());
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
        // Bad zstd: garbage, a truncated frame, a frame that decodes past the block.
        let zstd = Compression::zstd(3).expect("level").codec().expect("codec");
        let (good, _, _) =
            CodecChain::new().with(zstd.clone()).encode(&cx(), Bytes::from(vec![5u8; 4096])).expect("encode");
        let (bomb, _, _) =
            CodecChain::new().with(zstd).encode(&cx(), Bytes::from(vec![5u8; 1 << 20])).expect("encode");
        for bad in [Bytes::from_static(b"not zstd at all"), good.slice(..good.len() - 3), bomb] {
            let err = chain.decode(&cx(), bad, Some("zstd"), &vec![]).unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { key, reason, .. } if key == "v/00000003" && reason.contains("zstd")),
                "{err}"
            );
        }
    }
}
