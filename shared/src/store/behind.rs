//! Write-behind for the cache's small files (index files, first-seen records, served
//! checksums), so that a request never waits on the disk: [`Cache::write_behind`] hands each
//! write to a writer thread ([`WRITERS`] of them) and returns at once.
//!
//! - **Read your writes.** A file waiting to be written is read from the queue, never from the
//!   disk copy it replaces ([`Cache::load`] and the other readers look here first).
//! - **Ordered per file.** The queue holds only the newest content of each path, and a path is
//!   in the queue or being written, never both: a write queued while an older one of the same
//!   path is under way follows it, so the disk never ends older than what was queued last.
//! - **Crash-safe as before.** Every write is still a temp file, fsync and rename
//!   ([`super::write_atomic`]); a crash loses only what was still queued, which is fetched again.
//! - **Failures lose nothing served.** A failed write is noted like any other
//!   ([`Cache::write_error`]); for an upstream's index file the older copy on disk is removed, so
//!   that it is never read back in place of the newer one that was served (it is fetched again).
//! - **Bounded.** At most [`MAX_FILES`] files and [`MAX_BYTES`] bytes wait; a write beyond that
//!   waits for room, as a write did before there was a queue.
//! - **Flushed on shutdown.** [`Cache::flush`] waits until the queue is empty.
//! - **Held until asked.** A write may be held ([`WriteBehind::hold`]): read back like any
//!   other, but given to the writers only when [`WriteBehind::release`] says so (the daemon
//!   does once it is quiet), on [`Cache::flush`], or when [`MAX_HELD`] files or
//!   [`MAX_HELD_BYTES`] bytes are held already (then it is queued at once). A plain write of a
//!   held path queues it.
//!
//! [`Cache::write_behind`]: super::Cache::write_behind
//! [`Cache::load`]: super::Cache::load
//! [`Cache::write_error`]: super::Cache::write_error
//! [`Cache::flush`]: super::Cache::flush

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{CacheError, put_now};

/// Writer threads, whose fsyncs overlap. With one, the growth benchmark's 20,000 index files took
/// 35 s to request, with two 13-36 s, with four 14-16 s; but the faster they came in, the higher
/// the daemon's RSS ended (BENCHMARKS.md, "Growth"), so two.
pub(super) const WRITERS: usize = 2;
/// Files that may wait to be written at once.
pub(super) const MAX_FILES: usize = 1024;
/// Bytes that may wait to be written at once.
pub(super) const MAX_BYTES: usize = 1 << 20;
/// Files that may be held at once, besides [`MAX_FILES`].
pub(super) const MAX_HELD: usize = 2048;
/// Bytes that may be held at once, besides [`MAX_BYTES`].
pub(super) const MAX_HELD_BYTES: usize = 4 << 20;

/// What to do with a path: write these parts one after the other (an index file's metadata
/// line, then the body memory holds: no copy of it waits here), or remove the file.
pub(super) type Content = Option<Vec<Bytes>>;

/// The parts of a queued file as one buffer (for a reader; rare: memory holds what is queued).
pub(super) fn joined(parts: &[Bytes]) -> Bytes {
    match parts {
        [one] => one.clone(),
        _ => Bytes::from(parts.concat()),
    }
}

fn content_len(content: &Content) -> usize {
    content.iter().flatten().map(Bytes::len).sum()
}

/// One queued write: its number (newer writes of the same path get higher ones), its content,
/// and whether a failure removes the file.
struct Pending {
    number: u64,
    content: Content,
    remove_on_failure: bool,
    /// Held: not queued until [`WriteBehind::release`].
    held: bool,
}

impl Pending {
    fn len(&self) -> usize {
        content_len(&self.content)
    }
}

#[derive(Default)]
struct State {
    /// The newest content waiting for each path.
    pending: HashMap<PathBuf, Pending>,
    /// Paths waiting for the writer, in order; each at most once (the one under way is not here).
    queue: VecDeque<PathBuf>,
    /// Bytes in `pending`, held ones included.
    bytes: usize,
    /// Held writes (in `pending` with `held`, not in `queue`), and their bytes.
    held: usize,
    held_bytes: usize,
    next: u64,
    /// No more writes: the writer ends once the queue is empty.
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    /// Signalled when a write is queued or the queue closes.
    work: Condvar,
    /// Signalled when a write ends.
    done: Condvar,
    /// Called with every write's outcome.
    note: Box<dyn Fn(Result<(), CacheError>) + Send + Sync>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The queue and its writer threads; the writers end (after writing what is queued) when the
/// last handle is dropped.
pub(super) struct WriteBehind {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("WriteBehind")
            .field("files", &st.pending.len())
            .field("bytes", &st.bytes)
            .finish()
    }
}

