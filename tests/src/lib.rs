//! Test harness: real `cargo` in a sandbox (temp `HOME` and `CARGO_HOME`), privreg's real
//! binaries, and real registry servers on 127.0.0.1 as upstreams.
//!
//! Upstreams are cargo's own test registry server (`cargo-test-support`, run as a process by
//! `privreg-test-registry`) and, where built, Kellnr ([`kellnr`]).

pub mod fault;
pub mod http;
pub mod kellnr;
pub mod s3;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub use http::{HttpResponse, http_get};

/// The directory holding the workspace's binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe
        .parent()
        .expect("test binaries live in target/<profile>/deps");
    deps.parent().expect("target/<profile>").to_owned()
}

/// Path of a binary of this workspace, built on first use (so that `cargo test` alone works).
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "privreg-daemon",
                "-p",
                "privreg-cli",
                "-p",
                "privreg-tests",
                "-p",
                "cargo-credential-privreg",
                "--manifest-path",
            ])
            .arg(&manifest)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building privreg's binaries failed");
    });
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("privreg-test-")
        .tempdir()
        .expect("temp dir")
}

/// A crate to publish to a test registry.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pkg {
    pub name: String,
    pub vers: String,
    pub deps: Vec<Dep>,
    pub yanked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lib: Option<String>,
    pub features: std::collections::BTreeMap<String, Vec<String>>,
    /// The index line's `pubtime` (`YYYY-MM-DDTHH:MM:SSZ`); none when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pubtime: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Dep {
    pub name: String,
    pub req: String,
    /// `None`: same registry (or, on an alternative registry, the public one).
    pub registry: Option<String>,
    pub dev: bool,
    pub optional: bool,
}

impl Pkg {
    pub fn new(name: &str, vers: &str) -> Pkg {
        Pkg {
            name: name.into(),
            vers: vers.into(),
            ..Pkg::default()
        }
    }
    #[must_use]
    pub fn dep(mut self, name: &str, req: &str) -> Pkg {
        self.deps.push(Dep {
            name: name.into(),
            req: req.into(),
            registry: None,
            dev: false,
            optional: false,
        });
        self
    }
    #[must_use]
    pub fn dev_dep(mut self, name: &str, req: &str) -> Pkg {
        self.deps.push(Dep {
            name: name.into(),
            req: req.into(),
            registry: None,
            dev: true,
            optional: false,
        });
        self
    }
    /// An optional dependency (switched on by a feature of the same name, or one that names it).
    #[must_use]
    pub fn optional_dep(mut self, name: &str, req: &str) -> Pkg {
        self.deps.push(Dep {
            name: name.into(),
            req: req.into(),
            registry: None,
            dev: false,
            optional: true,
        });
        self
    }
    /// A feature and what it enables (`dep:x`, `x/f`, other features).
    #[must_use]
    pub fn feature(mut self, name: &str, enables: &[&str]) -> Pkg {
        self.features.insert(
            name.into(),
            enables.iter().map(|e| (*e).to_owned()).collect(),
        );
        self
    }
    #[must_use]
    pub fn lib(mut self, src: &str) -> Pkg {
        self.lib = Some(src.into());
        self
    }
    /// Published at `time` (the index line's `pubtime`, e.g. `2025-01-01T00:00:00Z`).
    #[must_use]
    pub fn pubtime(mut self, time: &str) -> Pkg {
        self.pubtime = Some(time.into());
        self
    }
    #[must_use]
    pub fn yanked(mut self) -> Pkg {
        self.yanked = true;
        self
    }
}

/// One of cargo's test registry servers, in its own process.
pub struct Registry {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// `sparse+http://127.0.0.1:PORT/index/`
    pub index: String,
    pub api: String,
    pub token: String,
    alternative: bool,
    dir: tempfile::TempDir,
}

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOpts {
    /// Run as an "alternative" registry: its crates' dependencies without a `registry` then point
    /// at the public registry (cross-registry dependencies), as a private registry's would.
    pub alternative: bool,
    pub auth_required: bool,
    /// Crates whose index files (and the registry's `config.json`) obey [`Registry::mode`] and
    /// are recorded for [`Registry::requests`].
    pub watch: Vec<String>,
    /// `NAME@VER[@VER…]`: crates whose owners, yank and unyank really work and are recorded for
    /// [`Registry::api_requests`] (cargo's server only answers "ok" to them otherwise).
    pub api: Vec<String>,
}

