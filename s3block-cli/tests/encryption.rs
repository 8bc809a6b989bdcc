//! Encrypted volumes through the built `s3block` binary on local-directory
//! stores: create with --encrypt, copy plaintext to encrypted and back,
//! cat with the right and the wrong password, verify a tampered block.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, PutOptions};
use s3block_cli::exit::{OK, PROBLEMS, USAGE, WRONG_PASSWORD};
use s3block_cli::target::open as open_url;
use s3block_cli::volume::{create, open};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, BlockId};

fn s3block(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3block"))
        .args(args)
        .env_remove("S3BLOCK_PASSWORD")
        .env_remove("S3BLOCK_PASSWORD_FILE")
        .env_remove("S3BLOCK_DEST_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("the s3block binary runs")
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn block(seed: u8) -> Vec<u8> {
    (0..65_536usize).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A plaintext 1M volume of 64K blocks with blocks 1 and 5 written.
async fn plain_volume(dir: &Path) {
    let t = open_url(&url(dir), &StoreArgs::default()).unwrap();
    let layout = LayoutArgs { size: Some(1 << 20), block_size: Some(64 << 10), ..Default::default() };
    create(&t, &layout, false, false, &mut Vec::new()).await.unwrap();
    let v = open(&t, &LayoutArgs::default()).await.unwrap();
    v.device.write_block(BlockId(1), Bytes::from(block(1))).await.unwrap();
    v.device.write_block(BlockId(5), Bytes::from(block(5))).await.unwrap();
}

/// Flips a bit of the object `key` through the store, keeping its attributes.
async fn tamper(dir: &Path, key: &str) {
    let t = open_url(&url(dir), &StoreArgs::default()).unwrap();
    let got = t.store.get_opts(&ObjectPath::from(key), GetOptions::default()).await.unwrap();
    let attributes = got.attributes.clone();
    let mut body = got.bytes().await.unwrap().to_vec();
    let last = body.len() - 1;
    body[last] ^= 0x40;
    let put = PutOptions { attributes, ..Default::default() };
    t.store.put_opts(&ObjectPath::from(key), body.into(), put).await.unwrap();
}

#[tokio::test]
async fn encrypted_volumes_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, enc, back, fresh) =
        (tmp.path().join("plain"), tmp.path().join("enc"), tmp.path().join("back"), tmp.path().join("new"));
    for d in [&plain, &enc, &back, &fresh] {
        std::fs::create_dir(d).unwrap();
    }
    let (right, wrong) = (tmp.path().join("right"), tmp.path().join("wrong"));
    std::fs::write(&right, "open sesame\n").unwrap();
    std::fs::write(&wrong, "close sesame\n").unwrap();
    let pw = |p: &Path| format!("--password-file={}", p.display());
    plain_volume(&plain).await;

    // create --encrypt with a password file; info shows it without the password.
    let o = s3block(&["create", &url(&fresh), "--size=1M", "--block-size=64K", "--encrypt", &pw(&right)]);
    assert_eq!(o.status.code(), Some(i32::from(OK)), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("encrypted with xchacha20poly1305"), "{o:?}");
    let o = s3block(&["info", &url(&fresh)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("xchacha20poly1305"), "{o:?}");
    // Creating encrypted with no password and no terminal: a clear error.
    let o = s3block(&["create", &url(&fresh), "--size=1M", "--encrypt"]);
    assert_eq!(o.status.code(), Some(i32::from(USAGE)), "{}", stderr(&o));
    assert!(stderr(&o).contains("--password-file") && stderr(&o).contains("S3BLOCK_PASSWORD"), "{o:?}");

    // Plaintext -> encrypted copy, then cat back with the right password.
    let o = s3block(&[
        "copy",
        &url(&plain),
        &url(&enc),
        "--dest-encrypt",
        "--dest-password-file",
        &right.display().to_string(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s3block(&["cat", &url(&enc), "5", &pw(&right)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout == block(5), "cat gives the block written");
    // The password also comes from S3BLOCK_PASSWORD.
    let o = Command::new(env!("CARGO_BIN_EXE_s3block"))
        .args(["cat", &url(&enc), "1"])
        .env_remove("S3BLOCK_PASSWORD_FILE")
        .env("S3BLOCK_PASSWORD", "open sesame")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success() && o.stdout == block(1), "{}", stderr(&o));
    // The objects hold no plaintext.
    let object = std::fs::read(enc.join("00000005")).unwrap();
    let plaintext = block(5);
    assert!(!object.windows(64).any(|w| w == &plaintext[..64]));

    // Wrong password: its own exit code and message.
    let o = s3block(&["cat", &url(&enc), "5", &pw(&wrong)]);
    assert_eq!(o.status.code(), Some(i32::from(WRONG_PASSWORD)), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    // Encrypted -> plaintext copy with --dest-encrypt=none.
    let o = s3block(&["copy", &url(&enc), &url(&back), &pw(&right), "--dest-encrypt=none", "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s3block(&["cat", &url(&back), "5"]);
    assert!(o.status.success() && o.stdout == block(5), "{}", stderr(&o));

    // A tampered byte is an authentication failure that verify names.
    let o = s3block(&["verify", &url(&enc), &pw(&right), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    tamper(&enc, "00000001").await;
    let o = s3block(&["verify", &url(&enc), &pw(&right), "-q", "--json"]);
    assert_eq!(o.status.code(), Some(i32::from(PROBLEMS)), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad = report["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["block"], 1);
    assert_eq!(bad[0]["key"], "00000001");
    assert!(bad[0]["reason"].as_str().unwrap().contains("authentication failed"), "{report}");
}
