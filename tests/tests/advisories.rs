//! The RustSec advisory database end to end: a database the test writes in RustSec's own format
//! (a directory laid out like advisory-db), loaded by the daemon with the `rustsec` crate;
//! `privreg audit` on real lockfiles that real cargo wrote against a test registry; a broken
//! database or an unreachable one leaves the last good copy in force.

use std::path::{Path, PathBuf};
use std::process::Output;

use privreg_shared::protocol::{AuditReport, Problem};
use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, locked_packages, tempdir};

/// `vuln` 1.0.0 is affected; 1.0.1 has the fix; 1.1.0 regressed (a backported fix, as RustSec
/// writes it: two `patched` ranges). `clean` has no advisory.
const ADVISORY: &str = r#"```toml
[advisory]
id = "RUSTSEC-2024-0001"
package = "vuln"
date = "2024-03-04"
url = "https://example.invalid/vuln/issues/1"
categories = ["memory-corruption"]
keywords = ["test"]

[versions]
patched = [">= 1.0.1, < 1.1.0", ">= 1.1.1"]
```

# Buffer overflow in vuln

`vuln` before 1.0.1 writes past the end of a buffer.
"#;

/// An informational advisory about `clean` that was withdrawn: never reported.
const WITHDRAWN: &str = r#"```toml
[advisory]
id = "RUSTSEC-2023-0002"
package = "clean"
date = "2023-05-06"
informational = "unmaintained"
withdrawn = "2023-06-01"

