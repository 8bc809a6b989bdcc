//! `s3block resize MOUNTPOINT --size NEW`: grows a volume while it is
//! mounted, by asking the mount program through its control file.
//!
//! The argument is the mount point of an s3block mount, or its device file
//! (`/mnt/s3block/file`): either way the control file `control` beside the
//! device file is what is talked to (its protocol is in the mount program's
//! `control` module: one request line written, the answer read back from the
//! same handle). The size is read from the mount first, so `+64M` counts
//! from the size it serves now. The mount grows the volume in the bucket
//! (block 0 and the descriptor, as an offline resize does) and then the
//! device file; what sits on it grows after that (`losetup -c` and
//! `resize2fs`, or `pvresize`), without unmounting anything.
//!
//! Refused: a smaller size (a mounted volume only grows), another block
//! size, `--discard-tail` (nothing is deleted from a mounted volume), and,
//! by the mount, a read-only mount or one with a disk cache.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use s3block_core::{Error, format_size};

use crate::exit::{CliError, CliResult, OK};
use crate::format::write_json;
use crate::resize::SizeChange;

/// The name of a mount's control file, beside its device file.
pub const CONTROL_FILE: &str = "control";

/// The control file of the mount `target` names (its mount point, or its
/// device file), or `None` when `target` is not such a path (a store URL).
pub fn control_file(target: &str) -> Option<PathBuf> {
    if target.contains("://") {
        return None;
    }
    let path = Path::new(target);
    let dir = if path.is_dir() { path } else { path.parent()? };
    let control = dir.join(CONTROL_FILE);
    control.is_file().then_some(control)
}

/// What the grow did, as `--json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GrowOutcome {
    /// The mount point.
    pub mountpoint: String,
    /// The size before, in bytes.
    pub old_size: u64,
    /// The size now, in bytes.
    pub new_size: u64,
}

/// Asks the mount whose control file is `control` to grow to `size`.
pub fn resize_mounted(
    control: &Path,
    size: SizeChange,
    block_size: Option<u64>,
    discard_tail: bool,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let mountpoint = control.parent().unwrap_or(control).display().to_string();
    if discard_tail {
        return Err(Error::Config(format!(
            "--discard-tail: {mountpoint} is mounted, and a mounted volume only grows; nothing is deleted from it"
        ))
        .into());
    }
    let file = match OpenOptions::new().read(true).write(true).open(control) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
            return Err(Error::Config(format!(
                "{mountpoint} is mounted read-only: a read-only mount cannot grow its volume"
            ))
            .into());
        }
        Err(e) => {
            return Err(Error::Io {
                path: format!(
                    "{} (the control file of the mount; only its owner may use it)",
                    control.display()
                ),
                source: e,
            }
            .into());
        }
    };
    let now = ask(&file, control, "size")?;
    let current = number(&now, 0, control)?;
    let target = size.target(current)?;
    let request = match block_size {
        Some(b) => format!("resize {target} {b}"),
        None => format!("resize {target}"),
    };
    let answer = ask(&file, control, &request)?;
    let outcome = GrowOutcome {
        mountpoint,
        old_size: number(&answer, 0, control)?,
        new_size: number(&answer, 1, control)?,
    };
    if json {
        write_json(out, &outcome)?;
        return Ok(OK);
    }
    if outcome.new_size == outcome.old_size {
        writeln!(
            out,
            "{} is {} already; nothing changed.",
            outcome.mountpoint,
            format_size(outcome.new_size)
        )?;
    } else {
        writeln!(
            out,
            "Grew the volume mounted at {} from {} to {}.\nGrow what sits on it: a loop device with \
             `losetup -c /dev/loopN`, then its filesystem (`resize2fs /dev/loopN`) or physical volume \
             (`pvresize /dev/loopN`).",
            outcome.mountpoint,
            format_size(outcome.old_size),
            format_size(outcome.new_size)
        )?;
    }
    Ok(OK)
}

/// Writes `request` to the control file and reads its answer: the words
/// after `ok`, or the mount's `error` as the error.
fn ask(file: &File, control: &Path, request: &str) -> Result<Vec<String>, CliError> {
    let io = |e: std::io::Error| Error::Io { path: control.display().to_string(), source: e };
    file.write_at(format!("{request}\n").as_bytes(), 0).map_err(io)?;
    let mut buf = vec![0u8; 4096];
    let n = file.read_at(&mut buf, 0).map_err(io)?;
    let text = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
    match text.split_once(' ') {
        Some(("ok", rest)) => Ok(rest.split_whitespace().map(str::to_owned).collect()),
        Some(("error", why)) => Err(Error::Config(why.to_owned()).into()),
        _ => Err(Error::Config(format!("{}: unexpected answer {text:?}", control.display())).into()),
    }
}

fn number(words: &[String], i: usize, control: &Path) -> Result<u64, CliError> {
    words.get(i).and_then(|w| w.parse().ok()).ok_or_else(|| {
        Error::Config(format!("{}: unexpected answer {:?}", control.display(), words.join(" "))).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_point_or_its_device_file_names_the_control_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path().to_str().unwrap_or_default();
        assert_eq!(control_file(d), None, "no control file: not a mount");
        std::fs::write(dir.path().join(CONTROL_FILE), b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(control_file(d), Some(dir.path().join(CONTROL_FILE)));
        assert_eq!(control_file(file.to_str().unwrap_or_default()), Some(dir.path().join(CONTROL_FILE)));
        assert_eq!(control_file("file:///tmp/x"), None);
        assert_eq!(control_file("s3://bucket/vol"), None);
    }
}
