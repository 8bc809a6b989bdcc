//! A TCP proxy that can play a dead server, for outage tests.
//!
//! [`Proxy::start`] listens on a loopback port and forwards every
//! connection to the real server, bytes both ways. [`Proxy::cut`] makes the
//! server unreachable as a crashed server or a host that went down does:
//! it closes the listening socket, so new connections are refused
//! (ECONNREFUSED), and resets every open connection (an abortive close, so
//! a request in the middle of its body gets ECONNRESET). [`Proxy::restore`]
//! listens again on the same port, and the program under test, which only
//! knows the proxy's address, finds the server back.
//!
//! The port is chosen below the kernel's ephemeral range, so no outgoing
//! connection of this machine can take it while the proxy is cut and the
//! listener can always come back on it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;

/// How often a forwarding thread wakes up to see whether its connection was cut.
const TICK: Duration = Duration::from_millis(50);

/// A forwarding proxy in front of one server; see the module docs. Stops
/// (closing every connection) on drop.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    changed: Condvar,
    conns: Mutex<Vec<Weak<Conn>>>,
    accepted: AtomicU64,
    resets: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Asked for: listening (true) or cut.
    up: bool,
    /// Done by the accepting thread: the listening socket is open.
    listening: bool,
    /// A failure to listen again, for [`Proxy::restore`] to report.
    error: Option<String>,
    stop: bool,
}

