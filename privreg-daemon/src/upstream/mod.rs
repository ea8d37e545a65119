//! Talking to upstream registries: conditional requests, one request at a time per file
//! (concurrent callers share it), bounded bodies, and the memory + disk cache in front of it all.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use privreg_shared::index::IndexFile;
use privreg_shared::protocol::RegistryConfig;

mod body;
mod error;

use body::{not_an_index, read_limited, read_limited_into};

pub use error::{FetchError, MAX_RETRY_AFTER};

use crate::metrics::Metrics;
use crate::tokens::{Tokens, authorization};
use privreg_shared::store::{self, Cache, Meta, Spool, Stored, UpstreamPath};

/// One upstream file as privreg knows it.
#[derive(Debug)]
pub struct Entry {
    pub meta: Meta,
    pub body: Bytes,
    /// The parsed index file, for present index entries.
    pub file: Option<Arc<IndexFile>>,
    /// Changes whenever the body does (a 304 keeps it).
    pub rev: u64,
}

/// The outcome of asking for a file: the best entry known (fresh, or the last good one when the
/// upstream failed), and the failure if there was one.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub entry: Option<Arc<Entry>>,
    pub error: Option<FetchError>,
    /// This call received a new body from the upstream.
    pub changed: bool,
}

/// How many of a crate's newest versions have their dependencies prefetched.
pub const PREFETCH_VERSIONS: usize = 3;

type Key = (String, String);

#[derive(Default)]
struct Flight {
    /// The last failure of a request for this key and when it ended, so that callers who queued
    /// behind that request share its outcome instead of asking again.
    failed: Option<(Instant, FetchError)>,
    /// Until when that failure stands for every caller: the upstream's `Retry-After`.
    retry_at: Option<Instant>,
}

/// Health of one upstream as last seen.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub last_ok: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

pub struct Upstreams {
    client: reqwest::Client,
    cache: Cache,
    pub tokens: Tokens,
    hits: AtomicU64,
    misses: AtomicU64,
    revalidations: AtomicU64,
    revalidating: Mutex<HashSet<Key>>,
    /// Dependencies (name, `registry` URL) of newly fetched index files, for the prefetcher.
    prefetch: tokio::sync::mpsc::UnboundedSender<(CrateName, Option<String>)>,
    memory: Mutex<HashMap<Key, Arc<Entry>>>,
    /// Per crate key: what the prefetcher knows of it.
    interest: Mutex<HashMap<String, crate::prefetch::Interest>>,
    flights: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Flight>>>>,
    health: Mutex<HashMap<String, Health>>,
    next_rev: AtomicU64,
    requests: AtomicU64,
    metrics: Arc<Metrics>,
    /// Per upstream: the `max-upstream-requests` in force and the permits for it.
    in_flight: Mutex<HashMap<String, (usize, Arc<tokio::sync::Semaphore>)>>,
}

fn what(rel: UpstreamPath<'_>) -> String {
    match rel {
        UpstreamPath::Config => "config.json".to_owned(),
        UpstreamPath::Index(k) => format!("the index file of {k}"),
    }
}

fn rel_url(rel: UpstreamPath<'_>) -> String {
    match rel {
        UpstreamPath::Config => "config.json".to_owned(),
        UpstreamPath::Index(k) => k.index_path(),
    }
}

/// The client for every upstream: see [`privreg_shared::http`] (same-origin redirects only).
pub fn http_client() -> reqwest::Client {
    privreg_shared::http::upstream_client()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("the HTTP client builds")
}

enum Answer {
    Modified {
        body: Bytes,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    NotModified {
        etag: Option<String>,
        last_modified: Option<String>,
    },
    Absent,
}

impl Answer {
    /// The `outcome` label of `privreg_upstream_requests_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Answer::Modified { .. } => "ok",
            Answer::NotModified { .. } => "not_modified",
            Answer::Absent => "absent",
        }
    }
}

