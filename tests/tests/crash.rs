//! Crash safety: the daemon is killed with SIGKILL at random moments while cargo and concurrent
//! clients fetch index files and crates. After every kill, every cached crate still matches its
//! checksum and no client ever got a partial or wrong file; damage and leftovers are found and
//! dropped (on start, on read, or by `privreg verify`).
//!
//! `PRIVREG_CRASH_ITERATIONS` sets the number of kills (default 100; the long mode is e.g. 1000).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use privreg_tests::kellnr::Kellnr;
use privreg_tests::{HttpResponse, Pkg, Privreg, Sandbox, files_under, http_get, stderr};
use sha2::{Digest, Sha256};

/// A small xorshift generator; the seed is printed so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A random index into a slice of `len` items.
    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).expect("below a usize")
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Every cached crate must match the checksum in its name.
fn assert_cache_intact(privreg: &Privreg, round: usize) {
    for path in files_under(&privreg.cache_dir.join("v1/crates")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            continue; // a write the kill interrupted: never read, swept on start
        }
        let want = name.trim_end_matches(".crate");
        let got = sha256_hex(&std::fs::read(&path).unwrap());
        assert_eq!(got, want, "round {round}: {} is damaged", path.display());
    }
}

/// The daemon's log line for the start-up sweep of a crash's leftovers.
const SWEPT: &str = "removed temp files left by an earlier crash";

