//! The daemon's lifecycle, cache, offline use, freshness, request coalescing and input checks,
//! driven through real cargo and cargo's test registry server.

use std::process::Command;

use privreg_tests::{
    Pkg, Privreg, Registry, RegistryOpts, Sandbox, bin, http_get, locked_packages, stderr, tempdir,
};

fn one_upstream(reg: &Registry, extra: &str) -> String {
    format!(
        "auth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\n{extra}",
        reg.index
    )
}

/// Files under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    privreg_tests::files_under(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

#[test]
fn env_dirs_health_and_sigterm() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("foo", "1.0.0"));
    let dir = tempdir();
    let (config, cache) = (dir.path().join("cfg"), dir.path().join("cache"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!("listen = \"127.0.0.1:0\"\n{}", one_upstream(&reg, "")),
    )
    .unwrap();
    let mut child = Command::new(bin("privreg-daemon"))
        .env("PRIVREG_CONFIG_DIR", &config)
        .env("PRIVREG_CACHE_DIR", &cache)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = cache.join("daemon.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !state.exists() {
        assert!(std::time::Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let addr = info["addr"].as_str().unwrap().to_owned();
    let health = http_get(&addr, "/-/health", &[]).unwrap();
    assert_eq!((health.status, health.text().trim()), (200, "ok"));
    let config_json: serde_json::Value =
        serde_json::from_slice(&http_get(&addr, "/index/config.json", &[]).unwrap().body).unwrap();
    assert_eq!(
        config_json["dl"],
        format!("http://{addr}/dl/{{crate}}/{{version}}/{{sha256-checksum}}")
    );
    assert_eq!(http_get(&addr, "/index/3/f/foo", &[]).unwrap().status, 200);
    // The cache is versioned and lives where PRIVREG_CACHE_DIR says (index files are written
    // behind the answer: soon after it, not before).
    let cached = || {
        files_under(&cache)
            .iter()
            .any(|f| f.starts_with("v1/upstreams/crates-io-") && f.ends_with("index/3/f/foo"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cached() {
        assert!(
            std::time::Instant::now() < deadline,
            "index/3/f/foo never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM must stop the daemon cleanly: {status}"
    );
    assert!(!state.exists(), "daemon.json is removed on a clean stop");
    assert!(http_get(&addr, "/-/health", &[]).is_err());
}

#[test]
fn invalid_config_names_file_line_and_key() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("config.toml"),
        "auth = false\n\n[upstreams.a]\nindex = \"sparse+http://127.0.0.1:1/\"\nprority = 3\n",
    )
    .unwrap();
    let out = Command::new(bin("privreg-daemon"))
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    let expected = format!(
        "{}:5: unknown field `prority`",
        dir.path().join("config.toml").display()
    );
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn offline_from_the_cache_with_every_upstream_stopped() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("leaf", "1.0.0").lib("pub fn leaf() -> u32 { 7 }"));
    reg.publish(
        Pkg::new("mid", "1.2.0")
            .dep("leaf", "^1")
            .lib("pub fn mid() -> u32 { leaf::leaf() * 6 }"),
    );
    let privreg = Privreg::start(&one_upstream(&reg, "ttl = \"0s\"\n"));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project(
        "app",
        "mid = \"1\"\n",
        "fn main() { println!(\"{}\", mid::mid()); }",
    );
    sb.cargo_ok(&app, &["fetch"]);
    let crates = files_under(&privreg.cache_dir.join("v1/crates"));
    assert_eq!(crates.len(), 2, "{crates:?}");

    reg.stop();
    sb.fresh_cargo_home();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    sb.cargo_ok(&app, &["generate-lockfile"]);
    sb.cargo_ok(&app, &["fetch"]);
    let out = sb.cargo_ok(&app, &["run", "--quiet", "--offline"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    assert!(
        privreg.log().contains("cannot reach upstream crates-io"),
        "{}",
        privreg.log()
    );
}

#[test]
fn a_download_with_the_wrong_checksum_is_refused_and_not_cached() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("leaf", "1.0.0"));
    // The registry's stored .crate no longer matches the checksum in its index.
    std::fs::write(reg.crate_file("leaf", "1.0.0"), b"tampered").unwrap();
    let privreg = Privreg::start(&one_upstream(&reg, ""));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "leaf = \"1\"\n", "fn main() {}");
    let out = sb.cargo(&app, &["fetch"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("502"), "{err}");
    assert!(
        privreg.log().contains("checksum mismatch"),
        "{}",
        privreg.log()
    );
    assert!(files_under(&privreg.cache_dir.join("v1/crates")).is_empty());
}

/// Cached crates are streamed from disk a chunk at a time (privreg-daemon/src/body.rs): a crate
/// many chunks long reaches cargo whole, over h2c, and a direct GET gets its exact length.
#[test]
fn a_large_cached_crate_is_streamed_whole() {
    use sha2::Digest;
    let mut reg = Registry::start(RegistryOpts::default());
    // Hex of a hash chain barely compresses: the .crate is several 64 KiB chunks long.
    let mut filler = String::new();
    let mut h = sha2::Sha256::digest(b"seed");
    while filler.len() < 1 << 20 {
        h = sha2::Sha256::digest(h);
        filler.push_str(&hex::encode(h));
    }
    reg.publish(Pkg::new("big", "1.0.0").lib(&format!(
        "pub const FILLER: &str = \"{filler}\";\npub fn len() -> usize {{ FILLER.len() }}"
    )));
    let want = std::fs::read(reg.crate_file("big", "1.0.0")).unwrap();
    assert!(want.len() > 4 * 64 * 1024, "{} bytes", want.len());
    let cksum = hex::encode(sha2::Sha256::digest(&want));
    let privreg = Privreg::start(&one_upstream(&reg, ""));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project(
        "app",
        "big = \"1\"\n",
        "fn main() { println!(\"{}\", big::len()); }",
    );
    sb.cargo_ok(&app, &["fetch"]);
    let path = format!("/dl/big/1.0.0/{cksum}");

    // From the cache now, with the upstream gone: twice through cargo, once by hand.
    reg.stop();
    for _ in 0..2 {
        sb.fresh_cargo_home();
        let out = sb.cargo_ok(&app, &["run", "--quiet"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            filler.len().to_string()
        );
    }
    let got = privreg.get(&path);
    assert_eq!(got.status, 200);
    assert_eq!(got.header(privreg_shared::route::CACHE_HEADER), Some("hit"));
    assert_eq!(
        got.header("content-length"),
        Some(want.len().to_string().as_str())
    );
    assert!(got.body == want, "the streamed body differs from the crate");
}

#[test]
fn revalidates_after_ttl_and_answers_304_when_unchanged() {
    let mut reg = Registry::start(RegistryOpts {
        watch: vec!["foo".into()],
        ..RegistryOpts::default()
    });
    reg.publish(Pkg::new("foo", "1.0.0"));
    // `stale = "0s"`: past its ttl a file is revalidated before it is served. The ttl runs out by
    // a config change (waited for through the reload counter), not by the clock: an hour is
    // "within the ttl" however slow the machine, and `0s` is "past it" at once.
    let privreg = Privreg::start(&one_upstream(&reg, "ttl = \"1h\"\nstale = \"0s\"\n"));
    let first = privreg.get("/index/3/f/foo");
    assert_eq!(first.status, 200);
    let etag = first.header("etag").unwrap().to_owned();

    // Within the ttl: no upstream request; cargo's conditional request gets 304.
    let again = http_get(&privreg.addr, "/index/3/f/foo", &[("If-None-Match", &etag)]).unwrap();
    assert_eq!(again.status, 304);
    assert_eq!(reg.requests().len(), 1);

    // After the ttl: a conditional request upstream, with the validators the upstream sent
    // (cargo's test server sends a quoted ETag it never matches and a non-standard date).
    reg.publish(Pkg::new("foo", "1.1.0"));
    let before = privreg.reloads(None);
    privreg.write_config(&one_upstream(&reg, "ttl = \"0s\"\nstale = \"0s\"\n"));
    privreg.wait_reload(before, None, "the ttl set to 0s");
    let changed = http_get(&privreg.addr, "/index/3/f/foo", &[("If-None-Match", &etag)]).unwrap();
    assert_eq!(changed.status, 200);
    assert!(changed.text().contains("1.1.0"));
    let reqs = reg.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[1]["if_none_match"]
            .as_str()
            .is_some_and(|e| e.starts_with('"')),
        "{reqs:?}"
    );
    assert!(reqs[1]["if_modified_since"].is_string(), "{reqs:?}");

    // Cargo end to end: a second resolution after the ttl sees the same merged body.
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "foo = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&app, &["generate-lockfile"]);
    assert!(locked_packages(&app).contains(&("foo".into(), "1.1.0".into())));
}

#[test]
fn concurrent_requests_for_one_file_make_one_upstream_request() {
    let mut reg = Registry::start(RegistryOpts {
        watch: vec!["foo".into()],
        ..RegistryOpts::default()
    });
    reg.publish(Pkg::new("foo", "1.0.0"));
    // The upstream holds the request until every caller is known to be waiting for it (the
    // daemon counted its cache miss), then is released: no window of time decides the outcome.
    reg.mode("hold");
    let privreg = Privreg::start(&one_upstream(&reg, ""));
    let addr = privreg.addr.clone();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http_get(&addr, "/index/3/f/foo", &[]).unwrap().status)
        })
        .collect();
    privreg.within(30.0, "16 callers waiting on the upstream", |p| {
        status_counter(p, "cache_misses") >= 16
    });
    assert_eq!(
        reg.requests().len(),
        1,
        "one upstream request for 16 callers"
    );
    reg.mode("ok");
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        privreg.log()
    );
    assert_eq!(reg.requests().len(), 1);
}