/// One proxied connection: the client's socket and the server's.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    server: TcpStream,
    dead: AtomicBool,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`, or an `http://host:port` URL),
    /// listening on 127.0.0.1.
    ///
    /// # Panics
    /// When `upstream` does not resolve or no port can be bound.
    pub fn start(upstream: &str) -> Proxy {
        let hostport = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream = hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("the proxy's server {hostport} does not resolve"));
        let listener = bind_below_ephemeral();
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State { up: true, listening: true, ..State::default() }),
            changed: Condvar::new(),
            conns: Mutex::default(),
            accepted: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("test-proxy".into())
                .spawn(move || accept_loop(&shared, addr, listener))
                .expect("start the proxy's thread")
        };
        Proxy { addr, shared, acceptor: Some(acceptor) }
    }

    /// The address programs under test connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as an endpoint URL: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Open connections reset by the cuts so far.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// The outage begins: returns once the port refuses connections and
    /// every open connection is reset (their sockets closed).
    ///
    /// # Panics
    /// When that takes more than 10 s.
    pub fn cut(&self) {
        self.set_up(false);
        let conns: Vec<Arc<Conn>> = self.shared.conns().drain(..).filter_map(|w| w.upgrade()).collect();
        for conn in &conns {
            // SO_LINGER 0: the last close sends RST, not FIN.
            for s in [&conn.client, &conn.server] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            conn.dead.store(true, Ordering::SeqCst);
        }
        self.shared.resets.fetch_add(conns.len() as u64, Ordering::SeqCst);
        let weak: Vec<Weak<Conn>> = conns.iter().map(Arc::downgrade).collect();
        drop(conns);
        // The forwarding threads hold the sockets until they see the flag.
        let deadline = Instant::now() + Duration::from_secs(10);
        while weak.iter().any(|w| w.strong_count() > 0) {
            assert!(Instant::now() < deadline, "the proxy's connections are not closed after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The outage ends: returns once the proxy listens again on its port.
    ///
    /// # Panics
    /// When the port cannot be bound again in 10 s.
    pub fn restore(&self) {
        self.set_up(true);
    }

    fn set_up(&self, up: bool) {
        let mut state = self.shared.state();
        state.up = up;
        self.shared.changed.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.listening != up {
            if let Some(e) = state.error.take() {
                panic!("the proxy cannot listen again on {}: {e}", self.addr);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the proxy did not {} in 10 s",
                if up { "listen again" } else { "close" }
            );
            state = self.shared.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.state().stop = true;
        self.shared.changed.notify_all();
        for conn in self.shared.conns().drain(..).filter_map(|w| w.upgrade()) {
            conn.dead.store(true, Ordering::SeqCst);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, Vec<Weak<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A listener on a random loopback port below the ephemeral range
/// (/proc/sys/net/ipv4/ip_local_port_range), made non-blocking.
fn bind_below_ephemeral() -> TcpListener {
    let first_ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(10_000..first_ephemeral.max(10_001));
        if let Ok(listener) = listen(SocketAddr::from(([127, 0, 0, 1], port))) {
            return listener;
        }
    }
    panic!("no free port for the proxy below {first_ephemeral}");
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // std sets SO_REUSEADDR on Unix, so the port binds again at once
    // despite the reset connections' TIME_WAIT.
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts while up; closes the listener on a cut and binds it again on a
/// restore; ends on stop.
fn accept_loop(shared: &Arc<Shared>, addr: SocketAddr, listener: TcpListener) {
    let mut listener = Some(listener);
    loop {
        let up = {
            let mut state = shared.state();
            if state.stop {
                return;
            }
            match (state.up, listener.is_some()) {
                (false, true) => {
                    listener = None;
                    state.listening = false;
                    shared.changed.notify_all();
                }
                (true, false) => match rebind(addr) {
                    Ok(l) => {
                        listener = Some(l);
                        state.listening = true;
                        shared.changed.notify_all();
                    }
                    Err(e) => {
                        state.error = Some(e.to_string());
                        state.up = false;
                        shared.changed.notify_all();
                    }
                },
                (false, false) => {
                    drop(shared.changed.wait_timeout(state, TICK));
                    continue;
                }
                (true, true) => {}
            }
            state.up
        };
        let Some(l) = listener.as_ref().filter(|_| up) else { continue };
        match l.accept() {
            Ok((client, _)) => forward(shared, client),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                eprintln!("test proxy: accept failed: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
}

/// Binds `addr` again, trying for 10 s (a socket of the last run of the
/// listener may still be closing).
fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listen(addr) {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Connects `client` to the server and starts copying both ways; a
/// server that cannot be reached resets the client.
fn forward(shared: &Arc<Shared>, client: TcpStream) {
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    let server = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("test proxy: cannot reach {}: {e}", shared.upstream);
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    for s in [&client, &server] {
        let _ = s.set_nonblocking(false);
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(TICK));
        let _ = s.set_write_timeout(Some(TICK));
    }
    let conn = Arc::new(Conn { client, server, dead: AtomicBool::new(false) });
    {
        let mut conns = shared.conns();
        conns.retain(|w| w.strong_count() > 0);
        conns.push(Arc::downgrade(&conn));
    }
    let spawn = |to_server: bool| {
        let conn = conn.clone();
        std::thread::Builder::new().name("test-proxy-conn".into()).spawn(move || {
            let (from, to) =
                if to_server { (&conn.client, &conn.server) } else { (&conn.server, &conn.client) };
            pump(from, to, &conn.dead);
        })
    };
    if spawn(true).is_err() || spawn(false).is_err() {
        conn.dead.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until end of stream (passed on as a half close),
/// an error (which ends the whole connection), or the connection is cut.
fn pump(mut from: &TcpStream, mut to: &TcpStream, dead: &AtomicBool) {
    let timed_out = |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut buf = vec![0u8; 64 << 10];
    while !dead.load(Ordering::SeqCst) {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if timed_out(&e) || e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut at = 0;
        while at < n {
            if dead.load(Ordering::SeqCst) {
                return;
            }
            match to.write(&buf[at..n]) {
                Ok(0) => {
                    dead.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(k) => at += k,
                Err(e) if timed_out(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    dead.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
    dead.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A server that echoes each connection's bytes back.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn echo(s: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(text)?;
        let mut back = vec![0u8; text.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn forwards_then_refuses_and_resets_then_listens_again() {
        let proxy = Proxy::start(&format!("http://{}", echo_server()));
        assert!(proxy.endpoint().starts_with("http://127.0.0.1:"));
        let mut open = TcpStream::connect(proxy.addr()).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(echo(&mut open, b"hello").unwrap(), b"hello");

        proxy.cut();
        let refused = TcpStream::connect(proxy.addr()).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
        let reset = echo(&mut open, b"again").unwrap_err();
        assert_eq!(reset.kind(), ErrorKind::ConnectionReset, "{reset}");
        assert_eq!((proxy.accepted(), proxy.resets()), (1, 1));

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).unwrap();
        again.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(echo(&mut again, b"back").unwrap(), b"back");
        assert_eq!(proxy.accepted(), 2);
    }
}
