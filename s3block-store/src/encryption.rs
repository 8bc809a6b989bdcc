//! Encryption settings of a volume: the scheme, the key derivation, and the
//! key check that makes a wrong password fail at open.
//!
//! Two schemes:
//!
//! - [`EncryptionScheme::XChaCha20Poly1305`], the default for `--encrypt`:
//!   key = Argon2id(password, random 16-byte salt) with the parameters in
//!   the volume descriptor ([`KdfParams::default`]: 19 MiB, 2 passes, 1
//!   lane, OWASP's minimum for Argon2id, which a 128 MB host can afford
//!   once per open); blocks as described in [`XChaChaCodec`].
//! - [`EncryptionScheme::Aes128Cbc`] (`--encrypt=aes-128-cbc`): s3backer's,
//!   see [`S3backerCodec`]; the key depends on the bucket name and prefix.
//!
//! The descriptor's `encryption` field holds [`EncryptionParams`] as JSON,
//! with a key check: for the native scheme an XChaCha20-Poly1305 encryption
//! of a fixed text under the key, bound to the volume id; for the s3backer
//! scheme an HMAC-SHA1 of a fixed text. A password that does not reproduce
//! it is refused at open with [`Error::WrongPassword`].
//!
//! s3backer volumes have no descriptor, so no key check: opening one checks
//! the password against block 0's `s3backer-hmac` when block 0 exists, and
//! otherwise the first block read with a wrong password fails with
//! "authentication failed".

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use rand::RngCore;
use s3block_core::{Error, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::codec::{Codec, CodecChain, Compression};
use crate::native::{CHUNK_SIZE, ChunkedXChaChaCodec, NONCE_LEN, TAG_LEN, XChaChaCodec, open, seal};
use crate::password::Password;
use crate::s3backer_crypto::S3backerCodec;

/// Most Argon2id work a descriptor may ask for, memory times passes, in KiB.
const MAX_KDF_WORK_KIB: u64 = 4 << 20;

/// The text the native key check encrypts.
const KEY_CHECK_TEXT: &[u8] = b"s3block key check v1";

/// Which encryption a volume uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EncryptionScheme {
    /// XChaCha20-Poly1305 with an Argon2id key (s3block's default).
    #[serde(rename = "xchacha20poly1305")]
    XChaCha20Poly1305,
    /// s3backer's AES-128-CBC with HMAC-SHA1 and a PBKDF2 key.
    #[serde(rename = "aes-128-cbc")]
    Aes128Cbc,
}

impl EncryptionScheme {
    /// Parses an `--encrypt=` value: `xchacha20poly1305` (also `xchacha20-poly1305`,
    /// `native`, `default`) or `aes-128-cbc` (any case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "default" | "native" | "xchacha20poly1305" | "xchacha20-poly1305" => {
                Ok(EncryptionScheme::XChaCha20Poly1305)
            }
            "aes-128-cbc" | "aes128cbc" => Ok(EncryptionScheme::Aes128Cbc),
            other => Err(Error::Config(format!(
                "unknown encryption {other:?}: use xchacha20poly1305 (the default) or aes-128-cbc (s3backer's)"
            ))),
        }
    }

    /// Its name in options and the descriptor.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionScheme::XChaCha20Poly1305 => "xchacha20poly1305",
            EncryptionScheme::Aes128Cbc => "aes-128-cbc",
        }
    }
}

