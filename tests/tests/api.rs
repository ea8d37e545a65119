//! The registry API through the daemon (publish, yank, search) and per-upstream views with
//! portable lockfiles, with real cargo against Kellnr and cargo's test registry.

use privreg_tests::kellnr::Kellnr;
use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, locked_packages, stderr};

/// Cargo pointed at the daemon, with a token for `--registry privreg` operations (the daemon
/// runs with `auth = false` here and uses the upstream's own token upstream).
fn sandbox(privreg: &Privreg) -> Sandbox {
    let sb = Sandbox::new();
    sb.write_cargo_config(&format!(
        "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"{}\"\ncredential-provider = [\"cargo:token\"]\n\n[net]\nretry = 0\n",
        privreg.index_url()
    ));
    sb
}

fn cargo_with_token(sb: &Sandbox, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    sb.cargo_env(
        dir,
        args,
        &[("CARGO_REGISTRIES_PRIVREG_TOKEN", "cargo-side-token")],
    )
}

#[test]
fn publish_and_yank_through_the_daemon() {
    let public = Registry::start(RegistryOpts::default());
    let kellnr = Kellnr::start(false, None);
    let mut privreg = Privreg::new(&format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\npublish = true\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        kellnr.index(),
        public.index
    ));
    privreg.env("PRIVREG_TOKEN_ACME", &kellnr.token);
    privreg.spawn().unwrap();
    let sb = sandbox(&privreg);
    // Looked up before it exists: "absent" is cached…
    assert_eq!(privreg.get("/index/ac/me/acme-new").status, 404);

    // …yet publishing through the daemon makes the new version visible at once.
    for v in ["0.1.0", "0.2.0"] {
        let krate = sb.library("acme-new", v);
        let out = cargo_with_token(
            &sb,
            &krate,
            &["publish", "--registry", "privreg", "--no-verify"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let app = sb.project(
        "app",
        "acme-new = \"0\"\n",
        "fn main() { println!(\"{}\", acme_new::VERSION); }",
    );
    let out = sb.cargo_ok(&app, &["run", "--quiet"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0.2.0");

    // Yank through the daemon: a fresh resolution avoids the yanked version.
    let out = cargo_with_token(
        &sb,
        &app,
        &["yank", "--registry", "privreg", "acme-new@0.2.0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    sb.cargo_ok(&app, &["generate-lockfile"]);
    assert!(locked_packages(&app).contains(&("acme-new".into(), "0.1.0".into())));
}

#[test]
fn publish_without_a_target_names_the_config_key() {
    let public = Registry::start(RegistryOpts::default());
    let privreg = Privreg::start(&format!(
        "auth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        public.index
    ));
    let sb = sandbox(&privreg);
    let krate = sb.library("lonely", "0.1.0");
    let out = cargo_with_token(
        &sb,
        &krate,
        &["publish", "--registry", "privreg", "--no-verify"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("set `publish = true` on one upstream"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn search_merges_upstreams_and_the_owner_row_wins() {
    let acme = Kellnr::start(false, None);
    let other = Kellnr::start(false, None);
    acme.publish(&Pkg::new("srch-acme", "1.0.0"));
    acme.publish(&Pkg::new("srch-shared", "2.0.0"));
    other.publish(&Pkg::new("srch-other", "1.0.0"));
    other.publish(&Pkg::new("srch-shared", "1.0.0"));
    let privreg = Privreg::start(&format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n\n[upstreams.other]\nindex = \"{}\"\npriority = 500\n",
        acme.index(),
        other.index()
    ));
    let sb = sandbox(&privreg);
    let out = sb.cargo_ok(&sb.root, &["search", "--registry", "privreg", "srch"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("srch-acme = \"1.0.0\""), "{text}");
    assert!(text.contains("srch-other = \"1.0.0\""), "{text}");
    assert!(text.contains("srch-shared = \"2.0.0\""), "{text}");
    assert_eq!(text.matches("srch-shared").count(), 1, "{text}");
}

#[test]
fn a_registry_dependency_resolves_through_its_upstream_view_and_the_lockfile_stays_portable() {
    let mut public = Registry::start(RegistryOpts::default());
    public.publish(Pkg::new("pubdep", "1.0.0").lib("pub fn name() -> &'static str { \"pubdep\" }"));
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        ..RegistryOpts::default()
    });
    acme.publish(
        Pkg::new("acme-core", "0.2.0")
            .dep("pubdep", "^1")
            .lib("pub fn hello() -> String { format!(\"acme-core uses {}\", pubdep::name()) }"),
    );
    let privreg = Privreg::start(&format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        acme.index, public.index
    ));
    let sb = Sandbox::new();
    // `privreg cargo-config` gives cargo the layered view for crates-io and, for acme, its exact
    // URL replaced by acme's own view.
    let snippet = privreg.cli_ok(&["cargo-config"]);
    assert!(
        snippet.contains(&format!("registry = \"{}\"", acme.index)),
        "{snippet}"
    );
    assert!(snippet.contains("/upstream/acme/index/"), "{snippet}");
    assert!(!snippet.contains("upstream/crates-io"), "{snippet}");
    sb.write_cargo_config(&format!("{snippet}\n[net]\nretry = 0\n"));
    let app = sb.project(
        "app",
        "acme-core = { version = \"0.2\", registry = \"acme\" }\n",
        "fn main() { println!(\"{}\", acme_core::hello()); }",
    );
    let out = sb.cargo_ok(&app, &["run", "--quiet"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "acme-core uses pubdep"
    );
    let lock = std::fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains(&format!("source = \"{}\"", acme.index)),
        "{lock}"
    );
    assert!(!lock.contains(&privreg.addr), "{lock}");
    assert!(
        privreg
            .log()
            .contains("/upstream/acme/index/ac/me/acme-core"),
        "{}",
        privreg.log()
    );

    // The view passes acme's line through unchanged (its `registry` URL included).
    let view = privreg.get("/upstream/acme/index/ac/me/acme-core").text();
    let raw = std::fs::read_to_string(acme.index_file("acme-core")).unwrap();
    assert_eq!(view, raw);

    // Offline once cached, on a fresh CARGO_HOME.
    acme.stop();
    public.stop();
    sb.fresh_cargo_home();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    sb.cargo_ok(&app, &["generate-lockfile"]);
    sb.cargo_ok(&app, &["fetch"]);
}