#[test]
fn sigkill_at_random_moments_never_damages_the_cache() {
    let iterations: usize = std::env::var("PRIVREG_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the low 64 bits of the time in nanoseconds are the seed"
    )]
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}, {iterations} kills");
    let mut rng = Rng(seed);

    // Kellnr as the upstream: it shrugs off clients that vanish mid-request, as the daemon does
    // here hundreds of times (cargo's test server stops at the first broken pipe).
    let mut reg = Kellnr::start(false, None);
    // Crates big enough that a kill often lands inside a download.
    let mut crates = Vec::new();
    for i in 0..8 {
        let name = format!("crashy{i}");
        let filler = (0..20_000).fold(String::new(), |mut filler, n| {
            let _ = writeln!(filler, "// {i} {n} {}", n * 7919 % 10007);
            filler
        });
        reg.publish(
            &Pkg::new(&name, "1.0.0").lib(&format!("pub fn id() -> u32 {{ {i} }}\n{filler}")),
        );
        let line = http_get(
            &format!("127.0.0.1:{}", reg.port),
            &format!("/api/v1/crates/cr/as/{name}"),
            &[],
        )
        .unwrap()
        .text();
        let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        crates.push((name, v["cksum"].as_str().unwrap().to_owned()));
    }
    let deps = crates.iter().fold(String::new(), |mut deps, (n, _)| {
        let _ = writeln!(deps, "{n} = \"1\"");
        deps
    });
    // Every index request revalidates and rewrites its cache file: as many writes as possible.
    let mut privreg = Privreg::new(&format!(
        "auth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\nttl = \"0s\"\nstale = \"0s\"\n",
        reg.index()
    ));
    let crates = Arc::new(crates);
    let violations = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Downloads a client got and checked: the test must have exercised something.
    let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    for round in 0..iterations {
        privreg.spawn().expect("the daemon starts after a kill");
        let stop = Arc::new(AtomicBool::new(false));
        // Set just before the kill: a request that fails after this may have been cut off by the
        // kill; one that fails before it is a failure of a healthy daemon.
        let dying = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (addr, stop, dying, crates, violations, checked) = (
                    privreg.addr.clone(),
                    stop.clone(),
                    dying.clone(),
                    crates.clone(),
                    violations.clone(),
                    checked.clone(),
                );
                let mut rng = Rng(seed ^ ((round * 8 + c) as u64 + 1));
                std::thread::spawn(move || {
                    // A transport error is expected only once the kill is under way; an answer
                    // that came whole must be a 200 whenever it came.
                    let check = |what: &str, r: &std::io::Result<HttpResponse>| match r {
                        Ok(r) if r.status == 200 => true,
                        Ok(r) => {
                            violations.lock().unwrap().push(format!(
                                "round {round}: {what} answered {}: {}",
                                r.status,
                                r.text()
                            ));
                            false
                        }
                        Err(e) => {
                            if !dying.load(Ordering::SeqCst) {
                                violations.lock().unwrap().push(format!(
                                    "round {round}: {what} failed before the kill: {e}"
                                ));
                            }
                            false
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let (name, cksum) = &crates[rng.index(crates.len())];
                        let index = format!("/index/cr/as/{name}");
                        let r = http_get(&addr, &index, &[]);
                        if check(&index, &r)
                            && let Ok(r) = r
                            && !r
                                .text()
                                .lines()
                                .all(|l| l.contains(&format!("\"name\":\"{name}\"")))
                        {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("round {round}: bad index body for {name}"));
                        }
                        let dl = format!("/dl/{name}/1.0.0/{cksum}");
                        let r = http_get(&addr, &dl, &[]);
                        if check(&dl, &r)
                            && let Ok(r) = r
                        {
                            checked.fetch_add(1, Ordering::Relaxed);
                            if sha256_hex(&r.body) != *cksum {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("round {round}: wrong bytes for {name}"));
                            }
                        }
                    }
                })
            })
            .collect();
        // Now and then real cargo is fetching too when the kill comes. It must succeed unless
        // the kill cut it off (then it failed after `dying` was set).
        let cargo = (round % 10 == 0).then(|| {
            let (index, deps, dying, violations) =
                (privreg.index_url(), deps.clone(), dying.clone(), violations.clone());
            std::thread::spawn(move || {
                let sb = Sandbox::new();
                sb.write_cargo_config(&format!(
                    "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"{index}\"\n\n[net]\nretry = 0\n"
                ));
                let app = sb.project("app", &deps, "fn main() {}");
                let out = sb.cargo(&app, &["fetch"]);
                if !out.status.success() && !dying.load(Ordering::SeqCst) {
                    violations.lock().unwrap().push(format!(
                        "round {round}: cargo fetch failed before the kill:\n{}",
                        stderr(&out)
                    ));
                }
            })
        });
        std::thread::sleep(Duration::from_millis(
            5 + rng.below(if cargo.is_some() { 400 } else { 80 }),
        ));
        dying.store(true, Ordering::SeqCst);
        privreg.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        if let Some(c) = cargo {
            c.join().unwrap();
        }
        assert_cache_intact(&privreg, round);
    }
    let violations = violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    let checked = checked.load(Ordering::Relaxed);
    eprintln!("{checked} downloads checked across {iterations} kills");
    assert!(
        checked > iterations,
        "the clients hardly got anything: {checked}"
    );

    // After all that, everything is served right, and cargo can fetch it all.
    privreg.spawn().unwrap();
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", &deps, "fn main() {}");
    sb.cargo_ok(&app, &["fetch"]);
    // The kills' leftovers (temp files) go in the collector's first pass, in the background
    // after start; then the crates are all that is left.
    privreg.within(60.0, "the crash leftovers swept in the background", |p| {
        files_under(&p.cache_dir.join("v1/crates"))
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "crate"))
    });
    assert_eq!(
        files_under(&privreg.cache_dir.join("v1/crates")).len(),
        crates.len()
    );

    // Damage on disk and a crash's leftovers: swept on start, dropped and fetched again on read.
    let cached = files_under(&privreg.cache_dir.join("v1/crates"));
    let mut bytes = std::fs::read(&cached[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&cached[0], &bytes).unwrap();
    let leftover = cached[1].with_file_name(".tmp-left-by-a-crash");
    std::fs::write(&leftover, b"partial").unwrap();
    privreg.kill9();
    // The log is appended to across restarts: earlier sweeps are in it already.
    let sweeps = privreg.log().matches(SWEPT).count();
    privreg.spawn().unwrap();
    // The sweep runs in the background after start and logs what it removed: wait for its line
    // (the bound is only there to fail with the log rather than hang).
    privreg.within(60.0, "the start-up sweep's log line", |p| {
        p.log().matches(SWEPT).count() > sweeps
    });
    assert!(
        !leftover.exists(),
        "the start-up sweep left {}",
        leftover.display()
    );
    let damaged = cached[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (name, _) = crates.iter().find(|(_, c)| *c == damaged).unwrap();
    let r = privreg.get(&format!("/dl/{name}/1.0.0/{damaged}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        sha256_hex(&r.body),
        damaged,
        "the damaged copy was replaced, not served"
    );
    assert!(privreg.log().contains("dropping a damaged cached crate"));

    // `privreg verify` finds damage too.
    let victim = files_under(&privreg.cache_dir.join("v1/crates"))[2].clone();
    std::fs::write(&victim, b"not a crate").unwrap();
    let out = privreg.cli_ok(&["verify"]);
    assert!(out.contains("1 damaged and dropped"), "{out}");
    assert!(!victim.exists());
    reg.stop();
}
