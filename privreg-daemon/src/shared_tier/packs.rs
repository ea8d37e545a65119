//! The index packs' reading, holding and writing (their format is [`super::pack`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use privreg_shared::config::Upstream;
use privreg_shared::store::{self, Stored};

use super::object::Verified;
use super::pack::{Pack, decode_pack, encode_pack, pack_key};
use super::{SharedTier, Tier, get_limited};

/// How long a read-write daemon waits after its last write-back of an index file before it
/// writes its index pack (a resolution's files come in a burst).
pub(crate) const PACK_QUIET: Duration = Duration::from_secs(2);
/// How long the files of a pack read from the tier are held, unused, before they are dropped.
pub(crate) const PACK_HOLD: Duration = Duration::from_mins(2);
/// The bound on reading or writing a pack: it is larger than one file, and nobody waits on it.
pub(super) const PACK_TIMEOUT: Duration = Duration::from_secs(30);

fn no_answer() -> String {
    format!(
        "no answer within {}",
        humantime::format_duration(PACK_TIMEOUT)
    )
}

/// How long an index request waits for a pack being read, given the tier's `timeout`: half of
/// it, at most half a second. While a pack is read, a request to the tier may so take 1.5 times
/// `timeout`.
pub(super) fn pack_wait(timeout: Duration) -> Duration {
    (timeout / 2).min(Duration::from_millis(500))
}

/// A shared upstream's pack, as this daemon read it.
pub(super) enum PackSlot {
    /// Being read: index requests wait for it up to [`pack_wait`], then go to the tier file by
    /// file. The sender is dropped when the read ends.
    Loading(tokio::sync::watch::Receiver<()>),
    /// Read: the files not used yet, until `until`.
    Held { pack: Pack, until: Instant },
    /// Used up, dropped, absent or refused: not read again in this run.
    Done,
}

impl SharedTier {
    /// `rel_url` from the pack of the upstream whose cache directory is `dir`, taken out of it;
    /// the first request starts reading the pack, in the background.
    pub(super) async fn from_pack(
        self: &Arc<Self>,
        tier: &Arc<Tier>,
        dir: &str,
        rel_url: &str,
    ) -> Option<Verified> {
        let loading = self.start_read(tier, dir);
        if let Some(mut loading) = loading {
            // Ends when the read does (its sender is dropped), or at the bound; then the file
            // is asked for alone, with the tier's whole `timeout`.
            let _ = tokio::time::timeout(pack_wait(tier.config.timeout), loading.changed()).await;
        }
        let mut packs = self.packs.lock().expect("packs lock");
        let slot = packs.get_mut(dir)?;
        let PackSlot::Held { pack, until } = slot else {
            return None;
        };
        if Instant::now() >= *until {
            *slot = PackSlot::Done;
            return None;
        }
        let taken = pack.take(rel_url, store::now_secs());
        if pack.is_empty() {
            *slot = PackSlot::Done;
        }
        drop(packs);
        match taken? {
            Ok(stored) => Some(stored),
            Err(e) => {
                let key = pack_key(&tier.config.prefix, dir);
                self.rejected("pack", &format!("{key} ({rel_url})"), &e.to_string());
                None
            }
        }
    }

    /// Starts reading the pack of the upstream whose cache directory is `dir`, unless it was
    /// read or is being read; while it is being read, what ends when it is.
    fn start_read(
        self: &Arc<Self>,
        tier: &Arc<Tier>,
        dir: &str,
    ) -> Option<tokio::sync::watch::Receiver<()>> {
        let mut packs = self.packs.lock().expect("packs lock");
        match packs.get(dir) {
            None => {
                let (done, loading) = tokio::sync::watch::channel(());
                packs.insert(dir.to_owned(), PackSlot::Loading(loading.clone()));
                let (this, tier, dir) = (self.clone(), tier.clone(), dir.to_owned());
                tokio::spawn(async move { this.read_pack(&tier, dir, done).await });
                Some(loading)
            }
            Some(PackSlot::Loading(loading)) => Some(loading.clone()),
            Some(_) => None,
        }
    }

    /// Starts reading the packs of the upstreams the tier shares, as the daemon starts: a CI
    /// runner's daemon, started before cargo, has them in memory by cargo's first request.
    pub(crate) fn preload(self: &Arc<Self>, upstreams: &[Upstream]) {
        for up in upstreams {
            if let Some(tier) = self.usable(up) {
                self.start_read(&tier, &store::upstream_dir_name(up));
            }
        }
    }

