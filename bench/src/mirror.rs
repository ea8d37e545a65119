//! The benchmark's data: a local mirror of every index file and `.crate` that resolving and
//! fetching the manifest of DESIGN.md ("Performance model") touches, built once from the public
//! registry by privreg-daemon itself and kept outside the repository.
//!
//! Mirror layout: `index/<path>` (bodies as the registry sent them), `dl/<crate>/<version>/download`,
//! `manifest.toml` (the `[dependencies]` table), `Cargo.lock` (the resolution it was built from)
//! and `mirror.json`, written last (its presence marks a complete mirror).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tame_index::index::sparse::CRATES_IO_HTTP_INDEX;

use crate::cargo::{Cargo, Sandbox, Source, locked_packages};
use crate::daemon::{Daemon, DaemonOpts, http_get};

/// The manifest of DESIGN.md, "Performance model".
pub(crate) const MANIFEST: &str = r#"tokio = { version = "1", features = ["full"] }
axum = "0.8"
reqwest = { version = "0.12", features = ["json", "rustls-tls"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
clap = { version = "4", features = ["derive"] }
tracing-subscriber = { version = "0.3", features = ["env-filter", "json"] }
sqlx = { version = "0.8", features = ["postgres", "runtime-tokio"] }
aws-sdk-s3 = "1"
"#;

/// The default mirror directory: `$XDG_CACHE_HOME/privreg-bench/mirror-v1`, else under `~/.cache`.
pub(crate) fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache"),
        PathBuf::from,
    );
    base.join("privreg-bench").join("mirror-v1")
}

/// What `mirror.json` says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct MirrorInfo {
    /// What the data is (a mirror of the public registry, or the synthetic registry).
    pub kind: String,
    pub created: String,
    pub index_files: usize,
    pub crates: usize,
    pub locked_packages: usize,
}

pub(crate) fn read_info(mirror: &Path) -> anyhow::Result<MirrorInfo> {
    let path = mirror.join("mirror.json");
    let data = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_slice(&data)?)
}

pub(crate) fn dependencies(mirror: &Path) -> anyhow::Result<String> {
    let path = mirror.join("manifest.toml");
    std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))
}

