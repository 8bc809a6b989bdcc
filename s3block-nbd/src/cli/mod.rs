//! The `s3block-nbd` program, from start to exit:
//!
//! 1. Parse the options: the volume and cache options are the mount
//!    program's own ([`VolumeArgs`](s3block_cache::frontend::VolumeArgs)),
//!    plus where to listen. Refuse a socket path another server answers on
//!    and load the TLS files, before the volume is opened, so a mistake
//!    takes no lock.
//! 2. Open the stack ([`build_stack`]: the volume, its lock, the cache),
//!    bind the socket (a Unix socket with mode 0600 by default; TCP when
//!    asked), say where in the log, and tell systemd it is ready.
//! 3. Serve every connection on one [`Server`] (all share the cache, so a
//!    flush on any connection covers the writes of all of them).
//! 4. On SIGTERM or SIGINT: stop accepting, let the requests in flight
//!    finish and be answered, then [`shutdown`]: flush until every block is
//!    stored, close the cache, release the lock last, exit 0. A second
//!    SIGINT abandons what is not stored (exit 5, the lock kept). SIGHUP is
//!    ignored.
//!
//! With `--stats-file FILE` the statistics are written to `FILE` (the
//! mount's stats text, then an `[nbd]` section) and `FILE.json` (the
//! mount's JSON, so `s3block stats` reads it), every `--stats-interval`
//! seconds and once more at exit.

mod control;
mod listen;
mod options;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::{Export, Server, ServerConfig, load_tls_config};
use s3block_cache::frontend::{
    Backoff, Received, Service, Signals, Stack, StatsSource, StatusFigures, build_stack, fail, log, report,
    runtime, second_sigint, shutdown, write_stats_files,
};
use s3block_core::exit::{self, LOCAL_IO, USAGE};
use s3block_store::with_hint;
use tokio::task::JoinSet;

use listen::{Conn, Listener, claim_socket_path};
use options::Listen;
pub(crate) use options::NbdOptions;

/// How long connections get, once drained, to write their last replies
/// and close before they are dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Runs the program with these arguments (program name first); returns
/// the process exit code.
pub(crate) fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let opts = match NbdOptions::parse_from_args(args) {
        Ok(opts) => opts,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(USAGE) } else { ExitCode::SUCCESS };
        }
    };
    if let Err(message) = log::init("s3block-nbd", &opts.log, true) {
        return fail(LOCAL_IO, message);
    }
    let listen = opts.listen_on(std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from).as_deref());
    if let Listen::Unix(path) = &listen
        && let Err(message) = claim_socket_path(path)
    {
        return fail(LOCAL_IO, message);
    }
    let mut config = ServerConfig::builder();
    if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
        match load_tls_config(cert, key) {
            Ok(tls) => config = config.tls(tls).tls_required(true),
            Err(e) => return fail(LOCAL_IO, format!("--tls-cert/--tls-key: {e}")),
        }
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(LOCAL_IO, format!("cannot start the I/O runtime: {e}")),
    };
    let stack = match runtime.block_on(build_stack(&opts.volume)) {
        Ok(stack) => stack,
        Err(e) => {
            return fail(
                exit::exit_code(&e),
                with_hint(&e, format!("cannot open the volume {}: {e}", opts.volume.store)),
            );
        }
    };
    let code = runtime.block_on(serve(&opts, &listen, config.build(), stack));
    ExitCode::from(code)
}

