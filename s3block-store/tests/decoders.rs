//! Every decoder of outside data takes any bytes (issue 20, point 5).
//!
//! What a bucket or a local file hands s3block is outside data: block
//! objects and their `Content-Encoding` and metadata, the volume descriptor,
//! block 0's s3backer metadata, the lock body, the mount record, the local
//! store's attribute sidecars, s3backer's access file, and the keys a
//! listing returns; sizes given as options (`parse_size`) too. Each test
//! here feeds one parser arbitrary input, and valid encodings with bit
//! flips, truncations, extensions and header changes, and checks three
//! things:
//!
//! - it never panics (proptest reports a panic as a failure);
//! - it returns a value that is right, or an error that names the object
//!   or file at fault and says what was wrong;
//! - the bytes it allocates stay under a fixed bound, measured by the
//!   counting allocator of this test binary (below).
//!
//! Objects far larger than they should be (sparse files in a local store)
//! must be refused or cut short before they are read whole.
//!
//! Inputs that once failed are kept: proptest's own regressions in
//! `decoders.proptest-regressions`, and hand-made nasty inputs (bombs,
//! truncations, huge numbers, deep nesting) in `tests/corpus/`, which
//! [`corpus_through_every_decoder`] runs through every decoder.

// The counting allocator must implement `GlobalAlloc`, an unsafe trait: the
// one use of unsafe code in the workspace, confined to this test binary,
// where it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutOptions,
};
use proptest::prelude::*;
use proptest::test_runner::Config;
use s3block_core::{BlockDevice, BlockId, Error, Geometry, KeyLayout, StoreErrorKind};
use s3block_store::{
    ChunkedXChaChaCodec, CodecChain, CodecContext, CodecMeta, Compression, EncryptionOptions,
    EncryptionScheme, KdfParams, LOCK_NAME, LockInfo, META_BLOCK_SIZE, META_FILE_SIZE, META_HMAC,
    META_MOUNT_TOKEN, META_NONCE, ObjectBlockDevice, Password, S3BACKER_CIPHER, S3backerCodec,
    SIDECAR_SUFFIX, SidecarStore, StoreConfig, VolumeOptions, XChaChaCodec, classify, create_volume_with,
    mount_record_key, open_volume_with, parse_access_file, read_block0_geometry, read_descriptor, read_lock,
    read_mount_record,
};
use sha1::Sha1;

// ---------------------------------------------------------------------------
// Counting allocator: bytes live per thread, and their peak.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: a thread being torn down still frees memory.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call forwards to `System` with the caller's arguments; the
// counting touches only thread-local integers (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as given.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it had allocated at
/// once on this thread (above what was live when it began). Memory the
/// zstd C library takes with its own `malloc` is not seen.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

/// The block size of the codec tests.
const BLOCK: usize = 4096;
/// What any one decode may allocate: four blocks and 1 MiB.
const BOUND: usize = 4 * BLOCK + (1 << 20);

/// `n` cases, or `PROPTEST_CASES` of them for a longer search.
fn cases(n: u32) -> Config {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    Config { cases: n, ..Config::default() }
}

/// A runtime on this thread, so the counting allocator sees the work.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

// ---------------------------------------------------------------------------
// Mutations of valid encodings.

/// One change to an input.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte (positions wrap around the length).
    Flip(usize, u8),
    /// Overwrite a byte of the first 16 (a header).
    Header(usize, u8),
    /// Keep only so many bytes.
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Remove a run of bytes.
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(at, x)| Mutation::Flip(at, x)),
        2 => (0..16usize, any::<u8>()).prop_map(|(at, v)| Mutation::Header(at, v)),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        1 => (any::<usize>(), 1..64usize).prop_map(|(at, n)| Mutation::Remove(at, n)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..5)
}

fn mutate(data: &[u8], changes: &[Mutation]) -> Vec<u8> {
    let mut d = data.to_vec();
    for m in changes {
        let len = d.len();
        match m {
            Mutation::Flip(at, x) if len > 0 => d[at % len] ^= x,
            Mutation::Header(at, v) if *at < len => d[*at] = *v,
            Mutation::Truncate(n) => d.truncate(n % (len + 1)),
            Mutation::Extend(b) => d.extend_from_slice(b),
            Mutation::Insert(at, b) => {
                let at = at % (len + 1);
                d.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(at, n) if len > 0 => {
                let at = at % len;
                d.drain(at..(at + n).min(len));
            }
            _ => {}
        }
    }
    d
}

/// A block worth compressing: one byte repeated, with some random bytes.
fn block() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300), 0..BLOCK).prop_map(|(fill, noise, at)| {
        let mut b = vec![fill; BLOCK];
        let at = at.min(BLOCK - noise.len());
        b[at..at + noise.len()].copy_from_slice(&noise);
        b
    })
}

// ---------------------------------------------------------------------------
// Block objects.

const KEY: &str = "vol/00000007";
const BUCKET: &str = "bucket";
const PREFIX: &str = "vol/";
const PASSWORD: &str = "decoders";

fn cx() -> CodecContext<'static> {
    CodecContext { block: BlockId(7), key: KEY, block_size: BLOCK }
}

fn xchacha() -> Arc<XChaChaCodec> {
    static CODEC: OnceLock<Arc<XChaChaCodec>> = OnceLock::new();
    CODEC.get_or_init(|| Arc::new(XChaChaCodec::new(&[7u8; 32], "0123456789abcdef"))).clone()
}