impl Registry {
    pub fn start(opts: RegistryOpts) -> Registry {
        let RegistryOpts {
            alternative,
            auth_required,
            watch,
            api,
        } = opts;
        let dir = tempdir();
        let mut cmd = Command::new(bin("privreg-test-registry"));
        cmd.arg("--root").arg(dir.path());
        if alternative {
            cmd.arg("--alternative");
        }
        if auth_required {
            cmd.arg("--auth-required");
        }
        if !watch.is_empty() {
            cmd.args(["--watch", &watch.join(",")]);
        }
        if !api.is_empty() {
            cmd.args(["--api", &api.join(",")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start privreg-test-registry");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut reg = Registry {
            child,
            stdin,
            stdout,
            index: String::new(),
            api: String::new(),
            token: String::new(),
            alternative,
            dir,
        };
        let ready = reg.read_reply();
        ready["index"]
            .as_str()
            .expect("index url")
            .clone_into(&mut reg.index);
        ready["api"]
            .as_str()
            .expect("api url")
            .clone_into(&mut reg.api);
        ready["token"]
            .as_str()
            .unwrap_or_default()
            .clone_into(&mut reg.token);
        reg
    }

    fn read_reply(&mut self) -> serde_json::Value {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read test registry");
            assert!(n > 0, "test registry exited");
            // The server also prints the paths of downloads; replies are JSON objects.
            if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&line) {
                assert!(v.get("error").is_none(), "test registry: {v}");
                return v;
            }
        }
    }

    fn command(&mut self, cmd: &serde_json::Value) -> serde_json::Value {
        let stdin = self.stdin.as_mut().expect("registry is running");
        writeln!(stdin, "{cmd}").expect("write test registry");
        stdin.flush().expect("flush");
        self.read_reply()
    }

    /// Publishes a crate; returns its checksum.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "ends a builder chain: `reg.publish(Pkg::new(..).dep(..))`"
    )]
    pub fn publish(&mut self, pkg: Pkg) -> String {
        let r = self.command(&serde_json::json!({ "publish": pkg }));
        r["cksum"].as_str().expect("cksum").to_owned()
    }

    /// `ok`, `500`, `503`, `hang`, `slow` or `hold` (answer nothing until the next mode), for the
    /// crates named in [`RegistryOpts::watch`].
    pub fn mode(&mut self, mode: &str) {
        self.command(&serde_json::json!({ "mode": mode }));
    }

    /// The requests made so far for the watched crates' index files (path, `if_none_match`,
    /// `if_modified_since`, `authorization`).
    pub fn requests(&mut self) -> Vec<serde_json::Value> {
        let r = self.command(&serde_json::json!({ "requests": true }));
        r["requests"].as_array().expect("requests").clone()
    }

    /// The owners, yank and unyank requests so far for the crates in [`RegistryOpts::api`]
    /// (`method`, `path`, `authorization`, `body`).
    pub fn api_requests(&mut self) -> Vec<serde_json::Value> {
        let r = self.command(&serde_json::json!({ "api": true }));
        r["api"].as_array().expect("api").clone()
    }

    fn registry_root(&self) -> PathBuf {
        self.dir.path().join("cit/registry")
    }

    /// The index file of `krate` as the server stores it.
    pub fn index_file(&self, krate: &str) -> PathBuf {
        let reg = if self.alternative {
            "alternative-registry"
        } else {
            "registry"
        };
        let lower = krate.to_ascii_lowercase();
        let rel = match lower.len() {
            1 => format!("1/{lower}"),
            2 => format!("2/{lower}"),
            3 => format!("3/{}/{lower}", &lower[..1]),
            _ => format!("{}/{}/{lower}", &lower[..2], &lower[2..4]),
        };
        self.registry_root().join(reg).join(rel)
    }

    /// The `.crate` file of a version as the server stores it.
    pub fn crate_file(&self, krate: &str, vers: &str) -> PathBuf {
        let dl = if self.alternative {
            "alternative-dl"
        } else {
            "dl"
        };
        self.registry_root()
            .join(dl)
            .join(krate)
            .join(vers)
            .join("download")
    }

    /// The host:port the registry listens on.
    pub fn addr(&self) -> String {
        self.index
            .trim_start_matches("sparse+http://")
            .trim_end_matches("/index/")
            .to_owned()
    }

    pub fn stop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A privreg daemon with its own config and cache directories.
pub struct Privreg {
    child: Option<Child>,
    pub config_dir: PathBuf,
    pub cache_dir: PathBuf,
    log: PathBuf,
    /// `127.0.0.1:PORT`
    pub addr: String,
    env: Vec<(String, String)>,
    /// A command the daemon runs under (its arguments first), e.g. `prlimit --nofile=1024:1024`.
    wrapper: Vec<String>,
    /// Holds the config and cache directories and the log; removed on drop.
    dir: tempfile::TempDir,
}

