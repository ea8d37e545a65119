//! The daemon's side of the disk cache's bounds (see [`privreg_shared::store::gc`]): it records
//! the files it serves in one batch a minute (never a write per request), measures the cache in
//! the background (never at start, so that start time does not grow with the cache), and
//! collects at most once a day, recording when in `v1/gc.json` so that a restart does not reset
//! the clock. Whatever it (or `privreg gc`) removes is forgotten in memory, so that the next
//! request fetches it again.

use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use privreg_shared::CrateName;
use privreg_shared::config::CacheLimits;
use privreg_shared::protocol::DiskStatus;
use privreg_shared::store::gc::{AUTO_INTERVAL, GcRecord, Kind, Rules};
use privreg_shared::store::{UpstreamPath, now_secs, upstream_dir_name};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::daemon::Daemon;

/// How long after start the first background scan waits, so that a start's first requests
/// have the disk to themselves.
const FIRST_SCAN_AFTER: Duration = Duration::from_secs(10);
/// How often the files served are recorded (their modification times set).
const FLUSH_EVERY: Duration = Duration::from_mins(1);

type U64Gauge = Gauge<u64, AtomicU64>;

/// What the daemon knows of its disk cache, and its metrics.
#[derive(Default)]
pub(crate) struct Disk {
    /// (bytes, files, when) as last measured.
    measured: Mutex<Option<(u64, u64, u64)>>,
    kept_lockfiles: AtomicU64,
    bytes: U64Gauge,
    files: U64Gauge,
    max_size: U64Gauge,
    scanned: Counter,
    runs: Counter,
    removed: Counter,
    freed: Counter,
    last_run: U64Gauge,
    last_freed: U64Gauge,
}

impl Disk {
    /// Registers the disk metrics (`privreg_cache_disk_bytes`, `privreg_gc_*`, …).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "cache_disk",
            "Bytes in the disk cache, as last measured by a background scan or a collection",
            Unit::Bytes,
            self.bytes.clone(),
        );
        registry.register(
            "cache_disk_files",
            "Files in the disk cache, as last measured",
            self.files.clone(),
        );
        registry.register_with_unit(
            "cache_max_size",
            "The disk cache's bound, [cache] max-size (0: none)",
            Unit::Bytes,
            self.max_size.clone(),
        );
        registry.register(
            "cache_scanned_files",
            "Files looked at by the daemon's background scans of the disk cache",
            self.scanned.clone(),
        );
        registry.register(
            "gc_runs",
            "Collections of the disk cache run by the daemon",
            self.runs.clone(),
        );
        registry.register(
            "gc_removed_files",
            "Files removed by the daemon's collections",
            self.removed.clone(),
        );
        registry.register_with_unit(
            "gc_freed",
            "Bytes freed by the daemon's collections",
            Unit::Bytes,
            self.freed.clone(),
        );
        registry.register(
            "gc_last_run_timestamp_seconds",
            "When the last collection (by the daemon or by privreg gc) ran, seconds since the epoch",
            self.last_run.clone(),
        );
        registry.register_with_unit(
            "gc_last_freed",
            "Bytes the last collection (by the daemon or by privreg gc) freed",
            Unit::Bytes,
            self.last_freed.clone(),
        );
    }

    fn measure(&self, bytes: u64, files: u64, at: u64) {
        *self.measured.lock().expect("disk lock") = Some((bytes, files, at));
        self.bytes.set(bytes);
        self.files.set(files);
    }

    fn note_record(&self, r: &GcRecord) {
        self.last_run.set(r.at);
        self.last_freed.set(r.freed_bytes);
        let newer = self
            .measured
            .lock()
            .expect("disk lock")
            .is_none_or(|(_, _, at)| at < r.at);
        if newer {
            self.measure(r.bytes_after, r.files_after, r.at);
        }
    }
}

/// When the next automatic collection is due, given the last one recorded (any time now when
/// there was none).
pub(crate) fn next_due(last: Option<&GcRecord>, now: u64) -> u64 {
    last.map_or(now, |r| r.at.saturating_add(AUTO_INTERVAL.as_secs()))
}

/// The rules `[cache]` sets.
pub(crate) fn rules(c: &CacheLimits) -> Rules {
    Rules {
        max_size: c.max_size,
        max_age: c.max_age,
    }
}

impl Daemon {
    /// The disk part of `/-/status`.
    pub(crate) fn disk_status(&self) -> DiskStatus {
        let limits = self.runtime().config.cache;
        let measured = *self.disk().measured.lock().expect("disk lock");
        let last_gc = self.cache().gc_record();
        DiskStatus {
            used_bytes: measured.map(|m| m.0),
            used_files: measured.map(|m| m.1),
            measured_at: measured.map(|m| m.2),
            max_size: limits.max_size,
            max_age_secs: limits.max_age.map(|d| d.as_secs()),
            scanned_files: self.disk().scanned.get(),
            kept_lockfiles: self
                .disk()
                .kept_lockfiles
                .load(std::sync::atomic::Ordering::Relaxed),
            next_gc: Some(
                next_due(last_gc.as_ref(), now_secs())
                    .max(self.started_secs() + FIRST_SCAN_AFTER.as_secs()),
            ),
            last_gc,
            writes_waiting: (self.cache().writes_waiting().0 + self.upstreams().copies_waiting())
                as u64,
        }
    }