fn chunked() -> Arc<ChunkedXChaChaCodec> {
    static CODEC: OnceLock<Arc<ChunkedXChaChaCodec>> = OnceLock::new();
    CODEC.get_or_init(|| Arc::new(ChunkedXChaChaCodec::new(&[7u8; 32], "0123456789abcdef"))).clone()
}

/// s3backer's codec; its PBKDF2 keys are derived once per test binary.
fn s3backer() -> Arc<S3backerCodec> {
    static CODEC: OnceLock<Arc<S3backerCodec>> = OnceLock::new();
    CODEC.get_or_init(|| Arc::new(S3backerCodec::new(&Password::new(PASSWORD), BUCKET, PREFIX))).clone()
}

/// A chain that reads every encoding.
fn reader() -> CodecChain {
    CodecChain::new().with_decoder(xchacha()).with_decoder(chunked()).with_decoder(s3backer())
}

/// The `s3backer-hmac` of `body` as block 7, computed from the format
/// `s3backer_crypto` documents, so that mutated bodies can be signed again
/// and reach the decryption and padding checks behind the HMAC.
fn s3backer_sign(body: &[u8]) -> CodecMeta {
    static KEY16: OnceLock<[u8; 16]> = OnceLock::new();
    let key = KEY16.get_or_init(|| {
        let mut key = [0u8; 16];
        pbkdf2::pbkdf2_hmac::<Sha1>(
            PASSWORD.as_bytes(),
            format!("{BUCKET}/{PREFIX}").as_bytes(),
            s3block_store::S3BACKER_PBKDF2_ITERATIONS,
            &mut key,
        );
        key
    });
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(format!("{:08x}", 7).as_bytes());
    mac.update(S3BACKER_CIPHER.as_bytes());
    mac.update(body);
    vec![(META_HMAC.to_owned(), format!("\"{}\"", hex::encode(mac.finalize().into_bytes())))]
}

/// Decodes as a block read does, and checks the outcome and the memory.
fn check_block_decode(
    data: Vec<u8>,
    encoding: Option<&str>,
    meta: &CodecMeta,
) -> (Result<Bytes, Error>, usize) {
    let (res, peak) = peak_during(|| reader().decode(&cx(), Bytes::from(data), encoding, meta));
    match &res {
        Ok(b) => assert_eq!(b.len(), BLOCK, "a decoded block of the wrong length was accepted"),
        Err(Error::Corrupt { block, key, reason }) => {
            assert_eq!((*block, key.as_str()), (BlockId(7), KEY));
            assert!(!reason.is_empty());
        }
        Err(e) => panic!("not a corrupt-block error: {e}"),
    }
    assert!(peak <= BOUND, "decoding {encoding:?} allocated {peak} bytes at once (bound {BOUND})");
    (res, peak)
}

const ENCODINGS: [&str; 11] = [
    "deflate",
    "zstd",
    "encrypt-XChaCha20-Poly1305",
    "deflate, encrypt-XChaCha20-Poly1305",
    "zstd, encrypt-XChaCha20-Poly1305",
    "encrypt-XChaCha20-Poly1305-64K",
    "deflate, encrypt-XChaCha20-Poly1305-64K",
    "zstd, encrypt-XChaCha20-Poly1305-64K",
    "encrypt-AES-128-CBC",
    "deflate, encrypt-AES-128-CBC",
    "zstd, encrypt-AES-128-CBC",
];

fn encoding() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(&ENCODINGS[..]).prop_map(|e| Some(e.to_owned())),
        "[a-zA-Z0-9, -]{0,40}".prop_map(Some),
    ]
}

/// A chain that writes `encoding` (one of [`ENCODINGS`]).
fn writer(encoding: &str) -> CodecChain {
    let mut chain = CodecChain::new();
    for name in encoding.split(", ") {
        chain = match name {
            "deflate" => chain.with(Compression::deflate(6).expect("level").codec().expect("codec")),
            "zstd" => chain.with(Compression::zstd(3).expect("level").codec().expect("codec")),
            "encrypt-XChaCha20-Poly1305" => chain.with(xchacha()),
            "encrypt-XChaCha20-Poly1305-64K" => chain.with_chunked(chunked()),
            "encrypt-AES-128-CBC" => chain.with(s3backer()),
            other => panic!("no codec {other}"),
        };
    }
    chain
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn block_objects_of_any_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..2 * BLOCK),
        encoding in encoding(),
        hmac in proptest::option::of("[ -~]{0,48}"),
        nonce in proptest::option::of("[0-9a-fA-F]{0,50}"),
        signed: bool,
    ) {
        let mut meta = if signed {
            s3backer_sign(&data)
        } else {
            hmac.map(|h| vec![(META_HMAC.to_owned(), h)]).unwrap_or_default()
        };
        meta.extend(nonce.map(|n| (META_NONCE.to_owned(), n)));
        let _ = check_block_decode(data, encoding.as_deref(), &meta);
    }

    #[test]
    fn block_objects_mutated(
        block in block(),
        encoding in proptest::sample::select(&ENCODINGS[..]),
        changes in mutations(),
        resign: bool,
    ) {
        let (obj, written, meta) = writer(encoding).encode(&cx(), Bytes::from(block.clone())).expect("encode");
        prop_assert_eq!(written.as_deref(), Some(encoding));
        let (back, _) = check_block_decode(obj.to_vec(), Some(encoding), &meta);
        prop_assert_eq!(&back.expect("the valid object decodes")[..], &block[..]);
        let bad = mutate(&obj, &changes);
        let meta = if resign { s3backer_sign(&bad) } else { meta };
        let changed = bad != obj;
        let (res, _) = check_block_decode(bad, Some(encoding), &meta);
        // Authenticated encodings never accept a change.
        if changed && encoding.contains("encrypt") && !(resign && encoding.contains("AES")) {
            prop_assert!(res.is_err());
        }
    }
}

