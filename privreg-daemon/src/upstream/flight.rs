//! Requests in flight: one upstream request per file at a time, whose failure callers queued
//! behind it share (for as long as the upstream's `Retry-After` says), and at most
//! `limits.max-upstream-requests` requests per upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::FetchError;
use super::memory::Key;
use crate::keyed::KeyedLocks;

/// What the last request for one file left for the callers after it.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// The last failure of a request for this key and when it ended, so that callers who queued
    /// behind that request share its outcome instead of asking again.
    failed: Option<(Instant, FetchError)>,
    /// Until when that failure stands for every caller: the upstream's `Retry-After`.
    retry_at: Option<Instant>,
}

impl Flight {
    /// The failure a caller that came at `start` shares instead of asking again (it is `now`):
    /// one that ended after the caller came (it queued behind that request), or one whose
    /// `Retry-After` still stands.
    pub(super) fn shared_failure(&self, start: Instant, now: Instant) -> Option<&FetchError> {
        let (when, err) = self.failed.as_ref()?;
        (*when >= start || self.retry_at.is_some_and(|t| t > now)).then_some(err)
    }

    /// The request got a usable answer.
    pub(super) fn succeeded(&mut self) {
        self.failed = None;
    }

    /// The request failed at `now` with `err`.
    pub(super) fn failed(&mut self, err: FetchError, now: Instant) {
        self.retry_at = err
            .retry_after()
            .map(|secs| now + Duration::from_secs(secs));
        self.failed = Some((now, err));
    }
}

/// Per file: the lock a request holds while it asks, and what the last one left (dropped once
/// nobody asks and no `Retry-After` stands).
#[derive(Default)]
pub(super) struct Flights {
    flights: KeyedLocks<Key, Flight>,
}

impl Flights {
    /// The flight of `key`, to lock while asking the upstream for it.
    pub(super) fn of(&self, key: &Key) -> Arc<tokio::sync::Mutex<Flight>> {
        let now = Instant::now();
        self.flights
            .of_keeping(key, |f| f.retry_at.is_some_and(|t| t > now))
    }
}

/// Per upstream: the `max-upstream-requests` in force and the permits for it.
#[derive(Default)]
pub(super) struct Permits {
    in_flight: Mutex<HashMap<String, (usize, Arc<tokio::sync::Semaphore>)>>,
}

impl Permits {
    /// The semaphore of upstream `name`, allowing `limit` requests at once. A reload that
    /// changed the limit starts a fresh budget for new requests.
    /// Keeps only the upstreams `keep` names.
    pub(super) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .retain(|name, _| keep(name));
    }

    pub(super) fn semaphore(&self, name: &str, limit: usize) -> Arc<tokio::sync::Semaphore> {
        let mut map = self.in_flight.lock().expect("in-flight lock");
        let slot = map
            .entry(name.to_owned())
            .or_insert_with(|| (limit, Arc::new(tokio::sync::Semaphore::new(limit))));
        if slot.0 != limit {
            *slot = (limit, Arc::new(tokio::sync::Semaphore::new(limit)));
        }
        slot.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> FetchError {
        FetchError::Status {
            upstream: "acme".into(),
            what: "x".into(),
            status,
        }
    }

    fn retry_later(secs: u64) -> FetchError {
        crate::upstream::test_retry_later(secs)
    }

    #[test]
    fn callers_queued_behind_a_failure_share_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut f = Flight::default();
        assert_eq!(f.shared_failure(t0, t0), None);
        f.failed(status(500), t0 + s);
        // Came before it ended: shares it. Came after: asks again.
        assert_eq!(f.shared_failure(t0, t0 + 2 * s), Some(&status(500)));
        assert_eq!(f.shared_failure(t0 + s, t0 + 2 * s), Some(&status(500)));
        assert_eq!(f.shared_failure(t0 + 2 * s, t0 + 2 * s), None);
        f.succeeded();
        assert_eq!(f.shared_failure(t0, t0 + 2 * s), None);
    }

    #[test]
    fn a_retry_after_stands_for_every_caller_until_it_passes() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut f = Flight::default();
        f.failed(retry_later(30), t0);
        assert_eq!(
            f.shared_failure(t0 + 10 * s, t0 + 10 * s),
            Some(&retry_later(30))
        );
        assert_eq!(
            f.shared_failure(t0 + 29 * s, t0 + 29 * s),
            Some(&retry_later(30))
        );
        assert_eq!(f.shared_failure(t0 + 30 * s, t0 + 30 * s), None);
        // A later plain failure ends it.
        f.failed(status(500), t0 + s);
        assert_eq!(f.shared_failure(t0 + 10 * s, t0 + 10 * s), None);
    }

    #[test]
    fn flights_and_permits_are_per_key_and_follow_the_limit() {
        let flights = Flights::default();
        let (a, b): (Key, Key) = (("u".into(), "a".into()), ("u".into(), "b".into()));
        assert!(Arc::ptr_eq(&flights.of(&a), &flights.of(&a)));
        assert!(!Arc::ptr_eq(&flights.of(&a), &flights.of(&b)));

        let permits = Permits::default();
        let first = permits.semaphore("acme", 2);
        assert!(Arc::ptr_eq(&first, &permits.semaphore("acme", 2)));
        assert_eq!(first.available_permits(), 2);
        let changed = permits.semaphore("acme", 5);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.available_permits(), 5);
        assert!(!Arc::ptr_eq(&changed, &permits.semaphore("other", 5)));
    }
}
