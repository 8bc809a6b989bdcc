//! s3backer's block encryption (`--encrypt`, cipher AES-128-CBC), to read
//! and write volumes that s3backer 1.5 and 2.x made.
//!
//! What s3backer does, checked against its source and against objects
//! s3backer 1.5.4 wrote (the fixtures in `tests/fixtures/`):
//!
//! - key = PBKDF2-HMAC-SHA1(password, salt = `"{bucket}/{prefix}"`, 5000
//!   iterations, 16 bytes);
//! - IV key = PBKDF2-HMAC-SHA1(key, salt = key, 5000 iterations, 16 bytes);
//! - IV of a block = AES-128-CBC under the IV key, with the IV key also as
//!   the IV and no padding, of a 16-byte buffer holding the ASCII `%08x` of
//!   the block number followed by zero bytes;
//! - body = AES-128-CBC under the key with that IV and PKCS#7 padding, of
//!   the (compressed, when `deflate` is also named) block;
//! - `x-amz-meta-s3backer-hmac` = HMAC-SHA1 under the key of the ASCII
//!   `%08x` block number, then the cipher name `AES-128-CBC`, then the
//!   encrypted body; written as 40 lowercase hex digits inside double
//!   quotes;
//! - `Content-Encoding: deflate, encrypt-AES-128-CBC` (s3backer always
//!   compresses when it encrypts; s3block may write `encrypt-AES-128-CBC`
//!   alone, which s3backer reads too).
//!
//! The HMAC binds the block number, so a block copied onto another key is
//! refused; nothing binds the volume or the version. s3backer's
//! `--keyLength` override is not supported (the default, 16, is).

use std::fmt;

use aes::Aes128;
use bytes::Bytes;
use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use s3block_core::{BlockId, Result};
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::codec::{Codec, CodecContext, CodecMeta};
use crate::password::Password;

type HmacSha1 = Hmac<Sha1>;

/// PBKDF2 iterations s3backer uses for both keys.
pub const S3BACKER_PBKDF2_ITERATIONS: u32 = 5000;
/// The metadata name of s3backer's HMAC (`x-amz-meta-s3backer-hmac`).
pub const META_HMAC: &str = "s3backer-hmac";
/// The cipher name s3backer writes and signs.
pub const S3BACKER_CIPHER: &str = "AES-128-CBC";

/// s3backer's AES-128-CBC + HMAC-SHA1 codec, keyed for one bucket and prefix.
#[derive(Clone)]
pub struct S3backerCodec {
    key: Zeroizing<[u8; 16]>,
    ivkey: Zeroizing<[u8; 16]>,
}

impl fmt::Debug for S3backerCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3backerCodec(..)")
    }
}

impl S3backerCodec {
    /// The `Content-Encoding` token.
    pub const NAME: &'static str = "encrypt-AES-128-CBC";
    /// Bytes of a [`key_check`](Self::key_check) (an HMAC-SHA1).
    pub(crate) const KEY_CHECK_LEN: usize = 20;

    /// Derives the keys as s3backer does from `password`, the bucket name and
    /// the key prefix (as given to s3backer's `--prefix`, e.g. `disk1/`).
    pub fn new(password: &Password, bucket: &str, prefix: &str) -> Self {
        let salt = format!("{bucket}/{prefix}");
        let mut key = Zeroizing::new([0u8; 16]);
        pbkdf2::pbkdf2_hmac::<Sha1>(
            password.as_bytes(),
            salt.as_bytes(),
            S3BACKER_PBKDF2_ITERATIONS,
            &mut *key,
        );
        let mut ivkey = Zeroizing::new([0u8; 16]);
        pbkdf2::pbkdf2_hmac::<Sha1>(&*key, &*key, S3BACKER_PBKDF2_ITERATIONS, &mut *ivkey);
        S3backerCodec { key, ivkey }
    }

    fn iv(&self, block: BlockId) -> [u8; 16] {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(format!("{:08x}", block.0).as_bytes());
        let enc = cbc::Encryptor::<Aes128>::new((&*self.ivkey).into(), (&*self.ivkey).into());
        let out = enc.encrypt_padded_vec_mut::<NoPadding>(&buf);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&out[..16]);
        iv
    }

    fn mac(&self, block: BlockId) -> HmacSha1 {
        let mut mac = <HmacSha1 as Mac>::new_from_slice(&*self.key).expect("HMAC accepts keys of any length");
        mac.update(format!("{:08x}", block.0).as_bytes());
        mac.update(S3BACKER_CIPHER.as_bytes());
        mac
    }

    /// A value that shows whether a password gives this key (for s3block's
    /// descriptor; s3backer has none): HMAC-SHA1 of a fixed text, hex.
    pub fn key_check(&self) -> String {
        hex::encode(self.key_check_mac().finalize().into_bytes())
    }

    /// Whether `check` (hex, in either case) is this key's [`key_check`](Self::key_check),
    /// compared in constant time.
    pub(crate) fn verify_key_check(&self, check: &str) -> bool {
        hex::decode(check).is_ok_and(|bytes| self.key_check_mac().verify_slice(&bytes).is_ok())
    }

    fn key_check_mac(&self) -> HmacSha1 {
        let mut mac = <HmacSha1 as Mac>::new_from_slice(&*self.key).expect("HMAC accepts keys of any length");
        mac.update(b"s3block key check");
        mac
    }

    /// Whether the HMAC in `meta` signs `body` as block `block`; `None` when
    /// there is no readable HMAC.
    pub(crate) fn verify(&self, block: BlockId, body: &[u8], meta: &CodecMeta) -> Option<bool> {
        let expected = parse_hmac(meta)?;
        let mut mac = self.mac(block);
        mac.update(body);
        Some(mac.verify_slice(&expected).is_ok())
    }
}

