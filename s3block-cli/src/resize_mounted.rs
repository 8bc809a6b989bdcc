//! `s3block resize MOUNTPOINT --size NEW`: grows a volume while it is
//! mounted, by asking the mount program through its control file (or
//! s3block-nbd through its control socket).
//!
//! The argument is the mount point of an s3block mount, or its device file
//! (`/mnt/s3block/file`): either way the control file `control` beside the
//! device file is what is talked to (one request line written, the answer
//! read back from the same handle). Or it is s3block-nbd's Unix socket (or
//! its control socket, `{socket}.control`): one connection per request. The
//! protocol is `s3block_cache::frontend::control`. The size is read from
//! the frontend first, so `+64M` counts from the size it serves now. The
//! frontend grows the volume in the bucket (block 0 and the descriptor, as
//! an offline resize does) and then what it serves; what sits on it grows
//! after that (`losetup -c` and `resize2fs`, or `pvresize`), without
//! unmounting anything.
//!
//! Refused: a smaller size (a mounted volume only grows), another block
//! size, `--discard-tail` (nothing is deleted from a mounted volume), and,
//! by the frontend, a read-only mount or one with a disk cache.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use s3block_core::{Error, format_size};

use crate::exit::{CliError, CliResult, OK};
use crate::format::write_json;
use crate::resize::SizeChange;

/// The name of a mount's control file, beside its device file.
pub const CONTROL_FILE: &str = "control";

/// How a running frontend is asked to grow its volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A mount's control file.
    File(PathBuf),
    /// s3block-nbd's control socket.
    Socket(PathBuf),
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// How to reach the frontend `target` names (a mount point or its device
/// file; s3block-nbd's socket or its control socket), or `None` when
/// `target` is not such a path (a store URL).
pub fn control_file(target: &str) -> Option<Control> {
    if target.contains("://") {
        return None;
    }
    let path = Path::new(target);
    if is_socket(path) {
        if target.ends_with(".control") {
            return Some(Control::Socket(path.to_owned()));
        }
        let control = PathBuf::from(format!("{target}.control"));
        return is_socket(&control).then_some(Control::Socket(control));
    }
    let dir = if path.is_dir() { path } else { path.parent()? };
    let control = dir.join(CONTROL_FILE);
    control.is_file().then_some(Control::File(control))
}

/// What the grow did, as `--json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GrowOutcome {
    /// The mount point, or the NBD control socket.
    pub mountpoint: String,
    /// The size before, in bytes.
    pub old_size: u64,
    /// The size now, in bytes.
    pub new_size: u64,
}

/// Where requests go: an open control file, or a control socket.
enum Channel<'a> {
    File(File, &'a Path),
    Socket(&'a Path),
}

/// Asks the frontend behind `control` to grow to `size`.
pub fn resize_mounted(
    control: &Control,
    size: SizeChange,
    block_size: Option<u64>,
    discard_tail: bool,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let mountpoint = match control {
        Control::File(file) => file.parent().unwrap_or(file).display().to_string(),
        Control::Socket(socket) => socket.display().to_string(),
    };
    if discard_tail {
        return Err(Error::Config(format!(
            "--discard-tail: {mountpoint} is mounted, and a mounted volume only grows; nothing is deleted from it"
        ))
        .into());
    }
    let channel = match control {
        Control::File(path) => Channel::File(open_control_file(path, &mountpoint)?, path),
        Control::Socket(path) => Channel::Socket(path),
    };
    let now = ask(&channel, "size")?;
    let current = number(&now, 0, &channel)?;
    let target = size.target(current)?;
    let request = match block_size {
        Some(b) => format!("resize {target} {b}"),
        None => format!("resize {target}"),
    };
    let answer = ask(&channel, &request)?;
    let outcome = GrowOutcome {
        mountpoint,
        old_size: number(&answer, 0, &channel)?,
        new_size: number(&answer, 1, &channel)?,
    };
    if json {
        write_json(out, &outcome)?;
        return Ok(OK);
    }
    let (old, new) = (format_size(outcome.old_size), format_size(outcome.new_size));
    if outcome.new_size == outcome.old_size {
        writeln!(out, "{} is {new} already; nothing changed.", outcome.mountpoint)?;
    } else if let Control::Socket(_) = control {
        writeln!(
            out,
            "Grew the volume served at {} from {old} to {new}.\nNBD clients see the new size when they \
             connect again (a connected client keeps the size it was given at the handshake).",
            outcome.mountpoint
        )?;
    } else {
        writeln!(
            out,
            "Grew the volume mounted at {} from {old} to {new}.\nGrow what sits on it: a loop device with \
             `losetup -c /dev/loopN`, then its filesystem (`resize2fs /dev/loopN`) or physical volume \
             (`pvresize /dev/loopN`).",
            outcome.mountpoint
        )?;
    }
    Ok(OK)
}

/// The longest control answer read (a multi-volume mount's `list` is the
/// longest).
const ANSWER_MAX: usize = 64 << 10;

/// Opens the mount's control file for requests.
fn open_control_file(control: &Path, mountpoint: &str) -> Result<File, CliError> {
    OpenOptions::new().read(true).write(true).open(control).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
            Error::Config(format!(
                "{mountpoint} is mounted read-only: a read-only mount cannot grow its volume"
            ))
            .into()
        } else {
            Error::Io {
                path: format!(
                    "{} (the control file of the mount; only its owner may use it)",
                    control.display()
                ),
                source: e,
            }
            .into()
        }
    })
}

