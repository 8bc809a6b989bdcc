//! The commands that look at one volume: `create`, `info`, `ls` and `cat`
//! (`stat` is in [`crate::stat`], `unlock` in [`crate::unlock`]). Each takes an opened [`Target`], so tests and the
//! Garage suite drive them with any store handle.

use std::io::Write;

use futures::{StreamExt, TryStreamExt};
use object_store::{Attribute, GetOptions};
use serde::Serialize;

use s3block_core::RequestCounts;
use s3block_core::{BlockDevice, BlockId, Error, Liveness, Result};
use s3block_store::{
    Create, EncryptionOptions, GET_PRICE_PER_1000, GeometrySource, ObjectBlockDevice, PUT_PRICE_PER_1000,
    StoredBlock, Volume, VolumeBuilder, VolumeInfo, VolumeOptions, read_lock, store_error,
};

use crate::args::{BlockRange, LayoutArgs};
use crate::cost::{S3_STANDARD_PRICES, S3_STANDARD_SOURCE};
use crate::exit::{CliResult, OK};
use crate::format::{self, Align, Table, write_json};
use crate::target::Target;

pub use crate::stat::{StatReport, stat};

/// An opened volume: the store, the volume's layout and a device over it.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Where it lives.
    pub target: Target,
    /// Geometry and key layout.
    pub volume: VolumeInfo,
    /// Block access (reads decode every known encoding).
    pub device: ObjectBlockDevice,
}

/// The volume options the layout flags give; refuses a bad compression level.
pub fn volume_options(layout: &LayoutArgs) -> Result<VolumeOptions> {
    let options = VolumeOptions {
        size: layout.size,
        block_size: layout.block_size,
        hash_prefix: layout.hash_prefix.then_some(true),
        ..Default::default()
    };
    Ok(options.with_compression(layout.compression.compression()?))
}

/// Asks for a password on the terminal, without echo (an error when
/// standard input is not a terminal).
pub fn terminal_prompt(text: &str) -> std::io::Result<String> {
    s3block_store::StoreArgs::terminal_prompt(|t: &str| rpassword::prompt_password(t))(text)
}

/// Opens the volume at `target`; layout flags are checked against it. An
/// encrypted volume (its descriptor says so, or `--encrypt` for one s3backer
/// made) is unlocked with the password from the target's options, else a
/// prompt; a wrong one fails here with "wrong password".
pub async fn open(target: &Target, layout: &LayoutArgs) -> Result<Opened> {
    let encryption = target.args.open_encryption(&target.opened(), &target.url, &mut terminal_prompt).await?;
    open_with(target, layout, encryption.as_ref()).await
}

/// The volume at `target` as the commands open it: no mount lock (the
/// commands that must refuse a mounted volume check it themselves), the
/// layout flags checked against the volume or used to create it.
pub(crate) fn builder(target: &Target, layout: &LayoutArgs) -> Result<VolumeBuilder> {
    let mut b = Volume::builder(target.opened())
        .name(&target.url)
        .without_lock()
        .default_content_encoding(target.args.default_content_encoding.clone());
    if let Some(size) = layout.size {
        b = b.size(size);
    }
    if let Some(block_size) = layout.block_size {
        b = b.block_size(block_size);
    }
    if layout.hash_prefix {
        b = b.hash_prefix(true);
    }
    if let Some(compression) = layout.compression.compression()? {
        b = b.compress(compression);
    }
    Ok(b)
}

impl Opened {
    fn new(target: &Target, v: &Volume) -> Self {
        Opened { target: target.clone(), volume: v.info().clone(), device: v.device().clone() }
    }
}

/// Opens the volume at `target` with these encryption options.
pub async fn open_with(
    target: &Target,
    layout: &LayoutArgs,
    encryption: Option<&EncryptionOptions>,
) -> Result<Opened> {
    let mut b = builder(target, layout)?.read_only(true);
    if let Some(enc) = encryption {
        b = b.encryption(enc.clone());
    }
    let v = b.open().await.map_err(|e| no_volume(target, layout, e))?;
    Ok(Opened::new(target, &v))
}

