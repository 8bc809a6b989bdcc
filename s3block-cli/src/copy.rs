//! `s3block copy`: a volume into another store, prefix or block size.
//!
//! The copy works in chunks of the larger of the two block sizes: a chunk
//! is assembled from the source's stored blocks (absent ones are zeros and
//! cost no request), then cut into destination blocks, and only the non-zero
//! ones are written. Chunks run in parallel, bounded so the chunks in flight
//! stay within [`COPY_MEMORY`]. At the end every chunk is read back from both
//! volumes and compared, unless the caller skips it.
//!
//! Two stores: the copy is reached with its own `--dst-endpoint`,
//! `--dst-region`, `--dst-access-file` and `--dst-force-path-style` (each
//! the source's when not given); with `--dst-access-file` the copy's
//! requests are signed with that file only, never with the `AWS_*`
//! credential environment the source may use ([`open_destination`]).
//! Errors say which side failed.
//!
//! Resuming: with `--resume`, a destination that already holds a volume
//! whose descriptor matches the copy this command would create (size,
//! block size, key naming, compression, encryption scheme; and the copy's
//! password opens it) is continued rather than refused. Every destination
//! block the listing shows is read back and its decoded bytes compared with
//! the source's: equal blocks are skipped, different or undecodable ones
//! rewritten, missing ones written, and blocks stored at the destination
//! where the source holds zeros deleted. Decoded bytes, not object sizes
//! or ETags, are compared: an encrypted block differs in every byte each
//! time it is written, and an ETag is not a content hash on every
//! provider; a GET costs a tenth of the PUT it saves. A destination whose
//! descriptor differs is refused, naming each difference, so a copy never
//! writes into an unrelated volume.
//!
//! Encryption: blocks are decrypted from the source and encrypted for the
//! copy, so a copy can change scheme or password, or add or drop
//! encryption. By default the copy is encrypted as its source is (same
//! scheme, same password, its own salt and volume id); `--dest-encrypt`
//! chooses a scheme (`none` for a plaintext copy) and `--dest-password-file`
//! or `S3BLOCK_DEST_PASSWORD` another password.

use std::collections::BTreeSet;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use s3block_core::{BlockDevice, BlockId, Error, Result, is_zero};
use s3block_store::{
    CompressArgs, EncryptionOptions, EncryptionScheme, GeometrySource, LOCK_NAME, PasswordSource, StoreArgs,
    VolumeDescriptor, read_descriptor, read_lock,
};

use crate::args::{DEST_PASSWORD_ENV, DestEncryption, LayoutArgs};
use crate::exit::{CliResult, OK, PROBLEMS};
use crate::format::{self, write_json};
use crate::maint::progress;
use crate::target::Target;
use crate::volume::{Opened, create_with, open_with, stored_blocks, terminal_prompt};

/// Most memory the chunks in flight may take.
pub const COPY_MEMORY: u64 = 64 << 20;

/// How to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Block size of the copy (default: the source's).
    pub block_size: Option<u64>,
    /// Compression of the copy (`--compress`, `--compress-level`).
    pub compress: CompressArgs,
    /// Hash-prefixed keys in the copy.
    pub hash_prefix: bool,
    /// Skip the read-back comparison.
    pub no_verify: bool,
    /// Copy a locked (mounted) source.
    pub force: bool,
    /// Chunks at once.
    pub parallel: usize,
    /// No progress bar.
    pub quiet: bool,
    /// `--dest-encrypt`: `None` to encrypt as the source is.
    pub dest_encrypt: Option<Option<DestEncryption>>,
    /// `--dest-password-file`.
    pub dest_password_file: Option<std::path::PathBuf>,
    /// `--resume`: continue into a destination volume of the same layout.
    pub resume: bool,
}

