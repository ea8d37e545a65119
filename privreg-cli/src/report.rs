//! `privreg policy` and `privreg status`: the daemon's JSON, printed for people.

use privreg_shared::store::human_bytes;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use privreg_shared::protocol::{
    AdvisoriesStatus, Dating, DiskStatus, MemoryStatus, PolicyOutcome, UpstreamStatus,
    VersionDecision, VersionState,
};

use super::Dirs;

/// How long a request to the daemon may take.
const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn policy(dirs: &Dirs, krate: &str) -> anyhow::Result<ExitCode> {
    let p = crate::autostart::connect(dirs, TIMEOUT)
        .await?
        .policy(krate)
        .await?;
    println!("{}:", p.krate);
    if let PolicyOutcome::Merged(m) = &p.outcome {
        println!(
            "  owner: {}",
            if m.owners.is_empty() {
                "none".to_owned()
            } else {
                m.owners.join(", ")
            }
        );
    }
    println!("  upstreams:");
    for u in &p.upstreams {
        let by = u
            .claim_stanza
            .as_ref()
            .map(|st| format!(" (pin {st})"))
            .unwrap_or_default();
        println!(
            "    {:<16} priority {:<6} claim {}{by}: {}{}",
            u.name,
            u.priority.to_string(),
            u.claim,
            u.answer,
            u.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let m = match p.outcome {
        PolicyOutcome::Unavailable(e) => {
            println!("  unavailable: {e}");
            return Ok(ExitCode::FAILURE);
        }
        PolicyOutcome::Merged(m) => m,
    };
    println!("  versions:");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for v in &m.versions {
        let mut state = v.state.to_string();
        if let Some(w) = &v.winner {
            state = format!("{state} (served from {w})");
        } else if v.yanked && v.state == VersionState::Served {
            "served, yanked".clone_into(&mut state);
        }
        let stanza = v
            .stanza
            .as_ref()
            .map(|st| format!("  [{st}]"))
            .unwrap_or_default();
        println!(
            "    {:<14} {:<16} {:>6}  {state}{stanza}  {}{}",
            v.version,
            v.upstream,
            v.priority,
            age_of(v, now),
            advisories_of(v)
        );
    }
    for c in &m.conflicts {
        println!(
            "  conflict: {} differs between {} and {}; {}'s copy is served",
            c.version, c.winner, c.loser, c.winner
        );
    }
    for h in &m.hints {
        println!("  hint: {}", h.replace('\n', "\n        "));
    }
    if let Some(e) = &m.config_error {
        println!(
            "  warning: a config or pin error is in force (the last good configuration is used): {e}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration in its two largest units: `3d 4h`, `5h 12m`, `40s`.
fn short_duration(secs: u64) -> String {
    let units = [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ];
    let parts: Vec<String> = units
        .iter()
        .scan(secs, |left, (name, size)| {
            let n = *left / size;
            *left %= size;
            Some((n, name))
        })
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n}{name}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// A version's age and where it comes from, as `privreg policy` prints it.
fn age_of(v: &VersionDecision, now: u64) -> String {
    match (v.published, v.dated) {
        (Some(at), Dating::Pubtime) => {
            format!("age {} (pubtime)", short_duration(now.saturating_sub(at)))
        }
        (Some(at), _) => format!(
            "age {} (first seen)",
            short_duration(now.saturating_sub(at))
        ),
        (None, _) => "old (no pubtime, there at privreg's first fetch)".to_owned(),
    }
}

/// The advisories that affect a version, as `privreg policy` prints them (empty when none).
fn advisories_of(v: &VersionDecision) -> String {
    if v.advisories.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = v
        .advisories
        .iter()
        .map(|a| format!("{} ({})", a.id, a.kind))
        .collect();
    format!("  advisories: {}", ids.join(", "))
}

fn ago(now: u64, at: u64) -> String {
    humantime::format_duration(Duration::from_secs(now.saturating_sub(at))).to_string()
}

/// An upstream's health, as the status page also judges it.
fn health(u: &UpstreamStatus, now: u64) -> String {
    match (&u.last_error, u.last_ok, u.last_error_at) {
        (Some(e), ok, Some(at)) if ok.is_none_or(|ok| at >= ok) => {
            format!("failing since {} ago: {e}", ago(now, at))
        }
        (Some(e), Some(_), Some(at)) => {
            format!("ok (last error {} ago: {e})", ago(now, at))
        }
        (_, Some(_), _) => "ok".to_owned(),
        _ => "not contacted yet".to_owned(),
    }
}

/// The in-memory index cache: size against the budget, entries, hit ratio, evictions.
fn memory_line(m: &MemoryStatus) -> String {
    let lookups = m.hits + m.misses;
    let ratio = if lookups == 0 {
        "no lookups yet".to_owned()
    } else {
        format!("{:.1}% hits", 100.0 * m.hits as f64 / lookups as f64)
    };
    format!(
        "{} of {} (limits.index-memory) in {} files and merged views; {ratio}, {} read back from disk, {} evicted",
        human_bytes(m.bytes),
        human_bytes(m.budget_bytes),
        m.entries,
        m.disk_reads,
        m.evictions
    )
}

/// The advisory database in one line: where from, how many, how old.
fn advisories(a: &AdvisoriesStatus, now: u64) -> String {
    let age = |at: u64| {
        humantime::format_duration(Duration::from_secs(now.saturating_sub(at))).to_string()
    };
    match (a.count, a.updated_at) {
        (Some(n), Some(at)) => format!(
            "{n} from {}, fetched {} ago, newest {}",
            a.db,
            age(at),
            a.newest.as_deref().unwrap_or("-")
        ),
        (Some(n), None) => format!("{n} from {}", a.db),
        (None, _) if a.wanted => format!("none loaded yet from {}", a.db),
        (None, _) => format!(
            "not fetched ({}): nothing asks for it yet (add [advisories] to config.toml, an \
             advisory pin, or run privreg audit)",
            a.db
        ),
    }
}

/// The disk cache's use against `max-size`, as `privreg status` prints it.
fn disk(d: &DiskStatus, now: u64) -> String {
    let limit = d.max_size.map_or_else(
        || "no max-size".to_owned(),
        |m| format!("max-size {}", human_bytes(m)),
    );
    let kept = if d.kept_lockfiles > 0 {
        format!(", {} kept lockfiles", d.kept_lockfiles)
    } else {
        String::new()
    };
    match (d.used_bytes, d.used_files, d.measured_at) {
        (Some(b), Some(f), Some(at)) => format!(
            "{} in {f} files of {limit}{kept} (measured {} ago)",
            human_bytes(b),
            ago(now, at)
        ),
        _ => format!("being measured in the background; {limit}{kept}"),
    }
}

pub(crate) async fn status(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let st = crate::autostart::connect(dirs, TIMEOUT)
        .await?
        .status()
        .await?;
    let uptime = humantime::format_duration(Duration::from_secs(st.uptime_secs));
    println!("daemon:    {} (pid {}, up {uptime})", st.url, st.pid);
    println!("config:    {}", st.config_dir.display());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("cache:     {}", st.cache_dir.display());
    println!("disk:      {}", disk(&st.disk, now));
    if let Some(g) = &st.disk.last_gc {
        println!(
            "gc:        {} ago by {}: removed {} files, freed {}",
            ago(now, g.at),
            g.by,
            g.removed_files,
            human_bytes(g.freed_bytes)
        );
    } else {
        println!("gc:        no collection yet");
    }
    let (hits, misses) = (st.cache_hits, st.cache_misses);
    let total = hits + misses;
    if total == 0 {
        println!("hits:      no requests yet");
    } else {
        println!(
            "hits:      {:.1}% ({hits} of {total} answered from the cache)",
            100.0 * hits as f64 / total as f64
        );
    }
    println!("memory:    {}", memory_line(&st.memory));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("upstreams:");
    for u in &st.upstreams {
        println!(
            "  {:<16} priority {:<6} {}  {}",
            u.name,
            u.priority.to_string(),
            u.index,
            health(u, now)
        );
    }
    if let Some(t) = &st.shared_tier {
        println!("{}", shared_tier_line(t));
    }
    println!("advisories: {}", advisories(&st.advisories, now));
    if let Some(e) = &st.advisories.last_error {
        println!("warning:   the advisory database was not updated: {e}");
        println!("           the last good copy stays in force");
    }
    if let Some(e) = &st.cache_write_error {
        println!(
            "warning:   the cache cannot be written ({}); serving without caching",
            e.error
        );
    }
    match &st.config_error {
        Some(e) => {
            println!("error:     {e}");
            println!("           the last good configuration stays in force until this is fixed");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `privreg status`'s line for the shared cache tier.
fn shared_tier_line(t: &privreg_shared::protocol::SharedTierStatus) -> String {
    use std::fmt::Write as _;
    let state = match (t.state.as_str(), t.skipped_for_secs) {
        ("skipped", Some(secs)) => format!("skipped for {secs}s after a failure"),
        (state, _) => state.to_owned(),
    };
    let mut line = format!(
        "shared:    {} ({}, {}) {state}: {} hits ({} from index packs), {} misses, {} refused, {} written ({} packs), {} dropped",
        t.url,
        t.mode,
        t.upstreams.join(", "),
        t.hits,
        t.pack_hits,
        t.misses,
        t.rejected,
        t.writes,
        t.pack_writes,
        t.writes_dropped
    );
    if let Some(e) = &t.last_error {
        let _ = write!(line, "\n           last error: {e}");
    }
    line
}

#[cfg(test)]
mod tests {
    use privreg_shared::protocol::PolicyAdvisory;

    use super::*;

    fn version(
        published: Option<u64>,
        dated: Dating,
        advisories: &[(&str, &str)],
    ) -> VersionDecision {
        VersionDecision {
            version: "1.0.0".into(),
            upstream: "crates-io".into(),
            priority: "-1".into(),
            state: VersionState::YankedByPin,
            stanza: Some("preferences:1".into()),
            yanked: true,
            winner: None,
            published,
            dated,
            advisories: advisories
                .iter()
                .map(|(id, kind)| PolicyAdvisory {
                    id: (*id).into(),
                    kind: (*kind).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn durations_read_in_their_two_largest_units() {
        let cases = [
            (0, "0s"),
            (40, "40s"),
            (3600, "1h"),
            (3 * 86_400 + 4 * 3600 + 5, "3d 4h"),
            (5 * 3600 + 12 * 60 + 9, "5h 12m"),
            (86_400 + 59, "1d"),
            (15 * 86_400, "2w 1d"),
        ];
        for (secs, want) in cases {
            assert_eq!(short_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn each_version_says_its_age_where_it_comes_from_and_its_advisories() {
        let now = 1_000_000;
        let cases = [
            (
                version(Some(now - 7200), Dating::Pubtime, &[]),
                "age 2h (pubtime)",
                "",
            ),
            (
                version(Some(now - 90), Dating::FirstSeen, &[]),
                "age 1m 30s (first seen)",
                "",
            ),
            (
                version(
                    None,
                    Dating::FirstFetch,
                    &[
                        ("RUSTSEC-2024-0001", "vulnerability"),
                        ("RUSTSEC-2024-0002", "unsound"),
                    ],
                ),
                "old (no pubtime, there at privreg's first fetch)",
                "  advisories: RUSTSEC-2024-0001 (vulnerability), RUSTSEC-2024-0002 (unsound)",
            ),
        ];
        for (v, age, advisories) in cases {
            assert_eq!(age_of(&v, now), age);
            assert_eq!(advisories_of(&v), advisories);
        }
    }

    #[test]
    fn the_memory_line_tells_size_budget_and_hit_ratio() {
        let mut m = MemoryStatus {
            bytes: 3 << 20,
            budget_bytes: 64 << 20,
            entries: 120,
            hits: 90,
            misses: 10,
            disk_reads: 4,
            evictions: 2,
        };
        let line = memory_line(&m);
        for want in [
            "3.0 MiB of 64.0 MiB",
            "limits.index-memory",
            "120 files",
            "90.0% hits",
            "4 read back from disk",
            "2 evicted",
        ] {
            assert!(line.contains(want), "{want:?} missing: {line}");
        }
        (m.hits, m.misses) = (0, 0);
        assert!(memory_line(&m).contains("no lookups yet"));
    }
}
