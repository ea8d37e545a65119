//! privreg-daemon as a child process with its own config and cache directories, and the small
//! blocking HTTP client the bench uses for `/-/health` and `/-/status`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `GET path` with `Connection: close`; returns the status and the body (not chunked: the daemon
/// and the fixtures send a length).
pub(crate) fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "GET", path, &[])
}

/// Like [`http_get`], for any method (without a body) and with extra headers.
pub(crate) fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_mins(1)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method != "GET" {
        head.push_str("Content-Length: 0\r\n");
    }
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// A running privreg-daemon.
pub(crate) struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub cache_dir: PathBuf,
    config_dir: PathBuf,
    bin: PathBuf,
    log_level: String,
    /// Extra environment for the daemon (kept for restarts).
    env: Vec<(String, String)>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How to configure one daemon.
#[derive(Debug, Clone)]
pub(crate) struct DaemonOpts<'a> {
    /// The only upstream's index URL (`sparse+http…/`).
    pub upstream: &'a str,
    /// `ttl` of the upstream; `None` leaves the daemon's default.
    pub ttl: Option<&'a str>,
    /// `PRIVREG_LOG` for the daemon.
    pub log_level: &'a str,
}

impl Daemon {
    /// Starts a daemon with a fresh (empty) cache under `parent` and waits until it is healthy.
    pub(crate) fn start(
        bin: &Path,
        parent: &Path,
        opts: &DaemonOpts<'_>,
    ) -> anyhow::Result<Daemon> {
        Daemon::start_with(bin, parent, opts, "", &[])
    }

    /// Like [`Daemon::start`], with `extra` appended to `config.toml` and `env` set.
    pub(crate) fn start_with(
        bin: &Path,
        parent: &Path,
        opts: &DaemonOpts<'_>,
        extra: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("daemon-")
            .tempdir_in(parent)?;
        let config_dir = dir.path().join("config");
        let cache_dir = dir.path().join("cache");
        std::fs::create_dir_all(&config_dir)?;
        let mut config = format!(
            "listen = \"127.0.0.1:0\"\nauth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\ntimeout = \"60s\"\n",
            opts.upstream
        );
        if let Some(ttl) = opts.ttl {
            let _ = writeln!(config, "ttl = \"{ttl}\"");
        }
        config.push_str(extra);
        std::fs::write(config_dir.join("config.toml"), config)?;
        let log = dir.path().join("daemon.log");
        let mut d = Daemon {
            child: None,
            addr: String::new(),
            cache_dir,
            config_dir,
            bin: bin.to_owned(),
            log_level: opts.log_level.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log,
            _dir: dir,
        };
        d.spawn()?;
        d.wait_healthy()?;
        Ok(d)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .env("PRIVREG_LOG", &self.log_level)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the daemon and starts it again on the same cache; returns the time from starting
    /// the process to its first `/-/health` answer.
    pub(crate) fn restart(&mut self) -> anyhow::Result<Duration> {
        self.stop();
        let _ = std::fs::remove_file(self.cache_dir.join("daemon.json"));
        let t = Instant::now();
        self.spawn()?;
        self.wait_healthy()?;
        Ok(t.elapsed())
    }

    /// The daemon's config directory.
    pub(crate) fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let info = self.cache_dir.join("daemon.json");
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait()? {
                bail!(
                    "privreg-daemon exited with {status}:\n{}",
                    tail(&self.log, 30)
                );
            }
            if let Ok(data) = std::fs::read(&info) {
                let v: serde_json::Value = serde_json::from_slice(&data)?;
                v["addr"]
                    .as_str()
                    .context("daemon.json: addr")?
                    .clone_into(&mut self.addr);
                if http_get(&self.addr, "/-/health").is_ok_and(|(s, _)| s == 200) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "privreg-daemon did not become healthy:\n{}",
                    tail(&self.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `sparse+http://ADDR/index/`
    pub(crate) fn index_url(&self) -> String {
        format!("sparse+http://{}/index/", self.addr)
    }

    /// `/-/status` as JSON.
    pub(crate) fn status(&self) -> anyhow::Result<serde_json::Value> {
        let (code, body) = http_get(&self.addr, "/-/status")?;
        anyhow::ensure!(code == 200, "/-/status answered {code}");
        Ok(serde_json::from_slice(&body)?)
    }

    /// The counters of `/-/status` that the report shows.
    pub(crate) fn counters(&self) -> Counters {
        let s = self.status().unwrap_or_default();
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        Counters {
            upstream_requests: n("upstream_requests"),
            cache_hits: n("cache_hits"),
            cache_misses: n("cache_misses"),
            revalidations: n("revalidations"),
            prefetches: n("prefetches"),
        }
    }

    /// Waits (up to a minute) until the daemon has made no upstream request and finished no
    /// write-back to the shared tier for a second: prefetch and write-backs run after cargo is
    /// done.
    pub(crate) fn wait_quiet(&self) {
        let deadline = Instant::now() + Duration::from_mins(1);
        let mut last = None;
        while Instant::now() < deadline {
            let s = self.status().unwrap_or_default();
            let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
            let tier = &s["shared_tier"];
            let now = [
                n(&s["upstream_requests"]),
                n(&s["prefetches"]),
                n(&s["cache_misses"]),
                n(&tier["writes"]),
                n(&tier["writes_dropped"]),
                n(&tier["pack_writes"]),
            ];
            // An index pack is written once the daemon has been quiet for a while.
            if last == Some(now) && n(&tier["packs_waiting"]) == 0 {
                return;
            }
            last = Some(now);
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Peak resident set size (`VmHWM`) in bytes.
    pub(crate) fn peak_rss(&self) -> Option<u64> {
        peak_rss(self.pid())
    }

    /// Sends SIGTERM and waits (SIGKILL after 10 s).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/-/status` counters (missing ones read as 0).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub upstream_requests: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub revalidations: u64,
    pub prefetches: u64,
}

impl Counters {
    pub(crate) fn since(self, before: Counters) -> Counters {
        Counters {
            upstream_requests: self
                .upstream_requests
                .saturating_sub(before.upstream_requests),
            cache_hits: self.cache_hits.saturating_sub(before.cache_hits),
            cache_misses: self.cache_misses.saturating_sub(before.cache_misses),
            revalidations: self.revalidations.saturating_sub(before.revalidations),
            prefetches: self.prefetches.saturating_sub(before.prefetches),
        }
    }
}

/// `VmHWM` of a process, in bytes.
/// Sends SIGTERM, waits up to `grace` for the process to exit, then SIGKILLs and reaps it.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The last `n` lines of a file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
