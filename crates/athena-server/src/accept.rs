//! The accept loop: HTTP/1.1 connections under a bound on their number, each closed when its
//! headers come too slowly or when it sits idle. At the bound, connections with no request in
//! flight (idle keep-alive sockets, headers still arriving) are closed to make room before a
//! new connection is refused.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::limits::Limits;

/// What a connection past the bound is told before it is closed.
fn busy() -> Vec<u8> {
    let body = ApiError::unavailable("too many open connections; retry later").body();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Accepts connections on `listener` and serves `app` on each until `stop` turns true; then
/// stops accepting, asks every connection to finish its request and close, and returns once
/// all have.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let open = Arc::new(Semaphore::new(max));
    // Rung at the bound: every connection with no request in flight closes.
    let crowded = Arc::new(Notify::new());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most often: let some connections close.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                crowded.notify_waiters();
                match tokio::time::timeout(MAKE_ROOM, open.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        tracing::debug!(max, "too many open connections; refusing one");
                        let _ = stream.try_write(&busy());
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, stop, crowded) =
            (app.clone(), limits.clone(), stop.clone(), crowded.clone());
        tokio::spawn(async move {
            connection(stream, app, &limits, stop, &crowded).await;
            drop(permit);
        });
    }
    let _ = open.acquire_many(max as u32).await;
}

/// How long a new connection at the bound waits for an idle one to close.
const MAKE_ROOM: Duration = Duration::from_millis(250);

/// When a connection last did something, and how many of its requests are in flight.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether no request is in flight.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// How long the connection has been idle: zero while a request is in flight.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// A request in flight until dropped (with its response body, once sent).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.touch();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket that notes when bytes arrive.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one connection until the client closes it, a timeout closes it, `stop` asks, or the
/// server is `crowded` while the connection has no request in flight.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
    crowded: &Notify,
) {
    let activity = Arc::new(Activity::new());
    activity.touch();
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = InFlight::begin(&activity);
            let answer = app.clone().oneshot(req);
            async move {
                let res = answer.await?;
                // The request stays in flight until its body (a stream, say) is sent.
                Ok::<_, std::convert::Infallible>(res.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _held = &in_flight;
                        frame
                    }))
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let check = (limits.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(check);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            _ = ticks.tick(), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!("closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = crowded.notified(), if !closing => {
                if activity.is_idle() {
                    tracing::debug!("closing an idle connection to make room");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = changed(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn changed(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
