//! Bounding client connections: how many are held open at once (`limits.max-connections`) and
//! how long one may stay silent with no request in flight (`limits.idle-timeout`).
//!
//! Any local process can connect without a token, so idle or trickling connections must not be
//! able to use up the daemon's open files. Every accepted connection takes a slot; when all are
//! taken, a new connection takes the slot of the one that has gone longest without progress (a
//! request started, or a byte written to it) and has no request in flight, and that one is
//! closed. Connections that only hold a socket open, or trickle a request head, never make
//! progress, so they are the first to go, while cargo's connections, busy with requests, stay.
//! Only when every connection has a request in flight is the new one refused.
//!
//! The choice of the connection to close and the idle deadline are pure functions
//! ([`victim`], [`idle_left`]); [`Io`] applies them to a socket.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Milliseconds since the table was made: the clock every slot is stamped with.
type Millis = u64;

/// What [`victim`] needs to know of one open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// Requests being answered on it right now.
    pub in_flight: usize,
    /// When it last made progress: accepted, a request started or ended, or a byte written.
    pub last_progress: Millis,
}

/// The connection to close to make room for a new one: among those with no request in flight,
/// the one that has gone longest without progress (the earlier accepted, i.e. the lower id, on
/// a tie). `None` when every connection has a request in flight.
pub(crate) fn victim(open: impl IntoIterator<Item = (u64, Standing)>) -> Option<u64> {
    open.into_iter()
        .filter(|(_, s)| s.in_flight == 0)
        .min_by_key(|(id, s)| (s.last_progress, *id))
        .map(|(id, _)| id)
}

/// How long a connection may still stay silent: `None` when it has been idle for `idle` (and
/// is to be closed), the whole of `idle` while a request is in flight (a slow upstream is not
/// the client's silence).
pub(crate) fn idle_left(
    last_activity: Millis,
    in_flight: usize,
    idle: Duration,
    now: Millis,
) -> Option<Duration> {
    if in_flight > 0 {
        return Some(idle);
    }
    let idle_ms = Millis::try_from(idle.as_millis()).unwrap_or(Millis::MAX);
    let deadline = last_activity.saturating_add(idle_ms);
    (now < deadline).then(|| Duration::from_millis(deadline - now))
}

/// One open connection's state, shared by its [`Io`] and the request handlers on it.
#[derive(Debug)]
struct Slot {
    last_activity: AtomicU64,
    last_progress: AtomicU64,
    in_flight: AtomicUsize,
    /// Set when the connection is closed to make room for a new one.
    evicted: AtomicBool,
    /// The task reading the connection, woken to notice `evicted`.
    reader: AtomicWaker,
}