#[test]
fn hostile_paths_never_touch_the_file_system() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("foo", "1.0.0"));
    let privreg = Privreg::start(&one_upstream(&reg, ""));
    let long = "a".repeat(65);
    let cases = [
        "/index/../../etc/passwd".to_owned(),
        "/index/3/f/..%2f..%2fetc".to_owned(),
        "/index/3/f/f%2Foo".to_owned(),
        "/index/3/F/Foo".to_owned(),
        "/index/3/f/FOO".to_owned(),
        "/index/xx/yy/foo".to_owned(),
        format!("/index/aa/aa/{long}"),
        "/dl/foo/1.0.0/../../../etc/passwd".to_owned(),
        "/dl/..%2f/1.0.0/0000".to_owned(),
        format!("/dl/foo/1.0.0/{}", "Z".repeat(64)),
        "/dl/foo/not-semver/0000000000000000000000000000000000000000000000000000000000000000"
            .to_owned(),
    ];
    for path in &cases {
        let r = privreg.get(path);
        assert!(
            matches!(r.status, 400 | 404),
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    assert!(
        !privreg.cache_dir.join("v1").exists(),
        "{:?}",
        files_under(&privreg.cache_dir)
    );
}

#[test]
fn an_unparsable_upstream_line_is_skipped_and_logged() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("foo", "1.0.0"));
    let file = reg.index_file("foo");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("{\"name\":\"foo\",\"vers\":\"not a version\"}\n");
    std::fs::write(&file, text).unwrap();
    reg.publish(Pkg::new("foo", "1.1.0"));
    let privreg = Privreg::start(&one_upstream(&reg, ""));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "foo = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&app, &["generate-lockfile"]);
    assert!(locked_packages(&app).contains(&("foo".into(), "1.1.0".into())));
    let log = privreg.log();
    assert!(
        log.contains("skipping an index line") && log.contains("line=2"),
        "{log}"
    );
}

