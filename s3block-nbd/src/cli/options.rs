//! Command-line options of `s3block-nbd`: the shared volume and cache
//! options ([`VolumeArgs`], the same as the mount program's), and where
//! and how to listen.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser};
use s3block_cache::frontend::VolumeArgs;
use s3block_cache::frontend::log::LogArgs;
use s3block_core::exit::EXIT_CODES_HELP;

/// The NBD port clients use when none is given (IANA's for NBD).
pub(crate) const NBD_PORT: u16 = 10809;

/// The socket's file name in the runtime directory.
pub(crate) const SOCKET_NAME: &str = "nbd.sock";

/// Where the socket goes when neither `--socket` nor `$RUNTIME_DIRECTORY`
/// says: a directory only root can enter by default.
pub(crate) const DEFAULT_SOCKET: &str = "/run/s3block/nbd.sock";

/// The options of `s3block-nbd`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3block-nbd",
    version,
    about = "Serve an object-store volume as a network block device (NBD), for nbd-client, qemu or libnbd"
)]
pub(crate) struct NbdOptions {
    /// The volume and its cache, the same options as s3block-fuse's.
    #[command(flatten)]
    pub(crate) volume: VolumeArgs,

    /// Listen on this Unix socket [default: $RUNTIME_DIRECTORY/nbd.sock, else /run/s3block/nbd.sock].
    /// Created with mode 0600 (only its owner may connect); a stale one is replaced,
    /// a live one refused.
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub(crate) socket: Option<PathBuf>,

    /// Listen on TCP instead: PORT (on 127.0.0.1), ADDR (port 10809) or ADDR:PORT.
    /// An address other than loopback needs --tls-cert and --tls-key, or --insecure.
    #[arg(long, value_name = "ADDR:PORT", value_parser = listen_arg)]
    pub(crate) listen: Option<SocketAddr>,

    /// The export's name (clients asking for the default export get it too).
    #[arg(long, default_value = "s3block")]
    pub(crate) name: String,

    /// PEM certificate chain for TLS (NBD_OPT_STARTTLS); with it, clients must use TLS.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Serve a non-loopback TCP address without TLS: anyone who reaches it can read
    /// and overwrite the volume. Only on a network you trust.
    #[arg(long)]
    pub(crate) insecure: bool,

    /// Write the statistics to FILE and FILE.json, as the mount shows them
    /// (refreshed every --stats-interval and at exit; `s3block stats DIR
    /// --stats-filename NAME` reads them).
    #[arg(long = "stats-file", alias = "statsFileMirror", value_name = "FILE")]
    pub(crate) stats_file: Option<PathBuf>,

    /// Seconds between rewrites of the stats files.
    #[arg(long = "stats-interval", value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) stats_interval: u64,

    /// Seconds the requests in flight get to be answered after SIGTERM or
    /// SIGINT, before everything is stored without them (only a client that
    /// stopped reading its replies takes that long).
    #[arg(long = "drain-timeout", value_name = "SECONDS", default_value_t = 30)]
    pub(crate) drain_timeout: u64,

    /// Where the log goes and how much: --log-file, --log-level, --debug.
    #[command(flatten)]
    pub(crate) log: LogArgs,