/// A block compressed 200 times over, each pass named in its
/// `Content-Encoding`, is refused by the count of names before any pass.
#[test]
fn an_encoding_of_many_passes_is_refused() {
    let mut obj = Bytes::from(vec![1u8; BLOCK]);
    let deflate = writer("deflate");
    for _ in 0..200 {
        obj = deflate.encode(&cx(), obj).expect("encode").0;
    }
    let encoding = vec!["deflate"; 200].join(", ");
    let (res, _) = check_block_decode(obj.to_vec(), Some(&encoding), &vec![]);
    let err = res.expect_err("200 passes");
    assert!(err.to_string().contains("200 codings"), "{err}");
}

// ---------------------------------------------------------------------------
// Metadata objects: descriptor, block 0, lock, mount record, sidecar.

/// An error for the object at `key` that says what was wrong.
fn names(err: &Error, key: &str) {
    let text = err.to_string();
    assert!(text.contains(key), "the error does not name {key}: {text}");
    assert!(text.len() > key.len() + 10, "the error says nothing more: {text}");
}

async fn put(store: &dyn ObjectStore, key: &str, body: Vec<u8>, attributes: Attributes) {
    let opts = PutOptions { attributes, ..Default::default() };
    store.put_opts(&Path::from(key), body.into(), opts).await.expect("put");
}

const DESCRIPTOR_KEY: &str = "vol/s3block-volume.json";

/// Valid descriptors: plain, compressed, and with each encryption scheme.
fn descriptors() -> &'static [Vec<u8>] {
    static DESCRIPTORS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    DESCRIPTORS.get_or_init(|| {
        let rt = runtime();
        let opts =
            VolumeOptions { size: Some(1 << 20), block_size: Some(BLOCK as u64), ..Default::default() };
        let mut enc = EncryptionOptions::new(Password::new(PASSWORD), BUCKET);
        enc.kdf = Some(KdfParams::with_cost(64, 1, 1));
        let encs = [
            (None, None),
            (Some(Compression::zstd(5).expect("zstd")), None),
            (Some(Compression::deflate(6).expect("deflate")), Some(enc.clone())),
            (None, Some(enc.scheme(EncryptionScheme::Aes128Cbc))),
        ];
        encs.into_iter()
            .map(|(compression, enc)| {
                rt.block_on(async {
                    let store = InMemory::new();
                    let opts = opts.clone().with_compression(compression);
                    create_volume_with(&store, PREFIX, &opts, enc.as_ref()).await.expect("create");
                    let r = store.get(&Path::from(DESCRIPTOR_KEY)).await.expect("get");
                    r.bytes().await.expect("bytes").to_vec()
                })
            })
            .collect()
    })
}

/// Values a descriptor field should never hold.
fn nasty_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let deep = |n: usize| (0..n).fold(json!(1), |v, _| json!([v]));
    prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(4_294_967_295u64)),
        Just(json!(4_294_967_296u64)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        Just(json!("")),
        Just(json!("+f")),
        Just(json!("zz")),
        Just(json!("\u{fffd}\u{0}")),
        Just(json!({})),
        Just(json!([])),
        Just(json!({"scheme": "rot13"})),
        Just(json!({"scheme": "xchacha20poly1305"})),
        (1..200usize).prop_map(deep),
        "[ -~]{0,80}".prop_map(|s| json!(s)),
        any::<i64>().prop_map(|n| json!(n)),
    ]
}

/// Field paths of a descriptor (nested ones separated by '/').
const DESCRIPTOR_FIELDS: [&str; 16] = [
    "format",
    "block_size",
    "size",
    "compression",
    "compression_algorithm",
    "encryption",
    "encryption/scheme",
    "encryption/key_check",
    "encryption/kdf",
    "encryption/kdf/algorithm",
    "encryption/kdf/salt",
    "encryption/kdf/memory_kib",
    "encryption/kdf/iterations",
    "encryption/kdf/parallelism",
    "hash_prefix",
    "volume_id",
];

fn set_field(json: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut at = json;
    let mut parts = path.split('/').peekable();
    while let Some(part) = parts.next() {
        let Some(obj) = at.as_object_mut() else { return };
        if parts.peek().is_none() {
            obj.insert(part.to_owned(), value);
            return;
        }
        match obj.get_mut(part) {
            Some(next) => at = next,
            None => return,
        }
    }
}

