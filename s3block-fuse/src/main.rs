//! The `s3block-fuse` program; everything is in the library.

fn main() -> std::process::ExitCode {
    s3block_fuse::run(std::env::args_os())
}
