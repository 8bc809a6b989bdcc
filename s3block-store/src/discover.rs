//! The volumes under a store prefix: what a mount of several volumes
//! (`--all-volumes`) serves.

use object_store::ObjectStore;
use object_store::path::Path;
use s3block_core::{Error, Result};

use crate::{VolumeOptions, open_volume};

/// The names of the sub-prefixes of `prefix` in `store` that hold a volume
/// (an s3block descriptor, or an s3backer block 0 with its metadata),
/// sorted. One LIST request with a delimiter, then one look per sub-prefix.
pub async fn list_volumes(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>> {
    let prefix = prefix.trim_end_matches('/');
    let at = (!prefix.is_empty()).then(|| Path::from(prefix));
    let listed = store
        .list_with_delimiter(at.as_ref())
        .await
        .map_err(|e| Error::Config(format!("cannot list the volumes under {prefix:?}: {e}")))?;
    let mut names = Vec::new();
    for sub in listed.common_prefixes {
        let Some(name) = sub.filename() else { continue };
        if open_volume(store, &format!("{sub}/"), &VolumeOptions::default()).await.is_ok() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Create, StoreConfig, Volume};

    #[tokio::test]
    async fn the_sub_prefixes_holding_a_volume_are_listed() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["b", "a"] {
            let url = format!("file://{}/{name}", dir.path().display());
            let opened = StoreConfig::new(&url).open().expect("store");
            let v = Volume::builder(opened).size(1 << 20).block_size(4096).create(Create::New).open().await;
            v.expect("create").close().await.expect("close");
        }
        std::fs::create_dir_all(dir.path().join("empty/x")).expect("dir");
        std::fs::write(dir.path().join("empty/x/junk"), b"junk").expect("file");
        let opened = StoreConfig::new(format!("file://{}", dir.path().display())).open().expect("store");
        let names = list_volumes(opened.store.as_ref(), &opened.prefix).await.expect("list");
        assert_eq!(names, ["a", "b"]);
    }
}
