//! Tests of the command line (`args.rs`).

use super::*;
use clap::CommandFactory;
use s3block_store::Compression;

#[test]
fn the_command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn block_numbers_and_ranges() {
    assert_eq!(parse_block_number("31"), Ok(31));
    assert_eq!(parse_block_number("0x1f"), Ok(31));
    assert!(parse_block_number("-1").unwrap_err().contains("-1"));
    assert!(parse_block_number("4294967296").is_err());
    assert_eq!(parse_block_range("2..10"), Ok(BlockRange { start: 2, end: Some(10) }));
    assert_eq!(parse_block_range("0x10.."), Ok(BlockRange { start: 16, end: None }));
    assert_eq!(parse_block_range("..5"), Ok(BlockRange { start: 0, end: Some(5) }));
    assert!(parse_block_range("5..2").unwrap_err().contains("backwards"));
    assert!(parse_block_range("5").is_err());
}

#[test]
fn store_options_parse_sizes_and_flags() {
    let cli = Cli::try_parse_from([
        "s3block",
        "create",
        "s3://bucket/vol/",
        "--size",
        "30G",
        "--block-size",
        "256K",
        "--compress",
        "--blockHashPrefix",
        "--endpoint",
        "http://127.0.0.1:3900",
        "--force-path-style",
    ])
    .unwrap();
    let Command::Create(args) = cli.command else { panic!("not create: {cli:?}") };
    assert_eq!(args.store, "s3://bucket/vol/");
    let (store, layout) = (args.volume.store_args, args.volume.layout);
    assert_eq!(layout.size, Some(30 << 30));
    assert_eq!(layout.block_size, Some(256 << 10));
    assert_eq!(layout.compression.compression().unwrap(), Some(Compression::deflate(6).unwrap()));
    assert!(layout.hash_prefix && store.force_path_style);
    assert_eq!(store.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
    let err = Cli::try_parse_from(["s3block", "create", "memory://", "--block-size", "3X"]).unwrap_err();
    assert!(err.to_string().contains("3X"), "{err}");
}

#[test]
fn every_store_command_takes_the_shared_store_flags() {
    for command in ["create", "info", "ls", "verify", "erase", "unlock"] {
        let cli = Cli::try_parse_from([
            "s3block",
            command,
            "s3://bucket/vol/",
            "--baseURL=http://127.0.0.1:3900",
            "--accessFile",
            "/etc/s3.crd",
            "--region=garage",
            "--prefix=p-",
            "--encrypt=aes-128-cbc",
            "--passwordFile=/etc/pw",
        ])
        .unwrap_or_else(|e| panic!("{command}: {e}"));
        let store = match cli.command {
            Command::Create(a) => a.volume.store_args,
            Command::Info(a) => a.store_args,
            Command::Ls(a) => a.store_args,
            Command::Verify(a) => a.store_args,
            Command::Erase(a) => a.store_args,
            Command::Unlock(a) => a.store_args,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(store.endpoint.as_deref(), Some("http://127.0.0.1:3900"), "{command}");
        assert_eq!(store.access_file, Some(PathBuf::from("/etc/s3.crd")), "{command}");
        assert_eq!(store.region.as_deref(), Some("garage"), "{command}");
        assert_eq!(store.key_prefix("s3://bucket/vol/").as_deref(), Some("vol/p-"), "{command}");
        assert_eq!(store.encrypt, Some(Some(EncryptionScheme::Aes128Cbc)), "{command}");
        assert_eq!(store.password_file, Some(PathBuf::from("/etc/pw")), "{command}");
    }
    let cli = Cli::try_parse_from(["s3block", "cat", "memory://", "3", "--encrypt"]).unwrap();
    let Command::Cat(a) = cli.command else { panic!("not cat") };
    assert_eq!((a.block, a.store_args.encrypt), (3, Some(None)));
    let err = Cli::try_parse_from(["s3block", "info", "memory://", "--password=secret"]).unwrap_err();
    assert!(err.to_string().contains("--password-file") && !err.to_string().contains("secret"), "{err}");
}

#[test]
fn copy_takes_the_destination_encryption() {
    let parse = |extra: &[&str]| {
        let mut args = vec!["s3block", "copy", "file:///a", "file:///b"];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Copy(a) = cli.command else { panic!("not copy") };
        a
    };
    let a = parse(&["--password-file=/src", "--dest-encrypt", "--dest-password-file=/dst"]);
    assert_eq!(a.store_args.password_file, Some(PathBuf::from("/src")));
    assert_eq!(a.dest.dest_encrypt, Some(None));
    assert_eq!(a.dest.dest_password_file, Some(PathBuf::from("/dst")));
    assert_eq!(parse(&["--dest-encrypt=none"]).dest.dest_encrypt, Some(Some(DestEncryption::None)));
    assert_eq!(
        parse(&["--dest-encrypt=aes-128-cbc"]).dest.dest_encrypt,
        Some(Some(DestEncryption::Scheme(EncryptionScheme::Aes128Cbc)))
    );
    assert_eq!(parse(&[]).dest, DestArgs::default());
}

#[test]
fn copy_takes_the_new_layout() {
    let cli = Cli::try_parse_from([
        "s3block",
        "copy",
        "s3://b/old/",
        "s3://b/new/",
        "--block-size",
        "1M",
        "--compress=9",
        "--no-verify",
    ])
    .unwrap();
    let Command::Copy(args) = cli.command else { panic!("not copy") };
    assert_eq!((args.src.as_str(), args.dst.as_str()), ("s3://b/old/", "s3://b/new/"));
    assert_eq!(args.block_size, Some(1 << 20));
    assert_eq!(args.compression.compression().unwrap(), Some(Compression::deflate(9).unwrap()));
    assert!(args.no_verify && !args.force);
    assert!(Cli::try_parse_from(["s3block", "copy", "a", "b", "--compress=0"]).is_err());
    // s3backer 2.x's zstd spelling, on create and on copy.
    let Command::Copy(args) =
        Cli::try_parse_from(["s3block", "copy", "a", "b", "--compress=zstd", "--compress-level=9"])
            .unwrap()
            .command
    else {
        panic!("not copy")
    };
    assert_eq!(args.compression.compression().unwrap(), Some(Compression::zstd(9).unwrap()));
    let Command::Create(args) =
        Cli::try_parse_from(["s3block", "create", "memory://", "--compress=zstd"]).unwrap().command
    else {
        panic!("not create")
    };
    assert_eq!(args.volume.layout.compression.compression().unwrap(), Some(Compression::zstd(3).unwrap()));
}

#[test]
fn cost_takes_several_block_size_forms() {
    let cli = Cli::try_parse_from([
        "s3block",
        "cost",
        "--size",
        "30G",
        "--block-size",
        "4K..16K",
        "--block-size",
        "1M",
        "--prices",
        "s3-2009",
        "--json",
    ])
    .unwrap();
    let Command::Cost(args) = cli.command else { panic!("not cost") };
    let sizes: Vec<u32> = args.block_sizes.iter().flat_map(|b| b.0.clone()).collect();
    assert_eq!(sizes, vec![4096, 8192, 16384, 1 << 20]);
    assert_eq!(args.prices, PricePreset::S32009);
    assert!(args.output.json);
}
