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
                tracing::error!(
                    block = cx.block.0,
                    key = cx.key,
                    "block {} (key {}): authentication failed: the object was altered, or belongs to another block or volume",
                    cx.block,
                    cx.key
                );
                Err(cx.corrupt(
                    "authentication failed: the object was altered, or belongs to another block or volume",
                ))
            }
        }
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
}