    /// Reads the pack of the upstream whose cache directory is `dir` and holds its files for
    /// [`PACK_HOLD`]. A failure is reported and leaves the files to be read one by one; it does
    /// not open the breaker, which is for the requests cargo waits on.
    async fn read_pack(
        self: Arc<Self>,
        tier: &Tier,
        dir: String,
        done: tokio::sync::watch::Sender<()>,
    ) {
        let key = pack_key(&tier.config.prefix, &dir);
        let path = ObjectPath::from(key.as_str());
        let limit = self.pack_limit;
        // The limit is `index-memory`: a pack holds what memory holds.
        let read = get_limited(&*tier.pack_store, &path, limit);
        let slot = match tokio::time::timeout(PACK_TIMEOUT, read).await {
            Ok(Ok(object)) => {
                let decoded =
                    tokio::task::spawn_blocking(move || decode_pack(&object, limit)).await;
                match decoded {
                    Ok(Ok(pack)) => {
                        tracing::debug!(%key, files = pack.len(), "index pack read");
                        self.metrics.shared_tier("pack", "hit");
                        PackSlot::Held {
                            pack,
                            until: Instant::now() + PACK_HOLD,
                        }
                    }
                    Ok(Err(e)) => {
                        self.rejected("pack", &key, &e.to_string());
                        PackSlot::Done
                    }
                    Err(e) => {
                        tracing::error!(%key, error = %e, "reading the index pack failed");
                        PackSlot::Done
                    }
                }
            }
            Ok(Err(object_store::Error::NotFound { .. })) => {
                self.metrics.shared_tier("pack", "miss");
                PackSlot::Done
            }
            Ok(Err(e)) => self.pack_failed("get", &key, &e.to_string()),
            Err(_) => self.pack_failed("get", &key, &no_answer()),
        };
        let held = match &slot {
            PackSlot::Held { until, .. } => Some(*until),
            _ => None,
        };
        self.packs
            .lock()
            .expect("packs lock")
            .insert(dir.clone(), slot);
        drop(done);
        if let Some(held) = held {
            // What is still unused then is dropped: memory is not held for files nobody asks.
            tokio::time::sleep_until(held.into()).await;
            // Only this read's files (a new tier's read may have begun since).
            if let Some(slot) = self.packs.lock().expect("packs lock").get_mut(&dir)
                && matches!(slot, PackSlot::Held { until, .. } if *until == held)
            {
                *slot = PackSlot::Done;
            }
        }
    }

    fn pack_failed(&self, op: &str, key: &str, e: &str) -> PackSlot {
        tracing::warn!(%key, error = %e, "index pack {op} failed; files go one by one");
        self.note_error(&format!("{op} {key}: {e}"));
        self.metrics.shared_tier("pack", "error");
        PackSlot::Done
    }

    /// The shared upstreams (cache directory names) whose pack is due: an index file was written
    /// back since the last pack, at least `quiet` ago (any time, with `quiet` zero). Taken off
    /// the list: the caller writes them.
    pub(crate) fn packs_due(&self, quiet: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut unpacked = self.unpacked.lock().expect("unpacked lock");
        let due: Vec<String> = unpacked
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= quiet)
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in &due {
            unpacked.remove(dir);
        }
        due
    }

    /// Writes the pack of `up`'s index `files` (sparse-index path, file), replacing the last
    /// one; nothing beyond `index-memory` is written.
    pub(crate) async fn write_pack(&self, up: &Upstream, files: Vec<(String, Stored)>) {
        let Some(tier) = self.tier.read().expect("tier lock").clone() else {
            return;
        };
        if !tier.config.writes() || !tier.config.shares(up) || files.is_empty() {
            return;
        }
        let key = pack_key(&tier.config.prefix, &store::upstream_dir_name(up));
        // Memory holds at most `index-memory` of files: so does the pack.
        let count = files.len();
        let Ok(object) = tokio::task::spawn_blocking(move || {
            encode_pack(files.iter().map(|(p, s)| (p.as_str(), s)))
        })
        .await
        else {
            return;
        };
        let size = object.len();
        let path = ObjectPath::from(key.as_str());
        let put = tier.pack_store.put(&path, object.into());
        match tokio::time::timeout(PACK_TIMEOUT, put).await {
            Ok(Ok(_)) => {
                tracing::debug!(%key, files = count, bytes = size, "index pack written");
                self.counts.pack_writes.fetch_add(1, Ordering::Relaxed);
                self.metrics.shared_tier("pack", "ok");
            }
            Ok(Err(e)) => {
                self.pack_failed("put", &key, &e.to_string());
            }
            Err(_) => {
                self.pack_failed("put", &key, &no_answer());
            }
        }
    }
}

/// Writes the index packs that are due, once a second.
pub(crate) fn start_packs(daemon: Arc<crate::daemon::Daemon>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            daemon.write_packs(PACK_QUIET).await;
        }
    });
}

impl crate::daemon::Daemon {
    /// Writes the index pack of each shared upstream that fetched index files and has been
    /// quiet for `quiet` since (zero: all of those, as the daemon stops).
    pub(crate) async fn write_packs(&self, quiet: Duration) {
        let shared = self.upstreams().shared().clone();
        for dir in shared.packs_due(quiet) {
            let runtime = self.runtime();
            let up = runtime
                .config
                .upstreams
                .iter()
                .find(|u| store::upstream_dir_name(u) == dir);
            if let Some(up) = up {
                let files = self.upstreams().index_files(up);
                shared.write_pack(up, files).await;
            }
        }
    }
}
