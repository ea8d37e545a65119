//! The upstream files privreg holds: in memory, loaded from the disk cache on first use, and
//! written back to it when an answer changes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use privreg_shared::config::Upstream;
use privreg_shared::index::IndexFile;
use privreg_shared::store::{self, Cache, FirstSeen, Meta, Stored, UpstreamPath};

use super::classify::Answer;
use super::request::rel_url;

/// One upstream file as privreg knows it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub meta: Meta,
    pub body: Bytes,
    /// The parsed index file, for present index entries.
    pub file: Option<Arc<IndexFile>>,
    /// Changes whenever the body does (a 304 keeps it).
    pub rev: u64,
    /// When privreg first saw the versions of an index file that appeared after its first
    /// fetch and have no `pubtime` (empty for other files).
    pub seen: Arc<FirstSeen>,
}

impl Entry {
    /// The entry as stored (metadata and body).
    pub(crate) fn stored(&self) -> Stored {
        Stored {
            meta: self.meta.clone(),
            body: self.body.clone(),
        }
    }

    /// The same body (and parsed file, and revision) under other metadata.
    fn with_meta(&self, meta: Meta) -> Entry {
        Entry {
            meta,
            body: self.body.clone(),
            file: self.file.clone(),
            rev: self.rev,
            seen: self.seen.clone(),
        }
    }
}

/// A file of an upstream: the upstream's cache directory name and the file's path.
pub(super) type Key = (String, String);

pub(super) fn key(up: &Upstream, rel: UpstreamPath<'_>) -> Key {
    (store::upstream_dir_name(up), rel_url(rel))
}

/// Whether `entry` was confirmed by its upstream less than `ttl` before `now`.
pub(super) fn fresh_at(entry: &Entry, ttl: Duration, now: SystemTime) -> bool {
    now.duration_since(entry.meta.fetched_at())
        .is_ok_and(|age| age < ttl)
}

/// Whether `entry` was confirmed by its upstream less than `ttl` ago.
pub(super) fn fresh(entry: &Entry, ttl: Duration) -> bool {
    fresh_at(entry, ttl, SystemTime::now())
}

/// What an answer confirmed at `now` (seconds) makes of the file, given the entry `held`; with
/// the revision to keep when the body is unchanged (a 304).
///
/// # Panics
///
/// On a 304 without a held entry: only a conditional request can get one.
pub(super) fn stored(answer: Answer, held: Option<&Entry>, now: u64) -> (Stored, Option<u64>) {
    match answer {
        Answer::Modified { body, validators } => (
            Stored {
                meta: Meta {
                    present: true,
                    etag: validators.etag,
                    last_modified: validators.last_modified,
                    fetched: now,
                },
                body,
            },
            None,
        ),
        Answer::NotModified(validators) => {
            let old = held.expect("304 only answers a conditional request");
            let meta = Meta {
                present: true,
                etag: validators.etag.or_else(|| old.meta.etag.clone()),
                last_modified: validators
                    .last_modified
                    .or_else(|| old.meta.last_modified.clone()),
                fetched: now,
            };
            let body = old.body.clone();
            (Stored { meta, body }, Some(old.rev))
        }
        Answer::Absent => (
            Stored {
                meta: Meta {
                    present: false,
                    etag: None,
                    last_modified: None,
                    fetched: now,
                },
                body: Bytes::new(),
            },
            None,
        ),
    }
}

/// Whether the disk copy can stay as it is: a 304 that leaves the validators as they were
/// changes nothing worth a rewrite of the whole file (the new freshness lives in memory; after a
/// restart the file is only revalidated a little sooner).
pub(super) fn unchanged_on_disk(kept_rev: Option<u64>, held: Option<&Entry>, new: &Meta) -> bool {
    kept_rev.is_some()
        && held.is_some_and(|old| {
            old.meta.etag == new.etag && old.meta.last_modified == new.last_modified
        })
}

/// The files held, in memory before the disk.
pub(super) struct Memory {
    cache: Cache,
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    next_rev: AtomicU64,
}

impl Memory {
    pub(super) fn new(cache: Cache) -> Memory {
        Memory {
            cache,
            entries: Mutex::default(),
            next_rev: AtomicU64::new(1),
        }
    }

