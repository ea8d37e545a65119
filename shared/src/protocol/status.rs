//! `GET /-/status`: what the daemon is doing, for `privreg status` and `privreg doctor`; and
//! `POST /-/open`: the one-time link to the status page, for `privreg status --open`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The answer of `GET /-/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The layered view's index URL, `http://host:port/index/`.
    pub url: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The config directory in use (holds `config.toml` and the pin files).
    pub config_dir: PathBuf,
    /// The cache directory in use.
    pub cache_dir: PathBuf,
    /// In the order config.toml lists them.
    pub upstreams: Vec<UpstreamStatus>,
    /// The config or pin error in force (the last good configuration is used meanwhile).
    pub config_error: Option<String>,
    /// Why the cache cannot be written, while it cannot.
    pub cache_write_error: Option<CacheWriteError>,
    /// Requests made to upstreams since the daemon started.
    pub upstream_requests: u64,
    /// Upstream files served from the cache without asking the upstream (fresh or within `stale`).
    pub cache_hits: u64,
    /// Upstream files that needed a request to the upstream.
    pub cache_misses: u64,
    /// Background revalidations of stale files started.
    pub revalidations: u64,
    /// Index files fetched ahead of cargo.
    pub prefetches: u64,
    /// Connections switched to HTTP/2 on cargo's `Upgrade: h2c` offer.
    pub h2c_upgrades: u64,
    /// The in-memory index cache (absent from daemons older than it).
    #[serde(default)]
    pub memory: MemoryStatus,
    /// The team tier (`[cache.shared]`), when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_tier: Option<SharedTierStatus>,
    /// The RustSec advisory database in force (`[advisories]`).
    #[serde(default)]
    pub advisories: AdvisoriesStatus,
    /// The disk cache: its use against `[cache] max-size` and the last collection.
    #[serde(default)]
    pub disk: DiskStatus,
}

/// The advisory database in [`Status`]: where it comes from, the copy in force, the last error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvisoriesStatus {
    /// `advisories.db`: the git URL or directory it is fetched from.
    pub db: String,
    /// Whether the daemon fetches it: `[advisories]` is in config.toml, a pin uses the `advisory`
    /// selector, or `privreg audit` asked for it.
    pub wanted: bool,
    /// `advisories.refresh` in seconds.
    pub refresh_secs: u64,
    /// How many advisories the copy in force holds; `None`: no copy is loaded.
    pub count: Option<u64>,
    /// The newest advisory's date in the copy in force (`YYYY-MM-DD`).
    pub newest: Option<String>,
    /// When (seconds since the epoch) the copy in force was fetched.
    pub updated_at: Option<u64>,
    /// Why the last fetch or load failed (the last good copy stays in force).
    pub last_error: Option<String>,
    /// When (seconds since the epoch) it failed.
    pub last_error_at: Option<u64>,
}

/// The daemon's in-memory index cache in [`Status`]: upstream index files with their parsed
/// lines, and merged views, least recently used first out, within `limits.index-memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStatus {
    /// What it holds now, in bytes (an estimate: bodies, parsed lines, merged views, keys and
    /// bookkeeping).
    pub bytes: u64,
    /// Its budget in bytes: `limits.index-memory`.
    pub budget_bytes: u64,
    /// Files and merged views held.
    pub entries: u64,
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups memory could not answer (read from the disk cache, or not cached at all).
    pub misses: u64,
    /// Files read back from the disk cache into memory.
    pub disk_reads: u64,
    /// Entries dropped to keep within the budget.
    pub evictions: u64,
}

/// The shared cache tier (`[cache.shared]`) in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedTierStatus {
    /// `url` as configured (`s3://bucket/prefix`).
    pub url: String,
    /// `read-write` or `read-only`.
    pub mode: String,
    /// The upstreams whose files are shared.
    pub upstreams: Vec<String>,
    /// `ok`, or `skipped` while the circuit breaker keeps the tier out after a failure.
    pub state: String,
    /// While `skipped`: seconds until the tier is tried again.
    pub skipped_for_secs: Option<u64>,
    /// Why the last failed request to the tier failed.
    pub last_error: Option<String>,
    /// When (seconds since the epoch) it failed.
    pub last_error_at: Option<u64>,
    /// Files found in the tier (index files and crates).
    pub hits: u64,
    /// Files looked for and not found.
    pub misses: u64,
    /// Objects refused: damaged, or not matching the checksum the index gives.
    pub rejected: u64,
    /// Objects written back.
    pub writes: u64,
    /// Write-backs dropped because the queue was full or the tier was skipped.
    pub writes_dropped: u64,
    /// Index files taken from an index pack (counted in `hits` too).
    #[serde(default)]
    pub pack_hits: u64,
    /// Index packs written.
    #[serde(default)]
    pub pack_writes: u64,
    /// Shared upstreams whose index pack is due (written once the daemon is quiet).
    #[serde(default)]
    pub packs_waiting: u64,
}

