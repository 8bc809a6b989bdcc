//! Where an encrypted volume's password comes from.
//!
//! A password never goes on the command line, where any user of the machine
//! can read it in the process list. The frontends fill a [`PasswordSource`]
//! from one of:
//!
//! - a prompt on the terminal (the frontend reads it and passes
//!   [`PasswordSource::Given`]);
//! - `--password-file FILE` ([`PasswordSource::File`]): the file's first
//!   line, without its line ending;
//! - an environment variable, [`PASSWORD_ENV`] by default
//!   ([`PasswordSource::Env`]).

use std::fmt;
use std::path::PathBuf;

use s3block_core::{Error, Result};
use zeroize::Zeroizing;

/// The environment variable the frontends read a password from.
pub const PASSWORD_ENV: &str = "S3BLOCK_PASSWORD";

/// A volume password. Its bytes are wiped from memory when dropped and never
/// printed (`Debug` shows `Password(..)`).
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// A password from its bytes (UTF-8 text from a prompt, file or variable).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Password(Zeroizing::new(bytes.into()))
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn checked(self, whence: &str) -> Result<Self> {
        if self.0.is_empty() {
            return Err(Error::Config(format!("the password from {whence} is empty")));
        }
        Ok(self)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Where to read the password.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PasswordSource {
    /// Already read (from a prompt, or by the caller).
    Given(Password),
    /// The first line of this file.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl PasswordSource {
    /// The password from [`PASSWORD_ENV`].
    pub fn env() -> Self {
        PasswordSource::Env(PASSWORD_ENV.to_owned())
    }

    /// Reads the password; an empty one, a missing file or an unset variable
    /// is an error that names the file or variable.
    pub fn read(&self) -> Result<Password> {
        match self {
            PasswordSource::Given(p) => p.clone().checked("the prompt"),
            PasswordSource::File(path) => {
                let text = Zeroizing::new(std::fs::read(path).map_err(|source| Error::Io {
                    path: format!("password file {}", path.display()),
                    source,
                })?);
                let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Password::new(line).checked(&format!("password file {}", path.display()))
            }
            PasswordSource::Env(var) => match std::env::var_os(var) {
                Some(v) => {
                    Password::new(v.into_encoded_bytes()).checked(&format!("environment variable {var}"))
                }
                None => Err(Error::Config(format!(
                    "the volume is encrypted and environment variable {var} is not set"
                ))),
            },
        }
    }
}

/// Asks for a password: given the prompt text, returns the line typed (a
/// terminal prompt without echo, say `rpassword::prompt_password`).
pub type PasswordPrompt<'a> = &'a mut (dyn FnMut(&str) -> std::io::Result<String> + Send);

/// The password of `what` (a volume, named for the prompt and messages):
/// from `source` when there is one, else asked with `prompt` (twice when
/// `confirm`, as when creating). Without either, or when asking fails, the
/// error says how to give one.
pub fn obtain_password(
    source: Option<&PasswordSource>,
    prompt: Option<PasswordPrompt<'_>>,
    what: &str,
    confirm: bool,
) -> Result<Password> {
    if let Some(source) = source {
        return source.read();
    }
    let no_prompt = |why: String| Error::PasswordNeeded { what: what.to_owned(), why: Some(why) };
    let Some(prompt) = prompt else { return Err(no_prompt("nothing can ask for one".into())) };
    let mut ask =
        |text: &str| prompt(text).map_err(|e| no_prompt(format!("asking on the terminal failed ({e})")));
    let first = Zeroizing::new(ask(&format!("Password for {what}: "))?);
    if confirm {
        let again = Zeroizing::new(ask("The same password again: ")?);
        if *again != *first {
            return Err(Error::Config(format!("the passwords typed for {what} differ; nothing was created")));
        }
    }
    PasswordSource::Given(Password::new(first.as_bytes())).read()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_gives_its_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, b"correct horse\r\nsecond line\n").expect("write");
        let p = PasswordSource::File(path.clone()).read().expect("read");
        assert_eq!(p.as_bytes(), b"correct horse");
        std::fs::write(&path, b"\n").expect("write");
        let err = PasswordSource::File(path.clone()).read().unwrap_err();
        assert!(err.to_string().contains("empty") && err.to_string().contains("pw"), "{err}");
        let err = PasswordSource::File(dir.path().join("missing")).read().unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn env_and_given() {
        let err = PasswordSource::Env("S3BLOCK_TEST_UNSET_PASSWORD_VAR".into()).read().unwrap_err();
        assert!(err.to_string().contains("S3BLOCK_TEST_UNSET_PASSWORD_VAR"), "{err}");
        let p = PasswordSource::Given(Password::new("x")).read().expect("given");
        assert_eq!(p.as_bytes(), b"x");
        assert_eq!(format!("{p:?}"), "Password(..)");
        assert!(PasswordSource::Given(Password::new("")).read().is_err());
    }
}
