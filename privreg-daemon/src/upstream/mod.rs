//! Talking to upstream registries: the [`Upstreams`] façade over the memory + disk cache
//! ([`memory`]), conditional requests ([`request`]) and what their answers mean ([`classify`]),
//! one request at a time per file ([`flight`]), bounded bodies, freshness and background
//! revalidation, and each upstream's health.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use privreg_shared::config::Upstream;
use privreg_shared::index::IndexFile;
use privreg_shared::{CrateName, UpstreamName};
use tokio::sync::mpsc::error::TrySendError;

mod body;
mod classify;
mod client;
pub(crate) mod deferred;
mod error;
mod flight;
mod memory;
mod request;
mod scope;

use body::{read_limited, read_limited_into};
use classify::{Answer, Head};
use flight::{Flights, Permits};
use memory::{Key, fresh};

pub(crate) use client::http_client;
pub(crate) use error::FetchError;
#[cfg(test)]
pub(crate) use memory::DiskState;
pub(crate) use memory::{Entry, Memory, OnDisk};
pub(crate) use scope::RequestKind;

use crate::metrics::Metrics;
use crate::shared_tier::SharedTier;
use crate::tokens::{Tokens, authorization};
use privreg_shared::store::{self, Cache, Spool, Stored, UpstreamPath};

/// The outcome of asking for a file: the best entry known (fresh, or the last good one when the
/// upstream failed), and the failure if there was one.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub entry: Option<Arc<Entry>>,
    pub error: Option<FetchError>,
}

/// How many of a crate's newest versions have their dependencies prefetched.
pub(crate) const PREFETCH_VERSIONS: usize = 3;

/// Crates whose prefetch interest is remembered, at most (the least recently mentioned are
/// forgotten: at worst a fresh file is looked up again, from memory or disk). Several times the
/// crates of a large project's graph; each costs about a kilobyte with the cache's bookkeeping.
const INTEREST_CRATES: u64 = 4_096;

/// Health of one upstream as last seen.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[allow(
    clippy::struct_field_names,
    reason = "the field names are the keys of the status document"
)]
pub(crate) struct Health {
    pub last_ok: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

pub(crate) struct Upstreams {
    client: reqwest::Client,
    pub tokens: Tokens,
    hits: AtomicU64,
    misses: AtomicU64,
    revalidations: AtomicU64,
    revalidating: Mutex<HashSet<Key>>,
    /// Dependencies (name, `registry` URL) of newly fetched index files, for the prefetcher.
    prefetch: tokio::sync::mpsc::Sender<(CrateName, Option<String>)>,
    memory: Memory,
    /// The disk cache, for recording uses (see [`crate::gc`]).
    cache: Cache,
    /// Per crate key: what the prefetcher knows of it.
    interest: moka::sync::Cache<String, Arc<Mutex<crate::prefetch::Interest>>>,
    /// Per file: the request asking for it now, and what the last one left.
    flights: Flights,
    health: Mutex<HashMap<String, Health>>,
    requests: AtomicU64,
    metrics: Arc<Metrics>,
    /// Per upstream: the permits for `limits.max-upstream-requests`.
    in_flight: Permits,
    /// The upstreams (name, index URL) that answered 401 for `config.json` without a token: they
    /// require authentication whatever their cached `config.json` says (as in cargo).
    auth_probed: Mutex<HashSet<(UpstreamName, String)>>,
    /// The team tier (`[cache.shared]`), asked after memory and disk, before the upstream.
    shared: Arc<SharedTier>,
    /// Local copies of files from the tier, written once the daemon is quiet.
    deferred: deferred::Deferred,
}

impl Upstreams {
    /// `index_memory`: the budget of the files held in memory (`limits.index-memory`).
    pub(crate) fn new(
        cache: Cache,
        index_memory: u64,
        tokens: Tokens,
        prefetch: tokio::sync::mpsc::Sender<(CrateName, Option<String>)>,
        metrics: Arc<Metrics>,
    ) -> Upstreams {
        Upstreams {
            shared: Arc::new(SharedTier::new(metrics.clone(), index_memory)),
            deferred: deferred::Deferred::default(),
            client: http_client(),
            tokens,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            revalidating: Mutex::default(),
            prefetch,
            memory: Memory::new(cache.clone(), index_memory, metrics.clone()),
            cache,
            interest: moka::sync::Cache::builder()
                .max_capacity(INTEREST_CRATES)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            flights: Flights::default(),
            health: Mutex::default(),
            requests: AtomicU64::new(0),
            in_flight: Permits::default(),
            auth_probed: Mutex::default(),
            metrics,
        }
    }