[versions]
patched = []
```

# clean is unmaintained

Withdrawn: it is maintained after all.
"#;

/// Writes the advisory database (advisory-db's layout) into a new directory.
fn database(root: &Path) -> PathBuf {
    let db = root.join("advisory-db");
    for (krate, id, text) in [
        ("vuln", "RUSTSEC-2024-0001", ADVISORY),
        ("clean", "RUSTSEC-2023-0002", WITHDRAWN),
    ] {
        let dir = db.join("crates").join(krate);
        std::fs::create_dir_all(&dir).expect("advisory dir");
        std::fs::write(dir.join(format!("{id}.md")), text).expect("advisory file");
    }
    db
}

struct Setup {
    _public: Registry,
    privreg: Privreg,
    sb: Sandbox,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

/// A `crates-io` test registry with `vuln` 1.0.0, 1.0.1, 1.1.0 and `clean` 1.0.0, and a daemon
/// whose `[advisories]` names the test's database (`extra` goes into that table).
fn setup(extra: &str) -> Setup {
    let mut public = Registry::start(RegistryOpts::default());
    for v in ["1.0.0", "1.0.1", "1.1.0"] {
        public.publish(Pkg::new("vuln", v));
    }
    public.publish(Pkg::new("clean", "1.0.0"));
    let dir = tempdir();
    let db = database(dir.path());
    let privreg = Privreg::start(&format!(
        "auth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\n\n[advisories]\ndb = \"{}\"\n{extra}",
        public.index,
        db.display()
    ));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    Setup {
        _public: public,
        privreg,
        sb,
        db,
        _dir: dir,
    }
}

impl Setup {
    /// A project locked (by real cargo) with `deps`; returns its Cargo.lock.
    fn locked(&self, name: &str, deps: &str) -> PathBuf {
        let app = self.sb.project(name, deps, "fn main() {}");
        self.sb.cargo_ok(&app, &["generate-lockfile"]);
        app.join("Cargo.lock")
    }

    fn audit(&self, args: &[&str]) -> Output {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        self.privreg.cli(&all)
    }

    /// `privreg status` once the advisory database shows `advisories` (its own line).
    fn wait_status(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        self.privreg.within(60.0, what, |p| {
            last = String::from_utf8_lossy(&p.cli(&["status"]).stdout).into_owned();
            check(&last)
        });
        last
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn audit_reports_the_advisory_with_its_patched_versions_and_passes_a_clean_lockfile() {
    let s = setup("");
    let old = s.locked("old", "vuln = \"=1.0.0\"\nclean = \"1\"\n");
    assert!(
        locked_packages(old.parent().unwrap()).contains(&("vuln".into(), "1.0.0".into())),
        "the old lockfile holds the affected version"
    );

    let out = s.audit(&[old.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "a finding exits 1:\n{text}");
    assert!(
        text.contains("vuln 1.0.0: RUSTSEC-2024-0001 (vulnerability)")
            && text.contains(">=1.0.1, <1.1.0")
            && text.contains(">=1.1.1"),
        "{text}"
    );
    assert!(
        !text.contains("RUSTSEC-2023-0002"),
        "withdrawn advisories are not findings:\n{text}"
    );

    let out = s.audit(&[old.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: AuditReport = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report.total_findings, 1, "{}", stdout(&out));
    let lock = &report.lockfiles[0];
    assert_eq!(lock.checked, 2);
    assert_eq!(
        lock.skipped.len(),
        1,
        "the project itself is a path package"
    );
    assert_eq!(lock.skipped[0].source, "path");
    let f = &lock.findings[0];
    assert_eq!((f.name.as_str(), f.version.as_str()), ("vuln", "1.0.0"));
    assert_eq!(
        f.problem,
        Problem::Advisory {
            id: "RUSTSEC-2024-0001".into(),
            advisory_kind: "vulnerability".into(),
            patched: vec![">=1.0.1, <1.1.0".into(), ">=1.1.1".into()],
        }
    );
    assert_eq!(report.advisories.count, Some(2));
    assert_eq!(report.advisories.newest.as_deref(), Some("2024-03-04"));

    // The patched version, and a crate without advisories: nothing to report.
    let fixed = s.locked("fixed", "vuln = \"~1.0.1\"\nclean = \"1\"\n");
    let out = s.audit(&[fixed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 findings"), "{}", stdout(&out));
    // The regressed 1.1.0 is affected again.
    let new = s.locked("new", "vuln = \"1\"\n");
    let out = s.audit(&[new.to_str().unwrap(), "--format", "json"]);
    let report: AuditReport = serde_json::from_slice(&out.stdout).expect("one JSON report");
    assert_eq!(report.lockfiles[0].findings[0].version, "1.1.0");
    assert_eq!(out.status.code(), Some(1));

    let status = s.wait_status("status shows the database", |t| {
        t.contains("advisories: 2 from")
    });
    assert!(status.contains("newest 2024-03-04"), "{status}");
    let gauge = s.privreg.metric("privreg_advisories", None);
    assert!(
        (gauge - 2.0).abs() < f64::EPSILON,
        "privreg_advisories {gauge}"
    );
}

#[test]
fn the_advisory_pin_steers_a_fresh_resolution_to_the_patched_version() {
    let s = setup("");
    // The database loads in the background; a resolution before it would not be steered.
    s.wait_status("the database is loaded", |t| {
        t.contains("advisories: 2 from")
    });
    // A lockfile from before the pin, holding an affected version.
    let old = s.locked("old", "vuln = \"=1.0.0\"\n");
    let before = s.privreg.reloads(None);
    std::fs::write(
        s.privreg.config_dir.join("preferences"),
        "Explanation: keep vulnerable versions out of new resolutions\nPackage: *\nPin: advisory\nPin-Priority: -1\n",
    )
    .expect("write preferences");
    s.privreg.wait_reload(before, None, "the advisory pin");
    let status = s.privreg.cli(&["status"]);
    assert!(
        status.status.success(),
        "the pin is in force:\n{}",
        stdout(&status)
    );

    let app = s.locked("app", "vuln = \"1\"\n");
    let vuln: Vec<_> = locked_packages(app.parent().unwrap())
        .into_iter()
        .filter(|(n, _)| n == "vuln")
        .collect();
    assert_eq!(vuln, [("vuln".to_owned(), "1.0.1".to_owned())]);
    // The existing lockfile still fetches (a soft block), and the audit names both the
    // advisory and the stanza.
    s.sb.cargo_ok(old.parent().unwrap(), &["fetch"]);
    let out = s.audit(&[old.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("RUSTSEC-2024-0001"), "{text}");
    assert!(
        text.contains("soft-blocked") && text.contains("preferences:1"),
        "{text}"
    );
}

#[test]
fn a_broken_or_unreachable_database_leaves_the_last_good_copy_in_force() {
    let mut s = setup("refresh = \"1s\"\n");
    s.wait_status("the first copy loads", |t| t.contains("advisories: 2 from"));
    let old = s.locked("old", "vuln = \"=1.0.0\"\n");

    // An advisory file that does not parse: the update is refused, the error shown.
    let bad = s.db.join("crates/broken");
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(
        bad.join("RUSTSEC-2024-0009.md"),
        "```toml\n[advisory\nid = \"RUSTSEC-2024-0009\"\n```\n\n# broken\n",
    )
    .expect("write");
    let status = s.wait_status("status shows the error", |t| {
        t.contains("advisory database was not updated")
    });
    assert!(status.contains("RUSTSEC-2024-0009.md"), "{status}");
    assert!(status.contains("advisories: 2 from"), "{status}");
    let out = s.audit(&[old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("RUSTSEC-2024-0001"),
        "{}",
        stdout(&out)
    );
    assert!(s.privreg.metric("privreg_advisory_db_errors_total", None) >= 1.0);

    // An unreachable git URL (nothing listens there): the same.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}/advisory-db.git", closed.local_addr().unwrap());
    drop(closed);
    let config = std::fs::read_to_string(s.privreg.config_dir.join("config.toml")).unwrap();
    let config = config.replace(
        &format!("db = \"{}\"", s.db.display()),
        &format!("db = \"{url}\""),
    );
    s.privreg.write_config(&config);
    let status = s.wait_status("status names the unreachable URL", |t| {
        t.contains(&format!("cannot fetch {url}"))
    });
    assert!(status.contains("advisories: 2 from"), "{status}");

    // A restart loads the last good copy from the cache, though the source is still down.
    assert!(s.privreg.terminate(), "the daemon stops");
    s.privreg.spawn().expect("the daemon starts again");
    s.wait_status("the cached copy loads", |t| {
        t.contains("advisories: 2 from")
    });
    let out = s.audit(&[old.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("RUSTSEC-2024-0001"),
        "{}",
        stdout(&out)
    );
}
