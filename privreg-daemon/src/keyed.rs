//! Locks per key (a crate file being downloaded, an upstream file being asked for), dropped once
//! nobody holds or awaits them, so that the map grows with the work in flight, not with every
//! key ever seen.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The locks by key.
type Locks<K, T> = HashMap<K, Arc<tokio::sync::Mutex<T>>>;

/// Below this many keys the map is never swept.
const MIN_SWEEP: usize = 64;

/// Per key, a lock guarding a `T` (what the last holder left for the next).
pub(crate) struct KeyedLocks<K, T> {
    /// The locks, and the size at which idle ones are swept next (twice the size left by the
    /// last sweep, so that sweeping costs O(1) per new key).
    map: Mutex<(Locks<K, T>, usize)>,
}

impl<K, T> Default for KeyedLocks<K, T> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new((HashMap::new(), MIN_SWEEP)),
        }
    }
}

impl<K: Hash + Eq, T: Default> KeyedLocks<K, T> {
    /// The lock of `key`.
    pub(crate) fn of<Q>(&self, key: &Q) -> Arc<tokio::sync::Mutex<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.of_keeping(key, |_| false)
    }

    /// The lock of `key`; `keep` says whether an idle lock's `T` is still worth keeping when
    /// idle locks are swept.
    pub(crate) fn of_keeping<Q>(
        &self,
        key: &Q,
        keep: impl Fn(&T) -> bool,
    ) -> Arc<tokio::sync::Mutex<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut guard = self.map.lock().expect("keyed locks lock");
        let (map, next_sweep) = &mut *guard;
        if let Some(lock) = map.get(key) {
            return lock.clone();
        }
        if map.len() >= *next_sweep {
            // Held or awaited: someone else has the `Arc` (a locked one is held).
            map.retain(|_, lock| {
                Arc::strong_count(lock) > 1 || lock.try_lock().map_or(true, |t| keep(&t))
            });
            *next_sweep = (map.len() * 2).max(MIN_SWEEP);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(T::default()));
        map.insert(key.to_owned(), lock.clone());
        lock
    }

    /// Keys with a lock now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().expect("keyed locks lock").0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_locks_are_swept_and_busy_ones_kept() {
        let locks: KeyedLocks<String, u32> = KeyedLocks::default();
        let held = locks.of("held");
        let guard = held.lock().await;
        let awaited = locks.of("awaited");
        let marked = locks.of("marked");
        *marked.lock().await = 7;
        drop(marked);
        assert!(Arc::ptr_eq(&locks.of("awaited"), &awaited));
        for i in 0..10_000 {
            drop(locks.of_keeping(&format!("k{i}"), |t| *t == 7));
            assert!(locks.len() <= 2 * MIN_SWEEP + 3, "{}", locks.len());
        }
        // The held, the awaited and the one whose state is worth keeping are still the same.
        assert!(Arc::ptr_eq(&locks.of("awaited"), &awaited));
        assert_eq!(*locks.of("marked").lock().await, 7);
        drop(guard);
        assert!(Arc::ptr_eq(&locks.of("held"), &held));
    }
}
