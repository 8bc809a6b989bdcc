//! Object keys exactly as the user wrote them.

use object_store::path::Path;
use s3block_core::{Error, Result};

/// The store path of `key`, with its bytes exactly as given, or an error
/// naming the key when the store cannot represent it.
///
/// Object keys exactly as the user wrote them.
///
/// s3backer stores a block under the bytes of its prefix followed by the
/// block's hex number, whatever those bytes are. `object_store`'s
/// `Path::from` would percent-encode non-ASCII and reserved characters
/// (`ü` becomes `%C3%BC`, `?` becomes `%3F`, a `..` segment `%2E%2E`) and
/// fold `x//y` into `x/y`: the objects would then live under another name
/// than the one every listing, the lock and s3backer look for. So every key
/// becomes a path through [`key_path`], which keeps the bytes as given or
/// refuses them, and every prefix is checked once, when a store is opened,
/// by [`check_prefix`], which names the character a store cannot keep.
///
/// What `object_store` cannot represent, on every store: a key that starts
/// with `/`, an empty segment (`//`), a segment that is `.` or `..`, and
/// ASCII control characters. A local directory also cannot hold a file
/// whose name has `#` followed by digits only (the local store's temporary
/// files are named so), so a local prefix's last segment may not hold `#`.
pub fn key_path(key: &str) -> Result<Path> {
    let refused = |why: String| Error::Config(format!("object key {key:?}: {why}"));
    if let Some(why) = unrepresentable(key) {
        return Err(refused(why));
    }
    let path = Path::parse(key).map_err(|e| refused(e.to_string()))?;
    if path.as_ref() != key {
        return Err(refused(format!("the store would keep it as {:?}", path.as_ref())));
    }
    Ok(path)
}

/// Why no store can hold keys that begin with `prefix`, or `None`.
fn unrepresentable(prefix: &str) -> Option<String> {
    if prefix.starts_with('/') {
        return Some("it starts with '/', which object stores here cannot keep in a key".into());
    }
    if let Some(c) = prefix.chars().find(char::is_ascii_control) {
        return Some(format!("it holds the control character {c:?}"));
    }
    if prefix.contains("//") {
        return Some("it holds an empty segment ('//')".into());
    }
    // Every segment but the last is complete; the last one gets the block
    // number appended, so `..` there is a plain name (`..00000000`).
    let mut segments: Vec<&str> = prefix.split('/').collect();
    segments.pop();
    if let Some(s) = segments.iter().find(|s| **s == "." || **s == "..") {
        return Some(format!("it holds the segment {s:?}, which object stores here cannot keep in a key"));
    }
    None
}

/// Checks that keys under `prefix` can be stored exactly as written, on a
/// local directory when `local`; the error names the prefix and the
/// character or segment at fault.
pub fn check_prefix(prefix: &str, local: bool) -> Result<()> {
    let refused = |why: String| Error::Config(format!("key prefix {prefix:?} cannot be used: {why}"));
    if let Some(why) = unrepresentable(prefix) {
        return Err(refused(why));
    }
    let last = prefix.rsplit('/').next().unwrap_or(prefix);
    if local && last.contains('#') {
        return Err(refused(
            "a local directory cannot hold it: its last segment has '#', and file names with \
             '#' followed by digits are the local store's temporary files"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_bytes() {
        for key in ["ünï/00000000", "q?&=+/0000001f", "a b/%41/x#1", "..x/00000000", "..00000000"] {
            assert_eq!(key_path(key).expect(key).as_ref(), key);
        }
    }

    #[test]
    fn what_a_store_cannot_keep_is_refused_by_name() {
        let cases = [
            ("/abs/", "starts with '/'"),
            ("x//y/", "empty segment"),
            ("../x/", "\"..\""),
            ("a/./b", "\".\""),
            ("tab\there/", "control character"),
        ];
        for (prefix, said) in cases {
            let err = check_prefix(prefix, false).expect_err(prefix).to_string();
            assert!(err.contains(said) && err.contains(&format!("{prefix:?}")), "{prefix}: {err}");
            let key = format!("{prefix}00000000");
            assert!(key_path(&key).is_err(), "{key}");
        }
        assert!(check_prefix("vol#1/", true).is_ok(), "'#' in a folder is fine");
        let err = check_prefix("vol#", true).expect_err("local '#'").to_string();
        assert!(err.contains('#'), "{err}");
        assert!(check_prefix("vol#", false).is_ok(), "S3 keeps '#'");
        assert!(check_prefix("ünï/q?&=+ %/..x/", true).is_ok());
    }
}
