//! Real cargo in a sandbox: temp `HOME` and `CARGO_HOME`, `RUSTUP_HOME` exported with its real
//! value, every other `CARGO_*` variable removed, and `crates-io` replaced by the registry under
//! test (or left alone to go straight to the public registry).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::daemon::tail;

/// The cargo binary and the environment every sandbox starts from.
#[derive(Debug, Clone)]
pub(crate) struct Cargo {
    bin: PathBuf,
    rustup_home: PathBuf,
}

impl Cargo {
    /// `$CARGO` (the toolchain's own cargo when run by `cargo run`), else `cargo` from `PATH`.
    pub(crate) fn detect() -> Cargo {
        let bin = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
        let rustup_home = std::env::var_os("RUSTUP_HOME").map_or_else(
            || {
                let home = std::env::var_os("HOME").unwrap_or_default();
                PathBuf::from(home).join(".rustup")
            },
            PathBuf::from,
        );
        Cargo { bin, rustup_home }
    }

    pub(crate) fn bin(&self) -> &Path {
        &self.bin
    }
}

/// Where cargo gets its crates in a sandbox.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// `crates-io` replaced by this sparse index URL.
    Replaced(&'a str),
    /// cargo's default: the public registry.
    Public,
}

/// A project (the benchmark manifest) with its own `HOME` and `CARGO_HOME`.
pub(crate) struct Sandbox {
    pub home: PathBuf,
    pub cargo_home: PathBuf,
    pub project: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    /// `dependencies`: the body of the manifest's `[dependencies]` table.
    pub(crate) fn new(
        parent: &Path,
        dependencies: &str,
        source: Source<'_>,
    ) -> anyhow::Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix("sandbox-")
            .tempdir_in(parent)?;
        let home = dir.path().join("home");
        let cargo_home = home.join(".cargo");
        let project = dir.path().join("app");
        std::fs::create_dir_all(&cargo_home)?;
        std::fs::create_dir_all(project.join("src"))?;
        std::fs::write(
            project.join("Cargo.toml"),
            format!(
                "[package]\nname = \"bench-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{dependencies}"
            ),
        )?;
        std::fs::write(project.join("src/main.rs"), "fn main() {}\n")?;
        if let Source::Replaced(index) = source {
            std::fs::write(
                cargo_home.join("config.toml"),
                format!(
                    "[source.crates-io]\nreplace-with = \"bench\"\n\n[registries.bench]\nindex = \"{index}\"\n"
                ),
            )?;
        }
        Ok(Sandbox {
            home,
            cargo_home,
            log: dir.path().join("cargo.log"),
            project,
            _dir: dir,
        })
    }

    /// Runs `cargo ARGS` in the project; returns how long it took.
    pub(crate) fn run(&self, cargo: &Cargo, args: &[&str]) -> anyhow::Result<Duration> {
        let mut cmd = Command::new(cargo.bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CARGO_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("RUSTUP_HOME", &cargo.rustup_home)
            .env("HOME", &self.home)
            .env("CARGO_HOME", &self.cargo_home)
            .env("CARGO_TERM_COLOR", "never")
            .args(args)
            .current_dir(&self.project)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log)?);
        let start = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", cargo.bin().display()))?;
        let took = start.elapsed();
        if !status.success() {
            bail!(
                "cargo {} failed ({status}):\n{}",
                args.join(" "),
                tail(&self.log, 25)
            );
        }
        Ok(took)
    }

    pub(crate) fn lockfile(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.project.join("Cargo.lock"))?)
    }

    pub(crate) fn set_lockfile(&self, text: &str) -> anyhow::Result<()> {
        Ok(std::fs::write(self.project.join("Cargo.lock"), text)?)
    }

    /// Forgets downloaded and unpacked crates, keeping cargo's index cache.
    pub(crate) fn clear_downloads(&self) -> anyhow::Result<()> {
        self.clear(&["registry/cache", "registry/src"])
    }

    /// Removes the unpacked sources only: the `.crate` files stay.
    pub(crate) fn clear_sources(&self) -> anyhow::Result<()> {
        self.clear(&["registry/src"])
    }

    fn clear(&self, subs: &[&str]) -> anyhow::Result<()> {
        for sub in subs {
            let p = self.cargo_home.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p)?;
            }
        }
        Ok(())
    }
}

/// Number of packages in a lockfile, the root package excluded.
pub(crate) fn locked_packages(lockfile: &str) -> usize {
    lockfile
        .lines()
        .filter(|l| l.trim() == "[[package]]")
        .count()
        .saturating_sub(1)
}

/// A locked registry package: name, version, checksum.
#[derive(Debug, Clone)]
pub(crate) struct Locked {
    pub name: String,
    pub version: String,
    pub checksum: String,
}

/// The registry packages of a lockfile (those with a checksum).
pub(crate) fn locked_crates(lockfile: &str) -> Vec<Locked> {
    let mut out = Vec::new();
    for block in lockfile.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(" = ")?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(name), Some(version), Some(checksum)) =
            (field("name"), field("version"), field("checksum"))
        {
            out.push(Locked {
                name,
                version,
                checksum,
            });
        }
    }
    out
}
