//! Observability end to end: `/metrics` scraped while real cargo builds through an authenticated
//! daemon (parsed with the `prometheus-parse` crate), and the status page `/-/` opened through
//! its one-time link in a real headless Chromium (Debian's `chromium` package), its DOM checked
//! and its screenshot decoded with the `png` crate. Runs against the OS keyring named by
//! `PRIVREG_TEST_KEYRING` (see `tests/support/keyrings.sh`).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use privreg_shared::secrets::EntryName;
use privreg_tests::{
    HttpResponse, KeyringEntry, Pkg, Privreg, Registry, RegistryOpts, Sandbox, bin, files_holding,
    http_get, keyring_name, random_token, stderr, tempdir, test_keyring,
};
use prometheus_parse::{Sample, Scrape, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const MAIN: &str = "fn main() { println!(\"{}\", acme_core::hello()); }";
const PIN: &str = "Explanation: acme crates only ever come from acme\nPackage: acme-*\nPin: registry crates-io\nPin-Priority: never\n";

/// Two real upstreams, a pin that blocks the hijack attempt on `acme-core`, and a daemon with
/// `auth = true` whose local token is in the test keyring.
struct Setup {
    public: Registry,
    acme: Registry,
    privreg: Privreg,
    token: String,
    sb: Sandbox,
    _entry: KeyringEntry,
}

fn setup(store: privreg_shared::config::KeyringChoice) -> Setup {
    let mut public = Registry::start(RegistryOpts::default());
    public.publish(Pkg::new("pubdep", "1.0.0").lib("pub fn name() -> &'static str { \"pubdep\" }"));
    public.publish(Pkg::new("acme-core", "9.9.9").lib("compile_error!(\"hijacked\");"));
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        watch: vec!["acme-core".into()],
        ..RegistryOpts::default()
    });
    acme.publish(
        Pkg::new("acme-core", "0.2.0")
            .dep("pubdep", "^1")
            .lib("pub fn hello() -> String { format!(\"acme-core uses {}\", pubdep::name()) }"),
    );
    // acme is revalidated on every request, so that its failures show at once.
    let mut privreg = Privreg::new(&format!(
        "auth = true\nkeyring = \"{}\"\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\nttl = \"0s\"\nstale = \"0s\"\n\n[upstreams.crates-io]\nindex = \"{}\"\npriority = 500\n",
        keyring_name(store),
        acme.index,
        public.index
    ));
    std::fs::write(privreg.config_dir.join("preferences"), PIN).unwrap();
    let token = random_token("local");
    let entry = KeyringEntry::set(store, EntryName::local_token(&privreg.config_dir), &token);
    privreg.spawn().unwrap();
    let sb = Sandbox::new();
    sb.write_cargo_config(&format!(
        "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"{}\"\ncredential-provider = [\"{}\"]\n\n[net]\nretry = 0\n",
        privreg.index_url(),
        bin("cargo-credential-privreg").display()
    ));
    Setup {
        public,
        acme,
        privreg,
        token,
        sb,
        _entry: entry,
    }
}

