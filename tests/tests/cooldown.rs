//! Issue 17's release-age cooldown end to end: real cargo through the daemon, upstreams whose
//! index lines carry `pubtime` (some backdated) and one whose lines do not (dated by when privreg
//! first saw each version), with the cooldown written by `privreg pin add`.

use std::time::{Duration, Instant, SystemTime};

use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, locked_packages, stderr};

/// `corp` (private, no `pubtime`, priority 600) and `crates-io` (with `pubtime`, 500), both
/// with a long `ttl`: nothing is revalidated unless a test asks, so what changes a decision is
/// time alone.
struct Setup {
    corp: Registry,
    public: Registry,
    privreg: Privreg,
    sb: Sandbox,
}

fn setup() -> Setup {
    let corp = Registry::start(RegistryOpts {
        alternative: true,
        ..RegistryOpts::default()
    });
    let public = Registry::start(RegistryOpts::default());
    let privreg = Privreg::start(&format!(
        "auth = false\n\n[upstreams.corp]\nindex = \"{}\"\npriority = 600\nttl = \"1h\"\n\n\
         [upstreams.crates-io]\nindex = \"{}\"\npriority = 500\nttl = \"1h\"\n",
        corp.index, public.index
    ));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    Setup {
        corp,
        public,
        privreg,
        sb,
    }
}

/// `t` in cargo's `pubtime` format, `YYYY-MM-DDTHH:MM:SSZ`.
fn pubtime(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A library whose code says its version, so that a build shows which one it got.
fn lib(name: &str, vers: &str) -> Pkg {
    Pkg::new(name, vers).lib(&format!("pub const VERSION: &str = \"{vers}\";\n"))
}

impl Setup {
    /// `privreg pin add …` (which must succeed), then waits for the reload it causes.
    fn pin_add(&self, package: &str, pin: &str, priority: &str) -> String {
        let before = self.privreg.reloads(None);
        let out = self.privreg.cli_ok(&[
            "pin",
            "add",
            "--package",
            package,
            "--pin",
            pin,
            "--priority",
            priority,
        ]);
        self.privreg.wait_reload(before, None, "the new pin");
        out
    }

    /// A fresh resolution of `deps` in project `name`: the version of `krate` it picks, or
    /// cargo's error.
    fn resolve(&self, name: &str, deps: &str, krate: &str) -> Result<String, String> {
        let app = self.sb.project(name, deps, "fn main() {}");
        let _ = std::fs::remove_file(app.join("Cargo.lock"));
        let out = self.sb.cargo(&app, &["generate-lockfile"]);
        if !out.status.success() {
            return Err(stderr(&out));
        }
        Ok(locked_packages(&app)
            .into_iter()
            .find(|(n, _)| n == krate)
            .expect("crate in Cargo.lock")
            .1)
    }

    /// The daemon's layered index line of `krate` `vers`, as JSON.
    fn line(&self, path: &str, vers: &str) -> serde_json::Value {
        let r = self.privreg.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.text()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("index line"))
            .find(|l| l["vers"] == vers)
            .unwrap_or_else(|| panic!("{path} has no {vers}: {}", r.text()))
    }
}