    /// The team tier.
    pub(crate) fn shared(&self) -> &Arc<SharedTier> {
        &self.shared
    }

    /// The index files of `up` that memory holds (sparse-index path, file), for its index pack.
    pub(crate) fn index_files(&self, up: &Upstream) -> Vec<(String, Stored)> {
        self.memory.index_files(&store::upstream_dir_name(up))
    }

    /// The files (and merged views) held in memory.
    pub(crate) fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Forgets what is kept per upstream for upstreams no longer configured (after a reload), so
    /// that renaming or repointing upstreams does not grow it.
    pub(crate) fn retain_upstreams(&self, configured: &[Upstream]) {
        let is_configured = |name: &str, index: Option<&str>| {
            configured
                .iter()
                .any(|u| u.name.as_str() == name && index.is_none_or(|i| u.index == i))
        };
        self.auth_probed
            .lock()
            .expect("auth lock")
            .retain(|(name, index)| is_configured(name.as_str(), Some(index)));
        self.health
            .lock()
            .expect("health lock")
            .retain(|name, _| is_configured(name, None));
        self.in_flight.retain(|name| is_configured(name, None));
    }

    /// Upstream requests made so far (for tests and metrics).
    pub(crate) fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Index and config files answered from the cache without asking the upstream, and those
    /// that needed an upstream request.
    pub(crate) fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Background revalidations started so far.
    pub(crate) fn revalidation_count(&self) -> u64 {
        self.revalidations.load(Ordering::Relaxed)
    }

    /// Whether a prefetch of `krate` has nothing to do: memory holds none of its files and each
    /// of `upstreams` has a fresh copy on disk. Reading those back would only fill memory with
    /// files nobody asked for yet, pushing out those in use; cargo's own request reads them.
    pub(crate) fn fresh_on_disk(&self, upstreams: &[Upstream], krate: &CrateName) -> bool {
        let rel = UpstreamPath::Index(krate);
        upstreams.iter().all(|up| {
            let key = memory::key(up, rel);
            !self.memory.holds(&key) && self.memory.fresh_on_disk(up, rel, &key, up.ttl)
        })
    }