    /// A new entry for `stored`, with a new revision and (for a present index file) the parsed
    /// file, its versions dated by `seen`.
    fn entry_from(
        &self,
        stored: Stored,
        rel: UpstreamPath<'_>,
        up: &Upstream,
        seen: FirstSeen,
    ) -> Entry {
        let file = match rel {
            UpstreamPath::Index(krate) if stored.meta.present => {
                let file = IndexFile::parse_for(krate, stored.body.clone());
                for s in &file.skipped {
                    tracing::warn!(upstream = %up.name, krate = %krate, line = s.line, reason = %s.reason, "skipping an index line cargo could not use");
                }
                Some(Arc::new(file))
            }
            _ => None,
        };
        Entry {
            meta: stored.meta,
            body: stored.body,
            file,
            rev: self.next_rev.fetch_add(1, Ordering::Relaxed),
            seen: Arc::new(seen),
        }
    }

    /// The first-seen record of an index file whose body `held` (`None`: nothing was held)
    /// was just replaced by `file` (`None`: a 404) at `now`; written to disk when it changes.
    fn first_seen_after(
        &self,
        up: &Upstream,
        krate: &privreg_shared::CrateName,
        held: Option<&Entry>,
        file: Option<&IndexFile>,
        now: u64,
    ) -> FirstSeen {
        let absent = IndexFile::default();
        let before = held.map(|h| h.file.as_deref().unwrap_or(&absent));
        let record = held.map_or_else(|| self.cache.first_seen(up, krate), |h| (*h.seen).clone());
        let after = record.update(before, file.unwrap_or(&absent), now);
        if after != record
            && let Err(e) = self.cache.store_first_seen(up, krate, &after)
        {
            tracing::warn!(error = %e, "cannot record when versions were first seen");
        }
        after
    }

