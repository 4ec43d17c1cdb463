//! The two clocks of a client connection, as nginx has them: a request head must arrive whole
//! within `header_timeout` of its first byte (`client_header_timeout`: slowloris), and a
//! keep-alive connection with nothing in flight is closed after `idle_timeout`
//! (`keepalive_timeout`).
//!
//! One watchdog timer per connection checks both, so a request costs no timer of its own: the
//! connection's reads note when a head starts to arrive ([`HeadWatch`]), and [`decide`] says
//! what the watchdog does when it fires.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What a connection's requests and reads tell its watchdog. Atomic only because hyper wants
/// the stream `Send`: one worker thread reads and writes it.
#[derive(Debug)]
pub struct HeadState {
    base: Instant,
    in_flight: AtomicU32,
    /// Off for HTTP/2, whose frames are not request heads.
    times_heads: std::sync::atomic::AtomicBool,
    /// When the head being received began to arrive, in nanoseconds after `base` plus one;
    /// 0 when none is.
    head_started: AtomicU64,
}

impl HeadState {
    /// A new connection: its first request's head is due from now.
    pub fn new(now: Instant) -> Self {
        HeadState {
            base: now,
            in_flight: AtomicU32::new(0),
            times_heads: std::sync::atomic::AtomicBool::new(true),
            head_started: AtomicU64::new(1),
        }
    }

    /// Only the idle timeout applies (HTTP/2).
    pub fn untimed(&self) {
        self.times_heads.store(false, Relaxed);
        self.head_started.store(0, Relaxed);
    }

    // One thread writes the count (see `HeadState`): a load and a store, not a locked add.
    pub fn begin_request(&self) {
        let n = self.in_flight.load(Relaxed);
        self.in_flight.store(n + 1, Relaxed);
        self.head_started.store(0, Relaxed);
    }

    pub fn end_request(&self) {
        let n = self.in_flight.load(Relaxed);
        self.in_flight.store(n.saturating_sub(1), Relaxed);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Bytes arrived from the client: with nothing in flight they start a request head, whose
    /// header timeout runs from now.
    pub fn head_arriving(&self) {
        if self.in_flight.load(Relaxed) == 0
            && self.head_started.load(Relaxed) == 0
            && self.times_heads.load(Relaxed)
        {
            let since = Instant::now().saturating_duration_since(self.base);
            self.head_started
                .store(since.as_nanos() as u64 + 1, Relaxed);
        }
    }

    pub fn head_started(&self) -> Option<Instant> {
        match self.head_started.load(Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }
}

/// What the watchdog does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// A head took too long: drop the connection.
    Close,
    /// Idle for too long: close it once nothing is in flight (graceful).
    Drain,
    /// Look again then.
    Wait(Instant),
}

/// The connection's state when the watchdog fires: requests in flight, when the head being
/// received started to arrive (if one is), and when the last request ended.
pub fn decide(
    now: Instant,
    in_flight: u32,
    head_started: Option<Instant>,
    last_active: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
) -> Watch {
    if in_flight > 0 {
        // A head that starts after this request ends is caught within one period.
        return Watch::Wait(now + header_timeout.min(idle_timeout));
    }
    if let Some(started) = head_started {
        let deadline = started + header_timeout;
        return if now >= deadline {
            Watch::Close
        } else {
            Watch::Wait(deadline)
        };
    }
    let idle_deadline = last_active + idle_timeout;
    if now >= idle_deadline {
        return Watch::Drain;
    }
    Watch::Wait(idle_deadline.min(now + header_timeout))
}

/// The client stream, noting on the connection when bytes of a new request head arrive while
/// no request is in flight.
pub struct HeadWatch<IO> {
    inner: IO,
    state: Arc<HeadState>,
    /// Bytes read already, read again first: a connection the edge's own HTTP/1.1 path hands
    /// to hyper (`http1.rs`) comes with what it read.
    rewound: Bytes,
}

impl<IO> HeadWatch<IO> {
    pub fn new(inner: IO, state: Arc<HeadState>) -> Self {
        HeadWatch {
            inner,
            state,
            rewound: Bytes::new(),
        }
    }

