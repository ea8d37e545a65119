//! The README's promises about the registry API and per-upstream views, driven by the real
//! `cargo` through the daemon against cargo's own test registry server:
//!
//! - `cargo owner` and `cargo yank` (and `--undo`) go to the upstream that owns the crate, with
//!   that upstream's token, even when another upstream is the one `cargo publish` goes to;
//! - `never` and negative pins, and the `origin` selector, apply to a per-upstream view
//!   (`registry = "…"` dependencies), which cargo reaches through source replacement;
//! - `cargo publish` through a per-upstream view goes to that upstream.

use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, locked_packages, stderr};

/// Runs cargo with `env` and panics with its output unless it succeeds; returns stdout.
fn cargo_ok_env(
    sb: &Sandbox,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let out = sb.cargo_env(dir, args, env);
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out)
}

/// The version of `krate` a fresh resolution of `deps` picks.
fn resolve(sb: &Sandbox, deps: &str, krate: &str) -> String {
    let app = sb.project("app", deps, "fn main() {}");
    let _ = std::fs::remove_file(app.join("Cargo.lock"));
    sb.cargo_ok(&app, &["generate-lockfile"]);
    locked_packages(&app)
        .into_iter()
        .find(|(n, _)| n == krate)
        .unwrap_or_else(|| panic!("{krate} not in Cargo.lock"))
        .1
}

/// The cargo-side token for `--registry privreg` operations (the daemon runs with `auth =
/// false` and uses each upstream's own token upstream).
const CARGO_TOKEN: (&str, &str) = ("CARGO_REGISTRIES_PRIVREG_TOKEN", "cargo-side-token");

