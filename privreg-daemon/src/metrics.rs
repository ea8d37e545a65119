//! What the daemon counts: Prometheus metrics for `/metrics` (text format 0.0.4), and the few
//! recent facts the status page shows (per-upstream latency, recent policy decisions that hid or
//! blocked something).
//!
//! Every label value is bounded: endpoints are named by the parsed route (never the raw path),
//! upstreams by their configured names, outcomes and decisions by fixed words.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use privreg_shared::CrateName;
use privreg_shared::policy::{Merged, State, UpstreamRef};
use privreg_shared::route::{self, View};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use privreg_shared::store::UpstreamPath;

/// The `Content-Type` of `/metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Recent policy decisions kept for the status page, at most.
pub(crate) const RECENT_DECISIONS: usize = 32;
/// Versions listed in one recent decision, at most (the rest are counted).
pub(crate) const VERSIONS_SHOWN: usize = 6;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    view: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamKindLabels {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SharedTierLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ])
}

fn upstream_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// How one upstream has been answering, for the status page.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latency {
    pub last: Duration,
    pub last_outcome: &'static str,
    pub total: Duration,
    pub count: u64,
}

impl Latency {
    pub(crate) fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.total / u32::try_from(self.count).unwrap_or(u32::MAX)
        }
    }
}

/// A policy decision that hid or blocked versions of a crate, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hidden {
    pub at: SystemTime,
    pub krate: String,
    pub upstream: String,
    /// As `privreg policy` says it: `shadowed`, `blocked`, `not-held`, `checksum-changed`.
    pub decision: &'static str,
    /// Newest first, at most [`VERSIONS_SHOWN`].
    pub versions: Vec<String>,
    /// Versions beyond those listed.
    pub more: usize,
    /// The pin stanza that decided, as `file:line`.
    pub stanza: Option<String>,
}

/// The name of a state that keeps a version from being served as is, as `privreg policy`
/// prints it; `None` for served versions and duplicates served from another upstream.
fn hiding(state: &State) -> Option<&'static str> {
    match state {
        State::Served | State::Duplicate { .. } => None,
        State::YankedByPin => Some("yanked-by-pin"),
        State::Shadowed => Some("shadowed"),
        State::Blocked => Some("blocked"),
        State::NotHeld => Some("not-held"),
        State::ChecksumChanged { .. } => Some("checksum-changed"),
    }
}

/// The `kind` label of a request for an upstream file.
pub(crate) fn file_kind(rel: UpstreamPath<'_>) -> &'static str {
    match rel {
        UpstreamPath::Config => "config",
        UpstreamPath::Index(_) => "index",
    }
}

/// The in-memory index cache: lookups, reads from disk and evictions counted as they happen;
/// its size set when the metrics are read.
#[derive(Default)]
struct MemoryMetrics {
    hits: Counter,
    misses: Counter,
    disk_reads: Counter,
    evictions: Counter,
    bytes: Gauge,
    budget: Gauge,
    entries: Gauge,
}

impl MemoryMetrics {
    fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "memory_cache_hits",
                "Index and config.json files found in the in-memory cache",
                &self.hits,
            ),
            (
                "memory_cache_misses",
                "Index and config.json files not in the in-memory cache (read from disk, or not cached)",
                &self.misses,
            ),
            (
                "memory_cache_disk_reads",
                "Files read back from the disk cache into memory",
                &self.disk_reads,
            ),
            (
                "memory_cache_evictions",
                "Files and merged views dropped from memory to keep within limits.index-memory",
                &self.evictions,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let sizes = [
            (
                "memory_cache",
                "What the in-memory index cache holds (estimated: bodies, parsed lines, merged views)",
                &self.bytes,
            ),
            (
                "memory_cache_budget",
                "The in-memory index cache's budget, limits.index-memory",
                &self.budget,
            ),
        ];
        for (name, help, gauge) in sizes {
            registry.register_with_unit(name, help, Unit::Bytes, gauge.clone());
        }
        registry.register(
            "memory_cache_entries",
            "Files and merged views in the in-memory index cache",
            self.entries.clone(),
        );
    }
}

