//! The server: the export, its configuration, and serving one connection
//! from the greeting to its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt, stream};
use s3block_core::{Allocation, BlockDevice, BlockDeviceExt, Error, segments};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::proto::{self, *};
use crate::{MAX_REQUEST_LEN, MIN_BLOCK_SIZE, NbdError};

/// What a client sees: the device, under a name, read-only or not.
#[derive(Debug, Clone)]
pub struct Export {
    device: Arc<dyn BlockDevice>,
    name: String,
    description: String,
    read_only: bool,
}

impl Export {
    /// An export of `device`, named `s3block`, writable, without description.
    pub fn new(device: Arc<dyn BlockDevice>) -> Self {
        Export { device, name: "s3block".into(), description: String::new(), read_only: false }
    }

    /// Sets the export's name. Clients asking for this name or for the
    /// default export (the empty name) get it.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the description shown to users (`NBD_INFO_DESCRIPTION`, and
    /// beside the name in a list).
    pub fn description(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }

    /// Makes the export read-only: the `READ_ONLY` flag is set and writes,
    /// trims and write-zeroes fail with `EPERM`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The device served.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    /// The export's name.
    pub fn export_name(&self) -> &str {
        &self.name
    }

    /// The export's description.
    pub fn export_description(&self) -> &str {
        &self.description
    }

    /// True for a read-only export.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }
}

/// Limits and TLS of a [`Server`]; build with [`ServerConfig::builder`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    max_in_flight_bytes: u64,
    max_connection_bytes: u64,
    max_requests_per_connection: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    tls_required: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_in_flight_bytes: 64 << 20,
            max_connection_bytes: MAX_REQUEST_LEN as u64,
            max_requests_per_connection: 128,
            tls: None,
            tls_required: false,
        }
    }
}

impl ServerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder { config: ServerConfig::default() }
    }

    /// Bytes of request and reply data held at once, over all connections
    /// (default 64 MiB; never less than one maximal request, 32 MiB).
    pub fn max_in_flight_bytes(&self) -> u64 {
        self.max_in_flight_bytes.max(MAX_REQUEST_LEN as u64)
    }

    /// Bytes of request and reply data one connection may hold at once
    /// (default 32 MiB, at least one maximal request, at most the global
    /// bound), so that one stalled client leaves room for the others.
    pub fn max_connection_bytes(&self) -> u64 {
        self.max_connection_bytes.max(MAX_REQUEST_LEN as u64).min(self.max_in_flight_bytes())
    }

    /// Requests one connection may have in flight, replies not yet written
    /// included (default 128).
    pub fn max_requests_per_connection(&self) -> usize {
        self.max_requests_per_connection.max(1)
    }

    /// The TLS configuration offered through `NBD_OPT_STARTTLS`, if any.
    pub fn tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// True when clients must start TLS before any other option.
    pub fn tls_required(&self) -> bool {
        self.tls_required && self.tls.is_some()
    }
}

/// Builds a [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct ServerConfigBuilder {
    config: ServerConfig,
}

impl ServerConfigBuilder {
    /// See [`ServerConfig::max_in_flight_bytes`].
    pub fn max_in_flight_bytes(mut self, bytes: u64) -> Self {
        self.config.max_in_flight_bytes = bytes;
        self
    }

    /// See [`ServerConfig::max_connection_bytes`].
    pub fn max_connection_bytes(mut self, bytes: u64) -> Self {
        self.config.max_connection_bytes = bytes;
        self
    }

    /// See [`ServerConfig::max_requests_per_connection`].
    pub fn max_requests_per_connection(mut self, n: usize) -> Self {
        self.config.max_requests_per_connection = n;
        self
    }

    /// Offers TLS with this configuration (see [`load_tls_config`](crate::load_tls_config)).
    pub fn tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Requires TLS: options other than `STARTTLS` and `ABORT` are answered
    /// `NBD_REP_ERR_TLS_REQD` until TLS is started. Needs [`tls`](Self::tls).
    pub fn tls_required(mut self, required: bool) -> Self {
        self.config.tls_required = required;
        self
    }

    /// The configuration.
    pub fn build(self) -> ServerConfig {
        self.config
    }
}

/// Counters of a [`Server`], from [`Server::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NbdStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections being served now.
    pub active_connections: u64,
    /// Connections that reached the transmission phase.
    pub sessions: u64,
    /// `NBD_CMD_READ` requests.
    pub reads: u64,
    /// `NBD_CMD_WRITE` requests.
    pub writes: u64,
    /// `NBD_CMD_FLUSH` requests.
    pub flushes: u64,
    /// `NBD_CMD_TRIM` requests.
    pub trims: u64,
    /// `NBD_CMD_WRITE_ZEROES` requests.
    pub write_zeroes: u64,
    /// `NBD_CMD_CACHE` requests.
    pub caches: u64,
    /// `NBD_CMD_BLOCK_STATUS` requests.
    pub block_status: u64,
    /// `NBD_CMD_DISC` requests.
    pub disconnects: u64,
    /// Requests with an unknown command.
    pub unknown_commands: u64,
    /// Bytes read for clients.
    pub bytes_read: u64,
    /// Bytes written by clients.
    pub bytes_written: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Bytes of request and reply data held now.
    pub in_flight_bytes: u64,
}

