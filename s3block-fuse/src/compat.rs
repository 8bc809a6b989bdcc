//! s3backer's options that s3block does not implement, named plainly.
//!
//! A script or fstab line written for s3backer 2.1.6 may carry any of its
//! options. Those s3block implements are aliases of its own (`--blockSize`,
//! `--readOnly`, ...). For the others clap would answer with a suggestion
//! of whatever flag is spelled alike, so they are
//! recognised here, before parsing, and refused with "s3backer option --X
//! is not supported by s3block (yet)", with what to use instead where
//! s3block has an equivalent.

/// s3backer 2.1.6 options that s3block does not implement, each with what
/// to use instead (empty when there is nothing to suggest).
const UNSUPPORTED: &[(&str, &str)] = &[
    ("authVersion", "s3block always signs with AWS signature version 4"),
    ("blockCacheFile", "use --cache-dir DIR and --disk-cache-size BYTES: a disk cache directory"),
    (
        "blockCacheNoVerify",
        "--cache-dir needs no verification: it is checked against the bucket's record of the last mount",
    ),
    ("blockCacheSync", "fsync decides: --durability remote (the default) or local"),
    ("blockCacheRecoverDirtyBlocks", "with --cache-dir, dirty blocks are always recovered after a crash"),
    ("blockCacheFileAdvise", ""),
    ("debug-http", "use --debug"),
    ("http11", ""),
    ("keyLength", ""),
    ("minWriteDelay", ""),
    ("md5CacheSize", ""),
    ("md5CacheTime", ""),
    ("nbd", "serve the volume with `s3block-nbd STORE` (the same options) and attach it with nbd-client"),
    ("nbd-flag", "s3block-nbd serves NBD itself, without nbdkit"),
    ("nbd-param", "s3block-nbd serves NBD itself, without nbdkit"),
    ("noCurlCache", ""),
    ("quiet", "use --log-level warn"),
    ("sharedDiskMode", ""),
    ("ssl", "give an https:// --endpoint"),
    ("test", "a file:///dir store keeps the volume in a local directory"),
    ("test-delays", ""),
    ("test-discard", "a memory:// store measures the FUSE path without a bucket"),
    ("test-errors", ""),
];

/// The message for `--name` (or `-o name`) when it is an s3backer option
/// s3block does not implement; `None` otherwise.
pub(crate) fn unsupported(name: &str) -> Option<String> {
    let (name, instead) = UNSUPPORTED.iter().find(|(n, _)| *n == name)?;
    let mut message = format!("s3backer option --{name} is not supported by s3block (yet)");
    if !instead.is_empty() {
        message.push_str("; ");
        message.push_str(instead);
    }
    Some(message)
}