impl Setup {
    /// Real cargo in `app`, with the credential provider finding the daemon's token.
    fn cargo(&self, app: &Path, args: &[&str]) {
        let out = self
            .sb
            .cargo_command(app, args)
            .env("PRIVREG_CONFIG_DIR", &self.privreg.config_dir)
            .env("PRIVREG_CACHE_DIR", &self.privreg.cache_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo {args:?}:\n{}", stderr(&out));
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(&self.privreg.addr, path, headers).unwrap()
    }

    /// `GET path` with the local token as cargo sends it.
    fn get_with_token(&self, path: &str) -> HttpResponse {
        self.get(path, &[("Authorization", &self.token)])
    }

    /// `/metrics` as a Prometheus scraper gets it (`Authorization: Bearer <token>`), parsed.
    fn scrape(&self) -> Scrape {
        let r = self.get(
            "/metrics",
            &[("Authorization", &format!("Bearer {}", self.token))],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = r.text();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        check_conventions(&scrape, &text);
        scrape
    }

    /// `privreg status --open --print`: the one-time link, as `privreg status --open` gets it.
    fn link(&self) -> String {
        let out = self.privreg.cli(&["status", "--open", "--print"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let prefix = format!("http://{}/-/open/", self.privreg.addr);
        let nonce = link
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{link}"));
        assert_eq!(nonce.len(), 64, "{link}");
        assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{link}");
        assert!(
            !link.contains(&self.token),
            "the local token is in the link"
        );
        link
    }
}

/// The samples of `name` whose labels include `labels`.
fn samples<'a>(
    s: &'a Scrape,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    s.samples.iter().filter(move |x| {
        x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
    })
}

/// The sum of counter `name` over the series matching `labels`.
fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(s, name, labels)
        .map(|x| match x.value {
            Value::Counter(v) => v,
            ref other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

/// How many observations histogram `name` holds over the series matching `labels`.
fn observations(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(s, name, labels)
        .map(|x| match &x.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than == f64::INFINITY)
                .map_or_else(|| panic!("{name} has no +Inf bucket"), |b| b.count),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

/// Prometheus naming conventions: `privreg_` prefix, counters `_total` (gauges never), histograms
/// in seconds, a HELP line for every family, and no unbounded label values.
fn check_conventions(s: &Scrape, text: &str) {
    assert!(!s.samples.is_empty(), "{text}");
    for x in &s.samples {
        assert!(x.metric.starts_with("privreg_"), "{}", x.metric);
        let family = match &x.value {
            Value::Counter(_) => {
                assert!(x.metric.ends_with("_total"), "counter {}", x.metric);
                x.metric.clone()
            }
            // A level or a state, not a count (the memory cache's size, bytes on disk, the advisories
            // in force, `privreg_shared_tier_failing` at 0 or 1): never `_total`.
            Value::Gauge(_) => {
                assert!(!x.metric.ends_with("_total"), "gauge {}", x.metric);
                x.metric.clone()
            }
            Value::Histogram(_) => {
                assert!(x.metric.ends_with("_seconds"), "histogram {}", x.metric);
                x.metric.clone()
            }
            // prometheus-parse leaves a histogram's _sum and _count untyped.
            Value::Untyped(_) => {
                let base = x
                    .metric
                    .strip_suffix("_sum")
                    .or_else(|| x.metric.strip_suffix("_count"))
                    .unwrap_or_else(|| panic!("untyped sample {}", x.metric));
                assert!(
                    text.contains(&format!("# TYPE {base} histogram\n")),
                    "{base} is not a histogram"
                );
                base.to_owned()
            }
            other @ Value::Summary(_) => panic!("{}: unexpected type {other:?}", x.metric),
        };
        assert!(s.docs.contains_key(&family), "no HELP for {family}");
        for v in x.labels.values() {
            assert!(
                !v.contains('/'),
                "a path became a label value: {}",
                x.metric
            );
        }
    }
}

#[test]
#[allow(
    clippy::float_cmp,
    reason = "counters and byte counts are whole numbers far below 2^52: exact in f64"
)]
fn metrics_count_requests_cache_upstreams_policy_and_reloads() {
    let store = test_keyring("metrics_count_requests_cache_upstreams_policy_and_reloads");
    let mut s = setup(store);

    // The local token guards /metrics: as cargo sends it, or as a scraper's bearer token.
    assert_eq!(s.get("/metrics", &[]).status, 401);
    assert_eq!(s.get_with_token("/metrics").status, 200);
    let wrong = s.get("/metrics", &[("Authorization", "Bearer not-the-token")]);
    assert_eq!(wrong.status, 403);
    // The bearer form opens /metrics only.
    let bearer = format!("Bearer {}", s.token);
    let r = s.get("/index/config.json", &[("Authorization", &bearer)]);
    assert_eq!(r.status, 403);

    let before = s.scrape();
    for name in [
        "privreg_cache_hits_total",
        "privreg_cache_misses_total",
        "privreg_prefetches_total",
        "privreg_policy_merges_total",
        "privreg_config_reloads_total",
        "privreg_config_reload_errors_total",
    ] {
        assert_eq!(
            samples(&before, name, &[]).count(),
            1,
            "{name} missing at start"
        );
    }

    assert_eq!(
        counter(&before, "privreg_config_reload_errors_total", &[]),
        0.0
    );

    // Real cargo builds an app through the daemon.
    let app = s.sb.project("app", "acme-core = \"*\"\n", MAIN);
    s.cargo(&app, &["build", "--quiet"]);
    let built = s.scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        counter(&built, name, labels) - counter(&before, name, labels)
    };
    let index_ok = [
        ("endpoint", "index"),
        ("view", "layered"),
        ("status", "200"),
    ];
    assert!(delta("privreg_requests_total", &index_ok) >= 2.0);
    let dl_ok = [("endpoint", "download"), ("status", "200")];
    assert_eq!(delta("privreg_requests_total", &dl_ok), 2.0);
    // Every byte of both crates went to cargo.
    let crates = std::fs::metadata(s.acme.crate_file("acme-core", "0.2.0"))
        .unwrap()
        .len()
        + std::fs::metadata(s.public.crate_file("pubdep", "1.0.0"))
            .unwrap()
            .len();
    assert_eq!(
        delta("privreg_served_bytes_total", &[("endpoint", "download")]),
        crates as f64
    );
    assert!(
        observations(
            &built,
            "privreg_request_duration_seconds",
            &[("endpoint", "index")]
        ) >= 2.0
    );
    assert!(delta("privreg_cache_misses_total", &[]) >= 2.0);
    for (upstream, kind) in [
        ("acme", "index"),
        ("acme", "config"),
        ("crates-io", "index"),
        ("crates-io", "config"),
    ] {
        let labels = [("upstream", upstream), ("kind", kind), ("outcome", "ok")];
        assert!(
            delta("privreg_upstream_requests_total", &labels) >= 1.0,
            "{upstream} {kind}"
        );
        let labels = [("upstream", upstream), ("kind", kind)];
        assert!(
            observations(&built, "privreg_upstream_request_duration_seconds", &labels) >= 1.0,
            "{upstream} {kind}"
        );
    }
    for upstream in ["acme", "crates-io"] {
        let labels = [
            ("upstream", upstream),
            ("kind", "download"),
            ("outcome", "ok"),
        ];
        assert_eq!(
            delta("privreg_upstream_requests_total", &labels),
            1.0,
            "{upstream}"
        );
    }
    // acme-core's dependency was fetched ahead of cargo.
    assert!(delta("privreg_prefetches_total", &[]) >= 1.0);
    // The pin blocked crates-io's acme-core 9.9.9 when the merge was computed.
    assert!(delta("privreg_policy_merges_total", &[]) >= 2.0);
    assert!(delta("privreg_policy_decisions_total", &[("decision", "blocked")]) >= 1.0);
    assert_eq!(
        delta(
            "privreg_policy_decisions_total",
            &[("decision", "shadowed")]
        ),
        0.0
    );

    // A new machine resolves again: crates-io's files come from the cache.
    s.sb.fresh_cargo_home();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    s.cargo(&app, &["generate-lockfile"]);
    let again = s.scrape();
    assert!(
        counter(&again, "privreg_cache_hits_total", &[])
            > counter(&built, "privreg_cache_hits_total", &[])
    );

    // acme fails: the last good copy is served, and the failure is counted.
    s.acme.mode("500");
    let r = s.get_with_token("/index/ac/me/acme-core");
    assert_eq!(r.status, 200, "{}", r.text());
    let failed = s.scrape();
    let acme_500 = [
        ("upstream", "acme"),
        ("kind", "index"),
        ("outcome", "status_error"),
    ];
    assert!(counter(&failed, "privreg_upstream_requests_total", &acme_500) >= 1.0);
    s.acme.mode("ok");

    // Paths that are no route are counted under one label, never under the path.
    let r = s.get_with_token("/no/such/place-4711");
    assert_eq!(r.status, 404);
    let text = s.get_with_token("/metrics").text();
    assert!(!text.contains("4711"), "{text}");
    assert!(
        text.contains("privreg_requests_total{endpoint=\"invalid\",view=\"none\",status=\"404\"}"),
        "{text}"
    );

    // A broken config.toml is a reload error; fixing it is a good reload.
    let config = std::fs::read_to_string(s.privreg.config_dir.join("config.toml")).unwrap();
    let reloads = counter(&failed, "privreg_config_reloads_total", &[]);
    s.privreg
        .write_config(&format!("{config}\nno-such-key = 1\n"));
    s.privreg.within(60.0, "a reload error is counted", |_| {
        counter(&s.scrape(), "privreg_config_reload_errors_total", &[]) >= 1.0
    });
    let broken = s.scrape();
    let errors = counter(&broken, "privreg_config_reload_errors_total", &[]);
    assert!(counter(&broken, "privreg_config_reloads_total", &[]) >= reloads + errors);
    s.privreg.write_config(&config);
    let broken_reloads = counter(&broken, "privreg_config_reloads_total", &[]);
    s.privreg.within(60.0, "the fixed config is reloaded", |_| {
        let st: serde_json::Value =
            serde_json::from_slice(&s.get_with_token("/-/status").body).unwrap();
        st["config_error"].is_null()
            && counter(&s.scrape(), "privreg_config_reloads_total", &[]) > broken_reloads
    });
    assert!(files_holding(s.privreg.root(), &s.token).is_empty());
}

/// Headless Chromium, failing the test with how to install it when it is missing.
fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`)"
    );
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium {args:?}:\n{}", stderr(&out));
    out
}

/// A raw HTTP/1.1 request (the harness has GET only); returns the status.
fn request_status(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn status_page_opens_once_through_its_link_in_a_real_browser() {
    let store = test_keyring("status_page_opens_once_through_its_link_in_a_real_browser");
    let mut s = setup(store);
    // Something to show: a resolution (upstreams contacted, the pin blocking crates-io's
    // acme-core), then acme failing, then a broken pin file in force.
    let app = s.sb.project("app", "acme-core = \"*\"\n", MAIN);
    s.cargo(&app, &["generate-lockfile"]);
    s.acme.mode("500");
    assert_eq!(s.get_with_token("/index/ac/me/acme-core").status, 200);
    let pin_file = s.privreg.config_dir.join("preferences.d/broken.pref");
    std::fs::create_dir_all(pin_file.parent().unwrap()).unwrap();
    std::fs::write(
        &pin_file,
        "Package: serde\nPin: flavour vanilla\nPin-Priority: 600\n",
    )
    .unwrap();
    s.privreg.within(60.0, "the pin error is in force", |_| {
        let st: serde_json::Value =
            serde_json::from_slice(&s.get_with_token("/-/status").body).unwrap();
        st["config_error"].is_string()
    });
    let status: serde_json::Value =
        serde_json::from_slice(&s.get_with_token("/-/status").body).unwrap();
    let pin_error = status["config_error"].as_str().unwrap().to_owned();
    let acme_error = status["upstreams"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(acme_error.contains("answered 500"), "{status}");

    // The browser opens the link: the page and its sections, with the daemon's real values.
    let profile = tempdir();
    let dom = chromium(&["--dump-dom", &s.link()], profile.path());
    let dom = String::from_utf8(dom.stdout).unwrap();
    for want in [
        "<title>privreg status</title>",
        "id=\"errors\"",
        "id=\"upstreams\"",
        "id=\"cache\"",
        "id=\"decisions\"",
        "acme",
        "crates-io",
        &s.acme.index,
        "failing",
        "hit ratio",
        "acme-core",
        "9.9.9",
        "blocked",
        "preferences:1",
        "broken.pref",
    ] {
        assert!(dom.contains(want), "{want:?} missing from the page:\n{dom}");
    }
    // Error texts as the daemon reports them (escaped in HTML, as the DOM serialises them).
    let html = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    assert!(dom.contains(&html(&acme_error)), "{acme_error}\n{dom}");
    assert!(dom.contains(&html(&pin_error)), "{pin_error}\n{dom}");

    // A screenshot of the page is a real picture of it, not a blank one.
    let shot = profile.path().join("page.png");
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
            &s.link(),
        ],
        tempdir().path(),
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1280, 900));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixel = |x: u32, y: u32| {
        let i = (y as usize * info.width as usize + x as usize) * channels;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    // The dark header across the top, the light page below it, and text in many shades.
    assert_eq!(pixel(1270, 5), (0x1d, 0x23, 0x2b), "the header");
    assert_eq!(pixel(5, 890), (0xf5, 0xf7, 0xfa), "the page background");
    let mut colours = std::collections::HashSet::new();
    for y in (0..info.height).step_by(3) {
        for x in (0..info.width).step_by(3) {
            colours.insert(pixel(x, y));
        }
    }
    assert!(
        colours.len() > 50,
        "{} colours: a blank page?",
        colours.len()
    );
    // The pin error's box is drawn in its light red.
    let problem = (0xfd, 0xe4, 0xe1);
    let reds = (0..info.height)
        .flat_map(|y| (0..info.width).map(move |x| (x, y)))
        .filter(|&(x, y)| pixel(x, y) == problem)
        .count();
    assert!(reds > 1000, "{reds} pixels of the error box's colour");

    // `privreg status --open` where no browser can be started prints the link instead.
    let no_launchers = tempdir();
    let out = Command::new(bin("privreg"))
        .arg("--config-dir")
        .arg(&s.privreg.config_dir)
        .arg("--cache-dir")
        .arg(&s.privreg.cache_dir)
        .args(["status", "--open"])
        .env("PATH", no_launchers.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot start a browser"),
        "{}",
        stderr(&out)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let printed = printed.trim();
    assert!(printed.starts_with(&format!("http://{}/-/open/", s.privreg.addr)));
    let printed_path = printed.trim_start_matches(&format!("http://{}", s.privreg.addr));
    assert_eq!(s.get(printed_path, &[]).status, 303);

    // By hand: the link works once, sets a strict HttpOnly cookie and redirects to /-/.
    let link = s.link();
    let path = link.trim_start_matches(&format!("http://{}", s.privreg.addr));
    let opened = s.get(path, &[]);
    assert_eq!(opened.status, 303, "{}", opened.text());
    assert_eq!(opened.header("location"), Some("/-/"));
    let set_cookie = opened.header("set-cookie").unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/-/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(!set_cookie.contains(&s.token));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert_eq!(s.get(path, &[]).status, 403, "a link works once");
    let forged = format!("/-/open/{}", "0".repeat(64));
    assert_eq!(s.get(&forged, &[]).status, 403);

    // The cookie unlocks the page, and nothing else.
    let page = s.get("/-/", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"upstreams\""));
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(s.get("/-/", &[]).status, 401);
    for path in [
        "/-/status",
        "/index/config.json",
        "/metrics",
        "/-/policy/acme-core",
    ] {
        assert_eq!(s.get(path, &[("Cookie", &cookie)]).status, 401, "{path}");
    }
    let addr = s.privreg.addr.clone();
    assert_eq!(
        request_status(&addr, "POST", "/-/open", &[("Cookie", &cookie)]),
        401,
        "a session cannot make links"
    );
    assert_eq!(
        request_status(&addr, "POST", "/-/", &[("Cookie", &cookie)]),
        401,
        "the cookie is for GET only"
    );
    // Another Host (DNS rebinding) is refused even with the cookie.
    let port = addr.rsplit_once(':').unwrap().1;
    let evil = format!("attacker.example:{port}");
    assert_eq!(
        s.get("/-/", &[("Cookie", &cookie), ("Host", &evil)]).status,
        421
    );
    // The local token still opens the page directly (as it opens everything).
    assert_eq!(s.get_with_token("/-/").status, 200);

    s.acme.mode("ok");
    assert!(files_holding(s.privreg.root(), &s.token).is_empty());
}