    /// Hands the dependencies of the versions of `krate` that cargo will want (see
    /// [`crate::prefetch`]) to the prefetcher, once per version and dependency requirement.
    pub(crate) fn announce_dependencies(&self, krate: &CrateName, file: &IndexFile) {
        let interest = |key: String| self.interest.get_with(key, Arc::default);
        let follow = interest(krate.key())
            .lock()
            .expect("interest lock")
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
                let mentioned = interest(name.key())
                    .lock()
                    .expect("interest lock")
                    .mention(req);
                // A full queue drops the prefetch: cargo asks for the file itself when it needs
                // it, and the queue stays bounded however large the graph.
                if mentioned
                    && let Err(TrySendError::Full(_)) =
                        self.prefetch.try_send((name.lower(), dep.registry.clone()))
                {
                    self.metrics.prefetch_dropped();
                }
            }
        }
    }

    /// Waits for a turn to send `up` a request (at most `limits.max-upstream-requests` in flight),
    /// for no longer than the upstream's `timeout`. Hold the permit until the body is read.
    pub(crate) async fn permit(
        &self,
        up: &Upstream,
        what: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, FetchError> {
        let limit = up.limits.max_upstream_requests;
        let semaphore = self.in_flight.semaphore(&up.name, limit);
        let busy = || FetchError::Busy {
            upstream: up.name.to_string(),
            what: what.to_owned(),
            limit,
            secs: up.timeout.as_secs_f64(),
        };
        match tokio::time::timeout(up.timeout, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }

    /// Whether `up` requires authentication, as far as is known: it answered 401 for
    /// `config.json`, or the `config.json` held says `auth-required: true`.
    fn auth_required(&self, up: &Upstream) -> bool {
        let probed = (up.name.clone(), up.index.clone());
        if self
            .auth_probed
            .lock()
            .expect("auth lock")
            .contains(&probed)
        {
            return true;
        }
        let key = memory::key(up, UpstreamPath::Config);
        self.memory
            .known(up, UpstreamPath::Config, &key)
            .is_some_and(|e| e.meta.present && scope::says_auth_required(&e.body))
    }

    /// A request to `up` for `kind`, with its own token (and no other upstream's) where cargo
    /// would send it (see [`scope`]).
    pub(crate) fn request_to(
        &self,
        up: &Upstream,
        kind: RequestKind,
        method: http::Method,
        url: url::Url,
    ) -> reqwest::RequestBuilder {
        let token = scope::carries_token(kind, self.auth_required(up));
        self.request_with(up, method, url, token)
    }

    /// A request to `up`, with its own token if `token` (and it has one).
    fn request_with(
        &self,
        up: &Upstream,
        method: http::Method,
        url: url::Url,
        token: bool,
    ) -> reqwest::RequestBuilder {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self.client.request(method, url);
        if token
            && let Some(token) = self.tokens.get(up)
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

    pub(crate) fn health(&self) -> HashMap<String, Health> {
        self.health.lock().expect("health lock").clone()
    }

    /// Forgets what is cached for a file so that the next request asks the upstream, without
    /// conditions.
    pub(crate) fn invalidate(&self, up: &Upstream, rel: UpstreamPath<'_>) {
        self.memory.invalidate(&memory::key(up, rel));
    }

    /// Drops a file from memory entirely (for whoever removes it from the disk cache): the next
    /// request for it asks the upstream. A copy being served stays alive until it is sent.
    #[allow(
        dead_code,
        reason = "the seam for the disk cache's collection (issue 16)"
    )]
    pub(crate) fn forget(&self, up: &Upstream, rel: UpstreamPath<'_>) {
        self.memory.forget(&memory::key(up, rel));
    }

    /// Whether an answer for this file is held, in memory or on disk, fresh or not.
    pub(crate) fn is_cached(&self, up: &Upstream, rel: UpstreamPath<'_>) -> bool {
        let key = memory::key(up, rel);
        self.memory.known(up, rel, &key).is_some()
    }

    /// Asks the upstream for a file now, even while the cached copy is fresh (`privreg
    /// refresh`): a conditional request, or a full one when `unconditional` (some upstreams keep
    /// their ETag across a yank). Returns the entry held before and the outcome. When the
    /// upstream fails, the cached copy keeps its freshness and is served as before.
    pub(crate) async fn revalidate_now(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        unconditional: bool,
    ) -> (Option<Arc<Entry>>, Fetched) {
        let key = memory::key(up, rel);
        let before = self.memory.known(up, rel, &key);
        if let Some(old) = &before {
            self.memory.expire(key.clone(), old, unconditional);
        }
        let fetched = self.fetch_now(up, rel, key.clone()).await;
        if fetched.error.is_some()
            && let Some(old) = &before
        {
            self.memory.restore(key, old);
        }
        (before, fetched)
    }

    /// Gets a file of an upstream: from memory or disk while fresh; while merely stale (within
    /// the upstream's `stale` bound past its `ttl`) also at once, with one revalidation started in
    /// the background; else with a conditional request. Concurrent callers for the same file
    /// share one upstream request.
    pub(crate) async fn fetch(self: &Arc<Self>, up: &Upstream, rel: UpstreamPath<'_>) -> Fetched {
        let key = memory::key(up, rel);
        // Recorded in memory; the collector writes last uses in batches (see `crate::gc`).
        self.cache.note_use(up, rel);
        self.deferred.busy(Instant::now());
        let mut known = self.memory.known(up, rel, &key);
        if known
            .as_ref()
            .is_none_or(|e| !fresh(e, up.ttl.saturating_add(up.stale)))
        {
            known = self.ask_shared_tier(up, rel, &key, known).await;
        }
        if let Some(e) = known {
            if fresh(&e, up.ttl) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.metrics.cache_hit();
                return Fetched {
                    entry: Some(e),
                    error: None,
                };
            }
            if fresh(&e, up.ttl.saturating_add(up.stale)) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.metrics.cache_hit();
                self.revalidate_in_background(up, rel, key);
                return Fetched {
                    entry: Some(e),
                    error: None,
                };
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.metrics.cache_miss();
        self.fetch_now(up, rel, key).await
    }

    /// The tier's copy of a file that memory and disk hold no usable copy of (`held`), when it
    /// is newer; kept in memory and on disk like an upstream's answer, with the upstream's
    /// validators and fetch time, so that the usual `ttl` and `stale` rules apply to it.
    async fn ask_shared_tier(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        key: &Key,
        held: Option<Arc<Entry>>,
    ) -> Option<Arc<Entry>> {
        // Without a tier for this upstream, never wait on the file's flight here: callers
        // must reach the cache-miss count and the upstream request's coalescing at once.
        if !self.shared.shares(up) {
            return held;
        }
        // One tier request per file at a time, like upstream requests.
        let flight = self.flights.of(key);
        let _flight = flight.lock().await;
        let held = self.memory.known(up, rel, key).or(held);
        if held
            .as_ref()
            .is_some_and(|e| fresh(e, up.ttl.saturating_add(up.stale)))
        {
            return held;
        }
        let Some(file) = self.shared.index(up, &request::rel_url(rel)).await else {
            return held;
        };
        if held
            .as_ref()
            .is_some_and(|e| e.meta.fetched >= file.stored.meta.fetched)
        {
            return held;
        }
        tracing::debug!(upstream = %up.name, file = %request::rel_url(rel), "from the shared tier");
        // Its local copy waits until the daemon is quiet (see `deferred`): the tier holds it.
        let (entry, seen_changed) = self.memory.adopt(up, rel, key.clone(), file, held.as_ref());
        let waiting = deferred::Waiting {
            up: up.clone(),
            krate: rel.krate().cloned(),
            key: key.clone(),
            entry: Arc::downgrade(&entry),
            seen_changed,
        };
        if !self.deferred.push(waiting, Instant::now()) {
            self.memory.write_copy(up, rel, key, &entry, seen_changed);
        }
        // Like a file from the upstream, one from the tier starts the prefetch of what cargo
        // will ask next, so that a cold daemon on a warm tier is not one round trip per level.
        if let (Some(file), UpstreamPath::Index(krate)) = (&entry.file, rel) {
            self.announce_dependencies(krate, file);
        }
        Some(entry)
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
        let krate = rel.krate().cloned();
        tokio::spawn(async move {
            let rel = UpstreamPath::of(krate.as_ref());
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
        let flight = self.flights.of(&key);
        let mut flight = flight.lock().await;
        let cached = self.memory.known(up, rel, &key);
        if let Some(e) = cached.as_ref().filter(|e| fresh(e, up.ttl)) {
            return Fetched {
                entry: Some(e.clone()),
                error: None,
            };
        }
        if let Some(err) = flight.shared_failure(start, Instant::now()) {
            return Fetched {
                entry: cached,
                error: Some(err.clone()),
            };
        }
        let (asked, kind) = (Instant::now(), crate::metrics::file_kind(rel));
        let result = self.request(up, rel, cached.as_deref()).await;
        let outcome = result
            .as_ref()
            .map_or_else(FetchError::metric_label, Answer::outcome);
        self.metrics
            .upstream(&up.name, kind, outcome, asked.elapsed());
        match result {
            Ok(answer) => {
                flight.succeeded();
                let (entry, changed) = self.memory.remember(up, rel, key, answer, cached.as_ref());
                self.note_ok(up);
                self.shared
                    .put_index(up, &request::rel_url(rel), &entry.stored());
                if changed
                    && let Some(file) = &entry.file
                    && let UpstreamPath::Index(krate) = rel
                {
                    self.announce_dependencies(krate, file);
                }
                Fetched {
                    entry: Some(entry),
                    error: None,
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, stale = cached.is_some(), "upstream request failed");
                self.refused(up, &err);
                self.note_error(up, &err.to_string());
                flight.failed(err.clone(), Instant::now());
                Fetched {
                    entry: cached,
                    error: Some(err),
                }
            }
        }
    }

    /// One request for a file, conditional on the copy `cached` when it has a body; asked again
    /// with the token when a refusal shows that the upstream requires authentication.
    async fn request(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        cached: Option<&Entry>,
    ) -> Result<Answer, FetchError> {
        let kind = RequestKind::of(rel);
        let token = scope::carries_token(kind, self.auth_required(up));
        let first = self.attempt(up, rel, cached, token).await;
        let Err(FetchError::Auth { status, .. }) = &first else {
            return first;
        };
        match scope::refused(kind, *status, token) {
            scope::Refused::Stands => return first,
            scope::Refused::AuthRequired => {
                tracing::debug!(upstream = %up.name, "config.json needs authentication; asking with the token");
                let probed = (up.name.clone(), up.index.clone());
                self.auth_probed.lock().expect("auth lock").insert(probed);
            }
            scope::Refused::AskConfig => {
                let config = UpstreamPath::Config;
                Box::pin(self.fetch_now(up, config, memory::key(up, config))).await;
                if !self.auth_required(up) {
                    return first;
                }
            }
        }
        if self.tokens.get(up).is_none() {
            return first;
        }
        self.attempt(up, rel, cached, true).await
    }

    /// One request for a file, with the token or without.
    async fn attempt(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        cached: Option<&Entry>,
        token: bool,
    ) -> Result<Answer, FetchError> {
        let url = request::file_url(up, rel);
        let mut req = self
            .request_with(up, http::Method::GET, url.clone(), token)
            .timeout(up.timeout);
        for (name, value) in request::conditional_headers(cached.map(|c| &c.meta)) {
            req = req.header(name, value);
        }
        let what = request::what(rel);
        let _permit = self.permit(up, &what).await?;
        tracing::debug!(upstream = %up.name, %url, "upstream request");
        let resp = req
            .send()
            .await
            .map_err(|e| FetchError::from_reqwest(up, &what, &e, false))?;
        let held_body = cached.is_some_and(|c| c.meta.present);
        let status = resp.status().as_u16();
        match classify::head(up, &what, rel, status, resp.headers(), held_body)? {
            Head::Body(validators) => {
                let limit = (up.limits.max_index_size, "max-index-size");
                let body = read_limited(resp, limit, up, &what).await?;
                classify::body(up, &what, rel, body, validators)
            }
            Head::NotModified(validators) => Ok(Answer::NotModified(validators)),
            Head::Absent => Ok(Answer::Absent),
        }
    }

    /// Downloads `url` from `up` (at most `limits.max-crate-size` bytes) into `spool`, a chunk at
    /// a time as it arrives.
    pub(crate) async fn download(
        &self,
        up: &Upstream,
        url: url::Url,
        what: &str,
        spool: &mut Spool,
    ) -> Result<(), FetchError> {
        let _permit = self.permit(up, what).await?;
        let resp = self
            .request_to(up, RequestKind::Download, http::Method::GET, url)
            // `timeout` bounds the whole download, body included, as it does index files.
            .timeout(up.timeout)
            .send()
            .await
            .map_err(|e| FetchError::from_reqwest(up, what, &e, false));
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
            Ok(()) => self.note_ok(up),
            Err(e) => {
                self.refused(up, e);
                self.note_error(up, &e.to_string());
            }
        }
        result
    }

    /// Records for `privreg status` that `up` answered well just now.
    pub(crate) fn note_ok(&self, up: &Upstream) {
        self.health
            .lock()
            .expect("health lock")
            .entry(up.name.to_string())
            .or_default()
            .last_ok = Some(store::now_secs());
    }

    /// Records for `privreg status` that a request to `up` failed just now, and why.
    pub(crate) fn note_error(&self, up: &Upstream, error: &str) {
        let mut health = self.health.lock().expect("health lock");
        let h = health.entry(up.name.to_string()).or_default();
        h.last_error = Some(error.to_owned());
        h.last_error_at = Some(store::now_secs());
    }

    /// The index file of `krate` at `up` (see [`Upstreams::fetch`]).
    pub(crate) async fn index(self: &Arc<Self>, up: &Upstream, krate: &CrateName) -> Fetched {
        self.fetch(up, UpstreamPath::Index(krate)).await
    }
}

/// Upstream `acme` at an address nothing listens on, for the unit tests of this module's parts.
#[cfg(test)]
pub(crate) fn test_upstream() -> Upstream {
    privreg_shared::config::Config::parse(
        std::path::Path::new("config.toml"),
        "[upstreams.acme]\nindex = \"sparse+http://127.0.0.1:1/index/\"\n",
    )
    .expect("the test config parses")
    .upstreams
    .remove(0)
}

/// A 429 from upstream `acme` asking to retry after `secs`, for the unit tests.
#[cfg(test)]
pub(crate) fn test_retry_later(secs: u64) -> FetchError {
    FetchError::RetryLater {
        upstream: "acme".into(),
        what: "x".into(),
        status: 429,
        retry_after: secs,
    }
}
