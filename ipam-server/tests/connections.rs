//! Connection hygiene, over raw sockets: slow and half-sent heads, silent
//! and idle keep-alive connections are closed; a request in flight is not;
//! connections beyond the caps are refused; an over-limit Content-Length is
//! 413 before any body is sent.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_server::app::{router, AppConfig};
use ipam_server::connections::{serve, ConnectionLimits, ConnectionMetrics};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam};
use support::Flaky;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Long enough that nothing closes while a test is still talking.
const LONG: Duration = Duration::from_secs(60);

struct Served {
    address: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(
        store: Arc<dyn Datastore>,
        limits: ConnectionLimits,
        config: AppConfig,
    ) -> Served {
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
        let metrics = Arc::new(ConnectionMetrics::default());
        let app = router(
            engine,
            AppConfig {
                connection_metrics: Some(metrics.clone()),
                ..config
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, app, limits, metrics, async {
            let _ = stopped.await;
        }));
        Served {
            address,
            stop: Some(stop),
            task,
        }
    }

    async fn with(limits: ConnectionLimits) -> Served {
        Served::start(Arc::new(MemoryStore::new()), limits, AppConfig::default()).await
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }

    /// `/metrics` in the classic text.
    async fn metrics(&self) -> String {
        let mut stream = self.connect().await;
        let (_, body) = exchange(
            &mut stream,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        body
    }

    /// Stops the server and waits until it has (in-flight requests done).
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

fn limits(header_read: Duration, idle: Duration) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: header_read,
        idle_timeout: idle,
        max_connections: 64,
        max_connections_per_client: 64,
    }
}

/// Sends `request` and reads one answer: (status line, body). The answers
/// here carry a Content-Length.
async fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(stream).await
}

async fn read_answer(stream: &mut TcpStream) -> (String, String) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&seen));
        seen.push(byte[0]);
    }
    let head = String::from_utf8(seen).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    let status = head.lines().next().unwrap().to_string();
    (status, String::from_utf8(body).unwrap())
}

/// Waits until the server closes `stream` (EOF or reset), at most `within`;
/// any bytes it sends first are returned.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<String, String> {
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).to_string();
    match outcome {
        Ok(()) => Ok(text),
        Err(_) => Err(format!("still open after {within:?}; got {text:?}")),
    }
}

/// The value of `series` in a classic exposition.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn half_sent_and_trickled_heads_are_cut_at_the_header_read_timeout() {
    let served = Served::with(limits(Duration::from_millis(300), LONG)).await;
    let mut half = served.connect().await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // A client that keeps sending, a byte at a time, never finishes its
    // head: the timeout runs from its first byte, not its last.
    let mut trickle = served.connect().await;
    let started = Instant::now();
    let trickler = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if trickle.write_all(&[*byte]).await.is_err() {
                return (trickle, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if started.elapsed() > Duration::from_secs(20) {
                return (trickle, started.elapsed());
            }
        }
        unreachable!("the cycle never ends")
    });
    closed_within(&mut half, Duration::from_secs(10))
        .await
        .unwrap();
    let (mut trickle, writing_for) = trickler.await.unwrap();
    assert!(
        writing_for < Duration::from_secs(20),
        "the trickler was never cut off"
    );
    closed_within(&mut trickle, Duration::from_secs(10))
        .await
        .unwrap();
    let text = served.metrics().await;
    assert_eq!(
        value(
            &text,
            r#"ipam_http_connections_timed_out_total{timeout="header_read"}"#
        ),
        2.0
    );
    served.stop().await;
}

