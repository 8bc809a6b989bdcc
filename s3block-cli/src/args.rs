//! The command line: every subcommand and its options (clap derive).
//!
//! [`StoreArgs`] (from the store crate) say where a volume lives, how to
//! reach it and where its password comes from; the mount binary flattens the
//! same struct, so both read the same flags and the same environment
//! variables. [`LayoutArgs`] say how a volume is laid out; [`VolumeArgs`]
//! holds both for the commands that open one volume.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use s3block_store::StoreArgs;
use s3block_store::{CompressArgs, EncryptionScheme};

use crate::completions::CompletionsArgs;
use crate::cost::{self, S3_2009_PRICES, S3_2009_SOURCE, S3_STANDARD_PRICES, S3_STANDARD_SOURCE};
use crate::exit::EXIT_CODES_HELP;

/// Inspect, verify, repair, copy and cost out s3block volumes without mounting them.
#[derive(Debug, Parser)]
#[command(name = "s3block", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a volume: write its descriptor. Refuses to overwrite an existing volume.
    #[command(after_help = EXIT_CODES_HELP)]
    Create(CreateArgs),
    /// Show a volume's geometry, encodings, lock holder, blocks and bytes stored and monthly cost.
    #[command(after_help = EXIT_CODES_HELP)]
    Info(InfoArgs),
    /// List the stored blocks: number, key, size, encoding.
    #[command(after_help = EXIT_CODES_HELP)]
    Ls(LsArgs),
    /// Write one block to stdout, decoded (or as stored with --raw).
    #[command(after_help = EXIT_CODES_HELP)]
    Cat(CatArgs),
    /// Show one block's object headers and metadata, with what they mean.
    #[command(after_help = EXIT_CODES_HELP)]
    Stat(StatArgs),
    /// Fetch and decode every stored block; list the bad ones by number and key.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(VerifyArgs),
    /// Delete every block, the descriptor and the lock of a volume.
    #[command(after_help = EXIT_CODES_HELP)]
    Erase(EraseArgs),
    /// Change the size of a volume (SIZE, +SIZE or -SIZE); s3backer reads the new size too.
    ///
    /// Given a store URL, the volume must not be mounted: it grows, or shrinks (refused while
    /// blocks past the new end hold data, unless --discard-tail). Given the mount point of a
    /// running s3block mount (or its device file), the mount grows the volume in place, and the
    /// device file's size changes at once; then `losetup -c` and `resize2fs` (or `pvresize`)
    /// grow what sits on it. A mounted volume only grows.
    #[command(after_help = EXIT_CODES_HELP)]
    Resize(ResizeArgs),
    /// Break a stale mount lock (s3backer's --reset-mounted-flag), after showing who held it.
    #[command(after_help = EXIT_CODES_HELP)]
    Unlock(UnlockArgs),
    /// Estimate the cost of a volume at one or more block sizes, before creating it.
    #[command(after_help = EXIT_CODES_HELP)]
    Cost(CostArgs),
    /// Copy a volume to another store, prefix or block size (re-blocking as needed).
    ///
    /// The source is reached with the store options (--endpoint, --region, --access-file,
    /// --force-path-style, --prefix); the copy with --dst-endpoint, --dst-region,
    /// --dst-access-file, --dst-force-path-style and --dst-prefix, each of the first four
    /// the source's when not given. The source is signed as by every command
    /// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else --access-file, else ~/.s3backer_passwd);
    /// the copy with --dst-access-file alone when it is given, else as the source.
    /// Errors say whether the source or the copy failed.
    ///
    /// At the end both volumes are read back and compared. An interrupted copy is
    /// continued with --resume: destination blocks whose decoded bytes already equal
    /// the source's are skipped, the others written (a GET of each stored block
    /// instead of its PUT).
    #[command(after_help = EXIT_CODES_HELP)]
    Copy(CopyArgs),
    /// Show the request and cache statistics of a running mount.
    #[command(after_help = EXIT_CODES_HELP)]
    Stats(StatsArgs),
    /// Serve the volumes made in the store of a running `s3block-fuse --all-volumes` mount since
    /// it started, at once (the mount also looks every 30 seconds); says which.
    #[command(after_help = EXIT_CODES_HELP)]
    Rescan(RescanArgs),
    /// Inspect or discard a disk cache directory (a mount's --cache-dir).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print the shell completion script of this command for bash, zsh or fish.
    ///
    /// For example: `s3block completions bash > /etc/bash_completion.d/s3block`.
    /// The Debian package installs the scripts of s3block, s3block-fuse and
    /// s3block-nbd already.
    Completions(CompletionsArgs),
}

