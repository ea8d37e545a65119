//! The daemon's resident memory and open files, from `/proc`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The daemon's open files (`/proc/PID/fd` entries) by what they are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fds {
    pub total: usize,
    /// TCP connections to the upstream (the daemon's HTTP client pool).
    pub upstream: usize,
    /// TCP connections of clients to the daemon.
    pub clients: usize,
    /// Other sockets (the listener, unix sockets, …).
    pub sockets: usize,
    /// Files and directories.
    pub files: usize,
    /// Pipes, epoll, eventfd, inotify, …
    pub other: usize,
}

impl Fds {
    /// Everything but the connections to the upstream.
    pub(crate) fn rest(&self) -> usize {
        self.total - self.upstream
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} connections to the upstream, {} client connections, {} other sockets, {} files, {} other (epoll, eventfd, pipes, …)",
            self.upstream, self.clients, self.sockets, self.files, self.other
        )
    }
}

/// The daemon's resident memory and open files at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub rss: u64,
    pub fds: Fds,
}

/// The ports that tell the daemon's sockets apart.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ports {
    pub daemon: u16,
    pub upstream: u16,
}

/// TCP sockets of the process's network namespace: inode → (local port, remote port).
fn tcp_sockets(pid: u32) -> HashMap<u64, (u16, u16)> {
    let port = |a: &str| {
        a.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let mut out = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(inode)) = (
                f.get(1).and_then(|a| port(a)),
                f.get(2).and_then(|a| port(a)),
                f.get(9).and_then(|i| i.parse::<u64>().ok()),
            ) else {
                continue;
            };
            out.insert(inode, (local, remote));
        }
    }
    out
}

/// `VmRSS` and the open files; `None` once the process is gone.
pub(super) fn usage(pid: u32, ports: Ports) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let tcp = tcp_sockets(pid);
    let mut fds = Fds::default();
    for e in entries.flatten() {
        fds.total += 1;
        let Ok(target) = std::fs::read_link(e.path()) else {
            fds.other += 1;
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            match inode.parse().ok().and_then(|i: u64| tcp.get(&i)) {
                Some(&(_, remote)) if remote == ports.upstream => fds.upstream += 1,
                Some(&(local, remote)) if local == ports.daemon && remote != 0 => fds.clients += 1,
                _ => fds.sockets += 1,
            }
        } else if target.starts_with('/') {
            fds.files += 1;
        } else {
            fds.other += 1;
        }
    }
    Some(Usage {
        rss: kb * 1024,
        fds,
    })
}

/// After the load: the daemon's usage once `ok` holds for it (the client sockets take a moment to
/// close on its side), or after 5 s.
pub(super) fn settle(pid: u32, ports: Ports, ok: impl Fn(&Usage) -> bool) -> Option<Usage> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let u = usage(pid, ports)?;
        if ok(&u) || Instant::now() > deadline {
            return Some(u);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Samples [`usage`] every second on its own thread until stopped.
pub(super) struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(f64, Usage)>>,
}

impl Sampler {
    pub(super) fn start(pid: u32, ports: Ports) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut out = Vec::new();
            let mut next = start;
            while !flag.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    if let Some(u) = usage(pid, ports) {
                        out.push((start.elapsed().as_secs_f64(), u));
                    }
                    next += Duration::from_secs(1);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            out
        });
        Sampler { stop, handle }
    }

    pub(super) fn finish(self) -> Vec<(f64, Usage)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// The peak of each figure over the samples.
pub(super) fn peak(samples: &[(f64, Usage)]) -> Usage {
    let max = |f: fn(&Usage) -> usize| samples.iter().map(|(_, u)| f(u)).max().unwrap_or(0);
    Usage {
        rss: samples.iter().map(|(_, u)| u.rss).max().unwrap_or(0),
        fds: Fds {
            total: max(|u| u.fds.total),
            upstream: max(|u| u.fds.upstream),
            clients: max(|u| u.fds.clients),
            sockets: max(|u| u.fds.sockets),
            files: max(|u| u.fds.files),
            other: max(|u| u.fds.other),
        },
    }
}
