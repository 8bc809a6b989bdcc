//! `--erase` and `--reset-mounted-flag`: work on the volume instead of
//! mounting it, then exit, as s3backer's options of those names do.
//!
//! `--erase` is `s3block erase` ([`Erase`] in the store crate): every stored
//! block, then the descriptor, the mount record and the lock. It asks first
//! unless `--force`, the way s3backer does: a line on standard input, "y"
//! or "yes" to go on (so `echo y | s3block-fuse --erase ...` works as it
//! did with s3backer); anything else, or nothing, deletes nothing.
//!
//! `--reset-mounted-flag` is `s3block unlock` without the question (the
//! option is the user's answer): it says who held the lock and removes it.
//! A lock whose holder still runs on this very machine is kept unless
//! `--force`: removing it would let a second mount write beside the first.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use s3block_core::exit::{CANCELLED, LOCAL_IO, LOCKED, exit_code};
use s3block_core::{Error, Liveness, format_count, local_hostname};
use s3block_store::{Erase, OpenedStore, Volume, break_lock, read_lock, with_hint};

use crate::lifecycle::fail;
use crate::options::Options;

/// Runs `--erase` or `--reset-mounted-flag`; returns the exit code.
pub(crate) fn run(opts: &Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(LOCAL_IO, format!("cannot start the I/O runtime: {e}")),
    };
    let stdin = std::io::stdin();
    let result = runtime.block_on(async {
        if opts.erase {
            erase(opts, &mut stdin.lock(), &mut std::io::stderr()).await
        } else {
            reset(opts).await
        }
    });
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(Failure { code, message }) => fail(code, message),
    }
}

/// Why `--erase` or `--reset-mounted-flag` stopped: an exit code and a line.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    fn new(code: u8, message: String) -> Self {
        Failure { code, message }
    }

    fn of(opts: &Options, e: &Error) -> Self {
        Failure::new(exit_code(e), with_hint(e, format!("{}: {e}", opts.volume.store)))
    }
}

/// The volume's store, opened with the mount's store options.
fn open_store(opts: &Options) -> Result<OpenedStore, Failure> {
    let volume = &opts.volume;
    volume
        .store_args
        .to_config(&volume.store)
        .retry(volume.retry_config())
        .open()
        .map_err(|e| Failure::of(opts, &e))
}

/// `--erase`: asks on `input` (the question on `prompt`) unless `--force`,
/// then deletes; returns the line to print.
pub(crate) async fn erase(
    opts: &Options,
    input: &mut dyn BufRead,
    prompt: &mut dyn Write,
) -> Result<String, Failure> {
    let volume = &opts.volume;
    let url = &volume.store;
    let mut builder = Volume::builder(open_store(opts)?).name(url).auto_detect(!volume.no_auto_detect);
    if let Some(size) = volume.size {
        builder = builder.size(size);
    }
    if let Some(block_size) = volume.block_size {
        builder = builder.block_size(block_size);
    }
    if volume.hash_prefix {
        builder = builder.hash_prefix(true);
    }
    let plan = match Erase::plan(builder, opts.force).await {
        Ok(plan) => plan,
        Err(Error::Locked { host, since, .. }) => {
            return Err(Failure::new(
                LOCKED,
                format!(
                    "--erase: {url} is mounted by {host} since {since}; unmount it first, or give --force to \
                     erase it anyway"
                ),
            ));
        }
        Err(Error::NoVolume { prefix, .. }) => {
            return Err(Failure::new(
                s3block_core::exit::USAGE,
                format!(
                    "--erase: no volume at {url} (key prefix {prefix:?}: no s3block descriptor, no s3backer \
                     block 0); for blocks stored without either, give --noAutoDetect with the --size and \
                     --block-size they were written with"
                ),
            ));
        }
        Err(e) => return Err(Failure::of(opts, &e)),
    };
    let n = plan.blocks();
    if !opts.force {
        let question = format!(
            "s3block-fuse: --erase: delete all {} stored blocks of {url}, its descriptor and its lock? This \
             cannot be undone. [y/N] ",
            format_count(n)
        );
        let asked = write!(prompt, "{question}").and_then(|()| prompt.flush());
        let mut answer = String::new();
        let read = asked.and_then(|()| input.read_line(&mut answer));
        let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
        if read.is_err() || !yes {
            return Err(Failure::new(CANCELLED, "--erase: not confirmed; nothing was deleted".into()));
        }
    }
    tracing::info!("erasing {} blocks of {url}", format_count(n));
    let erased = plan.run(&mut |_| {}).await.map_err(|e| Failure::of(opts, &e))?;
    Ok(format!("Erased {} blocks, the descriptor and the lock of {url}.", format_count(erased)))
}