/// `s3block cache ...`: a disk cache directory, read or removed without
/// the store and without mounting.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show which volume a cache directory belongs to, its blocks, the
    /// blocks not yet in the bucket (by number), its state and damage.
    #[command(after_help = EXIT_CODES_HELP)]
    Inspect(CacheInspectArgs),
    /// Delete a cache directory's files, dirty blocks included (refused
    /// while a mount uses it, and without --force while it holds blocks not
    /// yet in the bucket).
    #[command(after_help = EXIT_CODES_HELP)]
    Discard(CacheDiscardArgs),
}

/// `s3block cache inspect`.
#[derive(Debug, Clone, Args)]
pub struct CacheInspectArgs {
    /// The cache directory (the mount's --cache-dir).
    pub dir: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block cache discard`.
#[derive(Debug, Clone, Args)]
pub struct CacheDiscardArgs {
    /// The cache directory (the mount's --cache-dir).
    pub dir: PathBuf,
    /// Discard even blocks not yet in the bucket: their data is lost.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// How a volume is laid out: geometry, key naming, compression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct LayoutArgs {
    /// Prefix block keys with a hash of the block number, spreading them over the key space (s3backer's --blockHashPrefix).
    #[arg(long, alias = "blockHashPrefix", env = "S3BLOCK_HASH_PREFIX")]
    pub hash_prefix: bool,

    /// Block size, a power of two from 512 to 64M (e.g. 256K).
    #[arg(long, alias = "blockSize", env = "S3BLOCK_BLOCK_SIZE", value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub block_size: Option<u64>,

    /// Volume size (e.g. 30G).
    #[arg(long, env = "S3BLOCK_SIZE", value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub size: Option<u64>,

    /// Compression of blocks written: --compress[=deflate|zstd|LEVEL], --compress-level.
    #[command(flatten)]
    pub compression: CompressArgs,
}

/// How to reach a volume and how it is laid out: the options every command
/// that opens one volume takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct VolumeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub layout: LayoutArgs,
}

/// `--json` for commands that print data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct OutputArgs {
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// `s3block create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://; or
    /// MOUNTPOINT/NAME, a new volume NAME of a running mount of several
    /// volumes (s3block-fuse --all-volumes), whose file appears at once.
    pub store: String,
    /// Write the descriptor for block objects already stored under the
    /// prefix (a volume whose descriptor was lost, or an s3backer volume
    /// whose block 0 is zero), with the --size and --block-size they were
    /// written with. Without it, create refuses a prefix that holds blocks.
    #[arg(long)]
    pub adopt: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub volume: VolumeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://.
    pub store: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://.
    pub store: String,
    /// Only blocks A to B-1 (`A..B`, `A..`, `..B`; decimal or 0x hex).
    #[arg(long, value_name = "A..B", value_parser = parse_block_range)]
    pub range: Option<BlockRange>,
    /// Runs of consecutive stored blocks instead of one line per block.
    #[arg(long)]
    pub summary: bool,
    /// Also show each block's Content-Encoding (one HEAD request per block).
    #[arg(long, short)]
    pub long: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block cat`.
#[derive(Debug, Clone, Args)]
pub struct CatArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://.
    pub store: String,
    /// Block number (decimal or 0x hex, as in keys).
    #[arg(value_parser = parse_block_number)]
    pub block: u32,
    /// The object as stored (compressed, encrypted), not the decoded block.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
}

/// `s3block stat`.
#[derive(Debug, Clone, Args)]
pub struct StatArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://.
    pub store: String,
    /// Block number (decimal or 0x hex, as in keys).
    #[arg(value_parser = parse_block_number)]
    pub block: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://.
    pub store: String,
    /// Blocks fetched at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub parallel: u16,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block erase`.
#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://; or
    /// MOUNTPOINT/NAME, a volume of a running mount of several volumes
    /// (refused while its file is open), whose file then goes.
    pub store: String,
    /// Do not ask for confirmation (needed when standard input is not a terminal), and erase even while the mount lock is held.
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
}

