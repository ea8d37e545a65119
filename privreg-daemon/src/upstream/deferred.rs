//! Local copies put off: a file taken from the shared tier goes into memory at once, and onto
//! the local disk once the daemon has been quiet for [`QUIET`] (no file asked for, by cargo or
//! the prefetcher), at the latest [`MAX_DELAY`] after the oldest waiting one came, and when the
//! daemon stops.
//!
//! Why: a cold daemon on a warm tier takes hundreds of files in one resolution. Writing each at
//! once (a temp file, fsync, a rename, its first-seen record) took the CPU and the file system
//! from cargo while cargo waited for the next answers (BENCHMARKS.md, "CI fleet"). The tier still
//! holds each of them, so a copy that is never written (the daemon killed, or the file left
//! memory first) costs one tier read later, nothing more; files from an upstream are still
//! written at once, being the last good answers when it is down.
//!
//! The checksums served for a crate whose files all came from the tier wait with them (held in
//! the cache's write-behind queue, [`Cache::hold_served`], read back from there meanwhile), and
//! are handed to the writers in the same round, after the copies that round writes (a copy put
//! back because its file was being fetched does not hold them back).
//!
//! Bounded: at most [`MAX_DEFERRED`] copies wait, and the next one is written at once, as
//! before. A waiting copy holds no body: it refers weakly to the entry memory holds, and is
//! dropped with it.
//!
//! [`Cache::hold_served`]: privreg_shared::store::Cache::hold_served

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use privreg_shared::store::UpstreamPath;

use super::Upstreams;
use super::memory::{Entry, Key};

/// How long the daemon must have been asked for no file before the waiting copies are written.
pub(crate) const QUIET: Duration = Duration::from_secs(1);
/// The longest a copy waits for the daemon to be quiet.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(30);
/// Copies that may wait at once.
pub(crate) const MAX_DEFERRED: usize = 2048;

/// One local copy to write.
pub(super) struct Waiting {
    pub up: Upstream,
    /// The crate of an index file; `None` for `config.json`.
    pub krate: Option<CrateName>,
    pub key: Key,
    pub entry: Weak<Entry>,
    /// Whether its first-seen record changed too.
    pub seen_changed: bool,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiting>,
    /// When the oldest waiting copy came.
    since: Option<Instant>,
    /// When a file was last asked for.
    last_use: Option<Instant>,
}

/// The copies waiting, and when the daemon was last busy.
#[derive(Default)]
pub(super) struct Deferred {
    state: Mutex<State>,
}

impl Deferred {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that a file is being asked for at `now`: the daemon is not quiet.
    pub(super) fn busy(&self, now: Instant) {
        self.lock().last_use = Some(now);
    }

    /// Notes that a write waits for the quiet (a held record) as of `now`.
    pub(super) fn waits(&self, now: Instant) {
        self.lock().since.get_or_insert(now);
    }

    /// Queues `w`; false (and `w` dropped) when [`MAX_DEFERRED`] wait already: write it now.
    pub(super) fn push(&self, w: Waiting, now: Instant) -> bool {
        let mut st = self.lock();
        if st.waiting.len() >= MAX_DEFERRED {
            return false;
        }
        st.since.get_or_insert(now);
        st.waiting.push(w);
        true
    }

    /// The copies to write at `now` once nothing was asked for `quiet` (zero: at once), or once
    /// the oldest waited [`MAX_DELAY`]; `None` before.
    pub(super) fn due(&self, quiet: Duration, now: Instant) -> Option<Vec<Waiting>> {
        let mut st = self.lock();
        let quiet_now = st
            .last_use
            .is_none_or(|t| now.saturating_duration_since(t) >= quiet);
        let overdue = st
            .since
            .is_some_and(|t| now.saturating_duration_since(t) >= MAX_DELAY);
        if !(quiet_now || overdue) {
            return None;
        }
        st.since = None;
        Some(std::mem::take(&mut st.waiting))
    }

    /// Puts back copies that could not be written yet (their file was being fetched).
    pub(super) fn put_back(&self, mut later: Vec<Waiting>, now: Instant) {
        if later.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.since.get_or_insert(now);
        later.truncate(MAX_DEFERRED.saturating_sub(st.waiting.len()));
        st.waiting.append(&mut later);
    }

