//! `s3block stats` against the stats text a real mount stack renders (made
//! by the mount program's own code, not typed here).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use s3block_cli::exit::OK;
use s3block_cli::stats::{STATS_FILE, parse, run};
use s3block_core::{BlockDevice, BlockDeviceExt, Bytes};
use s3block_fuse::{Options, build_stack};

fn value<'a>(sections: &'a [s3block_cli::stats::Section], section: &str, name: &str) -> &'a str {
    let s = sections.iter().find(|s| s.title.as_deref() == Some(section)).unwrap_or_else(|| {
        panic!("no [{section}] in {sections:?}");
    });
    let stat = s.stats.iter().find(|st| st.name == name).unwrap_or_else(|| {
        panic!("no {name:?} in [{section}]: {:?}", s.stats);
    });
    &stat.value
}

#[tokio::test]
async fn the_mounts_stats_text_parses_section_by_section() {
    let opts = Options::parse_from_args(["s3block-fuse", "--size=4M", "--block-size=64K", "memory://", "/m"])
        .unwrap();
    let stack = build_stack(&opts).await.unwrap();
    // Three blocks written and stored, one read back from the cache.
    stack.device.write_at(0, Bytes::from(vec![7u8; 3 * 65_536])).await.unwrap();
    stack.device.flush().await.unwrap();
    stack.device.read_at(0, 4096).await.unwrap();
    let text = stack.stats.render();
    (stack.release)().await.unwrap();

    let sections = parse(&text);
    let titles: Vec<_> = sections.iter().filter_map(|s| s.title.as_deref()).collect();
    assert_eq!(titles, ["cache", "store requests"], "{text}");
    // Every line became a name and a value, split where the mount put the gap.
    for s in &sections {
        for st in &s.stats {
            assert!(!st.name.is_empty() && !st.value.is_empty(), "{st:?} from {text}");
            assert!(!st.name.ends_with(':') && !st.value.starts_with(':'), "{st:?}");
        }
    }
    // The three blocks, plus the descriptor and the lock the mount wrote.
    let puts: u64 = value(&sections, "store requests", "PUT").parse().unwrap();
    assert!(puts >= 3, "{text}");
    let sent = s3block_core::parse_size(value(&sections, "store requests", "bytes sent")).unwrap();
    assert!(sent >= 3 * 65_536, "{text}");
    assert!(value(&sections, "store requests", "request cost").starts_with('$'), "{text}");
    assert!(value(&sections, "cache", "write-back").starts_with("3 uploads"), "{text}");
    assert!(value(&sections, "cache", "reads").contains("hits"), "{text}");
    assert!(value(&sections, "cache", "zero blocks").ends_with("known"), "{text}");

    // The command prints it, as a table and as JSON with numbers as numbers.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STATS_FILE), &text).unwrap();
    let mut out = Vec::new();
    assert_eq!(run(dir.path(), STATS_FILE, false, &mut out).unwrap(), OK);
    let shown = String::from_utf8(out).unwrap();
    assert!(shown.contains("store requests") && shown.contains("write-back"), "{shown}");
    let mut out = Vec::new();
    run(dir.path(), STATS_FILE, true, &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["store requests"]["PUT"], puts, "{json}");
}