/// `s3block resize`.
#[derive(Debug, Clone, Args)]
pub struct ResizeArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory:// (not mounted); or the mount point
    /// (or device file) of a mounted one, to grow it in place; or MOUNTPOINT/NAME, a volume of a
    /// running mount of several volumes.
    pub store: String,
    /// The new size (40G), or how much to grow (+10G) or shrink (-2G) it by; a whole number of blocks.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = crate::resize::parse_size_change)]
    pub size: crate::resize::SizeChange,
    /// The volume's block size, only checked: a resize keeps it (`s3block copy --block-size` changes it).
    #[arg(long, alias = "blockSize", value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub block_size: Option<u64>,
    /// Shrink even when blocks past the new end hold data: delete them (in bulk).
    #[arg(long)]
    pub discard_tail: bool,
    /// Do not ask before --discard-tail deletes blocks (needed when standard input is not a terminal).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block unlock`.
#[derive(Debug, Clone, Args)]
pub struct UnlockArgs {
    /// The volume: s3://BUCKET/PREFIX, file:///PATH or memory://.
    pub store: String,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// The volume to copy from (its layout is read from the store); its key
    /// prefix is the URL's, followed by --prefix.
    pub src: String,
    /// Where to create the copy (must hold no volume yet, unless --resume);
    /// its key prefix is the URL's, followed by --dst-prefix (never --prefix).
    /// The copy has the source's layout unless --block-size, --compress or
    /// --hash-prefix say otherwise.
    pub dst: String,
    /// Key prefix of the copy, added after the one in DST (--prefix is the source's).
    #[arg(long = "dst-prefix", env = "S3BLOCK_DST_PREFIX", value_name = "PREFIX")]
    pub dst_prefix: Option<String>,
    /// How to reach the copy's store, when not as the source's.
    #[command(flatten)]
    pub dst_store: DstStoreArgs,
    /// Continue an interrupted copy: when DST already holds a volume with the
    /// layout and encryption this copy would create, blocks already equal
    /// there are skipped and the others written. A DST whose layout differs is refused.
    #[arg(long)]
    pub resume: bool,
    /// Block size of the copy (default: the source's).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub block_size: Option<u64>,
    /// Compression of the copy's blocks: --compress[=deflate|zstd|LEVEL], --compress-level.
    #[command(flatten)]
    pub compression: CompressArgs,
    /// Use the hash key prefix in the copy.
    #[arg(long)]
    pub hash_prefix: bool,
    /// Skip reading the copy back at the end.
    #[arg(long)]
    pub no_verify: bool,
    /// Copy even while the source is mounted (its contents may be changing).
    #[arg(long)]
    pub force: bool,
    /// Blocks copied at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub parallel: u16,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// How to reach the source (and the copy, unless --dst-* say otherwise), the source's prefix and password.
    #[command(flatten)]
    pub store_args: StoreArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dest: DestArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// How `copy` reaches the store of the copy, when it differs from the
/// source's: each option not given is the source's (`--endpoint`,
/// `--region`, `--access-file`, `--force-path-style`).
///
/// Credentials: with `--dst-access-file` the copy is signed with that file
/// only (the `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` environment is not
/// used for it); without it, the copy is signed as the source is (the
/// `AWS_*` environment, else `--access-file`, else `~/.s3backer_passwd`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct DstStoreArgs {
    /// S3 endpoint URL of the copy's store (default: the source's --endpoint).
    #[arg(long = "dst-endpoint", env = "S3BLOCK_DST_ENDPOINT", value_name = "URL")]
    pub dst_endpoint: Option<String>,
    /// S3 region of the copy's store (default: the source's --region).
    #[arg(long = "dst-region", env = "S3BLOCK_DST_REGION", value_name = "REGION")]
    pub dst_region: Option<String>,
    /// Access file for the copy's store; when given, the copy is signed with it
    /// only, not with the AWS_* environment (default: as the source is signed).
    #[arg(long = "dst-access-file", env = "S3BLOCK_DST_ACCESS_FILE", value_name = "FILE")]
    pub dst_access_file: Option<PathBuf>,
    /// Path-style addressing for the copy's store (also on when the source has --force-path-style).
    #[arg(long = "dst-force-path-style", env = "S3BLOCK_DST_FORCE_PATH_STYLE")]
    pub dst_force_path_style: bool,
}