/// Reads `body` as the descriptor, checks the outcome, and where the
/// descriptor is accepted, uses it: its compression and encryption, and
/// (for cheap key derivations) an open with the password.
fn check_descriptor(rt: &tokio::runtime::Runtime, body: Vec<u8>) -> usize {
    let store = InMemory::new();
    rt.block_on(put(&store, DESCRIPTOR_KEY, body, Attributes::new()));
    let (res, peak) = peak_during(|| rt.block_on(read_descriptor(&store, PREFIX)));
    match res {
        Ok(Some(d)) => {
            d.geometry().expect("an accepted descriptor has a geometry");
            d.compressed_with().expect("an accepted descriptor has a compression");
            let params = d.encryption_params().expect("an accepted descriptor has its encryption");
            let cheap = serde_json::to_value(&params)
                .ok()
                .and_then(|v| v.pointer("/kdf/memory_kib").and_then(|m| m.as_u64()))
                .is_none_or(|m| m <= 1024);
            if cheap {
                for scheme in [EncryptionScheme::XChaCha20Poly1305, EncryptionScheme::Aes128Cbc] {
                    let enc = EncryptionOptions::new(Password::new(PASSWORD), BUCKET).scheme(scheme);
                    let open =
                        rt.block_on(open_volume_with(&store, PREFIX, &VolumeOptions::default(), Some(&enc)));
                    if let Err(e) = open {
                        assert!(
                            matches!(
                                e,
                                Error::WrongPassword { .. }
                                    | Error::Mismatch { .. }
                                    | Error::BadMetadata { .. }
                            ),
                            "{e:?}"
                        );
                        if matches!(e, Error::BadMetadata { .. }) {
                            names(&e, DESCRIPTOR_KEY);
                        }
                    }
                }
            }
        }
        Ok(None) => panic!("a stored descriptor was not found"),
        Err(e) => {
            assert!(matches!(e, Error::BadMetadata { .. }), "{e:?}");
            names(&e, DESCRIPTOR_KEY);
        }
    }
    assert!(peak <= BOUND, "reading the descriptor allocated {peak} bytes at once");
    peak
}

const BLOCK0_KEY: &str = "vol/00000000";

fn check_block0(rt: &tokio::runtime::Runtime, block_size: String, file_size: String) -> usize {
    let store = InMemory::new();
    let mut attrs = Attributes::new();
    attrs.insert(Attribute::Metadata(META_BLOCK_SIZE.into()), AttributeValue::from(block_size));
    attrs.insert(Attribute::Metadata(META_FILE_SIZE.into()), AttributeValue::from(file_size));
    rt.block_on(put(&store, BLOCK0_KEY, b"x".to_vec(), attrs));
    let (res, peak) = peak_during(|| rt.block_on(read_block0_geometry(&store, PREFIX)));
    match res {
        Ok(Some((g, hashed))) => assert!(!hashed && g.block_count() > 0),
        Ok(None) => panic!("block 0's metadata was not found"),
        Err(e) => {
            assert!(matches!(e, Error::BadMetadata { .. }), "{e:?}");
            names(&e, BLOCK0_KEY);
        }
    }
    assert!(peak <= BOUND, "reading block 0's metadata allocated {peak} bytes at once");
    peak
}

const LOCK_KEY: &str = "vol/s3backer-mounted";

