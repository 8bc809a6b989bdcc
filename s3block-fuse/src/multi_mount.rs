//! A mount of several volumes (`--volume NAME`, `--all-volumes`) from start
//! to exit, as [`lifecycle`](crate::lifecycle) runs one volume's:
//!
//! 1. the volumes are found (`--all-volumes` lists STORE's sub-prefixes),
//!    then opened one by one, each taking its lock and its share of the
//!    one cache budget. All or nothing: a volume that cannot be opened
//!    (locked by another mount, a wrong password, a bad name) refuses the
//!    mount, naming it, and the volumes opened so far are released;
//! 2. mount, serve (volumes created, grown and erased through the control
//!    file meanwhile; with `--all-volumes` those made in the store found by
//!    a rescan every 30 seconds), unmount as a one-volume mount does;
//! 3. each volume is stored and released in turn; the log says per volume
//!    what was stored or left, and the exit code is the worst of theirs.

use std::process::ExitCode;
use std::sync::Arc;

use s3block_cache::frontend::volumes::{self, budget_of, check_memory, open_in, volume_url};
use s3block_cache::frontend::{
    Backoff, FUSE_IO_WORKERS, Service, ShutdownOutcome, Stack, report, runtime_with_workers, second_sigint,
    shutdown, terminal_prompt,
};
use s3block_core::exit::{self, LOCAL_IO, OK, PROBLEMS};
use s3block_store::{Erase, Volume, with_hint};

use crate::daemon;
use crate::fs::FsConfig;
use crate::lifecycle::{check_places, effective_ids, fail};
use crate::multi::{Eraser, MultiFs, Opener, Rescan};
use crate::multi_stats::{TotalSource, Totals};
use crate::options::Options;
use crate::session::{FuseFs, InFlight, mount_config};
use crate::stats_file::StatsFile;
use crate::stop::{Served, serve_until_stopped};

type Prompt = Box<dyn FnMut(&str) -> std::io::Result<String> + Send>;

/// A password prompt for one more volume: the parent's password when the
/// background child got one, else the terminal when `terminal` (a volume a
/// rescan finds is never asked for: nobody waits at the terminal for it).
fn prompter(
    from_parent: Option<s3block_store::Password>,
    terminal: bool,
) -> impl Fn() -> Prompt + Send + Sync + Clone {
    move || {
        let from_parent = from_parent.clone();
        Box::new(move |text: &str| match &from_parent {
            Some(p) => Ok(String::from_utf8_lossy(p.as_bytes()).into_owned()),
            None if terminal => terminal_prompt(text),
            None => Err(std::io::Error::other(
                "no password to open it with: give --password-file (a volume found while mounted is not \
                 asked for on the terminal)",
            )),
        })
    }
}

