//! Going to the background without hiding mount errors.
//!
//! Without `-f`, the program starts itself again as a child in its own
//! process group (so the terminal's Ctrl-C does not reach it), with standard
//! input closed (or a pipe that carries the password the parent asked for,
//! since the child cannot use the terminal) and standard output a pipe back
//! to the parent. The child
//! opens the volume and mounts; then it writes `ready` on the pipe. The
//! parent exits 0 when it reads that line, or, when the pipe closes without
//! it, with the child's own exit code; the child's error message has already
//! gone to the shared standard error. So `s3block-fuse` returns only once
//! the file is there, or fails saying why.
//!
//! Logs of the background process go to the inherited standard error (the
//! journal under systemd). Units should rather run `s3block-fuse -f`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

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
            return ExitCode::FAILURE;
        }
    };
    let mut command = Command::new(&exe);
    command.args(std::env::args_os().skip(1)).env(DAEMON_ENV, "1").stdout(Stdio::piped()).process_group(0);
    if password.is_some() {
        command.env(PASSWORD_ON_STDIN_ENV, "1").stdin(Stdio::piped());
    } else {
        command.stdin(Stdio::null());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("s3block-fuse: cannot start in the background ({}): {e}; use -f", exe.display());
            return ExitCode::FAILURE;
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
            ExitCode::FAILURE
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

/// Tells the waiting parent, if any, that the mount is up.
pub(crate) fn notify_ready() {
    if is_child() {
        let mut out = std::io::stdout().lock();
        // If the parent is gone there is no one to tell; the mount is up anyway.
        let _ = writeln!(out, "{READY}").and_then(|()| out.flush());
    }
}
