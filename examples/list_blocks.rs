//! Reads a volume's stored blocks with the library of the `s3block`
//! command: which blocks are stored, how large their objects are, and one
//! block decoded.
//!
//! ```sh
//! cargo run -p s3block-examples --example list_blocks -- file:///tmp/s3block-example-volume
//! ```

use s3block_cli::target::open as open_target;
use s3block_cli::volume::{open, stored_blocks};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, Result};

/// The stored blocks of the volume at `url` as (block, object size), and
/// the first stored block's first bytes.
async fn list(url: &str) -> Result<(Vec<(u32, u64)>, Vec<u8>)> {
    // The store options of the command line (`--prefix`, `--endpoint`, ...).
    let target = open_target(url, &StoreArgs::default())?;
    let volume = open(&target, &LayoutArgs::default()).await?;
    let stored = stored_blocks(&volume).await?;
    let head = match stored.first() {
        Some(first) => volume.device.read_block(first.block).await?.slice(..16).to_vec(),
        None => Vec::new(),
    };
    Ok((stored.iter().map(|s| (s.block.0, s.size)).collect(), head))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "file:///tmp/s3block-example-volume".to_owned());
    let (blocks, head) = list(&url).await?;
    for (block, size) in &blocks {
        println!("block {block}: {size} bytes stored");
    }
    println!("{} blocks; the first begins with {head:02x?}", blocks.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use s3block_core::{BlockDeviceExt, Bytes};
    use s3block_store::{Create, Volume};

    #[tokio::test]
    async fn lists_what_was_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("file://{}", dir.path().display());
        let v = Volume::at(&url)
            .unwrap()
            .size(1 << 20)
            .block_size(4096)
            .create(Create::New)
            .open()
            .await
            .unwrap();
        v.device().write_at(3 * 4096, Bytes::from_static(b"block three")).await.unwrap();
        v.close().await.unwrap();
        let (blocks, head) = super::list(&url).await.expect("the example runs");
        assert_eq!(blocks, vec![(3, 4096)]);
        assert_eq!(&head[..11], b"block three");
    }
}
