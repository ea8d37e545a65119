//! The team tier: a cache shared by several daemons on S3-compatible object storage
//! (`[cache.shared]`), read after memory and the local disk and before the upstream.
//!
//! - Crates are stored by sha256 and checked against the checksum the index gives before they
//!   are served or kept; a damaged or forged object is refused, counted, logged, and the crate is
//!   fetched from its upstream.
//! - Index files carry the upstream's validators and fetch time, so a copy from the tier is used
//!   only within the upstream's `ttl` + `stale` and is otherwise revalidated with those
//!   validators; with the upstream down it is one more last good answer.
//! - Only the upstreams listed in `upstreams` are read or written.
//! - Every request has a short bound (`timeout`); a failure keeps the tier out for `cooldown`
//!   (circuit breaker). Write-backs run in the background, at most [`MAX_PENDING_WRITES`] at a
//!   time; more are dropped. Cargo never waits on a write.
//! - An index pack per shared upstream (see [`pack`]) holds the index files a daemon last worked
//!   with, so that a cold daemon reads one object instead of one per file. A read-write daemon
//!   writes its pack when it has fetched index files from the upstream and then been quiet for
//!   [`packs::PACK_QUIET`] (and when it stops); a daemon reads the pack once, in the background,
//!   as it starts (else at its first index request for that upstream), and holds what it has not
//!   used yet for at most [`packs::PACK_HOLD`]. Both are bounded by `index-memory`. Files taken
//!   from the tier are copied to the local disk once the daemon is quiet
//!   ([`crate::upstream::deferred`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use privreg_shared::config::{KeyringChoice, SharedCacheConfig, SharedMode, Upstream};
use privreg_shared::protocol::SharedTierStatus;
use privreg_shared::secrets::{EntryName, Keyring, SecretStore};
use privreg_shared::store::{self, Stored};

use crate::metrics::Metrics;

mod object;
mod pack;
mod packs;

pub(crate) use object::Verified;
use object::{Breaker, crate_key, decode_index, encode_index, index_key};
pub(crate) use packs::start_packs;
use packs::{PACK_TIMEOUT, PackSlot};

/// Write-backs in flight at once; one more is dropped (and counted).
pub(crate) const MAX_PENDING_WRITES: usize = 64;

/// The configured tier: its store and breaker.
struct Tier {
    config: SharedCacheConfig,
    store: Arc<dyn ObjectStore>,
    /// The same with room for a pack: a whole request, body included, may take
    /// [`PACK_TIMEOUT`].
    pack_store: Arc<dyn ObjectStore>,
    breaker: Mutex<Breaker>,
}

#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
    writes: AtomicU64,
    writes_dropped: AtomicU64,
    pack_hits: AtomicU64,
    pack_writes: AtomicU64,
}

/// The shared tier as the daemon uses it; does nothing while none is configured.
pub(crate) struct SharedTier {
    tier: RwLock<Option<Arc<Tier>>>,
    /// The last failure (when, why), for `privreg status`.
    last_error: Mutex<Option<(u64, String)>>,
    counts: Counts,
    writes: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
    /// Per shared upstream (its cache directory name): the pack read from the tier.
    packs: Mutex<HashMap<String, PackSlot>>,
    /// Per shared upstream: when an index file was last written back since its pack was.
    unpacked: Mutex<HashMap<String, Instant>>,
    /// The largest pack read or written: `index-memory`.
    pack_limit: u64,
}

/// Why a request to the tier failed (besides "not found").
enum Failure {
    Timeout,
    Store(object_store::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "no answer within the shared tier's `timeout`"),
            Failure::Store(e) => write!(f, "{e}"),
        }
    }
}