impl Privreg {
    /// Writes `config_toml` and starts the daemon (with `listen` on a free port unless the text
    /// sets one).
    pub fn start(config_toml: &str) -> Privreg {
        let mut p = Privreg::new(config_toml);
        p.spawn().expect("privreg-daemon starts");
        p
    }

    /// Writes `config_toml` but does not start the daemon yet (see [`Privreg::spawn`]).
    pub fn new(config_toml: &str) -> Privreg {
        let dir = tempdir();
        let config_dir = dir.path().join("config");
        let cache_dir = dir.path().join("cache");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        let config = if config_toml.contains("listen") {
            config_toml.to_owned()
        } else {
            format!("listen = \"127.0.0.1:0\"\n{config_toml}")
        };
        std::fs::write(config_dir.join("config.toml"), config).expect("write config.toml");
        let log = dir.path().join("daemon.log");
        Privreg {
            child: None,
            config_dir,
            cache_dir,
            log,
            addr: String::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
            dir,
        }
    }

    /// Adds an environment variable for the daemon (before [`Privreg::spawn`]).
    pub fn env(&mut self, key: &str, value: &str) -> &mut Privreg {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the daemon under `command` (before [`Privreg::spawn`]): `command[0]` is started with
    /// the rest of `command`, then the daemon's path and arguments. The command must exec the
    /// daemon (as `prlimit` does), so the process is the daemon's.
    pub fn wrapper(&mut self, command: &[&str]) -> &mut Privreg {
        self.wrapper = command.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// The directory holding everything of this daemon: config, cache and its log.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the daemon process; `Err` with its log if it exits instead of becoming healthy.
    pub fn spawn(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.cache_dir.join("daemon.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = match self.wrapper.split_first() {
            None => Command::new(bin("privreg-daemon")),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("privreg-daemon"));
                c
            }
        };
        let mut child = command
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .env("PRIVREG_LOG", "debug,hyper=info,reqwest=info,h2=info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn privreg-daemon");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return Err(format!(
                    "privreg-daemon exited with {status}:\n{}",
                    self.log()
                ));
            }
            if let Ok(info) = std::fs::read(self.cache_dir.join("daemon.json")) {
                let v: serde_json::Value = serde_json::from_slice(&info).expect("daemon.json");
                v["addr"].as_str().expect("addr").clone_into(&mut self.addr);
                if http_get(&self.addr, "/-/health", &[]).is_ok_and(|r| r.status == 200) {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "privreg-daemon did not become healthy:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `sparse+http://ADDR/index/`
    pub fn index_url(&self) -> String {
        format!("sparse+http://{}/index/", self.addr)
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(&self.addr, path, &[]).expect("request to privreg")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL, as a crash or an OOM kill would, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the `privreg` CLI against this daemon's directories.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("privreg"))
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run privreg")
    }

    /// Runs the CLI with `input` on stdin.
    pub fn cli_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut cmd = Command::new(bin("privreg"));
        cmd.arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(args);
        run_with_stdin(&mut cmd, input)
    }

    /// Runs the CLI and returns its stdout, panicking unless it succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "privreg {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `check` until it holds, for at most `secs` seconds; panics with the log otherwise.
    pub fn within(&self, secs: f64, what: &str, mut check: impl FnMut(&Privreg) -> bool) {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs}s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A GET of one of the daemon's paths with this `Authorization` (none: `auth = false`).
    fn get_as(&self, authorization: Option<&str>, path: &str) -> HttpResponse {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        http_get(&self.addr, path, &headers).expect("request to privreg")
    }

    /// Waits until the daemon has written every index file and record it queued for the disk
    /// (it writes them behind the requests), so that the test can read the cache directory.
    /// `token`: the daemon's local token when it runs with `auth = true`.
    pub fn settled(&self, token: Option<&str>) {
        self.within(30.0, "the cache writes queued by the daemon", |p| {
            // As cargo and the CLI send it.
            let r = p.get_as(token, "/-/status");
            r.status == 200
                && serde_json::from_slice::<serde_json::Value>(&r.body)
                    .is_ok_and(|v| v["disk"]["writes_waiting"] == 0)
        });
    }

    /// A counter or gauge from `/metrics` (summed over its label sets; 0 when absent). `token`:
    /// the daemon's local token when it runs with `auth = true`.
    pub fn metric(&self, name: &str, token: Option<&str>) -> f64 {
        // As a metrics scraper sends it.
        let bearer = token.map(|t| format!("Bearer {t}"));
        let r = self.get_as(bearer.as_deref(), "/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        r.text()
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// How many times the daemon has reloaded its config and pins (good or not): the generation
    /// of what is in force. Read it before a change, then [`Privreg::wait_reload`].
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a counter: a whole number, not negative, far below 2^52"
    )]
    pub fn reloads(&self, token: Option<&str>) -> u64 {
        self.metric("privreg_config_reloads_total", token) as u64
    }

    /// Waits until the daemon has reloaded since `before` (from [`Privreg::reloads`], read before
    /// the change). The bound only turns a reload that never comes into a failure with the log.
    pub fn wait_reload(&self, before: u64, token: Option<&str>, what: &str) {
        self.within(60.0, &format!("a reload after {what}"), |p| {
            p.reloads(token) > before
        });
    }

    pub fn write_config(&self, config_toml: &str) {
        std::fs::write(self.config_dir.join("config.toml"), config_toml)
            .expect("write config.toml");
    }
}

impl Drop for Privreg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A temp `HOME` and `CARGO_HOME` in which the real `cargo` runs.
pub struct Sandbox {
    pub root: PathBuf,
    pub home: PathBuf,
    pub cargo_home: PathBuf,
    target: PathBuf,
    _dir: tempfile::TempDir,
}

fn rustup_home() -> PathBuf {
    std::env::var_os("RUSTUP_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".rustup"),
        PathBuf::from,
    )
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempdir();
        let root = dir.path().to_owned();
        let home = root.join("home");
        let cargo_home = home.join(".cargo");
        std::fs::create_dir_all(&cargo_home).expect("cargo home");
        Sandbox {
            target: root.join("target"),
            root,
            home,
            cargo_home,
            _dir: dir,
        }
    }

