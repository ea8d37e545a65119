//! privreg's daemon: a layered, cached sparse registry in front of several upstreams.
//!
//! The policy is pure (`privreg_shared::policy`); this crate adds the network at the edges:
//! [`upstream`] talks to upstreams, [`privreg_shared::store`] keeps their answers on disk, [`layered`] merges,
//! [`download`] verifies crates, and [`server`] answers cargo.

pub mod api;
pub mod auth;
pub mod body;
pub mod conns;
pub mod download;
pub mod h2c;
pub mod layered;
pub mod metrics;
pub mod page;
pub mod prefetch;
pub mod refresh;
pub mod reload;
pub mod server;
pub mod session;
pub mod status;
pub mod tokens;
pub mod upstream;
pub mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use privreg_shared::CrateName;
use privreg_shared::secrets::{Keyring, Token};

use crate::layered::{MergedBody, Runtime};
use crate::metrics::Metrics;
use crate::session::PageSessions;
use crate::tokens::Tokens;
use crate::upstream::Upstreams;
use privreg_shared::store::Cache;

type PrefetchRx = tokio::sync::mpsc::UnboundedReceiver<(CrateName, Option<String>)>;

/// The daemon's state, shared by every connection.
pub struct Daemon {
    runtime: RwLock<Arc<Runtime>>,
    pub upstreams: Arc<Upstreams>,
    /// Index files fetched ahead of cargo (see [`prefetch`]).
    pub prefetches: AtomicU64,
    /// Connections switched to HTTP/2 on cargo's `Upgrade: h2c` offer (see [`h2c`]).
    pub h2c_upgrades: AtomicU64,
    prefetch_rx: Mutex<Option<PrefetchRx>>,
    pub cache: Cache,
    merged: Mutex<HashMap<CrateName, Arc<MergedBody>>>,
    downloads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What cargo must present in `Authorization`; `None` when `auth = false`.
    local_token: Option<Token>,
    /// `http://ADDR` of the daemon itself, as cargo reaches it.
    pub base_url: String,
    pub config_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub started: SystemTime,
    /// The error of the last failed reload, while the last good configuration stays in force.
    load_error: Mutex<Option<String>>,
    /// Prometheus metrics and what the status page shows of recent events.
    pub metrics: Arc<Metrics>,
    /// The status page's one-time links and sessions.
    pub sessions: PageSessions,
}

impl Daemon {
    /// `local_token`: what cargo must present (`None`: `auth = false`). `keyring`: the store for
    /// upstream tokens, if one could be opened.
    pub fn new(
        runtime: Runtime,
        config_dir: PathBuf,
        cache_dir: PathBuf,
        base_url: String,
        local_token: Option<Token>,
        keyring: Option<Keyring>,
    ) -> Daemon {
        let cache = Cache::new(&cache_dir);
        let tokens = Tokens::new(runtime.config.keyring, keyring);
        let (prefetch_tx, prefetch_rx) = tokio::sync::mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::new());
        let port = base_url.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        Daemon {
            runtime: RwLock::new(Arc::new(runtime)),
            upstreams: Arc::new(Upstreams::new(
                cache.clone(),
                tokens,
                prefetch_tx,
                metrics.clone(),
            )),
            prefetches: AtomicU64::new(0),
            h2c_upgrades: AtomicU64::new(0),
            prefetch_rx: Mutex::new(Some(prefetch_rx)),
            local_token,
            cache,
            merged: Mutex::default(),
            downloads: Mutex::default(),
            base_url,
            config_dir,
            cache_dir,
            started: SystemTime::now(),
            load_error: Mutex::default(),
            metrics,
            sessions: PageSessions::new(port.unwrap_or(0)),
        }
    }

    /// The configuration in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().expect("runtime lock").clone()
    }

    /// Puts a new, already validated configuration in force.
    pub fn swap_runtime(&self, runtime: Runtime) {
        self.upstreams.tokens.reset(runtime.config.keyring);
        *self.runtime.write().expect("runtime lock") = Arc::new(runtime);
    }

    /// Forgets the merged view of a crate (after a publish or yank through the daemon).
    pub fn forget_merged(&self, krate: &CrateName) {
        self.merged.lock().expect("merged lock").remove(krate);
    }

    /// The config or pin error in force, if the last reload failed.
    pub fn load_error(&self) -> Option<String> {
        self.load_error.lock().expect("load error lock").clone()
    }

    /// Records (or clears) a reload error; returns whether there was one before.
    fn set_load_error(&self, error: Option<String>) -> bool {
        std::mem::replace(
            &mut *self.load_error.lock().expect("load error lock"),
            error,
        )
        .is_some()
    }
}
