//! `install.sh` end to end in a sandbox HOME: build and install with `cargo install`, `privreg
//! init`, the daemon in the background (no user service manager here), cargo's config merged into
//! the user's own; then a local test registry replaces the public upstream through `privreg
//! upstream add`/`remove`, and the real cargo resolves and builds a project through the daemon
//! with `auth = true` and the credential provider. A second run changes nothing; `--uninstall`
//! leaves the user's cargo config byte for byte as it was and stops the daemon; `--purge` also
//! removes privreg's files and tokens. The generated systemd unit and launchd agent are checked
//! too (`systemd-analyze verify`; a missing systemd-analyze or shellcheck fails the test).
//!
//! The build is incremental: install.sh gets `--debug`, `CARGO_TARGET_DIR` = this workspace's
//! target dir and `--build-cargo-home` = the real cargo home (its crate cache, `--offline`), so no
//! test reaches a public registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use privreg_shared::config::KeyringChoice;
use privreg_shared::secrets::{EntryName, Keyring, SecretStore};
use privreg_tests::{
    Pkg, Registry, RegistryOpts, Sandbox, bin, bin_dir, http_get, keyring_name, stderr, tempdir,
    test_keyring,
};

/// The user's own cargo config, comments and all, without a final newline.
const USER_CARGO_CONFIG: &str = "# my own cargo settings\n[build]\njobs = 2 # two cores here\n\n[net]\nretry = 0   # fail fast\n\n[registries.other]\nindex = \"sparse+http://127.0.0.1:9/index/\"\n\n# aliases\n[alias]\nb = \"build\"";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).filter(|v| !v.is_empty()).map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(default),
        PathBuf::from,
    )
}

/// A sandbox HOME with privreg's directories inside it.
struct Home {
    sb: Sandbox,
    config: PathBuf,
    cache: PathBuf,
    bin: PathBuf,
    keyring: KeyringChoice,
}

impl Home {
    fn new(keyring: KeyringChoice) -> Home {
        let sb = Sandbox::new();
        Home {
            config: sb.home.join(".config/privreg"),
            cache: sb.home.join(".cache/privreg"),
            bin: sb.cargo_home.join("bin"),
            sb,
            keyring,
        }
    }

    fn cargo_config(&self) -> PathBuf {
        self.sb.cargo_home.join("config.toml")
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The sandbox's environment on `cmd`: HOME, `CARGO_HOME`, privreg's dirs, PATH with the
    /// sandbox's cargo bin first; the test's own CARGO_* and PRIVREG_* removed.
    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for (k, _) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if k_str.starts_with("CARGO")
                || k_str.starts_with("PRIVREG_")
                || k == "RUSTC_WRAPPER"
                || k == "RUSTFLAGS"
            {
                cmd.env_remove(&k);
            }
        }
        cmd.env("HOME", &self.sb.home)
            .env("CARGO_HOME", &self.sb.cargo_home)
            .env("RUSTUP_HOME", env_dir("RUSTUP_HOME", ".rustup"))
            .env("XDG_CONFIG_HOME", self.sb.home.join(".config"))
            .env("PRIVREG_CONFIG_DIR", &self.config)
            .env("PRIVREG_CACHE_DIR", &self.cache)
            .env("PRIVREG_TEST_KEYRING", keyring_name(self.keyring))
            .env("PATH", self.path())
    }

    fn install_sh(&self, args: &[&str]) -> Output {
        let build_home = env_dir("CARGO_HOME", ".cargo");
        let mut cmd = self.install_sh_command(args);
        cmd.arg("--build-cargo-home").arg(build_home);
        cmd.output().expect("run install.sh")
    }

    /// install.sh as the user runs it (building with the sandbox's own `CARGO_HOME` and config).
    fn install_sh_command(&self, args: &[&str]) -> Command {
        let target = bin_dir().parent().expect("target dir").to_owned();
        let mut cmd = Command::new("sh");
        self.env(&mut cmd)
            .arg(repo().join("install.sh"))
            .args(args)
            .env("CARGO_TARGET_DIR", target)
            .current_dir(&self.sb.root)
            .stdin(std::process::Stdio::null());
        cmd
    }

    fn install_sh_ok(&self, args: &[&str]) -> String {
        let out = self.install_sh(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            out.status.success(),
            "install.sh {args:?} failed:\n{text}\n--- daemon log:\n{}",
            self.daemon_log()
        );
        text
    }

    /// The installed `privreg`.
    fn privreg(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.bin.join("privreg"));
        self.env(&mut cmd).args(args).output().expect("run privreg")
    }

    fn privreg_ok(&self, args: &[&str]) -> String {
        let out = self.privreg(args);
        assert!(
            out.status.success(),
            "privreg {args:?} failed:\n{}{}\n--- daemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out),
            self.daemon_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.cache.join("daemon.log")).unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.cache.join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn daemon_addr(&self) -> String {
        let info = std::fs::read(self.cache.join("daemon.json")).expect("daemon.json");
        let v: serde_json::Value = serde_json::from_slice(&info).expect("daemon.json is JSON");
        v["addr"].as_str().expect("addr").to_owned()
    }
}

