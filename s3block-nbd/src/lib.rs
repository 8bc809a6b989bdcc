//! The NBD server of s3block: a volume served as a network block device.
//!
//! [`Server`] speaks the NBD protocol (the NBD project's `doc/proto.md`)
//! over any byte stream — a Unix socket, TCP, TLS, or an in-memory pipe in
//! tests — in front of one [`Export`]: any [`BlockDevice`], in practice the
//! volume's cache. A Linux client (`nbd-client`, then `/dev/nbdX`) or a
//! user-space one (`nbdinfo`, `nbdcopy`, `qemu-img`) sees a disk whose
//! flush, FUA and discard mean what the filesystem on it asked.
//!
//! The `s3block-nbd` program is [`run`]; [`command`] is its command line,
//! from which its man page and shell completions are generated.
//!
//! # Protocol
//!
//! - Handshake: fixed newstyle only (with `NBD_FLAG_C_NO_ZEROES`); options
//!   `EXPORT_NAME`, `ABORT`, `LIST`, `INFO`, `GO`, `STRUCTURED_REPLY`,
//!   `LIST_META_CONTEXT` and `SET_META_CONTEXT` (`base:allocation`), and
//!   `STARTTLS` when a TLS configuration is given; any other option is
//!   answered `NBD_REP_ERR_UNSUP`. `INFO` and `GO` always send the block
//!   size constraints: minimum [`MIN_BLOCK_SIZE`] (512 bytes, a disk
//!   sector: what the kernel and qemu align to anyway; an unaligned request
//!   from a client that ignores it is still served, through the device's
//!   partial reads and writes), preferred the volume's block size, maximum
//!   [`MAX_REQUEST_LEN`] (32 MiB).
//! - Transmission flags: `SEND_FLUSH`, `SEND_FUA`, `SEND_TRIM`,
//!   `SEND_WRITE_ZEROES`, `SEND_FAST_ZERO`, `SEND_CACHE`, `CAN_MULTI_CONN`,
//!   `SEND_DF` with structured replies, and `READ_ONLY` for a read-only
//!   export (whose writes, trims and write-zeroes fail with `EPERM`).
//!
//! # What each command does to the device
//!
//! | command | device calls |
//! |---|---|
//! | `READ` | [`block_status`](s3block_core::BlockDevice::block_status) of the blocks, then [`read_at`](s3block_core::BlockDeviceExt::read_at) of the data runs; with structured replies, holes go out as `OFFSET_HOLE` chunks and cost neither a fetch nor bandwidth |
//! | `WRITE` | `write_at`: whole blocks replace the cached block, partial ones are merged in the cache without waiting for a fetch; `FUA` adds a flush |
//! | `FLUSH` | `flush`: returns once every block dirty at its call is stored (durable under the volume's durability setting) |
//! | `TRIM`, `WRITE_ZEROES` | `zero_range`: whole blocks are discarded (deleted below), the partial blocks at either end are overwritten with zeros, as the FUSE frontend's punch-hole does. `NO_HOLE` cannot be honoured further: a block of zeros is never stored; `FAST_ZERO` always succeeds, as zeroing never moves data |
//! | `CACHE` | `read_block` of each block of the range (into the cache), bytes dropped |
//! | `BLOCK_STATUS` | `block_status`: holes (`NBD_STATE_HOLE | NBD_STATE_ZERO`) are the blocks the cache knows to be zero — absent from the listing at open, never written since, discarded, or written as zeros; everything else is data |
//!
//! # One connection
//!
//! A connection is three kinds of task. The task running
//! [`Server::serve`] reads requests, one header at a time, checks each
//! (magic, command, flags, range, length) and spawns a task per request;
//! request tasks run concurrently, so pipelined requests are served in
//! parallel and answered out of order, each reply tagged with its request's
//! handle. One writer task owns the socket's write half: replies reach it
//! through a bounded queue and are written whole, one after the other, and
//! flushed when the queue is empty.
//!
//! # Memory bound
//!
//! A request holds, until its reply is written: one of the connection's
//! request slots ([`ServerConfig::max_requests_per_connection`]), and for a
//! read, write or cache its length in bytes, from the connection's budget
//! ([`ServerConfig::max_connection_bytes`]) and then from the server's
//! ([`ServerConfig::max_in_flight_bytes`], 64 MiB by default). A write's
//! payload is read from the socket only once its bytes are reserved, and a
//! request longer than 32 MiB is refused (`EINVAL`; a write's payload is
//! then read and thrown away a buffer at a time). When a slot or the bytes
//! are not available the reader stops reading, so TCP pushes back on the
//! client: a client that sends requests and never reads its replies stalls
//! its own connection, holding at most its own budget, while the others
//! keep working. (The server's budget is shared: as many stalled clients as
//! it holds connection budgets — two with the defaults — would hold all of
//! it, and the other connections would wait for it.)
//!
//! # Errors
//!
//! A request the protocol says to refuse gets its error reply (`EINVAL` for
//! an unknown command, a flag not valid for it, a read past the end or over
//! the maximum length; `ENOSPC` for a write past the end; `EPERM` for a
//! write to a read-only export) and a `warn!` naming the client. A broken
//! stream — a bad request magic, a hang-up in the middle of a write's
//! payload, a bad option magic or unknown client flags in the handshake —
//! closes that connection only, with a `warn!` naming what was wrong and the
//! peer. Requests already read are finished and answered first.
//!
//! # Flush and multiple connections
//!
//! All connections share one device, hence one cache: a write acknowledged
//! on any connection is in the cache, and `FLUSH` on any connection flushes
//! the whole device, covering every write completed on every connection.
//! That is the promise `CAN_MULTI_CONN` makes, and why clients may spread
//! their requests over several connections (`nbd-client -C 4`,
//! `nbdcopy --connections`).
//!
//! # Shutdown
//!
//! [`Server::shutdown`] makes every connection stop reading requests,
//! finish those in flight and write their replies, then close; new options
//! are answered `NBD_REP_ERR_SHUTDOWN`. [`Server::drained`] resolves once
//! no request is in flight; the caller then flushes and closes the volume.
//!
//! [`BlockDevice`]: s3block_core::BlockDevice

