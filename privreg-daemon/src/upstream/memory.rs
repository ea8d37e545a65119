//! The upstream files privreg holds: in memory within a budget (`limits.index-memory`, least
//! recently used first out), read from the disk cache on first use and again after they left
//! memory, and written back to it when an answer changes them. The layered view's merged files
//! share the budget.
//!
//! A file that leaves memory keeps what the disk copy does not know yet (a later confirmation by
//! its upstream, an invalidation) in a small side table, so that reading it back changes neither
//! its freshness nor what the next request asks the upstream.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::Equivalent;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use privreg_shared::index::IndexFile;
use privreg_shared::store::{self, Cache, FirstSeen, Meta, Stored, UpstreamPath};
use sha2::{Digest, Sha256};

use super::classify::Answer;
use super::request::rel_url;
use crate::layered::MergedBody;
use crate::metrics::Metrics;
use crate::shared_tier::Verified;

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
    /// Not yet: a file taken from the shared tier, whose local copy is written once the daemon
    /// is quiet (see [`super::deferred`]); until then it counts as [`OnDisk::Missing`].
    Deferred,
}

impl OnDisk {
    /// Whether the disk holds this body (under this metadata or older).
    fn holds_body(self) -> bool {
        matches!(self, OnDisk::Same | OnDisk::Behind)
    }
}

/// What the disk cache holds of an [`Entry`]: an [`OnDisk`] that changes once, when a local
/// copy that was put off ([`OnDisk::Deferred`]) is written.
#[derive(Debug)]
pub(crate) struct DiskState(AtomicU8);

impl DiskState {
    pub(crate) fn new(disk: OnDisk) -> DiskState {
        DiskState(AtomicU8::new(disk as u8))
    }

    pub(crate) fn get(&self) -> OnDisk {
        match self.0.load(Ordering::Acquire) {
            0 => OnDisk::Same,
            1 => OnDisk::Behind,
            2 => OnDisk::Missing,
            _ => OnDisk::Deferred,
        }
    }

    fn set(&self, disk: OnDisk) {
        self.0.store(disk as u8, Ordering::Release);
    }
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
    pub disk: DiskState,
    /// When privreg first saw the versions of an index file that appeared after its first
    /// fetch and have no `pubtime` (empty for other files).
    pub seen: Arc<FirstSeen>,
    /// The body's sha256, once known: given by the tier, which checked it, or computed at the
    /// first [`Entry::sha256`].
    pub digest: OnceLock<[u8; 32]>,
}

impl Entry {
    /// The body's sha256 (computed once).
    pub(crate) fn sha256(&self) -> &[u8; 32] {
        self.digest
            .get_or_init(|| Sha256::digest(&self.body).into())
    }

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
            // A deferred copy is of the old entry, which is not written once replaced.
            disk: DiskState::new(if self.disk.get().holds_body() {
                OnDisk::Behind
            } else {
                OnDisk::Missing
            }),
            seen: self.seen.clone(),
            digest: self.digest.clone(),
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
        match self.disk.get() {
            OnDisk::Same => None,
            OnDisk::Behind => Some(self.meta.clone()),
            OnDisk::Missing | OnDisk::Deferred => Some(expired(&self.meta, true)),
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
            old.disk.get().holds_body()
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
            disk: DiskState::new(disk),
            seen: Arc::new(seen),
            digest: OnceLock::new(),
        }
    }

    /// The first-seen record of an index file whose body `held` (`None`: nothing was held)
    /// was just replaced by `file` (`None`: a 404) at `now`, and whether it changed (then the
    /// caller writes it: [`Memory::store_first_seen`]).
    fn first_seen_update(
        &self,
        up: &Upstream,
        krate: &CrateName,
        held: Option<&Entry>,
        file: Option<&IndexFile>,
        now: u64,
    ) -> (FirstSeen, bool) {
        let absent = IndexFile::default();
        let before = held.map(|h| h.file.as_deref().unwrap_or(&absent));
        let record = held.map_or_else(|| self.cache.first_seen(up, krate), |h| (*h.seen).clone());
        let after = record.update(before, file.unwrap_or(&absent), now);
        let changed = after != record;
        (after, changed)
    }

    fn store_first_seen(&self, up: &Upstream, krate: &CrateName, seen: &FirstSeen) {
        if let Err(e) = self.cache.store_first_seen(up, krate, seen) {
            tracing::warn!(error = %e, "cannot record when versions were first seen");
        }
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
                disk: DiskState::new(disk),
                seen: old.seen.clone(),
                digest: old.digest.clone(),
            })
        } else {
            let mut entry = self.entry_from(stored, rel, up, disk, FirstSeen::default());
            if let UpstreamPath::Index(krate) = rel {
                let (seen, changed) =
                    self.first_seen_update(up, krate, held, entry.file.as_deref(), now);
                if changed {
                    self.store_first_seen(up, krate, &seen);
                }
                entry.seen = Arc::new(seen);
            }
            Arc::new(entry)
        };
        self.insert(key, entry.clone());
        (entry, kept_rev.is_none())
    }

    /// Takes a file from another cache (the shared tier) as it is, metadata included: in
    /// memory now, on disk later ([`OnDisk::Deferred`]: the caller has [`Memory::write_copy`]
    /// called). Versions new against `held` are dated now, as after a revalidation. Returns the
    /// entry and whether its first-seen record changed (written with the copy).
    pub(super) fn adopt(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: Key,
        file: Verified,
        held: Option<&Arc<Entry>>,
    ) -> (Arc<Entry>, bool) {
        self.newer.invalidate(&key);
        let mut entry =
            self.entry_from(file.stored, rel, up, OnDisk::Deferred, FirstSeen::default());
        entry.digest = OnceLock::from(file.sha256);
        let mut seen_changed = false;
        if let UpstreamPath::Index(krate) = rel {
            let held = held.map(|e| &**e);
            let (seen, changed) =
                self.first_seen_update(up, krate, held, entry.file.as_deref(), store::now_secs());
            (entry.seen, seen_changed) = (Arc::new(seen), changed);
        }
        let entry = Arc::new(entry);
        self.insert(key, entry.clone());
        (entry, seen_changed)
    }

    fn store_now(&self, up: &Upstream, rel: UpstreamPath<'_>, stored: &Stored) -> OnDisk {
        match self.cache.store(up, rel, stored) {
            Ok(()) => OnDisk::Same,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the cache; serving without caching");
                OnDisk::Missing
            }
        }
    }

    /// Writes the local copy of `entry`, taken with [`OnDisk::Deferred`], when memory still
    /// holds it under `key` (the caller holds the file's flight, so that no newer answer is
    /// written meanwhile); its first-seen record too when `seen_changed`. True when written.
    pub(super) fn write_copy(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: &Key,
        entry: &Arc<Entry>,
        seen_changed: bool,
    ) -> bool {
        let current = self
            .held_file(key)
            .is_some_and(|held| Arc::ptr_eq(&held, entry));
        if !current || entry.disk.get() != OnDisk::Deferred {
            return false;
        }
        let disk = self.store_now(up, rel, &entry.stored());
        if let (UpstreamPath::Index(krate), true) = (rel, seen_changed) {
            self.store_first_seen(up, krate, &entry.seen);
        }
        entry.disk.set(disk);
        disk == OnDisk::Same
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
mod tests;