fn check_lock(rt: &tokio::runtime::Runtime, body: Vec<u8>, token: Option<String>) -> usize {
    assert_eq!(LOCK_KEY, format!("{PREFIX}{LOCK_NAME}"));
    let (direct, peak) = peak_during(|| LockInfo::parse(&body, token.clone()));
    assert!(!direct.host.is_empty() && !direct.since.is_empty());
    // What the lock names is printed in messages: no terminal escapes.
    let p = &direct.process;
    for text in [Some(&direct.host), Some(&direct.since), p.boot_id.as_ref(), p.machine_id.as_ref()]
        .into_iter()
        .flatten()
    {
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    assert!(peak <= BOUND, "parsing a lock body allocated {peak} bytes at once");
    let store = InMemory::new();
    let mut attrs = Attributes::new();
    if let Some(t) = token {
        attrs.insert(Attribute::Metadata(META_MOUNT_TOKEN.into()), AttributeValue::from(t));
    }
    rt.block_on(put(&store, LOCK_KEY, body, attrs));
    let (res, peak2) = peak_during(|| rt.block_on(read_lock(&store, PREFIX)));
    let info = res.expect("any lock body reads").expect("the lock is there");
    assert_eq!(info, direct);
    let _ = info.describe();
    assert!(peak2 <= BOUND, "reading a lock allocated {peak2} bytes at once");
    peak.max(peak2)
}

fn check_mount_record(rt: &tokio::runtime::Runtime, body: Vec<u8>) -> usize {
    let store = InMemory::new();
    let key = mount_record_key(PREFIX);
    rt.block_on(put(&store, &key, body, Attributes::new()));
    let (res, peak) = peak_during(|| rt.block_on(read_mount_record(&store, PREFIX)));
    match res {
        Ok(Some(r)) => assert!(!r.mount.is_empty()),
        Ok(None) => panic!("the record was not found"),
        Err(e) => {
            assert!(matches!(e, Error::BadMetadata { .. }), "{e:?}");
            names(&e, &key);
        }
    }
    assert!(peak <= BOUND, "reading the mount record allocated {peak} bytes at once");
    peak
}

/// A block object with a sidecar of `sidecar`'s bytes, read through the
/// local store's attribute layer and decoded as a block.
fn check_sidecar(rt: &tokio::runtime::Runtime, body: &[u8], sidecar: Vec<u8>) -> usize {
    let inner = InMemory::new();
    rt.block_on(put(&inner, KEY, body.to_vec(), Attributes::new()));
    rt.block_on(put(&inner, &format!("{KEY}{SIDECAR_SUFFIX}"), sidecar, Attributes::new()));
    let store: Arc<dyn ObjectStore> = Arc::new(SidecarStore::new(inner));
    let device = ObjectBlockDevice::new(
        store.clone(),
        KeyLayout::new(PREFIX, false),
        Geometry::new(16 * BLOCK as u64, BLOCK as u64).expect("geometry"),
    )
    .with_codecs(reader());
    let (res, peak) = peak_during(|| rt.block_on(device.read_block(BlockId(7))));
    match res {
        Ok(b) => assert_eq!(b.len(), BLOCK),
        Err(e) => {
            names(&e, KEY);
            if let Error::Store { kind, .. } = &e {
                assert_eq!(*kind, StoreErrorKind::Permanent, "a bad sidecar is not worth retrying: {e}");
            }
        }
    }
    // The store error itself, as a retry loop would classify it.
    if let Err(e) = rt.block_on(store.get_opts(&Path::from(KEY), GetOptions::default())) {
        assert_ne!(classify(&e), StoreErrorKind::Transient, "{e}");
    }
    assert!(peak <= BOUND, "reading a block through its sidecar allocated {peak} bytes at once");
    peak
}

/// A valid sidecar of a block object written with `encoding`.
fn sidecar_of(rt: &tokio::runtime::Runtime, block: &[u8], encoding: &str) -> (Vec<u8>, Vec<u8>) {
    let inner = Arc::new(InMemory::new());
    let store = SidecarStore::new(inner.clone());
    let (obj, enc, meta) = writer(encoding).encode(&cx(), Bytes::from(block.to_vec())).expect("encode");
    let mut attrs = Attributes::new();
    attrs.insert(Attribute::ContentEncoding, AttributeValue::from(enc.expect("an encoding")));
    for (k, v) in meta {
        attrs.insert(Attribute::Metadata(k.into()), AttributeValue::from(v));
    }
    rt.block_on(put(&store, KEY, obj.to_vec(), attrs));
    let side = rt.block_on(async {
        inner
            .get(&Path::from(format!("{KEY}{SIDECAR_SUFFIX}")))
            .await
            .expect("sidecar")
            .bytes()
            .await
            .expect("bytes")
    });
    (obj.to_vec(), side.to_vec())
}

fn valid_lock_body() -> Vec<u8> {
    b"vps\n20260101T120000Z\npid=1234\nboot=b9f3be6e-d765-43a6-ac75-9fec22d6b93e\nstart=440894\n\
      machine=3d1219c7c4c5404aaa1f6d2a48adfda4\npidns=4026531836\n"
        .to_vec()
}

fn valid_mount_record() -> Vec<u8> {
    br#"{"mount":"0123456789abcdef0123456789abcdef","host":"vps","since":"20260101T120000Z"}"#.to_vec()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn descriptors_of_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_descriptor(&runtime(), body);
    }

    #[test]
    fn descriptors_mutated(which in 0..4usize, changes in mutations()) {
        let body = mutate(&descriptors()[which], &changes);
        check_descriptor(&runtime(), body);
    }

    #[test]
    fn descriptors_with_nasty_fields(
        which in 0..4usize,
        fields in proptest::collection::vec((proptest::sample::select(&DESCRIPTOR_FIELDS[..]), nasty_json()), 1..3),
    ) {
        let mut json: serde_json::Value = serde_json::from_slice(&descriptors()[which]).expect("json");
        for (field, value) in fields {
            set_field(&mut json, field, value);
        }
        check_descriptor(&runtime(), serde_json::to_vec(&json).expect("json"));
    }

    #[test]
    fn block0_metadata_of_any_text(
        block_size in prop_oneof!["[0-9]{0,25}", "[ -~]{0,30}", Just("4096".to_owned())],
        file_size in prop_oneof!["[0-9]{0,25}", "[ -~]{0,30}", Just("1048576".to_owned())],
    ) {
        check_block0(&runtime(), block_size, file_size);
    }

    #[test]
    fn lock_bodies_of_any_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        token in proptest::option::of("[ -~]{0,64}"),
    ) {
        check_lock(&runtime(), body, token);
    }

    #[test]
    fn lock_bodies_mutated(changes in mutations()) {
        check_lock(&runtime(), mutate(&valid_lock_body(), &changes), None);
    }

    #[test]
    fn mount_records_of_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_mount_record(&runtime(), body);
    }

    #[test]
    fn mount_records_mutated(changes in mutations()) {
        check_mount_record(&runtime(), mutate(&valid_mount_record(), &changes));
    }

    #[test]
    fn sidecars_of_any_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        sidecar in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        check_sidecar(&runtime(), &body, sidecar);
    }

    #[test]
    fn sidecars_mutated(
        block in block(),
        encoding in proptest::sample::select(&ENCODINGS[..]),
        changes in mutations(),
    ) {
        let rt = runtime();
        let (obj, side) = sidecar_of(&rt, &block, encoding);
        check_sidecar(&rt, &obj, mutate(&side, &changes));
    }

    #[test]
    fn sidecars_with_nasty_fields(
        block in block(),
        encoding in proptest::sample::select(&ENCODINGS[..]),
        field in proptest::sample::select(&[
            "versions", "versions/0", "versions/0/size", "versions/0/crc32", "versions/0/attributes",
        ][..]),
        value in nasty_json(),
    ) {
        let rt = runtime();
        let (obj, side) = sidecar_of(&rt, &block, encoding);
        let mut json: serde_json::Value = serde_json::from_slice(&side).expect("json");
        match field.strip_prefix("versions/0") {
            Some(rest) => {
                if let Some(first) = json.pointer_mut("/versions/0") {
                    match rest.strip_prefix('/') {
                        Some(name) => set_field(first, name, value),
                        None => *first = value,
                    }
                }
            }
            None => set_field(&mut json, field, value),
        }
        check_sidecar(&rt, &obj, serde_json::to_vec(&json).expect("json"));
    }
}

