//! Bad block objects: garbage, truncated, of the wrong length, with an
//! unknown `Content-Encoding`, or failing authentication. Through the mount
//! a read of that block is EIO and the log names the block and its key,
//! while every other block still reads back; `s3block verify` lists the bad
//! block by number and key. Nothing panics, and the good blocks keep their
//! bytes.
//!
//! The volumes are local directories (`file://`); the objects are tampered
//! with through the store crate, as a broken upload or a bucket edited by
//! hand would leave them.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStoreExt, PutOptions, PutPayload};
use s3block_core::{BlockId, KeyLayout};
use s3block_testkit::kernel::{Mount, assert_no_panic, fuse_command, kernel_available, pattern};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");
const BLOCK: usize = 64 << 10;
/// Blocks written with data; the tampered one is among them.
const WRITTEN: [u32; 4] = [0, 1, 2, 3];

/// A volume of 4M in 64K blocks with `WRITTEN` full of data; `extra` are
/// mount options for its creation (`--compress`, `--encrypt`...).
fn volume(extra: &[&str], env: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--size=4M", "--block-size=64K"];
    args.extend_from_slice(extra);
    let mut cmd = fuse_command(FUSE, &url, dir.path(), &args);
    cmd.envs(env.iter().copied());
    let fuse = Mount::spawn(cmd, dir);
    let f = std::fs::OpenOptions::new().write(true).open(fuse.file()).unwrap();
    for b in WRITTEN {
        f.write_all_at(&pattern(u64::from(b) + 1, BLOCK), b as u64 * BLOCK as u64).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    fuse.unmount();
    (store, url)
}

/// Replaces block `block`'s object: `change` gets the stored bytes and
/// attributes and returns the new ones.
fn tamper(url: &str, block: u32, change: impl FnOnce(Bytes, Attributes) -> (Bytes, Attributes)) -> String {
    let opened = s3block_store::StoreConfig::new(url).open().unwrap();
    let key = KeyLayout::new(opened.prefix.clone(), false).key(BlockId(block));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let path = ObjectPath::from(key.as_str());
        let got = opened.store.get(&path).await.unwrap();
        let attributes = got.attributes.clone();
        let body = got.bytes().await.unwrap();
        let (body, attributes) = change(body, attributes);
        let opts = PutOptions { attributes, ..PutOptions::default() };
        opened.store.put_opts(&path, PutPayload::from(body), opts).await.unwrap();
    });
    key
}

fn encoding(attributes: &mut Attributes, value: &'static str) {
    attributes.insert(Attribute::ContentEncoding, AttributeValue::from(value));
}

/// Mounts the volume: the bad block reads as EIO with its key in the log,
/// the others as written; then `s3block verify` names it. Returns the
/// mount's log line about it and verify's output.
fn check(url: &str, bad: u32, key: &str, env: &[(&str, &str)]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(FUSE, url, dir.path(), &["--direct-io"]);
    cmd.envs(env.iter().copied());
    let fuse = Mount::spawn(cmd, dir);
    let f = std::fs::File::open(fuse.file()).unwrap();
    let mut buf = vec![0; BLOCK];
    for b in WRITTEN {
        let r = f.read_exact_at(&mut buf, b as u64 * BLOCK as u64);
        if b == bad {
            let err = r.expect_err("the bad block must not read");
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "bad block {b}: {err}");
        } else {
            r.unwrap_or_else(|e| panic!("good block {b} next to a bad one: {e}"));
            assert!(buf == pattern(u64::from(b) + 1, BLOCK), "good block {b} lost its bytes");
        }
    }
    // A read that ends before the bad block is untouched by it.
    let mut head = vec![0; 100];
    f.read_exact_at(&mut head, 0).unwrap();
    drop(f);
    let log = fuse.unmount();
    let line = log.lines().find(|l| l.contains(key) && l.contains("ERROR")).unwrap_or_default().to_owned();
    assert!(!line.is_empty(), "no error line names key {key}:\n{log}");

    let mut verify = std::process::Command::new(CLI);
    verify.args(["verify", "--quiet", url]).envs(env.iter().copied());
    let out = verify.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_no_panic("s3block verify", &String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "verify must report the bad block:\n{stdout}");
    assert!(stdout.contains(key) && stdout.contains("1 of 4 blocks are bad"), "{stdout}");
    eprintln!("mount log: {line}\nverify: {}", stdout.lines().nth(1).unwrap_or_default());
    (line, stdout)
}

#[test]
fn garbage_block_is_eio_naming_its_key() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume(&["--compress"], &[]);
    let key = tamper(&url, 1, |_, mut a| {
        encoding(&mut a, "deflate");
        (Bytes::from(pattern(5, 5000)), a)
    });
    let (line, verify) = check(&url, 1, &key, &[]);
    assert!(line.contains("block 1 (key 00000001) is corrupt: deflate data does not decompress"), "{line}");
    assert!(verify.contains("does not decompress"), "{verify}");
}

#[test]
fn truncated_block_is_eio_naming_its_key() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume(&["--compress"], &[]);
    let key = tamper(&url, 2, |body, a| (body.slice(..body.len() / 2), a));
    let (line, verify) = check(&url, 2, &key, &[]);
    assert!(
        line.contains("block 2 (key 00000002) is corrupt") && line.contains("incomplete deflate"),
        "{line}"
    );
    assert!(verify.contains("incomplete deflate stream"), "{verify}");
}

#[test]
fn block_of_wrong_length_is_eio_naming_its_key() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume(&[], &[]);
    let key = tamper(&url, 3, |body, a| (body.slice(..1000), a));
    let (line, verify) = check(&url, 3, &key, &[]);
    assert!(line.contains("1000") && verify.contains("1000"), "the length is not named: {line}\n{verify}");
}

#[test]
fn unknown_content_encoding_is_eio_naming_it() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume(&[], &[]);
    let key = tamper(&url, 1, |body, mut a| {
        encoding(&mut a, "br");
        (body, a)
    });
    let (line, verify) = check(&url, 1, &key, &[]);
    assert!(line.contains("br") && verify.contains("br"), "the encoding is not named: {line}\n{verify}");
}

#[test]
fn failing_authentication_is_eio_naming_the_key() {
    if !kernel_available(&[]) {
        return;
    }
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    let env = [("S3BLOCK_PASSWORD_FILE", password.to_str().unwrap())];
    let (_store, url) = volume(&["--encrypt"], &env);
    let key = tamper(&url, 2, |body, a| {
        let mut flipped = body.to_vec();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x01;
        (Bytes::from(flipped), a)
    });
    let (line, verify) = check(&url, 2, &key, &env);
    let says = |t: &str| t.contains("authentication failed: the object was altered");
    assert!(says(&line) && says(&verify), "authentication is not named: {line}\n{verify}");
}