/// Runs a mount of several volumes in this process, in the foreground.
pub(crate) fn run_multi_mount(opts: Options) -> ExitCode {
    let runtime = match runtime_with_workers(FUSE_IO_WORKERS) {
        Ok(rt) => rt,
        Err(e) => return fail(LOCAL_IO, format!("cannot start the I/O runtime: {e}")),
    };
    if let Err(code) = check_places(&opts) {
        return code;
    }
    let from_parent = daemon::password_from_parent();
    let prompt = prompter(from_parent.clone(), true);
    let unattended = prompter(from_parent, false);
    let args = Arc::new(opts.volume.clone());
    let names = if opts.all_volumes {
        match runtime.block_on(volumes::discover(&args)) {
            Ok(names) => names,
            Err(e) => {
                return fail(
                    exit::exit_code(&e),
                    format!("cannot list the volumes under {}: {e}", args.store),
                );
            }
        }
    } else {
        opts.volumes.clone()
    };
    let budget = budget_of(&args);
    let mut stacks: Vec<(String, Stack)> = Vec::new();
    let mut failed = None;
    for name in &names {
        match runtime.block_on(open_in(&args, name, &budget, None, prompt())) {
            Ok(stack) => {
                tracing::info!("volume {name}: {}", stack.description);
                stacks.push((name.clone(), stack));
            }
            Err(e) => {
                let url = volume_url(&args.store, name);
                failed =
                    Some((exit::exit_code(&e), with_hint(&e, format!("cannot open the volume {url}: {e}"))));
                break;
            }
        }
    }
    let block_sizes: Vec<u64> =
        stacks.iter().map(|(_, s)| u64::from(s.device.geometry().block_size())).collect();
    if failed.is_none()
        && let Err(why) = check_memory(&args, &budget, &block_sizes)
    {
        failed = Some((exit::USAGE, why));
    }
    if let Some((code, message)) = failed {
        release_all(&runtime, stacks);
        return fail(code, message);
    }

    let (euid, egid) = effective_ids();
    let config = FsConfig {
        filename: String::new(),
        stats_filename: None,
        file_mode: opts.effective_file_mode(),
        read_only: args.read_only,
        direct_io: opts.direct_io,
        uid: opts.uid.unwrap_or(euid),
        gid: opts.gid.unwrap_or(egid),
    };
    let opener: Opener = {
        let (args, budget) = (args.clone(), budget.clone());
        Arc::new(move |name, create| {
            let (args, budget) = (args.clone(), budget.clone());
            // Created through the control file: asked as at the start;
            // found by a rescan: never on the terminal.
            let prompt = if create.is_some() { prompt() } else { unattended() };
            Box::pin(async move {
                // Opening holds the password prompt across its awaits, which
                // is not Send: it runs on a blocking thread, its cache's
                // tasks on the mount's runtime.
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    handle.block_on(open_in(&args, &name, &budget, create, prompt))
                })
                .await
                .map_err(|e| s3block_core::Error::Config(format!("the open failed: {e}")))?
            })
        })
    };
    let eraser: Eraser = {
        let args = args.clone();
        Arc::new(move |name| {
            let args = args.clone();
            Box::pin(async move {
                // The erase's future is not Send (its progress callback): it
                // runs on a thread of its own.
                let erase = tokio::task::spawn_blocking(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| s3block_core::Error::Config(format!("cannot start the erase: {e}")))?;
                    rt.block_on(async {
                        let opened = args.store_args.to_config(&volume_url(&args.store, &name)).open()?;
                        Erase::plan(Volume::builder(opened), false).await?.run(&mut |_| {}).await
                    })
                });
                erase.await.map_err(|e| s3block_core::Error::Config(format!("the erase failed: {e}")))?
            })
        })
    };
    let totals = Totals::new(budget.clone());
    let mut fs =
        MultiFs::new(stacks, config, opts.stats_name().map(str::to_owned), totals.clone(), opener, eraser);
    if opts.all_volumes {
        let args = args.clone();
        fs = fs.with_discoverer(Arc::new(move || {
            let args = args.clone();
            Box::pin(async move { volumes::discover(&args).await })
        }));
    }
    let fs = Arc::new(fs);
    let source: Arc<dyn s3block_cache::frontend::StatsSource> =
        Arc::new(TotalSource { fs: Arc::downgrade(&fs), totals });
    let in_flight = InFlight::default();
    let adapter = FuseFs::many(fs.clone(), runtime.handle().clone(), in_flight.clone());
    let mount = mount_config(args.read_only, &opts.kernel_flags, euid == 0 || opts.allow_other);
    let mountpoint = opts.mountpoint().canonicalize().unwrap_or_else(|_| opts.mountpoint().to_owned());
    let session = match fuser::Session::new(adapter, opts.mountpoint(), &mount) {
        Ok(session) => session,
        Err(e) => {
            let code = fail(LOCAL_IO, format!("cannot mount on {}: {e}", opts.mountpoint().display()));
            runtime.block_on(store_all(&fs, None));
            return code;
        }
    };
    fs.set_notifier(session.notifier());
    tracing::info!(
        "mounted {} volume(s) of {} on {}: {} (one cache budget of {}, {} dirty, {} upload slots)",
        fs.names().len(),
        args.store,
        mountpoint.display(),
        fs.names().join(", "),
        s3block_core::format_size(budget.cache_size()),
        s3block_core::format_size(budget.max_dirty()),
        budget.upload_slots()
    );
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let serving = std::thread::Builder::new().name("fuse-session".into()).spawn(move || {
        let _ = done_tx.send(session.run());
    });
    if let Err(e) = serving {
        return fail(LOCAL_IO, format!("cannot start the FUSE session thread: {e}"));
    }
    let doing = format!("mounted {} on {}", args.store, mountpoint.display());
    let service = Service::ready(runtime.handle(), doing, source.clone(), daemon::is_child());
    daemon::mounted();
    let stats_file = opts
        .stats_file
        .clone()
        .map(|path| StatsFile::start(runtime.handle(), source.clone(), path, opts.stats_every()));
    let rescans = opts.all_volumes.then(|| runtime.spawn(rescan_every(fs.clone(), opts.rescan_every())));
    let code = runtime.block_on(async {
        let devices = fs.served().iter().map(|v| v.device().clone()).collect();
        let (served, sigints) = match serve_until_stopped(&mountpoint, devices, done_rx, &service).await {
            Ok(served) => served,
            Err(message) => {
                tracing::error!("{message}");
                return PROBLEMS;
            }
        };
        if served == Served::Abandoned {
            tracing::error!(
                "abandoned at the user's request: written blocks not stored yet, if any, are lost"
            );
            return exit::CANCELLED;
        }
        service.storing();
        tokio::select! {
            () = in_flight.drain() => {}
            () = second_sigint(sigints.clone()) => {
                tracing::warn!("a second SIGINT: not waiting for the requests in flight");
            }
        }
        fs.close().await;
        if let Some(rescans) = &rescans {
            rescans.abort();
        }
        tracing::info!("unmounted; storing every written block of every volume before exit");
        store_all(&fs, Some(sigints)).await
    });
    if let Some(stats_file) = stats_file {
        runtime.block_on(stats_file.finish());
    }
    ExitCode::from(code)
}