/// Whether privreg-daemon reaches the public registry: `Err` with the reason (URLs removed) if not.
pub(crate) fn public_reachable(daemon_bin: &Path, work: &Path) -> Result<(), String> {
    let opts = DaemonOpts {
        upstream: CRATES_IO_HTTP_INDEX,
        ttl: None,
        log_level: "warn",
    };
    let d = Daemon::start(daemon_bin, work, &opts).map_err(|e| format!("{e:#}"))?;
    match http_get(&d.addr, "/index/se/rd/serde") {
        Ok((200, _)) => Ok(()),
        Ok((code, _)) => {
            let why = d
                .status()
                .ok()
                .and_then(|s| s["upstreams"][0]["last_error"].as_str().map(without_urls));
            Err(format!(
                "the daemon answered {code}{}",
                why.map_or(String::new(), |w| format!(": {w}"))
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `text` with every URL replaced by `<url>` (no registry host names in reports).
pub(crate) fn without_urls(text: &str) -> String {
    text.split(' ')
        .map(|w| match w.find("://") {
            Some(i) => {
                let start = w[..i].rfind(|c: char| !c.is_ascii_alphanumeric() && c != '+');
                let start = start.map_or(0, |s| s + 1);
                let end = w[i..].find([')', ',', ';']).map_or(w.len(), |e| i + e);
                format!("{}<url>{}", &w[..start], &w[end..])
            }
            None => w.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the mirror at `mirror` (through a temp directory beside it, renamed into place):
/// through privreg-daemon when it reaches the public registry (`daemon_ok`), else from cargo's own
/// cache after cargo resolved and fetched straight from the public registry.
pub(crate) fn build(
    mirror: &Path,
    daemon_bin: &Path,
    daemon_ok: bool,
    cargo: &Cargo,
    work: &Path,
) -> anyhow::Result<()> {
    let parent = mirror.parent().context("mirror path has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix("mirror-building-")
        .tempdir_in(parent)?;
    let via = if daemon_ok { "privreg-daemon" } else { "cargo" };
    eprintln!(
        "building the mirror in {} (once): resolving and fetching the manifest from the public registry through {via}",
        mirror.display()
    );
    let (lock, index_files, crates) = if daemon_ok {
        let opts = DaemonOpts {
            upstream: CRATES_IO_HTTP_INDEX,
            ttl: Some("1d"),
            log_level: "warn",
        };
        let mut d = Daemon::start(daemon_bin, work, &opts)?;
        let sb = Sandbox::new(work, MANIFEST, Source::Replaced(&d.index_url()))?;
        sb.run(cargo, &["generate-lockfile"])?;
        sb.run(cargo, &["fetch"])?;
        d.stop();
        let (i, c) = export_daemon(&d.cache_dir, tmp.path())?;
        (sb.lockfile()?, i, c)
    } else {
        let sb = Sandbox::new(work, MANIFEST, Source::Public)?;
        sb.run(cargo, &["generate-lockfile"])?;
        sb.run(cargo, &["fetch"])?;
        let (i, c) = export_cargo(&sb.cargo_home, tmp.path())?;
        (sb.lockfile()?, i, c)
    };
    let locked = locked_packages(&lock);
    if crates < locked {
        bail!("only {crates} of {locked} locked crates were downloaded");
    }
    std::fs::write(tmp.path().join("manifest.toml"), MANIFEST)?;
    std::fs::write(tmp.path().join("Cargo.lock"), &lock)?;
    let info = MirrorInfo {
        kind: format!("a mirror of the public registry, made through {via}"),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        index_files,
        crates,
        locked_packages: locked,
    };
    std::fs::write(
        tmp.path().join("mirror.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    if mirror.exists() {
        std::fs::remove_dir_all(mirror)?;
    }
    std::fs::rename(tmp.keep(), mirror)?;
    eprintln!("mirror ready: {index_files} index files, {crates} crates, {locked} locked packages");
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Copies the daemon's cached index files (metadata line stripped; absent crates skipped) and
/// its verified `.crate` files (found by the index lines' `cksum`) into `dest`.
fn export_daemon(cache_dir: &Path, dest: &Path) -> anyhow::Result<(usize, usize)> {
    let ups = cache_dir.join("v1/upstreams");
    let up = std::fs::read_dir(&ups)
        .with_context(|| format!("{}", ups.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("index").is_dir())
        .context("the daemon cached no index files")?;
    let index = up.join("index");
    let mut files = Vec::new();
    walk(&index, &mut files)?;
    let (mut index_files, mut crates) = (0, 0);
    for file in files {
        let data = std::fs::read(&file)?;
        let Some(nl) = data.iter().position(|b| *b == b'\n') else {
            continue;
        };
        let meta: serde_json::Value = serde_json::from_slice(&data[..nl])?;
        if meta["present"] != serde_json::Value::Bool(true) {
            continue;
        }
        let body = &data[nl + 1..];
        let rel = file.strip_prefix(&index)?;
        let out = dest.join("index").join(rel);
        std::fs::create_dir_all(out.parent().expect("has parent"))?;
        std::fs::write(&out, body)?;
        index_files += 1;
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(name), Some(vers), Some(cksum)) =
                (v["name"].as_str(), v["vers"].as_str(), v["cksum"].as_str())
            else {
                continue;
            };
            if cksum.len() < 2 || !cksum.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let cached = cache_dir
                .join("v1/crates")
                .join(&cksum[..2])
                .join(format!("{cksum}.crate"));
            if cached.is_file() {
                let out = dest.join("dl").join(name).join(vers).join("download");
                std::fs::create_dir_all(out.parent().expect("has parent"))?;
                std::fs::copy(&cached, &out)?;
                crates += 1;
            }
        }
    }
    Ok((index_files, crates))
}

/// The single registry directory under `dir` (cargo names them `<host>-<hash>`).
fn only_subdir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .with_context(|| format!("{}: empty", dir.display()))
}

/// Copies what cargo cached: its index cache (`registry/index/*/.cache/<path>`: a version byte,
/// a u32, the index version, then `version\0line\0` pairs) as index files of one line per
/// version, and its downloads (`registry/cache/*/<name>-<version>.crate`).
fn export_cargo(cargo_home: &Path, dest: &Path) -> anyhow::Result<(usize, usize)> {
    let index = only_subdir(&cargo_home.join("registry/index"))?.join(".cache");
    let downloads = only_subdir(&cargo_home.join("registry/cache"))?;
    let mut files = Vec::new();
    walk(&index, &mut files)?;
    let (mut index_files, mut crates) = (0, 0);
    for file in files {
        let data = std::fs::read(&file)?;
        if data.len() < 5 {
            continue;
        }
        let mut parts = data[5..].split(|b| *b == 0);
        parts.next(); // the index version (ETag or Last-Modified)
        let mut body = Vec::new();
        let mut names = Vec::new();
        while let (Some(vers), Some(line)) = (parts.next(), parts.next()) {
            if line.is_empty() {
                continue;
            }
            body.extend_from_slice(line);
            body.push(b'\n');
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
                && let Some(name) = v["name"].as_str()
            {
                names.push((name.to_owned(), String::from_utf8_lossy(vers).into_owned()));
            }
        }
        if body.is_empty() {
            continue;
        }
        let rel = file.strip_prefix(&index)?;
        let out = dest.join("index").join(rel);
        std::fs::create_dir_all(out.parent().expect("has parent"))?;
        std::fs::write(&out, &body)?;
        index_files += 1;
        for (name, vers) in names {
            let cached = downloads.join(format!("{name}-{vers}.crate"));
            if cached.is_file() {
                let out = dest.join("dl").join(&name).join(&vers).join("download");
                std::fs::create_dir_all(out.parent().expect("has parent"))?;
                std::fs::copy(&cached, &out)?;
                crates += 1;
            }
        }
    }
    Ok((index_files, crates))
}