impl std::fmt::Display for EncryptionScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Argon2id parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Salt, hex.
    pub salt: String,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane) with a fresh
    /// random salt: about a tenth of a second, and 19 MiB for that moment.
    pub fn new_default() -> Self {
        Self::with_cost(19 * 1024, 2, 1)
    }

    /// Given costs with a fresh random salt (small costs are for tests only).
    pub fn with_cost(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        KdfParams {
            algorithm: "argon2id".into(),
            salt: hex::encode(salt),
            memory_kib,
            iterations,
            parallelism,
        }
    }

    /// The 256-bit key for `password`.
    pub fn derive(&self, password: &Password) -> Result<Zeroizing<[u8; 32]>> {
        let bad = |reason: String| Error::Config(format!("invalid key derivation parameters: {reason}"));
        let (salt, params) = self.checked().map_err(bad)?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), &salt, &mut *key)
            .map_err(|e| bad(e.to_string()))?;
        Ok(key)
    }

    /// The salt and the Argon2 parameters, checked without deriving a key;
    /// the error says what is wrong.
    fn checked(&self) -> std::result::Result<(Vec<u8>, Params), String> {
        if self.algorithm != "argon2id" {
            return Err(format!("algorithm {:?} is not argon2id", self.algorithm));
        }
        let salt = hex::decode(&self.salt).ok().ok_or_else(|| format!("salt {:?} is not hex", self.salt))?;
        if salt.len() < argon2::MIN_SALT_LEN {
            return Err(format!("a salt of {} bytes is shorter than {}", salt.len(), argon2::MIN_SALT_LEN));
        }
        // Bound what a descriptor can make s3block allocate: 1 GiB.
        if self.memory_kib > 1024 * 1024 {
            return Err(format!("memory {} KiB is more than 1 GiB", self.memory_kib));
        }
        // And the time it spends: passes over that memory, at most 4 GiB in
        // all (a hundred times the default's 38 MiB, seconds at worst).
        let work = u64::from(self.memory_kib) * u64::from(self.iterations);
        if work > MAX_KDF_WORK_KIB {
            return Err(format!(
                "{} passes over {} KiB is more than the 4 GiB of work s3block does for a key",
                self.iterations, self.memory_kib
            ));
        }
        // Checked before Params::new, which multiplies the lanes by 8 in a
        // u32 (and panics on the overflow in a debug build).
        if !(Params::MIN_P_COST..=Params::MAX_P_COST).contains(&self.parallelism) {
            return Err(format!(
                "{} lanes is not {} to {}",
                self.parallelism,
                Params::MIN_P_COST,
                Params::MAX_P_COST
            ));
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map(|params| (salt, params))
            .map_err(|e| e.to_string())
    }
}

/// The `encryption` field of the volume descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme")]
#[non_exhaustive]
pub enum EncryptionParams {
    /// s3block's scheme.
    #[serde(rename = "xchacha20poly1305")]
    XChaCha20Poly1305 {
        /// How the key comes from the password.
        kdf: KdfParams,
        /// Nonce, ciphertext and tag of the key-check text, hex.
        key_check: String,
        /// Set (to 65536) when blocks are written in authenticated 64 KiB
        /// chunks ([`ChunkedXChaChaCodec`], descriptor format 2); absent
        /// from volumes that write whole-object [`XChaChaCodec`] objects.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunk_size: Option<u32>,
    },
    /// s3backer's scheme (key from the password, bucket and prefix).
    #[serde(rename = "aes-128-cbc")]
    Aes128Cbc {
        /// HMAC-SHA1 of the key-check text under the key, hex.
        key_check: String,
    },
}

impl EncryptionParams {
    /// Checks parameters read from a descriptor, without a password: the
    /// key derivation's, and that the key check is hex of the length it
    /// must have (else a damaged one would read as a wrong password).
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let (key_check, len) = match self {
            EncryptionParams::XChaCha20Poly1305 { kdf, key_check, chunk_size } => {
                kdf.checked().map_err(|r| format!("invalid key derivation parameters: {r}"))?;
                if let Some(size) = chunk_size
                    && *size as usize != CHUNK_SIZE
                {
                    return Err(format!(
                        "encryption chunks of {size} bytes are not supported (this s3block writes and reads {CHUNK_SIZE})"
                    ));
                }
                (key_check, NONCE_LEN + KEY_CHECK_TEXT.len() + TAG_LEN)
            }
            EncryptionParams::Aes128Cbc { key_check } => (key_check, S3backerCodec::KEY_CHECK_LEN),
        };
        match hex::decode(key_check) {
            Ok(bytes) if bytes.len() == len => Ok(()),
            Ok(bytes) => Err(format!("the key check is {} bytes, not {len}", bytes.len())),
            Err(_) => Err("the key check is not hex".into()),
        }
    }

    /// Whether blocks are written in authenticated chunks
    /// ([`ChunkedXChaChaCodec`]): the descriptor then has format 2.
    pub fn is_chunked(&self) -> bool {
        matches!(self, EncryptionParams::XChaCha20Poly1305 { chunk_size: Some(_), .. })
    }

    /// The scheme.
    pub fn scheme(&self) -> EncryptionScheme {
        match self {
            EncryptionParams::XChaCha20Poly1305 { .. } => EncryptionScheme::XChaCha20Poly1305,
            EncryptionParams::Aes128Cbc { .. } => EncryptionScheme::Aes128Cbc,
        }
    }
}

