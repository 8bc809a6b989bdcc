//! `s3block copy`: a volume into another store, prefix or block size.
//!
//! The copy works in chunks of the larger of the two block sizes: a chunk
//! is assembled from the source's stored blocks (absent ones are zeros and
//! cost no request), then cut into destination blocks, and only the non-zero
//! ones are written. Chunks run in parallel, bounded so the chunks in flight
//! stay within [`COPY_MEMORY`]. At the end every chunk is read back from both
//! volumes and compared, unless the caller skips it.
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
    read_lock,
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
    /// Chunks compared at the end (0 when skipped).
    pub chunks_verified: u64,
    /// Chunks whose contents differ, by chunk number.
    pub mismatched_chunks: Vec<u64>,
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

/// Copies the volume at `src` to a new volume at `dst`.
pub async fn copy(
    src: &Target,
    dst: &Target,
    opts: &CopyOptions,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    if let Some(lock) = read_lock(src.store.as_ref(), &src.prefix).await?
        && !opts.force
    {
        return Err(Error::Locked {
            key: format!("{}{LOCK_NAME}", src.prefix),
            host: lock.host,
            since: lock.since,
        }
        .into());
    }
    let source_enc = src.args.open_encryption(&src.opened(), &src.url, &mut terminal_prompt).await?;
    let s = open_with(src, &LayoutArgs::default(), source_enc.as_ref()).await?;
    let g = s.volume.geometry;
    let dst_layout = LayoutArgs {
        hash_prefix: opts.hash_prefix,
        block_size: Some(opts.block_size.unwrap_or(g.block_size().into())),
        size: Some(g.size()),
        compression: opts.compress.clone(),
    };
    let scheme = source_scheme(&s, source_enc.as_ref())?;
    let dest_enc = dest_encryption(dst, opts, scheme, source_enc.as_ref())?;
    create_with(dst, &dst_layout, dest_enc.as_ref(), false, &mut std::io::sink()).await?;
    let d = open_with(dst, &dst_layout, dest_enc.as_ref()).await?;
    let src_bs = u64::from(g.block_size());
    let dst_bs = u64::from(d.volume.geometry.block_size());
    let chunk_len = src_bs.max(dst_bs);
    let parallel = (opts.parallel.max(1) as u64).min((COPY_MEMORY / chunk_len).max(1)) as usize;
    let src_blocks = stored_blocks(&s).await?;
    let src_stored = stored_set(&src_blocks);
    let chunks: BTreeSet<u64> =
        src_blocks.iter().map(|b| u64::from(b.block.0) * src_bs / chunk_len).collect();
    let bar = progress(chunks.len() as u64, "copying", "chunks", opts.quiet);
    let (s_ref, d_ref, stored_ref) = (&s, &d, &src_stored);
    let written: u64 = futures::stream::iter(chunks.iter().map(|&c| async move {
        let data = read_chunk(s_ref, stored_ref, c, chunk_len).await?;
        let mut n = 0;
        for (i, piece) in data.chunks(dst_bs as usize).enumerate() {
            if !is_zero(piece) {
                let id = BlockId((c * chunk_len / dst_bs + i as u64) as u32);
                d_ref.device.write_block(id, data.slice_ref(piece)).await?;
                n += 1;
            }
        }
        Ok::<u64, Error>(n)
    }))
    .buffer_unordered(parallel)
    .inspect(|_| bar.inc(1))
    .try_fold(0, |acc, n| async move { Ok(acc + n) })
    .await?;
    bar.finish_and_clear();
    let mut report = CopyReport {
        source: Location::of(src),
        destination: Location::of(dst),
        source_blocks: src_blocks.len() as u64,
        blocks_written: written,
        chunks_verified: 0,
        mismatched_chunks: vec![],
    };
    if !opts.no_verify {
        let dst_stored = stored_set(&stored_blocks(&d).await?);
        let dst_chunks: BTreeSet<u64> =
            dst_stored.iter().map(|&b| u64::from(b) * dst_bs / chunk_len).collect();
        let all: BTreeSet<u64> = chunks.union(&dst_chunks).copied().collect();
        let bar = progress(all.len() as u64, "verifying", "chunks", opts.quiet);
        let ds = &dst_stored;
        let mut bad: Vec<u64> = futures::stream::iter(all.iter().map(|&c| async move {
            let a = read_chunk(s_ref, stored_ref, c, chunk_len).await?;
            let b = read_chunk(d_ref, ds, c, chunk_len).await?;
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