/// The environment variables holding credentials, which a side with an
/// access file of its own does not read.
pub const CREDENTIAL_ENV: [&str; 3] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// Opens the copy's store `url` with `args` (see
/// [`DstStoreArgs::store_args`](crate::DstStoreArgs::store_args)). With
/// `own_credentials` (`--dst-access-file`), the `AWS_*` credential variables
/// are hidden from it, so it is signed with its access file only; the rest
/// of the environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, `HOME`) still applies.
pub fn open_destination(url: &str, args: &StoreArgs, own_credentials: bool) -> Result<Target> {
    let mut config = args.to_config(url);
    if own_credentials {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| !CREDENTIAL_ENV.contains(&k.as_str()))
            .collect();
        config = config.env(env);
    }
    let opened = config.open().map_err(|e| on_side("the copy", url, e))?;
    Ok(Target::from_opened(url, opened, args))
}

/// `e` with the side it happened on (`"the source"`, `"the copy"`) and its
/// URL named, keeping its kind (and so its exit code).
fn on_side(side: &str, url: &str, e: Error) -> Error {
    let at = format!("{side} at {url}");
    match e {
        Error::Store { block, key, kind, source } => {
            Error::Store { block, key: format!("{key} of {at}"), kind, source }
        }
        Error::Config(text) if !text.contains(url) => Error::Config(format!("{at}: {text}")),
        other => other,
    }
}

/// `text` (an error with its command hint) with the hint naming the copy's
/// own options when the error happened on the copy's side of a `copy`.
pub fn copy_side_hint(text: String) -> String {
    if !text.contains(COPY_SIDE) {
        return text;
    }
    text.replace("; --access-file names", "; --dst-access-file (else --access-file) names")
        .replace("; the endpoint is --endpoint", "; the copy's endpoint is --dst-endpoint, else --endpoint")
}

/// How errors on the copy's side name it.
const COPY_SIDE: &str = " of the copy at ";

/// The differences between the destination's descriptor `d` and the copy
/// that would be created, each as "what: the destination's, the copy's".
fn descriptor_differences(
    d: &VolumeDescriptor,
    size: u64,
    block_size: u64,
    hash_prefix: bool,
    compression: Option<s3block_store::Compression>,
    scheme: Option<EncryptionScheme>,
) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    if d.size != size {
        diffs.push(format!("size: {} there, {} for this copy", format::bytes(d.size), format::bytes(size)));
    }
    if d.block_size != block_size {
        diffs.push(format!(
            "block size: {} there, {} for this copy",
            format::bytes(d.block_size),
            format::bytes(block_size)
        ));
    }
    if d.hash_prefix != hash_prefix {
        let say = |on: bool| if on { "hash-prefixed" } else { "plain" };
        diffs.push(format!("keys: {} there, {} for this copy", say(d.hash_prefix), say(hash_prefix)));
    }
    let there = d.compressed_with()?;
    if there != compression {
        let say = |c: Option<s3block_store::Compression>| c.map_or("none".to_owned(), |c| c.to_string());
        diffs.push(format!("compression: {} there, {} for this copy", say(there), say(compression)));
    }
    let there = d.encryption_params()?.map(|p| p.scheme());
    if there != scheme {
        let say = |s: Option<EncryptionScheme>| s.map_or("none".to_owned(), |s| s.to_string());
        diffs.push(format!("encryption: {} there, {} for this copy", say(there), say(scheme)));
    }
    Ok(diffs)
}

/// The scheme the source volume is encrypted with, if any.
fn source_scheme(s: &Opened, enc: Option<&EncryptionOptions>) -> Result<Option<EncryptionScheme>> {
    Ok(match &s.volume.source {
        GeometrySource::Descriptor(d) => d.encryption_params()?.map(|p| p.scheme()),
        // A volume s3backer made is opened encrypted only with its scheme.
        _ => enc.map(|_| EncryptionScheme::Aes128Cbc),
    })
}

