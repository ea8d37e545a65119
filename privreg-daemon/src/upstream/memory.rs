//! The upstream files privreg holds: in memory within a budget (`limits.index-memory`, least
//! recently used first out), read from the disk cache on first use and again after they left
//! memory, and written back to it when an answer changes them. The layered view's merged files
//! share the budget.
//!
//! A file that leaves memory keeps what the disk copy does not know yet (a later confirmation by
//! its upstream, an invalidation) in a small side table, so that reading it back changes neither
//! its freshness nor what the next request asks the upstream.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::Equivalent;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use privreg_shared::index::IndexFile;
use privreg_shared::store::{self, Cache, FirstSeen, Meta, Stored, UpstreamPath};

use super::classify::Answer;
use super::request::rel_url;
use crate::layered::MergedBody;
use crate::metrics::Metrics;

/// Whether the disk cache holds what an [`Entry`] in memory says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDisk {
    /// The same body and metadata.
    Same,
    /// The same body under older metadata: a 304 that only confirmed it again (not rewritten,
    /// see [`unchanged_on_disk`]), or an expiry or invalidation.
    Behind,
    /// Not this body: writing it failed (a full disk).
    Missing,
}

/// One upstream file as privreg knows it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub meta: Meta,
    pub body: Bytes,
    /// The parsed index file, for present index entries.
    pub file: Option<Arc<IndexFile>>,
    /// Changes whenever the body does (a 304 keeps it).
    pub rev: u64,
    /// What the disk cache holds of it.
    pub disk: OnDisk,
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

    /// The same body (and parsed file, and revision) under other metadata, which the disk copy
    /// does not have.
    fn with_meta(&self, meta: Meta) -> Entry {
        Entry {
            meta,
            body: self.body.clone(),
            file: self.file.clone(),
            rev: self.rev,
            disk: match self.disk {
                OnDisk::Missing => OnDisk::Missing,
                OnDisk::Same | OnDisk::Behind => OnDisk::Behind,
            },
            seen: self.seen.clone(),
        }
    }

    /// About how many bytes of memory the entry holds: its body, its parsed lines and its
    /// metadata (the cache's own bookkeeping is [`OVERHEAD`]).
    pub(crate) fn weight(&self) -> usize {
        let strings = [&self.meta.etag, &self.meta.last_modified]
            .into_iter()
            .flatten()
            .map(String::capacity)
            .sum::<usize>();
        let parsed = self
            .file
            .as_ref()
            .map_or(0, |f| size_of::<IndexFile>() + f.parsed_bytes());
        // A first-seen date: a map node, the version and the time.
        let seen = self.seen.len() * (size_of::<(semver::Version, u64)>() + 32);
        size_of::<Entry>() + self.body.len() + strings + parsed + seen
    }

    /// The metadata to keep when the entry leaves memory, if the disk copy lacks it: with a
    /// body that was never written, whatever the disk holds is stale and must be asked for
    /// without conditions.
    fn unwritten(&self) -> Option<Meta> {
        match self.disk {
            OnDisk::Same => None,
            OnDisk::Behind => Some(self.meta.clone()),
            OnDisk::Missing => Some(expired(&self.meta, true)),
        }
    }
}

/// `meta`, expired (`unconditional`: without its validators too).
fn expired(meta: &Meta, unconditional: bool) -> Meta {
    let mut meta = Meta {
        fetched: 0,
        ..meta.clone()
    };
    if unconditional {
        (meta.etag, meta.last_modified) = (None, None);
    }
    meta
}

/// The metadata of a file read back from disk, given what memory knew of it when it left
/// (`newer`): the later confirmation of the same answer, or an expiry or invalidation
/// (`fetched` 0) of whatever is on disk; a disk copy written since wins otherwise.
pub(super) fn overlay(disk: Meta, newer: &Meta) -> Meta {
    let same = disk.present == newer.present
        && disk.etag == newer.etag
        && disk.last_modified == newer.last_modified;
    match (same, newer.fetched) {
        (true, 0) => Meta { fetched: 0, ..disk },
        (true, at) => Meta {
            fetched: disk.fetched.max(at),
            ..disk
        },
        (false, 0) => expired(&disk, true),
        (false, _) => disk,
    }
}