    /// How many copies wait.
    pub(super) fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Upstreams {
    /// Writes the local copies put off (see [`self`](crate::upstream::deferred)) when nothing
    /// was asked for `quiet` (zero: now, as the daemon stops); blocks on the disk, so call it
    /// off the async workers. Returns how many were written.
    pub(crate) fn write_deferred(&self, quiet: Duration) -> usize {
        let Some(due) = self.deferred.due(quiet, Instant::now()) else {
            return 0;
        };
        let mut later = Vec::new();
        let mut written = 0;
        for w in due {
            // Gone from memory: the tier still holds it.
            let Some(entry) = w.entry.upgrade() else {
                continue;
            };
            // A request for the file under way may write a newer answer: the copy waits.
            let flight = self.flights.of(&w.key);
            let Ok(_flight) = flight.try_lock() else {
                later.push(w);
                continue;
            };
            let rel = UpstreamPath::of(w.krate.as_ref());
            if self
                .memory
                .write_copy(&w.up, rel, &w.key, &entry, w.seen_changed)
            {
                written += 1;
            }
        }
        self.deferred.put_back(later, Instant::now());
        // The served-checksum records held meanwhile, after the copies they came from.
        self.cache.release_held();
        written
    }

    /// Records the checksums served for `krate`, computed from files of the tier alone: held
    /// until the local copies are written (see [`self`](crate::upstream::deferred)).
    pub(crate) fn hold_served(
        &self,
        krate: &CrateName,
        served: &std::collections::BTreeMap<semver::Version, String>,
    ) -> Result<(), privreg_shared::store::CacheError> {
        let held = self.cache.hold_served(krate, served);
        // After the hold: a round of writes between the two leaves no record without a deadline.
        self.deferred.waits(Instant::now());
        held
    }

    /// Local copies waiting to be written.
    pub(crate) fn copies_waiting(&self) -> usize {
        self.deferred.len()
    }
}

/// Writes the local copies that are due, four times a second.
pub(crate) fn start(upstreams: Arc<Upstreams>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if upstreams.copies_waiting() == 0 && upstreams.cache.writes_held() == 0 {
                continue;
            }
            let up = upstreams.clone();
            let _ = tokio::task::spawn_blocking(move || up.write_deferred(QUIET)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(n: usize) -> Waiting {
        Waiting {
            up: super::super::test_upstream(),
            krate: Some(CrateName::new(&format!("c{n}")).expect("valid name")),
            key: Key::default(),
            entry: Weak::new(),
            seen_changed: false,
        }
    }

    #[test]
    fn copies_wait_for_a_quiet_daemon_or_their_deadline() {
        let d = Deferred::default();
        let t0 = Instant::now();
        d.busy(t0);
        assert!(d.push(waiting(1), t0));
        // Asked for a file half a second ago: not quiet.
        assert!(d.due(QUIET, t0 + QUIET / 2).is_none());
        // Still busy, but the oldest copy waited its longest.
        d.busy(t0 + MAX_DELAY);
        assert_eq!(d.due(QUIET, t0 + MAX_DELAY).map(|w| w.len()), Some(1));
        assert_eq!(d.len(), 0);
        // Quiet: due; and at once with a zero `quiet` (the daemon stops).
        let t1 = t0 + MAX_DELAY;
        assert!(d.push(waiting(2), t1));
        assert!(d.due(QUIET, t1 + QUIET / 2).is_none());
        assert_eq!(d.due(QUIET, t1 + QUIET).map(|w| w.len()), Some(1));
        assert!(d.push(waiting(3), t1 + QUIET));
        d.busy(t1 + QUIET);
        assert_eq!(d.due(Duration::ZERO, t1 + QUIET).map(|w| w.len()), Some(1));
        // A held record with no copy waiting: due once quiet, or at its deadline.
        let t2 = t1 + 2 * QUIET;
        d.busy(t2);
        d.waits(t2);
        assert!(d.due(QUIET, t2 + QUIET / 2).is_none());
        d.busy(t2 + MAX_DELAY);
        assert_eq!(d.due(QUIET, t2 + MAX_DELAY).map(|w| w.len()), Some(0));
    }

    #[test]
    fn at_most_max_deferred_copies_wait() {
        let d = Deferred::default();
        let t0 = Instant::now();
        for n in 0..MAX_DEFERRED {
            assert!(d.push(waiting(n), t0));
        }
        assert!(!d.push(waiting(MAX_DEFERRED), t0));
        // Put back after a failed try: still within the bound.
        let all = d.due(Duration::ZERO, t0).expect("due at once");
        assert!(d.push(waiting(0), t0));
        d.put_back(all, t0);
        assert_eq!(d.len(), MAX_DEFERRED);
    }
}