/// The encryption of the copy at `dst`: as `opts` say, else as the source's.
fn dest_encryption(
    dst: &Target,
    opts: &CopyOptions,
    source: Option<EncryptionScheme>,
    source_enc: Option<&EncryptionOptions>,
) -> Result<Option<EncryptionOptions>> {
    let scheme = match opts.dest_encrypt {
        Some(Some(DestEncryption::None)) => return Ok(None),
        Some(Some(DestEncryption::Scheme(s))) => Some(s),
        Some(None) => None,
        None => match source {
            Some(s) => Some(s),
            None => return Ok(None),
        },
    };
    let given = match &opts.dest_password_file {
        Some(file) => Some(PasswordSource::File(file.clone())),
        None => std::env::var_os(DEST_PASSWORD_ENV).map(|_| PasswordSource::Env(DEST_PASSWORD_ENV.into())),
    };
    let password = match (given, source_enc) {
        (Some(source), _) => source.read()?,
        (None, Some(enc)) => enc.password.clone(),
        (None, None) => {
            let ask = StoreArgs { password_file: None, ..dst.args.clone() };
            ask.password(&format!("the copy at {}", dst.url), true, &mut terminal_prompt)?
        }
    };
    let mut options = EncryptionOptions::new(password, StoreArgs::bucket_name(&dst.kind));
    options.scheme = scheme;
    Ok(Some(options))
}

/// One side of a copy: where it is.
#[derive(Debug, Clone, Serialize)]
pub struct Location {
    /// The store URL as given.
    pub url: String,
    /// The full key prefix (the URL's, then the side's prefix option).
    pub prefix: String,
}

impl Location {
    fn of(t: &Target) -> Self {
        Location { url: t.url.clone(), prefix: t.prefix.clone() }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{} (no key prefix)", self.url)
        } else {
            write!(f, "{} (key prefix {:?})", self.url, self.prefix)
        }
    }
}

/// What `copy` did.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// Where the volume was copied from.
    pub source: Location,
    /// Where the copy is.
    pub destination: Location,
    /// Source blocks stored.
    pub source_blocks: u64,
    /// Destination blocks written.
    pub blocks_written: u64,
    /// Whether an existing destination was continued (`--resume`).
    pub resumed: bool,
    /// Destination blocks left as they were, already equal to the source's.
    pub blocks_skipped: u64,
    /// Destination blocks deleted: stored there, zeros in the source.
    pub blocks_deleted: u64,
    /// Chunks compared at the end (0 when skipped).
    pub chunks_verified: u64,
    /// Chunks whose contents differ, by chunk number.
    pub mismatched_chunks: Vec<u64>,
}

/// Destination blocks written, skipped as already equal, and deleted.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    written: u64,
    skipped: u64,
    deleted: u64,
}