// ---------------------------------------------------------------------------
// The access file and listed keys.

fn check_access_file(bytes: &[u8], wanted: Option<&str>) {
    let _ = parse_access_file(&String::from_utf8_lossy(bytes), wanted);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("passwd");
    std::fs::write(&path, bytes).expect("write");
    let mut config = StoreConfig::new("s3://bucket/vol").access_file(&path).env(HashMap::new());
    if let Some(id) = wanted {
        config = config.access_key_id(id);
    }
    let (res, peak) = peak_during(|| config.resolve_credentials());
    match res {
        Ok(Some(c)) => {
            assert!(!c.access_key_id.is_empty() && !c.secret_access_key.is_empty(), "{c:?}");
            if let Some(id) = wanted {
                assert_eq!(c.access_key_id, id);
            }
        }
        // An empty access id asks for unsigned requests (s3backer's `--accessId=`).
        Ok(None) if wanted == Some("") => {}
        Ok(None) => panic!("an explicit access file gave no credentials and no error"),
        Err(e) => names(&e, &path.display().to_string()),
    }
    assert!(peak <= BOUND + 4 * bytes.len(), "reading the access file allocated {peak} bytes at once");
}

/// An access file that is not one (`--access-file` naming a disk image, say)
/// is refused after a bounded read, not read whole.
#[test]
fn a_huge_access_file_is_read_only_so_far() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("image");
    // Sparse: 64 MiB of zeros that take no disk space.
    std::fs::File::create(&path).expect("create").set_len(64 << 20).expect("set_len");
    let config = StoreConfig::new("s3://bucket/vol").access_file(&path).env(HashMap::new());
    let (res, peak) = peak_during(|| config.resolve_credentials());
    let err = res.expect_err("not an access file");
    names(&err, &path.display().to_string());
    assert!(peak <= BOUND, "reading a 64 MiB access file allocated {peak} bytes at once");
}

/// Runs `f` to completion on this thread, outside any runtime: the local
/// store then reads its files here rather than on tokio's blocking threads,
/// where the counting allocator would not see it.
fn block_on_here<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// A local store (attribute sidecars over a directory) whose object at
/// `key` is a sparse file of 64 MiB: large objects where small ones belong.
fn local_store_with_huge(key: &str) -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(key);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::File::create(&path).expect("create").set_len(64 << 20).expect("set_len");
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local");
    (dir, Arc::new(SidecarStore::new(fs)))
}

/// Objects far larger than what they should hold are refused (or, for the
/// lock, read only so far) without being read whole.
#[test]
fn huge_objects_are_not_read_whole() {
    let geometry = Geometry::new(16 * BLOCK as u64, BLOCK as u64).expect("geometry");

    let (_dir, store) = local_store_with_huge(KEY);
    let device =
        ObjectBlockDevice::new(store.clone(), KeyLayout::new(PREFIX, false), geometry).with_codecs(reader());
    let (res, peak) = peak_during(|| block_on_here(device.read_block(BlockId(7))));
    let err = res.expect_err("a 64 MiB block object");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    names(&err, KEY);
    assert!(peak <= BOUND, "reading a 64 MiB block object allocated {peak} bytes at once");

    let (_dir, store) = local_store_with_huge(DESCRIPTOR_KEY);
    let (res, peak) = peak_during(|| block_on_here(read_descriptor(store.as_ref(), PREFIX)));
    let err = res.expect_err("a 64 MiB descriptor");
    assert!(matches!(err, Error::BadMetadata { .. }), "{err}");
    names(&err, DESCRIPTOR_KEY);
    assert!(peak <= BOUND, "reading a 64 MiB descriptor allocated {peak} bytes at once");

    // Block 0 is looked at (HEAD) for s3backer's geometry metadata.
    let (_dir, store) = local_store_with_huge(BLOCK0_KEY);
    let (res, peak) = peak_during(|| block_on_here(read_block0_geometry(store.as_ref(), PREFIX)));
    assert_eq!(res.expect("no metadata"), None);
    assert!(peak <= BOUND, "looking at a 64 MiB block 0 allocated {peak} bytes at once");

    let (_dir, store) = local_store_with_huge(LOCK_KEY);
    let (res, peak) = peak_during(|| block_on_here(read_lock(store.as_ref(), PREFIX)));
    let info = res.expect("a lock body of any size reads").expect("the lock is there");
    assert!(!info.process.is_known() && info.host.chars().count() <= 4096);
    assert!(peak <= BOUND, "reading a 64 MiB lock allocated {peak} bytes at once");

    let (dir, store) = local_store_with_huge(&format!("{KEY}{SIDECAR_SUFFIX}"));
    std::fs::write(dir.path().join(KEY), b"x").expect("write the block object");
    let device = ObjectBlockDevice::new(store, KeyLayout::new(PREFIX, false), geometry).with_codecs(reader());
    let (res, peak) = peak_during(|| block_on_here(device.read_block(BlockId(7))));
    let err = res.expect_err("a 64 MiB sidecar");
    names(&err, KEY);
    assert!(peak <= BOUND, "reading a block with a 64 MiB sidecar allocated {peak} bytes at once");
    // Writing the block reads the sidecar too, to keep its last entry.
    let put = |store: Arc<dyn ObjectStore>| async move {
        store.put_opts(&Path::from(KEY), b"y".to_vec().into(), PutOptions::default()).await
    };
    let (res, peak) = peak_during(|| block_on_here(put(device.store().clone())));
    let err = res.expect_err("a 64 MiB sidecar");
    assert!(err.to_string().contains(SIDECAR_SUFFIX), "{err}");
    assert!(peak <= BOUND, "writing a block with a 64 MiB sidecar allocated {peak} bytes at once");
}