/// The 20 bytes of the `s3backer-hmac` metadata (quotes and spaces allowed).
fn parse_hmac(meta: &CodecMeta) -> Option<Vec<u8>> {
    let (_, v) = meta.iter().find(|(k, _)| k.eq_ignore_ascii_case(META_HMAC))?;
    let text = v.trim().trim_matches('"');
    let bytes = hex::decode(text).ok()?;
    (bytes.len() == 20).then_some(bytes)
}

impl Codec for S3backerCodec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn encode(&self, cx: &CodecContext<'_>, data: Bytes, meta: &mut CodecMeta) -> Result<Bytes> {
        let iv = self.iv(cx.block);
        let body = cbc::Encryptor::<Aes128>::new((&*self.key).into(), (&iv).into())
            .encrypt_padded_vec_mut::<Pkcs7>(&data);
        let mut mac = self.mac(cx.block);
        mac.update(&body);
        let sig = hex::encode(mac.finalize().into_bytes());
        meta.push((META_HMAC.to_owned(), format!("\"{sig}\"")));
        Ok(body.into())
    }

    fn decode(&self, cx: &CodecContext<'_>, data: Bytes, meta: &CodecMeta) -> Result<Bytes> {
        match self.verify(cx.block, &data, meta) {
            None => {
                return Err(cx.corrupt(format!(
                    "encrypted with {S3BACKER_CIPHER}, but its {META_HMAC} signature is missing or unreadable"
                )));
            }
            Some(false) => {
                return Err(cx.authentication_failed(
                    "the s3backer-hmac signature does not match (wrong password, wrong bucket name or prefix, \
                     or the object was altered or belongs to another block)",
                ));
            }
            Some(true) => {}
        }
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return Err(cx.corrupt(format!(
                "authentication passed but the body is {} bytes, not a multiple of 16 (AES-128-CBC's block) \
                 and at least one block",
                data.len()
            )));
        }
        let iv = self.iv(cx.block);
        cbc::Decryptor::<Aes128>::new((&*self.key).into(), (&iv).into())
            .decrypt_padded_vec_mut::<Pkcs7>(&data)
            .map(Bytes::from)
            .map_err(|_| cx.corrupt("authentication passed but the AES-128-CBC padding is wrong"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecChain, Deflate};
    use s3block_core::Error;
    use std::sync::Arc;

    fn cx(block: u32) -> CodecContext<'static> {
        CodecContext { block: BlockId(block), key: "p/00000002", block_size: 4096 }
    }

    #[test]
    fn round_trip_and_refusals() {
        let codec = Arc::new(S3backerCodec::new(&Password::new("pw"), "bucket", "p/"));
        let mut block = vec![0u8; 4096];
        block[1] = 1;
        block[4095] = 2;
        for chain in [
            CodecChain::new().with(codec.clone()),
            CodecChain::new().with(Arc::new(Deflate::new(6).expect("level"))).with(codec.clone()),
        ] {
            let (obj, enc, meta) = chain.encode(&cx(2), Bytes::from(block.clone())).expect("encode");
            assert!(enc.as_deref().is_some_and(|e| e.ends_with("encrypt-AES-128-CBC")), "{enc:?}");
            assert_eq!(obj.len() % 16, 0);
            let (k, v) = &meta[0];
            assert_eq!(k, META_HMAC);
            assert!(v.len() == 42 && v.starts_with('"') && v.ends_with('"'), "{v}");
            let back = chain.decode(&cx(2), obj.clone(), enc.as_deref(), &meta).expect("decode");
            assert_eq!(&back[..], &block[..]);

            let corrupt = |err: Error, what: &str| {
                assert!(
                    matches!(&err, Error::Corrupt { key, reason, .. } if key == "p/00000002" && reason.contains(what)),
                    "{err}"
                )
            };
            let mut bad = obj.to_vec();
            bad[5] ^= 1;
            corrupt(
                chain.decode(&cx(2), bad.into(), enc.as_deref(), &meta).unwrap_err(),
                "authentication failed",
            );
            corrupt(
                chain.decode(&cx(3), obj.clone(), enc.as_deref(), &meta).unwrap_err(),
                "authentication failed",
            );
            corrupt(chain.decode(&cx(2), obj.clone(), enc.as_deref(), &vec![]).unwrap_err(), "missing");
            let other =
                CodecChain::new().with(Arc::new(S3backerCodec::new(&Password::new("pw"), "bucket", "q/")));
            corrupt(other.decode(&cx(2), obj, enc.as_deref(), &meta).unwrap_err(), "wrong password");
        }
    }

    #[test]
    fn key_check_depends_on_password() {
        let a = S3backerCodec::new(&Password::new("pw"), "b", "p/").key_check();
        assert_eq!(a, S3backerCodec::new(&Password::new("pw"), "b", "p/").key_check());
        assert_ne!(a, S3backerCodec::new(&Password::new("pw2"), "b", "p/").key_check());
        assert_eq!(a.len(), 40);
    }
}
