//! The layered view with real cargo: priorities, cross-registry dependencies, the dependency
//! confusion guard, fail-closed, and the daemon's own endpoints.

use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, locked_packages, stderr};

const PUBDEP_LIB: &str = "pub fn name() -> &'static str { \"pubdep\" }";
const ACME_LIB: &str =
    "pub fn hello() -> String { format!(\"acme-core uses {}\", pubdep::name()) }";

/// A public-like upstream with `pubdep` and `other`, and a hijack attempt on `acme-core`; a
/// private upstream `acme` whose `acme-core` depends on the public `pubdep`.
fn two_upstreams(acme_faults: bool) -> (Registry, Registry) {
    let mut public = Registry::start(RegistryOpts::default());
    public.publish(Pkg::new("pubdep", "1.0.0").lib(PUBDEP_LIB));
    public.publish(Pkg::new("other", "1.0.0"));
    public.publish(Pkg::new("acme-core", "9.9.9").lib("compile_error!(\"hijacked\");"));
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        watch: if acme_faults {
            vec!["acme-core".into()]
        } else {
            vec![]
        },
        ..RegistryOpts::default()
    });
    acme.publish(
        Pkg::new("acme-core", "0.2.0")
            .dep("pubdep", "^1")
            .lib(ACME_LIB),
    );
    (public, acme)
}

fn config(acme: &Registry, public: &Registry, extra_acme: &str) -> String {
    format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n{extra_acme}\n[upstreams.crates-io]\nindex = \"{}\"\npriority = 500\n",
        acme.index, public.index
    )
}

const MAIN: &str = "fn main() { println!(\"{}\", acme_core::hello()); }";

#[test]
fn private_crate_with_public_dependency_resolves_and_builds() {
    let (public, acme) = two_upstreams(false);
    let privreg = Privreg::start(&config(&acme, &public, ""));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "acme-core = \"*\"\nother = \"1\"\n", MAIN);

    let out = sb.cargo_ok(&app, &["run", "--quiet"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "acme-core uses pubdep"
    );

    let mut locked = locked_packages(&app);
    locked.sort();
    assert_eq!(
        locked,
        [
            ("acme-core", "0.2.0"),
            ("app", "0.1.0"),
            ("other", "1.0.0"),
            ("pubdep", "1.0.0")
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );

    // The merged index file: acme's line only, its cross-registry dependency made local.
    let idx = privreg.get("/index/ac/me/acme-core");
    assert_eq!(idx.status, 200);
    let body = idx.text();
    assert_eq!(body.lines().count(), 1, "{body}");
    let line: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(line["vers"], "0.2.0");
    assert!(line["deps"][0]["registry"].is_null(), "{line}");
    assert!(!body.contains("9.9.9"));
}

#[test]
fn fail_closed_when_the_owner_fails_and_nothing_is_cached() {
    let (public, mut acme) = two_upstreams(true);
    acme.mode("500");
    let privreg = Privreg::start(&config(&acme, &public, ""));
    let r = privreg.get("/index/ac/me/acme-core");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("upstream acme answered 500"),
        "{}",
        r.text()
    );
    // Public crates still resolve while the private registry is down.
    assert_eq!(privreg.get("/index/pu/bd/pubdep").status, 200);

    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "acme-core = \"*\"\n", MAIN);
    let out = sb.cargo(&app, &["generate-lockfile"]);
    assert!(
        !out.status.success(),
        "resolution must fail, not fall through to 9.9.9"
    );
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
    assert!(!app.join("Cargo.lock").exists());
}

#[test]
fn fail_closed_on_timeout_and_last_good_copy_when_cached() {
    let (public, mut acme) = two_upstreams(true);
    // `stale = "0s"`: every request revalidates first, so the timeout path is the one taken.
    let privreg = Privreg::start(&config(
        &acme,
        &public,
        "ttl = \"0s\"\nstale = \"0s\"\ntimeout = \"1s\"\n",
    ));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "acme-core = \"*\"\n", MAIN);
    sb.cargo_ok(&app, &["generate-lockfile"]);

    // Now acme hangs past the timeout: the cached copy is served (ttl 0 forces a revalidation).
    acme.mode("hang");
    sb.fresh_cargo_home();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    sb.cargo_ok(&app, &["generate-lockfile"]);
    assert!(locked_packages(&app).contains(&("acme-core".into(), "0.2.0".into())));
    assert!(
        privreg.log().contains("did not answer"),
        "{}",
        privreg.log()
    );
}

/// The same layering with Kellnr as the private registry: its lines carry the public registry's
/// URL for dependencies, unquoted `ETags` and non-HTTP dates, and it ignores `If-None-Match`.
#[test]
fn kellnr_as_the_private_upstream() {
    let mut public = Registry::start(RegistryOpts::default());
    public.publish(Pkg::new("pubdep", "1.0.0").lib(PUBDEP_LIB));
    public.publish(Pkg::new("acme-core", "9.9.9").lib("compile_error!(\"hijacked\");"));
    let mut kellnr = privreg_tests::kellnr::Kellnr::start(false, Some(&public.index));
    kellnr.publish(
        &Pkg::new("acme-core", "0.2.0")
            .dep("pubdep", "^1")
            .lib(ACME_LIB),
    );
    let privreg = Privreg::start(&format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\nttl = \"0s\"\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        kellnr.index(),
        public.index
    ));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "acme-core = \"*\"\n", MAIN);
    let out = sb.cargo_ok(&app, &["run", "--quiet"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "acme-core uses pubdep"
    );
    assert!(locked_packages(&app).contains(&("acme-core".into(), "0.2.0".into())));
    let body = privreg.get("/index/ac/me/acme-core").text();
    let line: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert!(line["deps"][0]["registry"].is_null(), "{line}");

    // Kellnr stopped: resolution and fetch still work from privreg's cache, on a new CARGO_HOME.
    kellnr.stop();
    public.stop();
    sb.fresh_cargo_home();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    sb.cargo_ok(&app, &["generate-lockfile"]);
    sb.cargo_ok(&app, &["fetch"]);
}