impl SharedTier {
    /// `pack_limit`: the largest index pack read or written (`index-memory`).
    pub(crate) fn new(metrics: Arc<Metrics>, pack_limit: u64) -> SharedTier {
        SharedTier {
            tier: RwLock::default(),
            last_error: Mutex::default(),
            counts: Counts::default(),
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_WRITES)),
            metrics,
            packs: Mutex::default(),
            unpacked: Mutex::default(),
            pack_limit,
        }
    }

    /// Puts `config` in force (at start and on each reload); a tier whose configuration did not
    /// change keeps its connections and breaker.
    pub(crate) fn configure(&self, config: Option<&SharedCacheConfig>, keyring: KeyringChoice) {
        let same = self
            .tier
            .read()
            .expect("tier lock")
            .as_ref()
            .map(|t| &t.config)
            == config;
        if same {
            return;
        }
        let stores = |c| {
            Ok::<_, object_store::Error>((
                build_store(c, keyring, c.timeout)?,
                build_store(c, keyring, PACK_TIMEOUT)?,
            ))
        };
        let tier = config.and_then(|c| match stores(c) {
            Ok((store, pack_store)) => {
                tracing::info!(url = %c.url, mode = ?c.mode, "shared cache tier configured");
                Some(Arc::new(Tier {
                    config: c.clone(),
                    store,
                    pack_store,
                    breaker: Mutex::default(),
                }))
            }
            Err(e) => {
                let e = format!("cannot set up the shared tier {}: {e}", c.url);
                tracing::error!(error = %e, "shared tier disabled");
                self.note_error(&e);
                None
            }
        });
        *self.tier.write().expect("tier lock") = tier;
        // Another tier: its packs are read again, and this daemon's go to it when due.
        self.packs.lock().expect("packs lock").clear();
    }

    /// Whether a tier is configured that shares `up`'s files (skipped or not).
    pub(crate) fn shares(&self, up: &Upstream) -> bool {
        self.tier
            .read()
            .expect("tier lock")
            .as_ref()
            .is_some_and(|t| t.config.shares(up))
    }

    /// The tier, when one is configured, shares `up`'s files and is not being skipped.
    fn usable(&self, up: &Upstream) -> Option<Arc<Tier>> {
        let tier = self.tier.read().expect("tier lock").clone()?;
        if !tier.config.shares(up) {
            return None;
        }
        if !tier
            .breaker
            .lock()
            .expect("breaker lock")
            .allows(Instant::now())
        {
            self.metrics.shared_tier("skipped", "get");
            return None;
        }
        Some(tier)
    }

    fn note_error(&self, e: &str) {
        *self.last_error.lock().expect("tier error lock") = Some((store::now_secs(), e.to_owned()));
    }

    /// Records a failed request: the breaker opens for `cooldown`.
    fn failed(&self, tier: &Tier, op: &'static str, key: &str, e: &Failure) {
        tracing::warn!(%key, error = %e, cooldown = ?tier.config.cooldown, "shared tier request failed; skipping the tier for a while");
        tier.breaker
            .lock()
            .expect("breaker lock")
            .failed(Instant::now(), tier.config.cooldown);
        self.note_error(&format!("{op} {key}: {e}"));
        self.metrics.shared_tier(op, "error");
    }

    /// Runs one request with the tier's bound; `Ok(None)` is "not found".
    async fn bounded<T>(
        tier: &Tier,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> Result<Option<T>, Failure> {
        match tokio::time::timeout(tier.config.timeout, request).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Ok(t)) => Ok(Some(t)),
            Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Ok(Err(e)) => Err(Failure::Store(e)),
        }
    }

    /// Reads an object of at most `limit` bytes: `None` when absent, skipped or failing.
    async fn get(&self, tier: &Tier, key: &str, op: &'static str, limit: u64) -> Option<Bytes> {
        let path = ObjectPath::from(key);
        let read = get_limited(&*tier.store, &path, limit);
        let started = Instant::now();
        match Self::bounded(tier, read).await {
            Ok(Some(bytes)) => {
                tier.breaker
                    .lock()
                    .expect("breaker lock")
                    .succeeded(started);
                Some(bytes)
            }
            Ok(None) => {
                tier.breaker
                    .lock()
                    .expect("breaker lock")
                    .succeeded(started);
                self.counts.misses.fetch_add(1, Ordering::Relaxed);
                self.metrics.shared_tier(op, "miss");
                None
            }
            Err(e) => {
                self.failed(tier, op, key, &e);
                None
            }
        }
    }

    /// A refused object: counted, logged, and left for the next write-back to replace (crates
    /// are never rewritten, so a damaged crate stays refused until someone removes it).
    fn rejected(&self, op: &'static str, key: &str, why: &str) {
        tracing::error!(%key, why, "refusing an object from the shared tier; asking the upstream instead");
        self.counts.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.shared_tier(op, "rejected");
        self.note_error(&format!("refused {key}: {why}"));
    }

    fn hit(&self, op: &'static str) {
        self.counts.hits.fetch_add(1, Ordering::Relaxed);
        self.metrics.shared_tier(op, "hit");
    }

    /// An upstream file (`rel_url`) of `up` from the tier, as the upstream last answered it to
    /// some daemon: validators and fetch time included.
    pub(crate) async fn index(self: &Arc<Self>, up: &Upstream, rel_url: &str) -> Option<Verified> {
        let tier = self.usable(up)?;
        let dir = store::upstream_dir_name(up);
        // The header line on top of the body.
        let limit = up.limits.max_index_size.saturating_add(4096);
        if let Some(file) = self.from_pack(&tier, &dir, rel_url).await {
            if file.stored.body.len() as u64 <= up.limits.max_index_size {
                self.counts.pack_hits.fetch_add(1, Ordering::Relaxed);
                self.hit("index");
                return Some(file);
            }
            self.rejected(
                "pack",
                rel_url,
                "larger than the upstream's `max-index-size`",
            );
        }
        let key = index_key(&tier.config.prefix, &dir, rel_url);
        let object = self.get(&tier, &key, "index", limit).await?;
        match decode_index(&object, store::now_secs()) {
            Ok(file) => {
                self.hit("index");
                Some(file)
            }
            Err(e) => {
                self.rejected("index", &key, &e.to_string());
                None
            }
        }
    }

    /// The `.crate` with sha256 `cksum` from the tier, unverified: the caller checks it against
    /// `cksum` and calls [`SharedTier::refuse_crate`] when it does not match.
    pub(crate) async fn krate(&self, up: &Upstream, cksum: &str) -> Option<Bytes> {
        let tier = self.usable(up)?;
        let key = crate_key(&tier.config.prefix, cksum);
        let data = self
            .get(&tier, &key, "crate", up.limits.max_crate_size)
            .await?;
        Some(data)
    }

    /// Reports that the crate object for `cksum` held other bytes (sha256 `got`).
    pub(crate) fn refuse_crate(&self, cksum: &str, got: &str) {
        let prefix = self
            .tier
            .read()
            .expect("tier lock")
            .as_ref()
            .map(|t| t.config.prefix.clone())
            .unwrap_or_default();
        self.rejected(
            "crate",
            &crate_key(&prefix, cksum),
            &format!("its sha256 is {got}"),
        );
    }

    /// Reports a crate served from the tier after it was verified.
    pub(crate) fn crate_hit(&self) {
        self.hit("crate");
    }

    /// The tier to write `up`'s files to, if writing is on; `None` (and a counted drop) when
    /// the write queue is full or the tier is being skipped.
    fn writable(&self, up: &Upstream) -> Option<(Arc<Tier>, tokio::sync::OwnedSemaphorePermit)> {
        let tier = self.tier.read().expect("tier lock").clone()?;
        if !tier.config.writes() || !tier.config.shares(up) {
            return None;
        }
        let open = !tier
            .breaker
            .lock()
            .expect("breaker lock")
            .allows(Instant::now());
        let permit = self.writes.clone().try_acquire_owned().ok();
        match permit {
            Some(p) if !open => Some((tier, p)),
            _ => {
                self.counts.writes_dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.shared_tier("put", "dropped");
                None
            }
        }
    }

    /// Writes an upstream file back in the background (it replaces the tier's copy: index
    /// files change). Absent answers ("404") are not written: the names cargo asked a public
    /// upstream for and did not find there are often private crates' names.
    pub(crate) fn put_index(self: &Arc<Self>, up: &Upstream, rel_url: &str, stored: &Stored) {
        if !stored.meta.present {
            return;
        }
        let dir = store::upstream_dir_name(up);
        if self
            .tier
            .read()
            .expect("tier lock")
            .as_ref()
            .is_some_and(|t| t.config.writes() && t.config.shares(up))
        {
            // Due once the daemon is quiet, even if this write is dropped.
            self.unpacked
                .lock()
                .expect("unpacked lock")
                .insert(dir.clone(), Instant::now());
        }
        let Some((tier, permit)) = self.writable(up) else {
            return;
        };
        let key = index_key(&tier.config.prefix, &dir, rel_url);
        let body = encode_index(stored);
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let path = ObjectPath::from(key.as_str());
            let put = tier.store.put(&path, body.into());
            let result = Self::bounded(&tier, put).await.map(|_| ());
            this.written(&tier, &key, started, result);
            drop(permit);
        });
    }

    /// Writes a verified `.crate` (read from `file`, the local cache's copy) back in the
    /// background, unless the tier already has it: crates are never rewritten.
    pub(crate) fn put_crate(
        self: &Arc<Self>,
        up: &Upstream,
        cksum: &str,
        file: std::path::PathBuf,
    ) {
        let Some((tier, permit)) = self.writable(up) else {
            return;
        };
        let key = crate_key(&tier.config.prefix, cksum);
        let (this, cksum) = (self.clone(), cksum.to_owned());
        tokio::spawn(async move {
            let started = Instant::now();
            let path = ObjectPath::from(key.as_str());
            let result = match Self::bounded(&tier, tier.store.head(&path)).await {
                Ok(Some(_)) => {
                    this.metrics.shared_tier("put", "exists");
                    Ok(())
                }
                Ok(None) => match tokio::fs::read(&file).await {
                    // Checked again: only verified bytes leave this machine.
                    Ok(data)
                        if hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)) == cksum =>
                    {
                        let put = tier.store.put(&path, Bytes::from(data).into());
                        Self::bounded(&tier, put).await.map(|_| ())
                    }
                    Ok(_) | Err(_) => {
                        tracing::debug!(%key, "the cached crate changed before its write-back; skipped");
                        Ok(())
                    }
                },
                Err(e) => Err(e),
            };
            this.written(&tier, &key, started, result);
            drop(permit);
        });
    }

    fn written(&self, tier: &Tier, key: &str, started: Instant, result: Result<(), Failure>) {
        match result {
            Ok(()) => {
                tier.breaker
                    .lock()
                    .expect("breaker lock")
                    .succeeded(started);
                self.counts.writes.fetch_add(1, Ordering::Relaxed);
                self.metrics.shared_tier("put", "ok");
            }
            Err(e) => self.failed(tier, "put", key, &e),
        }
    }

    /// Whether the tier is configured and not being skipped (for `/metrics`).
    pub(crate) fn status(&self) -> Option<SharedTierStatus> {
        let tier = self.tier.read().expect("tier lock").clone();
        let last = self.last_error.lock().expect("tier error lock").clone();
        let c = &self.counts;
        let tier = tier?;
        let open_for = tier
            .breaker
            .lock()
            .expect("breaker lock")
            .open_for(Instant::now());
        Some(SharedTierStatus {
            url: tier.config.url.to_string(),
            mode: match tier.config.mode {
                SharedMode::ReadWrite => "read-write",
                SharedMode::ReadOnly => "read-only",
            }
            .to_owned(),
            upstreams: tier
                .config
                .upstreams
                .iter()
                .map(ToString::to_string)
                .collect(),
            state: if open_for.is_some() { "skipped" } else { "ok" }.to_owned(),
            skipped_for_secs: open_for.map(|d| d.as_secs().max(1)),
            last_error_at: last.as_ref().map(|(at, _)| *at),
            last_error: last.map(|(_, e)| e),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            writes_dropped: c.writes_dropped.load(Ordering::Relaxed),
            pack_hits: c.pack_hits.load(Ordering::Relaxed),
            pack_writes: c.pack_writes.load(Ordering::Relaxed),
            packs_waiting: self.unpacked.lock().expect("unpacked lock").len() as u64,
        })
    }
}