#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed_at_the_idle_timeout() {
    let served = Served::with(limits(LONG, Duration::from_millis(400))).await;
    let mut silent = served.connect().await;
    let mut idle = served.connect().await;
    let (status, body) = exchange(&mut idle, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    closed_within(&mut silent, Duration::from_secs(10))
        .await
        .unwrap();
    closed_within(&mut idle, Duration::from_secs(10))
        .await
        .unwrap();
    let text = served.metrics().await;
    assert_eq!(
        value(
            &text,
            r#"ipam_http_connections_timed_out_total{timeout="idle"}"#
        ),
        2.0
    );
    served.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_in_use_stays_open() {
    // Each request starts the idle clock again: five requests 300 ms apart
    // outlast a 1 s idle timeout on one connection.
    let served = Served::with(limits(LONG, Duration::from_secs(1))).await;
    let mut stream = served.connect().await;
    for _ in 0..5 {
        let (status, _) = exchange(&mut stream, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    served.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_is_not_cut_by_the_idle_or_header_timeouts() {
    // The store hangs; the request time limit (1.5 s) answers 503, well
    // after both connection timeouts (200 ms) have passed.
    let store = Arc::new(Flaky::default());
    store.slow.store(true, Ordering::SeqCst);
    let served = Served::start(
        store,
        limits(Duration::from_millis(200), Duration::from_millis(200)),
        AppConfig {
            request_timeout: Duration::from_millis(1500),
            ..AppConfig::default()
        },
    )
    .await;
    let mut stream = served.connect().await;
    let (status, body) = exchange(&mut stream, "GET /v1/pools HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert!(body.contains("\"code\":\"timeout\""), "{body}");
    served.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_caps_are_refused_and_the_seats_come_back() {
    let served = Served::with(ConnectionLimits {
        max_connections: 64,
        max_connections_per_client: 2,
        ..limits(LONG, LONG)
    })
    .await;
    let mut first = served.connect().await;
    let second = served.connect().await;
    // Both are seated before the third arrives.
    let (status, _) = exchange(&mut first, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let mut third = served.connect().await;
    let said = closed_within(&mut third, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        said.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{said}"
    );
    assert!(said.contains("\"code\":\"too_many_connections\""), "{said}");
    assert!(
        said.contains("client 127.0.0.1 has 2 connections open"),
        "{said}"
    );
    drop(second);
    // The seat is given back once the server sees the close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = served.connect().await;
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let said = closed_within(&mut again, Duration::from_secs(10))
            .await
            .unwrap();
        if said.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "no seat came back: {said}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = {
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        served.metrics().await
    };
    assert!(
        value(
            &text,
            r#"ipam_http_connections_refused_total{limit="per_client"}"#
        ) >= 1.0
    );
    served.stop().await;

    let served = Served::with(ConnectionLimits {
        max_connections: 1,
        max_connections_per_client: 64,
        ..limits(LONG, LONG)
    })
    .await;
    let mut only = served.connect().await;
    let (status, _) = exchange(&mut only, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let mut more = served.connect().await;
    let said = closed_within(&mut more, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        said.contains("the server has 1 connections open, its limit"),
        "{said}"
    );
    drop(only);
    served.stop().await;
}

#[tokio::test]
async fn an_over_limit_content_length_is_413_before_any_body_is_sent() {
    let served = Served::start(
        Arc::new(MemoryStore::new()),
        limits(LONG, LONG),
        AppConfig {
            max_body_bytes: 1000,
            ..AppConfig::default()
        },
    )
    .await;
    let mut stream = served.connect().await;
    let started = Instant::now();
    let (status, body) = exchange(
        &mut stream,
        "POST /v1/assign HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{body}");
    assert!(body.contains("\"code\":\"body_too_large\""), "{body}");
    assert!(
        body.contains("Content-Length 1000000000: the body limit is 1000 bytes"),
        "{body}"
    );
    // Answered at once, not at the request time limit (30 s).
    assert!(started.elapsed() < Duration::from_secs(10));
    // A body within the limit is read as usual.
    let (status, _) = exchange(
        &mut served.connect().await,
        "POST /v1/assign HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    served.stop().await;
}

#[tokio::test]
async fn stopping_finishes_the_request_in_flight_and_closes_idle_connections() {
    let store = Arc::new(Flaky::default());
    let served = Served::start(store.clone(), limits(LONG, LONG), AppConfig::default()).await;
    let mut idle = served.connect().await;
    let (status, _) = exchange(&mut idle, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    store.slow.store(true, Ordering::SeqCst);
    let mut busy = served.connect().await;
    busy.write_all(b"GET /v1/pools HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(served.stop());
    closed_within(&mut idle, Duration::from_secs(10))
        .await
        .unwrap();
    let (status, _) = read_answer(&mut busy).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "the slow request was answered");
    stopping.await.unwrap();
}
