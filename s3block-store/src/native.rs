//! s3block's own block encryption: XChaCha20-Poly1305.
//!
//! An object is `nonce (24 bytes) || ciphertext || tag (16 bytes)`, with
//! `Content-Encoding: ..., encrypt-XChaCha20-Poly1305`. Each write draws a
//! fresh random nonce. The associated data is
//! `"s3block-block\0" || volume id || "\0" || block number (u32, big endian)`,
//! so an object copied onto another block's key, or into another volume,
//! fails authentication.
//!
//! # Why XChaCha20-Poly1305
//!
//! - Its 192-bit nonces can be drawn at random for every write without ever
//!   counting: a volume sees billions of block writes over its life, and
//!   AES-GCM's 96-bit random nonces are only safe up to about 2^32
//!   messages per key.
//! - It is fast in plain software: the small VPSes s3block targets often
//!   lack AES-NI, where AES-GCM is slow or not constant-time.
//!
//! # What it does not hide or stop
//!
//! - Which blocks are all zeros: they are not stored at all (as with
//!   s3backer), so the bucket's listing shows which blocks hold data.
//! - Object sizes: with compression, how well each block compresses.
//! - Replay: an older object of the *same* block still authenticates; only
//!   a trusted record of each block's version could refuse it.

use std::fmt;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use s3block_core::{BlockId, Result};

use crate::codec::{Codec, CodecContext, CodecMeta};

/// Nonce length.
pub(crate) const NONCE_LEN: usize = 24;
/// Tag length.
pub(crate) const TAG_LEN: usize = 16;

/// The native encryption codec, keyed for one volume.
#[derive(Clone)]
pub struct XChaChaCodec {
    cipher: XChaCha20Poly1305,
    volume_id: String,
}

impl fmt::Debug for XChaChaCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XChaChaCodec").field("volume_id", &self.volume_id).finish_non_exhaustive()
    }
}

impl XChaChaCodec {
    /// The `Content-Encoding` token.
    pub const NAME: &'static str = "encrypt-XChaCha20-Poly1305";

    /// A codec with the 256-bit `key` for the volume `volume_id`.
    pub fn new(key: &[u8; 32], volume_id: &str) -> Self {
        XChaChaCodec { cipher: XChaCha20Poly1305::new(key.into()), volume_id: volume_id.to_owned() }
    }

    fn aad(&self, block: BlockId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + self.volume_id.len());
        aad.extend_from_slice(b"s3block-block\0");
        aad.extend_from_slice(self.volume_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&block.0.to_be_bytes());
        aad
    }
}

/// Encrypts `msg` under `cipher` with a fresh nonce: `nonce || ciphertext || tag`.
pub(crate) fn seal(cipher: &XChaCha20Poly1305, msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg, aad }).ok()?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Some(out)
}

/// Reverses [`seal`]; `None` when the data does not authenticate.
pub(crate) fn open(cipher: &XChaCha20Poly1305, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
}

impl Codec for XChaChaCodec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn encode(&self, cx: &CodecContext<'_>, data: Bytes, _meta: &mut CodecMeta) -> Result<Bytes> {
        seal(&self.cipher, &data, &self.aad(cx.block))
            .map(Bytes::from)
            .ok_or_else(|| cx.corrupt("encryption failed"))
    }

    fn decode(&self, cx: &CodecContext<'_>, data: Bytes, _meta: &CodecMeta) -> Result<Bytes> {
        if data.len() < NONCE_LEN + TAG_LEN {
            return Err(cx.corrupt(format!(
                "authentication failed: {} bytes is too short for an {} object",
                data.len(),
                Self::NAME
            )));
        }
        match open(&self.cipher, &data, &self.aad(cx.block)) {
            Some(plain) => Ok(plain.into()),
            None => {
                Err(cx.authentication_failed("the object was altered, or belongs to another block or volume"))
            }
        }
    }
}

