//! The daemon's state, shared by every connection: the configuration in force, the upstreams,
//! the cache, the metrics and the status page's sessions. Its fields are private to this module;
//! the rest of the daemon goes through the methods below.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use privreg_shared::CrateName;
use privreg_shared::advisory::{AdvisorySource, NoAdvisories};
use privreg_shared::secrets::{Keyring, Token};

use crate::advisories::AdvisoryState;
use crate::keyed::KeyedLocks;
use crate::layered::{MergedBody, Runtime};
use crate::metrics::Metrics;
use crate::session::PageSessions;
use crate::tokens::Tokens;
use crate::upstream::Upstreams;
use privreg_shared::store::Cache;

type PrefetchRx = tokio::sync::mpsc::Receiver<(CrateName, Option<String>)>;

/// The daemon's state, shared by every connection.
pub(crate) struct Daemon {
    runtime: RwLock<Arc<Runtime>>,
    upstreams: Arc<Upstreams>,
    /// Index files fetched ahead of cargo (see [`prefetch`]).
    prefetches: AtomicU64,
    /// Connections switched to HTTP/2 on cargo's `Upgrade: h2c` offer (see [`h2c`]).
    h2c_upgrades: AtomicU64,
    prefetch_rx: Mutex<Option<PrefetchRx>>,
    cache: Cache,
    /// Per crate file being downloaded: the lock that serialises its downloads.
    downloads: KeyedLocks<String, ()>,
    /// What cargo must present in `Authorization`; `None` when `auth = false`.
    local_token: Option<Token>,
    /// `http://ADDR` of the daemon itself, as cargo reaches it.
    base_url: String,
    config_dir: PathBuf,
    cache_dir: PathBuf,
    started: SystemTime,
    /// The error of the last failed reload, while the last good configuration stays in force.
    load_error: Mutex<Option<String>>,
    /// Prometheus metrics and what the status page shows of recent events.
    metrics: Arc<Metrics>,
    /// The status page's one-time links and sessions.
    sessions: PageSessions,
    /// The advisory database in force, and a number bumped each time it is replaced (part of
    /// the merged views' fingerprint, so that they are recomputed).
    advisories: RwLock<(u64, Arc<dyn AdvisorySource>)>,
    /// The advisory database's refreshes and what the status shows of it.
    advisory_state: AdvisoryState,
}

