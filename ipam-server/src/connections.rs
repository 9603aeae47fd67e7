//! Serving connections with bounds, so that slow, silent or idle clients
//! cannot hold the server's connections for good (issue 21: 40 half-sent
//! headers, 40 silent and 40 idle keep-alive connections were all still
//! open after 80 s).
//!
//! - A request's head must arrive within the header-read timeout of its
//!   first byte.
//! - A connection without a request in flight is closed after the idle
//!   timeout: a fresh one that sends nothing, and a keep-alive one between
//!   requests.
//! - At most `max_connections` are open at once, and at most
//!   `max_connections_per_client` from one IP address (unix-socket peers
//!   are local processes that file permissions already admit: only the
//!   total applies to them). A connection beyond either is answered 503
//!   (a JSON error, best effort) and closed at once.
//!
//! Bodies and handlers are bounded elsewhere: the request time limit and
//! the body limit in [`crate::app`], whose 413 for an over-limit
//! `Content-Length` comes before any body is read.
//!
//! The timeouts live in the socket wrapper [`Watched`] rather than in
//! hyper: hyper's `header_read_timeout` starts when it waits for a head,
//! which includes the idle time before it, so it cannot tell the two
//! apart.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::error::{ErrorBody, ErrorCode};

/// The bounds on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest from a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open without a request in flight.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one IP address.
    pub max_connections_per_client: usize,
}

/// Counts of connections, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    open: AtomicU64,
    refused_total: AtomicU64,
    refused_per_client: AtomicU64,
    closed_header_timeout: AtomicU64,
    closed_idle: AtomicU64,
}

impl ConnectionMetrics {
    /// Writes the figures in a scrape.
    pub fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let open = encoder.encode_descriptor(
            "ipam_http_connections_open",
            "HTTP connections open",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.open.load(Ordering::Relaxed) as i64).encode(open)?;
        let mut refused = encoder.encode_descriptor(
            "ipam_http_connections_refused",
            "HTTP connections refused at accept, by the cap they hit",
            None,
            MetricType::Counter,
        )?;
        for (limit, count) in [
            ("total", &self.refused_total),
            ("per_client", &self.refused_per_client),
        ] {
            ConstCounter::new(count.load(Ordering::Relaxed))
                .encode(refused.encode_family(&[("limit", limit)])?)?;
        }
        let mut closed = encoder.encode_descriptor(
            "ipam_http_connections_timed_out",
            "HTTP connections closed for a slow request head or for idling",
            None,
            MetricType::Counter,
        )?;
        for (timeout, count) in [
            ("header_read", &self.closed_header_timeout),
            ("idle", &self.closed_idle),
        ] {
            ConstCounter::new(count.load(Ordering::Relaxed))
                .encode(closed.encode_family(&[("timeout", timeout)])?)?;
        }
        Ok(())
    }
}

/// What the accept loop needs of a connection besides reading and
/// writing: the client it counts against, and a way to send a refusal
/// without waiting.
pub trait Peer: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The peer's address, for the rate limit and the per-client cap; none
    /// for unix sockets.
    fn client(&self) -> Option<SocketAddr>;
    /// Writes what the socket takes now.
    fn try_write_now(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl Peer for TcpStream {
    fn client(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }
    fn try_write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        self.try_write(bytes)
    }
}

impl Peer for UnixStream {
    fn client(&self) -> Option<SocketAddr> {
        None
    }
    fn try_write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        self.try_write(bytes)
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then lets the requests in flight finish and closes idle connections.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<ConnectionMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) where
    L: Listener,
    L::Io: Peer,
{
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let io = tokio::select! {
            (io, _) = listener.accept() => io,
            () = &mut shutdown => break,
        };
        // Finished connections are reaped as new ones come, so the set
        // holds only live ones.
        while connections.try_join_next().is_some() {}
        let client = io.client();
        let Ok(permit) = total.clone().try_acquire_owned() else {
            metrics.refused_total.fetch_add(1, Ordering::Relaxed);
            refuse(
                &io,
                format!(
                    "the server has {} connections open, its limit (--max-connections); retry shortly",
                    limits.max_connections
                ),
            );
            continue;
        };
        let seat = match client {
            Some(peer) => match per_client.enter(peer.ip(), limits.max_connections_per_client) {
                Some(seat) => Some(seat),
                None => {
                    metrics.refused_per_client.fetch_add(1, Ordering::Relaxed);
                    refuse(
                        &io,
                        format!(
                            "client {} has {} connections open, the limit per client (--max-connections-per-client); reuse them or retry shortly",
                            peer.ip(),
                            limits.max_connections_per_client
                        ),
                    );
                    continue;
                }
            },
            None => None,
        };
        let held = Held {
            _permit: permit,
            _seat: seat,
            metrics: metrics.clone(),
        };
        connections.spawn(connection(
            io,
            client,
            app.clone(),
            limits,
            held,
            stopping.clone(),
        ));
    }
    // Closed first, so that new clients are turned away (and go to another
    // replica) while the requests in flight finish.
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// What a connection holds while open; given back when it closes.
struct Held {
    _permit: OwnedSemaphorePermit,
    _seat: Option<Seat>,
    metrics: Arc<ConnectionMetrics>,
}

