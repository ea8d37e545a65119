//! `/-/`: the status page, server-rendered HTML with inline CSS (no scripts): errors in force,
//! upstreams with health and latency, the cache, and recent policy decisions that hid or blocked
//! versions. Every value goes through `maud`, which escapes it. Also the HTTP answers of
//! `/metrics` and of the page's one-time links (`/-/open`, see [`crate::session`]).

use privreg_shared::protocol::DiskStatus;
use privreg_shared::store::human_bytes;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use privreg_shared::protocol::{AdvisoriesStatus, MemoryStatus, PageLink};
use privreg_shared::route::Endpoint;

use crate::daemon::Daemon;
use crate::metrics::{self, Hidden, Latency};
use crate::session::LINK_TTL;
use crate::upstream::Health;

const CSS: &str = include_str!("page.css");

/// One upstream's row.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRow {
    pub name: String,
    pub index: String,
    pub priority: i32,
    pub health: Health,
    pub latency: Option<Latency>,
}

/// Everything the page shows, gathered first so that rendering is a pure function.
#[derive(Debug, Clone)]
pub(crate) struct PageData {
    pub url: String,
    pub pid: u32,
    pub uptime: Duration,
    pub config_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub config_error: Option<String>,
    /// When (seconds since the epoch) and why the cache could not be written.
    pub cache_write_error: Option<(u64, String)>,
    pub upstreams: Vec<UpstreamRow>,
    /// The disk cache: use against `max-size`, the last collection.
    pub disk: DiskStatus,
    pub hits: u64,
    pub misses: u64,
    pub revalidations: u64,
    pub prefetches: u64,
    pub upstream_requests: u64,
    pub decisions: Vec<Hidden>,
    /// The team tier (`[cache.shared]`), when configured.
    pub shared_tier: Option<privreg_shared::protocol::SharedTierStatus>,
    /// The in-memory index cache.
    pub memory: MemoryStatus,
    /// The advisory database in force.
    pub advisories: AdvisoriesStatus,
    /// Seconds since the epoch, for "… ago".
    pub now: u64,
}

fn ago(now: u64, at: u64) -> String {
    let secs = now.saturating_sub(at);
    if secs == 0 {
        "just now".to_owned()
    } else {
        format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(secs))
        )
    }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// The health badge: (CSS class, word), as `privreg status` judges it.
fn health(h: &Health) -> (&'static str, &'static str) {
    match (h.last_ok, h.last_error_at) {
        (ok, Some(at)) if ok.is_none_or(|ok| at >= ok) => ("bad", "failing"),
        (Some(_), _) => ("ok", "ok"),
        _ => ("idle", "not contacted yet"),
    }
}

fn stat(value: &str, label: &str) -> Markup {
    html! {
        div class="stat" {
            div class="value" { (value) }
            div class="label" { (label) }
        }
    }
}

/// The whole page.
pub(crate) fn render(d: &PageData) -> Markup {
    let failing = d
        .upstreams
        .iter()
        .filter(|u| health(&u.health).0 == "bad")
        .count();
    let problems =
        usize::from(d.config_error.is_some()) + usize::from(d.cache_write_error.is_some());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "privreg status" }
                style { (PreEscaped(CSS)) }
            }
            body {
                (header_bar(d, problems + failing))
                main {
                    (errors_section(d, problems))
                    (upstreams_section(d))
                    (shared_tier_section(d))
                    (cache_section(d))
                    (memory_section(&d.memory))
                    (advisories_section(d))
                    (disk_section(d))
                    (decisions_section(d))
                }
            }
        }
    }
}

/// The top bar: address, pid, uptime, version and the count of problems.
fn header_bar(d: &PageData, problems: usize) -> Markup {
    html! {
        header {
            h1 { "privreg" }
            span class="meta mono" { (d.url) }
            span class="meta" {
                "pid " (d.pid) " · up " (humantime::format_duration(Duration::from_secs(d.uptime.as_secs())))
                " · version " (env!("CARGO_PKG_VERSION"))
            }
            span class="meta" {
                @if problems == 0 {
                    span class="badge ok" { "all good" }
                } @else {
                    span class="badge bad" {
                        (problems)
                        @if problems == 1 { " problem" } @else { " problems" }
                    }
                }
            }
        }
    }
}

