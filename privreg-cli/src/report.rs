//! `privreg policy` and `privreg status`: the daemon's JSON, printed for people.

use privreg_shared::store::human_bytes;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use privreg_shared::protocol::{DiskStatus, PolicyOutcome, UpstreamStatus, VersionState};

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
            "    {:<14} {:<16} {:>6}  {state}{stanza}",
            v.version, v.upstream, v.priority
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
