//! The `privreg` CLI's setup commands with real binaries, real registry servers on 127.0.0.1 and
//! (where `PRIVREG_TEST_KEYRING` says which) a real OS keyring: `init`, `upstream
//! add|remove|list|check`, `login`/`logout`, `cargo-config --install|--uninstall` and `doctor`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use privreg_shared::config::KeyringChoice;
use privreg_shared::secrets::{EntryName, Keyring, SecretStore};
use privreg_tests::{Registry, RegistryOpts, bin, keyring_name, stderr, tempdir, test_keyring};

/// privreg's directories and a cargo home, all in a temp dir.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    cache: PathBuf,
    cargo_home: PathBuf,
}

impl Setup {
    fn new(config_toml: Option<&str>) -> Setup {
        let dir = tempdir();
        let s = Setup {
            config: dir.path().join("config"),
            cache: dir.path().join("cache"),
            cargo_home: dir.path().join("cargo-home"),
            dir,
        };
        std::fs::create_dir_all(&s.config).unwrap();
        std::fs::create_dir_all(&s.cargo_home).unwrap();
        if let Some(text) = config_toml {
            std::fs::write(s.config_file(), text).unwrap();
        }
        s
    }

    fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_file()).unwrap()
    }

    /// Runs `privreg` with these directories, `input` on stdin and `env` added; no
    /// `PRIVREG_TOKEN_*` from the test's own environment.
    fn run_env(&self, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin("privreg"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PRIVREG_TOKEN_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("PRIVREG_CONFIG_DIR", &self.config)
            .env("PRIVREG_CACHE_DIR", &self.cache)
            .env("CARGO_HOME", &self.cargo_home)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run privreg");
        // privreg may exit before it reads (e.g. for an unknown upstream): ignore a broken pipe.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, "", &[])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "privreg {args:?} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Deletes keyring entries when dropped.
struct Forget(KeyringChoice, Vec<EntryName>);

impl Drop for Forget {
    fn drop(&mut self) {
        if let Ok(k) = Keyring::open(self.0) {
            for e in &self.1 {
                let _ = k.delete(e);
            }
        }
    }
}

const CONFIG: &str = "# my privreg\nlisten = \"127.0.0.1:0\"\nauth = false\nkeyring = \"keyutils\"\n\n# upstreams below\n";

#[test]
fn upstream_add_says_why_an_upstream_cannot_be_added() {
    let s = Setup::new(Some(CONFIG));
    let mut stopped = Registry::start(RegistryOpts::default());
    let stopped_url = stopped.index.clone();
    stopped.stop();
    let locked = Registry::start(RegistryOpts {
        auth_required: true,
        ..RegistryOpts::default()
    });
    let open = Registry::start(RegistryOpts::default());

    let out = s.run(&["upstream", "add", "gone", &stopped_url]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("upstream gone: cannot reach"), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(s.config_text(), CONFIG);

    let out = s.run(&["upstream", "add", "locked", &locked.index]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("upstream locked: "), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("run `privreg login locked`"), "{err}");
    assert_eq!(s.config_text(), CONFIG);

    for (args, needle) in [
        (vec!["a b", open.index.as_str()], "may only hold"),
        (vec!["web", "https://127.0.0.1:1/index/"], "sparse+"),
        (
            vec!["zero", open.index.as_str(), "--priority", "0"],
            "non-zero",
        ),
        (vec!["slow", open.index.as_str(), "--ttl", "soon"], "--ttl"),
    ] {
        let mut full = vec!["upstream", "add"];
        full.extend(args);
        let out = s.run(&full);
        assert!(!out.status.success(), "{full:?}");
        assert!(stderr(&out).contains(needle), "{full:?}: {}", stderr(&out));
    }
    assert_eq!(s.config_text(), CONFIG);

    let said = s.ok(&[
        "upstream",
        "add",
        "open",
        &open.index,
        "--priority",
        "600",
        "--ttl",
        "1m",
    ]);
    assert!(said.contains("added upstream open"), "{said}");
    let text = s.config_text();
    // The new table goes after the settings; comments stay where they were.
    assert_eq!(
        text,
        CONFIG.replace(
            "\n# upstreams below\n",
            &format!(
                "\n[upstreams.open]\nindex = \"{}\"\npriority = 600\nttl = \"1m\"\n\n# upstreams below\n",
                open.index
            )
        )
    );
    let list = s.ok(&["upstream", "list"]);
    assert!(
        list.contains("open") && list.contains("priority 600"),
        "{list}"
    );
    assert!(list.contains("no token"), "{list}");

    let out = s.run(&["upstream", "add", "open", &open.index]);
    assert!(
        stderr(&out).contains("already has upstream open"),
        "{}",
        stderr(&out)
    );

    // Added without the check, then removed: the file is as it was.
    s.ok(&["upstream", "add", "later", &stopped_url, "--no-check"]);
    s.ok(&["upstream", "remove", "later"]);
    s.ok(&["upstream", "remove", "open"]);
    assert_eq!(s.config_text(), CONFIG);
    let out = s.run(&["upstream", "remove", "open"]);
    assert!(
        stderr(&out).contains("no upstream \"open\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn login_and_logout_through_the_keyring_with_env_precedence() {
    let choice = test_keyring("login_and_logout_through_the_keyring_with_env_precedence");
    let reg = Registry::start(RegistryOpts {
        auth_required: true,
        ..RegistryOpts::default()
    });
    let s = Setup::new(Some(&format!(
        "listen = \"127.0.0.1:0\"\nauth = false\nkeyring = \"{}\"\n",
        keyring_name(choice)
    )));
    let entry = EntryName::registry(&reg.index);
    let _forget = Forget(choice, vec![entry.clone()]);
    let keyring = Keyring::open(choice).unwrap();
    let stored = || keyring.get(&entry).ok().map(|t| t.expose().to_owned());

    s.ok(&["upstream", "add", "reg", &reg.index, "--no-check"]);
    let check = |env: &[(&str, &str)]| s.run_env(&["upstream", "check", "reg"], "", env);
    let out = check(&[]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("HTTP 401"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("run `privreg login reg`"),
        "{}",
        stdout(&out)
    );

    // A wrong token in the keyring: refused, and said so.
    let out = s.run_env(&["login", "reg"], "not-the-token\n", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stored().as_deref(), Some("not-the-token"));
    let out = check(&[]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("refused the stored token"),
        "{}",
        stdout(&out)
    );

    // PRIVREG_TOKEN_REG wins over the keyring.
    let env = [("PRIVREG_TOKEN_REG", reg.token.as_str())];
    let out = check(&env);
    assert!(out.status.success(), "{}", stdout(&out));
    let list = stdout(&s.run_env(&["upstream", "list"], "", &env));
    assert!(list.contains("token from PRIVREG_TOKEN_REG"), "{list}");
    let out = check(&[("PRIVREG_TOKEN_REG", "also-wrong")]);
    assert!(
        stdout(&out).contains("refused the token in PRIVREG_TOKEN_REG"),
        "{}",
        stdout(&out)
    );

    // The right token through `privreg login` (stdin, surrounding whitespace trimmed).
    let out = s.run_env(&["login", "reg"], &format!("  {}\n", reg.token), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stored().as_deref(), Some(reg.token.as_str()));
    assert!(check(&[]).status.success());
    assert!(s.ok(&["upstream", "list"]).contains("token in the keyring"));

    let said = s.ok(&["logout", "reg"]);
    assert!(
        said.contains("deleted the token for upstream reg"),
        "{said}"
    );
    assert_eq!(stored(), None);
    assert!(s.ok(&["logout", "reg"]).contains("nothing to do"));
    assert!(stdout(&check(&[])).contains("HTTP 401"));

    // Unknown upstreams and empty tokens are refused; nothing ever prints a token.
    let out = s.run_env(&["login", "nope"], "x", &[]);
    assert!(
        stderr(&out).contains("no upstream \"nope\""),
        "{}",
        stderr(&out)
    );
    let out = s.run_env(&["login", "reg"], "\n", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    assert_eq!(stored(), None);
    assert!(privreg_tests::files_holding(s.dir.path(), &reg.token).is_empty());
}

#[test]
fn init_creates_once_and_never_overwrites() {
    let choice = test_keyring("init_creates_once_and_never_overwrites");
    let s = Setup::new(None);
    let entry = EntryName::local_token(&s.config);
    let _forget = Forget(choice, vec![entry.clone()]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let said = s.ok(&[
        "init",
        "--listen",
        &listen,
        "--keyring",
        keyring_name(choice),
    ]);
    assert!(said.contains("created"), "{said}");
    let config = s.config_text();
    assert!(
        config.contains(&format!("listen = \"{listen}\"\n")),
        "{config}"
    );
    assert!(config.contains("\nauth = true\n"));
    assert!(config.contains(&format!("\nkeyring = \"{}\"\n", keyring_name(choice))));
    assert!(config.contains("[upstreams.crates-io]\nindex = \"sparse+https://"));
    assert!(config.contains("# [upstreams.acme]"));
    let prefs = std::fs::read_to_string(s.config.join("preferences")).unwrap();
    assert!(
        prefs.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "{prefs}"
    );
    let token = Keyring::open(choice).unwrap().get(&entry).unwrap();
    assert_eq!(token.expose().len(), 64);
    assert!(!said.contains(token.expose()));

    // Again, with other flags and edited files: nothing changes.
    std::fs::write(s.config.join("preferences"), "# mine\n").unwrap();
    let said = s.ok(&["init", "--listen", "127.0.0.1:1"]);
    assert!(!said.contains("created"), "{said}");
    assert_eq!(s.config_text(), config);
    assert_eq!(
        std::fs::read_to_string(s.config.join("preferences")).unwrap(),
        "# mine\n"
    );
    let again = Keyring::open(choice).unwrap().get(&entry).unwrap();
    assert_eq!(again.expose(), token.expose());
    assert!(privreg_tests::files_holding(s.dir.path(), token.expose()).is_empty());
}

#[test]
fn cargo_config_install_and_uninstall_keep_the_users_file() {
    let port = free_port();
    let s = Setup::new(Some(&format!(
        "listen = \"127.0.0.1:{port}\"\nauth = false\n"
    )));
    // The user's cargo config lives in a dotfiles directory, linked in, private to the user.
    let dotfiles = s.dir.path().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    let mine = "# my cargo\n[source.crates-io]\nreplace-with = \"vendored\" # offline\n\n[source.vendored]\ndirectory = \"/srv/vendor\"\n\n[net]\nretry = 0";
    let real = dotfiles.join("cargo.toml");
    std::fs::write(&real, mine).unwrap();
    set_mode(&real, 0o600);
    std::os::unix::fs::symlink(&real, s.cargo_home.join("config.toml")).unwrap();

    let said = s.ok(&["cargo-config", "--install"]);
    assert!(said.contains("backed up"), "{said}");
    let installed = std::fs::read_to_string(&real).unwrap();
    assert!(
        installed
            .starts_with("# my cargo\n[source.crates-io]\nreplace-with = \"privreg\" # offline\n"),
        "{installed}"
    );
    assert!(installed.contains(&format!(
        "index = \"sparse+http://127.0.0.1:{port}/index/\""
    )));
    assert!(
        s.cargo_home.join("config.toml").is_symlink(),
        "the link stays a link"
    );
    assert_eq!(mode(&real), 0o600);
    let backup = s.cargo_home.join("config.toml.privreg-backup");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), mine);

    // Again: nothing changes.
    let said = s.ok(&["cargo-config", "--install"]);
    assert!(said.contains("already sends cargo to privreg"), "{said}");
    assert_eq!(std::fs::read_to_string(&real).unwrap(), installed);

    // The user edits something else; uninstall keeps that and restores the rest.
    std::fs::write(&real, installed.replace("retry = 0", "retry = 1")).unwrap();
    s.ok(&["cargo-config", "--uninstall"]);
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        mine.replace("retry = 0", "retry = 1")
    );
    assert_eq!(mode(&real), 0o600);
    assert!(
        s.ok(&["cargo-config", "--uninstall"])
            .contains("nothing to undo")
    );

    // Without a file at all: install creates it, uninstall removes it.
    std::fs::remove_file(s.cargo_home.join("config.toml")).unwrap();
    s.ok(&["cargo-config", "--install"]);
    assert!(s.cargo_home.join("config.toml").is_file());
    s.ok(&["cargo-config", "--uninstall"]);
    assert!(!s.cargo_home.join("config.toml").exists());

    // The snippet alone.
    let snippet = s.ok(&["cargo-config"]);
    assert!(snippet.contains("[registries.privreg]"), "{snippet}");
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn doctor_reports_a_broken_setup_with_fixes() {
    let choice = test_keyring("doctor_reports_a_broken_setup_with_fixes");
    let mut stopped = Registry::start(RegistryOpts::default());
    let stopped_url = stopped.index.clone();
    stopped.stop();
    let locked = Registry::start(RegistryOpts {
        auth_required: true,
        ..RegistryOpts::default()
    });
    let port = free_port();
    let s = Setup::new(Some(&format!(
        "listen = \"127.0.0.1:{port}\"\nauth = true\nkeyring = \"{}\"\n\n[upstreams.gone]\nindex = \"{stopped_url}\"\n\n[upstreams.locked]\nindex = \"{}\"\n",
        keyring_name(choice),
        locked.index
    )));
    std::fs::create_dir_all(s.config.join("preferences.d")).unwrap();
    std::fs::write(
        s.config.join("preferences.d/10-bad.pref"),
        "# broken\nPackage: serde\nPin: registry gone\nPin-Priority: 0\n",
    )
    .unwrap();

    let out = s.run_env(&["doctor"], "", &[("PATH", "/usr/bin:/bin")]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    for needle in [
        "ok    ",
        "local token",
        "fix: privreg init",
        "10-bad.pref:4",
        "the daemon does not answer at 127.0.0.1:",
        "fix: privreg cargo-config --install",
        "cargo-credential-privreg is not on PATH",
        "FAIL  upstream gone: cannot reach",
        "fix: check the URL and the network; if it is gone: privreg upstream remove gone",
        "FAIL  upstream locked: ",
        "HTTP 401",
        "fix: privreg login locked",
        "problems found",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// A one-request-at-a-time HTTP server on `ip` that answers every request with `reply` and
/// records the requests' heads.
/// A server that records each request head and answers `reply`; with `needs_token`, a request
/// without `Authorization` gets a 401 instead (as an auth-required registry answers).
fn tiny_server(
    ip: &str,
    reply: String,
    needs_token: bool,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let unauthorised = needs_token && !head.to_ascii_lowercase().contains("authorization:");
            record.lock().unwrap().push(head);
            let answer = if unauthorised {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Cargo\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                reply.as_str()
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, seen)
}

#[test]
fn upstream_check_never_follows_a_redirect_to_another_host_with_the_token() {
    let (other_port, other_seen) = tiny_server(
        "127.0.0.2",
        "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"dl\":\"\"}".to_owned(),
        false,
    );
    let (port, seen) = tiny_server(
        "127.0.0.1",
        format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{other_port}/index/config.json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        true,
    );
    let s = Setup::new(Some(CONFIG));
    let url = format!("sparse+http://127.0.0.1:{port}/index/");
    let out = s.run_env(
        &["upstream", "add", "redir", &url],
        "",
        &[("PRIVREG_TOKEN_REDIR", "redirected-secret")],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("upstream redir: "), "{err}");
    assert!(err.contains("redirects to another host"), "{err}");
    assert!(!err.contains("redirected-secret"), "{err}");
    // As cargo does: config.json without the token first, with it only after the 401; the
    // redirect that then comes is refused, so the token never reaches the other host.
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("authorization:"),
        "{heads:?}"
    );
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains("authorization: redirected-secret"),
        "{heads:?}"
    );
    assert!(
        other_seen.lock().unwrap().is_empty(),
        "the other host was asked"
    );
    assert_eq!(s.config_text(), CONFIG);
}
