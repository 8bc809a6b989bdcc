//! The mount program, built inside the test package so the reliability tests
//! run the code of this tree (`CARGO_BIN_EXE_rel-s3block-fuse`).

fn main() -> std::process::ExitCode {
    s3block_fuse::run(std::env::args_os())
}