/// What a frontend gives to create or open an encrypted volume.
#[derive(Debug, Clone)]
pub struct EncryptionOptions {
    /// The scheme; `None` opens with whatever the volume has (the
    /// descriptor's, or s3backer's for a volume without one) and creates
    /// with the default.
    pub scheme: Option<EncryptionScheme>,
    /// The password.
    pub password: Password,
    /// The bucket name, part of the s3backer scheme's key (for a local
    /// directory or memory store, whatever name the volume was made with).
    pub bucket: String,
    /// Argon2id costs for a new native volume (`None`: [`KdfParams::new_default`]).
    pub kdf: Option<KdfParams>,
}

impl EncryptionOptions {
    /// Options with the default scheme and costs.
    pub fn new(password: Password, bucket: impl Into<String>) -> Self {
        EncryptionOptions { scheme: None, password, bucket: bucket.into(), kdf: None }
    }

    /// Sets the scheme.
    pub fn scheme(mut self, scheme: EncryptionScheme) -> Self {
        self.scheme = Some(scheme);
        self
    }
}

fn key_check_aad(volume_id: &str) -> Vec<u8> {
    [b"s3block-key-check\0".as_slice(), volume_id.as_bytes()].concat()
}

/// The encryption codecs of an unlocked volume.
#[derive(Debug, Clone)]
pub(crate) enum VolumeCipher {
    /// s3block's scheme: both object formats are read; new blocks are
    /// written in chunks when `chunked_writes` (descriptor format 2), else
    /// as whole objects (a format 1 volume).
    Native { whole: Arc<XChaChaCodec>, chunked: Arc<ChunkedXChaChaCodec>, chunked_writes: bool },
    /// Another scheme's codec, which writes and reads.
    Other(Arc<dyn Codec>),
}

impl VolumeCipher {
    fn native(key: &[u8; 32], volume_id: &str, chunked_writes: bool) -> Self {
        VolumeCipher::Native {
            whole: Arc::new(XChaChaCodec::new(key, volume_id)),
            chunked: Arc::new(ChunkedXChaChaCodec::new(key, volume_id)),
            chunked_writes,
        }
    }

    /// The codecs a volume writes with: `compression` (if any), then this
    /// encryption; every known encoding stays readable.
    pub(crate) fn chain(self, compression: Option<Compression>) -> Result<CodecChain> {
        match self {
            VolumeCipher::Native { whole, chunked, chunked_writes: true } => {
                Ok(volume_codecs(compression, None)?.with_chunked(chunked).with_decoder(whole))
            }
            VolumeCipher::Native { whole, chunked, chunked_writes: false } => {
                Ok(volume_codecs(compression, Some(whole))?.with_decoder(chunked))
            }
            VolumeCipher::Other(codec) => volume_codecs(compression, Some(codec)),
        }
    }
}