    /// `read` is read again before the stream.
    pub fn rewind(&mut self, read: Bytes) {
        self.rewound = read;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeadWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.rewound.is_empty() {
            // Their arrival was noted when they were first read.
            let n = self.rewound.len().min(buf.remaining());
            buf.put_slice(&self.rewound[..n]);
            self.rewound.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.head_arriving();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeadWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

/// The connection's one timer. Polled only when that does something: once after it is made
/// or reset (the poll registers the task's waker with the timer) and once it has fired. In
/// between the registered waker stands, as the connection is one task. tokio's timer clones
/// the waker and drops the old one on every poll, four locked instructions, and a keep-alive
/// connection waits on its timer once per request.
pub struct Watchdog {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Polled since it was made or last fired: the task's waker is registered.
    registered: bool,
}

impl Watchdog {
    pub fn new(after: Duration) -> Self {
        Watchdog {
            sleep: Box::pin(tokio::time::sleep(after)),
            registered: false,
        }
    }

    /// Ready once the deadline has passed (the timer then wakes the task).
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        let fired = self.sleep.as_mut().poll(cx);
        self.registered = fired.is_pending();
        fired
    }

    pub fn fired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_fired(cx))
    }

    pub fn reset(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.registered = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(75);

    #[test]
    fn a_head_must_complete_within_the_header_timeout_of_its_first_byte() {
        let t0 = Instant::now();
        let started = Some(t0 + Duration::from_secs(5));
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            decide(at(20), 0, started, t0, HEADER, IDLE),
            Watch::Wait(at(35))
        );
        assert_eq!(decide(at(35), 0, started, t0, HEADER, IDLE), Watch::Close);
    }

    #[test]
    fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_timeout() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        // Looks again within a header period, in case a head starts meanwhile.
        assert_eq!(
            decide(at(40), 0, None, t0, HEADER, IDLE),
            Watch::Wait(at(70))
        );
        assert_eq!(
            decide(at(70), 0, None, t0, HEADER, IDLE),
            Watch::Wait(at(75))
        );
        assert_eq!(decide(at(75), 0, None, t0, HEADER, IDLE), Watch::Drain);
    }

    #[test]
    fn a_head_starts_with_bytes_that_arrive_while_nothing_is_in_flight() {
        let t0 = Instant::now();
        let s = HeadState::new(t0);
        assert_eq!(
            s.head_started(),
            Some(t0),
            "the first head is due from the accept"
        );
        s.begin_request();
        assert_eq!(s.head_started(), None);
        s.head_arriving();
        assert_eq!(s.head_started(), None, "body bytes of a request in flight");
        s.end_request();
        s.head_arriving();
        let started = s.head_started().expect("a new head");
        s.head_arriving();
        assert_eq!(
            s.head_started(),
            Some(started),
            "the clock runs from the first byte"
        );
    }

    #[tokio::test]
    async fn rewound_bytes_are_read_before_the_stream() {
        use tokio::io::AsyncReadExt;
        let state = Arc::new(HeadState::new(Instant::now()));
        let mut s = HeadWatch::new(&b"/ HTTP/1.1"[..], state);
        s.rewind(Bytes::from_static(b"GET "));
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1");
    }

    #[test]
    fn nothing_closes_while_a_request_is_in_flight() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            decide(at(500), 1, Some(t0), t0, HEADER, IDLE),
            Watch::Wait(at(530))
        );
    }

    #[tokio::test]
    async fn the_watchdog_fires_again_after_each_reset() {
        let mut dog = Watchdog::new(Duration::from_millis(5));
        for round in 0..3 {
            // Polled again and again in between (`timeout` polls it on every wake-up): the
            // waker registered by the first poll after a reset must be the one that fires.
            let fired = tokio::time::timeout(Duration::from_secs(10), dog.fired()).await;
            assert!(fired.is_ok(), "round {round}: the watchdog never fired");
            dog.reset(Instant::now() + Duration::from_millis(5));
        }
    }
}
