//! The record of the last read-write mount (`s3block-last-mount`), through
//! the `Volume` handle: every read-write open replaces it with a new id and
//! reports the one it found; read-only opens neither write nor report it; a
//! deferred record is written only when asked.

use std::collections::HashMap;

use s3block_store::{Create, OpenedStore, StoreConfig, Volume, read_mount_record};

const BS: u64 = 64 << 10;

fn opened(dir: &tempfile::TempDir) -> OpenedStore {
    let url = format!("file://{}", dir.path().display());
    StoreConfig::new(url).env(HashMap::new()).open().expect("local store")
}

async fn stored(dir: &tempfile::TempDir) -> Option<String> {
    let s = opened(dir);
    read_mount_record(s.store.as_ref(), &s.prefix).await.expect("read the record").map(|r| r.mount)
}

#[tokio::test]
async fn each_read_write_open_records_a_new_mount_and_reports_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Volume::builder(opened(&dir))
        .size(8 * BS)
        .block_size(BS)
        .create(Create::IfMissing)
        .open()
        .await
        .expect("create");
    assert!(first.previous_mount().is_none(), "a new volume has no previous mount");
    let first_id = first.this_mount().expect("a read-write open has a record").mount.clone();
    assert_eq!(stored(&dir).await.as_deref(), Some(first_id.as_str()), "written at open");
    first.close().await.expect("close");

    let second = Volume::builder(opened(&dir)).open().await.expect("reopen");
    assert_eq!(second.previous_mount().map(|r| r.mount.as_str()), Some(first_id.as_str()));
    let second_id = second.this_mount().expect("record").mount.clone();
    assert_ne!(first_id, second_id);
    assert_eq!(stored(&dir).await, Some(second_id.clone()));
    second.close().await.expect("close");

    let ro = Volume::builder(opened(&dir)).read_only(true).open().await.expect("read-only open");
    assert!(ro.previous_mount().is_none() && ro.this_mount().is_none());
    assert_eq!(stored(&dir).await, Some(second_id), "a read-only open writes no record");
}

#[tokio::test]
async fn a_deferred_record_is_written_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    Volume::builder(opened(&dir))
        .size(8 * BS)
        .block_size(BS)
        .create(Create::IfMissing)
        .open()
        .await
        .expect("create")
        .close()
        .await
        .expect("close");
    let before = stored(&dir).await;
    let mut v = Volume::builder(opened(&dir)).defer_mount_record().open().await.expect("open");
    assert_eq!(v.previous_mount().map(|r| r.mount.clone()), before);
    assert_eq!(stored(&dir).await, before, "not written before record_mount");
    v.record_mount().await.expect("record");
    let now = v.this_mount().expect("record").mount.clone();
    assert_eq!(stored(&dir).await, Some(now));
    v.close().await.expect("close");
}
