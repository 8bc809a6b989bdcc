//! `s3block completions SHELL`: the completion script of a command for
//! bash, zsh or fish (clap_complete), what the Debian package installs for
//! every s3block program.

use std::io::Write;

use clap::{Args, ValueEnum};

use crate::exit::CliError;

/// `s3block completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells `s3block completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

impl CompletionShell {
    /// The generator of clap_complete for this shell.
    pub fn generator(self) -> clap_complete::Shell {
        match self {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes the completion script of `command` (run as `name`) for `shell`
/// to `out`: what `s3block completions` prints, and what packaging installs
/// for every s3block program.
pub fn completions(
    shell: CompletionShell,
    command: &mut clap::Command,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // Generated whole first: clap_complete cannot report a write error.
    let mut script = Vec::new();
    clap_complete::generate(shell.generator(), command, name, &mut script);
    out.write_all(&script)?;
    Ok(())
}
