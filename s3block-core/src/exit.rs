//! The exit codes of the s3block programs: one table, followed by both the
//! `s3block` command and the `s3block-fuse` mount program, and the one
//! place an [`Error`] becomes a code ([`exit_code`]).
//!
//! Scripts can tell a mistake in the command line (2) from a store that
//! cannot be reached (3) or a volume mounted elsewhere (4) whichever
//! program they ran.

use crate::Error;

/// The command did what was asked (for the mount: unmounted with every
/// block stored, or `--help`).
pub const OK: u8 = 0;
/// The command ran and found problems: bad blocks (`verify`), a copy that
/// does not read back equal (`copy`), a corrupt block (`cat`); for the
/// mount, the FUSE session ended with an error.
pub const PROBLEMS: u8 = 1;
/// Bad usage or configuration: an unknown option, a bad value, options that
/// contradict the volume, no volume where one was expected, a bad mount
/// point.
pub const USAGE: u8 = 2;
/// The store failed: unreachable, credentials refused, a request error.
pub const STORE: u8 = 3;
/// The volume is locked: mounted, or a stale lock left by a crash.
pub const LOCKED: u8 = 4;
/// The user cancelled: declined at a confirmation prompt, or abandoned a
/// mount's unstored data with a second SIGINT (Ctrl-C).
pub const CANCELLED: u8 = 5;
/// A local file or device could not be used: a mount's stats file, a
/// password or access file, the output, /dev/fuse or the kernel mount.
pub const LOCAL_IO: u8 = 6;
/// The password does not open the encrypted volume (its key check failed).
pub const WRONG_PASSWORD: u8 = 7;

/// The exit codes, as shown at the end of `--help` of both programs.
pub const EXIT_CODES_HELP: &str = "\
Exit codes (s3block and s3block-fuse):
  0  success (the mount: unmounted with every block stored)
  1  problems found (bad blocks from verify, a copy that does not verify, a corrupt block); a mount that ended with an error
  2  usage or configuration error (bad option or value, options contradicting the volume, no volume, a bad mount point)
  3  store error (unreachable, credentials refused, request failed)
  4  volume locked (mounted elsewhere, or a stale lock: see `s3block unlock`)
  5  cancelled (at the confirmation prompt, or a mount's unstored data abandoned with a second Ctrl-C)
  6  local file error (a mount's stats file, a password or access file, writing the output, /dev/fuse or the kernel mount)
  7  wrong password for an encrypted volume";

/// The exit code for an error of the s3block layers.
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::InvalidGeometry(_)
        | Error::InvalidSize { .. }
        | Error::Config(_)
        | Error::NoVolume { .. }
        | Error::StoredBlocksWithoutVolume { .. }
        | Error::PasswordNeeded { .. }
        | Error::BlockOutOfRange { .. }
        | Error::RangeOutOfBounds { .. }
        | Error::Mismatch { .. }
        | Error::ReadOnly => USAGE,
        Error::Corrupt { .. } | Error::BadMetadata { .. } | Error::WrongLength { .. } => PROBLEMS,
        Error::Locked { .. } | Error::Fenced { .. } => LOCKED,
        Error::Io { .. } => LOCAL_IO,
        Error::WrongPassword { .. } => WRONG_PASSWORD,
        _ => STORE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockId, StoreErrorKind};

    #[test]
    fn errors_map_to_documented_codes() {
        assert_eq!(exit_code(&Error::Config("x".into())), USAGE);
        assert_eq!(exit_code(&Error::InvalidGeometry("size 0".into())), USAGE);
        let mismatch = Error::Mismatch { what: "block size", stored: "4K".into(), requested: "1M".into() };
        assert_eq!(exit_code(&mismatch), USAGE);
        let store = Error::Store {
            block: Some(BlockId(3)),
            key: "vol/00000003".into(),
            kind: StoreErrorKind::Unauthorized,
            source: "denied".into(),
        };
        assert_eq!(exit_code(&store), STORE);
        let locked =
            Error::Locked { key: "s3backer-mounted".into(), host: "vps".into(), since: "now".into() };
        assert_eq!(exit_code(&locked), LOCKED);
        let corrupt = Error::Corrupt { block: BlockId(1), key: "k".into(), reason: "short".into() };
        assert_eq!(exit_code(&corrupt), PROBLEMS);
        let io = Error::Io { path: "/etc/pw".into(), source: std::io::Error::other("denied") };
        assert_eq!(exit_code(&io), LOCAL_IO);
        let wrong = Error::WrongPassword { key: "v/s3block-volume.json".into(), detail: None };
        assert_eq!(exit_code(&wrong), WRONG_PASSWORD);
    }

    #[test]
    fn every_code_is_in_the_help_table_once() {
        for code in [OK, PROBLEMS, USAGE, STORE, LOCKED, CANCELLED, LOCAL_IO, WRONG_PASSWORD] {
            assert_eq!(EXIT_CODES_HELP.matches(&format!("\n  {code}  ")).count(), 1, "code {code}");
        }
    }
}