/// The object at `path` from `store`, refused unread when it is larger than `limit` bytes.
async fn get_limited(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    limit: u64,
) -> object_store::Result<Bytes> {
    let got = store.get(path).await?;
    if got.meta.size > limit {
        return Err(object_store::Error::Generic {
            store: "shared tier",
            source: format!("{} bytes, more than the limit of {limit}", got.meta.size).into(),
        });
    }
    got.bytes().await
}

/// The S3 client for `config`: credentials from the standard `AWS_*` environment variables (and
/// the rest of the usual chain: web identity, instance metadata), else from the keyring entry
/// `privreg login --shared` stores (`KEY_ID:SECRET`). Retries are off and every request is
/// bounded: a slow tier must cost cargo no more than `timeout`.
fn build_store(
    config: &SharedCacheConfig,
    keyring: KeyringChoice,
    timeout: Duration,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_retry(RetryConfig {
            max_retries: 0,
            retry_timeout: timeout,
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(config.timeout)
                .with_allow_http(
                    config
                        .endpoint
                        .as_ref()
                        .is_some_and(|e| e.scheme() == "http"),
                ),
        );
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint.as_str().trim_end_matches('/'));
    }
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    }
    let from_env = std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty());
    if !from_env && let Some((id, secret)) = keyring_credentials(config, keyring) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    Ok(Arc::new(builder.build()?))
}

