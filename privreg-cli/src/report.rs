//! `privreg policy` and `privreg status`: the daemon's JSON, printed for people.

use privreg_shared::store::{disk_usage as du, human_bytes};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Dirs;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

pub async fn policy(dirs: &Dirs, krate: &str) -> anyhow::Result<ExitCode> {
    let p = dirs.daemon_json(&format!("/-/policy/{krate}")).await?;
    println!("{}:", s(&p["crate"]));
    if let Some(owners) = p["owners"].as_array() {
        let owners: Vec<String> = owners.iter().map(s).collect();
        println!(
            "  owner: {}",
            if owners.is_empty() {
                "none".to_owned()
            } else {
                owners.join(", ")
            }
        );
    }
    println!("  upstreams:");
    for u in p["upstreams"].as_array().into_iter().flatten() {
        let by = u["claim_stanza"]
            .as_str()
            .map(|st| format!(" (pin {st})"))
            .unwrap_or_default();
        println!(
            "    {:<16} priority {:<6} claim {}{by}: {}{}",
            s(&u["name"]),
            s(&u["priority"]),
            s(&u["claim"]),
            s(&u["answer"]),
            u["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = p["unavailable"].as_str() {
        println!("  unavailable: {e}");
        return Ok(ExitCode::FAILURE);
    }
    println!("  versions:");
    for v in p["versions"].as_array().into_iter().flatten() {
        let mut state = s(&v["state"]);
        if let Some(w) = v["winner"].as_str() {
            state = format!("{state} (served from {w})");
        }
        if v["yanked"].as_bool() == Some(true) && state == "served" {
            state = "served, yanked".to_owned();
        }
        let stanza = v["stanza"]
            .as_str()
            .map(|st| format!("  [{st}]"))
            .unwrap_or_default();
        println!(
            "    {:<14} {:<16} {:>6}  {state}{stanza}",
            s(&v["version"]),
            s(&v["upstream"]),
            s(&v["priority"])
        );
    }
    for c in p["conflicts"].as_array().into_iter().flatten() {
        println!(
            "  conflict: {} differs between {} and {}; {}'s copy is served",
            s(&c["version"]),
            s(&c["winner"]),
            s(&c["loser"]),
            s(&c["winner"])
        );
    }
    for h in p["hints"].as_array().into_iter().flatten() {
        println!("  hint: {}", s(h).replace('\n', "\n        "));
    }
    if let Some(e) = p["config_error"].as_str() {
        println!(
            "  warning: a config or pin error is in force (the last good configuration is used): {e}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(now: u64, at: u64) -> String {
    humantime::format_duration(Duration::from_secs(now.saturating_sub(at))).to_string()
}

pub async fn status(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let st = dirs.daemon_json("/-/status").await?;
    let uptime = st["uptime_secs"]
        .as_u64()
        .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "daemon:    {} (pid {}, up {uptime})",
        s(&st["url"]),
        s(&st["pid"]),
    );
    println!("config:    {}", s(&st["config_dir"]));
    let cache_dir = st["cache_dir"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs.cache.clone());
    let (bytes, files) = du(&cache_dir.join("v1"));
    println!(
        "cache:     {} ({} in {files} files)",
        cache_dir.display(),
        human_bytes(bytes)
    );
    if let (Some(hits), Some(misses)) = (st["cache_hits"].as_u64(), st["cache_misses"].as_u64()) {
        let total = hits + misses;
        if total == 0 {
            println!("hits:      no requests yet");
        } else {
            println!(
                "hits:      {:.1}% ({hits} of {total} answered from the cache)",
                100.0 * hits as f64 / total as f64
            );
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("upstreams:");
    for u in st["upstreams"].as_array().into_iter().flatten() {
        let health = match (
            u["last_error"].as_str(),
            u["last_ok"].as_u64(),
            u["last_error_at"].as_u64(),
        ) {
            (Some(e), ok, Some(at)) if ok.is_none_or(|ok| at >= ok) => {
                format!("failing since {} ago: {e}", ago(now, at))
            }
            (Some(e), Some(_), Some(at)) => {
                format!("ok (last error {} ago: {e})", ago(now, at))
            }
            (_, Some(_), _) => "ok".to_owned(),
            _ => "not contacted yet".to_owned(),
        };
        println!(
            "  {:<16} priority {:<6} {}  {health}",
            s(&u["name"]),
            s(&u["priority"]),
            s(&u["index"])
        );
    }
    if let Some(e) = st["cache_write_error"]["error"].as_str() {
        println!("warning:   the cache cannot be written ({e}); serving without caching");
    }
    match st["config_error"].as_str() {
        Some(e) => {
            println!("error:     {e}");
            println!("           the last good configuration stays in force until this is fixed");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