#[test]
fn owner_and_yank_undo_go_to_the_owning_upstream_not_the_publish_one() {
    // `corp` owns `corp-tool` (priority 600); `sink` (500) is where `cargo publish` goes.
    // Both auth-required, so that their tokens belong on every request (see
    // `auth::an_upstream_token_stays_off_an_index_that_does_not_require_it`).
    let mut corp = Registry::start(RegistryOpts {
        alternative: true,
        auth_required: true,
        api: vec!["corp-tool@1.0.0@1.1.0".into()],
        ..RegistryOpts::default()
    });
    corp.publish(Pkg::new("corp-tool", "1.0.0"));
    corp.publish(Pkg::new("corp-tool", "1.1.0"));
    let mut sink = Registry::start(RegistryOpts {
        alternative: true,
        auth_required: true,
        api: vec!["corp-tool@1.0.0@1.1.0".into()],
        ..RegistryOpts::default()
    });
    let mut privreg = Privreg::new(&format!(
        "auth = false\n\n[upstreams.corp]\nindex = \"{}\"\npriority = 600\n\n[upstreams.sink]\nindex = \"{}\"\npriority = 500\npublish = true\n",
        corp.index, sink.index
    ));
    privreg.env("PRIVREG_TOKEN_CORP", &corp.token);
    privreg.env("PRIVREG_TOKEN_SINK", &sink.token);
    privreg.spawn().unwrap();
    let sb = Sandbox::new();
    sb.write_cargo_config(&format!(
        "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"{}\"\ncredential-provider = [\"cargo:token\"]\n\n[net]\nretry = 0\n",
        privreg.index_url()
    ));
    let deps = "corp-tool = \"1\"\n";
    assert_eq!(resolve(&sb, deps, "corp-tool"), "1.1.0");
    let dir = sb.root.clone();

    // Owners: added, listed and removed at corp.
    cargo_ok_env(
        &sb,
        &dir,
        &[
            "owner",
            "--add",
            "alice",
            "corp-tool",
            "--registry",
            "privreg",
        ],
        &[CARGO_TOKEN],
    );
    let list = cargo_ok_env(
        &sb,
        &dir,
        &["owner", "--list", "corp-tool", "--registry", "privreg"],
        &[CARGO_TOKEN],
    );
    assert!(
        list.contains("first-owner") && list.contains("alice"),
        "{list}"
    );
    cargo_ok_env(
        &sb,
        &dir,
        &[
            "owner",
            "--remove",
            "alice",
            "corp-tool",
            "--registry",
            "privreg",
        ],
        &[CARGO_TOKEN],
    );
    let list = cargo_ok_env(
        &sb,
        &dir,
        &["owner", "--list", "corp-tool", "--registry", "privreg"],
        &[CARGO_TOKEN],
    );
    assert!(!list.contains("alice"), "{list}");

    // Yank: corp's index line changes, and a fresh resolution through the daemon avoids it at
    // once (the daemon drops its cached copy after a yank it forwarded).
    cargo_ok_env(
        &sb,
        &dir,
        &[
            "yank",
            "--version",
            "1.1.0",
            "corp-tool",
            "--registry",
            "privreg",
        ],
        &[CARGO_TOKEN],
    );
    assert_eq!(resolve(&sb, deps, "corp-tool"), "1.0.0");
    // Undo: back at once too.
    cargo_ok_env(
        &sb,
        &dir,
        &[
            "yank",
            "--undo",
            "--version",
            "1.1.0",
            "corp-tool",
            "--registry",
            "privreg",
        ],
        &[CARGO_TOKEN],
    );
    assert_eq!(resolve(&sb, deps, "corp-tool"), "1.1.0");

    // Every call reached corp, with corp's token; the publish upstream saw none of them.
    let seen = corp.api_requests();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_ascii_uppercase(),
                r["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let owners = "/api/v1/crates/corp-tool/owners".to_owned();
    assert_eq!(
        calls,
        [
            ("PUT".into(), owners.clone()),
            ("GET".into(), owners.clone()),
            ("DELETE".into(), owners.clone()),
            ("GET".into(), owners),
            (
                "DELETE".into(),
                "/api/v1/crates/corp-tool/1.1.0/yank".into()
            ),
            ("PUT".into(), "/api/v1/crates/corp-tool/1.1.0/unyank".into()),
        ],
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .all(|r| r["authorization"].as_str() == Some(corp.token.as_str())),
        "{seen:#?}"
    );
    assert_eq!(sink.api_requests(), Vec::<serde_json::Value>::new());
}

/// `acme` (a private registry) reached through its per-upstream view, as `privreg cargo-config`
/// sets it up; `crates-io` the public-like one.
struct View {
    acme: Registry,
    _public: Registry,
    privreg: Privreg,
    sb: Sandbox,
}

fn view_setup() -> View {
    let public = Registry::start(RegistryOpts::default());
    // Auth-required, so that acme's token (which the daemon needs to publish there) belongs on
    // every request to acme.
    let acme = Registry::start(RegistryOpts {
        alternative: true,
        auth_required: true,
        ..RegistryOpts::default()
    });
    let mut privreg = Privreg::new(&format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        acme.index, public.index
    ));
    // acme's token, for publishing there.
    privreg.env("PRIVREG_TOKEN_ACME", &acme.token);
    privreg.spawn().unwrap();
    let sb = Sandbox::new();
    let snippet = privreg.cli_ok(&["cargo-config"]);
    assert!(snippet.contains("/upstream/acme/index/"), "{snippet}");
    sb.write_cargo_config(&format!("{snippet}\n[net]\nretry = 0\n"));
    View {
        acme,
        _public: public,
        privreg,
        sb,
    }
}

impl View {
    /// A fresh resolution of `acme-lib` as a `registry = "acme"` dependency: the version, or
    /// cargo's error.
    fn resolve(&self, req: &str) -> Result<String, String> {
        let app = self.sb.project(
            "app",
            &format!("acme-lib = {{ version = \"{req}\", registry = \"acme\" }}\n"),
            "fn main() {}",
        );
        let _ = std::fs::remove_file(app.join("Cargo.lock"));
        let out = self.sb.cargo(&app, &["generate-lockfile"]);
        if !out.status.success() {
            return Err(stderr(&out));
        }
        let lock = std::fs::read_to_string(app.join("Cargo.lock")).unwrap();
        assert!(
            lock.contains(&format!("source = \"{}\"", self.acme.index)),
            "the lockfile names acme's own URL:\n{lock}"
        );
        Ok(locked_packages(&app)
            .into_iter()
            .find(|(n, _)| n == "acme-lib")
            .expect("acme-lib in Cargo.lock")
            .1)
    }

    /// `privreg pin add …`, then waits for the daemon's reload after it.
    fn pin(&self, args: &[&str]) {
        let before = self.privreg.reloads(None);
        let mut all = vec!["pin", "add"];
        all.extend_from_slice(args);
        self.privreg.cli_ok(&all);
        self.privreg.wait_reload(before, None, "privreg pin add");
    }