impl std::fmt::Display for NbdStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connections {} ({} active), requests: read {} write {} flush {} trim {} write-zeroes {} cache {} \
             block-status {}; {} bytes read, {} written; {} errors, {} protocol errors",
            self.connections,
            self.active_connections,
            self.reads,
            self.writes,
            self.flushes,
            self.trims,
            self.write_zeroes,
            self.caches,
            self.block_status,
            self.bytes_read,
            self.bytes_written,
            self.errors,
            self.protocol_errors
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    active_connections: AtomicU64,
    sessions: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    trims: AtomicU64,
    write_zeroes: AtomicU64,
    caches: AtomicU64,
    block_status: AtomicU64,
    disconnects: AtomicU64,
    unknown_commands: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: AtomicU64,
    protocol_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every connection of a server shares.
#[derive(Debug)]
struct Inner {
    export: Export,
    config: ServerConfig,
    /// Permits are bytes of request and reply data held.
    budget: Arc<Semaphore>,
    budget_total: usize,
    shutdown: watch::Sender<bool>,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    counters: Counters,
}

/// An NBD server of one export. Cheap to clone: clones share the export,
/// the in-flight byte budget, the counters and the shutdown.
#[derive(Debug, Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl Server {
    /// A server of `export`.
    pub fn new(export: Export, config: ServerConfig) -> Self {
        let budget_total = config.max_in_flight_bytes().min(Semaphore::MAX_PERMITS as u64) as usize;
        Server {
            inner: Arc::new(Inner {
                export,
                config,
                budget: Arc::new(Semaphore::new(budget_total)),
                budget_total,
                shutdown: watch::Sender::new(false),
                stopping: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                counters: Counters::default(),
            }),
        }
    }

    /// The export served.
    pub fn export(&self) -> &Export {
        &self.inner.export
    }

    /// Serves one connection, from the greeting to its end: the client's
    /// `NBD_CMD_DISC` or `NBD_OPT_ABORT`, its hang-up, or a protocol
    /// violation (logged, naming `peer`, and returned). Requests in flight
    /// when the connection ends are finished before it returns.
    pub async fn serve<S>(&self, stream: S, peer: &str) -> Result<(), NbdError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let c = &self.inner.counters;
        bump(&c.connections);
        c.active_connections.fetch_add(1, Ordering::Relaxed);
        let result = self.serve_inner(Box::new(stream), peer).await;
        c.active_connections.fetch_sub(1, Ordering::Relaxed);
        match &result {
            Ok(()) => debug!(peer, "NBD connection ended"),
            Err(e) => {
                if matches!(e, NbdError::Protocol { .. }) {
                    bump(&c.protocol_errors);
                }
                warn!(peer, "NBD connection closed: {e}");
            }
        }
        result
    }

    /// Stops the server: options are answered `NBD_REP_ERR_SHUTDOWN`, each
    /// connection stops reading requests, finishes those in flight, writes
    /// their replies and closes. Call [`drained`](Self::drained) to wait.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves when no request is in flight on any connection.
    pub async fn drained(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NbdStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NbdStats {
            connections: get(&c.connections),
            active_connections: get(&c.active_connections),
            sessions: get(&c.sessions),
            reads: get(&c.reads),
            writes: get(&c.writes),
            flushes: get(&c.flushes),
            trims: get(&c.trims),
            write_zeroes: get(&c.write_zeroes),
            caches: get(&c.caches),
            block_status: get(&c.block_status),
            disconnects: get(&c.disconnects),
            unknown_commands: get(&c.unknown_commands),
            bytes_read: get(&c.bytes_read),
            bytes_written: get(&c.bytes_written),
            errors: get(&c.errors),
            protocol_errors: get(&c.protocol_errors),
            in_flight: self.inner.in_flight.load(Ordering::Relaxed) as u64,
            in_flight_bytes: (self.inner.budget_total - self.inner.budget.available_permits()) as u64,
        }
    }

    async fn serve_inner(&self, stream: Box<dyn Io>, peer: &str) -> Result<(), NbdError> {
        let io = |source| NbdError::Io { peer: peer.to_owned(), source };
        let Some(session) = self.handshake(stream, peer).await.map_err(|e| match e {
            HandshakeError::Io(source) => io(source),
            HandshakeError::Nbd(e) => e,
        })?
        else {
            return Ok(());
        };
        bump(&self.inner.counters.sessions);
        self.transmission(session, peer).await
    }
}