/// Plaintext bytes per chunk of [`ChunkedXChaChaCodec`].
pub(crate) const CHUNK_SIZE: usize = 64 << 10;
/// Object metadata holding a chunked object's base nonce (lowercase hex).
pub const META_NONCE: &str = "s3block-nonce";

/// The native encryption codec in 64 KiB chunks, keyed for one volume.
///
/// The plaintext (the block, or the compressed block) is cut in
/// [`CHUNK_SIZE`](Self::CHUNK_SIZE) chunks, the last one shorter when it does not divide
/// evenly (an empty plaintext is one empty chunk). The object is, for each
/// chunk i, `ciphertext_i || tag_i (16 bytes)`, with
/// `Content-Encoding: ..., encrypt-XChaCha20-Poly1305-64K`. Each write draws
/// a fresh random 24-byte base nonce, stored in the object's metadata
/// [`META_NONCE`]; chunk i's nonce is the base nonce with its last four
/// bytes XORed with i (big endian). Chunk i's associated data is
/// `"s3block-chunk\0" || volume id || "\0" || block number || i || chunk count`
/// (each a big-endian u32), so a chunk moved within the object, a dropped or
/// added chunk, or an object moved to another block or volume fails
/// authentication.
///
/// An uncompressed block's chunk i sits at `i * (CHUNK_SIZE + 16)` in its
/// object, so a part of the block can be read and authenticated from a
/// ranged GET of the chunks it falls in (see [`open_chunks`](Self::open_chunks)).
#[derive(Clone)]
pub struct ChunkedXChaChaCodec {
    cipher: XChaCha20Poly1305,
    volume_id: String,
}

impl fmt::Debug for ChunkedXChaChaCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkedXChaChaCodec").field("volume_id", &self.volume_id).finish_non_exhaustive()
    }
}

impl ChunkedXChaChaCodec {
    /// The `Content-Encoding` token.
    pub const NAME: &'static str = "encrypt-XChaCha20-Poly1305-64K";
    /// Plaintext bytes per chunk: 64 KiB.
    pub const CHUNK_SIZE: usize = CHUNK_SIZE;
    /// Bytes a sealed chunk takes in the object: its plaintext and its tag.
    pub const SEALED_CHUNK: usize = CHUNK_SIZE + TAG_LEN;

    /// A codec with the 256-bit `key` for the volume `volume_id`.
    pub fn new(key: &[u8; 32], volume_id: &str) -> Self {
        ChunkedXChaChaCodec { cipher: XChaCha20Poly1305::new(key.into()), volume_id: volume_id.to_owned() }
    }

    /// How many chunks a plaintext of `len` bytes is cut in (at least one).
    pub fn chunk_count(len: usize) -> usize {
        len.div_ceil(CHUNK_SIZE).max(1)
    }

    /// The object size of a plaintext of `len` bytes.
    pub fn sealed_len(len: usize) -> usize {
        len + Self::chunk_count(len) * TAG_LEN
    }

    fn chunk_nonce(base: &[u8; NONCE_LEN], index: u32) -> XNonce {
        let mut nonce = *base;
        for (n, i) in nonce[NONCE_LEN - 4..].iter_mut().zip(index.to_be_bytes()) {
            *n ^= i;
        }
        XNonce::from(nonce)
    }

