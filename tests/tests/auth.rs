//! Credentials end to end: an authenticated daemon that real cargo reaches through the real
//! credential provider, and upstream tokens that go to their own upstream only. Runs against
//! the OS keyring named by `PRIVREG_TEST_KEYRING` (see `tests/support/keyrings.sh`).

use privreg_shared::secrets::EntryName;
use privreg_tests::{
    KeyringEntry, Pkg, Privreg, Registry, RegistryOpts, Sandbox, bin, files_holding, http_get,
    keyring_name, locked_packages, random_token, stderr, test_keyring,
};

const MAIN: &str = "fn main() { println!(\"{}\", acme_core::hello()); }";

fn provider_config(privreg: &Privreg) -> String {
    format!(
        "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"{}\"\ncredential-provider = [\"{}\"]\n\n[net]\nretry = 0\n",
        privreg.index_url(),
        bin("cargo-credential-privreg").display()
    )
}

#[test]
fn cargo_reaches_an_authenticated_daemon_through_the_provider() {
    let store = test_keyring("cargo_reaches_an_authenticated_daemon_through_the_provider");
    let mut public = Registry::start(RegistryOpts::default());
    public.publish(Pkg::new("pubdep", "1.0.0").lib("pub fn name() -> &'static str { \"pubdep\" }"));
    let mut privreg = Privreg::new(&format!(
        "auth = true\nkeyring = \"{}\"\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        keyring_name(store),
        public.index
    ));
    let token = random_token("local");
    let _entry = KeyringEntry::set(store, EntryName::local_token(&privreg.config_dir), &token);
    privreg.spawn().unwrap();
    let addr = privreg.addr.clone();

    // Health is open and says nothing else; everything else needs the token.
    let health = http_get(&addr, "/-/health", &[]).unwrap();
    assert_eq!((health.status, health.text().trim()), (200, "ok"));
    for path in [
        "/index/config.json",
        "/index/pu/bd/pubdep",
        "/dl/pubdep/1.0.0/00",
        "/-/status",
        "/api/v1/crates?q=x",
    ] {
        let r = http_get(&addr, path, &[]).unwrap();
        assert_eq!(r.status, 401, "{path}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Cargo login_url=\""),
            "{path}: {challenge}"
        );
        let r = http_get(&addr, path, &[("Authorization", "not-the-token")]).unwrap();
        assert_eq!(r.status, 403, "{path}");
    }
    let ok = http_get(&addr, "/index/config.json", &[("Authorization", &token)]).unwrap();
    assert_eq!(ok.status, 200);
    let config: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(config["auth-required"], true);
    // Another Host (DNS rebinding) is refused even with the token.
    let port = addr.rsplit_once(':').unwrap().1;
    let evil = format!("attacker.example:{port}");
    let r = http_get(
        &addr,
        "/index/config.json",
        &[("Authorization", &token), ("Host", &evil)],
    )
    .unwrap();
    assert_eq!(r.status, 421);
    let local = format!("localhost:{port}");
    let r = http_get(
        &addr,
        "/index/config.json",
        &[("Authorization", &token), ("Host", &local)],
    )
    .unwrap();
    assert_eq!(r.status, 200);

    // Real cargo, with the provider handing it the local token.
    let sb = Sandbox::new();
    sb.write_cargo_config(&provider_config(&privreg));
    let app = sb.project(
        "app",
        "pubdep = \"1\"\n",
        "fn main() { println!(\"{}\", pubdep::name()); }",
    );
    let run = |args: &[&str]| {
        sb.cargo_command(&app, args)
            .env("PRIVREG_CONFIG_DIR", &privreg.config_dir)
            .env("PRIVREG_CACHE_DIR", &privreg.cache_dir)
            .output()
            .unwrap()
    };
    let out = run(&["run", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pubdep");

    // Without the provider cargo has no token to present.
    sb.fresh_cargo_home();
    sb.write_cargo_config(&provider_config(&privreg).replace(
        &format!("[\"{}\"]", bin("cargo-credential-privreg").display()),
        "[\"cargo:token\"]",
    ));
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    let out = run(&["generate-lockfile"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no token found"), "{}", stderr(&out));

    assert!(
        files_holding(privreg.root(), &token).is_empty(),
        "the local token leaked into a file"
    );
}

#[test]
fn each_upstream_gets_its_own_token_and_nobody_else_does() {
    let store = test_keyring("each_upstream_gets_its_own_token_and_nobody_else_does");
    let mut public = Registry::start(RegistryOpts {
        watch: vec!["pubdep".into()],
        ..RegistryOpts::default()
    });
    public.publish(Pkg::new("pubdep", "1.0.0").lib("pub fn name() -> &'static str { \"pubdep\" }"));
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        auth_required: true,
        watch: vec!["acme-core".into()],
        ..RegistryOpts::default()
    });
    acme.publish(
        Pkg::new("acme-core", "0.2.0")
            .dep("pubdep", "^1")
            .lib("pub fn hello() -> String { format!(\"acme-core uses {}\", pubdep::name()) }"),
    );
    let mut privreg = Privreg::new(&format!(
        "auth = false\nkeyring = \"{}\"\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        keyring_name(store),
        acme.index,
        public.index
    ));
    privreg.env("PRIVREG_LOG", "trace");
    privreg.spawn().unwrap();
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    let app = sb.project("app", "acme-core = \"0.2\"\n", MAIN);

    // No token yet: acme refuses, and that is an auth problem of acme's, never "not found".
    let r = privreg.get("/index/ac/me/acme-core");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("upstream acme refused") && r.text().contains("privreg login acme"),
        "{}",
        r.text()
    );
    let status: serde_json::Value = serde_json::from_slice(&privreg.get("/-/status").body).unwrap();
    let acme_status = &status["upstreams"][0];
    assert!(
        acme_status["last_error"].as_str().unwrap().contains("401"),
        "{status}"
    );
    let out = sb.cargo(&app, &["generate-lockfile"]);
    assert!(!out.status.success());

    // `privreg login acme` (token on stdin) stores it in the keyring; the running daemon picks it
    // up without a restart.
    let token = acme.token.clone();
    let _entry = KeyringEntry::cleanup(store, EntryName::registry(&acme.index));
    let login = privreg.cli_with_stdin(&["login", "acme"], &format!("{token}\n"));
    assert!(login.status.success(), "{}", stderr(&login));
    assert!(!String::from_utf8_lossy(&login.stdout).contains(&token));
    let out = sb.cargo_ok(&app, &["run", "--quiet"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "acme-core uses pubdep"
    );
    assert!(locked_packages(&app).contains(&("acme-core".into(), "0.2.0".into())));

    // acme saw its token on every request after the login; the other upstream never saw it.
    let acme_reqs = acme.requests();
    assert!(
        acme_reqs.last().unwrap()["authorization"] == token.as_str(),
        "{acme_reqs:?}"
    );
    let public_reqs = public.requests();
    assert!(!public_reqs.is_empty());
    assert!(
        public_reqs.iter().all(|r| r["authorization"].is_null()),
        "{public_reqs:?}"
    );

    // No token in the daemon's log (at trace level), config or cache.
    assert!(
        files_holding(privreg.root(), &token).is_empty(),
        "acme's token leaked into a file:\n{:?}",
        files_holding(privreg.root(), &token)
    );
}

#[test]
fn a_token_never_follows_a_redirect_to_another_host() {
    // The token comes from PRIVREG_TOKEN_<NAME> here, which needs no keyring.
    let mut public = Registry::start(RegistryOpts {
        watch: vec!["acme-core".into()],
        ..RegistryOpts::default()
    });
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        auth_required: true,
        watch: vec!["acme-core".into()],
        ..RegistryOpts::default()
    });
    acme.publish(Pkg::new("acme-core", "0.2.0"));
    let mut privreg = Privreg::new(&format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        acme.index, public.index
    ));
    privreg.env("PRIVREG_TOKEN_ACME", &acme.token);
    privreg.spawn().unwrap();
    assert_eq!(
        privreg.get("/index/ac/me/acme-core").status,
        200,
        "the environment token works"
    );

    // acme now redirects to another host (port): privreg does not follow with the token.
    let elsewhere = format!("http://{}", public.addr());
    acme.mode(&format!("redirect {elsewhere}"));
    let sb = Sandbox::new();
    sb.use_privreg(&privreg);
    std::fs::write(
        privreg.config_dir.join("config.toml"),
        std::fs::read_to_string(privreg.config_dir.join("config.toml"))
            .unwrap()
            .replace(
                "priority = 600",
                "priority = 600\nttl = \"0s\"\nstale = \"0s\"",
            ),
    )
    .unwrap();
    privreg.within(60.0, "the reload", |p| {
        p.log().contains("configuration reloaded")
    });
    let r = privreg.get("/index/ac/me/acme-core");
    assert_eq!(r.status, 200, "the last good copy is served: {}", r.text());
    assert!(
        privreg.log().contains("upstream acme answered 302"),
        "{}",
        privreg.log()
    );
    // The other host saw only the daemon's own request for its copy (crates-io's ttl has not
    // run out), never a followed redirect, and never acme's token.
    let seen = public.requests();
    assert_eq!(seen.len(), 1, "the redirect was followed: {seen:?}");
    assert!(
        seen.iter().all(|r| r["authorization"].is_null()),
        "{seen:?}"
    );
    assert!(files_holding(privreg.root(), &acme.token).is_empty());
}

/// DESIGN: "an upstream's token goes to its index and downloads only when its `config.json` says
/// `auth-required: true`, and to its `api` for API calls; never anywhere else."
#[test]
fn an_upstream_token_stays_off_an_index_that_does_not_require_it() {
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        watch: vec!["acme-core".into()],
        ..RegistryOpts::default()
    });
    acme.publish(Pkg::new("acme-core", "0.2.0"));
    let mut privreg = Privreg::new(&format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\n",
        acme.index
    ));
    // A token for API calls (publish, yank, owners); acme's index is public.
    privreg.env("PRIVREG_TOKEN_ACME", &acme.token);
    privreg.spawn().unwrap();
    assert_eq!(privreg.get("/index/ac/me/acme-core").status, 200);
    let seen = acme.requests();
    assert!(!seen.is_empty(), "acme was not asked");
    assert!(
        seen.iter().all(|r| r["authorization"].is_null()),
        "the token went to an index that does not require it: {seen:?}"
    );
}