/// The config, pin and cache errors in force (`problems` of them).
fn errors_section(d: &PageData, problems: usize) -> Markup {
    html! {
        section id="errors" {
            h2 { "Errors in force" }
            @if problems == 0 {
                div class="allgood" { "No config, pin or cache error is in force." }
            }
            @if let Some(e) = &d.config_error {
                div class="problem" {
                    strong { "Config or pin error: " }
                    (e)
                    br;
                    span class="muted" { "The last good configuration stays in force until this is fixed (" code { (d.config_dir.display()) } ")." }
                }
            }
            @if let Some((at, e)) = &d.cache_write_error {
                div class="problem" {
                    strong { "The cache cannot be written (" (ago(d.now, *at)) "): " }
                    (e)
                    br;
                    span class="muted" { "privreg serves without caching meanwhile." }
                }
            }
        }
    }
}

/// One row per upstream: health, latency, last error.
fn upstreams_section(d: &PageData) -> Markup {
    html! {
        section id="upstreams" {
            h2 { "Upstreams " span class="count" { "(" (d.upstreams.len()) ")" } }
            table {
                thead {
                    tr {
                        th { "Name" }
                        th { "Index" }
                        th class="num" { "Priority" }
                        th { "Health" }
                        th { "Latency (last / mean)" }
                        th { "Last error" }
                    }
                }
                tbody {
                    @for u in &d.upstreams {
                        (upstream_row(u, d.now))
                    }
                }
            }
        }
    }
}

fn upstream_row(u: &UpstreamRow, now: u64) -> Markup {
    let (class, word) = health(&u.health);
    html! {
        tr {
            td class="name" { strong { (u.name) } }
            td class="mono" { (u.index) }
            td class="num" { (u.priority) }
            td {
                span class={ "badge " (class) } { (word) }
                @if let Some(ok) = u.health.last_ok {
                    br;
                    span class="muted" { "answered " (ago(now, ok)) }
                }
            }
            td {
                @match &u.latency {
                    Some(l) => {
                        (millis(l.last)) " / " (millis(l.mean()))
                        br;
                        span class="muted" { (l.count) " requests, last: " (l.last_outcome) }
                    }
                    None => span class="muted" { "no requests yet" },
                }
            }
            td {
                @match (&u.health.last_error, u.health.last_error_at) {
                    (Some(e), Some(at)) => {
                        span class="error" { (e) }
                        br;
                        span class="muted" { (ago(now, at)) }
                    }
                    _ => span class="muted" { "none" },
                }
            }
        }
    }
}

/// Hit ratio, size on disk and request counters.
/// The shared cache tier: state (circuit breaker), counts, last error.
fn shared_tier_section(d: &PageData) -> Markup {
    let Some(t) = &d.shared_tier else {
        return html! {};
    };
    html! {
        section id="shared-tier" {
            h2 { "Shared tier" }
            p {
                code { (t.url) } " (" (t.mode) "; shares " (t.upstreams.join(", ")) "): "
                @if t.state == "skipped" {
                    strong { "skipped" }
                    @if let Some(secs) = t.skipped_for_secs { " for " (secs) " s after a failure" }
                    " — requests go to the upstreams"
                } @else {
                    "ok"
                }
            }
            div class="stats" {
                (stat(&t.hits.to_string(), "hits"))
                (stat(&t.misses.to_string(), "misses"))
                (stat(&t.rejected.to_string(), "refused"))
                (stat(&t.writes.to_string(), "written"))
                (stat(&t.writes_dropped.to_string(), "dropped"))
                (stat(&t.pack_hits.to_string(), "from index packs"))
                (stat(&t.pack_writes.to_string(), "packs written"))
            }
            @if let Some(e) = &t.last_error {
                div class="problem" {
                    strong { "Last error" @if let Some(at) = t.last_error_at { " (" (ago(d.now, at)) ")" } ": " }
                    (e)
                }
            }
        }
    }
}