impl DstStoreArgs {
    /// The store options of the copy: these, else the source's `src` for
    /// endpoint, region, access file and path style; `prefix` as the key
    /// prefix; never the source's encryption or password options; the
    /// source's credential options unless the copy has its own. The
    /// source's S3 request options (--sse, --storage-class, --access-type)
    /// apply to the copy, the only side written.
    pub fn store_args(&self, src: &StoreArgs, prefix: Option<String>) -> StoreArgs {
        StoreArgs {
            endpoint: self.dst_endpoint.clone().or_else(|| src.endpoint.clone()),
            region: self.dst_region.clone().or_else(|| src.region.clone()),
            access_file: self.dst_access_file.clone().or_else(|| src.access_file.clone()),
            force_path_style: self.dst_force_path_style || src.force_path_style,
            vhost: !self.dst_force_path_style && src.vhost,
            prefix,
            encrypt: None,
            password_file: None,
            password: None,
            sse: src.sse.clone(),
            sse_key_id: src.sse_key_id.clone(),
            storage_class: src.storage_class.clone(),
            access_type: src.access_type.clone(),
            access_id: if self.own_credentials() { None } else { src.access_id.clone() },
            access_key_env: if self.own_credentials() { None } else { src.access_key_env.clone() },
            access_key: None,
            instance_credentials: if self.own_credentials() {
                None
            } else {
                src.instance_credentials.clone()
            },
            imdsv2_only: !self.own_credentials() && src.imdsv2_only,
            // The copy's blocks are written with their Content-Encoding.
            default_content_encoding: None,
            request_timeout: src.request_timeout,
            ca_cert: src.ca_cert.clone(),
            insecure_tls: src.insecure_tls,
            max_upload_speed: src.max_upload_speed,
            max_download_speed: src.max_download_speed,
            list_threads: src.list_threads,
        }
    }

    /// Whether the copy has credentials of its own (`--dst-access-file`),
    /// so that the `AWS_*` credential environment is not used for it.
    pub fn own_credentials(&self) -> bool {
        self.dst_access_file.is_some()
    }
}

/// The encryption of a copy, when it differs from the source's.
///
/// By default a copy is encrypted as its source is: with the same scheme
/// and the same password (new salt and volume id), and a plaintext source
/// gives a plaintext copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct DestArgs {
    /// Encrypt the copy with SCHEME (xchacha20poly1305, the default, or aes-128-cbc), or `none` for a plaintext copy.
    #[arg(long = "dest-encrypt", value_name = "SCHEME", require_equals = true, value_parser = dest_encrypt_arg)]
    pub dest_encrypt: Option<Option<DestEncryption>>,
    /// File whose first line is the copy's password (else S3BLOCK_DEST_PASSWORD, else the source's, else a prompt).
    #[arg(long = "dest-password-file", env = "S3BLOCK_DEST_PASSWORD_FILE", value_name = "FILE")]
    pub dest_password_file: Option<PathBuf>,
}

/// What `--dest-encrypt` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestEncryption {
    /// A plaintext copy.
    None,
    /// This scheme.
    Scheme(EncryptionScheme),
}

/// The environment variable holding the copy's password.
pub const DEST_PASSWORD_ENV: &str = "S3BLOCK_DEST_PASSWORD";

fn dest_encrypt_arg(text: &str) -> Result<DestEncryption, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(DestEncryption::None);
    }
    EncryptionScheme::parse(text).map(DestEncryption::Scheme).map_err(|e| e.to_string())
}

/// `s3block stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Where the volume is mounted (the directory holding its stats file).
    pub mountpoint: PathBuf,
    /// Name of the stats file in the mount (the mount's --stats-filename).
    #[arg(long, default_value = crate::stats::STATS_FILE, value_name = "NAME")]
    pub stats_filename: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `s3block rescan`.
#[derive(Debug, Clone, Args)]
pub struct RescanArgs {
    /// Where the volumes are mounted (the directory holding the mount's control file).
    pub mountpoint: PathBuf,
}

/// Price presets for `cost`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PricePreset {
    /// S3 Standard, us-east-1, as of 2025: PUT $0.005/1000, GET $0.0004/1000, $0.023/GB-month.
    #[default]
    S3Standard,
    /// S3 in 2009, as in the s3backer LVM how-to: PUT $0.01/1000, GET $0.001/1000, $0.15/GB-month.
    #[value(name = "s3-2009")]
    S32009,
}

