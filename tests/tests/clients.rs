//! Local clients that hold connections open without a token: an idle flood, slowloris request
//! heads and HTTP/2 frames declared huge. The daemon runs with its open-files limit held at 1024
//! (soft and hard, under `prlimit`), so raising the limit at start cannot be what saves it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, http_get};

const IDLE: usize = 2000;
const SLOWLORIS: usize = 200;
const FRAMES: usize = 32;

/// A daemon in front of `reg` with its open-files limit held at 1024.
fn daemon(reg: &Registry) -> Privreg {
    let mut p = Privreg::new(&format!(
        "auth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        reg.index
    ));
    p.wrapper(&["prlimit", "--nofile=1024:1024"]);
    p.spawn().expect("privreg-daemon starts under prlimit");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pid(&p))).unwrap();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["1024", "1024"],
        "{files}"
    );
    p
}

/// The test itself holds over 2,200 sockets.
fn raise_own_limit() {
    let limit = rlimit::increase_nofile_limit(8192).unwrap();
    assert!(
        limit >= 4096,
        "the test needs 4096 open files (ulimit -n), has {limit}"
    );
}

fn pid(p: &Privreg) -> u32 {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.cache_dir.join("daemon.json")).unwrap()).unwrap();
    u32::try_from(info["pid"].as_u64().unwrap()).unwrap()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn addr(p: &Privreg) -> SocketAddr {
    p.addr.parse().unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect to privreg")
}

/// Polls `check` every 100 ms for up to `secs`; the last value when it never held.
fn poll<T: Copy>(secs: u64, mut value: impl FnMut() -> T, ok: impl Fn(T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = value();
        if ok(v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_and_slowloris_floods_leave_cargo_served() {
    raise_own_limit();
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("leaf", "1.0.0").lib("pub fn leaf() -> u32 { 1 }"));
    reg.publish(
        Pkg::new("mid", "1.0.0")
            .dep("leaf", "1")
            .lib("pub fn mid() -> u32 { leaf::leaf() + 1 }"),
    );
    let p = daemon(&reg);
    let pid = pid(&p);
    let addr = addr(&p);
    let sb = Sandbox::new();
    sb.use_privreg(&p);
    // A first build settles what the daemon keeps open besides clients (upstream connections).
    let warm = sb.project("warm", "leaf = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&warm, &["build"]);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = open_files(pid);

    // 2,000 connections that never send a byte, then 200 that trickle a request head.
    let flood = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap_or_else(|e| {
                    panic!(
                        "the daemon stopped accepting after {i} connections ({} open files): {e}\n{}",
                        open_files(pid),
                        p.log().lines().rev().take(5).collect::<Vec<_>>().join("\n")
                    )
                })
            })
            .collect()
    };
    let idle = flood(IDLE);
    let slow = flood(SLOWLORIS);
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        let mut slow = slow;
        std::thread::spawn(move || {
            let head = b"GET /index/config.json HTTP/1.1\r\nHost: privreg\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            // One byte per connection every 250 ms; at most 10 minutes.
            for i in 0..2400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for s in &mut slow {
                    let _ = s.write(&head[i % head.len()..][..1]);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            slow
        })
    };
    // Let the daemon meet the whole flood first.
    std::thread::sleep(Duration::from_secs(2));
    let during = open_files(pid);

    // Cargo, with new dependencies to resolve and download, is still served.
    let app = sb.project(
        "app",
        "mid = \"1\"\n",
        "fn main() { println!(\"{}\", mid::mid()); }",
    );
    let started = Instant::now();
    sb.cargo_ok(&app, &["build"]);
    let build = started.elapsed();
    let started = Instant::now();
    let health = http_get(&p.addr, "/-/health", &[]).expect("/-/health answers");
    let health_latency = started.elapsed();
    assert_eq!(health.status, 200);
    let peak = open_files(pid);

    stop.store(true, Ordering::Relaxed);
    let slow = trickle.join().unwrap();
    drop(idle);
    drop(slow);
    // Every client connection closed: the daemon's open files come back to where they were.
    let after = poll(60, || open_files(pid), |n| n <= baseline);
    eprintln!(
        "open files: baseline {baseline}, during the flood {during}, after the build {peak}, \
         afterwards {after}; cargo build {build:?}; /-/health {health_latency:?}"
    );
    assert!(
        health_latency < Duration::from_secs(1),
        "/-/health took {health_latency:?} during the flood"
    );
    assert!(
        after <= baseline,
        "open files {after} after the flood, {baseline} before"
    );
    assert!(during < 1024 && peak < 1024, "{during} / {peak} open files");
    let log = p.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("connection limit reached"), "{log}");
}

