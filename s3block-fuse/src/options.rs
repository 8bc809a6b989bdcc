//! Command-line options of `s3block-fuse`, in three spellings: long options,
//! `-o opt[,opt]` as in `/etc/fstab`, and the camelCase names of s3backer.
//!
//! The `-o` form is rewritten into long options before parsing, so every
//! option is validated once, by the same code, and errors name the option
//! as the user wrote it. s3backer options that s3block does not implement
//! are refused by name first (see `compat`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};
use s3block_cache::frontend::VolumeArgs;
use s3block_cache::frontend::log::LogArgs;
use s3block_core::exit::EXIT_CODES_HELP;

use crate::compat;

/// The default block size, the same for every frontend (see its docs for why 256 KiB).
pub use s3block_cache::frontend::DEFAULT_BLOCK_SIZE;

/// Mode of the device file when `--file-mode` is not given (0400 when read-only).
pub const DEFAULT_FILE_MODE: u16 = 0o600;

/// Mount options from `-o` that are handed to the kernel mount as they are.
const KERNEL_FLAGS: &[&str] =
    &["dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "sync", "async", "dirsync"];

/// Mount options from `-o` that belong to mount(8), fstab or systemd, or that
/// s3block-fuse always sets itself; accepted and ignored.
const IGNORED_OPTIONS: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "rw",
    "allow_root",
    "auto_unmount",
    // Always set: the kernel checks the file modes.
    "default_permissions",
];

/// The options of `s3block-fuse`.
///
/// Sizes accept suffixes (`512K`, `30G`). Every option can also be given in
/// fstab form with `-o`, for example `-o size=30G,block-size=256K,ro`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3block-fuse",
    version,
    about = "Mount an object-store volume as one file, for a loop device, ext4, XFS or LVM"
)]
pub struct Options {
    /// The volume and its cache: the store URL (first positional), geometry,
    /// compression, the store's options and the cache's, shared with every
    /// frontend.
    #[command(flatten)]
    pub volume: VolumeArgs,

    /// The directory to mount on; it shows the device file and the stats
    /// file. None with --erase and --reset-mounted-flag, which do not mount.
    #[arg(required_unless_present_any = ["erase", "reset_mounted_flag"])]
    pub mountpoint: Option<PathBuf>,

    /// Erase the volume instead of mounting it, then exit: delete every
    /// stored block, the descriptor, the mount record and the lock (what
    /// `s3block erase` does). Asks first ("y" on standard input) unless
    /// --force; a locked (mounted) volume is refused unless --force. Give
    /// no MOUNTPOINT.
    #[arg(long, conflicts_with = "reset_mounted_flag")]
    pub erase: bool,

    /// Remove the volume's mount lock (one a crash left) instead of
    /// mounting, then exit (what `s3block unlock` does, without asking). A
    /// lock whose holder still runs on this machine is kept unless --force.
    /// Give no MOUNTPOINT.
    #[arg(long = "reset-mounted-flag")]
    pub reset_mounted_flag: bool,

    /// With --erase: do not ask, and erase a locked volume too; with
    /// --reset-mounted-flag: remove a lock whose holder still runs here.
    /// Nothing else: a --size or --block-size that contradicts the volume is
    /// never overridden.
    #[arg(long)]
    pub force: bool,

    /// Also write the stats to FILE and, as JSON, to FILE.json, every
    /// --stats-interval seconds and at exit (`s3block stats` reads them
    /// like the mount's own stats file).
    #[arg(long = "stats-file", alias = "statsFileMirror", value_name = "FILE")]
    pub stats_file: Option<PathBuf>,

    /// Seconds between rewrites of --stats-file [default: 5].
    #[arg(long = "stats-interval", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stats_interval: Option<u64>,

    /// s3backer's --stats-interval, in milliseconds.
    #[arg(long = "statsFileMirrorInterval", hide = true, value_name = "MILLIS", conflicts_with = "stats_interval",
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub stats_interval_ms: Option<u64>,