    /// Accepted for symmetry with s3block-fuse: s3block-nbd always stays in
    /// the foreground (run it from systemd, see s3block-nbd@.service).
    #[arg(short = 'f', long)]
    pub(crate) foreground: bool,
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listen {
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// TCP on this address.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
            Listen::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

impl NbdOptions {
    /// Parses a full command line (program name first). `--help` and
    /// `--version` come back as errors whose kind says so.
    pub(crate) fn parse_from_args<I, T>(args: I) -> Result<NbdOptions, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = NbdOptions::command_with_help().try_get_matches_from(args)?;
        let options = NbdOptions::from_arg_matches(&matches)?;
        options
            .check()
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{e}\n")))?;
        Ok(options)
    }

    /// The clap command, with the cache defaults and the exit codes in its help.
    pub(crate) fn command_with_help() -> clap::Command {
        VolumeArgs::with_help(NbdOptions::command()).after_help(format!(
            "STORE is s3://bucket[/prefix], file:///dir or memory://.\n\
             Attach it with: nbd-client -unix {DEFAULT_SOCKET} /dev/nbd0 -C 4 (see the README).\n\n\
             {EXIT_CODES_HELP}"
        ))
    }

    /// Cross-option checks clap cannot express; the message names the
    /// option and says what to do.
    fn check(&self) -> Result<(), String> {
        self.volume.check()?;
        if let Some(addr) = self.listen
            && !addr.ip().is_loopback()
            && self.tls_cert.is_none()
            && !self.insecure
        {
            return Err(format!(
                "--listen {addr}: refusing to serve a non-loopback address without TLS: anyone who can \
                 reach it could read and overwrite the volume. Give --tls-cert FILE --tls-key FILE \
                 (clients then connect with TLS), listen on loopback or a Unix socket (--socket) and \
                 tunnel to it, or add --insecure if the network is trusted"
            ));
        }
        if self.name.len() > 4096 {
            return Err("--name: an NBD export name is at most 4096 bytes".into());
        }
        Ok(())
    }

    /// Where to listen: `--listen`, else `--socket`, else the default
    /// socket in `runtime_dir` (`$RUNTIME_DIRECTORY`), else [`DEFAULT_SOCKET`].
    pub(crate) fn listen_on(&self, runtime_dir: Option<&Path>) -> Listen {
        if let Some(addr) = self.listen {
            return Listen::Tcp(addr);
        }
        Listen::Unix(self.socket.clone().unwrap_or_else(|| default_socket(runtime_dir)))
    }
}

/// The socket's path when `--socket` is not given.
pub(crate) fn default_socket(runtime_dir: Option<&Path>) -> PathBuf {
    match runtime_dir {
        // systemd's RuntimeDirectory= may list several, separated by colons.
        Some(dir) if !dir.as_os_str().is_empty() => {
            let first = dir.to_str().and_then(|d| d.split(':').next()).map(PathBuf::from);
            first.unwrap_or_else(|| dir.to_owned()).join(SOCKET_NAME)
        }
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// `--listen`: `PORT`, `ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT`.
fn listen_arg(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, NBD_PORT));
    }
    Err(format!("{text:?} is not PORT, ADDR or ADDR:PORT (e.g. 10809, 127.0.0.1:10809, [::1]:10809)"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(args: &[&str]) -> Result<NbdOptions, String> {
        let mut full = vec!["s3block-nbd"];
        full.extend_from_slice(args);
        NbdOptions::parse_from_args(full).map_err(|e| e.to_string())
    }

    #[test]
    fn s3backers_spellings_reach_the_server_too() {
        let o = parse(&[
            "--statsFileMirror=/run/s3block/stats",
            "--storageClass=STANDARD_IA",
            "--maxUploadSpeed=8M",
            "--timeout=60",
            "--blockCacheWriteDelay=0",
            "memory://",
        ])
        .unwrap();
        assert_eq!(o.stats_file, Some(PathBuf::from("/run/s3block/stats")));
        let store = &o.volume.store_args;
        assert_eq!(store.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!((store.max_upload_speed, store.request_timeout), (Some(8 << 20), Some(60)));
        assert_eq!(o.volume.write_delay, Some(0));
    }

    #[test]
    fn the_shared_options_are_the_mounts() {
        let o = parse(&[
            "--size=1G",
            "--blockSize=64K",
            "--cache-size=16M",
            "--ro",
            "--compress=zstd",
            "s3://b/v",
        ])
        .unwrap();
        assert_eq!((o.volume.size, o.volume.block_size), (Some(1 << 30), Some(64 << 10)));
        assert_eq!(o.volume.cache_bytes(4096), Some(16 << 20));
        assert!(o.volume.read_only);
        assert_eq!(o.volume.store, "s3://b/v");
        let err = parse(&["--block-size=3000", "memory://"]).unwrap_err();
        assert!(err.contains("--block-size"), "{err}");
        let err = parse(&["--password=x", "memory://"]).unwrap_err();
        assert!(err.contains("--password-file") && !err.contains("=x"), "{err}");
    }

    #[test]
    fn a_unix_socket_by_default_tcp_on_loopback_when_asked() {
        let o = parse(&["memory://"]).unwrap();
        assert_eq!(o.listen_on(None), Listen::Unix(PathBuf::from(DEFAULT_SOCKET)));
        assert_eq!(
            o.listen_on(Some(Path::new("/run/s3block-nbd/vol:/other"))),
            Listen::Unix(PathBuf::from("/run/s3block-nbd/vol/nbd.sock"))
        );
        let o = parse(&["--socket=/tmp/x.sock", "memory://"]).unwrap();
        assert_eq!(o.listen_on(Some(Path::new("/run/x"))), Listen::Unix(PathBuf::from("/tmp/x.sock")));
        for (given, addr) in [
            ("10810", "127.0.0.1:10810"),
            ("127.0.0.2:99", "127.0.0.2:99"),
            ("::1", "[::1]:10809"),
            ("[::1]:7", "[::1]:7"),
        ] {
            let o = parse(&["--listen", given, "memory://"]).unwrap();
            assert_eq!(o.listen_on(None), Listen::Tcp(addr.parse().unwrap()), "{given}");
        }
        let err = parse(&["--listen=nowhere", "memory://"]).unwrap_err();
        assert!(err.contains("--listen") && err.contains("ADDR:PORT"), "{err}");
        let err = parse(&["--listen=1", "--socket=/x", "memory://"]).unwrap_err();
        assert!(err.contains("--socket") && err.contains("--listen"), "{err}");
    }

    #[test]
    fn a_public_address_needs_tls_or_insecure() {
        let err = parse(&["--listen=0.0.0.0:10809", "memory://"]).unwrap_err();
        assert!(
            err.contains("without TLS") && err.contains("--tls-cert") && err.contains("--insecure"),
            "{err}"
        );
        assert!(parse(&["--listen=0.0.0.0:10809", "--insecure", "memory://"]).is_ok());
        assert!(parse(&["--listen=192.0.2.1", "--tls-cert=c", "--tls-key=k", "memory://"]).is_ok());
        let err = parse(&["--tls-cert=c", "memory://"]).unwrap_err();
        assert!(err.contains("--tls-key"), "{err}");
    }

    #[test]
    fn the_help_names_the_default_socket_and_the_exit_codes() {
        let help = NbdOptions::command_with_help().render_long_help().to_string();
        assert!(help.contains(DEFAULT_SOCKET) && help.contains("RUNTIME_DIRECTORY"), "{help}");
        assert!(help.contains("--cache-size") && !help.contains("--blockCacheSize"), "{help}");
        assert!(help.contains(EXIT_CODES_HELP.lines().next().unwrap()), "{help}");
    }
}
