//! `--stats-file FILE` (s3backer's `--statsFileMirror`): the stats the
//! mount shows in its stats file, also written to FILE and FILE.json every
//! `--stats-interval` and once more at exit, for a monitor that cannot
//! read the mount point (another user, a container) or after the unmount.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use s3block_cache::frontend::{StatsSource, write_stats_files};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The task that rewrites the stats files.
pub(crate) struct StatsFile {
    stats: Arc<dyn StatsSource>,
    path: PathBuf,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StatsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl StatsFile {
    /// Writes `stats` to `path` now and every `every` from now on.
    pub(crate) fn start(rt: &Handle, stats: Arc<dyn StatsSource>, path: PathBuf, every: Duration) -> Self {
        let (source, target) = (stats.clone(), path.clone());
        let task = rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                write(source.clone(), target.clone()).await;
            }
        });
        StatsFile { stats, path, task }
    }

    /// Stops the rewrites and writes the files a last time, with the
    /// figures of the whole mount (the final flush's uploads included).
    pub(crate) async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
        write(self.stats, self.path).await;
    }
}

/// Writes the stats files, off the runtime's threads; a failure is logged
/// and the mount goes on.
async fn write(stats: Arc<dyn StatsSource>, path: PathBuf) {
    let written = tokio::task::spawn_blocking(move || {
        write_stats_files(stats.as_ref(), &path).map_err(|e| format!("{}: {e}", path.display()))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(message)) => tracing::warn!("--stats-file: cannot write {message}"),
        Err(e) => tracing::warn!("--stats-file: cannot write: {e}"),
    }
}
