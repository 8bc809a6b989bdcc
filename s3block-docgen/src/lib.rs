//! Man pages and shell completions of the s3block programs, generated from
//! the clap definitions they parse, so the documentation lists exactly the
//! options each program takes.
//!
//! [`programs`] gives the three command lines: `s3block`
//! ([`s3block_cli::Cli`]), `s3block-fuse`
//! ([`s3block_fuse::Options::command_with_help`]) and `s3block-nbd`
//! ([`s3block_nbd::command`]). [`man_pages`] renders a program's pages: one
//! for the program and one per subcommand (`s3block-cache-inspect.1`), with
//! a section naming the other spellings an option accepts (s3backer's
//! `--blockSize` for `--block-size`). [`completion`] renders a shell's
//! completion script with the same generator `s3block completions` uses.
//! [`write_all`] writes everything in the layout the Debian package takes
//! its files from:
//!
//! ```text
//! DIR/man/NAME.1.gz
//! DIR/completions/bash/NAME
//! DIR/completions/zsh/_NAME
//! DIR/completions/fish/NAME.fish
//! ```
//!
//! The pages are gzipped as Debian installs them (no time stamp in the
//! header, so the same sources give the same bytes); `man -l FILE.1.gz`
//! reads one.
//!
//! It is a build tool of the repository (`scripts/package.sh` runs it), not
//! part of what users install: the programs themselves do not carry a man
//! page renderer.
//!
//! ```
//! let pages = s3block_docgen::man_pages(&s3block_docgen::programs()[0]).unwrap();
//! assert!(pages.iter().any(|(name, _)| name == "s3block-cost.1"));
//! ```

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use s3block_cli::CompletionShell;

/// The shells completion scripts are written for.
pub const SHELLS: [CompletionShell; 3] = [CompletionShell::Bash, CompletionShell::Zsh, CompletionShell::Fish];

/// The command lines of `s3block`, `s3block-fuse` and `s3block-nbd`, in
/// that order, as each program builds it.
pub fn programs() -> [Command; 3] {
    [s3block_cli::Cli::command(), s3block_fuse::Options::command_with_help(), s3block_nbd::command()]
}

/// The man pages of `program` and of each of its subcommands, as (file
/// name, roff text), the program's page first.
pub fn man_pages(program: &Command) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut program = program.clone().disable_help_subcommand(true);
    // Building sets each subcommand's display name (`s3block-cache-inspect`),
    // which names its page, and its usage line (`s3block cache inspect`).
    program.build();
    let mut pages = Vec::new();
    add_pages(&program, &mut pages)?;
    Ok(pages)
}

fn add_pages(command: &Command, pages: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    roff.extend_from_slice(other_spellings(command).as_bytes());
    pages.push((man.get_filename(), roff));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_pages(sub, pages)?;
    }
    Ok(())
}

/// A roff section listing the hidden long aliases of the options (the
/// s3backer names), or nothing when no option has any.
fn other_spellings(command: &Command) -> String {
    let mut lines = String::new();
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        let (Some(long), Some(aliases)) = (arg.get_long(), arg.get_all_aliases()) else { continue };
        let aliases: Vec<String> = aliases.iter().map(|a| format!("\\-\\-{}", roff_escape(a))).collect();
        // Each line is a paragraph: the option, then what else it answers to.
        let _ = writeln!(lines, ".TP\n\\-\\-{}\n{}", roff_escape(long), aliases.join(", "));
    }
    if lines.is_empty() {
        return lines;
    }
    format!(
        ".SH \"OTHER SPELLINGS\"\nThese options also answer to the names below (s3backer's among them).\n{lines}"
    )
}

/// `text` with roff's special characters escaped: backslashes, and dashes
/// (so they print as ASCII hyphens that copy and search as typed).
fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// The completion script of `program` for `shell`.
pub fn completion(program: &Command, shell: CompletionShell) -> Vec<u8> {
    let name = program.get_name().to_owned();
    let mut script = Vec::new();
    // Writing into a Vec cannot fail.
    s3block_cli::completions(shell, &mut program.clone(), &name, &mut script)
        .expect("writing a completion script into memory");
    script
}

/// `bytes` gzipped at the best level, with no name or time in the header.
fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    io::Write::write_all(&mut encoder, bytes)?;
    encoder.finish()
}

/// Where a completion script of program `name` goes under `dir`, in the
/// layout above (each shell's own naming rule).
pub fn completion_path(dir: &Path, shell: CompletionShell, name: &str) -> PathBuf {
    let completions = dir.join("completions");
    match shell {
        CompletionShell::Bash => completions.join("bash").join(name),
        CompletionShell::Zsh => completions.join("zsh").join(format!("_{name}")),
        CompletionShell::Fish => completions.join("fish").join(format!("{name}.fish")),
    }
}

/// Writes every man page and completion script of the three programs under
/// `dir`, creating the directories; returns the files written. Errors name
/// the file.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut write = |path: PathBuf, bytes: &[u8]| -> io::Result<()> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(with_path)?;
        }
        std::fs::write(&path, bytes).map_err(with_path)?;
        written.push(path);
        Ok(())
    };
    for program in programs() {
        for (file, roff) in man_pages(&program)? {
            write(dir.join("man").join(format!("{file}.gz")), &gzip(&roff)?)?;
        }
        for shell in SHELLS {
            write(completion_path(dir, shell, program.get_name()), &completion(&program, shell))?;
        }
    }
    Ok(written)
}