    /// Serve the volume NAME under STORE (the volume at STORE/NAME/, made
    /// with `s3block create STORE/NAME --size SIZE`) as the device file NAME,
    /// with its stats in NAME.stats; repeat it for more volumes. The volumes
    /// share one cache budget (--cache-size, --max-dirty) and the upload
    /// slots (--upload-concurrency); each keeps its own lock, geometry,
    /// compression and encryption. See also --all-volumes.
    #[arg(long = "volume", value_name = "NAME", conflicts_with_all = ["all_volumes", "erase", "reset_mounted_flag"])]
    pub volumes: Vec<String>,

    /// Serve every volume under STORE (each sub-prefix holding one), as
    /// --volume does for one; volumes created, grown and erased through the
    /// mount (`s3block create|resize|erase MOUNTPOINT/NAME`) appear, grow and
    /// go while mounted. A volume made in STORE while mounted (`s3block
    /// create STORE/NAME`, another host) appears within 30 seconds, or at
    /// once with the control file's `rescan`.
    #[arg(long = "all-volumes", conflicts_with_all = ["erase", "reset_mounted_flag"])]
    pub all_volumes: bool,

    /// Seconds between --all-volumes' rescans of STORE for volumes made
    /// there while mounted [default: 30].
    #[arg(long = "rescan-interval", hide = true, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rescan_interval: Option<u64>,

    /// Name of the device file.
    #[arg(long, default_value = "file", value_parser = file_name_arg)]
    pub filename: String,

    /// Name of the stats file; empty hides it.
    #[arg(long = "stats-filename", alias = "statsFilename", default_value = "stats")]
    pub stats_filename: String,

    /// Mode of the device file, in octal (default 0600, 0400 when read-only).
    #[arg(long = "file-mode", alias = "fileMode", value_parser = mode_arg)]
    pub file_mode: Option<u16>,

    /// Bypass the kernel page cache for the device file.
    #[arg(long = "direct-io", alias = "directIO")]
    pub direct_io: bool,

    /// Mount over a mount point that is not empty (its files are hidden
    /// while mounted); without it such a mount point is refused.
    #[arg(long)]
    pub nonempty: bool,

    /// Stay in the foreground (for systemd and for debugging).
    #[arg(short = 'f', long)]
    pub foreground: bool,

    /// Where the log goes and how much: --log-file, --log-level, --debug.
    #[command(flatten)]
    pub log: LogArgs,

    /// Owner of the device file and the mount root (default: the user mounting).
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Group of the device file and the mount root (default: the user's group).
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,

    /// Let other users open the file (always so when mounted by root; a
    /// user needs user_allow_other in /etc/fuse.conf).
    #[arg(long = "allow-other")]
    pub allow_other: bool,

    /// Options in fstab form: -o size=30G,block-size=256K,ro
    #[arg(short = 'o', value_name = "OPT[,OPT]")]
    pub options: Vec<String>,

    /// Read arguments from FILE, one a line (blank lines and # comments
    /// skipped), in place of this option; FILE may name more files.
    /// Expanded before the other options are read, so this stays empty.
    #[arg(short = 'F', long = "config-file", alias = "configFile", value_name = "FILE")]
    pub config_file: Vec<PathBuf>,

    /// Kernel mount flags taken from `-o` (nodev, noatime, ...).
    #[arg(long = "kernel-flag", hide = true, value_parser = kernel_flag_arg)]
    pub kernel_flags: Vec<String>,
}

/// A bad command line: the message names the option at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

impl Options {
    /// Parses a full command line (program name first), `-o` forms included.
    ///
    /// `--help` and `--version` come back as errors whose kind says so; the
    /// caller prints them and exits 0.
    pub fn parse_from_args<I, T>(args: I) -> Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let args = crate::config_file::insert_config_files(args)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")))?;
        let expanded = expand_mount_options(args)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")))?;
        let matches = Options::command_with_help().try_get_matches_from(expanded)?;
        let options = Options::from_arg_matches(&matches)?;
        options
            .check()
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{e}\n")))?;
        Ok(options)
    }

