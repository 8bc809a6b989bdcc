//! `s3block create|erase|resize MOUNTPOINT/NAME`: the volumes of a running
//! mount of several volumes (`s3block-fuse --volume NAME`, `--all-volumes`),
//! created, erased and grown through the mount's control file, so their
//! files appear, go and grow without a remount.
//!
//! `s3block rescan MOUNTPOINT` has such a mount (`--all-volumes`) serve the
//! volumes made in its store since it started.
//!
//! `MOUNTPOINT/NAME` names one when `MOUNTPOINT` holds the control file of
//! such a mount (it answers `list`); a one-volume mount does not, and its
//! device file is grown as before (`s3block resize MOUNTPOINT`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use s3block_core::{Error, format_size};

use crate::exit::{CliError, CliResult, OK};
use crate::resize::SizeChange;
use crate::resize_mounted::{CONTROL_FILE, exchange, parse_answer};

/// A volume `NAME` of the running mount at `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    /// The mount point.
    pub dir: PathBuf,
    /// The volume's name (its device file's).
    pub name: String,
}

impl MountedVolume {
    /// What `target` names, when it is `MOUNTPOINT/NAME` of a mount of
    /// several volumes; `None` otherwise (a store URL, a one-volume mount).
    pub fn of(target: &str) -> Option<MountedVolume> {
        if target.contains("://") {
            return None;
        }
        let path = Path::new(target);
        let name = path.file_name()?.to_str()?.to_owned();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.join(CONTROL_FILE).is_file() {
            return None;
        }
        let volume = MountedVolume { dir: dir.to_owned(), name };
        volume.ask("list").ok()?;
        Some(volume)
    }

    /// Sends one request; the words after `ok`, or the mount's error.
    pub fn ask(&self, request: &str) -> Result<String, CliError> {
        let control = self.dir.join(CONTROL_FILE);
        let io = |e: std::io::Error| Error::Io {
            path: format!("{} (the control file of the mount; only its owner may use it)", control.display()),
            source: e,
        };
        let file = OpenOptions::new().read(true).write(true).open(&control).map_err(io)?;
        parse_answer(&exchange(&file, request).map_err(io)?, &control)
    }

    fn file(&self) -> String {
        self.dir.join(&self.name).display().to_string()
    }

    /// Creates the volume in the mount's store, with the mount's options.
    pub fn create(&self, size: u64, block_size: Option<u64>, out: &mut dyn Write) -> CliResult {
        let request = match block_size {
            Some(b) => format!("create {} {size} {b}", self.name),
            None => format!("create {} {size}", self.name),
        };
        let answer = self.ask(&request)?;
        let mut words = answer.split_whitespace().map(|w| w.parse::<u64>().unwrap_or(0));
        let (size, block) = (words.next().unwrap_or(size), words.next().unwrap_or(0));
        writeln!(
            out,
            "Created the volume {} ({}, {} blocks) in the mount at {}: its file is {}.",
            self.name,
            format_size(size),
            format_size(block),
            self.dir.display(),
            self.file()
        )?;
        Ok(OK)
    }

    /// Grows the volume to `size` (counted from its size now for `+N`).
    pub fn resize(&self, size: SizeChange, block_size: Option<u64>, out: &mut dyn Write) -> CliResult {
        let now = self.ask(&format!("size {}", self.name))?;
        let current = now.split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let target = size.target(current)?;
        let request = match block_size {
            Some(b) => format!("resize {} {target} {b}", self.name),
            None => format!("resize {} {target}", self.name),
        };
        let answer = self.ask(&request)?;
        let mut words = answer.split_whitespace().map(|w| w.parse::<u64>().unwrap_or(0));
        let (old, new) = (words.next().unwrap_or(current), words.next().unwrap_or(target));
        if old == new {
            writeln!(out, "{} is {} already; nothing changed.", self.file(), format_size(new))?;
        } else {
            writeln!(
                out,
                "Grew {} from {} to {}.\nGrow what sits on it: a loop device with `losetup -c /dev/loopN`, then \
                 its filesystem (`resize2fs /dev/loopN`) or physical volume (`pvresize /dev/loopN`).",
                self.file(),
                format_size(old),
                format_size(new)
            )?;
        }
        Ok(OK)
    }

    /// Erases the volume: refused by the mount while its file is open.
    pub fn erase(&self, out: &mut dyn Write) -> CliResult {
        let blocks = self.ask(&format!("erase {}", self.name))?;
        writeln!(
            out,
            "Erased the volume {} of the mount at {} ({blocks} blocks, its descriptor and lock); its file is gone.",
            self.name,
            self.dir.display()
        )?;
        Ok(OK)
    }
}

/// `s3block rescan MOUNTPOINT`: the mount of several volumes at `dir`
/// lists its store and serves the volumes made there since it started;
/// says which, and those it could not open.
pub fn rescan(dir: &Path, out: &mut dyn Write) -> CliResult {
    let mount = MountedVolume { dir: dir.to_owned(), name: String::new() };
    if !dir.join(CONTROL_FILE).is_file() || mount.ask("list").is_err() {
        return Err(Error::Config(format!(
            "{} is not the mount point of a running mount of several volumes (s3block-fuse --all-volumes)",
            dir.display()
        ))
        .into());
    }
    let answer = mount.ask("rescan")?;
    let mut parts = answer.split("; ");
    match parts.next().unwrap_or_default() {
        "no new volumes" => writeln!(out, "No new volumes in the store of the mount at {}.", dir.display())?,
        added => {
            for name in added.split_whitespace() {
                writeln!(out, "Added the volume {name}: {}", dir.join(name).display())?;
            }
        }
    }
    for more in parts {
        let mut letters = more.chars();
        let first = letters.next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
        writeln!(out, "{first}{}", letters.as_str())?;
    }
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_without_a_control_file_name_no_mounted_volume() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("vol1");
        assert_eq!(MountedVolume::of(target.to_str().unwrap_or_default()), None);
        assert_eq!(MountedVolume::of("s3://bucket/vols/vol1"), None);
        // A control file that is not a mount's answers nothing: not one either.
        std::fs::write(dir.path().join(CONTROL_FILE), b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(MountedVolume::of(target.to_str().unwrap_or_default()), None);
        let e = rescan(dir.path(), &mut Vec::new()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("not the mount point of a running mount of several volumes"), "{e}");
    }
}