impl WriteBehind {
    /// Starts the writer threads; `note` gets every write's outcome.
    pub(super) fn start(
        note: impl Fn(Result<(), CacheError>) + Send + Sync + 'static,
    ) -> std::io::Result<WriteBehind> {
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            work: Condvar::new(),
            done: Condvar::new(),
            note: Box::new(note),
        });
        for _ in 0..WRITERS {
            let writer = inner.clone();
            std::thread::Builder::new()
                .name("privreg-cache-writer".to_owned())
                .spawn(move || write_all(&writer))?;
        }
        Ok(WriteBehind { inner })
    }

    /// Queues `content` for `path`, replacing what waits for it (held or not); waits for room
    /// first when the queue is full.
    pub(super) fn put(&self, path: &Path, content: Content, remove_on_failure: bool) {
        self.insert(path, content, remove_on_failure, false);
    }

    /// Like [`WriteBehind::put`], but the write is held until [`WriteBehind::release`] (see the
    /// module's doc); queued at once when as many as may be are held, or when a write of `path`
    /// is queued or under way already.
    pub(super) fn hold(&self, path: &Path, content: Content, remove_on_failure: bool) {
        self.insert(path, content, remove_on_failure, true);
    }

    fn insert(&self, path: &Path, content: Content, remove_on_failure: bool, hold: bool) {
        let len = content_len(&content);
        let mut st = self.inner.lock();
        let hold = loop {
            // What waits for `path` now: held or not, and its bytes.
            let now = st.pending.get(path).map(|p| (p.held, p.len()));
            let hold = hold
                && match now {
                    // Queued or being written: this write follows it, as a plain one.
                    Some((false, _)) => false,
                    Some((true, old)) => st.held_bytes - old + len <= MAX_HELD_BYTES,
                    None => st.held < MAX_HELD && st.held_bytes + len <= MAX_HELD_BYTES,
                };
            // A plain write adds a path to the queue unless it is there or being written.
            let adds = !hold && !matches!(now, Some((false, _)));
            let full = st.pending.len() - st.held >= MAX_FILES
                || (st.bytes - st.held_bytes + len > MAX_BYTES && st.bytes > st.held_bytes);
            if !(adds && full) {
                break hold;
            }
            st = self
                .inner
                .done
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        };
        st.next += 1;
        let pending = Pending {
            number: st.next,
            content,
            remove_on_failure,
            held: hold,
        };
        st.bytes += len;
        if hold {
            st.held_bytes += len;
        }
        match st.pending.insert(path.to_owned(), pending) {
            Some(old) => {
                st.bytes -= old.len();
                if old.held {
                    st.held_bytes -= old.len();
                    if !hold {
                        // A plain write of a held path: queued now.
                        st.held -= 1;
                        st.queue.push_back(path.to_owned());
                    }
                }
            }
            None if hold => st.held += 1,
            None => st.queue.push_back(path.to_owned()),
        }
        drop(st);
        self.inner.work.notify_one();
    }

    /// Queues every held write.
    pub(super) fn release(&self) {
        let mut st = self.inner.lock();
        if st.held == 0 {
            return;
        }
        let State { pending, queue, .. } = &mut *st;
        for (path, p) in pending.iter_mut().filter(|(_, p)| p.held) {
            p.held = false;
            queue.push_back(path.clone());
        }
        st.held = 0;
        st.held_bytes = 0;
        drop(st);
        self.inner.work.notify_all();
    }

    /// Files held now.
    pub(super) fn held(&self) -> usize {
        self.inner.lock().held
    }

    /// What waits to be written to `path`, if anything (`Some(None)`: its removal).
    pub(super) fn get(&self, path: &Path) -> Option<Content> {
        self.inner
            .lock()
            .pending
            .get(path)
            .map(|p| p.content.clone())
    }

    /// Waits until nothing waits to be written (held writes included), for at most `limit`;
    /// true when the queue is empty.
    pub(super) fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            // Again on every pass: a write held while flushing is written too.
            self.release();
            let st = self.inner.lock();
            if st.pending.is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            drop(
                self.inner
                    .done
                    .wait_timeout(st, left.min(Duration::from_millis(100)))
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
        }
    }

    /// Files and bytes waiting now, held ones included.
    pub(super) fn waiting(&self) -> (usize, usize) {
        let st = self.inner.lock();
        (st.pending.len(), st.bytes)
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.release();
        self.inner.lock().closed = true;
        self.inner.work.notify_all();
    }
}