    /// Waits (after a reload) until the view's file for `acme-lib` satisfies `check`.
    fn view_becomes(&self, what: &str, check: impl Fn(u16, &str) -> bool) {
        self.privreg.within(30.0, what, |p| {
            let r = p.get("/upstream/acme/index/ac/me/acme-lib");
            check(r.status, &r.text())
        });
    }
}

#[test]
fn negative_and_never_pins_apply_to_a_per_upstream_view() {
    let mut v = view_setup();
    v.acme.publish(Pkg::new("acme-lib", "1.0.0"));
    v.acme.publish(Pkg::new("acme-lib", "1.1.0"));
    assert_eq!(v.resolve("1").unwrap(), "1.1.0");

    // A negative pin on a version: listed as yanked in the view, so new resolutions avoid it.
    v.pin(&[
        "--package",
        "acme-lib",
        "--pin",
        "version =1.1.0",
        "--priority",
        "-1",
    ]);
    v.view_becomes("the negative pin in the view", |_, body| {
        body.lines()
            .any(|l| l.contains("\"vers\":\"1.1.0\"") && l.contains("\"yanked\":true"))
    });
    assert_eq!(v.resolve("1").unwrap(), "1.0.0");

    // `never` on the whole upstream for this name: the view has nothing to offer.
    v.pin(&[
        "--package",
        "acme-lib",
        "--pin",
        "registry acme",
        "--priority",
        "never",
    ]);
    v.view_becomes("the never pin in the view", |status, body| {
        status == 404 || !body.contains("acme-lib")
    });
    let err = v.resolve("1").unwrap_err();
    assert!(err.contains("acme-lib"), "{err}");
}

#[test]
fn the_origin_selector_applies_to_a_per_upstream_view() {
    let mut v = view_setup();
    v.acme.publish(Pkg::new("acme-lib", "1.0.0"));
    v.acme.publish(Pkg::new("acme-lib", "2.0.0"));
    assert_eq!(v.resolve("*").unwrap(), "2.0.0");

    // acme's index host is 127.0.0.1: an `origin` pin on it blocks 2.0.0 there.
    v.pin(&[
        "--package",
        "acme-lib",
        "--pin",
        "origin 127.0.0.*; version >=2",
        "--priority",
        "never",
    ]);
    v.view_becomes("the origin pin in the view", |_, body| {
        body.contains("\"vers\":\"1.0.0\"") && !body.contains("\"vers\":\"2.0.0\"")
    });
    assert_eq!(v.resolve("*").unwrap(), "1.0.0");
    let policy = v.privreg.cli_ok(&["policy", "acme-lib"]);
    assert!(policy.contains("blocked"), "{policy}");
}

#[test]
fn publish_through_a_per_upstream_view_goes_to_that_upstream() {
    let v = view_setup();
    // The view is a registry of its own in cargo's config (`[registries.privreg-acme]`), so
    // `cargo publish --registry privreg-acme` sends the crate to the view's API. The cargo-side
    // token comes from cargo's own provider here (the daemon runs with `auth = false`).
    let config = std::fs::read_to_string(v.sb.cargo_home.join("config.toml")).unwrap();
    assert!(config.contains("[registries.privreg-acme]"), "{config}");
    assert_eq!(
        v.privreg.get("/upstream/acme/index/ac/me/acme-pub").status,
        404
    );
    let krate = v.sb.library("acme-pub", "0.3.0");
    cargo_ok_env(
        &v.sb,
        &krate,
        &["publish", "--registry", "privreg-acme", "--no-verify"],
        &[
            ("CARGO_REGISTRIES_PRIVREG_ACME_TOKEN", "cargo-side-token"),
            (
                "CARGO_REGISTRIES_PRIVREG_ACME_CREDENTIAL_PROVIDER",
                "cargo:token",
            ),
        ],
    );
    // At acme, and visible through the view (and the layered view) at once.
    assert!(
        v.acme.index_file("acme-pub").is_file(),
        "not published at acme"
    );
    let app = v.sb.project(
        "app",
        "acme-pub = { version = \"0.3\", registry = \"acme\" }\n",
        "fn main() { println!(\"{}\", acme_pub::VERSION); }",
    );
    let out = v.sb.cargo_ok(&app, &["run", "--quiet"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0.3.0");
    assert_eq!(v.privreg.get("/index/ac/me/acme-pub").status, 200);
}