/// Sets up encryption for a new volume: its descriptor parameters and
/// codecs. A native volume writes its blocks in chunks.
pub(crate) fn new_encryption(
    opts: &EncryptionOptions,
    prefix: &str,
    volume_id: &str,
) -> Result<(EncryptionParams, VolumeCipher)> {
    match opts.scheme.unwrap_or(EncryptionScheme::XChaCha20Poly1305) {
        EncryptionScheme::XChaCha20Poly1305 => {
            let kdf = opts.kdf.clone().unwrap_or_else(KdfParams::new_default);
            let key = kdf.derive(&opts.password)?;
            let cipher = XChaCha20Poly1305::new((&*key).into());
            let check = seal(&cipher, KEY_CHECK_TEXT, &key_check_aad(volume_id))
                .ok_or_else(|| Error::Config("cannot make the key check".into()))?;
            let params = EncryptionParams::XChaCha20Poly1305 {
                kdf,
                key_check: hex::encode(&check),
                chunk_size: Some(CHUNK_SIZE as u32),
            };
            Ok((params, VolumeCipher::native(&key, volume_id, true)))
        }
        EncryptionScheme::Aes128Cbc => {
            let codec = S3backerCodec::new(&opts.password, &opts.bucket, prefix);
            Ok((
                EncryptionParams::Aes128Cbc { key_check: codec.key_check() },
                VolumeCipher::Other(Arc::new(codec)),
            ))
        }
    }
}

/// Checks the password against a descriptor's parameters and returns the codec.
/// `key` names the descriptor in errors.
pub(crate) fn unlock(
    params: &EncryptionParams,
    opts: &EncryptionOptions,
    prefix: &str,
    volume_id: &str,
    key: &str,
) -> Result<VolumeCipher> {
    if let Some(s) = opts.scheme
        && s != params.scheme()
    {
        return Err(Error::Mismatch {
            what: "encryption",
            stored: params.scheme().to_string(),
            requested: s.to_string(),
        });
    }
    let wrong = |detail: Option<String>| Error::WrongPassword { key: key.to_owned(), detail };
    match params {
        EncryptionParams::XChaCha20Poly1305 { kdf, key_check, chunk_size } => {
            let derived = kdf.derive(&opts.password)?;
            let sealed = hex::decode(key_check).ok().ok_or_else(|| Error::BadMetadata {
                key: key.to_owned(),
                reason: "the key check is not hex".into(),
            })?;
            let cipher = XChaCha20Poly1305::new((&*derived).into());
            match open(&cipher, &sealed, &key_check_aad(volume_id)) {
                Some(text) if text == KEY_CHECK_TEXT => {
                    Ok(VolumeCipher::native(&derived, volume_id, chunk_size.is_some()))
                }
                _ => Err(wrong(None)),
            }
        }
        EncryptionParams::Aes128Cbc { key_check } => {
            let codec = S3backerCodec::new(&opts.password, &opts.bucket, prefix);
            if codec.verify_key_check(key_check) {
                Ok(VolumeCipher::Other(Arc::new(codec)))
            } else {
                Err(wrong(Some(format!(
                    "or the bucket name {:?} is not the one the volume was made in (the s3backer scheme's key depends on it)",
                    opts.bucket
                ))))
            }
        }
    }
}

