//! Confirmation prompts (`erase`, `unlock`): the user types a word on the
//! terminal, or passes `--force`. Without a terminal there is nobody to ask,
//! so the command stops with a usage error that says to pass `--force`,
//! rather than reading end-of-file as a "no".

use std::io::{BufRead, IsTerminal, Write};

use s3block_core::Error;

use crate::exit::CliError;

/// Asks `question` on stderr and reads the answer from stdin: true when it
/// is `word`. Fails when stdin is not a terminal.
pub fn ask(question: &str, word: &str) -> Result<bool, CliError> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    ask_with(question, word, terminal, &mut stdin.lock(), &mut std::io::stderr())
}

/// [`ask`] with the input, the prompt's output and whether the input is a
/// terminal given.
pub fn ask_with(
    question: &str,
    word: &str,
    terminal: bool,
    input: &mut dyn BufRead,
    prompt: &mut dyn Write,
) -> Result<bool, CliError> {
    if !terminal {
        return Err(no_terminal(word).into());
    }
    write!(prompt, "{question} Type {word:?} to go on: ")?;
    prompt.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(line.trim() == word)
}

/// The error for a confirmation that cannot be asked.
pub fn no_terminal(word: &str) -> Error {
    Error::Config(format!(
        "{word} asks for confirmation on a terminal, and standard input is not one: pass --force to {word} \
         without being asked"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_on_a_terminal_and_refuses_without_one() {
        let mut prompt = Vec::new();
        assert!(ask_with("Erase?", "erase", true, &mut &b"erase\n"[..], &mut prompt).unwrap());
        assert!(String::from_utf8(prompt).unwrap().contains("Type \"erase\""));
        assert!(!ask_with("Erase?", "erase", true, &mut &b"no\n"[..], &mut Vec::new()).unwrap());
        let err = ask_with("Unlock?", "unlock", false, &mut &b""[..], &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::USAGE);
        assert!(err.to_string().contains("--force") && err.to_string().contains("terminal"), "{err}");
    }
}