/// The disk cache in [`Status`]. Its use is measured by a background scan (never when the
/// daemon starts) or taken from the last collection's record, so it may be a little old.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// Bytes in the cache as last measured; `None` before the first measurement.
    pub used_bytes: Option<u64>,
    /// Files in the cache as last measured.
    pub used_files: Option<u64>,
    /// When (seconds since the epoch) it was measured.
    pub measured_at: Option<u64>,
    /// `[cache] max-size` in bytes (`None`: no bound).
    pub max_size: Option<u64>,
    /// `[cache] max-age` in seconds (`None`: no bound).
    pub max_age_secs: Option<u64>,
    /// Files the daemon's background scans have looked at since it started.
    pub scanned_files: u64,
    /// Lockfiles whose crates are kept (`privreg warm --keep`), as last scanned.
    pub kept_lockfiles: u64,
    /// The last collection, by the daemon or by `privreg gc`.
    pub last_gc: Option<crate::store::gc::GcRecord>,
    /// When (seconds since the epoch) the daemon collects next, at the earliest.
    pub next_gc: Option<u64>,
    /// Index files and records queued for the disk (written behind, or, taken from the shared
    /// tier, waiting for the daemon to be quiet; 0 once all are written).
    #[serde(default)]
    pub writes_waiting: u64,
}

/// One upstream's configuration and health in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// The upstream's name from `config.toml`.
    pub name: String,
    /// Its `index` URL as written, `sparse+` included.
    pub index: String,
    /// Its configured `priority`.
    pub priority: i32,
    /// Its `ttl` in seconds.
    pub ttl_secs: u64,
    /// When (seconds since the epoch) it last answered.
    pub last_ok: Option<u64>,
    /// Why its last failed request failed, if one has.
    pub last_error: Option<String>,
    /// When (seconds since the epoch) it last failed.
    pub last_error_at: Option<u64>,
}

/// When (seconds since the epoch) and why the cache could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheWriteError {
    /// Seconds since the epoch.
    pub at: u64,
    /// The write error's message.
    pub error: String,
}

/// The answer of `POST /-/open`: a link to the status page that works once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageLink {
    /// The link, with its one-time code; open it in a browser.
    pub url: String,
    /// How long the link works.
    #[serde(default = "default_expiry")]
    pub expires_in_secs: u64,
}