/// Rescans the store every `every` for volumes made there while mounted
/// (`--all-volumes`), until the mount closes; a failed listing is logged
/// when its reason changes.
async fn rescan_every(fs: Arc<MultiFs>, every: std::time::Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        tick.tick().await;
        match fs.rescan(Rescan::Periodic).await {
            Ok(_) => {
                if failing.take().is_some() {
                    tracing::info!("the store lists its volumes again");
                }
            }
            Err(why) => {
                if failing.as_ref() != Some(&why) {
                    tracing::warn!(
                        "rescanning the store for new volumes: {why} (tried again every {every:?})"
                    );
                }
                failing = Some(why);
            }
        }
    }
}

/// Stores and releases every volume in turn, saying per volume what was
/// stored or left; returns the worst exit code.
async fn store_all(fs: &MultiFs, sigints: Option<tokio::sync::watch::Receiver<u32>>) -> u8 {
    let mut worst = OK;
    for volume in fs.served() {
        let Some(release) = volume.take_release() else { continue };
        let abandon = {
            let sigints = sigints.clone();
            async move {
                match sigints {
                    Some(s) => second_sigint(s).await,
                    None => std::future::pending().await,
                }
            }
        };
        let outcome = shutdown(volume.device().as_ref(), Backoff::default(), abandon, release).await;
        let name = &volume.name;
        match &outcome {
            ShutdownOutcome::Stored { .. } => tracing::info!("volume {name}: stored and released"),
            _ => tracing::error!("volume {name}: NOT stored entirely (below)"),
        }
        let code = report(&outcome, "while the mount was busy");
        worst = worst.max(code);
    }
    if worst == OK {
        tracing::info!("every block is stored (every volume's); exiting");
    }
    worst
}

/// Releases stacks opened before a failed start.
fn release_all(runtime: &tokio::runtime::Runtime, stacks: Vec<(String, Stack)>) {
    for (name, stack) in stacks {
        if let Err(e) = runtime.block_on((stack.release)()) {
            tracing::warn!("volume {name}: could not release the mount lock after a failed start: {e}");
        }
    }
}