/// Opens the volume at `target` to look at its objects without decoding
/// them: no password is asked (`info`, `ls`, `stat` and `erase` work on an
/// encrypted volume without it); the device can list but not read blocks
/// that are compressed or encrypted.
pub async fn inspect(target: &Target, layout: &LayoutArgs) -> Result<Opened> {
    let v = builder(target, layout)?
        .read_only(true)
        .inspect_only()
        .open()
        .await
        .map_err(|e| no_volume(target, layout, e))?;
    Ok(Opened::new(target, &v))
}

/// The error for a prefix holding no volume, for commands that take no
/// geometry options: how to make one, or how to record the geometry of
/// blocks an s3backer volume stored without its block 0.
pub(crate) fn no_volume(target: &Target, layout: &LayoutArgs, e: Error) -> Error {
    match e {
        Error::NoVolume { .. } if layout.size.is_none() => Error::Config(format!(
            "no volume at {} (key prefix {:?}: no s3block descriptor, no s3backer block 0); create one with \
                 `s3block create {} --size SIZE`, or, for blocks an s3backer volume stored without block 0, \
                 record their geometry once with `s3block create {} --adopt --size SIZE --block-size SIZE`",
            target.url, target.prefix, target.url, target.url
        )),
        other => other,
    }
}

/// The stored blocks of `v`, sorted by number. On a store that lists keys
/// in order, one LIST request first looks for any block: an empty volume
/// costs that one request instead of one per range of a parallel listing.
pub async fn stored_blocks(v: &Opened) -> Result<Vec<StoredBlock>> {
    stored_blocks_in(v, 0..v.volume.geometry.block_count()).await
}

/// [`stored_blocks`] among `blocks`.
pub async fn stored_blocks_in(v: &Opened, blocks: std::ops::Range<u64>) -> Result<Vec<StoredBlock>> {
    if v.target.plan.sorted
        && !s3block_store::any_block_stored(v.target.store.as_ref(), &v.volume.layout).await?
    {
        return Ok(Vec::new());
    }
    v.device.list_blocks_in(blocks).await
}

/// `s3block create`: encrypted with `--encrypt` (the password from
/// `--password-file`, `S3BLOCK_PASSWORD` or a prompt asking twice).
///
/// With `adopt`, writes the descriptor for block objects already stored
/// under the prefix (a volume whose descriptor was lost); `layout` must give
/// the size and block size they were written with.
pub async fn create(
    target: &Target,
    layout: &LayoutArgs,
    adopt: bool,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let encryption = target.args.create_encryption(&target.opened(), &target.url, &mut terminal_prompt)?;
    if adopt && layout.block_size.is_none() {
        return Err(Error::Config(
            "--adopt needs the --block-size the stored blocks were written with".into(),
        )
        .into());
    }
    write_volume(target, layout, encryption.as_ref(), adopt, json, out).await
}

/// `s3block create` with these encryption options.
pub async fn create_with(
    target: &Target,
    layout: &LayoutArgs,
    encryption: Option<&EncryptionOptions>,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    write_volume(target, layout, encryption, false, json, out).await
}

async fn write_volume(
    target: &Target,
    layout: &LayoutArgs,
    encryption: Option<&EncryptionOptions>,
    adopt: bool,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let mut b = builder(target, layout)?.create(if adopt { Create::Adopt } else { Create::New });
    if let Some(enc) = encryption {
        b = b.encryption(enc.clone());
    }
    let v = b.open().await?;
    let d = v
        .descriptor()
        .ok_or_else(|| Error::Config(format!("no descriptor was written at {}", target.url)))?;
    let scheme = d.encryption_params()?.map(|p| p.scheme());
    if json {
        write_json(out, &d)?;
    } else {
        writeln!(
            out,
            "Created volume {} at {}: {} in {} blocks of {}{}{}{}.",
            d.volume_id,
            target.url,
            format::bytes(d.size),
            format::count(d.size / d.block_size),
            format::bytes(d.block_size),
            d.compressed_with()?.map(|c| format!(", {c}")).unwrap_or_default(),
            scheme.map(|s| format!(", encrypted with {s}")).unwrap_or_default(),
            if d.hash_prefix { ", hash-prefixed keys" } else { "" },
        )?;
    }
    Ok(OK)
}