fn upstream_requests(privreg: &Privreg) -> u64 {
    status_counter(privreg, "upstream_requests")
}

/// A counter from `/-/status`.
fn status_counter(privreg: &Privreg, name: &str) -> u64 {
    let status: serde_json::Value = serde_json::from_slice(&privreg.get("/-/status").body).unwrap();
    status[name]
        .as_u64()
        .unwrap_or_else(|| panic!("/-/status has no {name}: {status}"))
}

#[test]
fn stale_files_are_served_at_once_and_revalidated_once_in_the_background() {
    let mut reg = Registry::start(RegistryOpts {
        watch: vec!["foo".into()],
        ..RegistryOpts::default()
    });
    reg.publish(Pkg::new("foo", "1.0.0"));
    let privreg = Privreg::start(&one_upstream(&reg, "ttl = \"1h\"\nstale = \"1h\"\n"));
    assert_eq!(privreg.get("/index/3/f/foo").status, 200);
    assert_eq!(reg.requests().len(), 1);

    reg.publish(Pkg::new("foo", "1.1.0"));
    // The upstream holds every request until released: the revalidation is in flight for as long
    // as the reads below take, however slow the machine.
    reg.mode("hold");
    // Past the ttl (now 0s, by a reload rather than a clock), well within `stale`.
    let before = privreg.reloads(None);
    privreg.write_config(&one_upstream(&reg, "ttl = \"0s\"\nstale = \"1h\"\n"));
    privreg.wait_reload(before, None, "the ttl set to 0s");
    // Every caller gets the cached body without waiting for the held upstream…
    let addr = privreg.addr.clone();
    let bodies: Vec<String> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http_get(&addr, "/index/3/f/foo", &[]).unwrap().text())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(
        bodies
            .iter()
            .all(|b| b.contains("1.0.0") && !b.contains("1.1.0")),
        "{bodies:?}"
    );
    // …and those eight stale reads started one revalidation, still held upstream.
    privreg.within(
        30.0,
        "the background revalidation reaches the upstream",
        |_| reg.requests().len() >= 2,
    );
    assert_eq!(
        reg.requests().len(),
        2,
        "one revalidation for many stale reads"
    );
    // Released, it brings the new version in.
    reg.mode("ok");
    privreg.within(30.0, "the background revalidation", |p| {
        p.get("/index/3/f/foo").text().contains("1.1.0")
    });
}