    /// The entry in memory, else on disk (loaded into memory).
    pub(super) fn known(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: &Key,
    ) -> Option<Arc<Entry>> {
        if let Some(e) = self.entries.lock().expect("memory lock").get(key) {
            return Some(e.clone());
        }
        let stored = match self.cache.load(up, rel) {
            Ok(s) => s?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cache");
                return None;
            }
        };
        let seen = match rel {
            UpstreamPath::Index(krate) if stored.meta.present => self.cache.first_seen(up, krate),
            _ => FirstSeen::default(),
        };
        let entry = Arc::new(self.entry_from(stored, rel, up, seen));
        self.insert(key.clone(), entry.clone());
        Some(entry)
    }

    fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.entries.lock().expect("memory lock").insert(key, entry);
    }

    /// Records a usable answer for a file, given the entry held before: on disk (unless a 304
    /// left it as it was) and in memory. Returns the new entry and whether its body changed.
    pub(super) fn remember(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: Key,
        answer: Answer,
        held: Option<&Arc<Entry>>,
    ) -> (Arc<Entry>, bool) {
        let held = held.map(|e| &**e);
        let now = store::now_secs();
        let (stored, kept_rev) = stored(answer, held, now);
        if !unchanged_on_disk(kept_rev, held, &stored.meta)
            && let Err(e) = self.cache.store(up, rel, &stored)
        {
            tracing::warn!(error = %e, "cannot write the cache; serving without caching");
        }
        let entry = if let (Some(rev), Some(old)) = (kept_rev, held) {
            // Unchanged body: keep the parsed file and its dates.
            Arc::new(Entry {
                meta: stored.meta,
                body: stored.body,
                file: old.file.clone(),
                rev,
                seen: old.seen.clone(),
            })
        } else {
            let mut entry = self.entry_from(stored, rel, up, FirstSeen::default());
            if let UpstreamPath::Index(krate) = rel {
                let seen = self.first_seen_after(up, krate, held, entry.file.as_deref(), now);
                entry.seen = Arc::new(seen);
            }
            Arc::new(entry)
        };
        self.insert(key, entry.clone());
        (entry, kept_rev.is_none())
    }

    /// Takes a file from another cache (the shared tier) as it is, metadata included: on disk
    /// and in memory. Versions new against `held` are dated now, as after a revalidation.
    pub(super) fn adopt(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: Key,
        stored: Stored,
        held: Option<&Arc<Entry>>,
    ) -> Arc<Entry> {
        if let Err(e) = self.cache.store(up, rel, &stored) {
            tracing::warn!(error = %e, "cannot write the cache; serving without caching");
        }
        let mut entry = self.entry_from(stored, rel, up, FirstSeen::default());
        if let UpstreamPath::Index(krate) = rel {
            let held = held.map(|e| &**e);
            let seen =
                self.first_seen_after(up, krate, held, entry.file.as_deref(), store::now_secs());
            entry.seen = Arc::new(seen);
        }
        let entry = Arc::new(entry);
        self.insert(key, entry.clone());
        entry
    }

    /// Makes the entry in memory stale and without validators, so that the next request asks
    /// the upstream without conditions (some upstreams keep their ETag across a yank, and a 304
    /// would keep the old body).
    pub(super) fn invalidate(&self, key: &Key) {
        if let Some(e) = self.entries.lock().expect("memory lock").get_mut(key) {
            let meta = Meta {
                fetched: 0,
                etag: None,
                last_modified: None,
                ..e.meta.clone()
            };
            *e = Arc::new(e.with_meta(meta));
        }
    }

    /// Puts an expired copy of `old` in memory so that the next fetch asks the upstream
    /// (`unconditional`: without its validators).
    pub(super) fn expire(&self, key: Key, old: &Entry, unconditional: bool) {
        let mut meta = Meta {
            fetched: 0,
            ..old.meta.clone()
        };
        if unconditional {
            (meta.etag, meta.last_modified) = (None, None);
        }
        self.insert(key, Arc::new(old.with_meta(meta)));
    }

    /// Puts `old` back when memory still holds the copy [`Memory::expire`] made of it (nothing
    /// new came in meanwhile).
    pub(super) fn restore(&self, key: Key, old: &Arc<Entry>) {
        let mut entries = self.entries.lock().expect("memory lock");
        if entries
            .get(&key)
            .is_some_and(|e| e.rev == old.rev && e.meta.fetched == 0)
        {
            entries.insert(key, old.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify::Validators;
    use super::*;

    fn entry(present: bool, etag: Option<&str>, lm: Option<&str>, rev: u64) -> Entry {
        Entry {
            meta: Meta {
                present,
                etag: etag.map(str::to_owned),
                last_modified: lm.map(str::to_owned),
                fetched: 10,
            },
            body: Bytes::from_static(b"old"),
            file: None,
            rev,
            seen: Arc::default(),
        }
    }

    fn validators(etag: Option<&str>, lm: Option<&str>) -> Validators {
        Validators {
            etag: etag.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
        }
    }

    #[test]
    fn answers_become_stored_files() {
        let held = entry(true, Some("\"e1\""), Some("monday"), 7);
        let new = Answer::Modified {
            body: Bytes::from_static(b"new"),
            validators: validators(Some("\"e2\""), None),
        };
        let (s, kept) = stored(new, Some(&held), 99);
        assert_eq!((&s.body[..], kept), (&b"new"[..], None));
        assert_eq!(
            (s.meta.present, s.meta.etag.as_deref(), s.meta.last_modified),
            (true, Some("\"e2\""), None)
        );
        assert_eq!(s.meta.fetched, 99);

        // A 304 keeps the body and revision; validators it omits stay as they were.
        let same = Answer::NotModified(validators(None, Some("tuesday")));
        let (s, kept) = stored(same, Some(&held), 99);
        assert_eq!((&s.body[..], kept), (&b"old"[..], Some(7)));
        assert_eq!(s.meta.etag.as_deref(), Some("\"e1\""));
        assert_eq!(s.meta.last_modified.as_deref(), Some("tuesday"));

        let (s, kept) = stored(Answer::Absent, Some(&held), 99);
        assert_eq!((s.body.len(), kept, s.meta.present), (0, None, false));
        assert_eq!((s.meta.etag, s.meta.last_modified), (None, None));
    }

    #[test]
    fn only_a_304_with_the_same_validators_skips_the_disk() {
        let held = entry(true, Some("\"e1\""), Some("monday"), 7);
        let meta = |etag: &str, lm: &str| Meta {
            present: true,
            etag: Some(etag.to_owned()),
            last_modified: Some(lm.to_owned()),
            fetched: 99,
        };
        let cases = [
            (Some(7), Some(&held), meta("\"e1\"", "monday"), true),
            (Some(7), Some(&held), meta("\"e2\"", "monday"), false),
            (Some(7), Some(&held), meta("\"e1\"", "tuesday"), false),
            (None, Some(&held), meta("\"e1\"", "monday"), false),
            (Some(7), None, meta("\"e1\"", "monday"), false),
        ];
        for (i, (kept, held, new, want)) in cases.into_iter().enumerate() {
            assert_eq!(unchanged_on_disk(kept, held, &new), want, "case {i}");
        }
    }

    #[test]
    fn freshness_is_the_age_against_the_ttl() {
        let e = entry(true, None, None, 1);
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let ttl = Duration::from_secs(5);
        assert!(fresh_at(&e, ttl, at(10)));
        assert!(fresh_at(&e, ttl, at(14)));
        assert!(!fresh_at(&e, ttl, at(15)));
        // A clock that went back: not fresh.
        assert!(!fresh_at(&e, ttl, at(9)));
    }

    /// Index lines of crate `foo` for these versions, without `pubtime`.
    fn foo_body(versions: &[&str]) -> Bytes {
        let ck = "c".repeat(64);
        versions
            .iter()
            .map(|v| format!(r#"{{"name":"foo","vers":"{v}","deps":[],"cksum":"{ck}"}}"#) + "\n")
            .collect::<String>()
            .into()
    }

    #[test]
    fn versions_that_appear_after_the_first_fetch_are_dated_durably() {
        let dir = tempfile::tempdir().unwrap();
        let up = super::super::test_upstream();
        let krate = privreg_shared::CrateName::new("foo").unwrap();
        let rel = UpstreamPath::Index(&krate);
        let memory = Memory::new(Cache::new(dir.path()));
        let answer = |versions: &[&str]| Answer::Modified {
            body: foo_body(versions),
            validators: validators(None, None),
        };
        let v = |s: &str| semver::Version::parse(s).unwrap();
        let (first, _) = memory.remember(&up, rel, key(&up, rel), answer(&["1.0.0"]), None);
        assert!(first.seen.is_empty(), "the first fetch dates nothing");
        let before = store::now_secs();
        let (second, changed) = memory.remember(
            &up,
            rel,
            key(&up, rel),
            answer(&["1.0.0", "1.1.0"]),
            Some(&first),
        );
        assert!(changed);
        assert_eq!(second.seen.get(&v("1.0.0")), None);
        let dated = second.seen.get(&v("1.1.0")).expect("1.1.0 is dated");
        assert!((before..=store::now_secs()).contains(&dated));
        // A 304 keeps the record; a restart reads it back from the disk.
        let (third, _) = memory.remember(
            &up,
            rel,
            key(&up, rel),
            Answer::NotModified(validators(None, None)),
            Some(&second),
        );
        assert!(Arc::ptr_eq(&third.seen, &second.seen));
        let restarted = Memory::new(Cache::new(dir.path()));
        let loaded = restarted.known(&up, rel, &key(&up, rel)).unwrap();
        assert_eq!(*loaded.seen, *second.seen);
        // A 404 forgets it, and a crate that comes back is new as a whole.
        let (gone, _) = restarted.remember(&up, rel, key(&up, rel), Answer::Absent, Some(&loaded));
        assert!(gone.seen.is_empty());
        assert!(Cache::new(dir.path()).first_seen(&up, &krate).is_empty());
        let (back, _) =
            restarted.remember(&up, rel, key(&up, rel), answer(&["1.0.0"]), Some(&gone));
        assert!(back.seen.get(&v("1.0.0")).is_some());
    }

    #[test]
    fn expiring_invalidating_and_restoring_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory::new(Cache::new(dir.path()));
        let k: Key = ("acme-0".into(), "config.json".into());
        let old = Arc::new(entry(true, Some("\"e1\""), Some("monday"), 3));
        memory.insert(k.clone(), old.clone());
        let now = |m: &Memory| m.entries.lock().unwrap()[&k].clone();

        memory.expire(k.clone(), &old, false);
        let e = now(&memory);
        assert_eq!((e.meta.fetched, e.rev), (0, 3));
        assert_eq!(e.meta.etag.as_deref(), Some("\"e1\""));
        memory.restore(k.clone(), &old);
        assert!(Arc::ptr_eq(&now(&memory), &old));

        memory.expire(k.clone(), &old, true);
        let e = now(&memory);
        assert_eq!(
            (e.meta.etag.clone(), e.meta.last_modified.clone()),
            (None, None)
        );
        // Something new came in meanwhile: it stays.
        let newer = Arc::new(entry(true, None, None, 4));
        memory.insert(k.clone(), newer.clone());
        memory.restore(k.clone(), &old);
        assert!(Arc::ptr_eq(&now(&memory), &newer));

        memory.invalidate(&k);
        let e = now(&memory);
        assert_eq!((e.meta.fetched, e.meta.etag.clone(), e.rev), (0, None, 4));
        assert!(e.meta.present);
    }
}
