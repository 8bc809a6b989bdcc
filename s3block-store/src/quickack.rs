//! s3block's own HTTP/1.1 client for plain `http://` endpoints.
//!
//! A server that writes a response's headers and its body in two small
//! segments, and leaves Nagle's algorithm on (Garage does), holds the body
//! until the client has acknowledged the headers. Linux delays that
//! acknowledgement by up to 40 ms on a connection that goes back and forth,
//! so every small GET took about 44 ms on such a store, whatever the
//! network. This client acknowledges at once: after each read from a
//! connection it sets `TCP_QUICKACK`, which sends any acknowledgement
//! the kernel was holding back. One extra system call a read; nothing
//! changes for a server that never waits.
//!
//! It is used for `http://` endpoints unless a proxy is set in the
//! environment (`http_proxy`, `HTTP_PROXY`, `all_proxy`, `ALL_PROXY`) or
//! `S3BLOCK_QUICKACK=0`; HTTPS endpoints and proxied ones keep
//! `object_store`'s own client. It
//! keeps that client's behaviour: the user agent, the default headers,
//! nodelay, a 5 s limit on connecting, and one time limit for each
//! request, from sending it to the end of its body. It does not follow
//! redirects: `object_store` then reports the status, which an S3 server
//! on `http://` has no reason to send.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, USER_AGENT};
use http_body::{Body, Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector as StoreConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Time limit of a request when the store's options set none
/// (`object_store`'s own client's default).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting may take (`object_store`'s own client's default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An idle pooled connection is closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The environment variables that name a proxy for `http://` URLs.
const PROXY_VARIABLES: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

/// Set to `0` or `off`, `http://` endpoints use `object_store`'s own client
/// too (for comparison, or should a server not get on with this one).
pub const QUICKACK_ENV: &str = "S3BLOCK_QUICKACK";

/// Whether `http://` endpoints get this client: not when the environment
/// sets a proxy for them (`object_store`'s own client honours it), nor when
/// [`QUICKACK_ENV`] turns it off.
pub(crate) fn wanted() -> bool {
    let off = std::env::var(QUICKACK_ENV).is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("off"));
    !off && !PROXY_VARIABLES.iter().any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// Makes the [`QuickAckClient`] of a store (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct QuickAckConnector {
    /// Time limit of one request, body included.
    pub(crate) timeout: Duration,
    /// Headers every request carries unless it sets them itself.
    pub(crate) headers: HeaderMap,
}

impl StoreConnector for QuickAckConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(QuickAckClient::new(self.timeout, self.headers.clone())))
    }
}

/// An HTTP/1.1 client over TCP that acknowledges what it reads at once.
#[derive(Clone)]
pub(crate) struct QuickAckClient {
    client: Client<QuickAckTcp, HttpRequestBody>,
    timeout: Duration,
    headers: HeaderMap,
}

impl fmt::Debug for QuickAckClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuickAckClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl QuickAckClient {
    /// A client whose requests each take at most `timeout`, carrying
    /// `headers` unless they set them.
    pub(crate) fn new(timeout: Duration, mut headers: HeaderMap) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let agent = concat!("s3block/", env!("CARGO_PKG_VERSION"));
        headers.entry(USER_AGENT).or_insert(HeaderValue::from_static(agent));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(QuickAckTcp(tcp));
        QuickAckClient { client, timeout, headers }
    }
}