#[test]
fn dependencies_are_prefetched_so_cargo_finds_them_warm() {
    let mut reg = Registry::start(RegistryOpts {
        watch: ["top", "mid", "leaf", "devonly", "bydefault", "onrequest"]
            .map(String::from)
            .to_vec(),
        ..RegistryOpts::default()
    });
    reg.publish(Pkg::new("leaf", "1.0.0"));
    reg.publish(Pkg::new("bydefault", "1.0.0"));
    reg.publish(Pkg::new("onrequest", "1.0.0"));
    // `mid` switches `bydefault` on through its default feature; `onrequest` only when asked.
    reg.publish(
        Pkg::new("mid", "1.0.0")
            .dep("leaf", "1")
            .optional_dep("bydefault", "1")
            .optional_dep("onrequest", "1")
            .feature("default", &["std"])
            .feature("std", &["dep:bydefault"])
            .feature("extra", &["dep:onrequest"]),
    );
    reg.publish(Pkg::new("devonly", "1.0.0"));
    reg.publish(
        Pkg::new("top", "1.0.0")
            .dep("mid", "1")
            .dev_dep("devonly", "1"),
    );
    let privreg = Privreg::start(&one_upstream(&reg, ""));

    // One request for `top` makes the daemon fetch `mid`, and through it `leaf`, by itself.
    assert_eq!(privreg.get("/index/3/t/top").status, 200);
    privreg.within(60.0, "prefetch of mid and leaf", |_| {
        let paths: Vec<String> = reg
            .requests()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_owned())
            .collect();
        [
            "/index/3/m/mid",
            "/index/le/af/leaf",
            "/index/by/de/bydefault",
        ]
        .iter()
        .all(|p| paths.iter().any(|q| q == p))
    });
    // Cargo's resolution then needs no upstream request at all.
    let before = upstream_requests(&privreg);
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "top = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&app, &["generate-lockfile"]);
    let locked = locked_packages(&app);
    assert!(locked.contains(&("leaf".into(), "1.0.0".into())));
    assert!(locked.contains(&("bydefault".into(), "1.0.0".into())));
    assert_eq!(upstream_requests(&privreg), before);
    // Every file was asked for exactly once; a dependency's dev-dependencies and the optional
    // dependencies its default features leave off, never.
    assert_eq!(reg.requests().len(), 4, "{:?}", reg.requests());
}

