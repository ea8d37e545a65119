//! Everyday commands end to end, with real cargo through an authenticated daemon: `privreg warm`
//! before going offline, `privreg refresh` after a publish, and shell completions and help.
//! The daemon tests run against the OS keyring named by `PRIVREG_TEST_KEYRING` (see
//! `tests/support/keyrings.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use privreg_shared::config::KeyringChoice;
use privreg_shared::secrets::EntryName;
use privreg_tests::{
    KeyringEntry, Pkg, Privreg, Registry, RegistryOpts, Sandbox, bin, files_under, keyring_name,
    locked_packages, random_token, stderr, tempdir, test_keyring,
};

/// An authenticated daemon layering `acme` (600) over `crates-io` (500), its local token in the
/// test keyring, and a cargo sandbox configured by `privreg cargo-config` with the real provider.
struct Setup {
    privreg: Privreg,
    sb: Sandbox,
    token: String,
    _entry: KeyringEntry,
}

fn start(store: KeyringChoice, acme: &Registry, public: &Registry, per_upstream: &str) -> Setup {
    let mut privreg = Privreg::new(&format!(
        "auth = true\nkeyring = \"{}\"\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n{per_upstream}\n[upstreams.crates-io]\nindex = \"{}\"\npriority = 500\n{per_upstream}",
        keyring_name(store),
        acme.index,
        public.index
    ));
    let token = random_token("local");
    let entry = KeyringEntry::set(store, EntryName::local_token(&privreg.config_dir), &token);
    privreg.spawn().expect("privreg-daemon starts");
    let sb = Sandbox::new();
    let snippet = privreg.cli_ok(&["cargo-config"]);
    let provider = format!("\"{}\"", bin("cargo-credential-privreg").display());
    sb.write_cargo_config(&format!(
        "{}\n[net]\nretry = 0\n",
        snippet.replace("\"cargo-credential-privreg\"", &provider)
    ));
    Setup {
        privreg,
        sb,
        token,
        _entry: entry,
    }
}

impl Setup {
    /// Real cargo in `dir`, its credential provider finding the daemon's local token.
    fn cargo(&self, dir: &Path, args: &[&str]) -> Output {
        self.sb
            .cargo_command(dir, args)
            .env("PRIVREG_CONFIG_DIR", &self.privreg.config_dir)
            .env("PRIVREG_CACHE_DIR", &self.privreg.cache_dir)
            .output()
            .expect("run cargo")
    }

    fn cargo_ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.cargo(dir, args);
        assert!(
            out.status.success(),
            "cargo {args:?} failed:\n{}\n{}",
            stderr(&out),
            self.privreg.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The summary line `warm` prints for packages.
fn packages_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("warmed "))
        .unwrap_or_else(|| panic!("no summary in:\n{out}"))
}

