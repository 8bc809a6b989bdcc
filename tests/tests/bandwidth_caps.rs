//! `--max-upload-speed` and `--max-download-speed` (s3backer's
//! `--maxUploadSpeed`, `--maxDownloadSpeed`, in bits a second) hold the
//! store's traffic to the cap: four writers, then four readers, on a
//! memory store, measured against the clock, within 10%.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::future::join_all;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use s3block_store::StoreArgs;

/// The store options as the programs parse them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
}

const BLOCK: usize = 64 << 10;
const BLOCKS: usize = 32;
/// 4 Mibit/s: 512 KiB a second.
const CAP_BYTES: f64 = (512 << 10) as f64;

/// Bytes a second of `bytes` moved in `took`.
fn rate(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_rates_hold_to_the_caps() {
    let args = Cli::try_parse_from(["prog", "--maxUploadSpeed=4M", "--max-download-speed=4m"]).unwrap().store;
    let opened = args.to_config("memory://").open().unwrap();
    let store: Arc<dyn ObjectStore> = opened.store.clone();
    let data = bytes::Bytes::from(vec![7u8; BLOCK]);

    let start = Instant::now();
    join_all((0..4).map(|writer| {
        let (store, data) = (store.clone(), data.clone());
        async move {
            for i in (writer..BLOCKS).step_by(4) {
                store.put(&Path::from(format!("v/{i:08x}")), data.clone().into()).await.unwrap();
            }
        }
    }))
    .await;
    let up = rate(BLOCK * BLOCKS, start.elapsed());

    let start = Instant::now();
    let read: usize = join_all((0..4).map(|reader| {
        let store = store.clone();
        async move {
            let mut n = 0;
            for i in (reader..BLOCKS).step_by(4) {
                n += store.get(&Path::from(format!("v/{i:08x}"))).await.unwrap().bytes().await.unwrap().len();
            }
            n
        }
    }))
    .await
    .into_iter()
    .sum();
    assert_eq!(read, BLOCK * BLOCKS);
    let down = rate(read, start.elapsed());

    eprintln!("cap {CAP_BYTES} B/s: upload {up:.0} B/s, download {down:.0} B/s");
    // The stats show the caps and the time waited for them.
    let b = opened.counters.snapshot().bandwidth;
    assert_eq!((b.upload_cap, b.download_cap), (512 << 10, 512 << 10));
    assert!(b.upload_wait_micros > 1_000_000 && b.download_wait_micros > 1_000_000, "{b:?}");
    let text =
        s3block_cache::MountStats::new(&Default::default(), &opened.counters.snapshot(), 0.005, 0.0004)
            .render_requests();
    assert!(
        text.contains("upload cap      512K/s, waited ") && text.contains("download cap    512K/s"),
        "{text}"
    );
    for (what, measured) in [("upload", up), ("download", down)] {
        let ratio = measured / CAP_BYTES;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{what}: {measured:.0} B/s is {ratio:.3} of the cap {CAP_BYTES} B/s"
        );
    }
}

#[tokio::test]
async fn an_uncapped_store_is_not_held_back_and_bad_speeds_are_refused() {
    let args = Cli::try_parse_from(["prog"]).unwrap().store;
    let store = args.to_config("memory://").open().unwrap().store;
    let data = bytes::Bytes::from(vec![7u8; BLOCK]);
    let start = Instant::now();
    for i in 0..BLOCKS {
        store.put(&Path::from(format!("v/{i}")), data.clone().into()).await.unwrap();
    }
    assert!(
        rate(BLOCK * BLOCKS, start.elapsed()) > 10.0 * CAP_BYTES,
        "the memory store is fast without a cap"
    );
    for (arg, text) in
        [("--maxUploadSpeed=fast", "--max-upload-speed"), ("--maxDownloadSpeed=4", "at least 8 bits")]
    {
        let err = Cli::try_parse_from(["prog", arg]).unwrap_err().to_string();
        assert!(err.contains(text), "{arg}: {err}");
    }
}
