//! Exit codes, and the one place errors become them.

use std::io;

use s3block_core::Error;

/// The command did what was asked.
pub const OK: u8 = 0;
/// The command ran and found problems: bad blocks (`verify`), a copy that
/// does not read back equal (`copy`), a corrupt block (`cat`).
pub const PROBLEMS: u8 = 1;
/// Bad usage or configuration: an unknown option, a bad value, options that
/// contradict the volume, no volume where one was expected.
pub const USAGE: u8 = 2;
/// The store failed: unreachable, credentials refused, a request error.
pub const STORE: u8 = 3;
/// The volume is locked: mounted, or a stale lock left by a crash.
pub const LOCKED: u8 = 4;
/// The user declined at a confirmation prompt.
pub const CANCELLED: u8 = 5;
/// A local file could not be read or written (a mount's stats file, stdout).
pub const LOCAL_IO: u8 = 6;
/// The password does not open the encrypted volume (its key check failed).
pub const WRONG_PASSWORD: u8 = 7;

/// The exit codes, as shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  problems found (bad blocks from verify, a copy that does not verify, a corrupt block)
  2  usage or configuration error (bad option, options contradicting the volume, no volume)
  3  store error (unreachable, credentials refused, request failed)
  4  volume locked (mounted elsewhere, or a stale lock: see `s3block unlock`)
  5  cancelled at the confirmation prompt
  6  local file error (a mount's stats file, a password file, writing the output)
  7  wrong password for an encrypted volume";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// An error from the s3block layers.
    #[error(transparent)]
    Core(#[from] Error),
    /// The user said no.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[source] io::Error),
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Core(e) => core_exit_code(e),
            CliError::Cancelled(_) => CANCELLED,
            CliError::Output(_) => LOCAL_IO,
        }
    }

    /// True when stdout was closed by the reader (`s3block ls | head`):
    /// not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// The exit code for an error of the s3block layers.
pub fn core_exit_code(error: &Error) -> u8 {
    match error {
        Error::InvalidGeometry(_)
        | Error::InvalidSize { .. }
        | Error::Config(_)
        | Error::BlockOutOfRange { .. }
        | Error::RangeOutOfBounds { .. }
        | Error::Mismatch { .. }
        | Error::ReadOnly => USAGE,
        Error::Corrupt { .. } | Error::BadMetadata { .. } | Error::WrongLength { .. } => PROBLEMS,
        Error::Locked { .. } => LOCKED,
        Error::Io { .. } => LOCAL_IO,
        Error::WrongPassword { .. } => WRONG_PASSWORD,
        _ => STORE,
    }
}

/// Result of a command function: the exit code on success (0, or 1 when
/// the command ran and found problems).
pub type CliResult = Result<u8, CliError>;

#[cfg(test)]
mod tests {
    use super::*;
    use s3block_core::{BlockId, StoreErrorKind};

    #[test]
    fn errors_map_to_documented_codes() {
        assert_eq!(core_exit_code(&Error::Config("x".into())), USAGE);
        assert_eq!(
            core_exit_code(&Error::Mismatch {
                what: "block size",
                stored: "4K".into(),
                requested: "1M".into()
            }),
            USAGE
        );
        let store = Error::Store {
            block: Some(BlockId(3)),
            key: "vol/00000003".into(),
            kind: StoreErrorKind::Unauthorized,
            source: "denied".into(),
        };
        assert_eq!(core_exit_code(&store), STORE);
        let locked =
            Error::Locked { key: "s3backer-mounted".into(), host: "vps".into(), since: "now".into() };
        assert_eq!(core_exit_code(&locked), LOCKED);
        let corrupt = Error::Corrupt { block: BlockId(1), key: "k".into(), reason: "short".into() };
        assert_eq!(CliError::from(corrupt).exit_code(), PROBLEMS);
        assert_eq!(CliError::Cancelled("no".into()).exit_code(), CANCELLED);
        let pipe = CliError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
        assert_eq!(pipe.exit_code(), LOCAL_IO);
        let wrong = Error::WrongPassword { key: "v/s3block-volume.json".into(), detail: None };
        assert_eq!(CliError::from(wrong).exit_code(), WRONG_PASSWORD);
        for code in [OK, PROBLEMS, USAGE, STORE, LOCKED, CANCELLED, LOCAL_IO, WRONG_PASSWORD] {
            assert!(EXIT_CODES_HELP.contains(&format!("  {code}  ")), "code {code} undocumented");
        }
    }
}