#[async_trait]
impl HttpService for QuickAckClient {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = req.into_parts();
        for (name, value) in &self.headers {
            if !parts.headers.contains_key(name) {
                parts.headers.insert(name.clone(), value.clone());
            }
        }
        let deadline = Instant::now() + self.timeout;
        let sent = self.client.request(http::Request::from_parts(parts, body));
        let response = match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => return Err(timed_out(self.timeout)),
            Ok(Err(e)) => return Err(request_error(e)),
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let body =
            TimedBody { body, deadline: Box::pin(tokio::time::sleep_until(deadline)), limit: self.timeout };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// The error of a request that ran out of time.
fn timed_out(limit: Duration) -> HttpError {
    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no complete answer within {limit:?}"));
    HttpError::new(HttpErrorKind::Timeout, e)
}

/// The kind of a failed request, as `object_store`'s own client tells them
/// apart: connecting, cut off, timed out, an answer that is not HTTP, or the
/// request itself.
fn request_error(e: hyper_util::client::legacy::Error) -> HttpError {
    let kind = if e.is_connect() {
        HttpErrorKind::Connect
    } else {
        hyper_kind(e.source()).unwrap_or(HttpErrorKind::Request)
    };
    HttpError::new(kind, e)
}

/// The kind of the first `hyper::Error` in a chain of sources.
fn hyper_kind(mut cur: Option<&(dyn StdError + 'static)>) -> Option<HttpErrorKind> {
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return Some(if h.is_timeout() {
                HttpErrorKind::Timeout
            } else if h.is_parse() || h.is_parse_status() {
                HttpErrorKind::Decode
            } else if h.is_incomplete_message()
                || h.is_canceled()
                || h.is_closed()
                || h.is_body_write_aborted()
            {
                HttpErrorKind::Interrupted
            } else {
                HttpErrorKind::Request
            });
        }
        cur = e.source();
    }
    None
}

/// A response body that fails with a timeout once the request's time is up.
struct TimedBody {
    body: hyper::body::Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| {
                f.map_err(|e| {
                    let kind = hyper_kind(Some(&e)).unwrap_or(HttpErrorKind::Interrupted);
                    let kind = if kind == HttpErrorKind::Request { HttpErrorKind::Interrupted } else { kind };
                    HttpError::new(kind, e)
                })
            }));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(timed_out(this.limit)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Connects as hyper's own TCP connector does, and wraps the connection in
/// [`QuickAck`].
#[derive(Clone)]
struct QuickAckTcp(HttpConnector);

type Connecting = Pin<Box<dyn Future<Output = Result<QuickAck, Box<dyn StdError + Send + Sync>>> + Send>>;

impl tower_service::Service<http::Uri> for QuickAckTcp {
    type Response = QuickAck;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(QuickAck(connecting.await?)) })
    }
}

/// A TCP connection that sends the acknowledgement of what it has read at
/// once, instead of letting the kernel delay it.
struct QuickAck(TokioIo<TcpStream>);

impl QuickAck {
    fn acknowledge(&self) {
        // Failure only leaves the kernel's delayed acknowledgement in place.
        let _ = socket2::SockRef::from(self.0.inner()).set_tcp_quickack(true);
    }
}

impl Read for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let ready = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(ready, Poll::Ready(Ok(()))) {
            self.acknowledge();
        }
        ready
    }
}

