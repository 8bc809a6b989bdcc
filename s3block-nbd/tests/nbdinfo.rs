//! The server against a real client: `nbdinfo` (libnbd) over a Unix socket,
//! with the library serving in-process over the cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Geometry, MemoryDevice};
use s3block_nbd::{Export, Server, ServerConfig};
use tokio::net::UnixListener;

/// True when `nbdinfo` can run; without it the test skips, except under
/// `CI=true`, where it fails naming the tool.
fn have_nbdinfo() -> bool {
    let found = Command::new("nbdinfo").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nbdinfo is missing (Debian package libnbd-bin); CI=true requires it"
        );
        eprintln!("skipped: nbdinfo is missing (install the Debian package libnbd-bin)");
    }
    found
}

/// Serves `server` on a Unix socket in `dir`; returns the socket's path.
fn serve_on_socket(server: &Server, dir: &Path) -> PathBuf {
    let path = dir.join("nbd.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let server = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let server = server.clone();
            tokio::spawn(async move {
                let _ = server.serve(stream, "nbdinfo").await;
            });
        }
    });
    path
}

async fn nbdinfo(args: Vec<String>) -> String {
    let out = tokio::task::spawn_blocking(move || Command::new("nbdinfo").args(&args).output())
        .await
        .expect("join")
        .expect("run nbdinfo");
    assert!(out.status.success(), "nbdinfo failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_sees_the_export_and_maps_the_written_blocks() {
    if !have_nbdinfo() {
        return;
    }
    const BS: u64 = 64 << 10;
    let g = Geometry::new(64 * BS, BS).expect("geometry");
    let mem = Arc::new(MemoryDevice::new(g));
    // Stored below before the cache opens: blocks 1 and 2.
    mem.write_at(BS, Bytes::from(vec![5u8; 2 * BS as usize])).await.expect("write");
    let stored = [BlockId(1), BlockId(2)];
    let cache = Arc::new(
        BlockCache::with_known_blocks(Arc::clone(&mem), CacheConfig::default(), stored).expect("cache"),
    );
    // Written through the cache (dirty, not uploaded yet): block 10, and a
    // few bytes in block 20.
    cache.write_block(BlockId(10), Bytes::from(vec![7u8; BS as usize])).await.expect("write");
    cache.write_at(20 * BS + 100, Bytes::from_static(b"hello")).await.expect("write");
    // Block 2 trimmed.
    cache.discard(2..3).await.expect("discard");
    let device: Arc<dyn BlockDevice> = cache.clone();
    let server =
        Server::new(Export::new(device).name("vol").description("test volume"), ServerConfig::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = serve_on_socket(&server, dir.path());
    let uri = format!("nbd+unix:///vol?socket={}", socket.display());

    let json = nbdinfo(vec!["--json".into(), uri.clone()]).await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let e = &v["exports"][0];
    println!("{}", serde_json::to_string_pretty(e).expect("json"));
    assert_eq!(e["export-name"], "vol");
    assert_eq!(e["description"], "test volume");
    assert_eq!(e["export-size"], 64 * BS);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_preferred"], BS);
    assert_eq!(e["block_size_maximum"], 32 << 20);
    assert_eq!(e["is_read_only"], false);
    for can in
        ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn"]
    {
        assert_eq!(e[can], true, "{can}");
    }
    assert_eq!(v["protocol"], "newstyle-fixed");
    assert_eq!(v["TLS"], false);

    let map = nbdinfo(vec!["--map".into(), "--json".into(), uri.clone()]).await;
    let v: serde_json::Value = serde_json::from_str(&map).expect("json");
    let runs: Vec<(u64, u64, u64)> = v
        .as_array()
        .expect("an array")
        .iter()
        .map(|x| {
            (
                x["offset"].as_u64().expect("offset"),
                x["length"].as_u64().expect("length"),
                x["type"].as_u64().expect("type"),
            )
        })
        .collect();
    println!("{runs:?}");
    let hole = 3;
    assert_eq!(
        runs,
        vec![
            (0, BS, hole),
            (BS, BS, 0),
            (2 * BS, 8 * BS, hole),
            (10 * BS, BS, 0),
            (11 * BS, 9 * BS, hole),
            (20 * BS, BS, 0),
            (21 * BS, 43 * BS, hole),
        ]
    );
    server.shutdown();
    server.drained().await;
    cache.close().await.expect("close");
    // What the map called data is what is stored once flushed.
    assert_eq!(mem.stored_blocks(), 3);
}