    /// The clap command, with the defaults of the cache options and the
    /// exit codes in its help (taken from the constants, so they agree).
    pub fn command_with_help() -> clap::Command {
        // s3backer's --insecure (s3block-nbd has an --insecure of its own).
        let command = Options::command().mut_arg("insecure_tls", |arg| arg.alias("insecure"));
        VolumeArgs::with_help(command).after_help(format!(
            "STORE is s3://bucket[/prefix], file:///dir or memory://.\n\
                 Every option also works in fstab form: -o size=30G,block-size=256K,ro\n\n{EXIT_CODES_HELP}"
        ))
    }

    /// Cross-option checks that clap cannot express.
    fn check(&self) -> Result<(), OptionsError> {
        let maintenance = if self.erase {
            Some("--erase")
        } else if self.reset_mounted_flag {
            Some("--reset-mounted-flag")
        } else {
            None
        };
        match (maintenance, &self.mountpoint) {
            (Some(option), Some(path)) => {
                return Err(OptionsError(format!(
                    "{option} does not mount: give no MOUNTPOINT ({} was given), as in \
                     `s3block-fuse {option} STORE`",
                    path.display()
                )));
            }
            (None, _) if self.force => {
                return Err(OptionsError(
                    "--force goes with --erase or --reset-mounted-flag only: a --size or --block-size that \
                     contradicts the volume is never overridden (`s3block resize` changes the size), and a \
                     lock a crash left on this host is taken over by the next mount (`s3block unlock` or \
                     --reset-mounted-flag removes another)"
                        .into(),
                ));
            }
            _ => {}
        }
        if self.stats_filename.contains('/') || self.stats_filename == "." || self.stats_filename == ".." {
            return Err(OptionsError(format!(
                "--stats-filename {:?}: must be a plain file name (or empty to hide the stats file)",
                self.stats_filename
            )));
        }
        if self.rescan_interval.is_some() && !self.all_volumes {
            return Err(OptionsError(
                "--rescan-interval goes with --all-volumes (the volumes named by --volume are not rescanned)"
                    .into(),
            ));
        }
        if self.several() {
            for name in &self.volumes {
                s3block_cache::frontend::volumes::check_volume_name(name)
                    .map_err(|why| OptionsError(format!("--volume {name}: {why}")))?;
            }
            if let Some(twice) = self.volumes.iter().enumerate().find(|(i, n)| self.volumes[..*i].contains(n))
            {
                return Err(OptionsError(format!("--volume {}: given twice", twice.1)));
            }
            s3block_cache::frontend::volumes::check_several(&self.volume)
                .map_err(|why| OptionsError(format!("with --volume/--all-volumes: {why}")))?;
        }
        if self.stats_filename == self.filename {
            return Err(OptionsError(format!(
                "--stats-filename and --filename are both {:?}; give them different names",
                self.filename
            )));
        }
        self.volume.check().map_err(OptionsError)
    }

    /// Whether several volumes are served (`--volume`, `--all-volumes`).
    pub fn several(&self) -> bool {
        self.all_volumes || !self.volumes.is_empty()
    }

    /// The device file's mode: `--file-mode`, else 0600 (0400 when read-only).
    pub fn effective_file_mode(&self) -> u16 {
        self.file_mode.unwrap_or(if self.volume.read_only { 0o400 } else { DEFAULT_FILE_MODE })
    }

    /// The mount point (empty with --erase and --reset-mounted-flag, which
    /// do not mount).
    pub fn mountpoint(&self) -> &std::path::Path {
        self.mountpoint.as_deref().unwrap_or(std::path::Path::new(""))
    }

    /// How often --all-volumes rescans STORE: --rescan-interval, else
    /// [`RESCAN_EVERY`](crate::multi::RESCAN_EVERY).
    pub fn rescan_every(&self) -> std::time::Duration {
        self.rescan_interval.map_or(crate::multi::RESCAN_EVERY, std::time::Duration::from_secs)
    }

    /// How often --stats-file is rewritten.
    pub fn stats_every(&self) -> std::time::Duration {
        match (self.stats_interval, self.stats_interval_ms) {
            (Some(s), _) => std::time::Duration::from_secs(s),
            (None, Some(ms)) => std::time::Duration::from_millis(ms),
            (None, None) => std::time::Duration::from_secs(5),
        }
    }