impl Daemon {
    /// `local_token`: what cargo must present (`None`: `auth = false`). `keyring`: the store for
    /// upstream tokens, if one could be opened.
    pub(crate) fn new(
        runtime: Runtime,
        config_dir: PathBuf,
        cache_dir: PathBuf,
        base_url: String,
        local_token: Option<Token>,
        keyring: Option<Keyring>,
    ) -> Daemon {
        // Index files and records are written behind, so that no request waits on the disk.
        let cache = Cache::new(&cache_dir);
        let cache = cache.clone().write_behind().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot start the cache writer; writing at once");
            cache
        });
        let tokens = Tokens::new(runtime.config.keyring, keyring);
        let (prefetch_tx, prefetch_rx) =
            tokio::sync::mpsc::channel(crate::prefetch::PREFETCH_QUEUE);
        let metrics = Arc::new(Metrics::new());
        let index_memory = runtime.config.limits.index_memory;
        let port = base_url.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        let upstreams = Arc::new(Upstreams::new(
            cache.clone(),
            index_memory,
            tokens,
            prefetch_tx,
            metrics.clone(),
        ));
        upstreams
            .shared()
            .configure(runtime.config.shared.as_ref(), runtime.config.keyring);
        Daemon {
            runtime: RwLock::new(Arc::new(runtime)),
            upstreams,
            prefetches: AtomicU64::new(0),
            h2c_upgrades: AtomicU64::new(0),
            prefetch_rx: Mutex::new(Some(prefetch_rx)),
            local_token,
            cache,
            downloads: KeyedLocks::default(),
            base_url,
            config_dir,
            cache_dir,
            started: SystemTime::now(),
            load_error: Mutex::default(),
            metrics,
            sessions: PageSessions::new(port.unwrap_or(0)),
            advisories: RwLock::new((0, Arc::new(NoAdvisories))),
            advisory_state: AdvisoryState::default(),
        }
    }

    /// The configuration in force.
    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().expect("runtime lock").clone()
    }

    /// The upstreams: fetching, their in-memory answers and health.
    pub(crate) fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// The on-disk cache.
    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Prometheus metrics and what the status page shows of recent events.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The disk cache's use and collections (see [`crate::gc`]).
    pub(crate) fn disk(&self) -> &crate::gc::Disk {
        self.metrics.disk()
    }

    /// The status page's one-time links and sessions.
    pub(crate) fn sessions(&self) -> &PageSessions {
        &self.sessions
    }

    /// `http://ADDR` of the daemon itself, as cargo reaches it.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The directory holding config.toml and the pin files.
    pub(crate) fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The cache directory (holding `v1/`, `daemon.json`).
    pub(crate) fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// When the daemon started.
    pub(crate) fn started(&self) -> SystemTime {
        self.started
    }

    /// Counts an index file fetched ahead of cargo.
    pub(crate) fn note_prefetch(&self) {
        self.prefetches.fetch_add(1, Ordering::Relaxed);
    }

    /// Index files fetched ahead of cargo so far.
    pub(crate) fn prefetch_count(&self) -> u64 {
        self.prefetches.load(Ordering::Relaxed)
    }

    /// Counts a connection switched to HTTP/2 on cargo's `Upgrade: h2c` offer.
    pub(crate) fn note_h2c_upgrade(&self) {
        self.h2c_upgrades.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections switched to HTTP/2 so far.
    pub(crate) fn h2c_upgrade_count(&self) -> u64 {
        self.h2c_upgrades.load(Ordering::Relaxed)
    }

    /// The prefetcher's queue, once (the prefetcher takes it at start).
    pub(crate) fn take_prefetch_queue(&self) -> Option<PrefetchRx> {
        self.prefetch_rx.lock().expect("prefetch lock").take()
    }

    /// The merged view of `krate` remembered from an earlier merge, if any.
    pub(crate) fn remembered_merge(&self, krate: &CrateName) -> Option<Arc<MergedBody>> {
        self.upstreams.memory().merged(krate)
    }

    /// Remembers the merged view of `krate` (in memory, within its budget).
    pub(crate) fn remember_merge(&self, krate: CrateName, merged: Arc<MergedBody>) {
        self.upstreams.memory().remember_merged(krate, merged);
    }

    /// The lock that serialises downloads of one file (`key`).
    pub(crate) fn download_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.downloads.of(key)
    }

    /// What cargo must present in `Authorization`; `None` when `auth = false`.
    pub(crate) fn local_token(&self) -> Option<&Token> {
        self.local_token.as_ref()
    }

    /// Puts a new, already validated configuration in force.
    pub(crate) fn swap_runtime(&self, runtime: Runtime) {
        self.upstreams.tokens.reset(runtime.config.keyring);
        self.upstreams
            .shared()
            .configure(runtime.config.shared.as_ref(), runtime.config.keyring);
        self.upstreams.retain_upstreams(&runtime.config.upstreams);
        *self.runtime.write().expect("runtime lock") = Arc::new(runtime);
        // `[advisories]` or an `advisory` pin may have changed.
        self.advisory_state.wake();
    }

    /// Forgets the merged view of a crate (after a publish or yank through the daemon).
    pub(crate) fn forget_merged(&self, krate: &CrateName) {
        self.upstreams.memory().forget_merged(krate);
    }

    /// The advisory database in force and its generation (bumped by [`Daemon::set_advisories`]).
    pub(crate) fn advisories(&self) -> (u64, Arc<dyn AdvisorySource>) {
        let guard = self.advisories.read().expect("advisories lock");
        (guard.0, guard.1.clone())
    }

    /// Puts a newly loaded advisory database in force; merged views are recomputed.
    pub(crate) fn set_advisories(&self, source: Arc<dyn AdvisorySource>) {
        let mut guard = self.advisories.write().expect("advisories lock");
        *guard = (guard.0 + 1, source);
    }

    /// The advisory database's refreshes and what the status shows of it.
    pub(crate) fn advisory_state(&self) -> &AdvisoryState {
        &self.advisory_state
    }

    /// The config or pin error in force, if the last reload failed.
    pub(crate) fn load_error(&self) -> Option<String> {
        self.load_error.lock().expect("load error lock").clone()
    }

    /// Records (or clears) a reload error; returns whether there was one before.
    pub(crate) fn set_load_error(&self, error: Option<String>) -> bool {
        std::mem::replace(
            &mut *self.load_error.lock().expect("load error lock"),
            error,
        )
        .is_some()
    }
}