fn default_expiry() -> u64 {
    60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            url: "http://127.0.0.1:7878/index/".into(),
            pid: 42,
            uptime_secs: 90,
            config_dir: "/cfg".into(),
            cache_dir: "/cache".into(),
            upstreams: vec![UpstreamStatus {
                name: "acme".into(),
                index: "sparse+http://127.0.0.1:1/index/".into(),
                priority: 600,
                ttl_secs: 120,
                last_ok: Some(100),
                last_error: None,
                last_error_at: None,
            }],
            config_error: None,
            cache_write_error: Some(CacheWriteError {
                at: 150,
                error: "disk full".into(),
            }),
            upstream_requests: 5,
            cache_hits: 3,
            cache_misses: 1,
            revalidations: 0,
            prefetches: 2,
            h2c_upgrades: 0,
            shared_tier: None,
            memory: MemoryStatus {
                bytes: 1000,
                budget_bytes: 4096,
                entries: 3,
                hits: 7,
                misses: 2,
                disk_reads: 1,
                evictions: 4,
            },
            advisories: AdvisoriesStatus {
                db: "/adb".into(),
                wanted: true,
                refresh_secs: 86400,
                count: Some(3),
                newest: Some("2024-05-01".into()),
                updated_at: Some(120),
                last_error: Some("cannot load".into()),
                last_error_at: Some(140),
            },
            disk: DiskStatus {
                used_bytes: Some(2048),
                used_files: Some(3),
                measured_at: Some(140),
                max_size: Some(4096),
                max_age_secs: None,
                scanned_files: 3,
                kept_lockfiles: 1,
                last_gc: Some(crate::store::gc::GcRecord {
                    at: 140,
                    removed_files: 1,
                    freed_bytes: 100,
                    bytes_after: 2048,
                    files_after: 3,
                    by: "daemon".into(),
                }),
                next_gc: Some(86_540),
                writes_waiting: 2,
            },
        }
    }

    const STATUS: &str = concat!(
        r#"{"url":"http://127.0.0.1:7878/index/","pid":42,"uptime_secs":90,"#,
        r#""config_dir":"/cfg","cache_dir":"/cache","#,
        r#""upstreams":[{"name":"acme","index":"sparse+http://127.0.0.1:1/index/","priority":600,"#,
        r#""ttl_secs":120,"last_ok":100,"last_error":null,"last_error_at":null}],"#,
        r#""config_error":null,"cache_write_error":{"at":150,"error":"disk full"},"#,
        r#""upstream_requests":5,"cache_hits":3,"cache_misses":1,"revalidations":0,"#,
        r#""prefetches":2,"h2c_upgrades":0,"#,
        r#""memory":{"bytes":1000,"budget_bytes":4096,"entries":3,"hits":7,"misses":2,"#,
        r#""disk_reads":1,"evictions":4},"advisories":{"db":"/adb","wanted":true,"#,
        r#""refresh_secs":86400,"count":3,"newest":"2024-05-01","updated_at":120,"#,
        r#""last_error":"cannot load","last_error_at":140},"disk":{"used_bytes":2048,"#,
        r#""used_files":3,"measured_at":140,"max_size":4096,"max_age_secs":null,"#,
        r#""scanned_files":3,"kept_lockfiles":1,"last_gc":{"at":140,"removed_files":1,"#,
        r#""freed_bytes":100,"bytes_after":2048,"files_after":3,"by":"daemon"},"#,
        r#""next_gc":86540,"writes_waiting":2}}"#
    );

    #[test]
    fn the_status_wire_format_is_pinned() {
        assert_eq!(serde_json::to_string(&status()).unwrap(), STATUS);
        assert_eq!(serde_json::from_str::<Status>(STATUS).unwrap(), status());
        // A daemon from before the memory cache says nothing of it.
        let older = STATUS.split(r#","memory""#).next().unwrap().to_owned() + "}";
        let read = serde_json::from_str::<Status>(&older).unwrap();
        assert_eq!(read.memory, MemoryStatus::default());
        assert_eq!(read.h2c_upgrades, 0);
        // Nor does one from before the write-behind queue of its queue.
        let older = STATUS.replace(r#","writes_waiting":2"#, "");
        let read = serde_json::from_str::<Status>(&older).unwrap();
        assert_eq!(read.disk.writes_waiting, 0);
    }

    #[test]
    fn the_shared_tier_wire_format_is_pinned() {
        let tier = SharedTierStatus {
            url: "s3://team-cache/privreg".into(),
            mode: "read-write".into(),
            upstreams: vec!["crates-io".into()],
            state: "ok".into(),
            skipped_for_secs: None,
            last_error: None,
            last_error_at: None,
            hits: 9,
            misses: 1,
            rejected: 0,
            writes: 4,
            writes_dropped: 0,
            pack_hits: 7,
            pack_writes: 1,
            packs_waiting: 0,
        };
        let text = concat!(
            r#"{"url":"s3://team-cache/privreg","mode":"read-write","upstreams":["crates-io"],"#,
            r#""state":"ok","skipped_for_secs":null,"last_error":null,"last_error_at":null,"#,
            r#""hits":9,"misses":1,"rejected":0,"writes":4,"writes_dropped":0,"#,
            r#""pack_hits":7,"pack_writes":1,"packs_waiting":0}"#
        );
        assert_eq!(serde_json::to_string(&tier).unwrap(), text);
        assert_eq!(
            serde_json::from_str::<SharedTierStatus>(text).unwrap(),
            tier
        );
        // A daemon from before the index packs says nothing of them.
        let older = text.replace(r#","pack_hits":7,"pack_writes":1,"packs_waiting":0"#, "");
        let read = serde_json::from_str::<SharedTierStatus>(&older).unwrap();
        assert_eq!(
            (read.pack_hits, read.pack_writes, read.packs_waiting),
            (0, 0, 0)
        );
    }

    #[test]
    fn the_page_link_wire_format_is_pinned() {
        let link = PageLink {
            url: "http://127.0.0.1:7878/-/open/abc".into(),
            expires_in_secs: 60,
        };
        let text = r#"{"url":"http://127.0.0.1:7878/-/open/abc","expires_in_secs":60}"#;
        assert_eq!(serde_json::to_string(&link).unwrap(), text);
        assert_eq!(serde_json::from_str::<PageLink>(text).unwrap(), link);
        let bare = r#"{"url":"http://127.0.0.1:7878/-/open/abc"}"#;
        assert_eq!(serde_json::from_str::<PageLink>(bare).unwrap(), link);
    }
}