    /// The stats file's name, or `None` when hidden.
    pub fn stats_name(&self) -> Option<&str> {
        (!self.stats_filename.is_empty()).then_some(self.stats_filename.as_str())
    }
}

fn mode_arg(s: &str) -> Result<u16, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u16::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("{s:?} is not an octal file mode such as 0600")),
    }
}

fn file_name_arg(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s == "." || s == ".." {
        Err(format!("{s:?} is not a plain file name"))
    } else {
        Ok(s.to_owned())
    }
}

fn kernel_flag_arg(s: &str) -> Result<String, String> {
    if KERNEL_FLAGS.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a kernel mount flag ({})", KERNEL_FLAGS.join(", ")))
    }
}

/// Rewrites every `-o a=b,c` (also `-oa=b,c`) into `--a=b --c`.
///
/// Underscores in names become dashes (`block_size=` is `--block-size=`);
/// camelCase names stay as they are and meet their aliases. Kernel flags
/// (`nodev`, `noatime`, ...) become hidden `--kernel-flag` options; options
/// that belong to mount(8) or fstab (`defaults`, `noauto`, `_netdev`,
/// `x-systemd.*`, ...) are dropped. Arguments after `--` are left alone.
pub fn expand_mount_options(args: Vec<OsString>) -> Result<Vec<OsString>, OptionsError> {
    let known = known_long_names();
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(iter.by_ref());
            break;
        }
        let list = if arg == "-o" {
            match iter.next() {
                Some(list) => list,
                None => return Err(OptionsError("-o needs a list of options, e.g. -o size=30G,ro".into())),
            }
        } else if let Some(rest) = arg.to_str().and_then(|s| s.strip_prefix("-o")) {
            OsString::from(rest)
        } else {
            if let Some(message) = arg.to_str().and_then(compat::long_name).and_then(compat::unsupported) {
                return Err(OptionsError(message));
            }
            out.push(arg);
            continue;
        };
        let list = list
            .into_string()
            .map_err(|bad| OptionsError(format!("-o {}: options must be UTF-8", bad.to_string_lossy())))?;
        for item in list.split(',').filter(|s| !s.is_empty()) {
            out.extend(expand_one(item, &known)?);
        }
    }
    Ok(out)
}

/// Every long option name and alias the parser knows.
fn known_long_names() -> Vec<String> {
    let command = Options::command_with_help();
    let mut names: Vec<String> = vec!["help".into(), "version".into()];
    for arg in command.get_arguments() {
        names.extend(arg.get_long().map(str::to_owned));
        names.extend(arg.get_all_aliases().unwrap_or_default().into_iter().map(str::to_owned));
    }
    names
}