/// An s3backer volume's block 0, read at open to check the password, is
/// refused by its size as a block read refuses it, not read whole (the
/// memory store hands its bodies out without copying, so only the error
/// shows it here).
#[test]
fn a_huge_block_0_is_refused_at_open() {
    let rt = runtime();
    let store = InMemory::new();
    let mut attrs = Attributes::new();
    attrs.insert(Attribute::ContentEncoding, AttributeValue::from("deflate, encrypt-AES-128-CBC"));
    attrs.insert(Attribute::Metadata(META_BLOCK_SIZE.into()), AttributeValue::from(BLOCK.to_string()));
    attrs.insert(Attribute::Metadata(META_FILE_SIZE.into()), AttributeValue::from((16 * BLOCK).to_string()));
    let body = vec![0u8; 1 << 20];
    attrs.insert(
        Attribute::Metadata(META_HMAC.into()),
        AttributeValue::from(s3backer_sign(&body)[0].1.clone()),
    );
    rt.block_on(put(&store, BLOCK0_KEY, body, attrs));
    let enc = EncryptionOptions::new(Password::new(PASSWORD), BUCKET).scheme(EncryptionScheme::Aes128Cbc);
    let err = rt
        .block_on(open_volume_with(&store, PREFIX, &VolumeOptions::default(), Some(&enc)))
        .expect_err("a 1 MiB block 0 of a 4 KiB block volume");
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("more than any encoding"),
        "{err}"
    );
    names(&err, BLOCK0_KEY);
}

/// A size as options give it (`--size 30G`, `-o cache=1.5M`): the right
/// number of bytes, or an error naming the input.
fn check_size(input: &str) {
    match s3block_core::parse_size(input) {
        Ok(n) => {
            // Checked against exact arithmetic on the digits and the unit.
            let t = input.trim();
            let t = t.strip_suffix("iB").or_else(|| t.strip_suffix("ib")).unwrap_or(t);
            let t = match t.strip_suffix(['B', 'b']) {
                Some(rest) if rest.ends_with(|c: char| c.is_ascii_alphabetic()) => rest,
                _ => t,
            };
            let (num, shift) = match t.chars().last() {
                Some(c) if c.is_ascii_alphabetic() => {
                    let pos = "KMGTPE".find(c.to_ascii_uppercase()).expect("a unit");
                    (&t[..t.len() - 1], 10 * (pos as u32 + 1))
                }
                _ => (t, 0),
            };
            let (whole, frac) = num.trim().split_once('.').unwrap_or((num.trim(), ""));
            // n == (whole + frac / 10^len) * 2^shift, so n * 10^len == (whole * 10^len + frac) << shift.
            let digits = format!("{whole}{frac}");
            let lhs = big_mul_small(&decimal(&n.to_string()), 10u64.pow(0), frac.len());
            let rhs = big_shl(&decimal(digits.trim_start_matches('+')), shift);
            assert_eq!(lhs, rhs, "parse_size({input:?}) = {n}");
        }
        Err(e) => assert!(e.to_string().contains(&format!("{input:?}")), "{e}"),
    }
}

/// Sizes whose exact value does not fit in 128 bits before the unit's
/// shift, and their neighbours.
#[test]
fn sizes_past_128_bits() {
    for input in [
        // (2951479051793528258.56 * 100) << 60 is 2^128: it wrapped to 0.
        "2951479051793528258.56E",
        "18446744073709551615.999999999999999999E",
        "18446744073709551615E",
        "15.999999999999999999E",
        "16E",
        "15E",
        "0.5E",
    ] {
        check_size(input);
    }
}