/// What `info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InfoReport {
    /// Volume size in bytes.
    pub size: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u64,
    /// Key prefix.
    pub prefix: String,
    /// Whether keys carry the hash prefix.
    pub hash_prefix: bool,
    /// Where the geometry came from: `descriptor`, `block0` or `options`.
    pub geometry_source: String,
    /// Compression level new blocks are written with, if any.
    pub compression: Option<u32>,
    /// Its algorithm (`deflate` or `zstd`), if any.
    pub compression_algorithm: Option<String>,
    /// Encryption scheme, if the descriptor records one.
    pub encryption: Option<String>,
    /// Volume id from the descriptor.
    pub volume_id: Option<String>,
    /// Creation time from the descriptor.
    pub created_at: Option<String>,
    /// Lock holder's host, when locked.
    pub locked_by: Option<String>,
    /// When the lock was taken.
    pub locked_since: Option<String>,
    /// The lock holder's process id, when the lock records it.
    pub locked_pid: Option<u32>,
    /// The boot id of the lock holder's host when it took the lock, when
    /// the lock records it.
    pub locked_boot_id: Option<String>,
    /// For a lock of this machine that records its holder: whether the
    /// holder still runs (`None` when that cannot be told).
    pub holder_alive: Option<bool>,
    /// Blocks stored.
    pub blocks_stored: u64,
    /// Bytes of the stored objects.
    pub bytes_stored: u64,
    /// Bytes those blocks hold decoded (blocks stored times block size).
    pub bytes_decoded: u64,
    /// Decoded bytes per stored byte (1.0 without compression).
    pub compression_ratio: f64,
    /// Storage cost per month at S3 Standard prices.
    pub storage_cost_per_month: f64,
    /// The requests this `info` made (opening the volume, reading the
    /// lock, listing), and their cost at S3 Standard list prices.
    pub requests: RequestReport,
}

/// Requests a command made, and what they cost.
#[derive(Debug, Clone, Serialize)]
pub struct RequestReport {
    /// GET and HEAD requests.
    pub gets: u64,
    /// PUT requests.
    pub puts: u64,
    /// LIST requests.
    pub lists: u64,
    /// DELETE requests (single and bulk).
    pub deletes: u64,
    /// Dollars, at PUT/LIST and GET list prices.
    pub cost: f64,
}

impl From<RequestCounts> for RequestReport {
    fn from(c: RequestCounts) -> Self {
        RequestReport {
            gets: c.gets,
            puts: c.puts,
            lists: c.lists,
            deletes: c.deletes + c.bulk_deletes,
            cost: c.cost(PUT_PRICE_PER_1000, GET_PRICE_PER_1000),
        }
    }
}