fn cache_section(d: &PageData) -> Markup {
    let ratio = percent(d.hits, d.hits + d.misses);
    html! {
        section id="cache" {
            h2 { "Cache" }
            div class="stats" {
                (stat(&ratio, "hit ratio (index files)"))
                (stat(&d.hits.to_string(), "hits"))
                (stat(&d.misses.to_string(), "misses"))
                (stat(&d.upstream_requests.to_string(), "upstream requests"))
                (stat(&d.revalidations.to_string(), "revalidations"))
                (stat(&d.prefetches.to_string(), "prefetches"))
            }
            p class="muted" { "Directory: " code { (d.cache_dir.display()) } }
        }
    }
}

/// A share as a percentage with one decimal, or a dash when there is nothing to divide.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

/// The in-memory index cache: size against its budget, hit ratio, reads from disk, evictions.
fn memory_section(m: &MemoryStatus) -> Markup {
    html! {
        section id="memory" {
            h2 { "Memory" }
            div class="stats" {
                (stat(&format!("{} of {}", human_bytes(m.bytes), human_bytes(m.budget_bytes)), "held in memory (limits.index-memory)"))
                (stat(&percent(m.bytes, m.budget_bytes), "of the budget"))
                (stat(&m.entries.to_string(), "files and merged views"))
                (stat(&percent(m.hits, m.hits + m.misses), "hit ratio (memory)"))
                (stat(&m.disk_reads.to_string(), "read back from disk"))
                (stat(&m.evictions.to_string(), "evictions"))
            }
        }
    }
}

/// The RustSec advisory database: where from, how old, how many, the last error.
fn advisories_section(d: &PageData) -> Markup {
    let a = &d.advisories;
    html! {
        section id="advisories" {
            h2 { "Advisory database" }
            div class="stats" {
                (stat(&a.count.map_or("–".to_owned(), |c| c.to_string()), "advisories"))
                (stat(a.newest.as_deref().unwrap_or("–"), "newest advisory"))
                (stat(&a.updated_at.map_or("never".to_owned(), |u| ago(d.now, u)), "fetched"))
            }
            @if let Some(e) = &a.last_error {
                p class="error" {
                    "Last update failed " (a.last_error_at.map_or(String::new(), |at| ago(d.now, at)))
                    " (the last good copy stays in force): " code { (e) }
                }
            }
            p class="muted" {
                "Source: " code { (a.db) }
                @if !a.wanted { " — not fetched: nothing asks for it (no [advisories] in config.toml, no advisory pin, no audit yet)" }
            }
        }
    }
}

/// The disk cache: its use against `[cache] max-size` and the last collection.
fn disk_section(d: &PageData) -> Markup {
    let k = &d.disk;
    let used = match (k.used_bytes, k.used_files) {
        (Some(b), Some(f)) => (human_bytes(b), format!("on disk in {f} files")),
        _ => (
            "–".to_owned(),
            "on disk (measuring in the background)".to_owned(),
        ),
    };
    let limit = k.max_size.map_or_else(|| "none".to_owned(), human_bytes);
    let share = match (k.used_bytes, k.max_size) {
        (Some(u), Some(m)) if m > 0 => format!("{:.0}%", 100.0 * u as f64 / m as f64),
        _ => "–".to_owned(),
    };
    html! {
        section id="disk" {
            h2 { "Disk" }
            div class="stats" {
                (stat(&used.0, &used.1))
                (stat(&limit, "max-size"))
                (stat(&share, "of max-size used"))
                (stat(&k.kept_lockfiles.to_string(), "kept lockfiles"))
            }
            p class="muted" {
                @if let Some(at) = k.measured_at { "Measured " (ago(d.now, at)) ". " }
                @match &k.last_gc {
                    Some(g) => {
                        "Last collection " (ago(d.now, g.at)) " by " (g.by) ": removed "
                        (g.removed_files) " files, freed " (human_bytes(g.freed_bytes)) "."
                    }
                    None => { "No collection yet." }
                }
                @if let Some(next) = k.next_gc {
                    @if next > d.now {
                        " Next automatic collection in "
                        (humantime::format_duration(Duration::from_secs(next - d.now))) "."
                    }
                }
            }
        }
    }
}

