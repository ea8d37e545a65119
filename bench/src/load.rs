//! Index-file load: `CONNS` keep-alive HTTP/1.1 connections, each sending `GET /index/<path>`
//! back to back over the mirror's index paths for a fixed time, every response body read to the
//! end; and nginx (Debian's) serving the same bodies from disk, to compare with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::daemon::{http_get, tail, terminate};

/// What one load run measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time the server spent per 1000 requests (ms).
    pub cpu_ms_per_1k: f64,
}

/// Clock ticks (1/100 s) in fields `a` and `b` of a `/proc/…/stat` file, counted after the
/// command name, summed and in seconds; 0 when it cannot be read.
fn stat_secs(path: &str, a: usize, b: usize) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(a) + ticks(b)) as f64 / 100.0
}

/// CPU time (user + system) of a process so far, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    stat_secs(&format!("/proc/{pid}/stat"), 11, 12)
}

/// CPU time (user + system) of this process's children that have been waited for, in seconds:
/// the delta around one `cargo` run is what that cargo (and what it ran) spent on the CPU.
pub(crate) fn children_cpu_secs() -> f64 {
    stat_secs("/proc/self/stat", 13, 14)
}

/// `pid` and its direct children (nginx's workers).
pub(crate) fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// One connection's loop; returns its latencies (µs) and error count.
async fn connection(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    offset: usize,
    until: Instant,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let host = addr.to_string();
    let mut lat = Vec::with_capacity(16 * 1024);
    let mut errors = 0;
    let mut i = offset;
    while Instant::now() < until {
        let path = &paths[i % paths.len()];
        i += 1;
        let req = http::Request::get(format!("/index/{path}"))
            .header(http::header::HOST, &host)
            .body(Empty::<Bytes>::new())?;
        let start = Instant::now();
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let ok = resp.status() == http::StatusCode::OK;
        let body = resp.into_body().collect().await?;
        lat.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
        if !ok || body.to_bytes().is_empty() {
            errors += 1;
        }
    }
    Ok((lat, errors))
}

/// Runs the load against `addr` for `secs` with `conns` connections; `pids`: the server's
/// processes, whose CPU time is counted.
pub(crate) async fn run(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    conns: usize,
    secs: f64,
    pids: &[u32],
) -> anyhow::Result<LoadResult> {
    let cpu = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let cpu_before = cpu();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let step = paths.len() / conns.max(1) + 1;
    let tasks: Vec<_> = (0..conns)
        .map(|c| tokio::spawn(connection(addr, paths.clone(), c * step, until)))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_used = cpu() - cpu_before;
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "`p` is in [0, 1], so the rounded index is in 0..len"
        )]
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[idx]) / 1000.0
    };
    Ok(LoadResult {
        requests: all.len() as u64,
        errors,
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_ms_per_1k: cpu_used * 1000.0 / (all.len().max(1) as f64 / 1000.0),
    })
}

/// GETs every path once over `conns` keep-alive connections (each takes the next path not yet
/// taken); returns the seconds it took and the bytes received.
pub(crate) async fn download_all(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    conns: usize,
) -> anyhow::Result<(f64, u64)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (paths, next) = (paths.clone(), next.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                let mut bytes = 0u64;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(i) else {
                        return Ok::<_, anyhow::Error>(bytes);
                    };
                    let req = http::Request::get(path.as_str())
                        .header(http::header::HOST, addr.to_string())
                        .body(Empty::<Bytes>::new())?;
                    send.ready().await?;
                    let resp = send.send_request(req).await?;
                    if resp.status() != http::StatusCode::OK {
                        bail!("GET {path}: {}", resp.status());
                    }
                    bytes += resp.into_body().collect().await?.to_bytes().len() as u64;
                }
            })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    Ok((start.elapsed().as_secs_f64(), bytes))
}

/// nginx serving `root` on 127.0.0.1 from a temp prefix.
pub(crate) struct Nginx {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Where Debian installs nginx.
pub(crate) fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Nginx {
    pub(crate) fn start(bin: &Path, root: &Path, parent: &Path) -> anyhow::Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("nginx-")
            .tempdir_in(parent)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let p = dir.path().display();
        // Debian's defaults where they matter (sendfile, tcp_nopush, no open_file_cache), a
        // worker per core, and keep-alive without a request limit for the load run.
        let user = if running_as_root() {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
             \x20 keepalive_requests 10000000;\n  keepalive_timeout 65;\n  default_type text/plain;\n\
             \x20 client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
             \x20 uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             \x20 server {{\n    listen {addr};\n    root {root};\n  }}\n}}\n",
            root = root.display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let log = dir.path().join("stderr.log");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut n = Nginx {
            child: Some(child),
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = n.child.as_mut().expect("running").try_wait()? {
                n.child = None;
                bail!("nginx exited with {status}:\n{}", tail(&log, 20));
            }
            if http_get(&addr.to_string(), "/").is_ok() {
                return Ok(n);
            }
            if Instant::now() > deadline {
                bail!("nginx did not start:\n{}", tail(&log, 20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the master stops its workers and exits.
            terminate(&mut child, Duration::from_secs(5));
        }
    }
}