impl Channel<'_> {
    fn path(&self) -> &Path {
        match self {
            Channel::File(_, p) | Channel::Socket(p) => p,
        }
    }
}

/// Sends `request` and reads its answer: the words after `ok`, or the
/// frontend's `error` as the error.
fn ask(channel: &Channel<'_>, request: &str) -> Result<Vec<String>, CliError> {
    let path = channel.path();
    let io = |e: std::io::Error| Error::Io { path: path.display().to_string(), source: e };
    let text = match channel {
        Channel::File(file, _) => exchange(file, request).map_err(io)?,
        Channel::Socket(socket) => {
            let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(io)?;
            stream.write_all(format!("{request}\n").as_bytes()).map_err(io)?;
            stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
            let mut buf = vec![0u8; ANSWER_MAX];
            let mut n = 0;
            loop {
                let got = stream.read(&mut buf[n..]).map_err(io)?;
                n += got;
                if got == 0 || n == buf.len() {
                    break;
                }
            }
            String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
        }
    };
    parse_answer(&text, path).map(|rest| rest.split_whitespace().map(str::to_owned).collect())
}

/// Writes one request line to an open control file and reads the answer
/// back from the same handle, trailing newline removed.
pub(crate) fn exchange(file: &File, request: &str) -> std::io::Result<String> {
    file.write_at(format!("{request}\n").as_bytes(), 0)?;
    let mut buf = vec![0u8; ANSWER_MAX];
    let n = file.read_at(&mut buf, 0)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
}

/// A control answer: what follows `ok` (empty for `ok` alone), or the
/// frontend's `error` as the error; anything else is named with `path`.
pub(crate) fn parse_answer(text: &str, path: &Path) -> Result<String, CliError> {
    match text.split_once(' ').unwrap_or((text, "")) {
        ("ok", rest) => Ok(rest.to_owned()),
        ("error", why) => Err(Error::Config(why.to_owned()).into()),
        _ => Err(Error::Config(format!("{}: unexpected answer {text:?}", path.display())).into()),
    }
}

fn number(words: &[String], i: usize, channel: &Channel<'_>) -> Result<u64, CliError> {
    words.get(i).and_then(|w| w.parse().ok()).ok_or_else(|| {
        Error::Config(format!("{}: unexpected answer {:?}", channel.path().display(), words.join(" "))).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_point_its_device_file_or_an_nbd_socket_names_the_control() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path().to_str().unwrap_or_default();
        assert_eq!(control_file(d), None, "no control file: not a mount");
        std::fs::write(dir.path().join(CONTROL_FILE), b"").unwrap_or_else(|e| panic!("{e}"));
        let control = Some(Control::File(dir.path().join(CONTROL_FILE)));
        assert_eq!(control_file(d), control);
        assert_eq!(control_file(file.to_str().unwrap_or_default()), control);
        assert_eq!(control_file("file:///tmp/x"), None);
        assert_eq!(control_file("s3://bucket/vol"), None);
        // An NBD socket names its control socket beside it.
        let socket = dir.path().join("nbd.sock");
        let _nbd = std::os::unix::net::UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
        let s = socket.to_str().unwrap_or_default();
        assert_eq!(control_file(s), None, "no control socket");
        let control = dir.path().join("nbd.sock.control");
        let _ctl = std::os::unix::net::UnixListener::bind(&control).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(control_file(s), Some(Control::Socket(control.clone())));
        assert_eq!(control_file(control.to_str().unwrap_or_default()), Some(Control::Socket(control)));
    }
}
