//! The man pages and shell completions generated from the clap
//! definitions (s3block-docgen) name every option each program takes, and
//! `s3block completions` prints the same scripts the package installs.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::process::Command;

use clap::Command as ClapCommand;
use s3block_docgen::{SHELLS, completion, man_pages, programs};

/// How roff writes a flag: every dash escaped.
fn roff(flag: &str) -> String {
    flag.replace('-', "\\-")
}

/// Every command under `command` (itself first), built, with the name of
/// its man page.
fn commands_with_pages(command: &ClapCommand) -> Vec<(String, ClapCommand)> {
    fn walk(command: &ClapCommand, out: &mut Vec<(String, ClapCommand)>) {
        let name = command.get_display_name().unwrap_or(command.get_name()).to_owned();
        out.push((format!("{name}.1"), command.clone()));
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out);
        }
    }
    let mut command = command.clone().disable_help_subcommand(true);
    command.build();
    let mut out = Vec::new();
    walk(&command, &mut out);
    out
}

#[test]
fn every_page_names_every_option_of_its_command() {
    let mut checked = 0;
    for program in programs() {
        let pages = man_pages(&program).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for (page_name, command) in commands_with_pages(&program) {
            let text = &pages.iter().find(|(n, _)| *n == page_name).unwrap_or_else(|| {
                panic!("no man page {page_name} for {}; pages: {names:?}", command.get_name())
            });
            let text = String::from_utf8(text.1.clone()).unwrap();
            assert!(text.starts_with(".ie") || text.contains(".TH"), "{page_name} is not roff:\n{text}");
            for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    let flag = roff(&format!("--{long}"));
                    assert!(text.contains(&flag), "{page_name} does not name --{long}");
                    checked += 1;
                }
                if let Some(short) = arg.get_short() {
                    let flag = roff(&format!("-{short}"));
                    assert!(text.contains(&format!("\\fB{flag}\\fR")), "{page_name} does not name -{short}");
                }
                // The other spellings (s3backer's names) are listed too.
                for alias in arg.get_all_aliases().unwrap_or_default() {
                    let flag = roff(&format!("--{alias}"));
                    assert!(text.contains(&flag), "{page_name} does not name --{alias} (an alias)");
                }
            }
            for positional in command.get_positionals().filter(|a| !a.is_hide_set()) {
                let value = positional.get_value_names().and_then(|v| v.first()).map(|v| v.to_string());
                let value = value.unwrap_or_else(|| positional.get_id().to_string().to_uppercase());
                assert!(text.contains(&value), "{page_name} does not name the argument {value}");
            }
        }
    }
    // The three programs have dozens of options; a check that saw few
    // means the walk above went wrong.
    assert!(checked > 150, "only {checked} options checked");
}

#[test]
fn the_fuse_page_lists_the_s3backer_names_and_the_fstab_form() {
    let fuse = &man_pages(&programs()[1]).unwrap()[0];
    assert_eq!(fuse.0, "s3block-fuse.1");
    let text = String::from_utf8(fuse.1.clone()).unwrap();
    for needle in ["OTHER SPELLINGS", "\\-\\-blockSize", "\\-\\-baseURL", "\\-o size=30G"] {
        assert!(text.contains(needle), "s3block-fuse.1 lacks {needle}");
    }
}

#[test]
fn completions_generate_for_every_shell_and_name_the_options() {
    for program in programs() {
        let name = program.get_name().to_owned();
        for shell in SHELLS {
            let script = String::from_utf8(completion(&program, shell)).unwrap();
            assert!(script.contains(&name), "{shell:?} script of {name} does not name it");
            for arg in program.get_arguments().filter(|a| !a.is_hide_set()) {
                let Some(long) = arg.get_long() else { continue };
                let form = match shell {
                    s3block_cli::CompletionShell::Fish => format!("-l {long}"),
                    _ => format!("--{long}"),
                };
                assert!(script.contains(&form), "{shell:?} script of {name} lacks {form}");
            }
            if matches!(shell, s3block_cli::CompletionShell::Bash) {
                // The script parses as bash.
                let path = std::env::temp_dir()
                    .join(format!("s3block-completion-{}-{name}.bash", std::process::id()));
                std::fs::write(&path, &script).unwrap();
                let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
                std::fs::remove_file(&path).unwrap();
                assert!(out.status.success(), "bash -n {name}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

#[test]
fn s3block_completions_prints_the_packaged_script() {
    let bin = env!("CARGO_BIN_EXE_rel-s3block");
    for (shell, arg) in SHELLS.iter().zip(["bash", "zsh", "fish"]) {
        let out = Command::new(bin).args(["completions", arg]).output().unwrap();
        assert!(out.status.success(), "s3block completions {arg}: {}", String::from_utf8_lossy(&out.stderr));
        // The binary runs as rel-s3block here; the script names s3block.
        assert_eq!(out.stdout, completion(&programs()[0], *shell), "s3block completions {arg}");
    }
    let out = Command::new(bin).args(["completions", "tcsh"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tcsh") && err.contains("bash"), "the error names the value and the choices: {err}");
}
