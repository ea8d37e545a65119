//! Limits (issue 8.5): every bound in `[limits]` is configurable, and hitting one is a clear error
//! that names the upstream and the key, never a crash or an unbounded allocation; a full disk
//! leaves the daemon serving without caching and saying so in `privreg status`.

use std::fmt::Write as _;
use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, http_get, locked_packages};

fn config(index: &str, limits: &str, extra: &str) -> String {
    format!(
        "auth = false\n\n[limits]\n{limits}\n[upstreams.crates-io]\nindex = \"{index}\"\n{extra}"
    )
}

fn healthy(p: &Privreg) {
    assert_eq!(
        p.get("/-/health").status,
        200,
        "daemon unhealthy:\n{}",
        p.log()
    );
}

#[test]
fn body_sizes_are_bounded_configurable_and_reloadable() {
    let mut reg = Registry::start(RegistryOpts::default());
    for v in 0..20 {
        reg.publish(Pkg::new("many", &format!("1.0.{v}")));
    }
    let small = reg.publish(Pkg::new("small", "1.0.0"));
    let filler = (0..2000).fold(String::new(), |mut filler, i| {
        let _ = writeln!(filler, "// line {i:05} of filler");
        filler
    });
    let big = reg.publish(Pkg::new("big", "1.0.0").lib(&filler));
    let index_len = std::fs::metadata(reg.index_file("many")).unwrap().len();
    assert!(
        index_len > 2048,
        "the index file must exceed the limit: {index_len}"
    );
    assert!(
        std::fs::metadata(reg.crate_file("big", "1.0.0"))
            .unwrap()
            .len()
            > 16 << 10
    );
    assert!(
        std::fs::metadata(reg.crate_file("small", "1.0.0"))
            .unwrap()
            .len()
            < 16 << 10
    );

    let limits = "max-index-size = 2048\nmax-crate-size = \"16KiB\"\n";
    let p = Privreg::start(&config(&reg.index, limits, ""));

    // An index file over the limit: a 5xx naming the upstream and the key, never a 404.
    let r = p.get("/index/ma/ny/many");
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    for needle in ["crates-io", "2048", "limits.max-index-size"] {
        assert!(
            r.text().contains(needle),
            "{needle:?} missing: {}",
            r.text()
        );
    }
    healthy(&p);

    // A crate over the limit: 502 naming the key, and nothing cached; a small one is served.
    assert_eq!(p.get("/index/sm/al/small").status, 200);
    assert_eq!(p.get(&format!("/dl/small/1.0.0/{small}")).status, 200);
    assert_eq!(p.get("/index/3/b/big").status, 200);
    let r = p.get(&format!("/dl/big/1.0.0/{big}"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("limits.max-crate-size"), "{}", r.text());
    let cached: Vec<_> = privreg_tests::files_under(&p.cache_dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "crate"))
        .collect();
    assert_eq!(
        cached.len(),
        1,
        "only the small crate is cached: {cached:?}"
    );
    healthy(&p);

    // Raising the limits in config.toml takes effect without a restart.
    let before = p.reloads(None);
    p.write_config(&config(
        &reg.index,
        "max-index-size = \"1MiB\"\nmax-crate-size = \"1MiB\"\n",
        "",
    ));
    p.wait_reload(before, None, "raising the limits");
    p.within(30.0, "the raised index limit", |p| {
        p.get("/index/ma/ny/many").status == 200
    });
    assert_eq!(p.get(&format!("/dl/big/1.0.0/{big}")).status, 200);

    // And cargo, through the daemon, gets all of it.
    let sb = Sandbox::new();
    sb.use_privreg(&p);
    let app = sb.project("app", "many = \"1\"\nbig = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&app, &["fetch"]);
    assert!(locked_packages(&app).contains(&("many".into(), "1.0.19".into())));
}

#[test]
fn a_request_head_over_the_limit_gets_431() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("foo", "1.0.0"));
    let p = Privreg::start(&config(&reg.index, "max-header-size = \"8KiB\"\n", ""));
    let big = "x".repeat(12 << 10);
    let r = http_get(&p.addr, "/index/3/f/foo", &[("x-filler", &big)]).unwrap();
    assert_eq!(r.status, 431, "{}", r.text());
    let fits = "x".repeat(4 << 10);
    let r = http_get(&p.addr, "/index/3/f/foo", &[("x-filler", &fits)]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    healthy(&p);
}

