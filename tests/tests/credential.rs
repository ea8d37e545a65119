//! The credential provider end to end: the real `cargo`, the real `cargo-credential-privreg`
//! binary and a real OS keyring, against cargo's own test registry server (auth required).
//!
//! Which keyring: `PRIVREG_TEST_KEYRING` = `keyutils` or `secret-service`, as set by
//! `tests/support/keyrings.sh MODE -- cargo test …`, which also provides that keyring privately
//! for the run. Unset: the tests say so and pass without doing anything, so that a plain
//! `cargo test` works on machines without a keyring session.
//!
//! Entries are also checked and planted with the stores' own tools (`secret-tool`, `keyctl`),
//! which pins the entry naming that `privreg_shared::secrets` documents.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use privreg_tests::{Registry, RegistryOpts, Sandbox, files_holding, run_with_stdin, stderr};

/// The store under test, from `PRIVREG_TEST_KEYRING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Keyutils,
    SecretService,
}

impl Store {
    /// Panics (saying what to run) when `PRIVREG_TEST_KEYRING` is unset.
    fn from_env(test: &str) -> Store {
        use privreg_shared::config::KeyringChoice;
        match privreg_tests::test_keyring(test) {
            KeyringChoice::Keyutils => Store::Keyutils,
            KeyringChoice::SecretService => Store::SecretService,
            KeyringChoice::Auto => unreachable!("test_keyring names one store"),
        }
    }

    /// The `keyring` value in privreg's `config.toml`.
    fn config_value(self) -> &'static str {
        match self {
            Store::Keyutils => "keyutils",
            Store::SecretService => "secret-service",
        }
    }

    /// The keyutils description of the entry with service `privreg` and user `user`.
    fn key_description(user: &str) -> String {
        format!("keyring:{user}@privreg")
    }

    /// Stores `token` for `user` with the store's own tool (token on stdin, never in argv).
    fn plant(self, user: &str, token: &str) {
        let mut cmd = match self {
            Store::Keyutils => {
                let mut c = Command::new("keyctl");
                c.args(["padd", "user", &Store::key_description(user), "@s"]);
                c
            }
            Store::SecretService => {
                let mut c = Command::new("secret-tool");
                c.args([
                    "store",
                    "--label=privreg test",
                    "service",
                    "privreg",
                    "username",
                    user,
                ]);
                c
            }
        };
        let out = run_with_stdin(&mut cmd, token);
        assert!(out.status.success(), "storing a key: {}", stderr(&out));
    }

    /// The token stored for `user`, read with the store's own tool.
    fn lookup(self, user: &str) -> Option<String> {
        let out = match self {
            Store::Keyutils => {
                let id = Store::key_id(user)?;
                Command::new("keyctl").args(["pipe", &id]).output()
            }
            Store::SecretService => Command::new("secret-tool")
                .args(["lookup", "service", "privreg", "username", user])
                .output(),
        }
        .expect("run the keyring tool");
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).expect("utf-8 token"))
    }

    fn key_id(user: &str) -> Option<String> {
        let out = Command::new("keyctl")
            .args(["search", "@s", "user", &Store::key_description(user)])
            .stderr(Stdio::null())
            .output()
            .expect("run keyctl");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Removes the entry for `user`, if any (keyutils keys are also linked into the per-user
    /// persistent keyring, which outlives the test's session keyring).
    fn remove(self, user: &str) {
        match self {
            Store::Keyutils => {
                if let Some(id) = Store::key_id(user) {
                    let _ = Command::new("keyctl").args(["invalidate", &id]).status();
                }
            }
            Store::SecretService => {
                let _ = Command::new("secret-tool")
                    .args(["clear", "service", "privreg", "username", user])
                    .status();
            }
        }
    }
}

/// Removes keyring entries when the test ends, passed or not.
struct Cleanup(Store, Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for user in &self.1 {
            self.0.remove(user);
        }
    }
}

/// The provider binary.
fn provider() -> PathBuf {
    privreg_tests::bin("cargo-credential-privreg")
}

/// privreg's config and cache directories inside a sandbox.
struct Dirs {
    config: PathBuf,
    cache: PathBuf,
}

impl Dirs {
    fn new(sb: &Sandbox, config_toml: &str) -> Dirs {
        let dirs = Dirs {
            config: sb.root.join("privreg-config"),
            cache: sb.root.join("privreg-cache"),
        };
        std::fs::create_dir_all(&dirs.config).expect("config dir");
        std::fs::create_dir_all(&dirs.cache).expect("cache dir");
        std::fs::write(dirs.config.join("config.toml"), config_toml).expect("config.toml");
        dirs
    }