/// Serves until SIGTERM or SIGINT, then stores everything and releases the
/// lock; returns the exit code.
async fn serve(opts: &NbdOptions, listen: &Listen, config: ServerConfig, stack: Stack) -> u8 {
    let Stack { device, stats, release, description, grow } = stack;
    let bound = Listener::bind(listen).and_then(|l| Signals::new().map(|s| (l, s)));
    let (listener, mut signals) = match bound {
        Ok(both) => both,
        Err(message) => {
            if let Err(e) = release().await {
                tracing::warn!("could not release the mount lock: {e}");
            }
            let _ = fail(LOCAL_IO, message);
            return LOCAL_IO;
        }
    };
    let export = Export::new(device.clone())
        .name(&opts.name)
        .description(&description)
        .read_only(opts.volume.read_only);
    let server = Server::new(export, config);
    let stats: Arc<dyn StatsSource> = Arc::new(WithServer { volume: stats, server: server.clone() });
    let stats_task = opts.stats_file.clone().map(|path| {
        let (stats, every) = (stats.clone(), Duration::from_secs(opts.stats_interval));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                write_stats(stats.clone(), path.clone()).await;
            }
        })
    });
    // Beside a Unix socket, the control socket `s3block resize` grows the
    // volume through. It is in place before the log says the export is
    // served, so whoever waits for that line can resize at once. (It comes
    // after the NBD socket's bind, which refuses a path a live server
    // listens on, whose control socket this one would replace.)
    let control = match listen {
        Listen::Unix(path) => match control::ControlSocket::start(control::control_path(path), grow) {
            Ok(control) => {
                tracing::debug!("control socket at {}", control.path().display());
                Some(control)
            }
            Err(e) => {
                tracing::warn!("{e}; `s3block resize` cannot grow this volume while it is served");
                None
            }
        },
        _ => None,
    };
    tracing::info!(
        "serving {} as NBD export {:?} on {}: {description}",
        opts.volume.store,
        opts.name,
        listener.describe()
    );
    if let Listen::Unix(path) = listen {
        tracing::info!("attach it with: nbd-client -unix {} /dev/nbd0 -C 4", path.display());
    }
    // The socket accepts: tell systemd (Type=notify), with a status line.
    let service = Service::ready(
        &tokio::runtime::Handle::current(),
        format!("serving {} on {}", opts.volume.store, listener.describe()),
        stats.clone(),
        false,
    );

    let mut connections = JoinSet::new();
    let signal = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => {
                    let server = server.clone();
                    connections.spawn(async move {
                        tracing::info!(peer, "NBD client connected");
                        // Errors are logged by the server, naming the peer.
                        let _ = match conn {
                            Conn::Unix(stream) => server.serve(stream, &peer).await,
                            Conn::Tcp(stream) => server.serve(stream, &peer).await,
                        };
                    });
                }
                Err(e) => {
                    // Out of descriptors, say: the connections already
                    // open keep being served; try again shortly.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            received = signals.recv() => match received {
                Received::Term => break "SIGTERM",
                Received::Int(_) => break "SIGINT",
                Received::Hup => tracing::info!("SIGHUP ignored; stop the server with SIGTERM"),
            },
        }
    };
    service.stopping(format!("stopping ({signal}): answering the requests in flight"));
    listener.close();
    if let Some(control) = control {
        control.stop();
    }
    server.shutdown();
    tracing::info!(
        "{signal}: no new connections; finishing the {} request(s) in flight",
        server.stats().in_flight
    );
    let sigints = signals.keep_counting();
    // Only a client that stopped reading its replies holds requests longer
    // than --drain-timeout; their work is done (a request is answered after
    // it), so storing goes on without them, and the cache's close refuses
    // any write that would still come.
    let drain_wait = Duration::from_secs(opts.drain_timeout);
    let finished = async {
        if tokio::time::timeout(drain_wait, server.drained()).await.is_err() {
            tracing::warn!(
                "{} request(s) still unanswered after {}s (a client that does not read its replies?); \
                 storing without waiting for them",
                server.stats().in_flight,
                drain_wait.as_secs()
            );
            return;
        }
        let closed = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
            tracing::warn!(
                "connections still open {}s after their last reply; closing them",
                CLOSE_WAIT.as_secs()
            );
        }
    };
    tokio::select! {
        () = finished => {}
        () = second_sigint(sigints.clone()) => tracing::warn!("a second SIGINT: not waiting for the requests in flight"),
    }
    connections.abort_all();
    tracing::info!("storing every written block before exit");
    service.storing();
    let outcome = shutdown(device.as_ref(), Backoff::default(), second_sigint(sigints), release).await;
    if let Some(task) = stats_task {
        task.abort();
    }
    if let Some(path) = &opts.stats_file {
        write_stats(stats, path.clone()).await;
    }
    report(&outcome, "before storing began")
}

/// Writes the stats files, off the runtime's threads; a failure is logged.
async fn write_stats(stats: Arc<dyn StatsSource>, path: PathBuf) {
    let written = tokio::task::spawn_blocking(move || {
        write_stats_files(stats.as_ref(), &path).map_err(|e| format!("{}: {e}", path.display()))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(message)) => tracing::warn!("cannot write the stats file {message}"),
        Err(e) => tracing::warn!("cannot write the stats file: {e}"),
    }
}

/// The volume's statistics, and the NBD server's counters after them.
struct WithServer {
    volume: Arc<dyn StatsSource>,
    server: Server,
}

impl StatsSource for WithServer {
    fn render(&self) -> String {
        format!("{}\n[nbd]\n  {}\n", self.volume.render(), self.server.stats())
    }

    fn render_json(&self) -> String {
        // The mount's schema, so `s3block stats` reads it back.
        self.volume.render_json()
    }

    fn reset(&self) {
        self.volume.reset();
    }

    fn status(&self) -> StatusFigures {
        self.volume.status()
    }
}