/// Recent policy decisions that hid or blocked versions.
fn decisions_section(d: &PageData) -> Markup {
    html! {
        section id="decisions" {
            h2 { "Recent policy decisions " span class="count" { "(versions hidden or blocked)" } }
            @if d.decisions.is_empty() {
                p class="muted" { "Nothing hidden or blocked in the crates computed since the daemon started." }
            } @else {
                table {
                    thead {
                        tr {
                            th { "When" }
                            th { "Crate" }
                            th { "Decision" }
                            th { "Upstream" }
                            th { "Versions" }
                            th { "Pin" }
                        }
                    }
                    tbody {
                        @for h in &d.decisions {
                            (decision_row(h, d.now))
                        }
                    }
                }
            }
        }
    }
}

fn decision_row(h: &Hidden, now: u64) -> Markup {
    html! {
        tr {
            td class="muted" { (ago(now, epoch_secs(h.at))) }
            td class="name" { strong { (h.krate) } }
            td {
                span class={ "badge " (if h.decision == "blocked" { "bad" } else { "warn" }) } { (h.decision) }
            }
            td { (h.upstream) }
            td class="mono" {
                (h.versions.join(", "))
                @if h.more > 0 { " and " (h.more) " more" }
            }
            td class="mono" {
                @match &h.stanza {
                    Some(s) => (s),
                    None => span class="muted" { "priorities" },
                }
            }
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Daemon {
    /// Answers `/metrics`, `/-/`, `/-/open` and `/-/open/<nonce>` once the request has passed
    /// the gate (see `auth.rs`); `None` for every other endpoint.
    pub(crate) fn observe(
        &self,
        endpoint: &Endpoint<'_>,
        method: &Method,
    ) -> Option<Response<Body>> {
        let get = method == Method::GET || method == Method::HEAD;
        Some(match endpoint {
            Endpoint::Metrics if get => {
                self.memory_status();
                respond(
                    StatusCode::OK,
                    metrics::CONTENT_TYPE,
                    self.metrics().encode(),
                )
            }
            Endpoint::Page if get => {
                let html = render(&self.page_data()).into_string();
                let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", html);
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
                    ),
                );
                r
            }
            Endpoint::PageLink if method == Method::POST => match self.sessions().new_link() {
                Ok(nonce) => {
                    let link = PageLink {
                        url: format!("{}/-/open/{nonce}", self.base_url()),
                        expires_in_secs: LINK_TTL.as_secs(),
                    };
                    let body = serde_json::to_vec(&link).expect("the link serialises");
                    respond(StatusCode::OK, "application/json", body)
                }
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("cannot make a link: {e}\n"),
                ),
            },
            Endpoint::PageOpen(nonce) if get => match self.sessions().redeem(nonce) {
                Some(Ok(cookie)) => {
                    let mut r =
                        respond(StatusCode::SEE_OTHER, TEXT, "privreg's status page: /-/\n");
                    let h = r.headers_mut();
                    h.insert(header::LOCATION, HeaderValue::from_static("/-/"));
                    h.insert(
                        header::SET_COOKIE,
                        HeaderValue::from_str(&cookie).expect("the cookie is a header value"),
                    );
                    r
                }
                Some(Err(e)) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("cannot open a session: {e}\n"),
                ),
                None => respond(
                    StatusCode::FORBIDDEN,
                    TEXT,
                    "this link was used already or has expired; run `privreg status --open` for a new one\n",
                ),
            },
            Endpoint::PageLink => respond(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "POST here (with the local token) for a one-time link to the status page\n",
            ),
            Endpoint::Metrics | Endpoint::Page | Endpoint::PageOpen(_) => respond(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only GET and HEAD are served here\n",
            ),
            _ => return None,
        })
    }

    /// What the page shows, now.
    pub(crate) fn page_data(&self) -> PageData {
        let rt = self.runtime();
        let health = self.upstreams().health();
        let latency = self.metrics().latency();
        let upstreams = rt
            .config
            .upstreams
            .iter()
            .map(|u| UpstreamRow {
                name: u.name.to_string(),
                index: u.index.clone(),
                priority: u.priority,
                health: health.get(u.name.as_str()).cloned().unwrap_or_default(),
                latency: latency.get(u.name.as_str()).cloned(),
            })
            .collect();
        let (hits, misses) = self.upstreams().hits_and_misses();
        PageData {
            url: format!("{}/index/", self.base_url()),
            pid: std::process::id(),
            uptime: self.started().elapsed().unwrap_or_default(),
            config_dir: self.config_dir().to_owned(),
            cache_dir: self.cache_dir().to_owned(),
            config_error: self.load_error(),
            cache_write_error: self.cache().write_error(),
            upstreams,
            disk: self.disk_status(),
            hits,
            misses,
            revalidations: self.upstreams().revalidation_count(),
            prefetches: self.prefetch_count(),
            upstream_requests: self.upstreams().request_count(),
            decisions: self.metrics().recent_decisions(),
            shared_tier: self.upstreams().shared().status(),
            memory: self.memory_status(),
            advisories: self.advisory_state().status(&rt.config.advisories),
            now: epoch_secs(SystemTime::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> PageData {
        PageData {
            url: "http://127.0.0.1:7878/index/".into(),
            pid: 42,
            uptime: Duration::from_secs(90),
            config_dir: "/cfg".into(),
            cache_dir: "/cache".into(),
            config_error: None,
            cache_write_error: None,
            upstreams: vec![UpstreamRow {
                name: "acme".into(),
                index: "sparse+http://127.0.0.1:1/index/".into(),
                priority: 600,
                health: Health {
                    last_ok: Some(100),
                    last_error: Some("upstream acme answered <b>500</b>".into()),
                    last_error_at: Some(150),
                },
                latency: Some(Latency {
                    last: Duration::from_millis(12),
                    last_outcome: "ok",
                    total: Duration::from_millis(30),
                    count: 3,
                }),
            }],
            disk: DiskStatus {
                used_bytes: Some(3 * 1024 * 1024),
                used_files: Some(12),
                measured_at: Some(180),
                max_size: Some(6 * 1024 * 1024),
                last_gc: Some(privreg_shared::store::gc::GcRecord {
                    at: 170,
                    removed_files: 4,
                    freed_bytes: 2048,
                    bytes_after: 3 * 1024 * 1024,
                    files_after: 12,
                    by: "privreg gc".into(),
                }),
                ..DiskStatus::default()
            },
            hits: 3,
            misses: 1,
            revalidations: 0,
            prefetches: 2,
            upstream_requests: 5,
            decisions: vec![Hidden {
                at: UNIX_EPOCH + Duration::from_secs(190),
                krate: "acme-core".into(),
                upstream: "crates-io".into(),
                decision: "blocked",
                versions: vec!["9.9.9".into()],
                more: 2,
                stanza: Some("/cfg/preferences:3".into()),
            }],
            shared_tier: None,
            memory: MemoryStatus {
                bytes: 48 << 20,
                budget_bytes: 64 << 20,
                entries: 2100,
                hits: 900,
                misses: 100,
                disk_reads: 40,
                evictions: 17,
            },
            advisories: AdvisoriesStatus {
                db: "/adb".into(),
                wanted: true,
                count: Some(7),
                last_error: Some("cannot load <b>".into()),
                ..AdvisoriesStatus::default()
            },
            now: 200,
        }
    }

    #[test]
    fn shows_each_section_with_escaped_values() {
        let mut d = data();
        d.config_error = Some("config.toml:3: unknown key `<script>`".into());
        let page = render(&d).into_string();
        for want in [
            "id=\"errors\"",
            "id=\"upstreams\"",
            "id=\"cache\"",
            "id=\"decisions\"",
            "id=\"memory\"",
            "48.0 MiB of 64.0 MiB",
            "90.0%",
            "2100",
            "config.toml:3: unknown key `&lt;script&gt;`",
            "upstream acme answered &lt;b&gt;500&lt;/b&gt;",
            "failing",
            "12 ms / 10 ms",
            "75.0%",
            "3.0 MiB",
            "id=\"disk\"",
            "50%",
            "removed 4 files, freed 2.0 KiB",
            "acme-core",
            "9.9.9",
            " and 2 more",
            "/cfg/preferences:3",
            "10s ago",
        ] {
            assert!(page.contains(want), "{want} missing from:\n{page}");
        }
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>500"));
    }

    #[test]
    fn says_when_all_is_well() {
        let mut d = data();
        d.upstreams[0].health.last_error_at = Some(50);
        d.decisions.clear();
        let page = render(&d).into_string();
        assert!(page.contains("all good"), "{page}");
        assert!(page.contains("No config, pin or cache error is in force."));
        assert!(page.contains("Nothing hidden or blocked"));
    }
}