    /// The keyring user of this instance's local token.
    fn local_token_user(&self) -> String {
        let dir = std::fs::canonicalize(&self.config).expect("canonical config dir");
        format!("local-token:{}", dir.display())
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("PRIVREG_CONFIG_DIR", &self.config)
            .env("PRIVREG_CACHE_DIR", &self.cache);
    }
}

/// Runs the real cargo in the sandbox with privreg's directories set and `input` on stdin.
fn cargo(sb: &Sandbox, dirs: &Dirs, dir: &Path, args: &[&str], input: &str) -> Output {
    let mut cmd = sb.cargo_command(dir, args);
    dirs.env(&mut cmd);
    run_with_stdin(&mut cmd, input)
}

fn cargo_ok(sb: &Sandbox, dirs: &Dirs, dir: &Path, args: &[&str], input: &str) -> Output {
    let out = cargo(sb, dirs, dir, args, input);
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        stderr(&out)
    );
    out
}

/// No token in any file of the sandbox (cargo home, privreg's directories, projects); in
/// particular cargo wrote no `credentials.toml` with it, as it must not with a provider.
fn assert_no_token_in_files(sb: &Sandbox, token: &str) {
    let hits = files_holding(&sb.root, token);
    assert!(hits.is_empty(), "token found in {hits:?}");
    let creds = sb.cargo_home.join("credentials.toml");
    let text = std::fs::read_to_string(&creds).unwrap_or_default();
    assert!(!text.contains(token), "{} holds the token", creds.display());
}

/// A token unlikely to appear anywhere by chance.
fn random_token(tag: &str) -> String {
    use sha2::Digest;
    let seed = format!(
        "{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    format!("privreg-test-{}", hex::encode(sha2::Sha256::digest(seed)))
}

/// A library crate to publish.
fn library(sb: &Sandbox, name: &str, version: &str) -> PathBuf {
    let dir = sb.root.join(name);
    std::fs::create_dir_all(dir.join("src")).expect("project dir");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\n\
             description = \"test crate\"\nlicense = \"MIT\"\n"
        ),
    )
    .expect("manifest");
    std::fs::write(dir.join("src/lib.rs"), "pub fn answer() -> u32 { 42 }\n").expect("lib.rs");
    dir
}

/// `cargo login`, `publish`, `logout` and a publish that then fails, through the provider and
/// the real keyring, against an auth-required registry at `index` whose token is `token`;
/// `published` says whether the registry has the crate.
fn login_publish_logout(store: Store, index: &str, token: &str, published: impl Fn() -> bool) {
    let sb = Sandbox::new();
    let dirs = Dirs::new(
        &sb,
        &format!(
            "listen = \"127.0.0.1:0\"\nkeyring = \"{}\"\n",
            store.config_value()
        ),
    );
    // The keyring user of a registry is its index URL (with a trailing `/`).
    let user = privreg_shared::secrets::normalize_index_url(index);
    let _cleanup = Cleanup(store, vec![user.clone()]);
    sb.write_cargo_config(&format!(
        "[registries.alt]\nindex = \"{index}\"\ncredential-provider = [\"{}\"]\n\n[net]\nretry = 0\n",
        provider().display()
    ));
    let krate = library(&sb, "privreg-cred-demo", "0.1.0");
    let publish = ["publish", "--registry", "alt", "--no-verify"];

    // No token yet: the provider answers not-found and cargo has nothing to send.
    let out = cargo(&sb, &dirs, &krate, &publish, "");
    assert!(!out.status.success(), "publish without a token succeeded");
    assert!(stderr(&out).contains("no token found"), "{}", stderr(&out));

    // `cargo login` (token on stdin) goes through the provider into the keyring.
    cargo_ok(
        &sb,
        &dirs,
        &krate,
        &["login", "--registry", "alt"],
        &format!("{token}\n"),
    );
    assert_eq!(
        store.lookup(&user).as_deref(),
        Some(token),
        "the {store:?} holds the token under the index URL"
    );
    cargo_ok(&sb, &dirs, &krate, &publish, "");
    assert!(published(), "the registry got the crate");

    cargo_ok(&sb, &dirs, &krate, &["logout", "--registry", "alt"], "");
    assert_eq!(store.lookup(&user), None, "logout deleted the entry");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    std::fs::write(krate.join("Cargo.toml"), manifest.replace("0.1.0", "0.2.0")).unwrap();
    let out = cargo(&sb, &dirs, &krate, &publish, "");
    assert!(!out.status.success(), "publish after logout succeeded");
    assert!(stderr(&out).contains("no token found"), "{}", stderr(&out));

    assert_no_token_in_files(&sb, token);
}