/// An upstream that accepts connections and never answers (a fault, not a registry) until the
/// test hangs up on one. Over HTTP/1.1 a request in flight is a connection of its own, so the
/// connections it holds open are the daemon's requests in flight; it notes the most it ever held.
struct BlackHole {
    addr: String,
    state: Arc<Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    open: Vec<std::net::TcpStream>,
    accepted: usize,
    most_open: usize,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(Held::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                {
                    let mut h = st.lock().unwrap();
                    h.accepted += 1;
                    h.open.push(stream.try_clone().unwrap());
                    h.most_open = h.most_open.max(h.open.len());
                }
                std::thread::spawn(move || {
                    // Read the request and whatever follows until either side hangs up.
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        BlackHole { addr, state }
    }

    /// Waits until `n` connections are open (or, once `total` have come, any), then hangs up on
    /// the oldest one; `false` once `done` holds instead.
    fn release_one_of(&self, n: usize, total: usize, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            {
                let mut h = self.state.lock().unwrap();
                if h.open.len() >= n || (h.accepted >= total && !h.open.is_empty()) {
                    let s = h.open.remove(0);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return true;
                }
            }
            if done() {
                return false;
            }
            assert!(Instant::now() < deadline, "no connection to release");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn requests_in_flight_to_one_upstream_are_bounded() {
    let hole = BlackHole::start();
    let index = format!("sparse+http://{}/index/", hole.addr);
    // A timeout far beyond the test: a request ends only when the upstream hangs up on it.
    let p = Privreg::start(&config(
        &index,
        "max-upstream-requests = 2\n",
        "timeout = \"5m\"\n",
    ));
    let names = ["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff"];
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let (addr, path) = (&p.addr, format!("/index/{}/{}/{n}", &n[..2], &n[2..4]));
                let finished = &finished;
                s.spawn(move || {
                    let r = http_get(addr, &path, &[]).unwrap();
                    finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (r.status, r.text())
                })
            })
            .collect();
        // All six asked at once. Each time the daemon holds the limit's two connections, hang
        // up on one: a waiting request may then take its place, and only then. The test is over
        // when every answer is in.
        let all_done = || finished.load(std::sync::atomic::Ordering::SeqCst) == names.len();
        while hole.release_one_of(2, names.len(), all_done) {}
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let held = hole.state.lock().unwrap();
    assert_eq!(held.most_open, 2, "requests in flight at once (limit 2)");
    assert!(
        held.accepted >= names.len(),
        "every request reached the upstream in turn"
    );
    for (status, text) in &answers {
        assert!(matches!(*status, 502 | 503), "{status}: {text}");
        assert!(text.contains("crates-io"), "{text}");
    }
    healthy(&p);
}

/// Runs `cmd`, panicking with its output when it fails.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cache directory on a small tmpfs that the test fills up.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        // Mounting needs root (as in CI); say so rather than skip.
        assert!(
            is_root(),
            "this test mounts a tmpfs to fill the disk; run the suite as root (as .ci/run does)"
        );
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(path));
        SmallDisk {
            path: path.to_owned(),
        }
    }

    /// Fills what is left with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn a_full_disk_serves_without_caching_and_says_so() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("leaf", "1.0.0"));
    reg.publish(Pkg::new("top", "1.0.0").dep("leaf", "1"));
    reg.publish(Pkg::new("later", "1.0.0"));
    let mut p = Privreg::new(&config(&reg.index, "", ""));
    let disk = SmallDisk::mount(&p.cache_dir);
    p.spawn().expect("daemon starts");
    let filler = disk.fill();

    // Cargo still resolves and fetches through the daemon: it serves what it cannot keep.
    let sb = Sandbox::new();
    sb.use_privreg(&p);
    let app = sb.project("app", "top = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&app, &["fetch"]);
    assert!(locked_packages(&app).contains(&("leaf".into(), "1.0.0".into())));
    healthy(&p);
    p.settled(None);

    let status: serde_json::Value = serde_json::from_slice(&p.get("/-/status").body).unwrap();
    let error = status["cache_write_error"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(!error.is_empty(), "status names the write error: {status}");
    let out = p.cli_ok(&["status"]);
    assert!(out.contains("the cache cannot be written"), "{out}");
    assert!(out.contains("serving without caching"), "{out}");
    // No half-written file is left behind for a later start to trip over.
    let partial: Vec<_> = privreg_tests::files_under(&p.cache_dir)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");

    // Space again: the next write succeeds and the warning goes away.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(p.get("/index/la/te/later").status, 200);
    p.settled(None);
    let out = p.cli_ok(&["status"]);
    assert!(!out.contains("cannot be written"), "{out}");
    assert!(
        p.terminate(),
        "the daemon did not exit cleanly on SIGTERM:\n{}",
        p.log()
    );
}