/// A file of an upstream: the upstream's cache directory name and the file's path.
pub(super) type Key = (String, String);

pub(super) fn key(up: &Upstream, rel: UpstreamPath<'_>) -> Key {
    (store::upstream_dir_name(up), rel_url(rel))
}

/// Whether `entry` was confirmed by its upstream less than `ttl` before `now`.
pub(super) fn fresh_at(entry: &Entry, ttl: Duration, now: SystemTime) -> bool {
    meta_fresh_at(&entry.meta, ttl, now)
}

/// Whether a file with metadata `meta` was confirmed less than `ttl` before `now`.
fn meta_fresh_at(meta: &Meta, ttl: Duration, now: SystemTime) -> bool {
    now.duration_since(meta.fetched_at())
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
            old.disk != OnDisk::Missing
                && old.meta.etag == new.etag
                && old.meta.last_modified == new.last_modified
        })
}

/// What memory holds under one name: an upstream's file, or a crate's merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    File(Key),
    Merged(CrateName),
}

/// A [`Slot`] by reference, to look one up without copying its key.
#[derive(Clone, Copy)]
enum SlotRef<'a> {
    File(&'a Key),
    Merged(&'a CrateName),
}

impl Hash for SlotRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            SlotRef::File(k) => (0u8, k).hash(state),
            SlotRef::Merged(c) => (1u8, c).hash(state),
        }
    }
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Slot::File(k) => SlotRef::File(k),
            Slot::Merged(c) => SlotRef::Merged(c),
        }
        .hash(state);
    }
}

impl Equivalent<Slot> for SlotRef<'_> {
    fn equivalent(&self, slot: &Slot) -> bool {
        match (self, slot) {
            (SlotRef::File(a), Slot::File(b)) => *a == b,
            (SlotRef::Merged(a), Slot::Merged(b)) => *a == b,
            _ => false,
        }
    }
}

/// What a [`Slot`] holds.
#[derive(Debug, Clone)]
enum Held {
    File(Arc<Entry>),
    Merged(Arc<MergedBody>),
}

/// Bytes weighed per entry besides its contents: the cache's node, hash-table slot and queue
/// links, the `Arc`, and the allocator's bookkeeping of each block (and, for a file read from
/// disk, the metadata line its body was sliced from).
pub(super) const OVERHEAD: usize = 320;

/// The share of the budget (one part in this many) for the metadata of files that left memory.
const SIDE_SHARE: u64 = 32;

fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The weight of what `slot` holds against the budget: about the bytes it keeps alive.
fn weigh(slot: &Slot, held: &Held) -> u32 {
    let key = match slot {
        Slot::File((dir, path)) => dir.capacity() + path.capacity(),
        Slot::Merged(krate) => krate.as_str().len(),
    };
    let value = match held {
        Held::File(e) => e.weight(),
        Held::Merged(m) => m.weight(),
    };
    weight(OVERHEAD + key + value)
}

/// The weight of a side-table row: a key and its metadata.
fn weigh_meta(key: &Key, meta: &Meta) -> u32 {
    let strings = [&meta.etag, &meta.last_modified]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
    weight(OVERHEAD + key.0.len() + key.1.len() + size_of::<Meta>() + strings)
}

/// What memory holds now, for `/-/status`, the status page and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub bytes: u64,
    pub budget: u64,
    pub entries: u64,
}