impl Slot {
    fn standing(&self) -> Standing {
        Standing {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_progress: self.last_progress.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Table {
    max: usize,
    start: Instant,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    /// Connections closed (or refused) at the limit since the last warning, and when that was.
    crowded: Mutex<(u64, Option<Millis>)>,
}

impl Table {
    fn now(&self) -> Millis {
        Millis::try_from(self.start.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    /// Logs the limit being reached, at most every ten seconds.
    fn note_crowded(&self, now: Millis, refused: bool) {
        let mut crowded = self.crowded.lock().expect("crowded lock");
        crowded.0 += 1;
        if crowded.1.is_none_or(|t| now.saturating_sub(t) >= 10_000) {
            tracing::warn!(
                max_connections = self.max,
                closed = crowded.0,
                refused,
                "connection limit reached: closing the connections idle longest \
                 (raise limits.max-connections if cargo needs more)"
            );
            *crowded = (0, Some(now));
        }
    }
}

/// The open client connections, bounded by `limits.max-connections`.
#[derive(Debug, Clone)]
pub(crate) struct Conns {
    table: Arc<Table>,
}

impl Conns {
    pub(crate) fn new(max: usize) -> Conns {
        Conns {
            table: Arc::new(Table {
                max: max.max(1),
                start: Instant::now(),
                slots: Mutex::default(),
                next_id: AtomicU64::new(0),
                crowded: Mutex::default(),
            }),
        }
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.table.slots.lock().expect("slots lock").len()
    }

    /// A slot for a connection just accepted, closing the connection idle longest if all are
    /// taken; `None` (refuse it) when every connection has a request in flight.
    pub(crate) fn admit(&self) -> Option<Conn> {
        let table = &self.table;
        let now = table.now();
        let mut slots = table.slots.lock().expect("slots lock");
        if slots.len() >= table.max {
            let Some(id) = victim(slots.iter().map(|(id, s)| (*id, s.standing()))) else {
                drop(slots);
                table.note_crowded(now, true);
                return None;
            };
            if let Some(old) = slots.remove(&id) {
                old.evicted.store(true, Ordering::Relaxed);
                old.reader.wake();
            }
            drop(slots);
            table.note_crowded(now, false);
            slots = table.slots.lock().expect("slots lock");
        }
        let id = table.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            last_activity: AtomicU64::new(now),
            last_progress: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        });
        slots.insert(id, slot.clone());
        Some(Conn {
            id,
            slot,
            table: table.clone(),
        })
    }
}

/// A handle on one connection's slot: marks requests in flight on it (see [`Conn::request`]).
/// Handed to request handlers as a request extension.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    id: u64,
    slot: Arc<Slot>,
    table: Arc<Table>,
}

impl Conn {
    fn touch(&self, progress: bool) {
        let now = self.table.now();
        self.slot.last_activity.fetch_max(now, Ordering::Relaxed);
        if progress {
            self.slot.last_progress.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Marks a request in flight until the guard is dropped: the connection is neither idle
    /// nor closed to make room meanwhile.
    pub(crate) fn request(&self) -> InFlight {
        self.slot.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch(true);
        InFlight(self.clone())
    }
}

/// A request in flight on a connection (see [`Conn::request`]).
#[derive(Debug)]
pub(crate) struct InFlight(Conn);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch(true);
        self.0.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client socket holding a slot: frees it when dropped, fails reads once the connection has
/// been silent for `idle` with no request in flight or was closed to make room.
pub(crate) struct Io<T> {
    inner: T,
    conn: Conn,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Io<T> {
    pub(crate) fn new(inner: T, conn: Conn, idle: Duration) -> Io<T> {
        Io {
            inner,
            conn,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<T> Drop for Io<T> {
    fn drop(&mut self) {
        let mut slots = self.conn.table.slots.lock().expect("slots lock");
        if slots
            .get(&self.conn.id)
            .is_some_and(|s| Arc::ptr_eq(s, &self.conn.slot))
        {
            slots.remove(&self.conn.id);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.conn.slot.reader.register(cx.waker());
        if this.conn.slot.evicted.load(Ordering::Relaxed) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection (limits.max-connections)",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.conn.touch(false);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let slot = &this.conn.slot;
                let left = idle_left(
                    slot.last_activity.load(Ordering::Relaxed),
                    slot.in_flight.load(Ordering::Relaxed),
                    this.idle,
                    this.conn.table.now(),
                );
                let Some(left) = left else {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "idle for limits.idle-timeout with no request",
                    )));
                };
                let deadline = tokio::time::Instant::now() + left;
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    // Due already: look again on the next poll.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.conn.touch(true);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.conn.touch(true);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(in_flight: usize, last_progress: Millis) -> Standing {
        Standing {
            in_flight,
            last_progress,
        }
    }

    #[test]
    fn the_victim_is_the_longest_without_progress_and_nothing_in_flight() {
        assert_eq!(
            victim([(1, s(0, 50)), (2, s(0, 10)), (3, s(0, 30))]),
            Some(2)
        );
        // A request in flight protects a connection, however old.
        assert_eq!(victim([(1, s(1, 0)), (2, s(0, 90))]), Some(2));
        // On a tie, the earlier accepted goes.
        assert_eq!(victim([(7, s(0, 5)), (4, s(0, 5))]), Some(4));
        assert_eq!(victim([(1, s(2, 0)), (2, s(1, 0))]), None);
        assert_eq!(victim([]), None);
    }

    #[test]
    fn idle_deadline_counts_from_the_last_activity_unless_a_request_is_in_flight() {
        let idle = Duration::from_mins(1);
        assert_eq!(
            idle_left(1_000, 0, idle, 11_000),
            Some(Duration::from_secs(50))
        );
        assert_eq!(idle_left(1_000, 0, idle, 61_000), None);
        assert_eq!(idle_left(1_000, 0, idle, 99_000), None);
        assert_eq!(idle_left(1_000, 1, idle, 99_000), Some(idle));
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_idle_connection_makes_room_and_a_busy_one_stays() {
        let conns = Conns::new(2);
        let busy = conns.admit().unwrap();
        let _req = busy.request();
        let idle = conns.admit().unwrap();
        let (idle_io, _peer) = tokio::io::duplex(64);
        let mut idle_io = Io::new(idle_io, idle, Duration::from_mins(1));
        assert_eq!(conns.open(), 2);
        let newcomer = conns.admit().unwrap();
        assert_eq!(conns.open(), 2);
        let mut buf = [0u8; 8];
        let e = tokio::io::AsyncReadExt::read(&mut idle_io, &mut buf)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
        drop(idle_io);
        // Dropping the evicted connection does not free the newcomer's slot.
        assert_eq!(conns.open(), 2);
        // Both left have a request in flight now: a third is refused.
        let _req2 = newcomer.request();
        assert!(conns.admit().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_and_frees_its_slot() {
        let conns = Conns::new(4);
        let (io, _peer) = tokio::io::duplex(64);
        let mut io = Io::new(io, conns.admit().unwrap(), Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 8];
        let e = tokio::io::AsyncReadExt::read(&mut io, &mut buf)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(io);
        assert_eq!(conns.open(), 0);
    }
}