/// The in-memory index cache's counts so far: (hits, misses, reads from disk, evictions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryCounts {
    pub hits: u64,
    pub misses: u64,
    pub disk_reads: u64,
    pub evictions: u64,
}

/// The daemon's metrics registry and its metric families.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<EndpointLabels>,
    served_bytes: Family<EndpointLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_seconds: Histograms<UpstreamKindLabels>,
    prefetches: Counter,
    prefetches_dropped: Counter,
    prefetches_skipped: Counter,
    merges: Counter,
    decisions: Family<DecisionLabels, Counter>,
    reloads: Counter,
    reload_errors: Counter,
    shared_tier: Family<SharedTierLabels, Counter>,
    shared_tier_failing: prometheus_client::metrics::gauge::Gauge,
    memory: MemoryMetrics,
    advisories: Gauge,
    advisory_db_updated: Gauge,
    advisory_db_errors: Counter,
    latency: Mutex<HashMap<String, Latency>>,
    recent: Mutex<VecDeque<Hidden>>,
    /// The disk cache's use and collections (see [`crate::gc`]).
    disk: crate::gc::Disk,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("privreg");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
            served_bytes: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            upstream_requests: Family::default(),
            upstream_seconds: Family::new_with_constructor(upstream_histogram),
            prefetches: Counter::default(),
            prefetches_dropped: Counter::default(),
            prefetches_skipped: Counter::default(),
            merges: Counter::default(),
            decisions: Family::default(),
            reloads: Counter::default(),
            reload_errors: Counter::default(),
            shared_tier: Family::default(),
            shared_tier_failing: prometheus_client::metrics::gauge::Gauge::default(),
            memory: MemoryMetrics::default(),
            advisories: Gauge::default(),
            advisory_db_updated: Gauge::default(),
            advisory_db_errors: Counter::default(),
            latency: Mutex::default(),
            recent: Mutex::default(),
            disk: crate::gc::Disk::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by endpoint (from the parsed route), view and HTTP status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time to answer a request, by endpoint",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        registry.register_with_unit(
            "served",
            "Response body bytes served, by endpoint",
            Unit::Bytes,
            m.served_bytes.clone(),
        );
        registry.register(
            "cache_hits",
            "Upstream index and config.json files answered from the cache (fresh, or stale while revalidating)",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Upstream index and config.json files that needed an upstream request",
            m.cache_misses.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests to upstreams, by upstream, kind (index, config, download) and outcome",
            m.upstream_requests.clone(),
        );
        registry.register_with_unit(
            "upstream_request_duration",
            "Time upstreams took to answer, by upstream and kind",
            Unit::Seconds,
            m.upstream_seconds.clone(),
        );
        registry.register(
            "prefetches",
            "Index files fetched ahead of cargo (dependencies of newly fetched files)",
            m.prefetches.clone(),
        );
        registry.register(
            "prefetches_dropped",
            "Prefetches not queued because the queue was full (cargo asks for those files itself)",
            m.prefetches_dropped.clone(),
        );
        registry.register(
            "prefetches_skipped",
            "Prefetches with nothing to do: the files were fresh on disk and not in memory (not read)",
            m.prefetches_skipped.clone(),
        );
        registry.register(
            "policy_merges",
            "Layered index files computed by the policy (after an upstream change or a reload)",
            m.merges.clone(),
        );
        registry.register(
            "policy_decisions",
            "Versions kept from being served as is when a layered index file was computed, by decision (shadowed, blocked, not-held, yanked-by-pin, checksum-changed)",
            m.decisions.clone(),
        );
        registry.register(
            "config_reloads",
            "Reloads of config.toml and the pin files, good or not",
            m.reloads.clone(),
        );
        registry.register(
            "config_reload_errors",
            "Reloads refused because config.toml or a pin file had an error (the last good configuration stayed in force)",
            m.reload_errors.clone(),
        );
        registry.register(
            "shared_tier_requests",
            "Shared cache tier requests, by op (index, crate, put) and outcome (hit, miss, rejected, error, skipped, ok, exists, dropped)",
            m.shared_tier.clone(),
        );
        registry.register(
            "shared_tier_failing",
            "1 while the shared cache tier's last request failed (it is skipped for its cooldown), else 0",
            m.shared_tier_failing.clone(),
        );
        m.memory.register(&mut registry);
        registry.register(
            "advisories",
            "Advisories in the RustSec advisory database in force (0 while none is loaded)",
            m.advisories.clone(),
        );
        registry.register_with_unit(
            "advisory_db_updated",
            "When the advisory database in force was fetched (Unix time; 0 while none is loaded)",
            Unit::Seconds,
            m.advisory_db_updated.clone(),
        );
        registry.register(
            "advisory_db_errors",
            "Fetches or loads of the advisory database that failed (the last good copy stayed in force)",
            m.advisory_db_errors.clone(),
        );
        m.disk.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// One shared tier request (or one skipped, or one write-back dropped).
    pub(crate) fn shared_tier(&self, op: &'static str, outcome: &'static str) {
        self.shared_tier
            .get_or_create(&SharedTierLabels { op, outcome })
            .inc();
        match outcome {
            "error" => {
                self.shared_tier_failing.set(1);
            }
            "hit" | "miss" | "ok" | "exists" => {
                self.shared_tier_failing.set(0);
            }
            _ => {}
        }
    }

    /// A lookup in the in-memory index cache: found there, or not.
    pub(crate) fn memory_lookup(&self, hit: bool) {
        if hit {
            self.memory.hits.inc();
        } else {
            self.memory.misses.inc();
        }
    }

    /// A file read back from the disk cache into memory.
    pub(crate) fn memory_disk_read(&self) {
        self.memory.disk_reads.inc();
    }

    /// A file or merged view dropped from memory to keep within the budget.
    pub(crate) fn memory_eviction(&self) {
        self.memory.evictions.inc();
    }

    /// The in-memory index cache's counts so far.
    pub(crate) fn memory_counts(&self) -> MemoryCounts {
        MemoryCounts {
            hits: self.memory.hits.get(),
            misses: self.memory.misses.get(),
            disk_reads: self.memory.disk_reads.get(),
            evictions: self.memory.evictions.get(),
        }
    }

    /// The in-memory index cache's size now (bytes, budget, entries), for the next read of
    /// the metrics.
    pub(crate) fn memory_usage(&self, bytes: u64, budget: u64, entries: u64) {
        let gauge = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        gauge(&self.memory.bytes, bytes);
        gauge(&self.memory.budget, budget);
        gauge(&self.memory.entries, entries);
    }

    /// The disk cache's use and collections.
    pub(crate) fn disk(&self) -> &crate::gc::Disk {
        &self.disk
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// One request answered: `path` is parsed again here so that the label is the route's name.
    pub(crate) fn served(&self, path: &str, status: u16, bytes: u64, took: Duration) {
        let (endpoint, view) = match route::parse(path) {
            Ok((View::Layered, e)) => (e.name(), "layered"),
            Ok((View::Upstream(_), e)) => (e.name(), "upstream"),
            Err(_) => ("invalid", "none"),
        };
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                view,
                status,
            })
            .inc();
        let e = EndpointLabels { endpoint };
        self.request_seconds
            .get_or_create(&e)
            .observe(took.as_secs_f64());
        self.served_bytes.get_or_create(&e).inc_by(bytes);
    }

    pub(crate) fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// One request to an upstream: `kind` is `index`, `config` or `download`; `outcome` says
    /// how it went (`ok`, `not_modified`, `absent`) or why it failed (the error's own label, such
    /// as `timeout` or `auth_error`).
    pub(crate) fn upstream(
        &self,
        upstream: &str,
        kind: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
                kind,
                outcome,
            })
            .inc();
        self.upstream_seconds
            .get_or_create(&UpstreamKindLabels {
                upstream: upstream.to_owned(),
                kind,
            })
            .observe(took.as_secs_f64());
        let mut latency = self.latency.lock().expect("latency lock");
        let l = latency.entry(upstream.to_owned()).or_default();
        l.last = took;
        l.last_outcome = outcome;
        l.total += took;
        l.count += 1;
    }

    /// Per-upstream latency so far.
    pub(crate) fn latency(&self) -> HashMap<String, Latency> {
        self.latency.lock().expect("latency lock").clone()
    }

    pub(crate) fn prefetch(&self) {
        self.prefetches.inc();
    }

    pub(crate) fn prefetch_dropped(&self) {
        self.prefetches_dropped.inc();
    }

    pub(crate) fn prefetch_skipped(&self) {
        self.prefetches_skipped.inc();
    }

    /// A reload of the configuration, good or not.
    pub(crate) fn reloaded(&self, ok: bool) {
        self.reloads.inc();
        if !ok {
            self.reload_errors.inc();
        }
    }

    /// An advisory database put in force: how many advisories, fetched when.
    pub(crate) fn advisory_db(&self, count: usize, updated_at: Option<u64>) {
        self.advisories
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.advisory_db_updated
            .set(updated_at.and_then(|u| i64::try_from(u).ok()).unwrap_or(0));
    }

    /// A fetch or load of the advisory database failed.
    pub(crate) fn advisory_db_error(&self) {
        self.advisory_db_errors.inc();
    }

    /// A layered index file computed for `krate`: counts its decisions, and remembers those that
    /// hid or blocked versions (replacing what was remembered for the crate before).
    pub(crate) fn merged(&self, krate: &CrateName, refs: &[UpstreamRef], merged: &Merged) {
        self.merges.inc();
        let mut groups: BTreeMap<(usize, &'static str, Option<String>), Vec<&semver::Version>> =
            BTreeMap::new();
        for d in &merged.decisions {
            let Some(decision) = hiding(&d.state) else {
                continue;
            };
            self.decisions
                .get_or_create(&DecisionLabels { decision })
                .inc();
            if decision != "yanked-by-pin" {
                let stanza = d.stanza.as_ref().map(ToString::to_string);
                groups
                    .entry((d.upstream, decision, stanza))
                    .or_default()
                    .push(&d.version);
            }
        }
        let at = SystemTime::now();
        let mut recent = self.recent.lock().expect("recent lock");
        recent.retain(|h| h.krate != krate.as_str());
        for ((upstream, decision, stanza), mut versions) in groups {
            versions.sort_by(|a, b| b.cmp(a));
            let more = versions.len().saturating_sub(VERSIONS_SHOWN);
            recent.push_front(Hidden {
                at,
                krate: krate.to_string(),
                upstream: refs
                    .get(upstream)
                    .map_or_else(|| "?".to_owned(), |u| u.name.clone()),
                decision,
                versions: versions
                    .iter()
                    .take(VERSIONS_SHOWN)
                    .map(ToString::to_string)
                    .collect(),
                more,
                stanza,
            });
        }
        recent.truncate(RECENT_DECISIONS);
    }

    /// The recent decisions that hid or blocked versions, newest first.
    pub(crate) fn recent_decisions(&self) -> Vec<Hidden> {
        self.recent
            .lock()
            .expect("recent lock")
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privreg_shared::policy::Decision;

    fn refs() -> Vec<UpstreamRef> {
        ["acme", "crates-io"]
            .into_iter()
            .map(|name| UpstreamRef {
                name: name.to_owned(),
                host: format!("{name}.example"),
                priority: 500,
            })
            .collect()
    }

    fn decision(upstream: usize, version: &str, state: State) -> Decision {
        Decision {
            upstream,
            version: version.parse().unwrap(),
            priority: 500,
            stanza: None,
            state,
        }
    }

    #[test]
    fn counts_appear_in_the_text_format() {
        let m = Metrics::new();
        m.served("/index/se/rd/serde", 200, 120, Duration::from_millis(1));
        m.served("/index/se/rd/serde", 200, 80, Duration::from_millis(1));
        m.served("/../../etc/passwd", 404, 10, Duration::from_millis(1));
        m.cache_hit();
        m.upstream("acme", "index", "ok", Duration::from_millis(30));
        m.reloaded(false);
        m.memory_lookup(true);
        m.memory_lookup(true);
        m.memory_lookup(false);
        m.memory_disk_read();
        m.memory_eviction();
        m.memory_usage(1000, 4096, 3);
        let text = m.encode();
        for want in [
            "# TYPE privreg_requests_total counter\n",
            "privreg_requests_total{endpoint=\"index\",view=\"layered\",status=\"200\"} 2\n",
            "privreg_requests_total{endpoint=\"invalid\",view=\"none\",status=\"404\"} 1\n",
            "privreg_served_bytes_total{endpoint=\"index\"} 200\n",
            "privreg_cache_hits_total 1\n",
            "privreg_upstream_requests_total{upstream=\"acme\",kind=\"index\",outcome=\"ok\"} 1\n",
            "# TYPE privreg_upstream_request_duration_seconds histogram\n",
            "privreg_upstream_request_duration_seconds_bucket{upstream=\"acme\",kind=\"index\",le=\"0.05\"} 1\n",
            "privreg_config_reloads_total 1\n",
            "privreg_config_reload_errors_total 1\n",
            "privreg_memory_cache_hits_total 2\n",
            "privreg_memory_cache_misses_total 1\n",
            "privreg_memory_cache_disk_reads_total 1\n",
            "privreg_memory_cache_evictions_total 1\n",
            "# TYPE privreg_memory_cache_bytes gauge\n",
            "privreg_memory_cache_bytes 1000\n",
            "privreg_memory_cache_budget_bytes 4096\n",
            "privreg_memory_cache_entries 3\n",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(
            !text.contains("passwd"),
            "a raw path became a label:\n{text}"
        );
        let counts = m.memory_counts();
        assert_eq!(
            (
                counts.hits,
                counts.misses,
                counts.disk_reads,
                counts.evictions
            ),
            (2, 1, 1, 1)
        );
        let l = &m.latency()["acme"];
        assert_eq!((l.count, l.last_outcome), (1, "ok"));
    }

    #[test]
    fn recent_decisions_are_grouped_bounded_and_replaced_per_crate() {
        let m = Metrics::new();
        let refs = refs();
        let mut merged = Merged::default();
        for v in ["1.0.0", "2.0.0", "1.5.0"] {
            merged.decisions.push(decision(1, v, State::Shadowed));
        }
        merged.decisions.push(decision(0, "0.1.0", State::Served));
        merged
            .decisions
            .push(decision(0, "0.2.0", State::YankedByPin));
        let acme = CrateName::new("acme-core").unwrap();
        m.merged(&acme, &refs, &merged);
        let recent = m.recent_decisions();
        assert_eq!(recent.len(), 1, "{recent:?}");
        assert_eq!(recent[0].upstream, "crates-io");
        assert_eq!(recent[0].decision, "shadowed");
        assert_eq!(recent[0].versions, ["2.0.0", "1.5.0", "1.0.0"]);
        let text = m.encode();
        assert!(text.contains("privreg_policy_decisions_total{decision=\"shadowed\"} 3\n"));
        assert!(text.contains("privreg_policy_decisions_total{decision=\"yanked-by-pin\"} 1\n"));

        // Computing the crate again replaces its entries.
        m.merged(&acme, &refs, &Merged::default());
        assert!(m.recent_decisions().is_empty());

        // Many crates: only the newest are kept.
        let mut blocked = Merged::default();
        for i in 0..20 {
            blocked
                .decisions
                .push(decision(0, &format!("1.0.{i}"), State::Blocked));
        }
        for i in 0..(RECENT_DECISIONS + 5) {
            m.merged(&CrateName::new(&format!("c{i}")).unwrap(), &refs, &blocked);
        }
        let recent = m.recent_decisions();
        assert_eq!(recent.len(), RECENT_DECISIONS);
        assert_eq!(recent[0].krate, format!("c{}", RECENT_DECISIONS + 4));
        assert_eq!(recent[0].versions.len(), VERSIONS_SHOWN);
        assert_eq!(recent[0].more, 20 - VERSIONS_SHOWN);
        assert_eq!(recent[0].versions[0], "1.0.19");
    }
}