impl PricePreset {
    /// The preset's prices and where they come from.
    pub fn prices(self) -> (cost::Prices, &'static str) {
        match self {
            PricePreset::S3Standard => (S3_STANDARD_PRICES, S3_STANDARD_SOURCE),
            PricePreset::S32009 => (S3_2009_PRICES, S3_2009_SOURCE),
        }
    }
}

/// `s3block cost`.
#[derive(Debug, Clone, Args)]
pub struct CostArgs {
    /// Volume size.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub size: u64,
    /// Block sizes to compare: one (256K), a list (4K,64K,1M) or a range of powers of two (4K..4M). May be repeated.
    #[arg(long = "block-size", value_name = "SIZES", default_value = "4K..4M", allow_hyphen_values = true, value_parser = parse_block_sizes_arg)]
    pub block_sizes: Vec<BlockSizes>,
    /// Data stored in the volume (billed storage; all-zero blocks are not stored). Default: the whole volume.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub stored: Option<u64>,
    /// Data written per month.
    #[arg(long, value_name = "SIZE", default_value = "0", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub write_per_month: u64,
    /// Data read from the store per month (what the cache misses).
    #[arg(long, value_name = "SIZE", default_value = "0", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub read_per_month: u64,
    /// Memory given to the block cache.
    #[arg(long, value_name = "SIZE", default_value = "64M", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub cache_size: u64,
    /// Memory of the machine: s3backer block caches larger than this are flagged.
    #[arg(long, value_name = "SIZE", default_value = "128M", allow_hyphen_values = true, value_parser = parse_size_arg)]
    pub memory: u64,
    /// s3backer --blockCacheSize to compare against (its default is 1000 blocks).
    #[arg(long, value_name = "BLOCKS", default_value_t = 1000)]
    pub s3backer_cache_blocks: u64,
    /// Price list to start from.
    #[arg(long, value_enum, default_value_t = PricePreset::S3Standard)]
    pub prices: PricePreset,
    /// Dollars per 1000 PUT requests (overrides --prices).
    #[arg(long, value_name = "DOLLARS")]
    pub put_price: Option<f64>,
    /// Dollars per 1000 GET requests (overrides --prices).
    #[arg(long, value_name = "DOLLARS")]
    pub get_price: Option<f64>,
    /// Dollars per GB-month stored (overrides --prices).
    #[arg(long, value_name = "DOLLARS")]
    pub storage_price: Option<f64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// A list of block sizes, from one `--block-size` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSizes(pub Vec<u32>);

/// A range of block numbers, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    /// First block.
    pub start: u64,
    /// One past the last block, `None` for the end of the volume.
    pub end: Option<u64>,
}

/// Parses a size option; a negative one gets a plain message (clap would
/// take `-1` for an unknown flag).
fn parse_size_arg(text: &str) -> Result<u64, String> {
    if text.starts_with("--") {
        return Err(format!("expected a size (like 30G or 256K), found the option {text}"));
    }
    if text.trim_start().starts_with('-') {
        return Err(format!("size must be a positive number of bytes (like 30G or 256K), not {text:?}"));
    }
    s3block_core::parse_size(text).map_err(|e| e.to_string())
}

fn parse_block_sizes_arg(text: &str) -> Result<BlockSizes, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("block size must be a positive number of bytes (like 256K), not {text:?}"));
    }
    cost::parse_block_sizes(text).map(BlockSizes).map_err(|e| e.to_string())
}

/// Parses a block number: decimal, or hex with `0x` (as in object keys).
pub fn parse_block_number(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| {
        format!("block number {text:?} is not a number from 0 to {} (decimal or 0x hex)", u32::MAX)
    })
}

/// Parses `A..B`, `A..` or `..B` into a block range.
pub fn parse_block_range(text: &str) -> Result<BlockRange, String> {
    let Some((a, b)) = text.split_once("..") else {
        return Err(format!("block range {text:?} is not of the form A..B"));
    };
    let start = if a.trim().is_empty() { 0 } else { u64::from(parse_block_number(a)?) };
    let end = if b.trim().is_empty() { None } else { Some(u64::from(parse_block_number(b)?)) };
    if end.is_some_and(|e| e < start) {
        return Err(format!("block range {text:?} runs backwards"));
    }
    Ok(BlockRange { start, end })
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
