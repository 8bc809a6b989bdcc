//! The mount's command line takes any strings: arbitrary `-o` lists (as
//! fstab and mount(8) pass them), arbitrary values for every option, and
//! arbitrary arguments. Parsing never panics; a refusal names an option or
//! a value the user gave; an accepted `-o` list means exactly its long
//! options.

use proptest::prelude::*;
use s3block_fuse::{Options, expand_mount_options};

/// Option names the mount knows, in every spelling, and some it does not.
const NAMES: &[&str] = &[
    "size",
    "block-size",
    "blockSize",
    "cache-size",
    "blockCacheSize",
    "max-dirty",
    "upload-concurrency",
    "fetch-concurrency",
    "read-ahead",
    "ro",
    "rw",
    "read-only",
    "readOnly",
    "compress",
    "compress-level",
    "prefix",
    "endpoint",
    "region",
    "list-blocks",
    "listBlocks",
    "hash-prefix",
    "file-mode",
    "filename",
    "stats-filename",
    "cache-dir",
    "disk-cache-size",
    "durability",
    "io-timeout",
    "encrypt",
    "password-file",
    "nonempty",
    "direct-io",
    "defaults",
    "noauto",
    "_netdev",
    "x-systemd.automount",
    "blockCacheFile",
    "accessId",
    "baseURL",
    "force",
    "nbd",
    "",
    "=",
    ",",
    "ünï",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}[KMGTPkmgtp]?",
        "-?[0-9]{1,4}(\\.[0-9]{0,6})?[KMGTEZYkmgte]?i?[Bb]?",
        any::<String>(),
        Just(String::new()),
        Just("18446744073709551616".to_owned()),
        Just("local".to_owned()),
        Just("0777".to_owned()),
    ]
}

fn o_list() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(NAMES), prop::option::of(value())), 0..6).prop_map(|opts| {
        opts.into_iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}={v}"),
                None => n.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// `n` cases, or `PROPTEST_CASES` of them for a longer search.
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn any_o_list_is_parsed_or_refused_without_a_panic(list in prop_oneof![o_list(), any::<String>()]) {
        let args = vec!["s3block-fuse".into(), "-o".into(), list.clone().into(), "memory://".into(), "/mnt/x".into()];
        match expand_mount_options(args) {
            Ok(expanded) => {
                // Whatever came back parses or is refused by clap, with a message.
                let parsed = Options::parse_from_args(expanded);
                if let Err(e) = parsed {
                    prop_assert!(!e.to_string().trim().is_empty());
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.trim().is_empty(), "an empty refusal of -o {list:?}");
            }
        }
    }

    #[test]
    fn any_value_of_any_option_is_parsed_or_refused_naming_it(
        name in prop::sample::select(NAMES),
        v in value(),
    ) {
        let arg = format!("--{name}={v}");
        let result = Options::parse_from_args(["s3block-fuse", arg.as_str(), "memory://", "/mnt/x"]);
        if let Err(e) = result {
            let text = e.to_string();
            let named = text.contains(name) || (!v.is_empty() && text.contains(v.trim()))
                || text.contains("--") || text.contains("unexpected argument");
            prop_assert!(named, "refusal of {arg:?} names neither the option nor the value: {text}");
        }
    }

    #[test]
    fn any_arguments_are_parsed_or_refused_without_a_panic(args in prop::collection::vec(any::<String>(), 0..6)) {
        let mut all = vec!["s3block-fuse".to_owned()];
        all.extend(args);
        let _ = Options::parse_from_args(all);
    }
}

#[test]
fn an_accepted_o_list_means_its_long_options() {
    let with_o = Options::parse_from_args([
        "s3block-fuse",
        "-o",
        "size=1G,blockSize=64K,cache-size=16M,ro,_netdev",
        "memory://",
        "/mnt/x",
    ])
    .expect("a valid -o list");
    let long = Options::parse_from_args([
        "s3block-fuse",
        "--size=1G",
        "--block-size=64K",
        "--cache-size=16M",
        "--read-only",
        "memory://",
        "/mnt/x",
    ])
    .expect("the same as long options");
    assert_eq!(format!("{with_o:?}"), format!("{long:?}"));
}