/// A byte stream the server can run over: the client's socket, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the handshake agreed on.
struct Session {
    stream: Box<dyn Io>,
    structured: bool,
    /// The id given to `base:allocation`, when selected.
    meta_context: Option<u32>,
    flags: u16,
}

enum HandshakeError {
    Io(std::io::Error),
    Nbd(NbdError),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// Longest option data accepted: an export name and a query are at most
/// 4096 bytes each by the protocol; more is a client to hang up on.
const MAX_OPTION_LEN: u32 = 16 << 10;

/// The id of `base:allocation` in `NBD_OPT_SET_META_CONTEXT` replies.
const ALLOCATION_CONTEXT_ID: u32 = 1;

/// Most descriptors in one block status reply, and most blocks looked up
/// for one; a client asks again for the rest.
const MAX_EXTENTS: u64 = 1 << 16;

impl Server {
    fn protocol(peer: &str, what: impl Into<String>) -> HandshakeError {
        HandshakeError::Nbd(NbdError::Protocol { peer: peer.to_owned(), what: what.into() })
    }

    /// The fixed newstyle handshake; `None` when the client aborted.
    async fn handshake(&self, mut s: Box<dyn Io>, peer: &str) -> Result<Option<Session>, HandshakeError> {
        let inner = &self.inner;
        s.write_all(&proto::greeting()).await?;
        s.flush().await?;
        let client_flags = s.read_u32().await?;
        if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(Self::protocol(
                peer,
                format!("unknown client flags {client_flags:#x} in the handshake"),
            ));
        }
        let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
        let mut tls_active = false;
        let mut structured = false;
        let mut meta_context = None;
        loop {
            let magic = s.read_u64().await?;
            if magic != IHAVEOPT {
                return Err(Self::protocol(
                    peer,
                    format!("bad option magic {magic:#018x} (expected IHAVEOPT)"),
                ));
            }
            let option = s.read_u32().await?;
            let len = s.read_u32().await?;
            if len > MAX_OPTION_LEN {
                return Err(Self::protocol(
                    peer,
                    format!(
                        "option {} ({option}) carries {len} bytes, more than {MAX_OPTION_LEN}",
                        option_name(option)
                    ),
                ));
            }
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data).await?;
            debug!(peer, "NBD option {} ({option}), {len} bytes", option_name(option));
            let tls_missing = inner.config.tls_required() && !tls_active;
            let stopping = inner.stopping.load(Ordering::SeqCst);
            let reply = |kind: u32, msg: &str| proto::option_error(option, kind, msg);
            match option {
                OPT_ABORT => {
                    s.write_all(&proto::option_reply(option, REP_ACK, &[])).await?;
                    s.flush().await?;
                    let _ = s.shutdown().await;
                    return Ok(None);
                }
                OPT_EXPORT_NAME => {
                    let name = String::from_utf8_lossy(&data);
                    if tls_missing {
                        return Err(Self::protocol(
                            peer,
                            "NBD_OPT_EXPORT_NAME before TLS was started; TLS is required",
                        ));
                    }
                    if stopping {
                        return Err(Self::protocol(peer, "NBD_OPT_EXPORT_NAME while the server shuts down"));
                    }
                    if !inner.export.matches(&name) {
                        return Err(Self::protocol(
                            peer,
                            format!("NBD_OPT_EXPORT_NAME asks for unknown export {name:?}"),
                        ));
                    }
                    let flags = self.transmission_flags(structured);
                    let mut b = BytesMut::with_capacity(134);
                    b.extend_from_slice(&inner.export.device.geometry().size().to_be_bytes());
                    b.extend_from_slice(&flags.to_be_bytes());
                    if !no_zeroes {
                        b.extend_from_slice(&[0u8; 124]);
                    }
                    s.write_all(&b).await?;
                    s.flush().await?;
                    return Ok(Some(Session { stream: s, structured, meta_context, flags }));
                }
                _ if stopping => {
                    s.write_all(&reply(REP_ERR_SHUTDOWN, "the server is shutting down")).await?;
                }
                OPT_STARTTLS => {
                    let msg = match (&inner.config.tls, tls_active) {
                        (None, _) => Some((REP_ERR_UNSUP, "this server does not offer TLS")),
                        (_, true) => Some((REP_ERR_INVALID, "TLS is already started")),
                        _ if !data.is_empty() => Some((REP_ERR_INVALID, "NBD_OPT_STARTTLS carries no data")),
                        _ => None,
                    };
                    if let Some((kind, msg)) = msg {
                        s.write_all(&reply(kind, msg)).await?;
                    } else if let Some(tls) = &inner.config.tls {
                        s.write_all(&proto::option_reply(option, REP_ACK, &[])).await?;
                        s.flush().await?;
                        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                        let tls_stream = acceptor.accept(s).await.map_err(|source| {
                            HandshakeError::Nbd(NbdError::Tls { peer: peer.to_owned(), source })
                        })?;
                        s = Box::new(tls_stream);
                        tls_active = true;
                        // Nothing negotiated before TLS carries over.
                        structured = false;
                        meta_context = None;
                        debug!(peer, "TLS started");
                    }
                }
                _ if tls_missing => {
                    s.write_all(&reply(REP_ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS first"))
                        .await?;
                }
                OPT_LIST => {
                    if data.is_empty() {
                        let e = &inner.export;
                        let mut d = Vec::new();
                        d.extend_from_slice(&(e.name.len() as u32).to_be_bytes());
                        d.extend_from_slice(e.name.as_bytes());
                        d.extend_from_slice(proto::truncate(&e.description).as_bytes());
                        s.write_all(&proto::option_reply(option, REP_SERVER, &d)).await?;
                        s.write_all(&proto::option_reply(option, REP_ACK, &[])).await?;
                    } else {
                        s.write_all(&reply(REP_ERR_INVALID, "NBD_OPT_LIST carries no data")).await?;
                    }
                }
                OPT_STRUCTURED_REPLY => {
                    if data.is_empty() {
                        structured = true;
                        s.write_all(&proto::option_reply(option, REP_ACK, &[])).await?;
                    } else {
                        s.write_all(&reply(REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY carries no data"))
                            .await?;
                    }
                }
                OPT_INFO | OPT_GO => {
                    let go = option == OPT_GO;
                    match self.info_replies(option, &data, structured) {
                        Ok(replies) => {
                            for r in replies {
                                s.write_all(&r).await?;
                            }
                            s.write_all(&proto::option_reply(option, REP_ACK, &[])).await?;
                            if go {
                                s.flush().await?;
                                let flags = self.transmission_flags(structured);
                                return Ok(Some(Session { stream: s, structured, meta_context, flags }));
                            }
                        }
                        Err((kind, msg)) => s.write_all(&reply(kind, &msg)).await?,
                    }
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    let set = option == OPT_SET_META_CONTEXT;
                    if set {
                        // Replaced even when the option fails.
                        meta_context = None;
                    }
                    match self.meta_contexts(&data, structured, set) {
                        Ok(found) => {
                            if found {
                                let id = if set { ALLOCATION_CONTEXT_ID } else { 0 };
                                let mut d = id.to_be_bytes().to_vec();
                                d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                                s.write_all(&proto::option_reply(option, REP_META_CONTEXT, &d)).await?;
                                if set {
                                    meta_context = Some(ALLOCATION_CONTEXT_ID);
                                }
                            }
                            s.write_all(&proto::option_reply(option, REP_ACK, &[])).await?;
                        }
                        Err((kind, msg)) => s.write_all(&reply(kind, &msg)).await?,
                    }
                }
                _ => {
                    let msg = format!("option {option} is not supported");
                    s.write_all(&reply(REP_ERR_UNSUP, &msg)).await?;
                }
            }
            s.flush().await?;
        }
    }

    fn transmission_flags(&self, structured: bool) -> u16 {
        let mut flags = FLAG_HAS_FLAGS
            | FLAG_SEND_FLUSH
            | FLAG_SEND_FUA
            | FLAG_SEND_TRIM
            | FLAG_SEND_WRITE_ZEROES
            | FLAG_SEND_FAST_ZERO
            | FLAG_SEND_CACHE
            | FLAG_CAN_MULTI_CONN;
        if structured {
            flags |= FLAG_SEND_DF;
        }
        if self.inner.export.read_only {
            flags |= FLAG_READ_ONLY;
        }
        flags
    }

    /// The `NBD_REP_INFO` replies to `NBD_OPT_INFO` or `NBD_OPT_GO`, or the
    /// error to answer.
    fn info_replies(&self, option: u32, data: &[u8], structured: bool) -> Result<Vec<Bytes>, (u32, String)> {
        let invalid = |what: &str| (REP_ERR_INVALID, format!("malformed {}: {what}", option_name(option)));
        let mut d = OptionData::new(data);
        let name = d.string().ok_or_else(|| invalid("the export name does not fit or is not UTF-8"))?;
        let count = d.u16().ok_or_else(|| invalid("no count of information requests"))?;
        let mut wanted = Vec::with_capacity(count as usize);
        for _ in 0..count {
            wanted.push(d.u16().ok_or_else(|| invalid("fewer information requests than counted"))?);
        }
        if !d.is_empty() {
            return Err(invalid("bytes left after the information requests"));
        }
        let export = &self.inner.export;
        if !export.matches(name) {
            return Err((
                REP_ERR_UNKNOWN,
                format!("no export named {name:?}; this server has {:?}", export.name),
            ));
        }
        let geometry = export.device.geometry();
        let info = |kind: u16, payload: &[u8]| {
            let mut p = kind.to_be_bytes().to_vec();
            p.extend_from_slice(payload);
            proto::option_reply(option, REP_INFO, &p)
        };
        let mut export_info = geometry.size().to_be_bytes().to_vec();
        export_info.extend_from_slice(&self.transmission_flags(structured).to_be_bytes());
        let mut replies = vec![info(INFO_EXPORT, &export_info)];
        if wanted.contains(&INFO_NAME) {
            replies.push(info(INFO_NAME, export.name.as_bytes()));
        }
        if wanted.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
            replies.push(info(INFO_DESCRIPTION, proto::truncate(&export.description).as_bytes()));
        }
        // Always sent: the maximum is below the protocol's default.
        let mut sizes = Vec::with_capacity(12);
        sizes.extend_from_slice(&MIN_BLOCK_SIZE.to_be_bytes());
        sizes.extend_from_slice(&preferred_block_size(geometry.block_size()).to_be_bytes());
        sizes.extend_from_slice(&(MAX_REQUEST_LEN as u32).to_be_bytes());
        replies.push(info(INFO_BLOCK_SIZE, &sizes));
        Ok(replies)
    }

    /// Whether `base:allocation` answers a `LIST_META_CONTEXT` or
    /// `SET_META_CONTEXT` option, or the error to answer.
    fn meta_contexts(&self, data: &[u8], structured: bool, set: bool) -> Result<bool, (u32, String)> {
        let which = if set { "NBD_OPT_SET_META_CONTEXT" } else { "NBD_OPT_LIST_META_CONTEXT" };
        if !structured {
            return Err((REP_ERR_INVALID, format!("{which} needs structured replies first")));
        }
        let invalid = |what: &str| (REP_ERR_INVALID, format!("malformed {which}: {what}"));
        let mut d = OptionData::new(data);
        let name = d.string().ok_or_else(|| invalid("the export name does not fit or is not UTF-8"))?;
        let count = d.u32().ok_or_else(|| invalid("no count of queries"))?;
        let mut found = false;
        for _ in 0..count {
            let query = d.string().ok_or_else(|| invalid("a query does not fit or is not UTF-8"))?;
            found |= query == BASE_ALLOCATION || (!set && query == "base:");
        }
        if !d.is_empty() {
            return Err(invalid("bytes left after the queries"));
        }
        if !self.inner.export.matches(name) {
            return Err((REP_ERR_UNKNOWN, format!("no export named {name:?}")));
        }
        // No query lists every context; it selects none.
        Ok(found || (count == 0 && !set))
    }
}

/// The preferred block size advertised: the volume's block size, within
/// what the protocol allows (a power of two, 512 bytes to 32 MiB).
fn preferred_block_size(block_size: u32) -> u32 {
    let p = if block_size.is_power_of_two() { block_size } else { block_size.next_power_of_two() };
    p.clamp(512, MAX_REQUEST_LEN as u32)
}

/// One reply, ready to write, with what it holds released once written.
struct Reply {
    parts: Vec<Bytes>,
    _hold: Hold,
}

/// What a request holds until its reply is written: its slot on the
/// connection, its bytes of the budgets, and its place in the in-flight count.
struct Hold {
    _slot: OwnedSemaphorePermit,
    _bytes: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    _in_flight: InFlight,
}

struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(inner))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What the request tasks of one connection share.
struct Conn {
    inner: Arc<Inner>,
    device: Arc<dyn BlockDevice>,
    peer: String,
    structured: bool,
    meta_context: Option<u32>,
    size: u64,
}

/// Why a request is refused before it reaches the device.
struct Refusal {
    error: u32,
    what: String,
}

impl Server {
    async fn transmission(&self, session: Session, peer: &str) -> Result<(), NbdError> {
        let inner = &self.inner;
        let device = Arc::clone(&inner.export.device);
        let conn = Arc::new(Conn {
            inner: Arc::clone(inner),
            size: device.geometry().size(),
            device,
            peer: peer.to_owned(),
            structured: session.structured,
            meta_context: session.meta_context,
        });
        debug!(peer, structured = session.structured, flags = session.flags, "NBD transmission phase");
        let (read_half, write_half) = tokio::io::split(session.stream);
        let mut reader = BufReader::with_capacity(64 << 10, read_half);
        let slots_max = inner.config.max_requests_per_connection();
        let slots = Arc::new(Semaphore::new(slots_max));
        let conn_bytes = Arc::new(Semaphore::new(inner.config.max_connection_bytes() as usize));
        let (tx, rx) = mpsc::channel::<Reply>(slots_max);
        let writer = tokio::spawn(write_replies(BufWriter::with_capacity(64 << 10, write_half), rx));
        let mut tasks = JoinSet::new();
        let mut shutdown = inner.shutdown.subscribe();
        let io_error = |source| NbdError::Io { peer: peer.to_owned(), source };
        let protocol = |what: String| NbdError::Protocol { peer: peer.to_owned(), what };
        let mut result = Ok(());
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(peer, "an NBD request task panicked; its request got no reply");
                }
            }
            let mut header = [0u8; REQUEST_LEN];
            let read = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => {
                    debug!(peer, "server shutting down: no more requests read");
                    break;
                }
                _ = tx.closed() => break,
                r = reader.read_exact(&mut header) => r,
            };
            if let Err(e) = read {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    result = Err(io_error(e));
                } else {
                    debug!(peer, "client hung up without NBD_CMD_DISC");
                }
                break;
            }
            let req = match Request::parse(&header) {
                Ok(r) => r,
                Err(magic) => {
                    result = Err(protocol(format!("bad request magic {magic:#010x} (expected 0x25609513)")));
                    break;
                }
            };
            self.count(&req);
            if req.kind == CMD_DISC {
                debug!(peer, "NBD_CMD_DISC");
                break;
            }
            // A slot first: a client sending faster than replies are read
            // stops being read.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
            let in_flight = InFlight::new(inner);
            let refusal = self.check(&conn, &req);
            let payload_len = if req.kind == CMD_WRITE { req.len as usize } else { 0 };
            if let Some(refusal) = refusal {
                warn!(peer, "NBD_CMD_{} refused: {}", command_name(req.kind), refusal.what);
                if payload_len > 0 {
                    // The payload follows anyway: skip it, a buffer at a time.
                    let skipped =
                        tokio::io::copy(&mut (&mut reader).take(payload_len as u64), &mut tokio::io::sink())
                            .await
                            .map_err(io_error);
                    match skipped {
                        Ok(n) if n == payload_len as u64 => {}
                        Ok(_) => {
                            result = Err(protocol("hung up in the middle of a write's payload".into()));
                            break;
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                bump(&inner.counters.errors);
                let parts = conn.error_reply(&req, refusal.error, &refusal.what);
                let hold = Hold { _slot: slot, _bytes: None, _in_flight: in_flight };
                if tx.send(Reply { parts, _hold: hold }).await.is_err() {
                    break;
                }
                continue;
            }
            // Bytes this request holds: a read's data or a write's payload,
            // reserved before the payload is read.
            let reserve = match req.kind {
                CMD_READ | CMD_WRITE | CMD_CACHE => req.len,
                _ => 0,
            };
            let bytes = if reserve > 0 {
                let Ok(mine) = Arc::clone(&conn_bytes).acquire_many_owned(reserve).await else { break };
                let Ok(all) = Arc::clone(&inner.budget).acquire_many_owned(reserve).await else { break };
                Some((mine, all))
            } else {
                None
            };
            let payload = if payload_len > 0 {
                let mut buf = BytesMut::zeroed(payload_len);
                if let Err(e) = reader.read_exact(&mut buf).await {
                    result = Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        protocol(format!(
                            "hung up in the middle of a write's payload ({payload_len} bytes at offset {})",
                            req.offset
                        ))
                    } else {
                        io_error(e)
                    });
                    break;
                }
                buf.freeze()
            } else {
                Bytes::new()
            };
            let hold = Hold { _slot: slot, _bytes: bytes, _in_flight: in_flight };
            let conn = Arc::clone(&conn);
            let tx = tx.clone();
            tasks.spawn(async move {
                let parts = conn.handle(req, payload).await;
                // The writer is gone when the connection broke: nobody to answer.
                let _ = tx.send(Reply { parts, _hold: hold }).await;
            });
        }
        // Every request read is finished and answered before the end.
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(peer, "an NBD request task panicked; its request got no reply");
            }
        }
        drop(tx);
        match writer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if result.is_ok() {
                    result = Err(io_error(e));
                }
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(io_error(std::io::Error::other(format!("the reply writer failed: {e}"))));
                }
            }
        }
        result
    }

    fn count(&self, req: &Request) {
        let c = &self.inner.counters;
        bump(match req.kind {
            CMD_READ => &c.reads,
            CMD_WRITE => &c.writes,
            CMD_FLUSH => &c.flushes,
            CMD_TRIM => &c.trims,
            CMD_WRITE_ZEROES => &c.write_zeroes,
            CMD_CACHE => &c.caches,
            CMD_BLOCK_STATUS => &c.block_status,
            CMD_DISC => &c.disconnects,
            _ => &c.unknown_commands,
        });
    }

    /// Checks a request against the protocol and the export.
    fn check(&self, conn: &Conn, req: &Request) -> Option<Refusal> {
        let refuse = |error, what: String| Some(Refusal { error, what });
        let name = command_name(req.kind);
        let allowed = CMD_FLAG_FUA
            | match req.kind {
                CMD_READ if conn.structured => CMD_FLAG_DF,
                CMD_WRITE_ZEROES => CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
                CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
                _ => 0,
            };
        if !matches!(
            req.kind,
            CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_CACHE | CMD_WRITE_ZEROES | CMD_BLOCK_STATUS
        ) {
            return refuse(EINVAL, format!("unknown command {}", req.kind));
        }
        if req.flags & !allowed != 0 {
            return refuse(
                EINVAL,
                format!("flags {:#x} not valid for {name} (allowed: {allowed:#x})", req.flags & !allowed),
            );
        }
        if self.inner.stopping.load(Ordering::SeqCst) {
            return refuse(ESHUTDOWN, "the server is shutting down".into());
        }
        if matches!(req.kind, CMD_READ | CMD_WRITE | CMD_CACHE) && req.len as usize > MAX_REQUEST_LEN {
            return refuse(
                EINVAL,
                format!("{name} of {} bytes, more than the maximum {MAX_REQUEST_LEN}", req.len),
            );
        }
        let past_end = req.offset.checked_add(u64::from(req.len)).is_none_or(|end| end > conn.size);
        if past_end && req.kind != CMD_FLUSH {
            let error = if matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES) { ENOSPC } else { EINVAL };
            return refuse(
                error,
                format!(
                    "{name} of {} bytes at offset {} is past the end ({} bytes)",
                    req.len, req.offset, conn.size
                ),
            );
        }
        if self.inner.export.read_only && matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES) {
            return refuse(EPERM, format!("{name} on a read-only export"));
        }
        if req.kind == CMD_BLOCK_STATUS && conn.meta_context.is_none() {
            return refuse(EINVAL, "BLOCK_STATUS without a metadata context selected".into());
        }
        None
    }
}