    fn started_secs(&self) -> u64 {
        self.started()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Forgets in memory an index file removed from disk (by a collection or by hand), so that
    /// the next request asks its upstream instead of trusting a copy the disk no longer has.
    fn forget_removed(&self, path: &Path) {
        let Ok(rel) = path.strip_prefix(self.cache().root().join("upstreams")) else {
            return;
        };
        let mut parts = rel.components();
        let (Some(Component::Normal(dir)), Some(Component::Normal(index))) =
            (parts.next(), parts.next())
        else {
            return;
        };
        let name = path.file_name().and_then(|n| n.to_str());
        let (Some(name), true) = (name, index == "index") else {
            return;
        };
        let Ok(krate) = CrateName::new(name) else {
            return;
        };
        let rt = self.runtime();
        if let Some(up) = rt
            .config
            .upstreams
            .iter()
            .find(|u| *dir == *upstream_dir_name(u))
        {
            self.upstreams().invalidate(up, UpstreamPath::Index(&krate));
        }
    }

    /// Records the files served since the last flush; forgets those found gone.
    async fn flush_uses(self: &Arc<Self>) {
        let cache = self.cache().clone();
        let gone = tokio::task::spawn_blocking(move || cache.flush_uses())
            .await
            .unwrap_or_default();
        if !gone.is_empty() {
            tracing::info!(
                files = gone.len(),
                "cached files were removed outside the daemon; they are fetched again when needed"
            );
        }
        for path in gone {
            self.forget_removed(&path);
        }
    }

    /// One collection with the `[cache]` bounds in force, recorded in `v1/gc.json`.
    async fn collect(self: &Arc<Self>) {
        let rules = rules(&self.runtime().config.cache);
        let this = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            this.disk().kept_lockfiles.store(
                this.cache().keep_records().len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            this.cache().collect(&rules, false, |item| {
                if item.kind == Kind::Index {
                    this.forget_removed(&item.path);
                }
            })
        })
        .await;
        let Ok(done) = done else { return };
        let d = self.disk();
        d.scanned.inc_by(done.before.1);
        d.runs.inc();
        d.removed.inc_by(done.removed.len() as u64);
        d.freed.inc_by(done.freed);
        let record = GcRecord::of(&done, "daemon");
        d.measure(record.bytes_after, record.files_after, record.at);
        d.note_record(&record);
        tracing::info!(
            removed = record.removed_files,
            freed = %privreg_shared::store::human_bytes(record.freed_bytes),
            now = %privreg_shared::store::human_bytes(record.bytes_after),
            "collected the disk cache"
        );
        if let Err(e) = self.cache().store_gc_record(&record) {
            tracing::warn!(error = %e, "cannot record the collection");
        }
    }

    /// Measures the cache, and removes the temp files older than the daemon (a crash's
    /// leftovers: nothing reads them, and no write of this daemon made them).
    async fn measure(self: &Arc<Self>) {
        let cache = self.cache().clone();
        let started = self.started();
        let scan = tokio::task::spawn_blocking(move || {
            let kept = cache.keep_records().len() as u64;
            let mut scan = cache.scan(&cache.kept());
            let mut swept = 0;
            scan.items.retain(|i| {
                // To the nanosecond: a download this daemon started in its first second stays.
                let leftover = i.kind == Kind::Temp
                    && std::fs::symlink_metadata(&i.path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t < started);
                if leftover && std::fs::remove_file(&i.path).is_ok() {
                    swept += 1;
                    return false;
                }
                true
            });
            if swept > 0 {
                tracing::info!(
                    removed = swept,
                    "removed temp files left by an earlier crash"
                );
            }
            (scan.totals(), kept)
        })
        .await;
        if let Ok(((bytes, files), kept)) = scan {
            self.disk().scanned.inc_by(files);
            self.disk()
                .kept_lockfiles
                .store(kept, std::sync::atomic::Ordering::Relaxed);
            self.disk().measure(bytes, files, now_secs());
        }
    }
}

/// Starts the background task: shortly after start, measure the cache (and sweep a crash's
/// temp files); then every minute record the files served, and collect when a day has passed
/// since the last collection.
pub(crate) fn start(daemon: Arc<Daemon>) {
    if let Some(r) = daemon.cache().gc_record() {
        daemon.disk().note_record(&r);
    }
    daemon
        .disk()
        .max_size
        .set(daemon.runtime().config.cache.max_size.unwrap_or(0));
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_SCAN_AFTER).await;
        daemon.measure().await;
        loop {
            daemon.flush_uses().await;
            let limits = daemon.runtime().config.cache;
            daemon.disk().max_size.set(limits.max_size.unwrap_or(0));
            let last = daemon.cache().gc_record();
            if let Some(r) = &last {
                daemon.disk().note_record(r);
            }
            if next_due(last.as_ref(), now_secs()) <= now_secs() {
                daemon.collect().await;
            }
            tokio::time::sleep(FLUSH_EVERY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_is_due_a_day_after_the_last_or_at_once_without_one() {
        assert_eq!(next_due(None, 500), 500);
        let r = GcRecord {
            at: 1000,
            removed_files: 0,
            freed_bytes: 0,
            bytes_after: 0,
            files_after: 0,
            by: "daemon".into(),
        };
        assert_eq!(next_due(Some(&r), 2000), 1000 + 86_400);
    }
}
