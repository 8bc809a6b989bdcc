//! Options read from files: `-F FILE` and `--config-file=FILE` (s3backer's
//! `--configFile`) stand for the arguments in FILE, one a line.
//!
//! Each line is one argument as it would be typed, without shell quoting:
//! surrounding white space is trimmed, the white space inside kept. Blank
//! lines and lines starting with `#` are skipped. A file may name another
//! one, up to [`MAX_DEPTH`] deep; a file that names itself (directly or
//! not) is refused rather than read forever.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::options::OptionsError;

/// How deep files may name files.
pub(crate) const MAX_DEPTH: usize = 8;

/// The largest file read: a list of options, not a disk image given by mistake.
const MAX_FILE: u64 = 64 << 10;

/// `args` (program name first) with every `-F FILE`, `--config-file FILE`
/// and `--configFile=FILE` replaced by the arguments in FILE. Arguments
/// after `--` are left alone.
pub(crate) fn insert_config_files(args: Vec<OsString>) -> Result<Vec<OsString>, OptionsError> {
    let mut out = Vec::with_capacity(args.len());
    insert(args, &mut out, &mut Vec::new(), true)?;
    Ok(out)
}

fn insert(
    args: Vec<OsString>,
    out: &mut Vec<OsString>,
    stack: &mut Vec<PathBuf>,
    top: bool,
) -> Result<(), OptionsError> {
    let mut iter = args.into_iter();
    if top {
        out.extend(iter.next());
    }
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(iter.by_ref());
            break;
        }
        let text = arg.to_str().unwrap_or_default();
        let file = if matches!(text, "-F" | "--config-file" | "--configFile") {
            match iter.next() {
                Some(file) => PathBuf::from(file),
                None => return Err(OptionsError(format!("{text} needs a file of options, one a line"))),
            }
        } else if let Some(file) =
            ["--config-file=", "--configFile=", "-F"].iter().find_map(|p| text.strip_prefix(p))
        {
            PathBuf::from(file)
        } else {
            out.push(arg);
            continue;
        };
        read(&file, out, stack)?;
    }
    Ok(())
}

/// Inserts the arguments of `file`, and of the files it names.
fn read(file: &Path, out: &mut Vec<OsString>, stack: &mut Vec<PathBuf>) -> Result<(), OptionsError> {
    let bad = |why: String| OptionsError(format!("--config-file {}: {why}", file.display()));
    if stack.len() >= MAX_DEPTH {
        return Err(bad(format!("files name files more than {MAX_DEPTH} deep")));
    }
    let real = std::fs::canonicalize(file).map_err(|e| bad(e.to_string()))?;
    if stack.contains(&real) {
        return Err(bad("it names itself, through the files it names".into()));
    }
    let text = {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(&real)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
            .map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > MAX_FILE {
            return Err(bad(format!("more than {MAX_FILE} bytes: not a file of options")));
        }
        text
    };
    let args: Vec<OsString> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(OsString::from)
        .collect();
    stack.push(real);
    let result = insert(args, out, stack, false);
    stack.pop();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap_or("?")).collect()
    }

    #[test]
    fn files_stand_for_their_lines_nested_and_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inner = dir.path().join("inner.conf");
        std::fs::write(&inner, "--cache-size=8M\n").expect("write");
        let outer = dir.path().join("outer.conf");
        std::fs::write(
            &outer,
            format!(
                "# the volume\n  --size=1G  \n\n--prefix=with space/\n--configFile={}\nmemory://\n",
                inner.display()
            ),
        )
        .expect("write");
        let args = ["m", "-F", outer.to_str().expect("utf-8"), "/mnt", "--", "-F", "x"].map(OsString::from);
        let out = insert_config_files(args.to_vec()).expect("expands");
        assert_eq!(
            strings(&out),
            [
                "m",
                "--size=1G",
                "--prefix=with space/",
                "--cache-size=8M",
                "memory://",
                "/mnt",
                "--",
                "-F",
                "x"
            ]
        );
    }

    #[test]
    fn missing_looping_and_dangling_files_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("none.conf");
        let err =
            insert_config_files(vec!["m".into(), format!("--config-file={}", missing.display()).into()])
                .expect_err("missing");
        assert!(err.0.contains("none.conf") && err.0.contains("--config-file"), "{}", err.0);
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        std::fs::write(&a, format!("-F\n{}\n", b.display())).expect("write");
        std::fs::write(&b, format!("--configFile={}\n", a.display())).expect("write");
        let err = insert_config_files(vec!["m".into(), "-F".into(), a.clone().into()]).expect_err("a loop");
        assert!(err.0.contains("names itself"), "{}", err.0);
        let err = insert_config_files(vec!["m".into(), "-F".into()]).expect_err("no file");
        assert!(err.0.contains("-F needs a file"), "{}", err.0);
    }
}
