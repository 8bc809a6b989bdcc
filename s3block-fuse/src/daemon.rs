//! Going to the background without hiding mount errors.
//!
//! Without `-f`, the program starts itself again as a child in a session of
//! its own (`setsid`: no controlling terminal, so the terminal's Ctrl-C and
//! hang-up do not reach it), with standard input closed (or a pipe that
//! carries the password the parent asked for, since the child cannot use
//! the terminal) and standard output a pipe back to the parent. The child
//! opens the volume and mounts; then it writes `ready` on the pipe. The
//! parent exits 0 when it reads that line, or, when the pipe closes without
//! it, with the child's own exit code; the child's error message has already
//! gone to the shared standard error. So `s3block-fuse` returns only once
//! the file is there, or fails saying why.
//!
//! Once mounted, the child lets go of everything it shares with its caller:
//! its standard input, output and error become /dev/null, so
//! `out=$(s3block-fuse ...)`, `s3block-fuse ... | tee log` or `ssh host
//! s3block-fuse ...` return as soon as the mount is up. Its log goes to
//! `--log-file`, else to syslog (see `log`). Units should rather run
//! `s3block-fuse -f`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use s3block_cache::frontend::log;
use s3block_core::exit::LOCAL_IO;
use s3block_store::Password;

/// Set in the child's environment: report readiness on standard output.
pub(crate) const DAEMON_ENV: &str = "S3BLOCK_FUSE_DAEMON_CHILD";
/// Set in the child's environment when its standard input carries the
/// password (one line).
pub(crate) const PASSWORD_ON_STDIN_ENV: &str = "S3BLOCK_FUSE_PASSWORD_ON_STDIN";
const READY: &str = "ready";

/// True in the background child.
pub(crate) fn is_child() -> bool {
    std::env::var_os(DAEMON_ENV).is_some()
}

/// Starts the background child with the same arguments and waits until it
/// says it is mounted or exits. Returns the exit code for the parent.
pub(crate) fn spawn_and_wait(password: Option<Password>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!(
                "s3block-fuse: cannot find its own program file to start in the background: {e}; use -f"
            );
            return ExitCode::from(LOCAL_IO);
        }
    };
    let mut command = Command::new(&exe);
    command.args(std::env::args_os().skip(1)).env(DAEMON_ENV, "1").stdout(Stdio::piped());
    new_session(&mut command);
    if password.is_some() {
        command.env(PASSWORD_ON_STDIN_ENV, "1").stdin(Stdio::piped());
    } else {
        command.stdin(Stdio::null());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("s3block-fuse: cannot start in the background ({}): {e}; use -f", exe.display());
            return ExitCode::from(LOCAL_IO);
        }
    };
    if let (Some(password), Some(mut stdin)) = (password, child.stdin.take()) {
        // A child that already failed has closed its end; its exit code says why.
        let _ = stdin.write_all(password.as_bytes()).and_then(|()| stdin.write_all(b"\n"));
    }
    let ready = child.stdout.take().is_some_and(|out| {
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).is_ok() && line.trim_end() == READY
    });
    if ready {
        return ExitCode::SUCCESS;
    }
    match child.wait() {
        Ok(status) => {
            let code = status.code().unwrap_or(1);
            ExitCode::from(u8::try_from(code).unwrap_or(1).max(1))
        }
        Err(e) => {
            eprintln!("s3block-fuse: the background process failed: {e}");
            ExitCode::from(LOCAL_IO)
        }
    }
}

/// In the child: the password the parent passed on standard input, if any.
pub(crate) fn password_from_parent() -> Option<Password> {
    std::env::var_os(PASSWORD_ON_STDIN_ENV)?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    let text = line.trim_end_matches(['\n', '\r']);
    Some(Password::new(text.as_bytes()))
}

/// Makes the child the leader of a new session, before it runs, holding
/// none of the caller's descriptors beyond the standard three (a pipe the
/// caller left open, say, would otherwise stay open as long as the mount).
#[allow(unsafe_code)]
fn new_session(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setsid and close_range, which are async-signal-safe system
    // calls. The child is not a process group leader (it was just forked),
    // so setsid succeeds. close_range only marks descriptors 3 and up
    // close-on-exec (its failure on an old kernel is harmless); the ones
    // Rust needs until exec are close-on-exec already.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
            Ok(())
        });
    }
}

/// The mount is up. In the background child: moves the log off standard
/// error, tells the waiting parent, then points standard input, output and
/// error at /dev/null so that nothing of the caller's stays open.
pub(crate) fn mounted() {
    if !is_child() {
        return;
    }
    log::leave_stderr();
    let mut out = std::io::stdout().lock();
    // If the parent is gone there is no one to tell; the mount is up anyway.
    let _ = writeln!(out, "{READY}").and_then(|()| out.flush());
    drop(out);
    if let Err(e) = streams_to_null() {
        tracing::warn!("cannot point standard input, output and error at /dev/null: {e}");
    }
}

/// Replaces file descriptors 0, 1 and 2 with /dev/null.
#[allow(unsafe_code)]
fn streams_to_null() -> std::io::Result<()> {
    let null = std::fs::File::options().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors replaces what they
        // refer to; Rust's stdin/stdout/stderr handles keep using the same
        // numbers, now /dev/null, and no other code owns these descriptors.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
