//! Writes and reads a few bytes across a block boundary of an in-memory volume.

use s3block_core::{BlockDeviceExt, Bytes, Geometry, MemoryDevice};

#[tokio::main(flavor = "current_thread")]
async fn main() -> s3block_core::Result<()> {
    let dev = MemoryDevice::new(Geometry::new(64 << 20, 256 << 10)?);
    dev.write_at((256 << 10) - 5, Bytes::from_static(b"across a boundary")).await?;
    let back = dev.read_at((256 << 10) - 5, 17).await?;
    println!("{} -> {}", String::from_utf8_lossy(&back), dev.stored_blocks());
    Ok(())
}
