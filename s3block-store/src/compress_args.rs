//! The compression options, as a clap argument group shared by the mount
//! program and the `s3block` command (`create`, `copy`), in s3backer's
//! spellings. Compiled with the `clap` feature.
//!
//! | flag | meaning |
//! |---|---|
//! | `--compress` | deflate at its default level, 6 |
//! | `--compress=deflate`, `--compress=zstd` | that algorithm at its default level (deflate 6, zstd 3) |
//! | `--compress=N` | deflate at level N (1-9), as in s3backer 1.x |
//! | `--compress-level=N` | the level of the algorithm `--compress` names: deflate 1-9, zstd 1-22 |
//!
//! s3backer 2.x also takes zstd's negative (fast) levels and level 0; s3block
//! refuses them and names the range. Every block is read by its own
//! `Content-Encoding`, whatever these options say.

use s3block_core::{Error, Result};

use crate::codec::{Compression, CompressionAlgorithm};

/// What `--compress` names: an algorithm, or (s3backer 1.x) a deflate level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressChoice {
    /// `--compress`, `--compress=deflate`, `--compress=zstd`.
    Algorithm(CompressionAlgorithm),
    /// `--compress=N`: deflate at level N.
    DeflateLevel(u32),
}

/// How new blocks are compressed: flatten into a clap parser.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct CompressArgs {
    /// Compress blocks when they are written: deflate (the default) or zstd; a number N is deflate at level N (1-9).
    #[arg(long, env = "S3BLOCK_COMPRESS", value_name = "ALGORITHM|LEVEL", num_args = 0..=1,
          require_equals = true, default_missing_value = "deflate", value_parser = compress_arg)]
    pub compress: Option<CompressChoice>,

    /// Level of --compress's algorithm: deflate 1-9 (default 6), zstd 1-22 (default 3).
    #[arg(long = "compress-level", value_name = "LEVEL", requires = "compress",
          value_parser = clap::value_parser!(u32).range(1..=22))]
    pub compress_level: Option<u32>,
}

fn compress_arg(text: &str) -> std::result::Result<CompressChoice, String> {
    if let Ok(level) = text.parse::<u32>() {
        return match level {
            1..=9 => Ok(CompressChoice::DeflateLevel(level)),
            _ => Err(format!("deflate level {level} is not between 1 and 9")),
        };
    }
    text.parse::<CompressionAlgorithm>().map(CompressChoice::Algorithm).map_err(|e| e.to_string())
}

impl CompressArgs {
    /// The compression asked for, checked: `None` without `--compress`.
    pub fn compression(&self) -> Result<Option<Compression>> {
        let (algorithm, level) = match (self.compress, self.compress_level) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err(Error::Config("--compress-level needs --compress".into())),
            (Some(CompressChoice::DeflateLevel(level)), None) => (CompressionAlgorithm::Deflate, Some(level)),
            (Some(CompressChoice::DeflateLevel(n)), Some(level)) => {
                return Err(Error::Config(format!(
                    "--compress={n} is deflate at level {n}; with --compress-level={level}, name the algorithm: --compress=deflate or --compress=zstd"
                )));
            }
            (Some(CompressChoice::Algorithm(algorithm)), level) => (algorithm, level),
        };
        Compression::new(algorithm, level)
            .map(Some)
            .map_err(|e| Error::Config(format!("--compress-level: {e}")))
    }

    /// The options that ask for `compression` (the reverse of [`compression`](Self::compression)).
    pub fn from_compression(compression: Option<Compression>) -> Self {
        CompressArgs {
            compress: compression.map(|c| CompressChoice::Algorithm(c.algorithm())),
            compress_level: compression.map(|c| c.level()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        c: CompressArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<Option<Compression>, String> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.c.compression().map_err(|e| e.to_string())
    }

    #[test]
    fn s3backer_spellings() {
        let deflate = |l| Ok(Some(Compression::deflate(l).expect("level")));
        let zstd = |l| Ok(Some(Compression::zstd(l).expect("level")));
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["--compress"]), deflate(6));
        assert_eq!(parse(&["--compress=9"]), deflate(9));
        assert_eq!(parse(&["--compress=deflate"]), deflate(6));
        assert_eq!(parse(&["--compress=deflate", "--compress-level=2"]), deflate(2));
        assert_eq!(parse(&["--compress=zstd"]), zstd(3));
        assert_eq!(parse(&["--compress=ZSTD", "--compress-level=19"]), zstd(19));
        assert_eq!(parse(&["--compress", "--compress-level=1"]), deflate(1));
    }

    #[test]
    fn bad_combinations_name_the_option() {
        for (args, says) in [
            (&["--compress=0"][..], "between 1 and 9"),
            (&["--compress=12"][..], "between 1 and 9"),
            (&["--compress=brotli"][..], "deflate or zstd"),
            (&["--compress-level=3"][..], "--compress"),
            (&["--compress=deflate", "--compress-level=12"][..], "--compress-level"),
            (&["--compress=zstd", "--compress-level=23"][..], "--compress-level"),
            (&["--compress=zstd", "--compress-level=0"][..], "--compress-level"),
            (&["--compress=5", "--compress-level=3"][..], "name the algorithm"),
        ] {
            let err = parse(args).expect_err(&format!("{args:?}"));
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    #[test]
    fn round_trips_through_the_options() {
        for c in
            [None, Some(Compression::zstd(7).expect("zstd")), Some(Compression::deflate(2).expect("deflate"))]
        {
            assert_eq!(CompressArgs::from_compression(c).compression().expect("valid"), c);
        }
    }
}
