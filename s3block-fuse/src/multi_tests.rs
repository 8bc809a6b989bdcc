#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;

use s3block_cache::CacheBudget;
use s3block_cache::frontend::volumes::open_in;

use super::*;
use crate::Options;

fn no_prompt(_: &str) -> std::io::Result<String> {
    Err(std::io::Error::other("no terminal"))
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
    let config = FsConfig {
        filename: String::new(),
        stats_filename: None,
        file_mode: 0o600,
        read_only: false,
        direct_io: false,
        uid: 0,
        gid: 0,
    };
    let totals = crate::multi_stats::Totals::new(budget.clone());
    (Arc::new(MultiFs::new(stacks, config, Some("stats".into()), totals, opener, eraser)), budget)
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