fn expand_one(item: &str, known: &[String]) -> Result<Option<OsString>, OptionsError> {
    let (name, value) = match item.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (item, None),
    };
    if name.is_empty() {
        return Err(OptionsError(format!("-o {item:?}: option name is missing")));
    }
    if IGNORED_OPTIONS.contains(&name)
        || name.starts_with("x-")
        || name.starts_with("X-")
        || name == "comment"
    {
        return Ok(None);
    }
    if let Some(message) = compat::unsupported(name) {
        return Err(OptionsError(message));
    }
    if KERNEL_FLAGS.contains(&name) {
        return Ok(Some(format!("--kernel-flag={name}").into()));
    }
    if matches!(name, "f" | "foreground") {
        return Ok(Some("--foreground".into()));
    }
    let long = if name.starts_with('_') { name.to_owned() } else { name.replace('_', "-") };
    if !known.contains(&long) {
        return Err(OptionsError(format!(
            "-o {name}: unknown option; -o takes s3block-fuse's options (see --help), s3backer's names \
             and the kernel's mount flags ({})",
            KERNEL_FLAGS.join(", ")
        )));
    }
    Ok(Some(match value {
        Some(v) => format!("--{long}={v}").into(),
        None => format!("--{long}").into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3block_store::Compression;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let mut full = vec!["s3block-fuse"];
        full.extend_from_slice(args);
        Options::parse_from_args(full).map_err(|e| e.to_string())
    }

    #[test]
    fn several_volumes_share_a_disk_cache_budget_in_a_directory_each() {
        let o =
            parse(&["--all-volumes", "--cache-dir=/c", "--disk-cache-size=3G", "s3://b/v", "/m"]).unwrap();
        assert!(o.several());
        assert_eq!(o.volume.cache_dir.as_deref(), Some(std::path::Path::new("/c")));
        let budget = s3block_cache::frontend::volumes::budget_of(&o.volume);
        assert_eq!(budget.disk_size(), Some(3 << 30));
        assert_eq!(budget.share_of(3, 256 << 10).unwrap().disk_size, Some(1 << 30));
        let one = s3block_cache::frontend::volumes::volume_args(&o.volume, "db");
        assert_eq!(one.cache_dir.as_deref(), Some(std::path::Path::new("/c/db")));
        let e = parse(&["--volume=a", "--disk-cache-size=1G", "s3://b/v", "/m"]).unwrap_err();
        assert!(e.contains("--cache-dir"), "{e}");
    }

    #[test]
    fn several_volumes_are_named_checked_and_refuse_what_they_cannot_share() {
        let o =
            parse(&["--volume=db", "--volume", "logs", "--cache-size=96M", "s3://b/vols", "/mnt"]).unwrap();
        assert_eq!(o.volumes, ["db", "logs"]);
        assert!(o.several() && !o.all_volumes);
        let o = parse(&["--all-volumes", "s3://b/vols", "/mnt"]).unwrap();
        assert!(o.several());
        assert!(!parse(&["s3://b/vol", "/mnt"]).unwrap().several());
        for (args, says) in [
            (&["--volume=.x", "s3://b/v", "/m"][..], "--volume .x: volume name \".x\""),
            (&["--volume=a", "--volume=a", "s3://b/v", "/m"], "--volume a: given twice"),
            (&["--all-volumes", "--size=1G", "s3://b/v", "/m"], "--size"),
            (&["--all-volumes", "--volume=a", "s3://b/v", "/m"], "--all-volumes"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn the_rescan_interval_is_whole_seconds_with_all_volumes_only() {
        let o = parse(&["--all-volumes", "s3://b/v", "/m"]).unwrap();
        assert_eq!(o.rescan_every(), crate::multi::RESCAN_EVERY);
        assert_eq!(crate::multi::RESCAN_EVERY, std::time::Duration::from_secs(30));
        let o = parse(&["--all-volumes", "--rescan-interval=2", "s3://b/v", "/m"]).unwrap();
        assert_eq!(o.rescan_every(), std::time::Duration::from_secs(2));
        for (args, says) in [
            (&["--all-volumes", "--rescan-interval=0", "s3://b/v", "/m"][..], "0 is not in 1..=86400"),
            (&["--all-volumes", "--rescan-interval=soon", "s3://b/v", "/m"], "'soon' for '--rescan-interval"),
            (&["--volume=a", "--rescan-interval=5", "s3://b/v", "/m"], "--all-volumes"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn long_options() {
        let o = parse(&["--size=30G", "--block-size", "1M", "--cache-size=32M", "s3://b/p", "/mnt"]).unwrap();
        assert_eq!(o.volume.size, Some(30 << 30));
        assert_eq!(o.volume.block_size, Some(1 << 20));
        assert_eq!(o.volume.cache_bytes(1 << 20), Some(32 << 20));
        assert_eq!(o.volume.store, "s3://b/p");
        assert_eq!(o.mountpoint(), PathBuf::from("/mnt"));
        assert_eq!(o.filename, "file");
        assert_eq!(o.stats_name(), Some("stats"));
        assert_eq!(o.effective_file_mode(), 0o600);
        assert!(!o.volume.read_only && !o.foreground);
        assert_eq!(o.volume.compression.compression().unwrap(), None);
    }

    #[test]
    fn fstab_form() {
        let o = parse(&[
            "memory://",
            "/mnt",
            "-o",
            "size=30G,block-size=256K,ro,_netdev,noauto,x-systemd.automount,nodev",
        ])
        .unwrap();
        assert_eq!(o.volume.size, Some(30 << 30));
        assert_eq!(o.volume.block_size, Some(256 << 10));
        assert!(o.volume.read_only);
        assert_eq!(o.effective_file_mode(), 0o400);
        assert_eq!(o.kernel_flags, vec!["nodev".to_string()]);
        // Attached form, underscores, several -o.
        let o =
            parse(&["-ocache_size=8M,compress=9", "-o", "file_mode=0644,stats_filename=", "memory://", "/m"])
                .unwrap();
        assert_eq!(o.volume.cache_size, Some(8 << 20));
        assert_eq!(o.volume.compression.compression().unwrap(), Some(Compression::deflate(9).unwrap()));
        // s3backer 2.x's spelling of zstd, in fstab form too.
        let z = parse(&["-o", "compress=zstd,compress-level=19", "memory://", "/m"]).unwrap();
        assert_eq!(z.volume.compression.compression().unwrap(), Some(Compression::zstd(19).unwrap()));
        assert_eq!(o.file_mode, Some(0o644));
        assert_eq!(o.stats_name(), None);
        // The shared store options, in fstab form too.
        let o = parse(&[
            "-o",
            "endpoint=http://127.0.0.1:3900,force_path_style,access_file=/etc/s3.crd,prefix=vol-",
            "s3://b",
            "/m",
        ])
        .unwrap();
        assert_eq!(o.volume.store_args.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(o.volume.store_args.force_path_style);
        assert_eq!(o.volume.store_args.access_file, Some(PathBuf::from("/etc/s3.crd")));
        assert_eq!(o.volume.store_args.key_prefix(&o.volume.store).as_deref(), Some("vol-"));
    }

    #[test]
    fn s3backer_aliases() {
        let o = parse(&[
            "--blockSize=4K",
            "--blockCacheSize=100",
            "--readOnly",
            "--prefix=some/prefix/",
            "--compress",
            "--blockHashPrefix",
            "--listBlocks",
            "--baseURL=http://127.0.0.1:3900/",
            "--accessFile=/etc/s3.crd",
            "--region=garage",
            "--filename=disk",
            "--size=1G",
            "s3://bucket",
            "/mnt/s3backer",
        ])
        .unwrap();
        assert_eq!(o.volume.block_size, Some(4096));
        assert_eq!(o.volume.cache_bytes(4096), Some(409_600));
        assert!(o.volume.read_only && o.volume.hash_prefix && o.volume.list_blocks);
        assert_eq!(o.volume.compression.compression().unwrap(), Some(Compression::deflate(6).unwrap()));
        assert_eq!(o.volume.store_args.prefix.as_deref(), Some("some/prefix/"));
        assert_eq!(o.volume.store_args.endpoint.as_deref(), Some("http://127.0.0.1:3900/"));
        assert_eq!(o.volume.store_args.access_file, Some(PathBuf::from("/etc/s3.crd")));
        assert_eq!(o.volume.store_args.region.as_deref(), Some("garage"));
        assert_eq!(o.filename, "disk");
        // s3backer's --insecure is the store option --insecure-tls.
        assert!(parse(&["--insecure", "memory://", "/m"]).unwrap().volume.store_args.insecure_tls);
        // The same in fstab form.
        let o = parse(&["-o", "blockSize=64K,readOnly", "memory://", "/m"]).unwrap();
        assert_eq!(o.volume.block_size, Some(64 << 10));
        assert!(o.volume.read_only);
    }

    #[test]
    fn errors_name_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["--size=30X", "memory://", "/m"], "--size"),
            (&["--size", "-1", "memory://", "/m"], "invalid value '-1' for '--size"),
            (&["--cache-size", "-64M", "memory://", "/m"], "invalid value '-64M' for '--cache-size"),
            (&["--block-size=3000", "memory://", "/m"], "--block-size"),
            (&["-o", "block-size=lots", "memory://", "/m"], "--block-size"),
            (&["--compress=12", "memory://", "/m"], "--compress"),
            (&["--compress=zstd", "--compress-level=30", "memory://", "/m"], "--compress-level"),
            (&["--compress=deflate", "--compress-level=12", "memory://", "/m"], "--compress-level"),
            (&["--compress-level=3", "memory://", "/m"], "--compress"),
            (&["--file-mode=999", "memory://", "/m"], "--file-mode"),
            (&["--filename=a/b", "memory://", "/m"], "--filename"),
            (&["--filename=x", "--stats-filename=x", "memory://", "/m"], "--stats-filename"),
            (&["-o", "frobnicate", "memory://", "/m"], "-o frobnicate: unknown option"),
            (&["-o", "ssl", "memory://", "/m"], "s3backer option --ssl is not supported by s3block (yet)"),
            (&["--http11", "memory://", "/m"], "s3backer option --http11 is not supported by s3block (yet)"),
            (&["--cache-size=1M", "--blockCacheSize=3", "memory://", "/m"], "--blockCacheSize"),
            (&["--upload-concurrency=0", "memory://", "/m"], "--upload-concurrency"),
            (&["--fetch-concurrency=0", "memory://", "/m"], "--fetch-concurrency"),
            (&["memory://", "/m", "-o"], "-o"),
        ];
        for (args, option) in cases {
            let err = parse(args).expect_err(&format!("{args:?} should be refused"));
            assert!(err.contains(option), "error for {args:?} does not name {option}: {err}");
        }
    }

    #[test]
    fn encryption_options_in_every_spelling() {
        let o = parse(&["--encrypt", "--password-file=/etc/s3block.pw", "memory://", "/m"]).unwrap();
        assert_eq!(o.volume.store_args.encrypt, Some(None));
        assert_eq!(o.volume.store_args.password_file, Some(PathBuf::from("/etc/s3block.pw")));
        let o = parse(&["-o", "encrypt=aes-128-cbc,passwordFile=/pw", "s3://b", "/m"]).unwrap();
        assert_eq!(o.volume.store_args.encrypt, Some(Some(s3block_store::EncryptionScheme::Aes128Cbc)));
        assert_eq!(o.volume.store_args.password_file, Some(PathBuf::from("/pw")));
        let o = parse(&["-o", "encrypt", "memory://", "/m"]).unwrap();
        assert_eq!(o.volume.store_args.encrypt, Some(None));
        for args in
            [&["--password=pw123", "memory://", "/m"][..], &["-o", "password=pw123", "memory://", "/m"]]
        {
            let err = parse(args).unwrap_err();
            assert!(err.contains("--password-file") && !err.contains("pw123"), "{err}");
        }
    }

    #[test]
    fn fuse_owner_and_access_options_from_fstab() {
        let o = parse(&["-o", "uid=1000,gid=100,allow_other,default_permissions,size=1M", "memory://", "/m"])
            .unwrap();
        assert_eq!((o.uid, o.gid, o.allow_other), (Some(1000), Some(100), true));
        let o = parse(&["memory://", "/m"]).unwrap();
        assert_eq!((o.uid, o.gid, o.allow_other), (None, None, false));
        let err = parse(&["-o", "uid=bob", "memory://", "/m"]).unwrap_err();
        assert!(err.contains("--uid"), "{err}");
    }

    #[test]
    fn every_s3backer_option_is_implemented_or_named() {
        // s3backer 2.1.6's options that s3block implements under their own name.
        let implemented = [
            "accessFile",
            "baseURL",
            "blockCacheSize",
            "blockHashPrefix",
            "blockSize",
            "compress",
            "compress-level",
            "debug",
            "directIO",
            "encrypt",
            "filename",
            "fileMode",
            "listBlocks",
            "password",
            "passwordFile",
            "prefix",
            "readOnly",
            "region",
            "size",
            "statsFilename",
            "version",
            "help",
        ];
        let known = known_long_names();
        for name in implemented {
            assert!(known.iter().any(|k| k == name), "--{name} is not an option");
            assert!(compat::unsupported(name).is_none(), "--{name} is implemented");
        }
    }

    #[test]
    fn options_come_from_config_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("vol.conf");
        std::fs::write(&file, "# s3backer-style, one a line\n--blockSize=64K\n--readOnly\nmemory://\n")
            .expect("write");
        let o = parse(&[&format!("--configFile={}", file.display()), "/m"]).unwrap();
        assert_eq!(
            (o.volume.block_size, o.volume.read_only, o.volume.store.as_str()),
            (Some(64 << 10), true, "memory://")
        );
        assert!(o.config_file.is_empty());
        let o = parse(&["-F", file.to_str().expect("utf-8"), "/m"]).unwrap();
        assert_eq!(o.volume.block_size, Some(64 << 10));
        let err = parse(&["--config-file=/nonexistent/s3block.conf", "/m"]).unwrap_err();
        assert!(err.contains("--config-file /nonexistent/s3block.conf"), "{err}");
    }

    #[test]
    fn s3backers_maintenance_and_stats_file_options() {
        let o = parse(&["--erase", "--force", "s3://b/p"]).unwrap();
        assert!(o.erase && o.force && o.mountpoint.is_none());
        let o = parse(&["--reset-mounted-flag", "memory://"]).unwrap();
        assert!(o.reset_mounted_flag && !o.force);
        for (args, says) in [
            (&["--erase", "memory://", "/m"][..], "--erase does not mount: give no MOUNTPOINT"),
            (&["--reset-mounted-flag", "memory://", "/m"], "--reset-mounted-flag does not mount"),
            (&["--force", "memory://", "/m"], "--force goes with --erase or --reset-mounted-flag"),
            (&["--erase", "--reset-mounted-flag", "memory://"], "--reset-mounted-flag"),
            (&["--statsFileMirrorInterval=0", "memory://", "/m"], "--statsFileMirrorInterval"),
            (&["--stats-interval=2", "--statsFileMirrorInterval=500", "memory://", "/m"], "--stats-interval"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(says), "{args:?}: {err}");
        }
        let o = parse(&["--statsFileMirror=/run/s.txt", "--statsFileMirrorInterval=250", "memory://", "/m"])
            .unwrap();
        assert_eq!(o.stats_file, Some(PathBuf::from("/run/s.txt")));
        assert_eq!(o.stats_every(), std::time::Duration::from_millis(250));
        let o = parse(&["-o", "stats_file=/s,stats_interval=7", "memory://", "/m"]).unwrap();
        assert_eq!(o.stats_every(), std::time::Duration::from_secs(7));
        assert_eq!(parse(&["memory://", "/m"]).unwrap().stats_every(), std::time::Duration::from_secs(5));
        // The cache and volume options of s3backer 2.1.6, in every spelling.
        let o = parse(&[
            "-o",
            "blockCacheTimeout=3000,blockCacheNumProtected=32,noAutoDetect,size=1G,blockSize=4K",
            "--defaultContentEncoding=deflate,encrypt-AES-128-CBC",
            "memory://",
            "/m",
        ])
        .unwrap();
        assert_eq!((o.volume.cache_timeout, o.volume.protected_blocks), (Some(3000), Some(32)));
        assert!(o.volume.no_auto_detect);
        assert_eq!(
            o.volume.store_args.default_content_encoding.as_deref(),
            Some("deflate, encrypt-AES-128-CBC")
        );
        let err = parse(&["--defaultContentEncoding=gzip", "memory://", "/m"]).unwrap_err();
        assert!(err.contains("--default-content-encoding") && err.contains("unknown coding"), "{err}");
    }

    #[test]
    fn missing_positionals_are_refused() {
        let err = parse(&["memory://"]).unwrap_err();
        assert!(err.contains("MOUNTPOINT"), "{err}");
    }

    #[test]
    fn double_dash_stops_expansion() {
        let args = ["p", "-o", "ro", "--", "-o"].map(OsString::from).to_vec();
        let out = expand_mount_options(args).unwrap();
        assert_eq!(out, ["p", "--ro", "--", "-o"].map(OsString::from).to_vec());
    }
}
