//! The pin file end to end: real cargo through the daemon while pins change under it (hot
//! reload), edited with `privreg pin`, explained by `privreg policy`.

use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, locked_packages, stderr};

/// `corp` (a private registry, priority 600) and `crates-io` (the public-like one, 500).
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
        "auth = false\n\n[upstreams.corp]\nindex = \"{}\"\npriority = 600\n\n[upstreams.crates-io]\nindex = \"{}\"\npriority = 500\n",
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

impl Setup {
    /// Runs `change` (an edit of the config dir) and waits for the daemon's reload after it (its
    /// `privreg_config_reloads_total` moving past the count read before the change).
    fn change<T>(&self, what: &str, change: impl FnOnce() -> T) -> T {
        let before = self.privreg.reloads(None);
        let out = change();
        self.privreg.wait_reload(before, None, what);
        out
    }

    /// `privreg pin …` (which must succeed), then waits for the reload it causes.
    fn pin(&self, args: &[&str]) -> String {
        self.change(&format!("privreg {args:?}"), || self.privreg.cli_ok(args))
    }

    /// After a reload: `privreg status` reports a config or pin error (non-zero exit). Editors
    /// and `privreg pin` may write in steps, each a reload, so the last step's reload may follow;
    /// the bound is generous and only turns "never" into a failure.
    fn status_reports_an_error(&self) {
        self.privreg.within(30.0, "the error shows in status", |p| {
            !p.cli(&["status"]).status.success()
        });
    }