impl Write for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use object_store::client::ReqwestConnector;
    use s3block_core::StoreErrorKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// How a test server answers each request on a connection.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Headers, then a 4 KiB body in a second write, Nagle on: the
        /// body waits until the client ACKs the headers.
        Split,
        /// The request's head back as the body.
        Echo,
        /// Nothing, ever.
        Silent,
        /// Headers of a 4 KiB body, 100 bytes of it, then nothing.
        Stall,
        /// Headers of a 4 KiB body, 100 bytes of it, then the connection
        /// is closed.
        Cut,
    }

    /// A server on loopback that answers every request as `answer` says;
    /// its `http://` address.
    async fn server(answer: Answer) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                conn.set_nodelay(false).expect("nodelay off");
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = conn.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let request = head.drain(..end + 4).collect::<Vec<u8>>();
                        let headers =
                            |len: usize| format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                        match answer {
                            Answer::Split => {
                                let _ = conn.write_all(headers(4096).as_bytes()).await;
                                let _ = conn.write_all(&[7u8; 4096]).await;
                            }
                            Answer::Echo => {
                                let _ = conn.write_all(headers(request.len()).as_bytes()).await;
                                let _ = conn.write_all(&request).await;
                            }
                            Answer::Silent => std::future::pending::<()>().await,
                            Answer::Stall | Answer::Cut => {
                                let _ = conn.write_all(headers(4096).as_bytes()).await;
                                let _ = conn.write_all(&[7u8; 100]).await;
                                if matches!(answer, Answer::Cut) {
                                    return;
                                }
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                });
            }
        });
        format!("http://{addr}/")
    }

    fn get(url: &str) -> HttpRequest {
        http::Request::get(url).body(HttpRequestBody::empty()).expect("request")
    }

    /// Median milliseconds of 20 GETs one after another through `client`.
    async fn median_get_ms(client: &HttpClient, url: &str) -> f64 {
        let mut times = Vec::new();
        for _ in 0..20 {
            let start = StdInstant::now();
            let body = client.execute(get(url)).await.expect("GET").into_body().bytes().await.expect("body");
            assert_eq!(body.len(), 4096);
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    }

    /// The store's view of an error: transient or not.
    fn kind_of(e: HttpError) -> StoreErrorKind {
        crate::classify(&object_store::Error::Generic { store: "S3", source: Box::new(e) })
    }

    #[tokio::test]
    async fn a_small_answer_does_not_wait_for_a_delayed_ack() {
        let url = server(Answer::Split).await;
        // The general client shows the wait the server makes ...
        let general =
            ReqwestConnector::default().connect(&ClientOptions::new().with_allow_http(true)).expect("client");
        let waited = median_get_ms(&general, &url).await;
        assert!(
            waited >= 30.0,
            "the test server should hold its body for the delayed ACK: {waited:.1} ms a GET"
        );
        // ... which this client does not.
        let quick = HttpClient::new(QuickAckClient::new(Duration::from_secs(5), HeaderMap::new()));
        let quick_ms = median_get_ms(&quick, &url).await;
        assert!(quick_ms < 15.0, "{quick_ms:.1} ms a GET, against {waited:.1} ms with the general client");
    }

    #[tokio::test]
    async fn requests_carry_the_default_headers_and_keep_their_own() {
        let url = server(Answer::Echo).await;
        let mut defaults = HeaderMap::new();
        defaults.insert("x-amz-acl", HeaderValue::from_static("private"));
        defaults.insert("x-amz-storage-class", HeaderValue::from_static("STANDARD_IA"));
        let client = HttpClient::new(QuickAckClient::new(Duration::from_secs(5), defaults));
        let mut request = get(&url);
        request.headers_mut().insert("x-amz-storage-class", HeaderValue::from_static("GLACIER_IR"));
        let head = client.execute(request).await.expect("GET").into_body().bytes().await.expect("body");
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.contains("x-amz-acl: private\r\n"), "{head}");
        assert!(head.contains("x-amz-storage-class: glacier_ir\r\n"), "{head}");
        assert!(!head.contains("standard_ia"), "{head}");
        let agent = format!("user-agent: s3block/{}\r\n", env!("CARGO_PKG_VERSION"));
        assert!(head.contains(&agent), "{head}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_as_a_transient_error() {
        let url = server(Answer::Silent).await;
        let client = HttpClient::new(QuickAckClient::new(Duration::from_millis(300), HeaderMap::new()));
        let start = StdInstant::now();
        let e = client.execute(get(&url)).await.expect_err("no answer");
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        assert_eq!(e.kind(), HttpErrorKind::Timeout, "{e}");
        assert_eq!(kind_of(e), StoreErrorKind::Transient);
    }

    #[tokio::test]
    async fn a_body_that_stops_coming_times_out() {
        let url = server(Answer::Stall).await;
        let client = HttpClient::new(QuickAckClient::new(Duration::from_millis(300), HeaderMap::new()));
        let response = client.execute(get(&url)).await.expect("headers arrive");
        let start = StdInstant::now();
        let e = response.into_body().bytes().await.expect_err("the body stalls");
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        assert_eq!(e.kind(), HttpErrorKind::Timeout, "{e}");
        assert_eq!(kind_of(e), StoreErrorKind::Transient);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_interrupted() {
        let url = server(Answer::Cut).await;
        let client = HttpClient::new(QuickAckClient::new(Duration::from_secs(5), HeaderMap::new()));
        let response = client.execute(get(&url)).await.expect("headers arrive");
        let e = response.into_body().bytes().await.expect_err("the body is cut");
        assert_eq!(e.kind(), HttpErrorKind::Interrupted, "{e}");
        assert_eq!(kind_of(e), StoreErrorKind::Transient);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        drop(listener);
        let client = HttpClient::new(QuickAckClient::new(Duration::from_secs(5), HeaderMap::new()));
        let e = client.execute(get(&url)).await.expect_err("nothing listens");
        assert_eq!(e.kind(), HttpErrorKind::Connect, "{e}");
        assert_eq!(kind_of(e), StoreErrorKind::Transient);
    }
}