/// The files held, in memory before the disk, within a budget.
pub(crate) struct Memory {
    cache: Cache,
    held: moka::sync::Cache<Slot, Held>,
    /// Per file that left memory: metadata the disk copy lacks (see [`Entry::unwritten`]),
    /// applied when the file is read back (see [`overlay`]). Part of the budget.
    newer: moka::sync::Cache<Key, Meta>,
    budget: u64,
    next_rev: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Memory {
    /// Memory for files of `cache`, holding about `budget` bytes at most.
    pub(crate) fn new(cache: Cache, budget: u64, metrics: Arc<Metrics>) -> Memory {
        let side = budget / SIDE_SHARE;
        let newer = moka::sync::Cache::builder()
            .max_capacity(side)
            .weigher(weigh_meta)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let (keep, counted) = (newer.clone(), metrics.clone());
        let held = moka::sync::Cache::builder()
            .max_capacity(budget - side)
            .weigher(weigh)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |slot: Arc<Slot>, held: Held, cause| {
                if cause != RemovalCause::Size {
                    return;
                }
                counted.memory_eviction();
                if let (Slot::File(key), Held::File(e)) = (&*slot, &held)
                    && let Some(meta) = e.unwritten()
                {
                    keep.insert(key.clone(), meta);
                }
            })
            .build();
        Memory {
            cache,
            held,
            newer,
            budget,
            next_rev: AtomicU64::new(1),
            metrics,
        }
    }

    /// What memory holds now (pending evictions done first, so that it is within the budget).
    pub(crate) fn usage(&self) -> Usage {
        self.held.run_pending_tasks();
        self.newer.run_pending_tasks();
        Usage {
            bytes: self.held.weighted_size() + self.newer.weighted_size(),
            budget: self.budget,
            entries: self.held.entry_count(),
        }
    }