/// `s3block info`.
pub async fn info(target: &Target, layout: &LayoutArgs, json: bool, out: &mut dyn Write) -> CliResult {
    let v = inspect(target, layout).await?;
    let lock = read_lock(target.store.as_ref(), &target.prefix).await?;
    let liveness = lock.as_ref().and_then(|l| l.liveness(&s3block_core::local_hostname()));
    let stored = stored_blocks(&v).await?;
    let g = v.volume.geometry;
    let bytes_stored: u64 = stored.iter().map(|s| s.size).sum();
    let bytes_decoded = stored.len() as u64 * u64::from(g.block_size());
    let (source, descriptor) = match &v.volume.source {
        GeometrySource::Descriptor(d) => ("descriptor", Some(d)),
        GeometrySource::Block0 => ("block0", None),
        GeometrySource::Options => ("options", None),
        _ => ("other", None),
    };
    let report = InfoReport {
        size: g.size(),
        block_size: g.block_size(),
        block_count: g.block_count(),
        prefix: target.prefix.clone(),
        hash_prefix: v.volume.layout.hash_prefix(),
        geometry_source: source.into(),
        compression: descriptor.and_then(|d| d.compression),
        compression_algorithm: match descriptor {
            Some(d) => d.compressed_with()?.map(|c| c.algorithm().to_string()),
            None => None,
        },
        encryption: match descriptor {
            Some(d) => d.encryption_params()?.map(|p| p.scheme().to_string()),
            None => {
                target.args.encrypt.map(|s| s.map_or("s3backer's (aes-128-cbc)".into(), |s| s.to_string()))
            }
        },
        volume_id: descriptor.map(|d| d.volume_id.clone()),
        created_at: descriptor.map(|d| d.created_at.clone()),
        locked_by: lock.as_ref().map(|l| l.host.clone()),
        locked_since: lock.as_ref().map(|l| l.since.clone()),
        locked_pid: lock.as_ref().and_then(|l| l.process.pid),
        locked_boot_id: lock.as_ref().and_then(|l| l.process.boot_id.clone()),
        holder_alive: crate::unlock::holder_alive(liveness.as_ref()),
        blocks_stored: stored.len() as u64,
        bytes_stored,
        bytes_decoded,
        compression_ratio: if bytes_stored == 0 { 1.0 } else { bytes_decoded as f64 / bytes_stored as f64 },
        storage_cost_per_month: bytes_stored as f64 / (1u64 << 30) as f64
            * S3_STANDARD_PRICES.storage_per_gb_month,
        requests: target.counters.snapshot().into(),
    };
    if json {
        write_json(out, &report)?;
        return Ok(OK);
    }
    let r = &report;
    let mut t = Table::new(&[("", Align::Left), ("", Align::Left)]);
    let mut row = |k: &str, v: String| t.row(vec![k.to_owned(), v]);
    row("volume", target.url.clone());
    row("size", format!("{} ({} bytes)", format::bytes(r.size), format::count(r.size)));
    row("blocks", format!("{} of {}", format::count(r.block_count), format::bytes(r.block_size.into())));
    row(
        "geometry from",
        match source {
            "descriptor" => "the s3block volume descriptor".into(),
            "block0" => "block 0's s3backer metadata (no s3block descriptor)".into(),
            _ => "the options given (nothing stored yet)".into(),
        },
    );
    row("keys", if r.hash_prefix { "hash-prefixed".into() } else { "plain block numbers".to_owned() });
    let algorithm = r.compression_algorithm.as_deref().unwrap_or("deflate");
    row("compression", r.compression.map_or("none".into(), |l| format!("{algorithm}, level {l}")));
    row("encryption", r.encryption.clone().unwrap_or_else(|| "none".into()));
    if let Some(id) = &r.volume_id {
        row("volume id", id.clone());
    }
    if let Some(at) = &r.created_at {
        row("created", at.clone());
    }
    row(
        "lock",
        match (&lock, &liveness) {
            (Some(l), Some(Liveness::Alive(why))) => {
                format!(
                    "held by {} (this machine; the holder runs: {why})",
                    crate::unlock::describe_holder(l)
                )
            }
            (Some(l), Some(Liveness::Gone(why))) => format!(
                "held by {} (this machine; the holder is gone: {why}; the next mount takes the lock over)",
                crate::unlock::describe_holder(l)
            ),
            (Some(l), _) => format!("held by {}", crate::unlock::describe_holder(l)),
            (None, _) => "not mounted".into(),
        },
    );
    row("blocks stored", format!("{} ({:.1}% of the volume)", format::count(r.blocks_stored), percent(r)));
    row(
        "bytes stored",
        format!("{} ({} decoded)", format::bytes(r.bytes_stored), format::bytes(r.bytes_decoded)),
    );
    row("compression ratio", format!("{:.2}", r.compression_ratio));
    row("storage per month", format!("{} ({S3_STANDARD_SOURCE})", format::money(r.storage_cost_per_month)));
    let q = &r.requests;
    row(
        "this command",
        format!(
            "{} GET, {} LIST, {} PUT, {} DELETE: {} (PUT/LIST ${PUT_PRICE_PER_1000}/1000, GET ${GET_PRICE_PER_1000}/1000)",
            q.gets,
            q.lists,
            q.puts,
            q.deletes,
            format::money(q.cost)
        ),
    );
    let text = t.render();
    write!(out, "{}", text.split_once('\n').map_or("", |(_, rows)| rows))?;
    Ok(OK)
}

fn percent(r: &InfoReport) -> f64 {
    r.blocks_stored as f64 * 100.0 / r.block_count as f64
}

/// One stored block as `ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    /// Block number.
    pub block: u32,
    /// Object key.
    pub key: String,
    /// Object size in bytes.
    pub size: u64,
    /// Content-Encoding, with `--long` only (it costs a HEAD per block).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// A run of consecutive stored blocks, for `ls --summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Run {
    /// First block.
    pub first: u32,
    /// Last block.
    pub last: u32,
    /// Number of blocks.
    pub blocks: u64,
    /// Bytes of their objects.
    pub bytes: u64,
}