/// `--reset-mounted-flag`: removes the lock; returns the line to print.
pub(crate) async fn reset(opts: &Options) -> Result<String, Failure> {
    let url = &opts.volume.store;
    let opened = open_store(opts)?;
    let store = opened.store.as_ref();
    let Some(info) = read_lock(store, &opened.prefix).await.map_err(|e| Failure::of(opts, &e))? else {
        return Ok(format!("{url} is not locked."));
    };
    let holder = match info.process.pid {
        Some(pid) => format!("{} (process {pid}) since {}", info.host, info.since),
        None => format!("{} since {}", info.host, info.since),
    };
    if let Some(Liveness::Alive(why)) = info.liveness(&local_hostname())
        && !opts.force
    {
        return Err(Failure::new(
            LOCKED,
            format!(
                "--reset-mounted-flag: {url} is locked by {holder}, and the holder still runs on this \
                 machine ({why}); unmount it instead, or give --force to remove the lock anyway"
            ),
        ));
    }
    break_lock(store, &opened.prefix).await.map_err(|e| Failure::of(opts, &e))?;
    Ok(format!("Removed the lock of {url}, held by {holder}."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3block_core::{BlockDevice, BlockId, Bytes};
    use s3block_store::Create;

    fn options(args: &[&str]) -> Options {
        let mut full = vec!["s3block-fuse"];
        full.extend_from_slice(args);
        Options::parse_from_args(full).expect("options")
    }

    /// A volume of 1M in 64K blocks with blocks 2 and 9 stored, closed.
    async fn volume(url: &str) {
        let v = Volume::at(url).unwrap().size(1 << 20).block_size(64 << 10).create(Create::New).open().await;
        let v = v.expect("create");
        for b in [2u32, 9] {
            v.device().write_block(BlockId(b), Bytes::from(vec![3u8; 64 << 10])).await.expect("write");
        }
        v.close().await.expect("close");
    }

    fn objects(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).expect("dir").count()
    }

    #[tokio::test]
    async fn erase_asks_on_standard_input_unless_forced() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("file://{}", dir.path().display());
        volume(&url).await;
        let before = objects(dir.path());
        for answer in ["n\n", "", "yess\n"] {
            let mut prompt = Vec::new();
            let err = erase(&options(&["--erase", &url]), &mut answer.as_bytes(), &mut prompt).await;
            let err = err.expect_err("not confirmed");
            assert_eq!(err.code, CANCELLED, "{}", err.message);
            let asked = String::from_utf8(prompt).expect("utf-8");
            assert!(asked.contains("delete all 2 stored blocks") && asked.ends_with("[y/N] "), "{asked}");
            assert_eq!(objects(dir.path()), before, "nothing deleted after {answer:?}");
        }
        let done = erase(&options(&["--erase", &url]), &mut &b"YES\n"[..], &mut Vec::new()).await;
        assert_eq!(done.expect("erased"), format!("Erased 2 blocks, the descriptor and the lock of {url}."));
        assert_eq!(objects(dir.path()), 0);
        // Nothing left to erase: no volume there.
        let err = erase(&options(&["--erase", "--force", &url]), &mut &b""[..], &mut Vec::new()).await;
        let err = err.expect_err("no volume");
        assert!(
            err.message.contains("no volume at") && err.message.contains("--noAutoDetect"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn a_locked_volume_is_erased_or_unlocked_only_with_force() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("file://{}", dir.path().display());
        volume(&url).await;
        // Held by this very process: alive.
        let held = Volume::at(&url).unwrap().open().await.expect("mount");
        let err =
            erase(&options(&["--erase", &url]), &mut &b"y\n"[..], &mut Vec::new()).await.expect_err("locked");
        assert_eq!(err.code, LOCKED, "{}", err.message);
        let err = reset(&options(&["--reset-mounted-flag", &url])).await.expect_err("alive");
        assert_eq!(err.code, LOCKED);
        assert!(err.message.contains("still runs on this machine"), "{}", err.message);
        let done = reset(&options(&["--reset-mounted-flag", "--force", &url])).await.expect("forced");
        assert!(done.starts_with(&format!("Removed the lock of {url}, held by ")), "{done}");
        assert_eq!(
            reset(&options(&["--reset-mounted-flag", &url])).await.expect("no lock"),
            format!("{url} is not locked.")
        );
        drop(held);
        let done = erase(&options(&["--erase", "--force", &url]), &mut &b""[..], &mut Vec::new()).await;
        assert!(done.expect("erased").starts_with("Erased 2 blocks"));
    }
}
