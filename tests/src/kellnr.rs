//! Kellnr (a real registry server, built by `tests/support/build-kellnr.sh`) as an upstream.
//! Crates reach it through real `cargo publish`. See `tests/support/KELLNR.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Pkg, Sandbox, http_get, stderr, tempdir};

/// The Kellnr binary: `$PRIVREG_KELLNR_BIN`, else the cache `build-kellnr.sh` fills.
pub fn kellnr_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PRIVREG_KELLNR_BIN") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("PRIVREG_TEST_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/privreg-tests"),
        PathBuf::from,
    );
    cache.join("kellnr-6.13.0/bin/kellnr")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running Kellnr with its own data directory.
pub struct Kellnr {
    child: Option<Child>,
    pub port: u16,
    /// The admin's cargo token.
    pub token: String,
    /// Where crates are published from: crates-io there is `public_index` (if given).
    publisher: Sandbox,
    _data: tempfile::TempDir,
}

impl Kellnr {
    /// Starts Kellnr. Its crates' dependencies on `crates-io` resolve, at publish time, against
    /// `public_index` (a test registry standing in for the public one).
    pub fn start(auth_required: bool, public_index: Option<&str>) -> Kellnr {
        let bin = kellnr_bin();
        assert!(
            bin.is_file(),
            "{} is missing: run tests/support/build-kellnr.sh (tests/run.sh does)",
            bin.display()
        );
        let data = tempdir();
        let token: String =
            format!("kellnr-admin-{}", std::process::id()) + &free_port().to_string();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("support/run-kellnr.sh");
        for _attempt in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(data.path().join("kellnr.log")).expect("log");
            let mut child = Command::new("sh")
                .arg(&script)
                .arg(data.path().join("data"))
                .arg(port.to_string())
                .arg(&token)
                .arg(auth_required.to_string())
                .env("KELLNR_BIN", &bin)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start kellnr");
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = loop {
                if child.try_wait().expect("wait").is_some() {
                    break false; // e.g. the port was taken in between: try another
                }
                if http_get(&format!("127.0.0.1:{port}"), "/api/v1/health", &[])
                    .is_ok_and(|r| r.status == 200)
                {
                    break true;
                }
                assert!(Instant::now() < deadline, "kellnr did not start");
                std::thread::sleep(Duration::from_millis(50));
            };
            if ready {
                let publisher = Sandbox::new();
                let mut config = format!(
                    "[registries.kellnr]\nindex = \"sparse+http://127.0.0.1:{port}/api/v1/crates/\"\ncredential-provider = [\"cargo:token\"]\n"
                );
                if let Some(public) = public_index {
                    let _ = writeln!(
                        config,
                        "\n[source.crates-io]\nreplace-with = \"public\"\n\n[registries.public]\nindex = \"{public}\""
                    );
                }
                publisher.write_cargo_config(&config);
                return Kellnr {
                    child: Some(child),
                    port,
                    token,
                    publisher,
                    _data: data,
                };
            }
        }
        panic!(
            "kellnr did not start:\n{}",
            std::fs::read_to_string(data.path().join("kellnr.log")).unwrap_or_default()
        );
    }

    /// `sparse+http://127.0.0.1:PORT/api/v1/crates/`
    pub fn index(&self) -> String {
        format!("sparse+http://127.0.0.1:{}/api/v1/crates/", self.port)
    }

    /// Publishes `pkg` with real `cargo publish`; its dependencies come from crates-io.
    pub fn publish(&self, pkg: &Pkg) {
        let dir = self
            .publisher
            .root
            .join(format!("{}-{}", pkg.name, pkg.vers));
        std::fs::create_dir_all(dir.join("src")).expect("crate dir");
        let deps = pkg.deps.iter().fold(String::new(), |mut deps, d| {
            let _ = writeln!(deps, "{} = \"{}\"", d.name, d.req);
            deps
        });
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{}\"\nversion = \"{}\"\nedition = \"2021\"\ndescription = \"test crate\"\nlicense = \"MIT\"\npublish = [\"kellnr\"]\n\n[dependencies]\n{deps}",
                pkg.name, pkg.vers
            ),
        )
        .expect("manifest");
        std::fs::write(dir.join("src/lib.rs"), pkg.lib.as_deref().unwrap_or("")).expect("lib.rs");
        let out = self.publisher.cargo_env(
            &dir,
            &[
                "publish",
                "--registry",
                "kellnr",
                "--no-verify",
                "--allow-dirty",
            ],
            &[("CARGO_REGISTRIES_KELLNR_TOKEN", &self.token)],
        );
        assert!(
            out.status.success(),
            "publishing {} {} to kellnr failed:\n{}",
            pkg.name,
            pkg.vers,
            stderr(&out)
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `sh` execs kellnr, so this is kellnr's pid.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Kellnr {
    fn drop(&mut self) {
        self.stop();
    }
}