mod cli;
pub mod proto;
mod server;
mod tls;

pub use server::{Export, NbdStats, Server, ServerConfig, ServerConfigBuilder};
pub use tls::load_tls_config;

/// Runs the `s3block-nbd` program with these arguments (program name
/// first) and returns its exit code; `main` only calls this.
pub fn run<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    cli::run(args)
}

/// The command line of the `s3block-nbd` program, with its full help: what
/// its man page and shell completions are generated from.
pub fn command() -> clap::Command {
    cli::NbdOptions::command_with_help()
}

/// The longest read or write accepted, in bytes (32 MiB): the maximum block
/// size advertised, and the largest payload a request can make the server
/// hold.
pub const MAX_REQUEST_LEN: usize = 32 << 20;

/// The minimum block size advertised to clients: a 512-byte sector.
pub const MIN_BLOCK_SIZE: u32 = 512;

/// Why a connection ended badly, or a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// Reading from or writing to the client failed.
    #[error("NBD client {peer}: {source}")]
    Io {
        /// The client.
        peer: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The client broke the protocol; the connection was closed.
    #[error("NBD client {peer}: {what}")]
    Protocol {
        /// The client.
        peer: String,
        /// What was wrong.
        what: String,
    },
    /// The TLS handshake after `NBD_OPT_STARTTLS` failed.
    #[error("NBD client {peer}: TLS handshake failed: {source}")]
    Tls {
        /// The client.
        peer: String,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file that cannot make a TLS configuration.
    #[error("{path}: {reason}")]
    TlsConfig {
        /// The file at fault.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}