/// The option name of a command-line argument `--name[=value]`.
pub(crate) fn long_name(arg: &str) -> Option<&str> {
    let rest = arg.strip_prefix("--")?;
    let name = rest.split_once('=').map_or(rest, |(n, _)| n);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_options_are_named_with_what_to_use() {
        let m = unsupported("blockCacheSync").unwrap();
        assert_eq!(
            m,
            "s3backer option --blockCacheSync is not supported by s3block (yet); fsync decides: --durability \
             remote (the default) or local"
        );
        assert_eq!(
            unsupported("http11").unwrap(),
            "s3backer option --http11 is not supported by s3block (yet)"
        );
        let nbd = unsupported("nbd").unwrap();
        assert!(
            nbd.starts_with("s3backer option --nbd is not supported") && nbd.contains("s3block-nbd STORE"),
            "{nbd}"
        );
        assert!(unsupported("blockSize").is_none());
        assert!(unsupported("size").is_none());
        assert_eq!(long_name("--ssl"), Some("ssl"));
        assert_eq!(long_name("--timeout=30"), Some("timeout"));
        assert_eq!(long_name("-f"), None);
        assert_eq!(long_name("--"), None);
    }

    /// The long options of s3backer 2.1.6's manual page, in its order.
    const S3BACKER_2_1_6_OPTIONS: &[&str] = &[
        "accessFile",
        "accessId",
        "accessKey",
        "accessKeyEnv",
        "accessType",
        "accessEC2IAM",
        "accessEC2IAM-IMDSv2",
        "authVersion",
        "baseURL",
        "blockCacheFile",
        "blockCacheMaxDirty",
        "blockCacheNoVerify",
        "blockCacheSize",
        "blockCacheThreads",
        "blockCacheTimeout",
        "blockCacheWriteDelay",
        "blockCacheSync",
        "blockCacheRecoverDirtyBlocks",
        "blockCacheNumProtected",
        "blockCacheFileAdvise",
        "blockHashPrefix",
        "blockSize",
        "cacert",
        "compress",
        "compress-level",
        "configFile",
        "directIO",
        "debug",
        "debug-http",
        "defaultContentEncoding",
        "encrypt",
        "erase",
        "filename",
        "fileMode",
        "force",
        "help",
        "http11",
        "initialRetryPause",
        "insecure",
        "keyLength",
        "listBlocks",
        "listBlocksThreads",
        "maxUploadSpeed",
        "maxDownloadSpeed",
        "maxRetryPause",
        "minWriteDelay",
        "md5CacheSize",
        "md5CacheTime",
        "nbd",
        "nbd-flag",
        "nbd-param",
        "noAutoDetect",
        "noCurlCache",
        "password",
        "passwordFile",
        "prefix",
        "quiet",
        "readAhead",
        "readAheadTrigger",
        "readOnly",
        "region",
        "reset-mounted-flag",
        "sharedDiskMode",
        "size",
        "sse",
        "sse-key-id",
        "ssl",
        "statsFilename",
        "statsFileMirror",
        "statsFileMirrorInterval",
        "storageClass",
        "test",
        "test-delays",
        "test-discard",
        "test-errors",
        "timeout",
        "version",
        "vhost",
        "no-vhost",
    ];

    /// The rows of the long options' table in docs/S3BACKER-OPTIONS.md:
    /// (option name, its status word: yes, refused or no).
    fn table_rows() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/S3BACKER-OPTIONS.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let section = text.split("## Long options").nth(1).expect("a Long options section");
        let section = section.split("\n## ").next().unwrap_or(section);
        section
            .lines()
            .filter_map(|line| line.strip_prefix("| `--"))
            .map(|row| {
                let name = row.split(['`', '=', '[']).next().unwrap_or_default().to_owned();
                let status = row.split('|').nth(1).unwrap_or_default().trim();
                let word = status.split([':', ' ']).next().unwrap_or_default().to_owned();
                (name, word)
            })
            .collect()
    }

    /// The long options named on `.It` lines of s3backer's manual page source.
    fn manual_page_options(page: &str) -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with(".It "))
            .flat_map(|l| l.split("Fl \\-").skip(1))
            .map(|rest| rest.split([' ', '=', '[']).next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn the_table_names_every_option_of_the_manual_page() {
        let rows = table_rows();
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, S3BACKER_2_1_6_OPTIONS, "the table's rows, in the manual page's order");
        // The checked-in list against the manual page itself, when s3backer's
        // source is at hand (S3BLOCK_S3BACKER_SOURCE, else ../shared/peers/).
        let tarball = std::env::var("S3BLOCK_S3BACKER_SOURCE").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/peers/s3backer-2.1.6.tar.gz").to_owned()
        });
        if !std::path::Path::new(&tarball).is_file() {
            eprintln!("note: {tarball} is absent; the table is checked against the list in this test only");
            return;
        }
        let out = std::process::Command::new("tar")
            .args(["-xzOf", &tarball, "s3backer-2.1.6/s3backer.1.in"])
            .output()
            .expect("tar runs");
        assert!(out.status.success(), "tar -xzOf {tarball}: {}", String::from_utf8_lossy(&out.stderr));
        let page = String::from_utf8(out.stdout).expect("the manual page is UTF-8");
        assert_eq!(manual_page_options(&page), S3BACKER_2_1_6_OPTIONS);
    }

    #[test]
    fn the_table_agrees_with_what_the_mount_program_does() {
        let command = crate::options::Options::command_with_help();
        let mut known: Vec<&str> = vec!["help", "version"];
        for arg in command.get_arguments() {
            known.extend(arg.get_long());
            known.extend(arg.get_all_aliases().unwrap_or_default());
        }
        let rows = table_rows();
        for (name, status) in &rows {
            match status.as_str() {
                "yes" => {
                    assert!(unsupported(name).is_none(), "--{name}: the table says yes, compat refuses it");
                    assert!(
                        known.contains(&name.as_str()),
                        "--{name}: the table says yes, the mount lacks it"
                    );
                }
                "refused" => {
                    assert!(
                        unsupported(name).is_none(),
                        "--{name}: refused with a reason, not as unsupported"
                    );
                    let err = crate::options::Options::parse_from_args([
                        "m",
                        &format!("--{name}=x"),
                        "memory://",
                        "/m",
                    ])
                    .expect_err("refused")
                    .to_string();
                    assert!(err.contains(&format!("--{name} is refused")), "--{name}: {err}");
                }
                "no" => assert!(unsupported(name).is_some(), "--{name}: the table says no, compat lacks it"),
                other => panic!("--{name}: status {other:?} is not yes, refused or no"),
            }
        }
        for (name, _) in UNSUPPORTED {
            let row = rows.iter().find(|(n, _)| n == name);
            assert_eq!(row.map(|(_, s)| s.as_str()), Some("no"), "--{name} is refused as unsupported");
        }
    }
}
