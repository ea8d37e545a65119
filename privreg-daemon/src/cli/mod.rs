//! The `privreg` control CLI.

mod pin;
mod report;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use privreg_shared::config::Config;
use privreg_shared::paths;

/// Controls privreg: pins, policy, status and cargo's configuration.
#[derive(Parser)]
#[command(version, name = "privreg")]
pub struct Cli {
    /// Directory holding config.toml and the pin files [env: PRIVREG_CONFIG_DIR]
    #[arg(long, global = true)]
    pub config_dir: Option<PathBuf>,
    /// The daemon's cache directory [env: PRIVREG_CACHE_DIR]
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Edit and list the pin file (`preferences`, `preferences.d/*.pref`).
    ///
    /// Example: privreg pin add --package 'acme-*' --pin 'registry crates-io' --priority never
    #[command(subcommand)]
    Pin(pin::PinCommand),
    /// Show every version of a crate from every upstream and why it is served or not.
    ///
    /// Example: privreg policy serde
    Policy {
        /// The crate's name.
        krate: String,
    },
    /// Show the daemon's address, upstreams and any config or pin error in force.
    ///
    /// Exits non-zero when the daemon does not answer or a config or pin error is in force.
    /// Example: privreg status
    Status,
    /// Print the cargo configuration that sends cargo through privreg.
    ///
    /// Example: privreg cargo-config >> ~/.cargo/config.toml
    CargoConfig,
}

/// Where the CLI finds things.
pub struct Dirs {
    pub config: PathBuf,
    pub cache: PathBuf,
}

impl Dirs {
    fn new(cli: &Cli) -> anyhow::Result<Dirs> {
        Ok(Dirs {
            config: paths::config_dir(cli.config_dir.clone())
                .context("no config directory; pass --config-dir")?,
            cache: paths::cache_dir(cli.cache_dir.clone())
                .context("no cache directory; pass --cache-dir")?,
        })
    }

    /// `host:port` of the running daemon: what it wrote in `daemon.json`, else `listen`.
    pub fn daemon_addr(&self) -> anyhow::Result<String> {
        if let Ok(data) = std::fs::read(self.cache.join("daemon.json"))
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data)
            && let Some(addr) = v["addr"].as_str()
        {
            return Ok(addr.to_owned());
        }
        Ok(Config::load(&self.config)?.listen.to_string())
    }

    /// GETs a JSON document from the daemon.
    pub async fn daemon_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let addr = self.daemon_addr()?;
        let url = format!("http://{addr}{path}");
        let resp = reqwest::get(&url).await.with_context(|| {
            format!(
                "the daemon does not answer at {addr}; start it (privreg-daemon) or check `listen`"
            )
        })?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        if !status.is_success() {
            bail!("the daemon answered {status} for {path}: {}", body.trim());
        }
        serde_json::from_str(&body)
            .with_context(|| format!("the daemon's answer for {path} is not JSON"))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let dirs = Dirs::new(&cli)?;
    match cli.command {
        Command::Pin(cmd) => pin::run(&dirs, cmd),
        Command::Policy { krate } => report::policy(&dirs, &krate).await,
        Command::Status => report::status(&dirs).await,
        Command::CargoConfig => {
            let addr = dirs.daemon_addr()?;
            print!("{}", cargo_config(&addr));
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// The cargo configuration of DESIGN.md for a daemon at `addr`.
pub fn cargo_config(addr: &str) -> String {
    format!(
        "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"sparse+http://{addr}/index/\"\ncredential-provider = [\"cargo-credential-privreg\"]\n"
    )
}