/// Whether process `pid` is a live privreg-daemon (not gone, not a zombie).
fn daemon_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    stat.contains("(privreg-daemon)") && state != Some('Z')
}

/// Stops the background daemon and deletes the local token however the test ends.
struct Cleanup<'h>(&'h Home);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid().filter(|p| daemon_alive(*p)) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        if let Ok(k) = Keyring::open(self.0.keyring) {
            let _ = k.delete(&EntryName::local_token(&self.0.config));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn snapshot(h: &Home) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    [
        h.config.join("config.toml"),
        h.config.join("preferences"),
        h.cargo_config(),
        PathBuf::from(format!("{}.privreg-backup", h.cargo_config().display())),
    ]
    .into_iter()
    .map(|p| {
        let bytes = std::fs::read(&p).ok();
        (p, bytes)
    })
    .collect()
}

#[test]
fn install_build_reinstall_uninstall() {
    let keyring = test_keyring("install_build_reinstall_uninstall");
    // The harness builds the workspace's binaries now, not between the two install.sh runs
    // (which share the target dir): the second run then finds the same binary and keeps the
    // daemon running.
    bin("privreg");
    let h = Home::new(keyring);
    let _cleanup = Cleanup(&h);
    std::fs::write(h.cargo_config(), USER_CARGO_CONFIG).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = [
        "--debug",
        "--offline",
        "--background",
        "--listen",
        &listen,
        "--keyring",
        keyring_name(keyring),
    ];

    let said = h.install_sh_ok(&flags);
    assert!(
        said.contains("no user service manager answers here"),
        "{said}"
    );
    assert!(said.contains("To make it permanent"), "{said}");
    assert!(
        said.contains(&format!("privreg-daemon answers at http://{listen}/")),
        "{said}"
    );
    for b in ["privreg", "privreg-daemon", "cargo-credential-privreg"] {
        assert!(h.bin.join(b).is_file(), "{b} installed");
    }
    let pid = h.pid().expect("a pid file");
    assert!(daemon_alive(pid));
    assert_eq!(h.daemon_addr(), listen);
    let config = std::fs::read_to_string(h.config.join("config.toml")).unwrap();
    assert!(
        config.contains(&format!("listen = \"{listen}\"")),
        "{config}"
    );
    assert!(config.contains("\nauth = true\n"), "{config}");
    assert!(config.contains(&format!("\nkeyring = \"{}\"\n", keyring_name(keyring))));
    let cargo_config = std::fs::read_to_string(h.cargo_config()).unwrap();
    assert!(
        cargo_config.starts_with("# my own cargo settings\n[build]\njobs = 2 # two cores here\n"),
        "{cargo_config}"
    );
    assert!(cargo_config.contains("# aliases\n[alias]\nb = \"build\"\n"));
    assert!(cargo_config.contains("[source.crates-io]\nreplace-with = \"privreg\"\n"));
    assert!(cargo_config.contains(&format!(
        "[registries.privreg]\nindex = \"sparse+http://{listen}/index/\"\ncredential-provider = [\"cargo-credential-privreg\"]\n"
    )));
    assert_eq!(
        std::fs::read_to_string(format!("{}.privreg-backup", h.cargo_config().display())).unwrap(),
        USER_CARGO_CONFIG
    );
    // auth = true: without the local token the daemon refuses.
    assert_eq!(
        http_get(&listen, "/index/config.json", &[]).unwrap().status,
        401
    );

    // A local registry replaces the public upstream before cargo resolves anything.
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("privreg-install-demo", "1.2.0").lib("pub fn answer() -> u32 { 42 }"));
    let said = h.privreg_ok(&["upstream", "add", "local", &reg.index, "--priority", "600"]);
    assert!(said.contains("added upstream local"), "{said}");
    h.privreg_ok(&["upstream", "remove", "crates-io"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = h.privreg_ok(&["status"]);
        if status.contains("local") && !status.contains("crates-io") {
            assert!(
                status.contains(&format!("http://{listen}/index/")),
                "{status}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reload:\n{status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let project = h.sb.project(
        "app",
        "privreg-install-demo = \"1\"",
        "fn main() { println!(\"answer {}\", privreg_install_demo::answer()); }\n",
    );
    let mut cargo = h.sb.cargo_command(&project, &["run", "--quiet"]);
    cargo
        .env("PATH", h.path())
        .env("PRIVREG_CONFIG_DIR", &h.config)
        .env("PRIVREG_CACHE_DIR", &h.cache);
    let out = cargo.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo run through privreg failed:\n{}\n--- daemon log:\n{}",
        stderr(&out),
        h.daemon_log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "answer 42\n");
    let lock = std::fs::read_to_string(project.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"privreg-install-demo\"\nversion = \"1.2.0\""),
        "{lock}"
    );

    let doctor = h.privreg(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "{text}");
    assert!(text.contains("everything looks right"), "{text}");
    assert!(h.privreg_ok(&["status"]).contains("hits:"));

    // Again: nothing changes, and the daemon keeps running.
    let before = snapshot(&h);
    h.install_sh_ok(&flags);
    assert_eq!(snapshot(&h), before, "a second install.sh changed files");
    assert_eq!(h.pid(), Some(pid));
    assert!(daemon_alive(pid));

    // Repair never depends on the thing being repaired: with the daemon killed, install.sh run
    // as the user runs it (cargo's own config, which now sends crates-io to the dead daemon)
    // builds around it and leaves a daemon that answers.
    let pid = repair_after_kill(&h, &flags, pid);

    // Uninstall: cargo's config byte for byte as the user had it, the daemon stopped.
    let said = h.install_sh_ok(&["--uninstall"]);
    assert!(said.contains("stopped the background daemon"), "{said}");
    assert_eq!(
        std::fs::read_to_string(h.cargo_config()).unwrap(),
        USER_CARGO_CONFIG
    );
    assert!(!daemon_alive(pid), "the daemon still runs");
    assert!(http_get(&listen, "/-/health", &[]).is_err());
    for b in ["privreg", "privreg-daemon", "cargo-credential-privreg"] {
        assert!(!h.bin.join(b).exists(), "{b} still installed");
    }
    assert!(
        h.config.join("config.toml").exists(),
        "config kept without --purge"
    );

    // Install again, then purge: privreg's files and token go too.
    h.install_sh_ok(&flags);
    assert!(h.privreg_ok(&["upstream", "list"]).contains("local"));
    let token_entry = EntryName::local_token(&h.config);
    let store = Keyring::open(keyring).unwrap();
    assert!(store.get(&token_entry).is_ok());
    let pid = h.pid().expect("a pid file");
    h.install_sh_ok(&["--purge"]);
    assert!(!daemon_alive(pid));
    assert!(!h.config.exists() && !h.cache.exists());
    assert!(
        store.get(&token_entry).is_err(),
        "the local token was purged"
    );
    assert_eq!(
        std::fs::read_to_string(h.cargo_config()).unwrap(),
        USER_CARGO_CONFIG
    );
}