/// Writes replies as they come, flushing when none is waiting; ends when
/// every sender is gone, closing the stream, or at the first write error.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut w: BufWriter<W>,
    mut rx: mpsc::Receiver<Reply>,
) -> std::io::Result<()> {
    while let Some(reply) = rx.recv().await {
        for part in &reply.parts {
            w.write_all(part).await?;
        }
        drop(reply);
        while let Ok(reply) = rx.try_recv() {
            for part in &reply.parts {
                w.write_all(part).await?;
            }
        }
        w.flush().await?;
    }
    w.shutdown().await
}

/// The NBD error number of a device error.
fn errno(e: &Error) -> u32 {
    match e {
        Error::ReadOnly => EPERM,
        Error::RangeOutOfBounds { .. } | Error::BlockOutOfRange { .. } | Error::WrongLength { .. } => EINVAL,
        _ => EIO,
    }
}

impl Conn {
    /// The reply telling the client its request failed.
    fn error_reply(&self, req: &Request, error: u32, message: &str) -> Vec<Bytes> {
        if self.structured {
            vec![proto::error_chunk(req.cookie, error, message)]
        } else {
            vec![proto::simple_reply(req.cookie, error)]
        }
    }

    fn device_error(&self, req: &Request, e: &Error) -> Vec<Bytes> {
        bump(&self.inner.counters.errors);
        warn!(
            peer = self.peer,
            "NBD_CMD_{} of {} bytes at offset {} failed: {e}",
            command_name(req.kind),
            req.len,
            req.offset
        );
        self.error_reply(req, errno(e), &e.to_string())
    }