    fn aad(&self, block: BlockId, index: u32, count: u32) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + self.volume_id.len());
        aad.extend_from_slice(b"s3block-chunk\0");
        aad.extend_from_slice(self.volume_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&block.0.to_be_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        aad.extend_from_slice(&count.to_be_bytes());
        aad
    }

    /// The base nonce of an object from its metadata; a corrupt-block error
    /// naming [`META_NONCE`] when it is missing or not 24 bytes of hex.
    pub fn nonce_from_meta(cx: &CodecContext<'_>, meta: &CodecMeta) -> Result<[u8; NONCE_LEN]> {
        let text = meta
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(META_NONCE))
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                cx.corrupt(format!(
                    "authentication failed: the object has no {META_NONCE} metadata, which an {} object needs",
                    Self::NAME
                ))
            })?;
        let mut nonce = [0u8; NONCE_LEN];
        match hex::decode(text.trim()) {
            Ok(bytes) if bytes.len() == NONCE_LEN => {
                nonce.copy_from_slice(&bytes);
                Ok(nonce)
            }
            _ => Err(cx.corrupt(format!(
                "authentication failed: its {META_NONCE} metadata {text:?} is not {NONCE_LEN} bytes of hex"
            ))),
        }
    }

    fn failed(cx: &CodecContext<'_>) -> s3block_core::Error {
        cx.authentication_failed("the object was altered, cut short, or belongs to another block or volume")
    }

    /// Authenticates and decrypts a run of consecutive sealed chunks of an
    /// object: `sealed` holds chunks `first..` (each `ciphertext || tag`, all
    /// but the object's last [`CHUNK_SIZE`](Self::CHUNK_SIZE) + 16 bytes), `count` is how many
    /// chunks the whole object has, `nonce` its base nonce. Returns the
    /// plaintext of those chunks, or a corrupt-block error when any of them
    /// does not authenticate.
    pub fn open_chunks(
        &self,
        cx: &CodecContext<'_>,
        nonce: &[u8; NONCE_LEN],
        first: u32,
        count: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let mut plain = Vec::with_capacity(sealed.len());
        let mut index = first;
        for chunk in sealed.chunks(Self::SEALED_CHUNK) {
            let last = chunk.len() < Self::SEALED_CHUNK;
            if index >= count || chunk.len() < TAG_LEN || (last && index + 1 != count) {
                return Err(Self::failed(cx));
            }
            let aad = self.aad(cx.block, index, count);
            let opened = self
                .cipher
                .decrypt(&Self::chunk_nonce(nonce, index), Payload { msg: chunk, aad: &aad })
                .map_err(|_| Self::failed(cx))?;
            plain.extend_from_slice(&opened);
            index += 1;
        }
        if index == first {
            return Err(Self::failed(cx));
        }
        Ok(plain)
    }
}