/// The codecs a volume writes with: `compression` (if any), then
/// `encryption` (if any). Every known encoding stays readable.
pub fn volume_codecs(
    compression: Option<Compression>,
    encryption: Option<Arc<dyn Codec>>,
) -> Result<CodecChain> {
    let mut chain = CodecChain::new();
    if let Some(compression) = compression {
        chain = chain.with(compression.codec()?);
    }
    if let Some(codec) = encryption {
        chain = chain.with(codec);
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pw: &str) -> EncryptionOptions {
        let mut o = EncryptionOptions::new(Password::new(pw), "bucket");
        o.kdf = Some(KdfParams::with_cost(64, 1, 1));
        o
    }

    #[test]
    fn native_key_check_refuses_wrong_password() {
        let (params, _) = new_encryption(&opts("right"), "p/", "vol1").expect("new");
        assert!(unlock(&params, &opts("right"), "p/", "vol1", "p/s3block-volume.json").is_ok());
        let err = unlock(&params, &opts("wrong"), "p/", "vol1", "p/s3block-volume.json").unwrap_err();
        assert!(matches!(err, Error::WrongPassword { .. }), "{err}");
        assert!(err.to_string().contains("wrong password"), "{err}");
        // The check is bound to the volume id.
        assert!(unlock(&params, &opts("right"), "p/", "vol2", "k").is_err());
        let err = unlock(&params, &opts("right").scheme(EncryptionScheme::Aes128Cbc), "p/", "vol1", "k")
            .unwrap_err();
        assert!(matches!(err, Error::Mismatch { what: "encryption", .. }), "{err}");
    }

    #[test]
    fn s3backer_key_check_and_params_round_trip_json() {
        let o = opts("pw").scheme(EncryptionScheme::Aes128Cbc);
        let (params, _) = new_encryption(&o, "p/", "v").expect("new");
        let json = serde_json::to_value(&params).expect("json");
        assert_eq!(json["scheme"], "aes-128-cbc");
        let back: EncryptionParams = serde_json::from_value(json).expect("parse");
        assert_eq!(back, params);
        assert!(unlock(&params, &o, "p/", "v", "k").is_ok());
        let mut other_bucket = o.clone();
        other_bucket.bucket = "elsewhere".into();
        let err = unlock(&params, &other_bucket, "p/", "v", "k").unwrap_err();
        assert!(err.to_string().contains("wrong password") && err.to_string().contains("elsewhere"), "{err}");
    }

    #[test]
    fn hex_that_is_not_two_hex_digits_a_byte_is_refused() {
        // "+f" parses as a number (u8::from_str_radix accepts a sign) but is not hex.
        let (params, _) = new_encryption(&opts("pw"), "p/", "v").expect("new");
        let EncryptionParams::XChaCha20Poly1305 { kdf, key_check, chunk_size } = params else {
            panic!("native scheme")
        };
        let signed = EncryptionParams::XChaCha20Poly1305 {
            kdf: kdf.clone(),
            chunk_size,
            key_check: format!("+f{}", &key_check[2..]),
        };
        let err = unlock(&signed, &opts("pw"), "p/", "v", "k").unwrap_err();
        assert!(err.to_string().contains("not hex"), "{err}");
        let bad_salt = KdfParams { salt: "+f".repeat(16), ..kdf };
        assert!(bad_salt.derive(&Password::new("pw")).unwrap_err().to_string().contains("not hex"));
        let o = opts("pw").scheme(EncryptionScheme::Aes128Cbc);
        let (EncryptionParams::Aes128Cbc { key_check }, _) = new_encryption(&o, "p/", "v").expect("new")
        else {
            panic!("s3backer scheme")
        };
        let upper = EncryptionParams::Aes128Cbc { key_check: key_check.to_uppercase() };
        assert!(unlock(&upper, &o, "p/", "v", "k").is_ok(), "hex in capitals is hex");
        let signed = EncryptionParams::Aes128Cbc { key_check: format!("+f{}", &key_check[2..]) };
        assert!(matches!(unlock(&signed, &o, "p/", "v", "k"), Err(Error::WrongPassword { .. })));
    }

    #[test]
    fn scheme_names_and_hex() {
        assert_eq!(EncryptionScheme::parse("AES-128-CBC").expect("parse"), EncryptionScheme::Aes128Cbc);
        assert_eq!(EncryptionScheme::parse("").expect("parse"), EncryptionScheme::XChaCha20Poly1305);
        assert!(EncryptionScheme::parse("rot13").unwrap_err().to_string().contains("rot13"));
        let bad = KdfParams { memory_kib: 2 << 20, ..KdfParams::with_cost(64, 1, 1) };
        assert!(bad.derive(&Password::new("x")).unwrap_err().to_string().contains("1 GiB"));
        // A descriptor asking for 2^32 - 1 passes would make every open hang.
        let endless = KdfParams { iterations: u32::MAX, ..KdfParams::with_cost(64, 1, 1) };
        assert!(endless.checked().unwrap_err().contains("4 GiB of work"));
        assert!(KdfParams::new_default().checked().is_ok());
        let lanes = KdfParams { parallelism: u32::MAX, ..KdfParams::with_cost(64, 1, 1) };
        assert!(lanes.checked().unwrap_err().contains("lanes"));
    }
}
