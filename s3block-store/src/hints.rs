//! What to do about an error, in the words of the command line: the hint
//! both programs print after an error of the library, which itself names no
//! option and no command.

use s3block_core::{Error, StoreErrorKind};

use crate::password::PASSWORD_ENV;

/// The command-line advice for `error`, if there is any: which command
/// breaks a stale lock, how to give a password, how to adopt stored blocks.
pub fn command_hint(error: &Error) -> Option<String> {
    match error {
        Error::Locked { host, .. } => Some(match s3block_core::lock_facts(host) {
            None => "if that mount is gone, break the lock with `s3block unlock`".to_owned(),
            Some(facts) if facts.contains("did not stop cleanly") => {
                "break the stale lock with `s3block unlock`".to_owned()
            }
            Some(_) => "if that program does not mount this volume, break the lock with `s3block unlock`; \
                        if it does, unmount it first"
                .to_owned(),
        }),
        Error::Store { kind: StoreErrorKind::Unauthorized, .. } => {
            Some("--access-file names an access file other than ~/.s3backer_passwd".to_owned())
        }
        Error::Store { kind: StoreErrorKind::Transient, .. } => {
            Some("the endpoint is --endpoint (else AWS_ENDPOINT_URL, else AWS itself)".to_owned())
        }
        Error::PasswordNeeded { .. } => Some(format!("give --password-file FILE or set {PASSWORD_ENV}")),
        Error::StoredBlocksWithoutVolume { .. } => Some(
            "if they are a volume, write its descriptor with `s3block create --adopt` and the --size and \
             --block-size it was written with; otherwise remove them with `s3block erase`"
                .to_owned(),
        ),
        _ => None,
    }
}

/// `error` followed by its [`command_hint`], as the programs print it.
pub fn with_hint(error: &Error, text: String) -> String {
    match command_hint(error) {
        Some(hint) => format!("{text}; {hint}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_commands_and_options() {
        let locked = Error::Locked { key: "k".into(), host: "elsewhere.example".into(), since: "t".into() };
        assert!(command_hint(&locked).is_some_and(|h| h.contains("`s3block unlock`")));
        let pw = Error::PasswordNeeded { what: "v".into(), why: None };
        let text = with_hint(&pw, pw.to_string());
        assert!(text.starts_with("v is encrypted") && text.contains("--password-file"), "{text}");
        assert!(!pw.to_string().contains("--password-file"), "the library's own message names no option");
        assert_eq!(command_hint(&Error::ReadOnly), None);
        let store = |kind| Error::Store { block: None, key: "k".into(), kind, source: "refused".into() };
        let denied = command_hint(&store(StoreErrorKind::Unauthorized)).expect("a hint");
        assert!(denied.contains("--access-file"), "{denied}");
        let unreachable = command_hint(&store(StoreErrorKind::Transient)).expect("a hint");
        assert!(unreachable.contains("--endpoint"), "{unreachable}");
    }
}
