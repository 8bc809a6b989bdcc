//! Where a frontend's log goes: standard error, a `--log-file`, or syslog.
//!
//! The log starts on standard error (or in the `--log-file`, appended). A
//! frontend in the background (a mount, once mounted) lets go of its
//! caller's terminal and pipes ([`leave_stderr`]); its log then goes to the
//! log file if one was given, else to syslog (the journal on systemd
//! machines), through the `/dev/log` socket, without a timestamp (syslog
//! adds its own). Where there is no such socket, it is said once on
//! standard error before detaching, and the rest of the log is dropped.
//!
//! How much is logged: `info` and above by default; `--log-level LEVEL`
//! (or `--debug`, the same as `--log-level debug`) says otherwise, and
//! `RUST_LOG`, when set, takes precedence over both (a full filter, e.g.
//! `RUST_LOG=info,s3block_store=debug`). Records of libraries that log
//! through the `log` crate (fuser's, for one) go to the same place, at the
//! same levels. Lines carry ANSI colours only on a terminal.
//!
//! Under systemd, when standard error is the journal (`JOURNAL_STREAM`
//! names it), each line starts with its syslog priority (`<4>` for a
//! warning), which the journal takes off and keeps (`journalctl -p
//! warning`), and carries no time of its own: the journal stamps it.
//!
//! Start-up errors are not log lines: they print as one plain line (see
//! [`fail`](super::fail)).

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The syslog socket of the machine.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The program's name, for syslog lines and start-up errors.
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// The name given to [`init`] (`s3block` before it is called).
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("s3block")
}

/// Where log lines go now.
enum Target {
    Stderr,
    File(Mutex<File>),
    Syslog(UnixDatagram),
    Discard,
}

static TARGET: RwLock<Target> = RwLock::new(Target::Stderr);

/// Standard error is the journal (see the module docs).
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Whether `journal_stream` (`JOURNAL_STREAM`'s `DEVICE:INODE`) names the
/// file `dev`, `ino`.
fn names_file(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// Whether standard error is the journal's stream: `JOURNAL_STREAM` names
/// the file behind descriptor 2.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    names_file(&stream.to_string_lossy(), meta.dev(), meta.ino())
}

fn target() -> std::sync::RwLockReadGuard<'static, Target> {
    // A writer that panicked mid-line leaves the target as it was.
    TARGET.read().unwrap_or_else(|e| e.into_inner())
}

fn set_target(new: Target) {
    *TARGET.write().unwrap_or_else(|e| e.into_inner()) = new;
}

/// Whether the log goes somewhere other than standard error (so a start-up
/// error printed there must also be logged).
pub fn away_from_stderr() -> bool {
    !matches!(*target(), Target::Stderr)
}

/// Where the log goes and how much of it: one clap argument group that
/// every frontend flattens into its options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Append the log to FILE (else standard error; a mount in the
    /// background logs to syslog once mounted).
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// How much to log: error, warn, info (the default), debug or trace.
    /// RUST_LOG, when set, takes precedence (a filter such as
    /// RUST_LOG=info,s3block_store=debug).
    #[arg(long = "log-level", value_name = "LEVEL", value_enum, conflicts_with = "debug")]
    pub log_level: Option<LogLevel>,

    /// Log every request: the same as --log-level debug.
    #[arg(long)]
    pub debug: bool,
}

/// A `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// What happens: mounted, stopped, the store unreachable (the default).
    Info,
    /// Every request.
    Debug,
    /// Everything, also the libraries' details.
    Trace,
}

impl LogArgs {
    /// The level asked for: `--log-level`, else `debug` with `--debug`,
    /// else `info`.
    pub fn level(&self) -> LogLevel {
        self.log_level.unwrap_or(if self.debug { LogLevel::Debug } else { LogLevel::Info })
    }
}