impl Upstreams {
    pub fn new(
        cache: Cache,
        tokens: Tokens,
        prefetch: tokio::sync::mpsc::UnboundedSender<(CrateName, Option<String>)>,
        metrics: Arc<Metrics>,
    ) -> Upstreams {
        Upstreams {
            metrics,
            client: http_client(),
            cache,
            tokens,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            revalidating: Mutex::default(),
            prefetch,
            memory: Mutex::default(),
            interest: Mutex::default(),
            flights: Mutex::default(),
            health: Mutex::default(),
            next_rev: AtomicU64::new(1),
            requests: AtomicU64::new(0),
            in_flight: Mutex::default(),
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Upstream requests made so far (for tests and metrics).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Index and config files answered from the cache without asking the upstream, and those
    /// that needed an upstream request.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Background revalidations started so far.
    pub fn revalidation_count(&self) -> u64 {
        self.revalidations.load(Ordering::Relaxed)
    }

    /// Hands the dependencies of the versions of `krate` that cargo will want (see
    /// [`crate::prefetch`]) to the prefetcher, once per version and dependency requirement.
    pub fn announce_dependencies(&self, krate: &CrateName, file: &IndexFile) {
        let mut interest = self.interest.lock().expect("interest lock");
        let follow = interest
            .entry(krate.key())
            .or_default()
            .take(&file.lines, PREFETCH_VERSIONS);
        for line in follow {
            // What cargo resolves for a dependent that asks for no extra features: normal and
            // build dependencies, optional ones only when the default feature switches them on.
            // (Following every optional dependency fetched about three times the files cargo
            // needed for a real application's graph.)
            let needed = line.dependencies().into_iter();
            for dep in needed.filter(|d| !d.dev && !d.off_by_default) {
                let Ok(name) = CrateName::new(&dep.krate) else {
                    continue;
                };
                let req = dep
                    .req
                    .as_deref()
                    .and_then(|r| semver::VersionReq::parse(r).ok());
                if interest.entry(name.key()).or_default().mention(req) {
                    let _ = self.prefetch.send((name.lower(), dep.registry.clone()));
                }
            }
        }
    }

    /// Waits for a turn to send `up` a request (at most `limits.max-upstream-requests` in flight),
    /// for no longer than the upstream's `timeout`. Hold the permit until the body is read.
    pub async fn permit(
        &self,
        up: &Upstream,
        what: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, FetchError> {
        let limit = up.limits.max_upstream_requests;
        let semaphore = {
            let mut map = self.in_flight.lock().expect("in-flight lock");
            let slot = map
                .entry(up.name.clone())
                .or_insert_with(|| (limit, Arc::new(tokio::sync::Semaphore::new(limit))));
            if slot.0 != limit {
                // A reload changed the limit: new requests count against a fresh budget.
                *slot = (limit, Arc::new(tokio::sync::Semaphore::new(limit)));
            }
            slot.1.clone()
        };
        let busy = || FetchError::Busy {
            upstream: up.name.clone(),
            what: what.to_owned(),
            limit,
            secs: up.timeout.as_secs_f64(),
        };
        match tokio::time::timeout(up.timeout, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }

    /// A GET to `up` with its own token (and no other upstream's).
    async fn get(&self, up: &Upstream, url: url::Url) -> reqwest::RequestBuilder {
        self.request_to(up, http::Method::GET, url).await
    }

    /// A request to `up` with its own token (and no other upstream's).
    pub async fn request_to(
        &self,
        up: &Upstream,
        method: http::Method,
        url: url::Url,
    ) -> reqwest::RequestBuilder {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self.client.request(method, url);
        if let Some(token) = self.tokens.get(up).await
            && let Some(value) = authorization(&token)
        {
            req = req.header(http::header::AUTHORIZATION, value);
        }
        req
    }

    /// Notes an auth failure so the token is read again (after `privreg login`) next time.
    fn refused(&self, up: &Upstream, err: &FetchError) {
        if matches!(err, FetchError::Auth { .. }) {
            self.tokens.forget(up);
        }
    }

    pub fn health(&self) -> HashMap<String, Health> {
        self.health.lock().expect("health lock").clone()
    }

    fn key(up: &Upstream, rel: UpstreamPath<'_>) -> Key {
        (store::upstream_dir_name(up), rel_url(rel))
    }

    fn entry_from(
        &self,
        stored: Stored,
        rel: UpstreamPath<'_>,
        up: &Upstream,
        rev: Option<u64>,
    ) -> Entry {
        let file = match rel {
            UpstreamPath::Index(krate) if stored.meta.present => {
                let file = IndexFile::parse_bytes(stored.body.clone());
                for s in &file.skipped {
                    tracing::warn!(upstream = %up.name, krate = %krate, line = s.line, reason = %s.reason, "skipping an index line cargo could not use");
                }
                Some(Arc::new(file))
            }
            _ => None,
        };
        let rev = rev.unwrap_or_else(|| self.next_rev.fetch_add(1, Ordering::Relaxed));
        Entry {
            meta: stored.meta,
            body: stored.body,
            file,
            rev,
        }
    }

    /// The entry in memory, else on disk (loaded into memory).
    fn known(&self, up: &Upstream, rel: UpstreamPath<'_>, key: &Key) -> Option<Arc<Entry>> {
        if let Some(e) = self.memory.lock().expect("memory lock").get(key) {
            return Some(e.clone());
        }
        let stored = match self.cache.load(up, rel) {
            Ok(s) => s?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cache");
                return None;
            }
        };
        let entry = Arc::new(self.entry_from(stored, rel, up, None));
        self.memory
            .lock()
            .expect("memory lock")
            .insert(key.clone(), entry.clone());
        Some(entry)
    }

    fn fresh(entry: &Entry, ttl: Duration) -> bool {
        SystemTime::now()
            .duration_since(entry.meta.fetched_at())
            .is_ok_and(|age| age < ttl)
    }

    /// Forgets what is cached for a file so that the next request asks the upstream, without
    /// conditions.
    pub fn invalidate(&self, up: &Upstream, rel: UpstreamPath<'_>) {
        let key = Self::key(up, rel);
        if let Some(e) = self.memory.lock().expect("memory lock").get_mut(&key) {
            // Without validators: some upstreams keep their ETag across a yank, and a 304 would
            // keep the old body.
            let meta = Meta {
                fetched: 0,
                etag: None,
                last_modified: None,
                ..e.meta.clone()
            };
            *e = Arc::new(Entry {
                meta,
                body: e.body.clone(),
                file: e.file.clone(),
                rev: e.rev,
            });
        }
    }

    /// Whether an answer for this file is held, in memory or on disk, fresh or not.
    pub fn is_cached(&self, up: &Upstream, rel: UpstreamPath<'_>) -> bool {
        self.known(up, rel, &Self::key(up, rel)).is_some()
    }

    /// Asks the upstream for a file now, even while the cached copy is fresh (`privreg
    /// refresh`): a conditional request, or a full one when `unconditional` (some upstreams keep
    /// their ETag across a yank). Returns the entry held before and the outcome. When the
    /// upstream fails, the cached copy keeps its freshness and is served as before.
    pub async fn revalidate_now(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        unconditional: bool,
    ) -> (Option<Arc<Entry>>, Fetched) {
        let key = Self::key(up, rel);
        let before = self.known(up, rel, &key);
        if let Some(old) = &before {
            let mut meta = Meta {
                fetched: 0,
                ..old.meta.clone()
            };
            if unconditional {
                (meta.etag, meta.last_modified) = (None, None);
            }
            let expired = Arc::new(Entry {
                meta,
                body: old.body.clone(),
                file: old.file.clone(),
                rev: old.rev,
            });
            self.memory
                .lock()
                .expect("memory lock")
                .insert(key.clone(), expired);
        }
        let fetched = self.fetch_now(up, rel, key.clone()).await;
        if fetched.error.is_some()
            && let Some(old) = &before
        {
            let mut memory = self.memory.lock().expect("memory lock");
            if memory
                .get(&key)
                .is_some_and(|e| e.rev == old.rev && e.meta.fetched == 0)
            {
                memory.insert(key, old.clone());
            }
        }
        (before, fetched)
    }

    /// Gets a file of an upstream: from memory or disk while fresh; while merely stale (within
    /// the upstream's `stale` bound past its `ttl`) also at once, with one revalidation started in
    /// the background; else with a conditional request. Concurrent callers for the same file
    /// share one upstream request.
    pub async fn fetch(self: &Arc<Self>, up: &Upstream, rel: UpstreamPath<'_>) -> Fetched {
        let key = Self::key(up, rel);
        if let Some(e) = self.known(up, rel, &key) {
            if Self::fresh(&e, up.ttl) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.metrics.cache_hit();
                return Fetched {
                    entry: Some(e),
                    error: None,
                    changed: false,
                };
            }
            if Self::fresh(&e, up.ttl.saturating_add(up.stale)) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.metrics.cache_hit();
                self.revalidate_in_background(up, rel, key);
                return Fetched {
                    entry: Some(e),
                    error: None,
                    changed: false,
                };
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.metrics.cache_miss();
        self.fetch_now(up, rel, key).await
    }

    /// Starts one background revalidation of a stale file (none if one is running).
    fn revalidate_in_background(self: &Arc<Self>, up: &Upstream, rel: UpstreamPath<'_>, key: Key) {
        if !self
            .revalidating
            .lock()
            .expect("revalidating lock")
            .insert(key.clone())
        {
            return;
        }
        let (this, up) = (self.clone(), up.clone());
        let krate = match rel {
            UpstreamPath::Config => None,
            UpstreamPath::Index(k) => Some(k.clone()),
        };
        tokio::spawn(async move {
            let rel = krate
                .as_ref()
                .map_or(UpstreamPath::Config, UpstreamPath::Index);
            this.revalidations.fetch_add(1, Ordering::Relaxed);
            this.fetch_now(&up, rel, key.clone()).await;
            this.revalidating
                .lock()
                .expect("revalidating lock")
                .remove(&key);
        });
    }

    /// Asks the upstream now (unless a request that just ended answered for us).
    async fn fetch_now(&self, up: &Upstream, rel: UpstreamPath<'_>, key: Key) -> Fetched {
        let start = Instant::now();
        let flight = self
            .flights
            .lock()
            .expect("flights lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let mut flight = flight.lock().await;
        let cached = self.known(up, rel, &key);
        if let Some(e) = cached.as_ref().filter(|e| Self::fresh(e, up.ttl)) {
            return Fetched {
                entry: Some(e.clone()),
                error: None,
                changed: false,
            };
        }
        if let Some((when, err)) = &flight.failed
            && (*when >= start || flight.retry_at.is_some_and(|t| t > Instant::now()))
        {
            return Fetched {
                entry: cached,
                error: Some(err.clone()),
                changed: false,
            };
        }
        let (asked, kind) = (Instant::now(), crate::metrics::file_kind(rel));
        let result = self.request(up, rel, cached.as_deref()).await;
        let outcome = result.as_ref().map(Answer::outcome);
        self.metrics
            .upstream(&up.name, kind, outcome, asked.elapsed());
        match result {
            Ok(answer) => {
                flight.failed = None;
                let (stored, rev) = match answer {
                    Answer::Modified {
                        body,
                        etag,
                        last_modified,
                    } => (
                        Stored {
                            meta: Meta {
                                present: true,
                                etag,
                                last_modified,
                                fetched: store::now_secs(),
                            },
                            body,
                        },
                        None,
                    ),
                    Answer::NotModified {
                        etag,
                        last_modified,
                    } => {
                        let old = cached
                            .as_ref()
                            .expect("304 only answers a conditional request");
                        let meta = Meta {
                            present: true,
                            etag: etag.or_else(|| old.meta.etag.clone()),
                            last_modified: last_modified.or_else(|| old.meta.last_modified.clone()),
                            fetched: store::now_secs(),
                        };
                        (
                            Stored {
                                meta,
                                body: old.body.clone(),
                            },
                            Some(old.rev),
                        )
                    }
                    Answer::Absent => (
                        Stored {
                            meta: Meta {
                                present: false,
                                etag: None,
                                last_modified: None,
                                fetched: store::now_secs(),
                            },
                            body: Bytes::new(),
                        },
                        None,
                    ),
                };
                // A 304 that leaves the validators as they were changes nothing worth a rewrite
                // of the whole file: the new freshness lives in memory (after a restart the file
                // is only revalidated a little sooner).
                let unchanged_on_disk = rev.is_some()
                    && cached.as_ref().is_some_and(|old| {
                        old.meta.etag == stored.meta.etag
                            && old.meta.last_modified == stored.meta.last_modified
                    });
                if !unchanged_on_disk && let Err(e) = self.cache.store(up, rel, &stored) {
                    tracing::warn!(error = %e, "cannot write the cache; serving without caching");
                }
                let entry = match (rev, &cached) {
                    // Unchanged body: keep the parsed file.
                    (Some(rev), Some(old)) => Arc::new(Entry {
                        meta: stored.meta,
                        body: stored.body,
                        file: old.file.clone(),
                        rev,
                    }),
                    _ => Arc::new(self.entry_from(stored, rel, up, None)),
                };
                self.memory
                    .lock()
                    .expect("memory lock")
                    .insert(key, entry.clone());
                self.note_ok(up);
                let changed = rev.is_none();
                if changed
                    && let Some(file) = &entry.file
                    && let UpstreamPath::Index(krate) = rel
                {
                    self.announce_dependencies(krate, file);
                }
                Fetched {
                    entry: Some(entry),
                    error: None,
                    changed,
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, stale = cached.is_some(), "upstream request failed");
                self.refused(up, &err);
                self.note_error(up, &err.to_string());
                flight.failed = Some((Instant::now(), err.clone()));
                flight.retry_at = err
                    .retry_after()
                    .map(|secs| Instant::now() + Duration::from_secs(secs));
                Fetched {
                    entry: cached,
                    error: Some(err),
                    changed: false,
                }
            }
        }
    }

    async fn request(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        cached: Option<&Entry>,
    ) -> Result<Answer, FetchError> {
        let url = up
            .base
            .join(&rel_url(rel))
            .expect("index paths join onto a base URL");
        let mut req = self.get(up, url.clone()).await.timeout(up.timeout);
        if let Some(c) = cached.filter(|c| c.meta.present) {
            if let Some(etag) = &c.meta.etag {
                req = req.header(http::header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &c.meta.last_modified {
                req = req.header(http::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let what = what(rel);
        let _permit = self.permit(up, &what).await?;
        tracing::debug!(upstream = %up.name, %url, "upstream request");
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(up, &what, e))?;
        let status = resp.status().as_u16();
        let header = |name: http::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (
            header(http::header::ETAG),
            header(http::header::LAST_MODIFIED),
        );
        match status {
            200 => {
                let limit = (up.limits.max_index_size, "max-index-size");
                let body = read_limited(resp, limit, up, &what).await?;
                let bad = match rel {
                    UpstreamPath::Config => {
                        RegistryConfig::parse(&body).err().map(|e| e.to_string())
                    }
                    UpstreamPath::Index(_) => not_an_index(&body),
                };
                if let Some(message) = bad {
                    return Err(FetchError::BadBody {
                        upstream: up.name.clone(),
                        what,
                        message,
                    });
                }
                Ok(Answer::Modified {
                    body,
                    etag,
                    last_modified,
                })
            }
            304 if cached.is_some_and(|c| c.meta.present) => Ok(Answer::NotModified {
                etag,
                last_modified,
            }),
            404 | 410 if matches!(rel, UpstreamPath::Index(_)) => Ok(Answer::Absent),
            _ => Err(FetchError::from_status(up, &what, status, resp.headers())),
        }
    }

    pub fn transport_error(&self, up: &Upstream, what: &str, e: reqwest::Error) -> FetchError {
        FetchError::from_reqwest(up, what, &e, false)
    }

    /// Downloads `url` from `up` (at most `limits.max-crate-size` bytes) into `spool`, a chunk at
    /// a time as it arrives.
    pub async fn download(
        &self,
        up: &Upstream,
        url: url::Url,
        what: &str,
        spool: &mut Spool,
    ) -> Result<(), FetchError> {
        let _permit = self.permit(up, what).await?;
        let resp = self
            .get(up, url)
            .await
            // `timeout` bounds the whole download, body included, as it does index files.
            .timeout(up.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(up, what, e));
        let result = match resp {
            Err(e) => Err(e),
            Ok(resp) => match resp.status().as_u16() {
                200 => {
                    let limit = (up.limits.max_crate_size, "max-crate-size");
                    read_limited_into(resp, limit, up, what, |chunk| spool.write(chunk)).await
                }
                status => Err(FetchError::from_status(up, what, status, resp.headers())),
            },
        };
        match &result {
            Ok(_) => self.note_ok(up),
            Err(e) => {
                self.refused(up, e);
                self.note_error(up, &e.to_string());
            }
        }
        result
    }

    /// Records for `privreg status` that `up` answered well just now.
    pub fn note_ok(&self, up: &Upstream) {
        self.health
            .lock()
            .expect("health lock")
            .entry(up.name.clone())
            .or_default()
            .last_ok = Some(store::now_secs());
    }

    /// Records for `privreg status` that a request to `up` failed just now, and why.
    pub fn note_error(&self, up: &Upstream, error: &str) {
        let mut health = self.health.lock().expect("health lock");
        let h = health.entry(up.name.clone()).or_default();
        h.last_error = Some(error.to_owned());
        h.last_error_at = Some(store::now_secs());
    }

    /// The index file of `krate` at `up` (see [`Upstreams::fetch`]).
    pub async fn index(self: &Arc<Self>, up: &Upstream, krate: &CrateName) -> Fetched {
        self.fetch(up, UpstreamPath::Index(krate)).await
    }
}