    fn ok(&self, req: &Request) -> Vec<Bytes> {
        vec![proto::simple_reply(req.cookie, 0)]
    }

    /// Serves a checked request; the reply to write.
    async fn handle(&self, req: Request, payload: Bytes) -> Vec<Bytes> {
        let dev = &self.device;
        let fua = req.flags & CMD_FLAG_FUA != 0;
        let (offset, len) = (req.offset, u64::from(req.len));
        let done = match req.kind {
            CMD_READ => return self.read(req).await,
            CMD_BLOCK_STATUS => return self.block_status(req).await,
            CMD_WRITE => {
                let n = payload.len() as u64;
                let r = dev.write_at(offset, payload).await;
                if r.is_ok() {
                    self.inner.counters.bytes_written.fetch_add(n, Ordering::Relaxed);
                }
                r
            }
            CMD_FLUSH => dev.flush().await,
            // Whole blocks are discarded, the ends of partial ones zeroed:
            // either way the range reads as zeros and no block holding only
            // zeros is stored. NO_HOLE cannot be honoured further (a block of
            // zeros is never stored), and this zeroing is always fast.
            CMD_TRIM | CMD_WRITE_ZEROES => dev.zero_range(offset, len).await,
            CMD_CACHE => self.prefetch(offset, len).await,
            _ => return self.error_reply(&req, EINVAL, "unknown command"),
        };
        let done = match done {
            Ok(()) if fua && matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES) => dev.flush().await,
            other => other,
        };
        match done {
            Ok(()) => self.ok(&req),
            Err(e) => self.device_error(&req, &e),
        }
    }

    /// Reads the blocks of a range through the device (into its cache) and
    /// drops the bytes.
    async fn prefetch(&self, offset: u64, len: u64) -> s3block_core::Result<()> {
        let geometry = self.device.geometry();
        let dev = &self.device;
        stream::iter(segments(&geometry, offset, len as usize))
            .map(|seg| async move { dev.read_block(seg.block).await.map(drop) })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await
    }

    async fn read(&self, req: Request) -> Vec<Bytes> {
        let (offset, len) = (req.offset, req.len as usize);
        if !self.structured {
            return match self.device.read_at(offset, len).await {
                Ok(data) => {
                    self.inner.counters.bytes_read.fetch_add(data.len() as u64, Ordering::Relaxed);
                    vec![proto::simple_reply(req.cookie, 0), data]
                }
                Err(e) => self.device_error(&req, &e),
            };
        }
        if len == 0 {
            return vec![proto::done_chunk(req.cookie)];
        }
        let extents = if req.flags & CMD_FLAG_DF != 0 {
            vec![(offset..offset + len as u64, Allocation::Data)]
        } else {
            match self.byte_extents(offset, len as u64).await {
                Ok(x) => x,
                Err(e) => return self.device_error(&req, &e),
            }
        };
        let last = extents.len() - 1;
        // The data runs are read concurrently, their chunks kept in order.
        let chunks: s3block_core::Result<Vec<Vec<Bytes>>> = stream::iter(extents.into_iter().enumerate())
            .map(|(i, (range, allocation))| async move {
                let done = i == last;
                let n = range.end - range.start;
                Ok(match allocation {
                    Allocation::Hole => vec![proto::hole_chunk(req.cookie, done, range.start, n as u32)],
                    Allocation::Data => {
                        let data = self.device.read_at(range.start, n as usize).await?;
                        vec![proto::data_chunk_header(req.cookie, done, range.start, data.len()), data]
                    }
                })
            })
            .buffered(8)
            .try_collect()
            .await;
        let parts = match chunks {
            Ok(chunks) => chunks.into_iter().flatten().collect(),
            Err(e) => return self.device_error(&req, &e),
        };
        self.inner.counters.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
        parts
    }

    /// The byte range `offset..offset+len` cut into holes and data, from the
    /// device's block status; each extent within the range. At most
    /// [`MAX_EXTENTS`] blocks are looked up: the last extent stops there.
    async fn byte_extents(
        &self,
        offset: u64,
        len: u64,
    ) -> s3block_core::Result<Vec<(std::ops::Range<u64>, Allocation)>> {
        let bs = u64::from(self.device.geometry().block_size());
        let end = offset + len;
        let first = offset / bs;
        let last = end.div_ceil(bs).min(first + MAX_EXTENTS);
        let runs = self.device.block_status(first..last).await?;
        let limit = (last * bs).min(end);
        let mut out: Vec<(std::ops::Range<u64>, Allocation)> = Vec::with_capacity(runs.len());
        for (blocks, allocation) in runs {
            let start = (blocks.start * bs).max(offset);
            let stop = (blocks.end * bs).min(limit);
            if start < stop {
                match out.last_mut() {
                    Some((r, a)) if *a == allocation && r.end == start => r.end = stop,
                    _ => out.push((start..stop, allocation)),
                }
            }
        }
        // A device answering short leaves the rest as data.
        let covered = out.last().map_or(offset, |(r, _)| r.end);
        if covered < limit {
            out.push((covered..limit, Allocation::Data));
        }
        Ok(out)
    }

    async fn block_status(&self, req: Request) -> Vec<Bytes> {
        let Some(context) = self.meta_context else {
            return self.error_reply(&req, EINVAL, "no metadata context selected");
        };
        if req.len == 0 {
            return self.error_reply(&req, EINVAL, "BLOCK_STATUS of 0 bytes");
        }
        let extents = match self.byte_extents(req.offset, u64::from(req.len)).await {
            Ok(x) => x,
            Err(e) => return self.device_error(&req, &e),
        };
        let one = req.flags & CMD_FLAG_REQ_ONE != 0;
        let descriptors: Vec<(u32, u32)> = extents
            .into_iter()
            .take(if one { 1 } else { usize::MAX })
            .map(|(r, a)| {
                let flags = match a {
                    Allocation::Hole => STATE_HOLE | STATE_ZERO,
                    Allocation::Data => 0,
                };
                ((r.end - r.start) as u32, flags)
            })
            .collect();
        vec![proto::block_status_chunk(req.cookie, context, &descriptors)]
    }
}