    /// A new entry for `stored`, with a new revision and (for a present index file) the parsed
    /// file, its versions dated by `seen`.
    fn entry_from(
        &self,
        stored: Stored,
        rel: UpstreamPath<'_>,
        up: &Upstream,
        disk: OnDisk,
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
            disk,
            seen: Arc::new(seen),
        }
    }

    /// The first-seen record of an index file whose body `held` (`None`: nothing was held)
    /// was just replaced by `file` (`None`: a 404) at `now`; written to disk when it changes.
    fn first_seen_after(
        &self,
        up: &Upstream,
        krate: &CrateName,
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

    /// The entry of `key` if memory holds it (no lookup counted).
    fn held_file(&self, key: &Key) -> Option<Arc<Entry>> {
        match self.held.get(&SlotRef::File(key)) {
            Some(Held::File(e)) => Some(e),
            _ => None,
        }
    }

    /// The present index files of the upstream whose cache directory is `dir` that memory holds
    /// and that are not expired (sparse-index path, file), by path.
    pub(crate) fn index_files(&self, dir: &str) -> Vec<(String, Stored)> {
        let mut files: Vec<(String, Stored)> = self
            .held
            .iter()
            .filter_map(|(slot, held)| match (&*slot, held) {
                (Slot::File((d, path)), Held::File(e))
                    if d == dir && e.file.is_some() && e.meta.present && e.meta.fetched > 0 =>
                {
                    Some((path.clone(), e.stored()))
                }
                _ => None,
            })
            .collect();
        files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        files
    }

    /// Whether memory holds the file (no lookup counted, nothing read).
    pub(super) fn holds(&self, key: &Key) -> bool {
        self.held.contains_key(&SlotRef::File(key))
    }

    /// Whether the disk copy of a file that is not in memory was confirmed less than `ttl` ago,
    /// from its metadata line alone (nothing is loaded into memory). False when memory knows
    /// something newer of it (an invalidation, a later confirmation).
    pub(super) fn fresh_on_disk(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: &Key,
        ttl: Duration,
    ) -> bool {
        !self.newer.contains_key(key)
            && self
                .cache
                .load_meta(up, rel)
                .is_some_and(|m| meta_fresh_at(&m, ttl, SystemTime::now()))
    }

    /// The entry in memory, else on disk (read back into memory, with what memory knew of it
    /// when it left).
    pub(super) fn known(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: &Key,
    ) -> Option<Arc<Entry>> {
        if let Some(e) = self.held_file(key) {
            self.metrics.memory_lookup(true);
            return Some(e);
        }
        self.metrics.memory_lookup(false);
        let mut stored = match self.cache.load(up, rel) {
            Ok(s) => s?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cache");
                return None;
            }
        };
        self.metrics.memory_disk_read();
        let mut disk = OnDisk::Same;
        if let Some(newer) = self.newer.remove(key) {
            let meta = overlay(stored.meta.clone(), &newer);
            if meta != stored.meta {
                (stored.meta, disk) = (meta, OnDisk::Behind);
            }
        }
        let seen = match rel {
            UpstreamPath::Index(krate) if stored.meta.present => self.cache.first_seen(up, krate),
            _ => FirstSeen::default(),
        };
        let entry = Arc::new(self.entry_from(stored, rel, up, disk, seen));
        self.insert(key.clone(), entry.clone());
        Some(entry)
    }

    fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.held.insert(Slot::File(key), Held::File(entry));
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
        let disk = if unchanged_on_disk(kept_rev, held, &stored.meta) {
            OnDisk::Behind
        } else {
            self.newer.invalidate(&key);
            match self.cache.store(up, rel, &stored) {
                Ok(()) => OnDisk::Same,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the cache; serving without caching");
                    OnDisk::Missing
                }
            }
        };
        let entry = if let (Some(rev), Some(old)) = (kept_rev, held) {
            // Unchanged body: keep the parsed file and its dates.
            Arc::new(Entry {
                meta: stored.meta,
                body: stored.body,
                file: old.file.clone(),
                rev,
                disk,
                seen: old.seen.clone(),
            })
        } else {
            let mut entry = self.entry_from(stored, rel, up, disk, FirstSeen::default());
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
        self.newer.invalidate(&key);
        let disk = match self.cache.store(up, rel, &stored) {
            Ok(()) => OnDisk::Same,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the cache; serving without caching");
                OnDisk::Missing
            }
        };
        let mut entry = self.entry_from(stored, rel, up, disk, FirstSeen::default());
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

    /// Makes the file stale and without validators, so that the next request asks the upstream
    /// without conditions (some upstreams keep their ETag across a yank, and a 304 would keep
    /// the old body); also when only the disk holds it.
    pub(crate) fn invalidate(&self, key: &Key) {
        if let Some(e) = self.held_file(key) {
            self.insert(key.clone(), Arc::new(e.with_meta(expired(&e.meta, true))));
        } else {
            let stale = Meta {
                present: true,
                etag: None,
                last_modified: None,
                fetched: 0,
            };
            self.newer.insert(key.clone(), stale);
        }
    }

    /// Drops the file from memory, and what memory kept of it after it left: for a file removed
    /// from the disk cache, so that nothing stays of it and the next request asks the upstream.
    pub(crate) fn forget(&self, key: &Key) {
        self.held.invalidate(&SlotRef::File(key));
        self.newer.invalidate(key);
    }

    /// Puts an expired copy of `old` in memory so that the next fetch asks the upstream
    /// (`unconditional`: without its validators).
    pub(super) fn expire(&self, key: Key, old: &Entry, unconditional: bool) {
        let meta = expired(&old.meta, unconditional);
        self.insert(key, Arc::new(old.with_meta(meta)));
    }

    /// Puts `old` back when memory still holds the copy [`Memory::expire`] made of it (nothing
    /// new came in meanwhile).
    pub(super) fn restore(&self, key: Key, old: &Arc<Entry>) {
        if self
            .held_file(&key)
            .is_some_and(|e| e.rev == old.rev && e.meta.fetched == 0)
        {
            self.insert(key, old.clone());
        }
    }

    /// The merged view of `krate` held, if any.
    pub(crate) fn merged(&self, krate: &CrateName) -> Option<Arc<MergedBody>> {
        match self.held.get(&SlotRef::Merged(krate)) {
            Some(Held::Merged(m)) => Some(m),
            _ => None,
        }
    }

    /// Holds the merged view of `krate`.
    pub(crate) fn remember_merged(&self, krate: CrateName, merged: Arc<MergedBody>) {
        self.held.insert(Slot::Merged(krate), Held::Merged(merged));
    }

    /// Drops the merged view of `krate`.
    pub(crate) fn forget_merged(&self, krate: &CrateName) {
        self.held.invalidate(&SlotRef::Merged(krate));
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

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
            disk: OnDisk::Same,
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
        let missing = Entry {
            disk: OnDisk::Missing,
            ..entry(true, Some("\"e1\""), Some("monday"), 7)
        };
        let cases = [
            (Some(7), Some(&held), meta("\"e1\"", "monday"), true),
            // A body whose write failed is written again.
            (Some(7), Some(&missing), meta("\"e1\"", "monday"), false),
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

    fn memory(dir: &tempfile::TempDir, budget: u64) -> (Memory, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let memory = Memory::new(Cache::new(dir.path()), budget, metrics.clone());
        (memory, metrics)
    }

    fn held_now(m: &Memory, k: &Key) -> Arc<Entry> {
        m.held_file(k).expect("held in memory")
    }

    /// Whether memory holds `key`, without making it recently used.
    fn holds(m: &Memory, k: &Key) -> bool {
        m.held.run_pending_tasks();
        m.held.contains_key(&SlotRef::File(k))
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
        let (mem, _) = memory(&dir, 1 << 20);
        let answer = |versions: &[&str]| Answer::Modified {
            body: foo_body(versions),
            validators: validators(None, None),
        };
        let v = |s: &str| semver::Version::parse(s).unwrap();
        let (first, _) = mem.remember(&up, rel, key(&up, rel), answer(&["1.0.0"]), None);
        assert!(first.seen.is_empty(), "the first fetch dates nothing");
        let before = store::now_secs();
        let (second, changed) = mem.remember(
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
        let (third, _) = mem.remember(
            &up,
            rel,
            key(&up, rel),
            Answer::NotModified(validators(None, None)),
            Some(&second),
        );
        assert!(Arc::ptr_eq(&third.seen, &second.seen));
        let (restarted, _) = memory(&dir, 1 << 20);
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
        let (memory, _) = memory(&dir, 1 << 20);
        let k: Key = ("acme-0".into(), "config.json".into());
        let old = Arc::new(entry(true, Some("\"e1\""), Some("monday"), 3));
        memory.insert(k.clone(), old.clone());
        let now = |m: &Memory| held_now(m, &k);

        memory.expire(k.clone(), &old, false);
        let e = now(&memory);
        assert_eq!((e.meta.fetched, e.rev, e.disk), (0, 3, OnDisk::Behind));
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

    #[test]
    fn read_back_metadata_keeps_what_memory_knew() {
        let meta = |etag: Option<&str>, fetched| Meta {
            present: true,
            etag: etag.map(str::to_owned),
            last_modified: None,
            fetched,
        };
        let disk = meta(Some("\"e1\""), 100);
        // Confirmed later by a 304: the later time; never an earlier one.
        assert_eq!(
            overlay(disk.clone(), &meta(Some("\"e1\""), 500)),
            meta(Some("\"e1\""), 500)
        );
        assert_eq!(overlay(disk.clone(), &meta(Some("\"e1\""), 50)), disk);
        // Expired with its validators: stale, asked for conditionally.
        assert_eq!(
            overlay(disk.clone(), &meta(Some("\"e1\""), 0)),
            meta(Some("\"e1\""), 0)
        );
        // Invalidated (or a body never written): stale, asked for without conditions.
        assert_eq!(overlay(disk.clone(), &meta(None, 0)), meta(None, 0));
        // A disk copy written since (other validators) wins over a confirmation of the old one.
        assert_eq!(overlay(disk.clone(), &meta(Some("\"e0\""), 500)), disk);
        let absent = Meta {
            present: false,
            ..meta(None, 500)
        };
        assert_eq!(overlay(disk.clone(), &absent), disk);
    }

    #[test]
    fn the_weight_counts_the_body_the_parsed_lines_and_the_bookkeeping() {
        let line = |v: u32| {
            format!(
                "{{\"name\":\"c\",\"vers\":\"1.0.{v}\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
                "0".repeat(64)
            )
        };
        let body = Bytes::from((0..50).map(line).collect::<String>());
        let file = Arc::new(IndexFile::parse_bytes(body.clone()));
        assert_eq!(file.lines.len(), 50);
        let parsed = file.parsed_bytes();
        let e = Entry {
            file: Some(file),
            body: body.clone(),
            ..entry(true, Some("\"etag\""), None, 1)
        };
        assert!(e.weight() >= body.len() + parsed + size_of::<IndexFile>());
        let key: Key = ("acme-0123456789ab".into(), "c".into());
        let w = weigh(&Slot::File(key.clone()), &Held::File(Arc::new(e)));
        assert!(
            w as usize >= body.len() + parsed + OVERHEAD + key.0.len(),
            "{w}"
        );
        // Honest, not padded: within a few hundred bytes per line of what it holds.
        assert!((w as usize) < 2 * body.len() + parsed + 2 * OVERHEAD, "{w}");
        // A 404 weighs its bookkeeping only.
        let absent = weigh(
            &Slot::File(key),
            &Held::File(Arc::new(entry(false, None, None, 1))),
        );
        assert!((absent as usize) < OVERHEAD + 256, "{absent}");
    }

    fn modified(body: &str, etag: &str) -> Answer {
        Answer::Modified {
            body: Bytes::from(body.to_owned()),
            validators: validators(Some(etag), None),
        }
    }

    fn index_body(name: &str, versions: usize) -> String {
        (0..versions).fold(String::new(), |mut body, v| {
            let _ = writeln!(
                body,
                "{{\"name\":\"{name}\",\"vers\":\"1.0.{v}\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}",
                "0".repeat(64)
            );
            body
        })
    }

    #[test]
    fn memory_stays_within_its_budget_and_reads_evicted_files_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 64 << 10;
        let (memory, metrics) = memory(&dir, budget);
        let up = super::super::test_upstream();
        let names: Vec<CrateName> = (0..200)
            .map(|i| CrateName::new(&format!("crate-{i}")).unwrap())
            .collect();
        let mut first = None;
        for name in &names {
            let rel = UpstreamPath::Index(name);
            let body = index_body(name.as_str(), 12);
            let (e, changed) =
                memory.remember(&up, rel, key(&up, rel), modified(&body, "\"1\""), None);
            assert!(changed && e.disk == OnDisk::Same);
            first.get_or_insert(e);
            let usage = memory.usage();
            assert!(usage.bytes <= budget, "{usage:?}");
            assert_eq!(usage.budget, budget);
        }
        let usage = memory.usage();
        assert!(usage.bytes > budget / 2, "the budget is used: {usage:?}");
        let counts = metrics.memory_counts();
        assert!(counts.evictions > 100, "{counts:?}");
        // What a caller holds stays whole after its file left memory.
        let first = first.unwrap();
        let rel = UpstreamPath::Index(&names[0]);
        assert!(!holds(&memory, &key(&up, rel)));
        assert_eq!(first.file.as_ref().unwrap().lines.len(), 12);

        // Read back from disk: the same body and metadata, still fresh.
        let back = memory.known(&up, rel, &key(&up, rel)).expect("on disk");
        assert_eq!((&back.body, &back.meta), (&first.body, &first.meta));
        assert_eq!(back.disk, OnDisk::Same);
        assert!(fresh(&back, Duration::from_mins(1)));
        assert_eq!(back.file.as_ref().unwrap().lines.len(), 12);
        assert_eq!(metrics.memory_counts().disk_reads, 1);
        assert!(memory.usage().bytes <= budget);
    }

    /// Fills memory with other files until `key` has left it.
    fn push_out(memory: &Memory, up: &Upstream, key: &Key) {
        let mut i = 0;
        while holds(memory, key) {
            let name = CrateName::new(&format!("filler-{i}")).unwrap();
            let rel = UpstreamPath::Index(&name);
            let body = index_body(name.as_str(), 12);
            memory.remember(up, rel, super::key(up, rel), modified(&body, "\"f\""), None);
            memory.usage();
            i += 1;
            assert!(i < 10_000, "the file never left memory");
        }
    }

    #[test]
    fn confirmations_and_invalidations_survive_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, _) = memory(&dir, 64 << 10);
        let up = super::super::test_upstream();
        let (a, b) = (
            CrateName::new("aaa").unwrap(),
            CrateName::new("bbb").unwrap(),
        );
        let (ra, rb) = (UpstreamPath::Index(&a), UpstreamPath::Index(&b));
        let (ka, kb) = (key(&up, ra), key(&up, rb));
        let body = index_body("aaa", 3);
        let (old, _) = memory.remember(&up, ra, ka.clone(), modified(&body, "\"1\""), None);
        // Written an hour ago, as far as the disk knows; then a 304 confirms it now, which
        // changes nothing on disk.
        let hour_ago = Stored {
            meta: Meta {
                fetched: old.meta.fetched - 3600,
                ..old.meta.clone()
            },
            body: old.body.clone(),
        };
        memory.cache.store(&up, ra, &hour_ago).unwrap();
        let stale = Arc::new(Entry {
            meta: hour_ago.meta.clone(),
            body: old.body.clone(),
            file: old.file.clone(),
            rev: old.rev,
            disk: OnDisk::Same,
            seen: Arc::default(),
        });
        let (confirmed, changed) = memory.remember(
            &up,
            ra,
            ka.clone(),
            Answer::NotModified(validators(Some("\"1\""), None)),
            Some(&stale),
        );
        assert!(!changed);
        assert_eq!(confirmed.disk, OnDisk::Behind);
        assert_eq!(
            memory.cache.load(&up, ra).unwrap().unwrap().meta.fetched,
            hour_ago.meta.fetched
        );
        let ttl = Duration::from_mins(1);
        assert!(fresh(&confirmed, ttl));

        // Invalidate one that is held, and one that only the disk holds.
        memory.remember(
            &up,
            rb,
            kb.clone(),
            modified(&index_body("bbb", 3), "\"2\""),
            None,
        );
        push_out(&memory, &up, &ka);
        push_out(&memory, &up, &kb);
        memory.invalidate(&kb);

        let back = memory.known(&up, ra, &ka).unwrap();
        assert!(
            fresh(&back, ttl),
            "the 304's freshness was lost: {:?}",
            back.meta
        );
        assert_eq!(back.meta.etag.as_deref(), Some("\"1\""));
        let back = memory.known(&up, rb, &kb).unwrap();
        assert!(!fresh(&back, ttl));
        assert_eq!(
            (back.meta.etag.as_deref(), back.disk),
            (None, OnDisk::Behind)
        );

        // Invalidated while held, then evicted: still stale and unconditional when read back.
        memory.invalidate(&ka);
        push_out(&memory, &up, &ka);
        let back = memory.known(&up, ra, &ka).unwrap();
        assert_eq!((back.meta.fetched, back.meta.etag.as_deref()), (0, None));

        // Forgotten: nothing of it is kept in memory.
        memory.forget(&ka);
        assert!(!holds(&memory, &ka));
    }

    #[test]
    fn merged_views_share_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, _) = memory(&dir, 64 << 10);
        let krate = CrateName::new("foo").unwrap();
        assert!(memory.merged(&krate).is_none());
        let m = Arc::new(MergedBody::for_test(Bytes::from(vec![b'x'; 4096])));
        memory.remember_merged(krate.clone(), m.clone());
        assert!(Arc::ptr_eq(&memory.merged(&krate).unwrap(), &m));
        assert!(memory.usage().bytes >= 4096);
        memory.forget_merged(&krate);
        assert!(memory.merged(&krate).is_none());
        for i in 0..100 {
            let name = CrateName::new(&format!("m{i}")).unwrap();
            memory.remember_merged(
                name,
                Arc::new(MergedBody::for_test(Bytes::from(vec![b'x'; 4096]))),
            );
            assert!(memory.usage().bytes <= 64 << 10);
        }
    }
}
