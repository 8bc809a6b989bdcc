#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;

use s3block_cache::CacheBudget;
use s3block_cache::frontend::volumes::open_in;

use super::*;
use crate::Options;

fn no_prompt(_: &str) -> std::io::Result<String> {
    Err(std::io::Error::other("no terminal"))
}

/// The owner, mode and flags of the files.
fn config() -> FsConfig {
    FsConfig {
        filename: String::new(),
        stats_filename: None,
        file_mode: 0o600,
        read_only: false,
        direct_io: false,
        uid: 0,
        gid: 0,
    }
}

/// A mount of several volumes over `file://DIR`, two volumes made in it,
/// driven without a kernel.
async fn two_volumes(dir: &std::path::Path) -> (Arc<MultiFs>, Arc<CacheBudget>) {
    let url = format!("file://{}", dir.display());
    let opts =
        Options::parse_from_args(["s3block-fuse", "--all-volumes", "--cache-size=4M", &url, "/m"]).unwrap();
    let args = Arc::new(opts.volume.clone());
    let budget = s3block_cache::frontend::volumes::budget_of(&args);
    let mut stacks = Vec::new();
    for (name, block) in [("a", 64 << 10), ("b", 256 << 10)] {
        stacks.push((
            name.to_owned(),
            open_in(&args, name, &budget, Some((1 << 20, Some(block))), no_prompt).await.unwrap(),
        ));
    }
    let opener: Opener = {
        let (args, budget) = (args.clone(), budget.clone());
        Arc::new(move |name, create| {
            let (args, budget) = (args.clone(), budget.clone());
            let handle = tokio::runtime::Handle::current();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    handle.block_on(open_in(&args, &name, &budget, create, no_prompt))
                })
                .await
                .unwrap()
            })
        })
    };
    let eraser: Eraser = Arc::new(|_name| Box::pin(async { Ok(0) }));
    let discover: Discoverer = Arc::new(move || {
        let args = args.clone();
        Box::pin(async move { s3block_cache::frontend::volumes::discover(&args).await })
    });
    let totals = crate::multi_stats::Totals::new(budget.clone());
    let fs = MultiFs::new(stacks, config(), Some("stats".into()), totals, opener, eraser);
    (Arc::new(fs.with_discoverer(discover)), budget)
}

async fn ask(fs: &MultiFs, request: &str) -> String {
    let (fh, _) = fs.open_control(0).unwrap();
    fs.control_write(fh, Bytes::from(request.to_owned())).await.unwrap();
    let answer = fs.read(CONTROL_INO, fh, 0, 4096).await.unwrap();
    fs.release(CONTROL_INO, fh);
    String::from_utf8_lossy(&answer).trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_volume_is_a_file_with_its_stats_and_the_control_file_changes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, budget) = two_volumes(dir.path()).await;
    let names: Vec<String> = fs.readdir(ROOT_INO, 0).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            ".",
            "..",
            "a",
            "a.stats",
            "a.stats.json",
            "b",
            "b.stats",
            "b.stats.json",
            "stats",
            "stats.json",
            "control"
        ]
    );
    // Each file reaches its own volume, through inodes of its own.
    let a = fs.lookup(ROOT_INO, OsStr::new("a")).unwrap();
    let b = fs.lookup(ROOT_INO, OsStr::new("b")).unwrap();
    assert_ne!(a.ino, b.ino);
    assert_eq!((a.size, a.blksize, b.blksize), (1 << 20, 64 << 10, 256 << 10));
    assert_eq!(fs.write(a.ino.0, 4096, Bytes::from_static(b"in a")).await.unwrap(), 4);
    assert_eq!(&fs.read(a.ino.0, 0, 4096, 4).await.unwrap()[..], b"in a");
    assert_eq!(&fs.read(b.ino.0, 0, 4096, 4).await.unwrap()[..], &[0u8; 4]);
    let total = fs.total_bytes(STATS_INO);
    assert!(String::from_utf8_lossy(&total).contains("[total] 2 volume(s)"));
    assert!(matches!(fs.lookup(ROOT_INO, OsStr::new("c")), Err(FsError::NotFound(_))));
    assert!(matches!(fs.unlink(ROOT_INO, OsStr::new("a")), Err(FsError::Namespace(_))));

    assert_eq!(ask(&fs, "list").await, "ok a b");
    assert_eq!(ask(&fs, "size b").await, format!("ok {} {}", 1 << 20, 256 << 10));
    assert!(ask(&fs, "size zz").await.starts_with("error no volume named \"zz\""));
    assert!(ask(&fs, "grow a 10").await.contains("unknown request"));
    assert_eq!(ask(&fs, &format!("resize a {}", 2 << 20)).await, format!("ok {} {}", 1 << 20, 2 << 20));
    assert_eq!(fs.getattr(a.ino.0).unwrap().size, 2 << 20);

    // A third joins: every share shrinks first.
    assert_eq!(
        ask(&fs, &format!("create c {} {}", 1 << 20, 64 << 10)).await,
        format!("ok {} {}", 1 << 20, 64 << 10)
    );
    assert_eq!(budget.members(), 3);
    assert!(fs.lookup(ROOT_INO, OsStr::new("c")).is_ok());
    assert!(ask(&fs, "create c 1048576").await.contains("already"));
    assert!(ask(&fs, "create .c 1048576").await.contains("dot"));

    // Open, its erase is refused; closed, it goes.
    let (fh, _) = fs.open(a.ino.0, false).unwrap();
    let refused = ask(&fs, "erase a").await;
    assert!(refused.starts_with("error") && refused.contains("open 1 time"), "{refused}");
    fs.release(a.ino.0, fh);
    assert_eq!(ask(&fs, "erase a").await, "ok 0");
    assert!(fs.lookup(ROOT_INO, OsStr::new("a")).is_err());
    assert!(matches!(fs.getattr(a.ino.0), Err(FsError::NoInode(_))));
    assert_eq!(budget.members(), 2);
    for v in fs.served() {
        v.device().flush().await.unwrap();
        (v.take_release().unwrap())().await.unwrap();
    }
}