#[test]
fn cargo_login_publish_logout_through_the_keyring() {
    let store = Store::from_env("cargo_login_publish_logout_through_the_keyring");
    let reg = Registry::start(RegistryOpts {
        auth_required: true,
        alternative: true,
        ..RegistryOpts::default()
    });
    assert!(!reg.token.is_empty(), "the test registry has a token");
    login_publish_logout(store, &reg.index, &reg.token, || {
        reg.index_file("privreg-cred-demo").is_file()
    });
}

#[test]
fn cargo_login_publish_logout_with_kellnr() {
    let store = Store::from_env("cargo_login_publish_logout_with_kellnr");
    let kellnr = privreg_tests::kellnr::Kellnr::start(true, None);
    let addr = format!("127.0.0.1:{}", kellnr.port);
    login_publish_logout(store, &kellnr.index(), &kellnr.token, || {
        privreg_tests::http_get(
            &addr,
            "/api/v1/crates/pr/iv/privreg-cred-demo",
            &[("Authorization", &kellnr.token)],
        )
        .is_ok_and(|r| r.status == 200)
    });
}

/// Speaks the credential protocol with the provider as cargo does: hello, one request, reply.
fn ask_provider(dirs: &Dirs, request: &str) -> String {
    let mut cmd = Command::new(provider());
    cmd.arg("--cargo-plugin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    dirs.env(&mut cmd);
    let mut child = cmd.spawn().expect("spawn the provider");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut hello = String::new();
    stdout.read_line(&mut hello).expect("read hello");
    assert_eq!(hello, "{\"v\":[1]}\n");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{request}").expect("write request");
    } // closing stdin ends the provider's loop after this request
    let mut reply = String::new();
    stdout.read_line(&mut reply).expect("read reply");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "provider failed: {}", stderr(&out));
    reply.trim_end().to_owned()
}

fn get_request(index_url: &str) -> String {
    format!(
        r#"{{"v":1,"registry":{{"index-url":"{index_url}","name":"privreg"}},"kind":"get","operation":"read","args":[]}}"#
    )
}

#[test]
fn provider_returns_the_local_token_for_daemon_urls() {
    let store = Store::from_env("provider_returns_the_local_token_for_daemon_urls");
    let sb = Sandbox::new();
    // `listen` names one address; `daemon.json` another (as when `listen` uses port 0).
    let dirs = Dirs::new(
        &sb,
        &format!(
            "listen = \"127.0.0.1:47001\"\nkeyring = \"{}\"\n",
            store.config_value()
        ),
    );
    std::fs::write(
        dirs.cache.join("daemon.json"),
        r#"{"addr":"127.0.0.1:47002","pid":1}"#,
    )
    .unwrap();
    let token = random_token("local");
    let user = dirs.local_token_user();
    let _cleanup = Cleanup(store, vec![user.clone()]);

    // No local token yet: a clear error, not `not-found` (another provider cannot help).
    let reply: serde_json::Value = serde_json::from_str(&ask_provider(
        &dirs,
        &get_request("sparse+http://127.0.0.1:47001/index/"),
    ))
    .unwrap();
    assert_eq!(reply["Err"]["kind"], "other", "{reply}");
    assert!(
        reply["Err"]["message"]
            .as_str()
            .unwrap()
            .contains("run `privreg init`"),
        "{reply}"
    );

    // The token as `privreg init` stores it (planted with the store's own tool).
    store.plant(&user, &token);
    let expected = format!(
        r#"{{"Ok":{{"kind":"get","token":"{token}","cache":"session","operation_independent":true}}}}"#
    );
    for url in [
        "sparse+http://127.0.0.1:47001/index/",
        "sparse+http://127.0.0.1:47001/upstream/acme/index/",
        "sparse+http://127.0.0.1:47002/index/",
        "sparse+http://localhost:47002/upstream/crates-io/index/",
    ] {
        assert_eq!(ask_provider(&dirs, &get_request(url)), expected, "{url}");
    }

    // Any other registry without a stored token: not-found, so cargo tries the next provider.
    assert_eq!(
        ask_provider(&dirs, &get_request("sparse+http://127.0.0.1:47003/index/")),
        r#"{"Err":{"kind":"not-found"}}"#
    );

    // `cargo login` cannot replace the local token.
    let login = r#"{"v":1,"registry":{"index-url":"sparse+http://127.0.0.1:47001/index/","name":"privreg"},"kind":"login","token":"replacement-token","args":[]}"#;
    let reply = ask_provider(&dirs, login);
    assert!(
        reply.starts_with(r#"{"Err":{"kind":"other","message":""#),
        "{reply}"
    );
    assert!(reply.contains("managed by `privreg init`"), "{reply}");
    assert!(!reply.contains("replacement-token"), "{reply}");
    assert_eq!(store.lookup(&user).as_deref(), Some(token.as_str()));

    assert_no_token_in_files(&sb, &token);
}
