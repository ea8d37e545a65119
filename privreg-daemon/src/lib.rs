//! privreg's daemon: a layered, cached sparse registry in front of several upstreams.
//!
//! The policy is pure (`privreg_shared::policy`); this crate adds the network at the edges:
//! [`upstream`] talks to upstreams, [`cache`] keeps their answers on disk, [`layered`] merges,
//! [`download`] verifies crates, and [`server`] answers cargo.

pub mod cache;
pub mod download;
pub mod layered;
pub mod server;
pub mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use privreg_shared::CrateName;

use crate::cache::Cache;
use crate::layered::{MergedBody, Runtime};
use crate::upstream::Upstreams;

/// The daemon's state, shared by every connection.
pub struct Daemon {
    runtime: RwLock<Arc<Runtime>>,
    pub upstreams: Upstreams,
    pub cache: Cache,
    merged: Mutex<HashMap<CrateName, Arc<MergedBody>>>,
    downloads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `http://ADDR` of the daemon itself, as cargo reaches it.
    pub base_url: String,
    pub config_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub started: SystemTime,
}

impl Daemon {
    pub fn new(
        runtime: Runtime,
        config_dir: PathBuf,
        cache_dir: PathBuf,
        base_url: String,
    ) -> Daemon {
        let cache = Cache::new(&cache_dir);
        Daemon {
            runtime: RwLock::new(Arc::new(runtime)),
            upstreams: Upstreams::new(cache.clone()),
            cache,
            merged: Mutex::default(),
            downloads: Mutex::default(),
            base_url,
            config_dir,
            cache_dir,
            started: SystemTime::now(),
        }
    }

    /// The configuration in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().expect("runtime lock").clone()
    }

    /// Puts a new, already validated configuration in force.
    pub fn swap_runtime(&self, runtime: Runtime) {
        *self.runtime.write().expect("runtime lock") = Arc::new(runtime);
    }
}