    /// Points cargo at privreg: `crates-io` replaced by the layered view.
    pub fn use_privreg(&self, p: &Privreg) {
        self.write_cargo_config(&format!(
            "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"{}\"\n\n[net]\nretry = 0\n",
            p.index_url()
        ));
    }

    pub fn write_cargo_config(&self, text: &str) {
        std::fs::write(self.cargo_home.join("config.toml"), text).expect("write cargo config");
    }

    /// A fresh `CARGO_HOME` (same cargo config), as on a new machine.
    pub fn fresh_cargo_home(&self) {
        let config = std::fs::read(self.cargo_home.join("config.toml")).ok();
        std::fs::remove_dir_all(&self.cargo_home).expect("remove cargo home");
        std::fs::create_dir_all(&self.cargo_home).expect("cargo home");
        if let Some(c) = config {
            std::fs::write(self.cargo_home.join("config.toml"), c).expect("restore cargo config");
        }
    }

    /// Creates a binary project with the given `[dependencies]` lines and `main.rs`.
    pub fn project(&self, name: &str, deps: &str, main_rs: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(dir.join("src")).expect("project dir");
        std::fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}\n"),
        )
        .expect("manifest");
        std::fs::write(dir.join("src/main.rs"), main_rs).expect("main.rs");
        dir
    }

    /// A library crate `name` at `version` in the sandbox, ready for `cargo publish`.
    pub fn library(&self, name: &str, version: &str) -> PathBuf {
        let dir = self.root.join(format!("{name}-{version}"));
        std::fs::create_dir_all(dir.join("src")).expect("library dir");
        std::fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\ndescription = \"published through privreg\"\nlicense = \"MIT\"\n"),
        )
        .expect("manifest");
        std::fs::write(
            dir.join("src/lib.rs"),
            format!("pub const VERSION: &str = \"{version}\";\n"),
        )
        .expect("lib.rs");
        dir
    }

    /// Runs the real cargo in `dir` with the sandbox's environment.
    pub fn cargo(&self, dir: &Path, args: &[&str]) -> Output {
        self.cargo_env(dir, args, &[])
    }

    /// Runs the real cargo in `dir` with the sandbox's environment plus `env`.
    pub fn cargo_env(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.cargo_command(dir, args)
            .envs(env.iter().copied())
            .output()
            .expect("run cargo")
    }

    /// The real cargo, set up to run in `dir` with the sandbox's environment (stdin closed).
    pub fn cargo_command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("cargo");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CARGO") || k == "RUSTC_WRAPPER" || k == "RUSTFLAGS"
            {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(dir)
            .args(args)
            .env("HOME", &self.home)
            .env("CARGO_HOME", &self.cargo_home)
            .env("RUSTUP_HOME", rustup_home())
            .env("CARGO_TARGET_DIR", &self.target)
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_HTTP_TIMEOUT", "20")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs cargo and panics with its output unless it succeeds.
    pub fn cargo_ok(&self, dir: &Path, args: &[&str]) -> Output {
        let out = self.cargo(dir, args);
        assert!(
            out.status.success(),
            "cargo {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// The `(name, version)` pairs recorded in a project's Cargo.lock.
pub fn locked_packages(project: &Path) -> Vec<(String, String)> {
    let lock = std::fs::read_to_string(project.join("Cargo.lock")).expect("Cargo.lock");
    let mut out = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let Some(v) = line.strip_prefix("version = ")
            && let Some(n) = name.take()
        {
            out.push((n, v.trim_matches('"').to_owned()));
        }
    }
    out
}

/// The OS keyring these tests run against, from `PRIVREG_TEST_KEYRING` (`keyutils` or
/// `secret-service`, set by `tests/support/keyrings.sh`). Panics, saying how to provide one, when
/// it is unset: a test that cannot run fails rather than passing without having run.
pub fn test_keyring(test: &str) -> privreg_shared::config::KeyringChoice {
    use privreg_shared::config::KeyringChoice;
    match std::env::var("PRIVREG_TEST_KEYRING").ok().as_deref() {
        Some("keyutils") => KeyringChoice::Keyutils,
        Some("secret-service") => KeyringChoice::SecretService,
        None | Some("") => panic!(
            "{test} needs an OS keyring and PRIVREG_TEST_KEYRING: run it under \
             `tests/support/keyrings.sh keyutils -- cargo test …` (Debian package keyutils) or \
             `tests/support/keyrings.sh secret-service -- cargo test …` (dbus-daemon, dbus-bin, \
             gnome-keyring, libsecret-tools); tests/run.sh does both"
        ),
        Some(other) => panic!("PRIVREG_TEST_KEYRING={other:?}: use keyutils or secret-service"),
    }
}

/// `program`'s path on `PATH`; panics, naming the Debian package to install, when it is missing
/// (a test that needs it fails rather than passing without having checked anything).
pub fn require_tool(program: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} not found on PATH: install Debian's {package} (tests/run.sh does)")
        })
}