/// Reads chunk `chunk` (of `chunk_len` bytes) of `v`: only blocks in `stored` are fetched.
async fn read_chunk(v: &Opened, stored: &BTreeSet<u32>, chunk: u64, chunk_len: u64) -> Result<Bytes> {
    let bs = u64::from(v.volume.geometry.block_size());
    let first = chunk * chunk_len / bs;
    let last = (chunk + 1) * chunk_len / bs;
    let mut buf = BytesMut::zeroed(chunk_len as usize);
    for b in first..last {
        let id = BlockId(b as u32);
        if stored.contains(&id.0) {
            let data = v.device.read_block(id).await?;
            let at = ((b - first) * bs) as usize;
            buf[at..at + data.len()].copy_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn stored_set(blocks: &[s3block_store::StoredBlock]) -> BTreeSet<u32> {
    blocks.iter().map(|s| s.block.0).collect()
}

/// Copies the volume at `src` to a new volume at `dst`, or, with
/// `opts.resume`, into the volume an interrupted copy left there.
pub async fn copy(
    src: &Target,
    dst: &Target,
    opts: &CopyOptions,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let at_src = |e| on_side("the source", &src.url, e);
    let at_dst = |e| on_side("the copy", &dst.url, e);
    if let Some(lock) = read_lock(src.store.as_ref(), &src.prefix).await.map_err(at_src)?
        && !opts.force
    {
        return Err(Error::Locked {
            key: format!("{}{LOCK_NAME}", src.prefix),
            host: lock.host,
            since: lock.since,
        }
        .into());
    }
    let source_enc =
        src.args.open_encryption(&src.opened(), &src.url, &mut terminal_prompt).await.map_err(at_src)?;
    let s = open_with(src, &LayoutArgs::default(), source_enc.as_ref()).await.map_err(at_src)?;
    let g = s.volume.geometry;
    let dst_layout = LayoutArgs {
        hash_prefix: opts.hash_prefix,
        block_size: Some(opts.block_size.unwrap_or(g.block_size().into())),
        size: Some(g.size()),
        compression: opts.compress.clone(),
    };
    let scheme = source_scheme(&s, source_enc.as_ref())?;
    let dest_enc = dest_encryption(dst, opts, scheme, source_enc.as_ref())?;
    let existing = read_descriptor(dst.store.as_ref(), &dst.prefix).await.map_err(at_dst)?;
    let resumed = existing.is_some();
    match &existing {
        None => {
            create_with(dst, &dst_layout, dest_enc.as_ref(), false, &mut std::io::sink()).await.map_err(
                |e| match e {
                    crate::exit::CliError::Core(e) => at_dst(e).into(),
                    other => other,
                },
            )?;
        }
        Some(d) if !opts.resume => {
            return Err(Error::Config(format!(
                "{} already holds a volume ({} in blocks of {}, id {}); refusing to overwrite it. To continue a \
                 copy into it that was interrupted, run the same command with --resume; otherwise choose \
                 another destination (or --dst-prefix)",
                Location::of(dst),
                format::bytes(d.size),
                format::bytes(d.block_size),
                d.volume_id
            ))
            .into());
        }
        Some(d) => {
            let diffs = descriptor_differences(
                d,
                g.size(),
                dst_layout.block_size.unwrap_or(g.block_size().into()),
                opts.hash_prefix,
                opts.compress.compression()?,
                dest_enc.as_ref().map(|e| e.scheme.unwrap_or(EncryptionScheme::XChaCha20Poly1305)),
            )?;
            if !diffs.is_empty() {
                return Err(Error::Config(format!(
                    "refusing to resume into {}: the volume there (id {}) is not the copy this command makes; \
                     it differs in {}",
                    Location::of(dst),
                    d.volume_id,
                    diffs.join("; ")
                ))
                .into());
            }
            if let Some(lock) = read_lock(dst.store.as_ref(), &dst.prefix).await.map_err(at_dst)? {
                return Err(Error::Locked {
                    key: format!("{}{LOCK_NAME}", dst.prefix),
                    host: lock.host,
                    since: lock.since,
                }
                .into());
            }
        }
    }
    let d = open_with(dst, &dst_layout, dest_enc.as_ref()).await.map_err(at_dst)?;
    let src_bs = u64::from(g.block_size());
    let dst_bs = u64::from(d.volume.geometry.block_size());
    let chunk_len = src_bs.max(dst_bs);
    let parallel = (opts.parallel.max(1) as u64).min((COPY_MEMORY / chunk_len).max(1)) as usize;
    let src_blocks = stored_blocks(&s).await.map_err(at_src)?;
    let src_stored = stored_set(&src_blocks);
    let chunks: BTreeSet<u64> =
        src_blocks.iter().map(|b| u64::from(b.block.0) * src_bs / chunk_len).collect();
    // Resuming: what the destination already holds, and every chunk it or
    // the source has a block in.
    let before =
        if resumed { stored_set(&stored_blocks(&d).await.map_err(at_dst)?) } else { BTreeSet::new() };
    let todo: BTreeSet<u64> =
        chunks.iter().copied().chain(before.iter().map(|&b| u64::from(b) * dst_bs / chunk_len)).collect();
    let bar = progress(todo.len() as u64, if resumed { "resuming" } else { "copying" }, "chunks", opts.quiet);
    let (s_ref, d_ref, stored_ref, before_ref) = (&s, &d, &src_stored, &before);
    let (at_src, at_dst) = (&at_src, &at_dst);
    let done: Tally = futures::stream::iter(todo.iter().map(|&c| async move {
        let data = read_chunk(s_ref, stored_ref, c, chunk_len).await.map_err(at_src)?;
        let mut n = Tally::default();
        for (i, piece) in data.chunks(dst_bs as usize).enumerate() {
            let id = BlockId((c * chunk_len / dst_bs + i as u64) as u32);
            let there = before_ref.contains(&id.0);
            if is_zero(piece) {
                if there {
                    d_ref.device.write_block(id, data.slice_ref(piece)).await.map_err(at_dst)?;
                    n.deleted += 1;
                }
                continue;
            }
            if there {
                match d_ref.device.read_block(id).await {
                    Ok(old) if old.as_ref() == piece => {
                        n.skipped += 1;
                        continue;
                    }
                    // Different bytes, or an object that no longer decodes: rewritten.
                    Ok(_) | Err(Error::Corrupt { .. }) => {}
                    Err(e) => return Err(at_dst(e)),
                }
            }
            d_ref.device.write_block(id, data.slice_ref(piece)).await.map_err(at_dst)?;
            n.written += 1;
        }
        Ok::<Tally, Error>(n)
    }))
    .buffer_unordered(parallel)
    .inspect(|_| bar.inc(1))
    .try_fold(Tally::default(), |acc, n| async move {
        Ok(Tally {
            written: acc.written + n.written,
            skipped: acc.skipped + n.skipped,
            deleted: acc.deleted + n.deleted,
        })
    })
    .await?;
    bar.finish_and_clear();
    let mut report = CopyReport {
        source: Location::of(src),
        destination: Location::of(dst),
        source_blocks: src_blocks.len() as u64,
        blocks_written: done.written,
        resumed,
        blocks_skipped: done.skipped,
        blocks_deleted: done.deleted,
        chunks_verified: 0,
        mismatched_chunks: vec![],
    };
    if !opts.no_verify {
        let dst_stored = stored_set(&stored_blocks(&d).await.map_err(at_dst)?);
        let dst_chunks: BTreeSet<u64> =
            dst_stored.iter().map(|&b| u64::from(b) * dst_bs / chunk_len).collect();
        let all: BTreeSet<u64> = chunks.union(&dst_chunks).copied().collect();
        let bar = progress(all.len() as u64, "verifying", "chunks", opts.quiet);
        let ds = &dst_stored;
        let mut bad: Vec<u64> = futures::stream::iter(all.iter().map(|&c| async move {
            let a = read_chunk(s_ref, stored_ref, c, chunk_len).await.map_err(at_src)?;
            let b = read_chunk(d_ref, ds, c, chunk_len).await.map_err(at_dst)?;
            Ok::<_, Error>((c, a == b))
        }))
        .buffer_unordered(parallel)
        .inspect(|_| bar.inc(1))
        .try_filter_map(|(c, same)| async move { Ok((!same).then_some(c)) })
        .try_collect()
        .await?;
        bar.finish_and_clear();
        bad.sort_unstable();
        report.chunks_verified = all.len() as u64;
        report.mismatched_chunks = bad;
    }
    if json {
        write_json(out, &report)?;
    } else {
        writeln!(
            out,
            "Copied {} blocks of {} from {} into {} blocks of {} at {}{}.",
            format::count(report.source_blocks),
            format::bytes(src_bs),
            report.source,
            format::count(report.blocks_written),
            format::bytes(dst_bs),
            report.destination,
            if opts.no_verify { " (not verified)" } else { "" }
        )?;
        if report.resumed {
            writeln!(
                out,
                "Resumed into the existing copy: {} blocks already equal were skipped, {} written, {} deleted \
                 (zeros in the source).",
                format::count(report.blocks_skipped),
                format::count(report.blocks_written),
                format::count(report.blocks_deleted)
            )?;
        }
        if !report.mismatched_chunks.is_empty() {
            writeln!(
                out,
                "The copy differs from the source in {} chunks of {} (first at byte {}).",
                report.mismatched_chunks.len(),
                format::bytes(chunk_len),
                report.mismatched_chunks[0] * chunk_len
            )?;
        }
    }
    Ok(if report.mismatched_chunks.is_empty() { OK } else { PROBLEMS })
}