    /// A fresh resolution of `deps`: the version of `krate` it picks, or cargo's error.
    fn resolve(&self, deps: &str, krate: &str) -> Result<String, String> {
        let app = self.sb.project("app", deps, "fn main() {}");
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

    /// After a reload ([`Setup::change`]): the daemon's index for `path` satisfies `check` (as
    /// for [`Setup::status_reports_an_error`], a later step's reload may still be on its way).
    fn index_becomes(&self, path: &str, what: &str, check: impl Fn(u16, &str) -> bool) {
        self.privreg.within(30.0, what, |p| {
            let r = p.get(path);
            check(r.status, &r.text())
        });
    }
}

#[test]
fn never_guards_a_private_name_and_takes_effect_while_running() {
    let mut s = setup();
    s.public.publish(Pkg::new("acme-old", "1.0.0"));
    assert_eq!(
        s.resolve("acme-old = \"1\"\n", "acme-old").unwrap(),
        "1.0.0"
    );

    s.pin(&[
        "pin",
        "add",
        "--package",
        "acme-* acme_*",
        "--pin",
        "registry crates-io",
        "--priority",
        "never",
        "--explanation",
        "acme crates only ever come from the company registry",
    ]);
    s.index_becomes("/index/ac/me/acme-old", "the never pin", |st, _| st == 404);
    let err = s.resolve("acme-old = \"1\"\n", "acme-old").unwrap_err();
    assert!(err.contains("acme-old"), "{err}");

    let policy = s.privreg.cli_ok(&["policy", "acme-old"]);
    assert!(
        policy.contains("claim never (pin preferences:1)"),
        "{policy}"
    );
    assert!(policy.contains("blocked"), "{policy}");

    // Removing the pin admits it again.
    let list = s.privreg.cli_ok(&["pin", "list"]);
    assert!(list.starts_with("1  preferences:1"), "{list}");
    s.pin(&["pin", "remove", "1"]);
    s.index_becomes("/index/ac/me/acme-old", "removing the pin", |st, _| {
        st == 200
    });
}

#[test]
fn a_negative_pin_yanks_softly() {
    let mut s = setup();
    s.public.publish(Pkg::new("openssl", "0.10.55"));
    s.public.publish(Pkg::new("openssl", "0.10.66"));
    let app = s.sb.project("app", "openssl = \"0.10\"\n", "fn main() {}");
    s.sb.cargo_ok(&app, &["generate-lockfile"]);
    assert!(locked_packages(&app).contains(&("openssl".into(), "0.10.66".into())));

    s.pin(&[
        "pin",
        "add",
        "--package",
        "openssl",
        "--pin",
        "version =0.10.66",
        "--priority",
        "-1",
        "--file",
        "50-openssl",
    ]);
    s.index_becomes("/index/op/en/openssl", "the negative pin", |_, body| {
        body.contains("\"vers\":\"0.10.66\"") && body.contains("\"yanked\":true")
    });
    // The existing lockfile keeps working…
    s.sb.cargo_ok(&app, &["fetch", "--locked"]);
    // …while a new resolution avoids the yanked version.
    assert_eq!(
        s.resolve("openssl = \"0.10\"\n", "openssl").unwrap(),
        "0.10.55"
    );
    let policy = s.privreg.cli_ok(&["policy", "openssl"]);
    assert!(
        policy.contains("yanked-by-pin  [preferences.d/50-openssl.pref:1]"),
        "{policy}"
    );
}

#[test]
fn a_hold_lists_only_the_held_versions() {
    let mut s = setup();
    for v in ["1.37.0", "1.38.0", "1.38.1", "1.39.0"] {
        s.public.publish(Pkg::new("tokio", v));
    }
    assert_eq!(s.resolve("tokio = \"1\"\n", "tokio").unwrap(), "1.39.0");
    s.pin(&[
        "pin",
        "add",
        "--package",
        "tokio",
        "--pin",
        "version >=1.38.0, <1.39.0",
        "--priority",
        "1001",
    ]);
    s.index_becomes("/index/to/ki/tokio", "the hold", |_, body| {
        !body.contains("1.39.0")
    });
    assert_eq!(s.resolve("tokio = \"1\"\n", "tokio").unwrap(), "1.38.1");
    let body = s.privreg.get("/index/to/ki/tokio").text();
    let versions: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["vers"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(versions, ["1.38.0", "1.38.1"]);
}

#[test]
fn a_pin_admits_a_shadowed_upstream_and_a_broken_pin_file_changes_nothing() {
    let mut s = setup();
    s.corp.publish(Pkg::new("serde", "1.0.100"));
    for v in ["1.0.100", "1.0.150", "1.0.210"] {
        s.public.publish(Pkg::new("serde", v));
    }
    assert_eq!(s.resolve("serde = \"1\"\n", "serde").unwrap(), "1.0.100");
    let policy = s.privreg.cli_ok(&["policy", "serde"]);
    assert!(policy.contains("owner: corp"), "{policy}");
    assert!(
        policy.contains("hint: crates-io has newer versions (1.0.150, 1.0.210)"),
        "{policy}"
    );

    s.pin(&[
        "pin",
        "add",
        "--package",
        "serde",
        "--pin",
        "registry crates-io",
        "--priority",
        "600",
    ]);
    s.index_becomes("/index/se/rd/serde", "the admitting pin", |_, body| {
        body.contains("1.0.210")
    });
    assert_eq!(s.resolve("serde = \"1\"\n", "serde").unwrap(), "1.0.210");

    // A broken pin file: the last good pins stay in force and the error is reported.
    let prefs = s.privreg.config_dir.join("preferences");
    let good = std::fs::read_to_string(&prefs).unwrap();
    s.change("a broken pin file", || {
        std::fs::write(
            &prefs,
            format!("{good}\nPackage: serde\nPin: registry crates-io\nPin-Priority: 0\n"),
        )
        .unwrap();
    });
    s.status_reports_an_error();
    let status = s.privreg.cli(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.contains("preferences:7") && out.contains("last good"),
        "{out}"
    );
    assert_eq!(s.resolve("serde = \"1\"\n", "serde").unwrap(), "1.0.210");

    // Fixed: the error clears.
    s.change("the fixed pin file", || {
        std::fs::write(&prefs, &good).unwrap();
    });
    s.privreg.within(30.0, "the error clears", |p| {
        p.cli(&["status"]).status.success()
    });
}

#[test]
fn pin_add_refuses_an_invalid_stanza_and_writes_nothing() {
    let s = setup();
    s.pin(&[
        "pin",
        "add",
        "--package",
        "serde",
        "--pin",
        "registry corp",
        "--priority",
        "700",
    ]);
    let before = std::fs::read(s.privreg.config_dir.join("preferences")).unwrap();
    let out = s.privreg.cli(&[
        "pin",
        "add",
        "--package",
        "*",
        "--pin",
        "version >=1",
        "--priority",
        "5",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
    let out = s.privreg.cli(&[
        "pin",
        "add",
        "--package",
        "serde",
        "--pin",
        "registry corp",
        "--priority",
        "0",
    ]);
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read(s.privreg.config_dir.join("preferences")).unwrap(),
        before
    );
}

#[test]
fn config_changes_apply_while_running_and_a_broken_config_changes_nothing() {
    let mut s = setup();
    s.corp.publish(Pkg::new("serde", "1.0.100"));
    for v in ["1.0.100", "1.0.210"] {
        s.public.publish(Pkg::new("serde", v));
    }
    assert_eq!(s.resolve("serde = \"1\"\n", "serde").unwrap(), "1.0.100");

    // corp drops below crates-io: crates-io owns serde now.
    let path = s.privreg.config_dir.join("config.toml");
    let good = std::fs::read_to_string(&path)
        .unwrap()
        .replace("priority = 600", "priority = 400");
    s.change("the new priorities", || {
        std::fs::write(&path, &good).unwrap();
    });
    s.index_becomes("/index/se/rd/serde", "the new priorities", |_, body| {
        body.contains("1.0.210")
    });
    assert_eq!(s.resolve("serde = \"1\"\n", "serde").unwrap(), "1.0.210");

    // A broken config.toml: the last good one stays in force, the error names file and line.
    s.change("a broken config.toml", || {
        std::fs::write(
            &path,
            format!(
                "{good}\n[upstreams.extra]\nindex = \"sparse+http://127.0.0.1:1/\"\nbogus = 1\n"
            ),
        )
        .unwrap();
    });
    s.status_reports_an_error();
    let out = String::from_utf8_lossy(&s.privreg.cli(&["status"]).stdout).into_owned();
    assert!(
        out.contains("config.toml:") && out.contains("bogus"),
        "{out}"
    );
    assert!(
        s.privreg.log().contains("configuration not reloaded"),
        "{}",
        s.privreg.log()
    );
    assert_eq!(s.resolve("serde = \"1\"\n", "serde").unwrap(), "1.0.210");
}
