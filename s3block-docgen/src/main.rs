//! `s3block-docgen DIR`: writes every man page and completion script of the
//! s3block programs under `DIR` (see the library for the layout).

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!(
            "usage: s3block-docgen DIR  (writes DIR/man/*.1.gz and DIR/completions/{{bash,zsh,fish}}/)"
        );
        return ExitCode::from(s3block_cli::exit::USAGE);
    };
    let dir = Path::new(dir);
    match s3block_docgen::write_all(dir) {
        Ok(files) => {
            println!("s3block-docgen: wrote {} files under {}", files.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("s3block-docgen: {e}");
            ExitCode::from(s3block_cli::exit::LOCAL_IO)
        }
    }
}