/// `KEY_ID:SECRET` from the keyring entry for the tier's URL, if there is one.
fn keyring_credentials(
    config: &SharedCacheConfig,
    choice: KeyringChoice,
) -> Option<(String, String)> {
    let keyring = Keyring::open(choice).ok()?;
    let entry = EntryName::shared_tier(config.url.as_str());
    match keyring.get(&entry) {
        Ok(token) => {
            let (id, secret) = token.expose().split_once(':')?;
            Some((id.to_owned(), secret.to_owned()))
        }
        Err(e) => {
            tracing::debug!(error = %e, "no shared tier credentials in the keyring");
            None
        }
    }
}

impl crate::daemon::Daemon {
    /// The `.crate` with sha256 `cksum` from the shared tier, checked against `cksum` as it is
    /// written into the local cache (the download spool); a copy that does not match is refused
    /// and `None` sends the caller to the upstream.
    pub(crate) async fn crate_from_shared_tier(
        &self,
        up: &Upstream,
        cksum: &str,
    ) -> Option<crate::body::Body> {
        use crate::body::{Body, FileBody};
        let shared = self.upstreams().shared();
        let data = shared.krate(up, cksum).await?;
        let mut spool = self.cache().spool(cksum);
        for chunk in data.chunks(store::CHUNK) {
            spool.write(chunk);
        }
        match self.cache().finish_spool(spool, cksum) {
            Ok(store::Spooled::File(file, len)) => {
                shared.crate_hit();
                Some(Body::File(FileBody::new(file, len)))
            }
            Ok(store::Spooled::Memory(data)) => {
                shared.crate_hit();
                Some(Body::from(data))
            }
            Err(got) => {
                shared.refuse_crate(cksum, &got);
                None
            }
        }
    }
}