/// Prefetch follows, for each requirement a dependent announced, the version cargo will pick
/// (the newest match), not every recent version; a requirement that comes later gets its version
/// followed then, though the crate's file is already fresh.
#[test]
fn prefetch_follows_the_versions_the_requirements_pick() {
    let names = ["top", "second", "mid", "leaf-a", "leaf-b", "leaf-c"];
    let mut reg = Registry::start(RegistryOpts {
        watch: names.map(String::from).to_vec(),
        ..RegistryOpts::default()
    });
    for leaf in ["leaf-a", "leaf-b", "leaf-c"] {
        reg.publish(Pkg::new(leaf, "1.0.0"));
    }
    reg.publish(Pkg::new("mid", "1.0.0").dep("leaf-a", "1"));
    reg.publish(Pkg::new("mid", "1.1.0").dep("leaf-b", "1"));
    reg.publish(Pkg::new("mid", "2.0.0").dep("leaf-c", "1"));
    reg.publish(Pkg::new("top", "1.0.0").dep("mid", "^1"));
    reg.publish(Pkg::new("second", "1.0.0").dep("mid", "^2"));
    let privreg = Privreg::start(&one_upstream(&reg, ""));
    let fetched = |reg: &mut Registry| -> Vec<String> {
        reg.requests()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_owned())
            .collect()
    };

    // `top` wants mid ^1: mid 1.1.0's dependency is fetched ahead of cargo, 1.0.0's and 2.0.0's
    // are not (the three newest versions would have fetched all of them).
    assert_eq!(privreg.get("/index/3/t/top").status, 200);
    privreg.within(60.0, "prefetch of mid and leaf-b", |_| {
        fetched(&mut reg).contains(&"/index/le/af/leaf-b".to_owned())
    });
    // Then `second` wants mid ^2: mid's file is fresh, and 2.0.0's dependency follows.
    assert_eq!(privreg.get("/index/se/co/second").status, 200);
    privreg.within(60.0, "prefetch of leaf-c", |_| {
        fetched(&mut reg).contains(&"/index/le/af/leaf-c".to_owned())
    });

    let before = upstream_requests(&privreg);
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "top = \"1\"\nsecond = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&app, &["generate-lockfile"]);
    let locked = locked_packages(&app);
    for (name, vers) in [
        ("mid", "1.1.0"),
        ("mid", "2.0.0"),
        ("leaf-b", "1.0.0"),
        ("leaf-c", "1.0.0"),
    ] {
        assert!(
            locked.contains(&(name.into(), vers.into())),
            "{name} {vers}: {locked:?}"
        );
    }
    assert_eq!(
        upstream_requests(&privreg),
        before,
        "cargo found everything warm"
    );
    let paths = fetched(&mut reg);
    assert!(
        !paths.contains(&"/index/le/af/leaf-a".to_owned()),
        "{paths:?}"
    );
    assert_eq!(paths.len(), 5, "each file once: {paths:?}");
}

#[test]
fn cargo_switches_to_http2_on_its_h2c_offer() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("leaf", "1.0.0"));
    reg.publish(Pkg::new("mid", "1.0.0").dep("leaf", "1"));
    reg.publish(Pkg::new("top", "1.0.0").dep("mid", "1"));
    let privreg = Privreg::start(&one_upstream(&reg, ""));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "top = \"1\"\n", "fn main() {}");
    sb.cargo_ok(&app, &["fetch"]);
    assert!(locked_packages(&app).contains(&("leaf".into(), "1.0.0".into())));
    let status: serde_json::Value = serde_json::from_slice(&privreg.get("/-/status").body).unwrap();
    // Cargo offers h2c on each new connection (it keeps at most two); the daemon takes it, and
    // everything after the first request on a connection travels as HTTP/2 streams.
    let upgrades = status["h2c_upgrades"].as_u64().unwrap();
    assert!((1..=4).contains(&upgrades), "{status}");
    // A plain HTTP/1.1 client that does not offer it is answered as before.
    let r = privreg.get("/index/3/t/top");
    assert_eq!(r.status, 200);
    let again: serde_json::Value = serde_json::from_slice(&privreg.get("/-/status").body).unwrap();
    assert_eq!(again["h2c_upgrades"], status["h2c_upgrades"]);
}