/// Kills the daemon with SIGKILL, runs install.sh without `--build-cargo-home` (bounded: it must
/// never hang on the dead daemon), and checks that it built around the daemon, started a new one
/// that answers, and that cargo builds through it. Returns the new daemon's pid.
fn repair_after_kill(h: &Home, flags: &[&str], pid: u32) -> u32 {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while daemon_alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGKILL did not end {pid}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The user's crate cache is the one that built this workspace (so --offline finds every
    // crate); the sandbox's own is put back afterwards.
    let registry = h.sb.cargo_home.join("registry");
    let aside = h.sb.cargo_home.join("registry.sandbox");
    if registry.exists() {
        std::fs::rename(&registry, &aside).unwrap();
    }
    std::os::unix::fs::symlink(env_dir("CARGO_HOME", ".cargo").join("registry"), &registry)
        .unwrap();
    let mut child = h
        .install_sh_command(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run install.sh");
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(15);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("install.sh hung with the daemon killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("install.sh output");
    std::fs::remove_file(&registry).unwrap();
    if aside.exists() {
        std::fs::rename(&aside, &registry).unwrap();
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "repair failed:\n{text}");
    assert!(
        text.contains("no daemon answers; building privreg around it"),
        "{text}"
    );
    let new_pid = h.pid().expect("a pid file");
    assert_ne!(new_pid, pid);
    assert!(daemon_alive(new_pid));
    assert!(h.privreg_ok(&["status"]).contains("hits:"));
    // cargo's config still sends crates-io through privreg, and that works again.
    let cargo_config = std::fs::read_to_string(h.cargo_config()).unwrap();
    assert!(cargo_config.contains("[source.crates-io]\nreplace-with = \"privreg\"\n"));
    let project = h.sb.root.join("app");
    let mut cargo = h.sb.cargo_command(&project, &["run", "--quiet"]);
    cargo
        .env("PATH", h.path())
        .env("PRIVREG_CONFIG_DIR", &h.config)
        .env("PRIVREG_CACHE_DIR", &h.cache);
    let run = cargo.output().expect("run cargo");
    assert!(
        run.status.success(),
        "cargo after the repair:\n{}\n--- daemon log:\n{}",
        stderr(&run),
        h.daemon_log()
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "answer 42\n");
    new_pid
}

#[test]
fn service_files_are_generated_and_valid() {
    let dir = tempdir();
    let daemon = bin("privreg-daemon");
    let run = |args: &[&str]| {
        let out = Command::new(bin("privreg"))
            .args(args)
            .arg("--daemon")
            .arg(&daemon)
            .env("PRIVREG_CONFIG_DIR", dir.path().join("my config"))
            .env("PRIVREG_CACHE_DIR", dir.path().join("cache%1"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };

    let unit = run(&["service", "unit"]);
    let exec = format!(
        "ExecStart=\"{}\" \"--config-dir\" \"{}\" \"--cache-dir\" \"{}\"\n",
        daemon.display(),
        dir.path().join("my config").display(),
        dir.path().join("cache%%1").display()
    );
    for needle in [
        "[Unit]\nDescription=",
        "[Service]\nType=exec\n",
        exec.as_str(),
        "\nRestart=on-failure\n",
        "PRIVREG_LOG=",
        "journalctl --user -u privreg",
        "\nRequires=privreg.socket\nAfter=privreg.socket\n",
    ] {
        assert!(unit.contains(needle), "{needle:?} missing:\n{unit}");
    }
    assert!(
        !unit.contains("[Install]"),
        "the socket starts the service, not login:\n{unit}"
    );
    let unit_file = dir.path().join("privreg.service");
    std::fs::write(&unit_file, &unit).unwrap();
    // The socket unit listens on config.toml's `listen`.
    std::fs::create_dir_all(dir.path().join("my config")).unwrap();
    std::fs::write(
        dir.path().join("my config/config.toml"),
        "listen = \"127.0.0.1:7979\"\n",
    )
    .unwrap();
    let socket = {
        let out = Command::new(bin("privreg"))
            .args(["service", "socket"])
            .env("PRIVREG_CONFIG_DIR", dir.path().join("my config"))
            .env("PRIVREG_CACHE_DIR", dir.path().join("cache%1"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    for needle in [
        "[Socket]\nListenStream=127.0.0.1:7979\n",
        "[Install]\nWantedBy=sockets.target\n",
    ] {
        assert!(socket.contains(needle), "{needle:?} missing:\n{socket}");
    }
    let socket_file = dir.path().join("privreg.socket");
    std::fs::write(&socket_file, &socket).unwrap();
    let analyze = privreg_tests::require_tool("systemd-analyze", "systemd");
    // A private runtime dir lets `--user` verification run without a user manager.
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = Command::new(analyze)
        .args(["--user", "verify"])
        .arg(&socket_file)
        .arg(&unit_file)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify:\n{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("privreg.service") && !stderr(&out).contains("privreg.socket"),
        "systemd-analyze complains:\n{}",
        stderr(&out)
    );

    let plist = run(&["service", "plist"]);
    for needle in [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist",
        "<key>Label</key>\n    <string>privreg</string>",
        &format!("<string>{}</string>", daemon.display()),
        "<string>--config-dir</string>",
        &format!(
            "<string>{}</string>",
            dir.path().join("my config").display()
        ),
        "<key>PRIVREG_LOG</key>",
        "<key>RunAtLoad</key>\n    <true/>",
        "<key>SuccessfulExit</key>\n        <false/>",
        &format!(
            "<string>{}</string>",
            dir.path().join("cache%1/daemon.log").display()
        ),
    ] {
        assert!(plist.contains(needle), "{needle:?} missing:\n{plist}");
    }
    assert_eq!(
        plist.matches("<dict>").count(),
        plist.matches("</dict>").count()
    );
    assert_eq!(
        plist.matches("<array>").count(),
        plist.matches("</array>").count()
    );
}

#[test]
fn install_sh_passes_shellcheck() {
    let out = Command::new(privreg_tests::require_tool("shellcheck", "shellcheck"))
        .arg(repo().join("install.sh"))
        .output()
        .expect("run shellcheck");
    assert!(
        out.status.success(),
        "shellcheck install.sh:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
