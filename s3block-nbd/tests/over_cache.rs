//! The server over the block cache, as the program runs it: FUA and FLUSH
//! reach the store, four connections share one cache, and a client that
//! hangs up loses none of its acknowledged writes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDeviceExt, MemoryDevice};
use s3block_nbd::proto::*;

fn cache_over(mem: &Arc<MemoryDevice>) -> Arc<BlockCache<Arc<MemoryDevice>>> {
    // A long write delay, for blocks written whole too: nothing is
    // uploaded unless flushed.
    let config = CacheConfig::builder()
        .cache_size(8 << 20)
        .write_delay(Duration::from_secs(3600))
        .prompt_uploads(false)
        .build();
    Arc::new(BlockCache::with_known_blocks(Arc::clone(mem), config, []).expect("cache"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fua_and_flush_reach_the_store() {
    let mem = memory();
    let cache = cache_over(&mem);
    let server = server_of(cache.clone());
    let (s, _task) = pipe(&server);
    let mut c = connect(s, Want { structured: true, meta: true, ..Want::default() }).await;
    assert_eq!(c.write(0, &pattern(1, 4096)).await, 0);
    assert_eq!(mem.stored_blocks(), 0, "acknowledged, in the cache only");
    assert_eq!(c.cmd(CMD_WRITE, CMD_FLAG_FUA, 4096, 4096, &pattern(2, 4096)).await, 0);
    assert_eq!(mem.stored_blocks(), 2, "FUA stored it (and what came before)");
    assert_eq!(c.write(8192, &pattern(3, 100)).await, 0);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, 0);
    assert_eq!(mem.stored_blocks(), 3);
    // Block status from the cache: three blocks of data, holes elsewhere.
    let cookie = c.send(CMD_BLOCK_STATUS, 0, 0, 8 * 4096, &[]).await;
    let chunks = c.reply(cookie).await;
    let Chunk::Status { extents, .. } = &chunks[0] else { panic!("{chunks:?}") };
    assert_eq!(extents, &vec![(3 * 4096, 0), (5 * 4096, STATE_HOLE | STATE_ZERO)]);
    cache.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_connections_share_one_cache_and_one_flush_covers_them() {
    let mem = memory();
    let cache = cache_over(&mem);
    let server = server_of(cache.clone());
    let mut writers = Vec::new();
    for i in 0..4u64 {
        let (s, _task) = pipe(&server);
        writers.push(tokio::spawn(async move {
            let mut c = connect(s, Want::default()).await;
            // Each connection pipelines eight writes, then reads its replies.
            let mut cookies = Vec::new();
            for j in 0..8u64 {
                let block = i * 8 + j;
                cookies.push(c.send(CMD_WRITE, 0, block * 4096, 4096, &pattern(block as u8, 4096)).await);
            }
            for _ in &cookies {
                let (_, chunk, _) = c.recv().await.expect("reply");
                assert_eq!(chunk, Chunk::Simple { error: 0, data: vec![] });
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for w in writers {
        clients.push(w.await.expect("writer"));
    }
    assert_eq!(mem.stored_blocks(), 0);
    // A flush on the last connection covers every connection's writes.
    let mut last = clients.pop().expect("a client");
    assert_eq!(last.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, 0);
    assert_eq!(mem.stored_blocks(), 32);
    for b in 0..32u64 {
        let got = mem.read_at(b * 4096, 4096).await.expect("read");
        assert_eq!(&got[..], &pattern(b as u8, 4096)[..], "block {b}");
    }
    assert_eq!(server.stats().writes, 32);
    cache.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_loses_no_acknowledged_write() {
    let mem = memory();
    let cache = cache_over(&mem);
    let server = server_of(cache.clone());
    let (s, task) = pipe(&server);
    let mut c = connect(s, Want::default()).await;
    assert_eq!(c.write(5 * 4096 + 7, &pattern(4, 5000)).await, 0);
    // Pipelined writes whose replies are never read, then a hang-up.
    c.send(CMD_WRITE, 0, 0, 4096, &pattern(5, 4096)).await;
    let _ = c.send(CMD_TRIM, 0, 20 * 4096, 4096, &[]).await;
    drop(c);
    let _ = task.await.expect("no panic");
    server.drained().await;
    // The requests read before the hang-up were served.
    cache.close().await.expect("close");
    let got = mem.read_at(5 * 4096 + 7, 5000).await.expect("read");
    assert_eq!(&got[..], &pattern(4, 5000)[..]);
    assert_eq!(&mem.read_at(0, 4096).await.expect("read")[..], &pattern(5, 4096)[..]);
}