/// The lines of `out` with their runs of spaces made one.
fn squeezed(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn line_with<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

fn lock_path(project: &Path) -> String {
    project.join("Cargo.lock").display().to_string()
}

#[test]
fn warm_fetches_what_lockfiles_need_and_builds_offline() {
    let store = test_keyring("warm_fetches_what_lockfiles_need_and_builds_offline");
    let mut public = Registry::start(RegistryOpts::default());
    public.publish(Pkg::new("pubdep", "1.0.0").lib("pub fn name() -> &'static str { \"pubdep\" }"));
    public.publish(
        Pkg::new("other", "1.0.0")
            .dep("pubdep", "^1")
            .lib("pub fn other() -> String { format!(\"other+{}\", pubdep::name()) }"),
    );
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        ..RegistryOpts::default()
    });
    acme.publish(
        Pkg::new("acme-core", "0.2.0")
            .dep("pubdep", "^1")
            .lib("pub fn hello() -> String { format!(\"acme-core uses {}\", pubdep::name()) }"),
    );
    acme.publish(Pkg::new("acme-util", "0.1.0").lib("pub fn util() -> u32 { 7 }"));
    let s = start(store, &acme, &public, "");

    // A names acme explicitly (Cargo.lock keeps acme's URL); B takes a private crate through the
    // layered view and has a path dependency.
    let a = s.sb.project(
        "a",
        "acme-core = { version = \"0.2\", registry = \"acme\" }\nother = \"1\"\n",
        "fn main() { println!(\"{} {}\", acme_core::hello(), other::other()); }",
    );
    let helper = s.sb.project("helper", "", "");
    std::fs::remove_file(helper.join("src/main.rs")).unwrap();
    std::fs::write(helper.join("src/lib.rs"), "pub fn h() -> u32 { 1 }").unwrap();
    let b = s.sb.project(
        "b",
        "acme-util = \"0.1\"\npubdep = \"1\"\nhelper = { path = \"../helper\" }\n",
        "fn main() { println!(\"{} {} {}\", acme_util::util(), pubdep::name(), helper::h()); }",
    );
    s.cargo_ok(&a, &["generate-lockfile"]);
    s.cargo_ok(&b, &["generate-lockfile"]);
    let lock_a = std::fs::read_to_string(a.join("Cargo.lock")).unwrap();
    assert!(
        lock_a.contains(&format!("source = \"{}\"", acme.index)),
        "{lock_a}"
    );
    // Resolution fetched index files, but no crate yet.
    let crates_dir = s.privreg.cache_dir.join("v1/crates");
    assert!(files_under(&crates_dir).is_empty());

    // acme-core (acme's view), acme-util, other and pubdep (the layered view; pubdep is in both
    // lockfiles but fetched once); a, b and helper are path packages.
    let (la, lb) = (lock_path(&a), lock_path(&b));
    let out = s.privreg.cli(&["warm", &la, &lb]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert_eq!(
        packages_line(&text),
        "warmed 2 lockfiles: 4 packages: 4 fetched, 0 already cached, 0 failed",
        "{text}"
    );
    assert_eq!(
        line_with(&text, "crates:"),
        "crates:      4 fetched, 0 already cached, 0 failed"
    );
    assert!(
        line_with(&text, "skipped:").starts_with("skipped:     3 path, 0 git, 0 "),
        "{text}"
    );
    for p in [
        "acme-core 0.2.0",
        "acme-util 0.1.0",
        "other 1.0.0",
        "pubdep 1.0.0",
    ] {
        assert!(text.contains(&format!("fetched {p}\n")), "{p}: {text}");
    }
    assert_eq!(files_under(&crates_dir).len(), 4, "{text}");

    // Again: everything is already cached.
    let text = s.privreg.cli_ok(&["warm", &la, &lb]);
    assert_eq!(
        packages_line(&text),
        "warmed 2 lockfiles: 4 packages: 0 fetched, 4 already cached, 0 failed",
        "{text}"
    );
    assert_eq!(
        line_with(&text, "index files:"),
        "index files: 0 fetched, 4 already cached, 0 failed"
    );
    assert_eq!(
        line_with(&text, "crates:"),
        "crates:      0 fetched, 4 already cached, 0 failed"
    );

    // With no argument, the current project's lockfile (found from a subdirectory, as cargo
    // finds it).
    let out = Command::new(bin("privreg"))
        .arg("--config-dir")
        .arg(&s.privreg.config_dir)
        .arg("--cache-dir")
        .arg(&s.privreg.cache_dir)
        .arg("warm")
        .current_dir(b.join("src"))
        .env_remove("CARGO")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert_eq!(
        packages_line(&text),
        format!(
            "warmed {}: 2 packages: 0 fetched, 2 already cached, 0 failed",
            lock_path(&b)
        ),
        "{text}"
    );

    // A lockfile the daemon never saw (as from a fresh clone): warm fetches the index files too.
    let config = format!(
        "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        acme.index, public.index
    );
    let cold = Privreg::start(&config);
    let text = cold.cli_ok(&["warm", &la]);
    assert_eq!(
        packages_line(&text),
        format!("warmed {la}: 3 packages: 3 fetched, 0 already cached, 0 failed"),
        "{text}"
    );
    let counts: Vec<usize> = line_with(&text, "index files:")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    // acme-core and other for sure; pubdep unless the daemon prefetched it (as a dependency of
    // both) before warm asked.
    assert!(
        counts.len() == 3 && counts[0] >= 2 && counts[0] + counts[1] == 3 && counts[2] == 0,
        "{text}"
    );

    // acme down: what is cached still warms, what is not fails and names acme (the layered view
    // fails closed, since acme outranks crates-io), and warm exits non-zero.
    acme.stop();
    let out = cold.cli(&["warm", &lb]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert_eq!(
        packages_line(&text),
        format!("warmed {lb}: 2 packages: 0 fetched, 1 already cached, 1 failed"),
        "{text}"
    );
    let failure = line_with(&text, "acme-util 0.1.0 via the layered view:");
    assert!(failure.contains("cannot reach upstream acme"), "{text}");

    // Nothing cached at all: both views fail, naming acme.
    let colder = Privreg::start(&config);
    let out = colder.cli(&["warm", &la]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert_eq!(
        packages_line(&text),
        format!("warmed {la}: 3 packages: 0 fetched, 0 already cached, 3 failed"),
        "{text}"
    );
    let failure = line_with(&text, "acme-core 0.2.0 via upstream acme:");
    assert!(failure.contains("cannot reach upstream acme"), "{text}");
    let failure = line_with(&text, "pubdep 1.0.0 via the layered view:");
    assert!(failure.contains("upstream acme"), "{text}");

    // Every upstream stopped, a new CARGO_HOME: both projects build from the warm daemon.
    public.stop();
    s.sb.fresh_cargo_home();
    s.cargo_ok(&a, &["build", "--locked"]);
    s.cargo_ok(&b, &["build", "--locked"]);
    let run = s.cargo_ok(&a, &["run", "--locked", "--quiet"]);
    assert_eq!(run.trim(), "acme-core uses pubdep other+pubdep");
}

/// A raw `POST path` to the daemon; returns the status and body.
fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::fmt::Write as _;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

/// The requests the registry saw for `krate`'s index file.
fn index_requests(reg: &mut Registry, krate: &str) -> Vec<serde_json::Value> {
    let path = format!("/index/{}/{}/{krate}", &krate[..2], &krate[2..4]);
    reg.requests()
        .into_iter()
        .filter(|r| r["path"] == path.as_str())
        .collect()
}

#[test]
fn refresh_shows_a_new_version_long_before_the_ttl() {
    let store = test_keyring("refresh_shows_a_new_version_long_before_the_ttl");
    let mut public = Registry::start(RegistryOpts {
        watch: vec!["fresh".into(), "steady".into()],
        ..RegistryOpts::default()
    });
    public.publish(Pkg::new("fresh", "1.0.0"));
    public.publish(Pkg::new("steady", "1.0.0"));
    let mut acme = Registry::start(RegistryOpts {
        alternative: true,
        ..RegistryOpts::default()
    });
    acme.publish(Pkg::new("acme-x", "0.1.0"));
    let s = start(store, &acme, &public, "ttl = \"1h\"\n");
    let app =
        s.sb.project("app", "fresh = \"1\"\nsteady = \"1\"\n", "fn main() {}");
    s.cargo_ok(&app, &["generate-lockfile"]);
    let version = |krate: &str| {
        locked_packages(&app)
            .into_iter()
            .find(|(n, _)| n == krate)
            .map(|(_, v)| v)
    };
    assert_eq!(version("fresh").as_deref(), Some("1.0.0"));

    // A new version upstream: within the ttl the daemon keeps serving what it has.
    public.publish(Pkg::new("fresh", "1.1.0"));
    s.cargo_ok(&app, &["update"]);
    assert_eq!(version("fresh").as_deref(), Some("1.0.0"));

    let out = s.privreg.cli(&["refresh", "fresh"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let lines = squeezed(&text);
    assert!(
        lines.contains(&"fresh crates-io changed: new 1.1.0".to_owned()),
        "{text}"
    );
    assert!(
        lines.contains(&"fresh acme unchanged (does not have it)".to_owned()),
        "{text}"
    );
    assert!(
        text.contains("refreshed 2 index files: 1 changed, 1 unchanged, 0 failed"),
        "{text}"
    );
    // cargo sees it at once.
    s.cargo_ok(&app, &["update"]);
    assert_eq!(version("fresh").as_deref(), Some("1.1.0"));

    // Without names: every cached index file is revalidated, once, with its validators.
    s.privreg.settled(Some(&s.token));
    let cached: Vec<PathBuf> = files_under(&s.privreg.cache_dir.join("v1/upstreams"))
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "index"))
        // First-seen records (issue 17) sit beside the index files they date.
        .filter(|p| {
            !p.to_string_lossy()
                .ends_with(privreg_shared::store::SEEN_SUFFIX)
        })
        .collect();
    let (fresh_before, steady_before) = (
        index_requests(&mut public, "fresh").len(),
        index_requests(&mut public, "steady").len(),
    );
    let text = s.privreg.cli_ok(&["refresh"]);
    assert!(
        text.contains(&format!(
            "revalidated {} index files: 0 changed, {} unchanged, 0 failed",
            cached.len(),
            cached.len()
        )),
        "{text}"
    );
    // Both crates from both upstreams (absent from acme), at least.
    assert!(cached.len() >= 4, "{cached:?}");
    for (krate, before) in [("fresh", fresh_before), ("steady", steady_before)] {
        let seen = index_requests(&mut public, krate);
        assert_eq!(seen.len(), before + 1, "{krate}: {seen:?}");
        assert!(
            seen.last().unwrap()["if_none_match"].is_string(),
            "{krate}: a conditional request: {seen:?}"
        );
    }

    // An upstream failing: refresh says which and why, exits non-zero, and the cached copy keeps
    // serving without asking the failing upstream again.
    public.mode("500");
    let out = s.privreg.cli(&["refresh", "fresh"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        squeezed(&text)
            .iter()
            .any(|l| l.starts_with("fresh crates-io failed: ")
                && l.contains("upstream crates-io")
                && l.contains("500")),
        "{text}"
    );
    let before = index_requests(&mut public, "fresh").len();
    s.sb.fresh_cargo_home();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    s.cargo_ok(&app, &["generate-lockfile"]);
    assert_eq!(version("fresh").as_deref(), Some("1.1.0"));
    assert_eq!(index_requests(&mut public, "fresh").len(), before);

    // The endpoint wants the token, a POST, and JSON (which a web page cannot send across
    // origins unasked); bad names are refused.
    let addr = &s.privreg.addr;
    let json = ("Content-Type", "application/json");
    let auth = ("Authorization", s.token.as_str());
    assert_eq!(post(addr, "/-/refresh", &[json], "{}").0, 401);
    assert_eq!(post(addr, "/-/refresh", &[auth], "{}").0, 415);
    let get = privreg_tests::http_get(addr, "/-/refresh", &[auth]).unwrap();
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));
    let (status, body) = post(
        addr,
        "/-/refresh",
        &[auth, json],
        r#"{"crates":["no/such"]}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no/such"), "{body}");
    let (status, body) = post(addr, "/-/refresh", &[auth, json], r#"{"crate":"x"}"#);
    assert_eq!(status, 400, "{body}");
    // Bad names are refused by the CLI before anything is sent.
    let out = s.privreg.cli(&["refresh", "no/such"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a crate name"),
        "{}",
        stderr(&out)
    );
}

/// `privreg` with throwaway directories (completions and help need no daemon).
fn privreg(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("privreg"))
        .arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .expect("run privreg")
}

/// The subcommand names listed under `Commands:` in a help text.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Not the continuation of a wrapped description.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn completions_load_in_bash_and_every_help_has_an_example() {
    let dir = tempdir();
    let out = privreg(dir.path(), &["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = dir.path().join("privreg.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let loaded = Command::new("bash")
        .arg("--noprofile")
        .arg("--norc")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p privreg",
            script.display()
        ))
        .output()
        .expect("run bash");
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    let said = stdout(&loaded);
    assert!(
        said.starts_with("complete ") && said.trim_end().ends_with(" privreg"),
        "{said}"
    );
    for shell in ["zsh", "fish"] {
        let out = privreg(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("refresh"), "{shell}");
    }
    let out = privreg(dir.path(), &["completions", "tcsh"]);
    assert!(!out.status.success());

    // Every command, nested ones too, says what it does with an example.
    let top = stdout(&privreg(dir.path(), &["--help"]));
    let mut todo: Vec<Vec<String>> = commands(&top).into_iter().map(|c| vec![c]).collect();
    for c in ["warm", "refresh", "completions"] {
        assert!(
            todo.contains(&vec![c.to_owned()]),
            "{c} missing from:\n{top}"
        );
    }
    let mut checked = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = privreg(dir.path(), &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let help = stdout(&out);
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with("Example: privreg ")),
            "{args:?} has no example:\n{help}"
        );
        for sub in commands(&help) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        checked += 1;
    }
    assert!(checked > 15, "{checked}");
}