async fn connection<I: Peer>(
    io: I,
    client: Option<SocketAddr>,
    app: Router,
    limits: ConnectionLimits,
    held: Held,
    mut stopping: watch::Receiver<bool>,
) {
    held.metrics.open.fetch_add(1, Ordering::Relaxed);
    let activity = Arc::new(Mutex::new(Activity::Idle {
        since: Instant::now(),
    }));
    let watched = Watched {
        inner: io,
        activity: activity.clone(),
        limits,
        sleep: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        metrics: held.metrics.clone(),
    };
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // The peer address is what the per-client rate limit keys on.
        if let Some(client) = client {
            request.extensions_mut().insert(ConnectInfo(client));
        }
        let busy = Busy::start(activity.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(busy);
            response
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(watched), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // The watch's guard is dropped here, before the await below.
        _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
            // Answer what is in flight, then close; an idle connection
            // closes at once.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection closed");
    }
    held.metrics.open.fetch_sub(1, Ordering::Relaxed);
}

/// Answers 503 with a JSON error, as far as the socket takes it at once,
/// and drops the connection: a refusal must cost the accept loop nothing.
fn refuse<I: Peer>(io: &I, message: String) {
    tracing::warn!(%message, "connection refused");
    let body = serde_json::to_string(&ErrorBody {
        code: ErrorCode::TooManyConnections,
        message,
    })
    .expect("an error body serialises");
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    let _ = io.try_write_now(answer.as_bytes());
}

/// Open connections by client address.
#[derive(Default)]
struct PerClient {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client; uncounted on drop.
struct Seat {
    clients: Arc<PerClient>,
    client: IpAddr,
}

impl PerClient {
    fn enter(self: &Arc<PerClient>, client: IpAddr, limit: usize) -> Option<Seat> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Seat {
            clients: self.clone(),
            client,
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Gone clients leave no entry behind.
                open.remove(&self.client);
            }
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Activity {
    /// No request in flight and none begun: since it was accepted or its
    /// last answer was made.
    Idle { since: Instant },
    /// A request's first bytes arrived at `since`; its head is not complete.
    Head { since: Instant },
    /// Requests in flight (more than one when pipelined).
    Busy { requests: usize },
}

/// A request in flight; the connection turns idle when the last one ends.
struct Busy {
    activity: Arc<Mutex<Activity>>,
}

impl Busy {
    fn start(activity: Arc<Mutex<Activity>>) -> Busy {
        {
            let mut state = activity.lock().unwrap_or_else(|e| e.into_inner());
            *state = match *state {
                Activity::Busy { requests } => Activity::Busy {
                    requests: requests + 1,
                },
                _ => Activity::Busy { requests: 1 },
            };
        }
        Busy { activity }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        *state = match *state {
            Activity::Busy { requests } if requests > 1 => Activity::Busy {
                requests: requests - 1,
            },
            _ => Activity::Idle {
                since: Instant::now(),
            },
        };
    }
}

/// A socket whose reads fail with `TimedOut` once the connection has been
/// idle, or reading one request head, for too long. Hyper reads whenever
/// it waits for a request, so a failed read is how it learns to close.
struct Watched<I> {
    inner: I,
    activity: Arc<Mutex<Activity>>,
    limits: ConnectionLimits,
    sleep: Pin<Box<Sleep>>,
    metrics: Arc<ConnectionMetrics>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            if result.is_ok() && buf.filled().len() > before {
                let mut state = this.activity.lock().unwrap_or_else(|e| e.into_inner());
                if let Activity::Idle { .. } = *state {
                    *state = Activity::Head {
                        since: Instant::now(),
                    };
                }
            }
            return Poll::Ready(result);
        }
        // Nothing to read: is the connection past its deadline?
        let state = *this.activity.lock().unwrap_or_else(|e| e.into_inner());
        let (deadline, counter, what) = match state {
            Activity::Busy { .. } => return Poll::Pending,
            Activity::Idle { since } => (
                since + this.limits.idle_timeout,
                &this.metrics.closed_idle,
                "idle",
            ),
            Activity::Head { since } => (
                since + this.limits.header_read_timeout,
                &this.metrics.closed_header_timeout,
                "reading a request head",
            ),
        };
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            counter.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection closed: {what} for too long"),
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