/// The h2c upgrade of `addr`, up to the 101: the connection, ready for the HTTP/2 preface.
fn upgraded(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /index/config.json HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "the upgrade answer ends early");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// The preface, an empty SETTINGS frame and the header of a DATA frame on stream 1 declaring
/// 16 MiB (the largest length a frame header can hold).
fn huge_frame_start() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0xff, 0xff, 0xff, 0x0, 0, 0, 0, 0, 1]);
    out
}

/// The error code of the first GOAWAY among the frames in `raw`.
fn goaway_code(raw: &[u8]) -> Option<u32> {
    let mut at = 0;
    while raw.len() >= at + 9 {
        let len = u32::from_be_bytes([0, raw[at], raw[at + 1], raw[at + 2]]) as usize;
        let payload = raw.get(at + 9..at + 9 + len)?;
        if raw[at + 3] == 0x7 && len >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        at += 9 + len;
    }
    None
}

#[test]
fn frames_declared_huge_are_refused_before_buffering() {
    raise_own_limit();
    let reg = Registry::start(RegistryOpts::default());
    let p = daemon(&reg);
    let pid = pid(&p);
    let addr = addr(&p);

    // A frame over the advertised maximum size gets GOAWAY with FRAME_SIZE_ERROR (0x6).
    let mut s = upgraded(addr);
    s.write_all(&huge_frame_start()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(goaway_code(&raw), Some(0x6), "frames: {raw:02x?}");
    drop(s);

    for _ in 0..3 {
        assert_eq!(http_get(&p.addr, "/-/health", &[]).unwrap().status, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    // 32 connections each declare 16 MiB and send what the daemon takes of it.
    let chunk = vec![0u8; 64 << 10];
    let held: Vec<TcpStream> = (0..FRAMES)
        .map(|_| {
            let mut s = upgraded(addr);
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(&huge_frame_start()).unwrap();
            for _ in 0..(16 << 20) / chunk.len() {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    drop(held);
    eprintln!("RSS: {before} KiB before, {after} KiB with {FRAMES} huge frames declared");
    assert!(
        after <= before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(http_get(&p.addr, "/-/health", &[]).unwrap().status, 200);
}

/// Whether the daemon has closed `s`: a read sees the end (or a reset) within `secs`.
fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn the_limits_keys_bound_connections() {
    let reg = Registry::start(RegistryOpts::default());
    let p = Privreg::start(&format!(
        "auth = false\n\n[limits]\nmax-connections = 8\nheader-read-timeout = \"1s\"\n\
         idle-timeout = \"2s\"\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        reg.index
    ));
    let addr = addr(&p);
    // A head trickled in goes after `header-read-timeout`, a silent connection after
    // `idle-timeout`.
    let started = Instant::now();
    let mut slow = connect(addr);
    slow.write_all(b"GET /-/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_within(&mut slow, 10), "a partial head stays open");
    let slow_took = started.elapsed();
    let started = Instant::now();
    let mut idle = connect(addr);
    assert!(
        closed_within(&mut idle, 10),
        "a silent connection stays open"
    );
    let idle_took = started.elapsed();
    eprintln!("partial head closed after {slow_took:?}, silent connection after {idle_took:?}");
    assert!(slow_took >= Duration::from_millis(900), "{slow_took:?}");
    assert!(idle_took >= Duration::from_millis(1900), "{idle_took:?}");
    // With every slot taken by silent connections, a request still gets in, and the connection
    // held longest makes room for it.
    let mut held: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(http_get(&p.addr, "/-/health", &[]).unwrap().status, 200);
    assert!(
        closed_within(&mut held[0], 1),
        "the oldest connection stays open"
    );
}
