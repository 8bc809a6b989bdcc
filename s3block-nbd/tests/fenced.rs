//! A fenced volume over NBD: once the mount lock is another's (or gone),
//! the server answers writes and flushes with EIO, as the FUSE mount does.

mod common;

use std::sync::Arc;

use common::*;
use s3block_core::BlockDevice;
use s3block_nbd::proto::{CMD_FLUSH, EIO};
use s3block_store::{Fence, FencedDevice, LockOptions, MountLock, StoreConfig, break_lock};

#[tokio::test]
async fn a_fenced_volume_answers_writes_and_flushes_with_eio() {
    let opened = StoreConfig::new("memory:///v/").open().expect("memory store");
    let lock = MountLock::acquire(opened.store.clone(), &opened.prefix, LockOptions::default())
        .await
        .expect("take the lock");
    let fence = Arc::new(Fence::new(lock.probe()));
    let device: Arc<dyn BlockDevice> = Arc::new(FencedDevice::top(memory(), fence.clone()));
    let server = server_of(device);
    let (s, task) = pipe(&server);
    let mut c = connect(s, Want::default()).await;
    assert_eq!(c.write(0, b"while held").await, 0);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, 0);
    // `s3block unlock --force`: the next flush finds the lock gone.
    break_lock(opened.store.as_ref(), &opened.prefix).await.expect("break the lock");
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0, &[]).await, EIO);
    assert_eq!(c.write(0, b"after").await, EIO);
    assert_eq!(c.read(0, 10).await, Ok(b"while held".to_vec()), "reads still pass");
    assert!(fence.is_tripped());
    c.disconnect().await;
    assert!(task.await.expect("join").is_ok());
    assert!(!lock.release().await.expect("release"), "the fenced mount removed a lock");
}