/// Little-endian base-10^9 digits of a decimal string (arbitrary size).
fn decimal(s: &str) -> Vec<u64> {
    let mut out = vec![0u64];
    for b in s.bytes() {
        let mut carry = u64::from(b - b'0');
        for limb in &mut out {
            let v = *limb * 10 + carry;
            *limb = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        if carry > 0 {
            out.push(carry);
        }
    }
    trim(out)
}

fn trim(mut v: Vec<u64>) -> Vec<u64> {
    while v.len() > 1 && v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn big_times(v: &[u64], m: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(v.len() + 2);
    let mut carry = 0u64;
    for &limb in v {
        let x = u128::from(limb) * u128::from(m) + u128::from(carry);
        out.push((x % 1_000_000_000) as u64);
        carry = (x / 1_000_000_000) as u64;
    }
    while carry > 0 {
        out.push(carry % 1_000_000_000);
        carry /= 1_000_000_000;
    }
    trim(out)
}

/// `v * m * 10^tens`.
fn big_mul_small(v: &[u64], m: u64, tens: usize) -> Vec<u64> {
    (0..tens).fold(big_times(v, m), |acc, _| big_times(&acc, 10))
}

fn big_shl(v: &[u64], shift: u32) -> Vec<u64> {
    (0..shift).fold(v.to_vec(), |acc, _| big_times(&acc, 2))
}

fn check_key(key: &str) {
    for layout in [KeyLayout::new(PREFIX, false), KeyLayout::new(PREFIX, true), KeyLayout::new("", true)] {
        if let Some(block) = layout.parse(key) {
            assert_eq!(layout.key(block), key, "{key:?} parsed as block {block}");
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn access_files_of_any_bytes(
        text in proptest::collection::vec(prop_oneof![
            4 => any::<u8>(),
            1 => Just(b':'),
            1 => Just(b'\n'),
            1 => Just(b'#'),
        ], 0..200),
        wanted in proptest::option::of("[A-Z0-9:]{0,8}"),
    ) {
        check_access_file(&text, wanted.as_deref());
    }

    #[test]
    fn sizes_of_any_text(input in prop_oneof![
        "[ -~]{0,12}",
        "[0-9]{1,20}(\\.[0-9]{1,18})?[KMGTPEkmgtpe]?(B|iB)?",
    ]) {
        check_size(&input);
    }

    #[test]
    fn listed_keys_of_any_text(key in prop_oneof![
        ".{0,40}",
        "vol/[0-9a-fA-F-]{0,20}",
        "[0-9a-f]{8}-[0-9a-f]{8}",
        "vol/[0-9a-f]{8}-[0-9a-f]{8}",
    ]) {
        check_key(&key);
    }
}

// ---------------------------------------------------------------------------
// The corpus.

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every file of `tests/corpus/` through every decoder; prints the peak
/// bytes each decoder allocated over the corpus (run with `--nocapture`).
#[test]
fn corpus_through_every_decoder() {
    let rt = runtime();
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is missing: {}", files.len());
    let mut peaks: Vec<(String, usize)> = Vec::new();
    let mut record = |what: &str, peak: usize| match peaks.iter_mut().find(|(w, _)| w == what) {
        Some((_, p)) => *p = (*p).max(peak),
        None => peaks.push((what.to_owned(), peak)),
    };
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(file).expect("corpus file");
        for encoding in ENCODINGS {
            let (r, peak) = check_block_decode(bytes.clone(), Some(encoding), &vec![]);
            // A bomb is named as one, whatever the library's words for it.
            if name.starts_with(encoding) && name.contains("bomb") {
                let err = r.expect_err("a bomb");
                assert!(err.to_string().contains(&format!("more than {BLOCK} bytes")), "{name}: {err}");
            }
            record(encoding, peak);
            if encoding.contains("AES") {
                let (r, peak) = check_block_decode(bytes.clone(), Some(encoding), &s3backer_sign(&bytes));
                if encoding == "encrypt-AES-128-CBC" && !bytes.len().is_multiple_of(16) {
                    let err = r.expect_err("not whole AES blocks");
                    assert!(err.to_string().contains("not a multiple of 16"), "{name}: {err}");
                }
                record(&format!("{encoding} (signed)"), peak);
            }
        }
        // Behind a layer that authenticates: the file as what decryption
        // yields, for the decompressor under it.
        for (cipher, codec) in [
            ("encrypt-XChaCha20-Poly1305", writer("encrypt-XChaCha20-Poly1305")),
            ("encrypt-AES-128-CBC", writer("encrypt-AES-128-CBC")),
        ] {
            let (sealed, _, meta) = codec.encode(&cx(), Bytes::from(bytes.clone())).expect("encrypt");
            for inner in ["deflate", "zstd"] {
                let encoding = format!("{inner}, {cipher}");
                let (r, peak) = check_block_decode(sealed.to_vec(), Some(&encoding), &meta);
                if name.starts_with(inner) && name.contains("bomb") {
                    let err = r.expect_err("a bomb");
                    assert!(err.to_string().contains(&format!("more than {BLOCK} bytes")), "{name}: {err}");
                }
                record(&format!("{encoding} (authentic)"), peak);
            }
        }
        // zstd's own heap, which the counting allocator does not see: the
        // context a one-shot decode uses, after decoding this file.
        let mut dctx = zstd::zstd_safe::DCtx::create();
        let mut out = Vec::with_capacity(BLOCK + 1);
        let _ = dctx.decompress(&mut out, &bytes);
        assert!(out.len() <= BLOCK + 1);
        record("zstd context (C heap, not counted above)", dctx.sizeof());
        record("descriptor", check_descriptor(&rt, bytes.clone()));
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
        record("block 0 metadata", check_block0(&rt, text.clone(), text.clone()));
        record("lock body", check_lock(&rt, bytes.clone(), Some(text.clone())));
        record("mount record", check_mount_record(&rt, bytes.clone()));
        record("sidecar", check_sidecar(&rt, b"x", bytes.clone()));
        check_access_file(&bytes, None);
        check_key(&text);
        eprintln!("corpus {name}: {} bytes, through every decoder", bytes.len());
    }
    for (what, peak) in &peaks {
        eprintln!("peak {what}: {peak} bytes");
    }
}
