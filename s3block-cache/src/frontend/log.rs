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
//! Start-up errors are not log lines: they print as one plain line (see
//! [`fail`](super::fail)).

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
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

/// Starts logging for `program` (its name in syslog lines and start-up
/// errors): `--debug` or `RUST_LOG` for more; to `log_file` (appended) when
/// given, else standard error. `color` allows ANSI colours on a terminal.
/// The error names the log file that cannot be opened.
pub fn init(program: &'static str, debug: bool, log_file: Option<&Path>, color: bool) -> Result<(), String> {
    let _ = PROGRAM.set(program);
    if let Some(path) = log_file {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
        set_target(Target::File(Mutex::new(file)));
    }
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = color && log_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
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
    let severity = match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    };
    const DAEMON: u8 = 3 << 3;
    let mut line = format!("<{}>{program}[{pid}]: ", DAEMON + severity).into_bytes();
    line.extend_from_slice(message.trim_ascii());
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

/// The time of each line, except in syslog, which stamps lines itself.
struct Clock;

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        if matches!(*target(), Target::Syslog(_)) {
            return Ok(());
        }
        tracing_subscriber::fmt::time::SystemTime.format_time(w)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn syslog_lines_carry_severity_name_and_pid() {
        let line = syslog_line("s3block-fuse", Level::ERROR, 42, b" ERROR s3block_fuse: cannot store\n");
        assert_eq!(line, b"<27>s3block-fuse[42]: ERROR s3block_fuse: cannot store");
        assert!(syslog_line("s3block-nbd", Level::INFO, 1, b"x").starts_with(b"<30>s3block-nbd[1]: "));
        assert!(syslog_line("s3block-fuse", Level::DEBUG, 1, b"x").starts_with(b"<31>"));
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