/// The `keyring = …` value for a choice.
pub fn keyring_name(choice: privreg_shared::config::KeyringChoice) -> &'static str {
    use privreg_shared::config::KeyringChoice;
    match choice {
        KeyringChoice::Auto => "auto",
        KeyringChoice::Keyutils => "keyutils",
        KeyringChoice::SecretService => "secret-service",
    }
}

/// A keyring entry that is deleted when dropped (tests share the user's persistent keyring).
pub struct KeyringEntry {
    keyring: privreg_shared::secrets::Keyring,
    name: privreg_shared::secrets::EntryName,
}

impl KeyringEntry {
    pub fn set(
        choice: privreg_shared::config::KeyringChoice,
        name: privreg_shared::secrets::EntryName,
        token: &str,
    ) -> KeyringEntry {
        use privreg_shared::secrets::{Keyring, SecretStore, Token};
        let keyring = Keyring::open(choice).expect("the test keyring opens");
        keyring
            .set(&name, &Token::new(token).expect("token"))
            .expect("store the token");
        KeyringEntry { keyring, name }
    }
}

impl KeyringEntry {
    /// Deletes an entry that something else stored, when dropped.
    pub fn cleanup(
        choice: privreg_shared::config::KeyringChoice,
        name: privreg_shared::secrets::EntryName,
    ) -> KeyringEntry {
        let keyring =
            privreg_shared::secrets::Keyring::open(choice).expect("the test keyring opens");
        KeyringEntry { keyring, name }
    }
}

impl Drop for KeyringEntry {
    fn drop(&mut self) {
        use privreg_shared::secrets::SecretStore;
        let _ = self.keyring.delete(&self.name);
    }
}

/// A random token for tests (never a fixed string, so finding it anywhere is a real leak).
pub fn random_token(tag: &str) -> String {
    use sha2::Digest;
    let seed = format!(
        "{tag}-{:?}-{}",
        std::time::SystemTime::now(),
        std::process::id()
    );
    format!(
        "{tag}-{}",
        hex::encode(sha2::Sha256::digest(seed.as_bytes()))
    )
}

/// Runs `cmd` with `input` on stdin and collects its output.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` whose bytes contain `needle` (a token must never be found).
pub fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

/// The stderr of a command, for assertions.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
