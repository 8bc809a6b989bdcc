//! The control protocol a running frontend answers, through which
//! `s3block resize` grows its volume: the mount's `control` file, or
//! s3block-nbd's control socket.
//!
//! A request is one line of at most [`MAX_REQUEST`] bytes; the answer is one
//! line:
//!
//! | request | answer |
//! |---|---|
//! | `size` | `ok SIZE BLOCK_SIZE` (bytes) |
//! | `resize SIZE [BLOCK_SIZE]` | `ok OLD_SIZE NEW_SIZE`, or `error WHY` |
//!
//! Sizes are decimal bytes. A `BLOCK_SIZE` other than the volume's is
//! refused (that is `s3block copy --block-size`); so is a smaller size, with
//! the reason (see [`VolumeGrow`]). Anything else is answered `error` with
//! what was expected.

use s3block_core::format_size;

use super::grow::VolumeGrow;

/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 256;

/// A parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// The size and block size now.
    Size,
    /// Grow to `size` bytes; `block_size`, when given, must be the volume's.
    Resize { size: u64, block_size: Option<u64> },
}

const EXPECTED: &str = "expected `size` or `resize BYTES [BLOCK_SIZE]` (decimal bytes)";

/// Parses one request line.
fn parse(raw: &[u8]) -> Result<Request, String> {
    if raw.len() > MAX_REQUEST {
        return Err(format!("the request is {} bytes, more than {MAX_REQUEST}; {EXPECTED}", raw.len()));
    }
    let text = std::str::from_utf8(raw).map_err(|_| format!("the request is not text; {EXPECTED}"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.contains('\n') {
        return Err(format!("one request per write; {EXPECTED}"));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let number = |w: &str, what: &str| {
        w.parse::<u64>().map_err(|_| format!("{what} {w:?} is not a number of bytes; {EXPECTED}"))
    };
    match words.as_slice() {
        ["size"] => Ok(Request::Size),
        ["resize", size] => Ok(Request::Resize { size: number(size, "the size")?, block_size: None }),
        ["resize", size, block_size] => Ok(Request::Resize {
            size: number(size, "the size")?,
            block_size: Some(number(block_size, "the block size")?),
        }),
        _ => Err(format!("unknown request {text:?}; {EXPECTED}")),
    }
}

/// Answers the request `raw`: the answer line, and whether the volume grew.
pub async fn answer(grow: &VolumeGrow, raw: &[u8]) -> (String, bool) {
    let request = match parse(raw) {
        Ok(r) => r,
        Err(why) => return (format!("error {why}\n"), false),
    };
    let g = grow.geometry();
    match request {
        Request::Size => (format!("ok {} {}\n", g.size(), g.block_size()), false),
        Request::Resize { block_size: Some(b), .. } if b != u64::from(g.block_size()) => (
            format!(
                "error a resize keeps the block size ({}, {} asked): `s3block copy --block-size` makes a copy \
                 with other blocks\n",
                format_size(g.block_size().into()),
                format_size(b)
            ),
            false,
        ),
        Request::Resize { size, .. } => match grow.grow(size).await {
            Ok(done) => (format!("ok {} {}\n", done.old.size(), done.new.size()), done.new != done.old),
            Err(e) => (format!("error {}\n", e.to_string().replace('\n', " ")), false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(parse(b"size\n"), Ok(Request::Size));
        assert_eq!(parse(b"resize 1048576\n"), Ok(Request::Resize { size: 1 << 20, block_size: None }));
        assert_eq!(
            parse(b"resize 1048576 65536"),
            Ok(Request::Resize { size: 1 << 20, block_size: Some(65536) })
        );
        for (bad, says) in [
            (&b"grow 10"[..], "unknown request \"grow 10\""),
            (b"resize 10G", "the size \"10G\" is not a number of bytes"),
            (b"resize 10 x", "the block size \"x\""),
            (b"resize\n", "unknown request"),
            (b"size\nsize\n", "one request per write"),
            (b"\xff\xfe", "not text"),
            (&[b'1'; 300], "more than 256"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says) && e.contains("expected `size`"), "{e}");
        }
    }
}
