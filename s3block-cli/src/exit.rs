//! Exit codes: the table both programs follow is `s3block_core::exit`;
//! here the command's own errors map onto it.

use std::io;

use s3block_core::Error;

pub use s3block_core::exit::{
    CANCELLED, EXIT_CODES_HELP, LOCAL_IO, LOCKED, OK, PROBLEMS, STORE, USAGE, WRONG_PASSWORD,
    exit_code as core_exit_code,
};

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