impl LogLevel {
    fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The filter: `RUST_LOG` (`rust_log`) when set and not empty, else the
/// level `args` asks for. A `RUST_LOG` that is not a filter is refused,
/// naming it.
fn filter(args: &LogArgs, rust_log: Option<&str>) -> Result<tracing_subscriber::EnvFilter, String> {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) => tracing_subscriber::EnvFilter::try_new(spec).map_err(|e| {
            format!("RUST_LOG={spec:?} is not a log filter ({e}); e.g. RUST_LOG=debug, or unset it and give --log-level")
        }),
        None => Ok(tracing_subscriber::EnvFilter::new(default_directives(args.level()))),
    }
}

/// The filter of a level: the level, except that up to `info` the FUSE
/// library (fuser) says only its errors. Its warnings are expected: a
/// request s3block leaves unimplemented on purpose ("[Not Implemented]
/// getxattr" at the first write: the kernel then stops asking), and its
/// own unmount failing at the end of a session the kernel already ended
/// (each `fusermount3 -u`). `--log-level debug` shows them.
fn default_directives(level: LogLevel) -> String {
    match level {
        LogLevel::Debug | LogLevel::Trace => level.name().to_owned(),
        _ => format!("{},fuser=error", level.name()),
    }
}

/// Starts logging for `program` (its name in syslog lines and start-up
/// errors), as `args` say (see the module docs); to the log file
/// (appended) when given, else standard error. `color` allows ANSI colours
/// on a terminal. The error names the log file that cannot be opened, or a
/// bad `RUST_LOG`.
pub fn init(program: &'static str, args: &LogArgs, color: bool) -> Result<(), String> {
    let _ = PROGRAM.set(program);
    JOURNAL.store(stderr_is_journal(), Ordering::Relaxed);
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(args, rust_log.as_deref())?;
    if let Some(path) = &args.log_file {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
        set_target(Target::File(Mutex::new(file)));
    }
    let ansi = color && args.log_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // With tracing-subscriber's `tracing-log` feature this also takes the
    // `log` crate's records (fuser's) into the same log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_timer(Clock)
        .with_ansi(ansi)
        .try_init();
    Ok(())
}

/// For a background frontend that is up: the log stops using standard
/// error (which is about to be pointed away from the caller) and goes to
/// syslog, unless it already goes to a log file.
pub fn leave_stderr() {
    if away_from_stderr() {
        return;
    }
    match connect_syslog(Path::new(SYSLOG_SOCKET)) {
        Ok(socket) => set_target(Target::Syslog(socket)),
        Err(e) => {
            tracing::warn!(
                "no syslog ({SYSLOG_SOCKET}: {e}): the log of this background mount is dropped from now \
                 on; give --log-file FILE, or run in the foreground with -f, to keep it"
            );
            set_target(Target::Discard);
        }
    }
}

fn connect_syslog(path: &Path) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    Ok(socket)
}

/// One syslog datagram: facility daemon, the severity of `level`, the
/// program name and process id, and the message without its line end.
fn syslog_line(program: &str, level: Level, pid: u32, message: &[u8]) -> Vec<u8> {
    const DAEMON: u8 = 3 << 3;
    let mut line = format!("<{}>{program}[{pid}]: ", DAEMON + severity(level)).into_bytes();
    line.extend_from_slice(message.trim_ascii());
    line
}

/// The syslog severity of `level`.
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A line for the journal's stream: its priority first (the journal takes
/// it off and keeps it).
fn journal_line(level: Level, message: &[u8]) -> Vec<u8> {
    let mut line = format!("<{}>", severity(level)).into_bytes();
    // Without a time first, the level is padded on the left: not needed.
    line.extend_from_slice(message.trim_ascii_start());
    line
}

/// Writes each log line to the current target.
struct LogWriter;

/// One formatted log line, sent when dropped (the formatter writes a whole
/// event, then drops its writer).
struct Line {
    level: Level,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { level: Level::INFO, buf: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line { level: *meta.level(), buf: Vec::new() }
    }
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // Nowhere to report a failure to log; the line is lost.
        match &*target() {
            Target::Stderr if JOURNAL.load(Ordering::Relaxed) => {
                let _ = std::io::stderr().write_all(&journal_line(self.level, &self.buf));
            }
            Target::Stderr => {
                let _ = std::io::stderr().write_all(&self.buf);
            }
            Target::File(file) => {
                let _ = file.lock().unwrap_or_else(|e| e.into_inner()).write_all(&self.buf);
            }
            Target::Syslog(socket) => {
                let _ = socket.send(&syslog_line(program(), self.level, std::process::id(), &self.buf));
            }
            Target::Discard => {}
        }
    }
}