impl Codec for ChunkedXChaChaCodec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn encode(&self, cx: &CodecContext<'_>, data: Bytes, meta: &mut CodecMeta) -> Result<Bytes> {
        let count = u32::try_from(Self::chunk_count(data.len()))
            .map_err(|_| cx.corrupt("encryption failed: too many chunks"))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(Self::sealed_len(data.len()));
        let mut chunks: Vec<&[u8]> = data.chunks(CHUNK_SIZE).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for (index, chunk) in (0u32..).zip(chunks) {
            let aad = self.aad(cx.block, index, count);
            let sealed = self
                .cipher
                .encrypt(&Self::chunk_nonce(&nonce, index), Payload { msg: chunk, aad: &aad })
                .map_err(|_| cx.corrupt("encryption failed"))?;
            out.extend_from_slice(&sealed);
        }
        meta.push((META_NONCE.to_owned(), hex::encode(nonce)));
        Ok(out.into())
    }

    fn decode(&self, cx: &CodecContext<'_>, data: Bytes, meta: &CodecMeta) -> Result<Bytes> {
        let nonce = Self::nonce_from_meta(cx, meta)?;
        let count = data.len().div_ceil(Self::SEALED_CHUNK).max(1);
        let count = u32::try_from(count).map_err(|_| Self::failed(cx))?;
        self.open_chunks(cx, &nonce, 0, count, &data).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecChain, Deflate};
    use s3block_core::Error;
    use std::sync::Arc;

    fn cx(block: u32) -> CodecContext<'static> {
        CodecContext { block: BlockId(block), key: "v/00000007", block_size: 4096 }
    }

    fn block() -> Bytes {
        let mut b = vec![0u8; 4096];
        b[..13].copy_from_slice(b"hello, s3blk!");
        b[4000] = 9;
        Bytes::from(b)
    }

    #[test]
    fn round_trip_compressed_and_not() {
        let codec = Arc::new(XChaChaCodec::new(&[7u8; 32], "vol-a"));
        for chain in [
            CodecChain::new().with(codec.clone()),
            CodecChain::new().with(Arc::new(Deflate::new(6).expect("level"))).with(codec.clone()),
        ] {
            let (obj, enc, _) = chain.encode(&cx(7), block()).expect("encode");
            assert!(!obj.windows(13).any(|w| w == b"hello, s3blk!"), "plaintext visible");
            let back = chain.decode(&cx(7), obj.clone(), enc.as_deref(), &vec![]).expect("decode");
            assert_eq!(back, block());
            // A second write of the same data gets another nonce.
            let (obj2, _, _) = chain.encode(&cx(7), block()).expect("encode");
            assert_ne!(obj[..NONCE_LEN], obj2[..NONCE_LEN]);
        }
        let chain = CodecChain::new().with(Arc::new(Deflate::new(6).expect("level"))).with(codec);
        let (obj, enc, _) = chain.encode(&cx(7), block()).expect("encode");
        assert_eq!(enc.as_deref(), Some("deflate, encrypt-XChaCha20-Poly1305"));
        assert!(obj.len() < 200, "compressed before encryption: {}", obj.len());
    }

    #[test]
    fn tamper_other_block_other_volume_and_key_fail() {
        let codec = Arc::new(XChaChaCodec::new(&[7u8; 32], "vol-a"));
        let chain = CodecChain::new().with(codec);
        let (obj, enc, _) = chain.encode(&cx(7), block()).expect("encode");
        let auth_failed = |err: Error| {
            assert!(
                matches!(&err, Error::Corrupt { key, reason, .. } if key == "v/00000007" && reason.contains("authentication failed")),
                "{err}"
            );
        };
        for i in [0, NONCE_LEN, obj.len() / 2, obj.len() - 1] {
            let mut bad = obj.to_vec();
            bad[i] ^= 0x40;
            auth_failed(chain.decode(&cx(7), bad.into(), enc.as_deref(), &vec![]).unwrap_err());
        }
        auth_failed(chain.decode(&cx(8), obj.clone(), enc.as_deref(), &vec![]).unwrap_err());
        auth_failed(chain.decode(&cx(7), obj.slice(..20), enc.as_deref(), &vec![]).unwrap_err());
        let other_volume = CodecChain::new().with(Arc::new(XChaChaCodec::new(&[7u8; 32], "vol-b")));
        auth_failed(other_volume.decode(&cx(7), obj.clone(), enc.as_deref(), &vec![]).unwrap_err());
        let other_key = CodecChain::new().with(Arc::new(XChaChaCodec::new(&[8u8; 32], "vol-a")));
        auth_failed(other_key.decode(&cx(7), obj, enc.as_deref(), &vec![]).unwrap_err());
    }

    fn chunked() -> Arc<ChunkedXChaChaCodec> {
        Arc::new(ChunkedXChaChaCodec::new(&[7u8; 32], "vol-a"))
    }

    /// Block `block` of a volume with 1 MiB blocks (16 chunks) plus a little,
    /// so the last chunk is short.
    fn big_cx(block: u32) -> CodecContext<'static> {
        CodecContext { block: BlockId(block), key: "v/00000007", block_size: BIG }
    }

    const BIG: usize = (1 << 20) + 1000;

    fn big_block() -> Bytes {
        (0..BIG).map(|i| (i * 7 + i / 4096) as u8).collect::<Vec<u8>>().into()
    }

    fn assert_auth_failed(err: &Error) {
        assert!(
            matches!(err, Error::Corrupt { block, key, reason } if key == "v/00000007"
                && reason.contains("authentication failed") && err.to_string().contains(&block.to_string())),
            "{err}"
        );
    }

    #[test]
    fn chunked_round_trip_compressed_and_not() {
        let codec = chunked();
        let chain = CodecChain::new().with_chunked(codec.clone());
        let (obj, enc, meta) = chain.encode(&big_cx(7), big_block()).expect("encode");
        assert_eq!(enc.as_deref(), Some(ChunkedXChaChaCodec::NAME));
        assert_eq!(obj.len(), BIG + 17 * TAG_LEN, "17 chunks, each with its tag, no nonce in the body");
        assert_eq!(obj.len(), ChunkedXChaChaCodec::sealed_len(BIG));
        let nonce = &meta.iter().find(|(k, _)| k == META_NONCE).expect("nonce metadata").1;
        assert_eq!(nonce.len(), 2 * NONCE_LEN);
        assert_eq!(nonce, &nonce.to_lowercase());
        let plain = big_block();
        assert!(!obj.windows(32).any(|w| w == &plain[70_000..70_032]), "plaintext visible");
        assert_eq!(
            chain.decode(&big_cx(7), obj.clone(), enc.as_deref(), &meta).expect("decode"),
            big_block()
        );
        assert!(chain.ranged_chunked().is_some());
        // A second write of the same data gets another nonce.
        let (obj2, _, meta2) = chain.encode(&big_cx(7), big_block()).expect("encode");
        assert_ne!(meta, meta2);
        assert_ne!(obj[..64], obj2[..64]);

        // Compressed first: one chunk of compressed data, and no ranged reads.
        let deflate =
            CodecChain::new().with(Arc::new(Deflate::new(6).expect("level"))).with_chunked(codec.clone());
        assert!(deflate.ranged_chunked().is_none());
        let (obj, enc, meta) = deflate.encode(&cx(7), block()).expect("encode");
        assert_eq!(enc.as_deref(), Some("deflate, encrypt-XChaCha20-Poly1305-64K"));
        assert!(obj.len() < 200, "compressed before encryption: {}", obj.len());
        assert_eq!(deflate.decode(&cx(7), obj.clone(), enc.as_deref(), &meta).expect("decode"), block());
        // A chain that writes whole objects reads it when it knows the token.
        let whole =
            CodecChain::new().with(Arc::new(XChaChaCodec::new(&[7u8; 32], "vol-a"))).with_decoder(codec);
        assert_eq!(whole.decode(&cx(7), obj, enc.as_deref(), &meta).expect("decode"), block());
    }

    #[test]
    fn chunks_tampered_swapped_dropped_or_moved_fail_authentication() {
        let chain = CodecChain::new().with_chunked(chunked());
        let (obj, enc, meta) = chain.encode(&big_cx(7), big_block()).expect("encode");
        let decode = |c: &CodecChain, block: u32, obj: Vec<u8>, meta: &CodecMeta| {
            c.decode(&big_cx(block), obj.into(), enc.as_deref(), meta)
        };
        let sealed = ChunkedXChaChaCodec::SEALED_CHUNK;
        // One flipped bit in each chunk, in its ciphertext and in its tag.
        for chunk in 0..17 {
            for at in [chunk * sealed, (chunk * sealed + sealed).min(obj.len()) - 1] {
                let mut bad = obj.to_vec();
                bad[at] ^= 0x40;
                assert_auth_failed(&decode(&chain, 7, bad, &meta).unwrap_err());
            }
        }
        // Two chunks swapped.
        let mut swapped = obj.to_vec();
        let (a, b) = swapped.split_at_mut(3 * sealed);
        a[sealed..2 * sealed].swap_with_slice(&mut b[..sealed]);
        assert_auth_failed(&decode(&chain, 7, swapped, &meta).unwrap_err());
        // Truncated: at a chunk boundary (the last chunk dropped), inside a
        // chunk, to under a tag, to nothing.
        for len in [16 * sealed, 16 * sealed + 10, 2 * sealed + 100, 10, 0] {
            assert_auth_failed(&decode(&chain, 7, obj[..len].to_vec(), &meta).unwrap_err());
        }
        // A chunk dropped from the middle.
        let dropped = [&obj[..sealed], &obj[2 * sealed..]].concat();
        assert_auth_failed(&decode(&chain, 7, dropped, &meta).unwrap_err());
        // Another block, another volume, another key.
        assert_auth_failed(&decode(&chain, 8, obj.to_vec(), &meta).unwrap_err());
        let other_volume =
            CodecChain::new().with_chunked(Arc::new(ChunkedXChaChaCodec::new(&[7u8; 32], "vol-b")));
        assert_auth_failed(&decode(&other_volume, 7, obj.to_vec(), &meta).unwrap_err());
        let other_key =
            CodecChain::new().with_chunked(Arc::new(ChunkedXChaChaCodec::new(&[8u8; 32], "vol-a")));
        assert_auth_failed(&decode(&other_key, 7, obj.to_vec(), &meta).unwrap_err());
        // The nonce metadata missing, not hex, the wrong length, or another.
        let err = decode(&chain, 7, obj.to_vec(), &vec![]).unwrap_err();
        assert_auth_failed(&err);
        assert!(err.to_string().contains(META_NONCE), "{err}");
        for bad in ["zz".repeat(NONCE_LEN), "00".repeat(NONCE_LEN - 1), "00".repeat(NONCE_LEN)] {
            let err =
                decode(&chain, 7, obj.to_vec(), &vec![(META_NONCE.to_owned(), bad.clone())]).unwrap_err();
            assert_auth_failed(&err);
            if bad.len() != 2 * NONCE_LEN || bad.starts_with('z') {
                assert!(err.to_string().contains(META_NONCE), "{bad}: {err}");
            }
        }
        // A whole-object codec's object under the chunked token fails too.
        let (whole, _, _) = CodecChain::new()
            .with(Arc::new(XChaChaCodec::new(&[7u8; 32], "vol-a")))
            .encode(&cx(7), block())
            .expect("encode");
        let nonce = vec![(META_NONCE.to_owned(), hex::encode(&whole[..NONCE_LEN]))];
        assert_auth_failed(&chain.decode(&cx(7), whole, enc.as_deref(), &nonce).unwrap_err());
    }

    #[test]
    fn a_run_of_chunks_opens_on_its_own_and_only_in_its_place() {
        let codec = chunked();
        let chain = CodecChain::new().with_chunked(codec.clone());
        let (obj, _, meta) = chain.encode(&big_cx(7), big_block()).expect("encode");
        let cx = big_cx(7);
        let nonce = ChunkedXChaChaCodec::nonce_from_meta(&cx, &meta).expect("nonce");
        let sealed = ChunkedXChaChaCodec::SEALED_CHUNK;
        let plain =
            codec.open_chunks(&cx, &nonce, 3, 17, &obj[3 * sealed..5 * sealed]).expect("chunks 3 and 4");
        assert_eq!(&plain[..], &big_block()[3 * CHUNK_SIZE..5 * CHUNK_SIZE]);
        let tail = codec.open_chunks(&cx, &nonce, 16, 17, &obj[16 * sealed..]).expect("the short last chunk");
        assert_eq!(&tail[..], &big_block()[16 * CHUNK_SIZE..]);
        // The same bytes taken for other chunks, or the object for a shorter one.
        assert_auth_failed(&codec.open_chunks(&cx, &nonce, 4, 17, &obj[3 * sealed..5 * sealed]).unwrap_err());
        assert_auth_failed(&codec.open_chunks(&cx, &nonce, 3, 16, &obj[3 * sealed..5 * sealed]).unwrap_err());
        assert_auth_failed(
            &codec.open_chunks(&cx, &nonce, 3, 17, &obj[3 * sealed..5 * sealed - 1]).unwrap_err(),
        );
        assert_auth_failed(&codec.open_chunks(&cx, &nonce, 17, 17, &obj[16 * sealed..]).unwrap_err());
        assert_auth_failed(&codec.open_chunks(&cx, &nonce, 3, 17, &[]).unwrap_err());
    }
}