#[test]
fn a_cooldown_steers_new_resolutions_keeps_lockfiles_working_and_ends_by_itself() {
    let mut s = setup();
    let (now, published) = (SystemTime::now(), Instant::now());
    let old = pubtime(now - Duration::from_hours(400 * 24));
    // Whole seconds: the young version is up to a second older than `published` says.
    let young = pubtime(now);
    s.public.publish(lib("left-pad", "1.0.0").pubtime(&old));
    s.public.publish(lib("left-pad", "1.1.0").pubtime(&young));

    // Before the cooldown, the young version is what cargo picks; that lockfile is kept.
    let main = "fn main() { println!(\"{}\", left_pad::VERSION); }";
    let locked = s.sb.project("locked", "left-pad = \"1\"\n", main);
    s.sb.cargo_ok(&locked, &["generate-lockfile"]);
    assert!(locked_packages(&locked).contains(&("left-pad".into(), "1.1.0".into())));

    // A cooldown much longer than the test: a new resolution takes the older version…
    let added = s.pin_add("*", "age <1h", "-1");
    assert!(added.starts_with("added stanza at preferences:"), "{added}");
    assert_eq!(
        s.resolve("fresh", "left-pad = \"1\"\n", "left-pad")
            .unwrap(),
        "1.0.0"
    );
    let line = s.line("/index/le/ft/left-pad", "1.1.0");
    assert_eq!(line["yanked"], true);
    // …the `pubtime` passes through byte for byte on the rewritten line…
    let body = s.privreg.get("/index/le/ft/left-pad").text();
    assert!(body.contains(&format!("\"pubtime\":\"{young}\"")), "{body}");
    // …and the lockfile that holds the young version still fetches and builds.
    let out = s.sb.cargo_ok(&locked, &["run", "--quiet"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.1.0");

    let policy = s.privreg.cli_ok(&["policy", "left-pad"]);
    let young_row = policy
        .lines()
        .find(|l| l.trim_start().starts_with("1.1.0"))
        .unwrap_or_else(|| panic!("{policy}"));
    assert!(
        young_row.contains("yanked-by-pin  [preferences:1]") && young_row.contains("(pubtime)"),
        "{policy}"
    );
    let old_row = policy
        .lines()
        .find(|l| l.trim_start().starts_with("1.0.0"))
        .unwrap_or_else(|| panic!("{policy}"));
    assert!(
        old_row.contains("served") && old_row.contains("age 57w 1d (pubtime)"),
        "{policy}"
    );

    // A short cooldown: the young version is held back until it has passed, then resolves with
    // nothing else changing (no revalidation: the ttl is an hour).
    let before = s.privreg.reloads(None);
    std::fs::write(
        s.privreg.config_dir.join("preferences"),
        "Package: *\nPin: age <25s\nPin-Priority: -1\n",
    )
    .unwrap();
    s.privreg.wait_reload(before, None, "the short cooldown");
    if published.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            s.resolve("fresh", "left-pad = \"1\"\n", "left-pad")
                .unwrap(),
            "1.0.0"
        );
    }
    let requests_before = s.upstream_requests();
    let until = published + Duration::from_mins(1);
    loop {
        let picked = s
            .resolve("fresh", "left-pad = \"1\"\n", "left-pad")
            .unwrap();
        if picked == "1.1.0" {
            break;
        }
        assert!(
            Instant::now() < until,
            "1.1.0 still held back {:?} after it was published",
            published.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        published.elapsed() >= Duration::from_secs(24) - Duration::from_millis(100),
        "released after {:?}, before the cooldown passed",
        published.elapsed()
    );
    assert_eq!(s.line("/index/le/ft/left-pad", "1.1.0")["yanked"], false);
    assert_eq!(
        s.upstream_requests(),
        requests_before,
        "time alone released it"
    );
}

#[test]
fn without_pubtime_versions_are_dated_when_privreg_first_sees_them() {
    let mut s = setup();
    s.corp.publish(lib("acme-core", "1.0.0"));
    s.corp.publish(lib("acme-core", "1.1.0"));
    s.pin_add("*", "age <1h", "-1");

    // Present at privreg's first fetch of the file: old, not blocked (a fresh install does not
    // hold everything back).
    let deps = "acme-core = \"1\"\n";
    assert_eq!(s.resolve("app", deps, "acme-core").unwrap(), "1.1.0");

    // A version that appears in a revalidation is dated then: young, held back.
    s.corp.publish(lib("acme-core", "1.2.0"));
    let refreshed = s.privreg.cli_ok(&["refresh", "acme-core"]);
    assert!(refreshed.contains("1 changed"), "{refreshed}");
    assert_eq!(s.line("/index/ac/me/acme-core", "1.2.0")["yanked"], true);
    assert_eq!(s.line("/index/ac/me/acme-core", "1.1.0")["yanked"], false);
    assert_eq!(s.resolve("app", deps, "acme-core").unwrap(), "1.1.0");
    let policy = s.privreg.cli_ok(&["policy", "acme-core"]);
    let row = |v: &str| {
        policy
            .lines()
            .find(|l| l.trim_start().starts_with(v))
            .unwrap_or_else(|| panic!("{policy}"))
            .to_owned()
    };
    assert!(row("1.2.0").contains("(first seen)"), "{policy}");
    assert!(row("1.2.0").contains("yanked-by-pin"), "{policy}");
    assert!(row("1.1.0").contains("old (no pubtime"), "{policy}");

    // The date is durable: after a restart the version is still young.
    assert!(s.privreg.terminate());
    s.privreg.spawn().expect("the daemon starts again");
    s.sb.use_privreg(&s.privreg);
    assert_eq!(s.line("/index/ac/me/acme-core", "1.2.0")["yanked"], true);
    assert_eq!(s.resolve("app", deps, "acme-core").unwrap(), "1.1.0");

    // A shorter cooldown (a pin edit) lets it through once it has been seen long enough.
    let before = s.privreg.reloads(None);
    std::fs::write(
        s.privreg.config_dir.join("preferences"),
        "Package: *\nPin: age <1s\nPin-Priority: -1\n",
    )
    .unwrap();
    s.privreg.wait_reload(before, None, "the shorter cooldown");
    s.privreg.within(10.0, "1.2.0 released", |p| {
        p.get("/index/ac/me/acme-core")
            .text()
            .lines()
            .any(|l| l.contains("\"vers\":\"1.2.0\"") && l.contains("\"yanked\":false"))
    });
    assert_eq!(s.resolve("app", deps, "acme-core").unwrap(), "1.2.0");

    // `never` hides young versions instead of yanking them; a named stanza exempts a crate.
    let before = s.privreg.reloads(None);
    std::fs::write(
        s.privreg.config_dir.join("preferences"),
        "Package: *\nPin: age <1h\nPin-Priority: never\n",
    )
    .unwrap();
    s.privreg.wait_reload(before, None, "the hiding cooldown");
    let body = s.privreg.get("/index/ac/me/acme-core").text();
    assert!(
        !body.contains("\"vers\":\"1.2.0\"") && body.contains("\"vers\":\"1.1.0\""),
        "{body}"
    );
    s.pin_add("acme-*", "registry corp", "600");
    let body = s.privreg.get("/index/ac/me/acme-core").text();
    assert!(body.contains("\"vers\":\"1.2.0\""), "{body}");
}

impl Setup {
    /// How many requests the daemon has made to its upstreams.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a counter: a whole number, not negative, far below 2^52"
    )]
    fn upstream_requests(&self) -> u64 {
        self.privreg.metric("privreg_upstream_requests_total", None) as u64
    }
}