/// The time of each line, except in syslog and the journal, which stamp
/// lines themselves.
struct Clock;

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        match *target() {
            Target::Syslog(_) => return Ok(()),
            Target::Stderr if JOURNAL.load(Ordering::Relaxed) => return Ok(()),
            _ => {}
        }
        tracing_subscriber::fmt::time::SystemTime.format_time(w)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_level_comes_from_rust_log_then_log_level_then_debug() {
        let args = |level: Option<LogLevel>, debug: bool| LogArgs { log_file: None, log_level: level, debug };
        assert_eq!(filter(&args(None, false), None).unwrap().to_string(), "fuser=error,info");
        assert_eq!(filter(&args(None, true), None).unwrap().to_string(), "debug");
        assert_eq!(filter(&args(Some(LogLevel::Warn), false), None).unwrap().to_string(), "fuser=error,warn");
        assert_eq!(filter(&args(Some(LogLevel::Trace), false), Some("  ")).unwrap().to_string(), "trace");
        // RUST_LOG wins over both.
        let f = filter(&args(Some(LogLevel::Error), true), Some("s3block_store=debug")).unwrap();
        assert_eq!(f.to_string(), "s3block_store=debug");
        let err = filter(&args(None, false), Some("s3block_store=loud")).unwrap_err();
        assert!(err.contains("RUST_LOG=\"s3block_store=loud\"") && err.contains("--log-level"), "{err}");
    }

    #[test]
    fn log_level_and_debug_parse_and_conflict() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("p").chain(args.iter().copied()));
        assert_eq!(parse(&[]).unwrap().log.level(), LogLevel::Info);
        assert_eq!(parse(&["--debug"]).unwrap().log.level(), LogLevel::Debug);
        assert_eq!(parse(&["--log-level", "warn"]).unwrap().log.level(), LogLevel::Warn);
        let err = parse(&["--log-level", "loud"]).unwrap_err().to_string();
        assert!(err.contains("loud") && err.contains("error, warn, info, debug, trace"), "{err}");
        let err = parse(&["--log-level=error", "--debug"]).unwrap_err().to_string();
        assert!(err.contains("--debug") && err.contains("--log-level"), "{err}");
    }

    #[test]
    fn syslog_lines_carry_severity_name_and_pid() {
        let line = syslog_line("s3block-fuse", Level::ERROR, 42, b" ERROR s3block_fuse: cannot store\n");
        assert_eq!(line, b"<27>s3block-fuse[42]: ERROR s3block_fuse: cannot store");
        assert!(syslog_line("s3block-nbd", Level::INFO, 1, b"x").starts_with(b"<30>s3block-nbd[1]: "));
        assert!(syslog_line("s3block-fuse", Level::DEBUG, 1, b"x").starts_with(b"<31>"));
    }

    #[test]
    fn journal_lines_carry_their_priority_and_the_stream_is_recognised() {
        assert_eq!(
            journal_line(Level::WARN, b"  WARN x: the store is unreachable\n"),
            b"<4>WARN x: the store is unreachable\n"
        );
        assert!(journal_line(Level::ERROR, b"x").starts_with(b"<3>"));
        assert!(journal_line(Level::INFO, b"x").starts_with(b"<6>"));
        assert!(journal_line(Level::TRACE, b"x").starts_with(b"<7>"));
        assert!(names_file("8:12345", 8, 12345));
        assert!(!names_file("8:12345", 8, 12346));
        assert!(!names_file("8", 8, 12345));
        assert!(!names_file("", 0, 0));
    }

    #[test]
    fn syslog_datagrams_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let client = connect_syslog(&path).unwrap();
        client.send(&syslog_line("s3block-fuse", Level::WARN, 7, b"hello\n")).unwrap();
        let mut buf = [0u8; 128];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>s3block-fuse[7]: hello");
        assert!(connect_syslog(&dir.path().join("missing")).is_err());
    }
}