/// Volumes made in the store while mounted are served by the next rescan;
/// one locked by another mount is left, its reason logged once, and served
/// once free; one the store no longer lists is served on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_serves_the_volumes_made_in_the_store_and_leaves_a_locked_one() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, budget) = two_volumes(dir.path()).await;
    assert_eq!(ask(&fs, "rescan").await, "ok no new volumes");
    // Made directly in the store, as `s3block create STORE/NAME` does.
    let opened =
        s3block_store::StoreConfig::new(format!("file://{}/c", dir.path().display())).open().unwrap();
    let made = s3block_store::Volume::builder(opened)
        .size(1 << 20)
        .block_size(64 << 10)
        .create(s3block_store::Create::New)
        .open()
        .await
        .unwrap();
    made.close().await.unwrap();
    // And d, held by another mount (another budget, its own lock).
    let url = format!("file://{}", dir.path().display());
    let other = Options::parse_from_args(["s3block-fuse", "--all-volumes", &url, "/n"]).unwrap();
    let other_budget = s3block_cache::frontend::volumes::budget_of(&other.volume);
    let held =
        open_in(&other.volume, "d", &other_budget, Some((1 << 20, Some(64 << 10))), no_prompt).await.unwrap();

    let first = fs.rescan(Rescan::Periodic).await.unwrap();
    assert_eq!(first.added, ["c"]);
    assert_eq!(first.not_opened.len(), 1, "{first:?}");
    let d = &first.not_opened[0];
    assert!(d.name == "d" && d.logged && d.why.contains("lock"), "{d:?}");
    assert_eq!(budget.members(), 3);
    let c = fs.lookup(ROOT_INO, OsStr::new("c")).unwrap();
    assert_eq!((c.size, c.blksize), (1 << 20, 64 << 10));
    assert_eq!(fs.write(c.ino.0, 0, Bytes::from_static(b"in c")).await.unwrap(), 4);
    assert_eq!(&fs.read(c.ino.0, 0, 0, 4).await.unwrap()[..], b"in c");
    assert!(fs.lookup(ROOT_INO, OsStr::new("d")).is_err());
    // The periodic rescans leave d a while; asked, it is tried at once,
    // and the same reason is not logged again.
    assert_eq!(fs.rescan(Rescan::Periodic).await.unwrap(), Rescanned::default());
    let asked = fs.rescan(Rescan::Asked).await.unwrap();
    assert!(
        asked.added.is_empty() && asked.not_opened.len() == 1 && !asked.not_opened[0].logged,
        "{asked:?}"
    );
    let answer = ask(&fs, "rescan").await;
    assert!(answer.starts_with("ok no new volumes; not opened: d (") && answer.contains("lock"), "{answer}");

    // Free, it is served.
    held.device.flush().await.unwrap();
    (held.release)().await.unwrap();
    assert_eq!(ask(&fs, "rescan").await, "ok d");
    assert_eq!(ask(&fs, "list").await, "ok a b c d");
    assert_eq!(budget.members(), 4);

    // Gone from the store while served (its descriptor deleted): served on.
    std::fs::remove_file(dir.path().join("b/s3block-volume.json")).unwrap();
    let gone = fs.rescan(Rescan::Periodic).await.unwrap();
    assert_eq!(gone.gone, ["b"]);
    assert_eq!(ask(&fs, "list").await, "ok a b c d");
    assert!(ask(&fs, "rescan").await.ends_with("no longer in the store, served on: b"));

    // Closed at unmount: nothing is added any more.
    fs.close().await;
    let late =
        open_in(&other.volume, "e", &other_budget, Some((1 << 20, Some(64 << 10))), no_prompt).await.unwrap();
    (late.release)().await.unwrap();
    assert_eq!(fs.rescan(Rescan::Periodic).await.unwrap(), Rescanned::default());
    assert_eq!(budget.members(), 4);
    for v in fs.served() {
        v.device().flush().await.unwrap();
        (v.take_release().unwrap())().await.unwrap();
    }
}

#[tokio::test]
async fn a_mount_of_named_volumes_does_not_rescan() {
    let (opener, eraser): (Opener, Eraser) =
        (Arc::new(|_, _| Box::pin(async { unreachable!() })), Arc::new(|_| Box::pin(async { Ok(0) })));
    let totals = crate::multi_stats::Totals::new(s3block_cache::CacheBudget::new(4 << 20, 2 << 20, 2));
    let fs = MultiFs::new(Vec::new(), config(), None, totals, opener, eraser);
    let answer = ask(&fs, "rescan").await;
    assert!(answer.starts_with("error") && answer.contains("--all-volumes"), "{answer}");
}