/// A writer: takes the oldest queued path, writes its newest content, and takes it off the
/// queue unless a newer write of it came in meanwhile (then it is queued again, after the rest:
/// while one writer has a path, no other can take it).
fn write_all(inner: &Inner) {
    loop {
        let (path, number, content, remove_on_failure) = {
            let mut st = inner.lock();
            loop {
                if let Some(path) = st.queue.pop_front() {
                    let p = &st.pending[&path];
                    let taken = (p.number, p.content.clone(), p.remove_on_failure);
                    break (path, taken.0, taken.1, taken.2);
                }
                if st.closed {
                    return;
                }
                st = inner
                    .work
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let outcome = put_now(&path, content.as_deref());
        if outcome.is_err() && remove_on_failure {
            // The older copy must not be read back in place of the one that was served.
            let _ = std::fs::remove_file(&path);
        }
        (inner.note)(outcome);
        let mut st = inner.lock();
        if st.pending.get(&path).is_some_and(|p| p.number == number) {
            let done = st.pending.remove(&path).expect("pending write");
            st.bytes -= done.len();
        } else {
            st.queue.push_back(path);
        }
        drop(st);
        inner.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn behind() -> (WriteBehind, Arc<AtomicUsize>) {
        let failures = Arc::new(AtomicUsize::new(0));
        let counted = failures.clone();
        let wb = WriteBehind::start(move |r| {
            if r.is_err() {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
        .unwrap();
        (wb, failures)
    }

    #[test]
    fn a_queued_write_is_read_back_from_the_queue_then_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file");
        let (wb, failures) = behind();
        wb.put(
            &path,
            Some(vec![Bytes::from_static(b"o"), Bytes::from_static(b"ne")]),
            true,
        );
        // Before or after the writer ran, the newest content is what a reader gets.
        let seen = wb.get(&path).map_or_else(
            || std::fs::read(&path).ok(),
            |c| c.map(|p| joined(&p).to_vec()),
        );
        assert_eq!(seen.as_deref(), Some(&b"one"[..]));
        assert!(wb.flush(Duration::from_secs(10)));
        assert_eq!(wb.get(&path), None);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_last_write_of_a_path_wins_whatever_the_writer_was_doing() {
        let dir = tempfile::tempdir().unwrap();
        let (wb, _) = behind();
        let paths: Vec<PathBuf> = (0..20).map(|i| dir.path().join(format!("f{i}"))).collect();
        for round in 0..50u32 {
            for p in &paths {
                wb.put(p, Some(vec![Bytes::from(round.to_string())]), true);
            }
        }
        // A removal queued last wins over the writes before it.
        wb.put(&paths[0], None, false);
        assert!(wb.flush(Duration::from_secs(30)));
        assert!(!paths[0].exists());
        for p in &paths[1..] {
            assert_eq!(std::fs::read_to_string(p).unwrap(), "49", "{}", p.display());
        }
        assert_eq!(wb.waiting(), (0, 0));
    }

    #[test]
    fn a_failed_write_is_noted_and_leaves_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the new file's directory should be: the write fails.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"a file, not a directory").unwrap();
        let (wb, failures) = behind();
        wb.put(
            &blocked.join("x"),
            Some(vec![Bytes::from_static(b"new")]),
            true,
        );
        wb.put(
            &dir.path().join("ok"),
            Some(vec![Bytes::from_static(b"ok")]),
            true,
        );
        assert!(wb.flush(Duration::from_secs(10)));
        assert_eq!(failures.load(Ordering::Relaxed), 1);
        assert_eq!(wb.get(&blocked.join("x")), None);
        assert_eq!(std::fs::read(dir.path().join("ok")).unwrap(), b"ok");
    }

    /// Waits until only `files` wait (the writers took the rest).
    fn wait_until_waiting(wb: &WriteBehind, files: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while wb.waiting().0 > files {
            assert!(Instant::now() < deadline, "{:?}", wb.waiting());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_held_write_is_read_back_and_written_only_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let (held, plain) = (dir.path().join("held"), dir.path().join("plain"));
        let (wb, _) = behind();
        wb.hold(&held, Some(vec![Bytes::from_static(b"h")]), false);
        wb.put(&plain, Some(vec![Bytes::from_static(b"p")]), false);
        wait_until_waiting(&wb, 1);
        assert_eq!(std::fs::read(&plain).unwrap(), b"p");
        assert!(!held.exists());
        assert_eq!(wb.get(&held), Some(Some(vec![Bytes::from_static(b"h")])));
        assert_eq!((wb.held(), wb.waiting()), (1, (1, 1)));
        // Held again: still held, the newest content wins.
        wb.hold(&held, Some(vec![Bytes::from_static(b"h2")]), false);
        assert_eq!((wb.held(), wb.waiting()), (1, (1, 2)));
        wb.release();
        assert_eq!(wb.held(), 0);
        wait_until_waiting(&wb, 0);
        assert_eq!(std::fs::read(&held).unwrap(), b"h2");
        // A plain write of a held path queues it; flush writes what is held.
        wb.hold(&held, Some(vec![Bytes::from_static(b"h3")]), false);
        wb.put(&held, Some(vec![Bytes::from_static(b"h4")]), false);
        assert_eq!(wb.held(), 0);
        wait_until_waiting(&wb, 0);
        assert_eq!(std::fs::read(&held).unwrap(), b"h4");
        wb.hold(&plain, None, false);
        assert!(plain.exists());
        assert!(wb.flush(Duration::from_secs(10)));
        assert!(!plain.exists());
    }

    #[test]
    fn held_writes_are_bounded_and_never_block_plain_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (wb, _) = behind();
        for i in 0..=MAX_HELD {
            wb.hold(
                &dir.path().join(format!("h{i}")),
                Some(vec![Bytes::new()]),
                false,
            );
        }
        // The one past the bound was queued, and written.
        assert_eq!(wb.held(), MAX_HELD);
        wait_until_waiting(&wb, MAX_HELD);
        assert!(dir.path().join(format!("h{MAX_HELD}")).exists());
        // More plain writes than the queue takes at once: none waits on the held ones.
        for i in 0..=MAX_FILES {
            wb.put(
                &dir.path().join(format!("p{i}")),
                Some(vec![Bytes::new()]),
                false,
            );
        }
        wait_until_waiting(&wb, MAX_HELD);
        assert!(!dir.path().join("h0").exists());
        // Bytes bound the held writes too, a held path held again with more included.
        let big = Bytes::from(vec![b'x'; MAX_HELD_BYTES]);
        wb.release();
        wb.hold(&dir.path().join("big"), Some(vec![big.clone()]), false);
        wb.hold(&dir.path().join("big2"), Some(vec![big.clone()]), false);
        assert_eq!(wb.held(), 1);
        wb.hold(&dir.path().join("small"), Some(vec![Bytes::new()]), false);
        assert_eq!(wb.held(), 2);
        wb.hold(&dir.path().join("small"), Some(vec![big]), false);
        assert_eq!(wb.held(), 1);
        assert!(wb.flush(Duration::from_mins(1)));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            MAX_HELD + 1 + MAX_FILES + 1 + 3
        );
    }

    #[test]
    fn the_queue_stays_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (wb, _) = behind();
        let big = Bytes::from(vec![b'x'; MAX_BYTES / 4 + 1]);
        let done = std::sync::atomic::AtomicBool::new(false);
        let watcher = std::thread::scope(|s| {
            let (wb, done) = (&wb, &done);
            let most = s.spawn(move || {
                let mut most = (0, 0);
                while !done.load(Ordering::Relaxed) {
                    let (f, b) = wb.waiting();
                    most = (most.0.max(f), most.1.max(b));
                    std::thread::yield_now();
                }
                most
            });
            for i in 0..40 {
                wb.put(
                    &dir.path().join(format!("big{i}")),
                    Some(vec![big.clone()]),
                    true,
                );
            }
            for i in 0..(2 * MAX_FILES) {
                wb.put(
                    &dir.path().join(format!("s{i}")),
                    Some(vec![Bytes::new()]),
                    true,
                );
            }
            done.store(true, Ordering::Relaxed);
            most.join().unwrap()
        });
        assert!(watcher.0 <= MAX_FILES, "{watcher:?}");
        assert!(watcher.1 <= MAX_BYTES, "{watcher:?}");
        assert!(wb.flush(Duration::from_mins(1)));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            40 + 2 * MAX_FILES
        );
    }
}