/// Groups stored blocks (sorted by number) into runs of consecutive ones.
pub fn runs(stored: &[StoredBlock]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for s in stored {
        match out.last_mut() {
            Some(r) if u64::from(r.last) + 1 == u64::from(s.block.0) => {
                r.last = s.block.0;
                r.blocks += 1;
                r.bytes += s.size;
            }
            _ => out.push(Run { first: s.block.0, last: s.block.0, blocks: 1, bytes: s.size }),
        }
    }
    out
}

/// `s3block ls`. With `long`, fetches each block's headers to show its encoding.
pub async fn ls(
    target: &Target,
    layout: &LayoutArgs,
    range: Option<BlockRange>,
    summary: bool,
    long: bool,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let v = inspect(target, layout).await?;
    let count = v.volume.geometry.block_count();
    let (start, end) = match range {
        Some(r) => (r.start.min(count), r.end.unwrap_or(count).min(count)),
        None => (0, count),
    };
    let stored = stored_blocks_in(&v, start..end).await?;
    if summary {
        let runs = runs(&stored);
        if json {
            write_json(out, &runs)?;
            return Ok(OK);
        }
        let mut t = Table::new(&[
            ("first", Align::Right),
            ("last", Align::Right),
            ("blocks", Align::Right),
            ("bytes", Align::Right),
        ]);
        for r in &runs {
            t.row(vec![
                r.first.to_string(),
                r.last.to_string(),
                format::count(r.blocks),
                format::bytes(r.bytes),
            ]);
        }
        write!(out, "{}", t.render())?;
        writeln!(
            out,
            "{} blocks stored in {} runs",
            format::count(stored.len() as u64),
            format::count(runs.len() as u64)
        )?;
        return Ok(OK);
    }
    let layout = &v.volume.layout;
    let entries: Vec<LsEntry> = futures::stream::iter(stored.iter().map(|s| async move {
        let key = layout.key(s.block);
        let encoding = if long { Some(head_encoding(target, &key, s.block).await?) } else { None };
        Ok::<_, Error>(LsEntry { block: s.block.0, key, size: s.size, encoding })
    }))
    .buffered(16)
    .try_collect()
    .await?;
    if json {
        write_json(out, &entries)?;
        return Ok(OK);
    }
    let mut cols = vec![("block", Align::Right), ("key", Align::Left), ("size", Align::Right)];
    if long {
        cols.push(("encoding", Align::Left));
    }
    let mut t = Table::new(&cols);
    for e in &entries {
        let mut row = vec![e.block.to_string(), e.key.clone(), format::count(e.size)];
        if let Some(enc) = &e.encoding {
            row.push(enc.clone());
        }
        t.row(row);
    }
    write!(out, "{}", t.render())?;
    Ok(OK)
}

async fn head_encoding(target: &Target, key: &str, block: BlockId) -> Result<String> {
    let head = GetOptions { head: true, ..Default::default() };
    let r = target
        .store
        .get_opts(&s3block_store::key_path(key)?, head)
        .await
        .map_err(|e| store_error(e, key, Some(block)))?;
    Ok(r.attributes.get(&Attribute::ContentEncoding).map_or_else(|| "identity".to_owned(), |v| v.to_string()))
}

/// `s3block cat`: the decoded block, or the object as stored with `raw`.
pub async fn cat(
    target: &Target,
    layout: &LayoutArgs,
    block: u32,
    raw: bool,
    out: &mut dyn Write,
) -> CliResult {
    let v = open(target, layout).await?;
    let id = BlockId(block);
    v.volume.geometry.check_block(id)?;
    let data = if raw {
        let key = v.volume.layout.key(id);
        match target.store.get_opts(&s3block_store::key_path(&key)?, GetOptions::default()).await {
            Ok(r) => r.bytes().await.map_err(|e| store_error(e, &key, Some(id)))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::Config(format!(
                    "block {block} is not stored (no object {key}): it reads as zeros"
                ))
                .into());
            }
            Err(e) => return Err(store_error(e, &key, Some(id)).into()),
        }
    } else {
        v.device.read_block(id).await?
    };
    out.write_all(&data)?;
    Ok(OK)
}
