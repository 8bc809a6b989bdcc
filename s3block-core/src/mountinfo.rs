//! Whether a directory is a mount point, from the kernel's
//! `/proc/self/mountinfo`: the one reader of that file for the mount
//! program (which watches its own mount point) and the tests.
//!
//! The kernel writes the mount point (the fifth field) with four bytes
//! escaped as three octal digits: space `\040`, tab `\011`, newline `\012`
//! and backslash `\134`. Every such escape is decoded here, so a mount
//! point with any of them in its name is found, and a name that merely
//! contains a backslash is not taken for another.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the kernel lists this process's mounts.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";

/// The mount points listed in `mountinfo` (the text of
/// `/proc/self/mountinfo`), in order, with their escapes decoded.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(OsStr::from_bytes(&unescape(field))))
        .collect()
}

/// Whether `dir` is a mount point now (as written: no symbolic link is
/// resolved). False when `/proc/self/mountinfo` cannot be read.
pub fn is_mount_point(dir: &Path) -> bool {
    let text = std::fs::read_to_string(MOUNTINFO_PATH).unwrap_or_default();
    mount_points(&text).iter().any(|p| p == dir)
}

/// `field` with each `\` followed by three octal digits replaced by that byte;
/// any other backslash is kept as it is.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes.get(i + 1..i + 4).and_then(octal_byte)
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The byte that three octal digits name (`None` when they are not three
/// octal digits or name more than 255).
fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits
        .iter()
        .try_fold(0u16, |acc, &d| (b'0'..=b'7').contains(&d).then(|| acc * 8 + u16::from(d - b'0')))
        .and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
36 22 0:31 / /mnt/with\\040space rw shared:2 - fuse s3block rw,user_id=0
37 22 0:32 / /mnt/tab\\011and\\012newline rw shared:3 - fuse s3block rw
38 22 0:33 / /mnt/back\\134slash rw shared:4 - fuse s3block rw
39 22 0:34 / /mnt/odd\\x\\04 rw shared:5 - tmpfs tmpfs rw
";

    #[test]
    fn every_escape_is_decoded() {
        let points = mount_points(SAMPLE);
        let want: Vec<PathBuf> = [
            "/",
            "/mnt/with space",
            "/mnt/tab\tand\nnewline",
            "/mnt/back\\slash",
            // Not three octal digits after the backslash: kept as written.
            "/mnt/odd\\x\\04",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(points, want);
    }

    #[test]
    fn a_backslash_in_a_name_is_not_another_name() {
        let points = mount_points(SAMPLE);
        // The listed `\134` is a backslash, not the text `\134`.
        assert!(!points.contains(&PathBuf::from("/mnt/back\\134slash")));
        assert!(!points.contains(&PathBuf::from("/mnt/with\\040space")));
        assert_eq!(octal_byte(b"777"), None);
        assert_eq!(octal_byte(b"377"), Some(255));
        assert_eq!(octal_byte(b"08a"), None);
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_plain_directory_is_not() {
        assert!(is_mount_point(Path::new("/")));
        let dir = std::env::temp_dir().join(format!("s3block-not-a-mount-{}", std::process::id()));
        assert!(!is_mount_point(&dir));
    }
}
