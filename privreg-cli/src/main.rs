//! `privreg`: the control CLI (see `privreg --help`).

mod audit;
mod autostart;
mod cargo_config;
mod client;
mod completions;
mod doctor;
mod gc;
mod init;
mod login;
mod page;
mod pin;
mod refresh;
mod report;
mod service;
mod upstream;
mod warm;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use privreg_shared::UpstreamName;
use privreg_shared::config::{CONFIG_FILE, Config};
use privreg_shared::paths;
use privreg_shared::protocol::DaemonState;
use privreg_shared::secrets::{EntryName, Keyring, SecretStore, SecretsError, Token};

/// Controls privreg: setup, upstreams, tokens, pins, policy, status and cargo's configuration.
#[derive(Parser)]
#[command(
    version,
    name = "privreg",
    after_long_help = "Examples:\n  privreg init && privreg cargo-config --install\n  privreg policy serde\n  privreg warm   # before going offline"
)]
pub struct Cli {
    /// Directory holding config.toml and the pin files [env: `PRIVREG_CONFIG_DIR`]
    #[arg(long, global = true)]
    pub config_dir: Option<PathBuf>,
    /// The daemon's cache directory [env: `PRIVREG_CACHE_DIR`]
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create the config directory, a default config.toml and pin file, and the local token.
    ///
    /// Never overwrites a file that exists, nor a token in the keyring; running it again
    /// changes nothing.
    ///
    /// Example: privreg init
    Init(init::InitArgs),
    /// Store the token privreg sends to upstream NAME in the OS keyring (token on stdin, or a
    /// hidden prompt on a terminal). `PRIVREG_TOKEN_<NAME>` wins over it while set.
    ///
    /// With `--shared`: store the shared cache tier's credentials (`KEY_ID:SECRET`), used when
    /// `AWS_ACCESS_KEY_ID` is not set.
    ///
    /// Example: privreg login acme < acme-token.txt
    Login {
        /// The upstream's name in config.toml.
        #[arg(required_unless_present = "shared")]
        name: Option<UpstreamName>,
        /// The shared cache tier (`[cache.shared]`) instead of an upstream.
        #[arg(long, conflicts_with = "name")]
        shared: bool,
    },
    /// Delete the token stored for upstream NAME (or, with `--shared`, the shared cache tier's
    /// credentials) from the OS keyring.
    ///
    /// Example: privreg logout acme
    Logout {
        /// The upstream's name in config.toml.
        #[arg(required_unless_present = "shared")]
        name: Option<UpstreamName>,
        /// The shared cache tier (`[cache.shared]`) instead of an upstream.
        #[arg(long, conflicts_with = "name")]
        shared: bool,
    },
    /// Add, remove, list or check upstream registries (config.toml's `[upstreams.*]`).
    ///
    /// Example: privreg upstream add acme <sparse+https://cargo.acme.example/index>/ --priority 600
    #[command(subcommand)]
    Upstream(upstream::UpstreamCommand),
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
    /// Show the daemon's address, uptime, upstreams, cache and any config or pin error in force.
    ///
    /// Exits non-zero when the daemon does not answer or a config or pin error is in force.
    ///
    /// `--open` opens the status page in the browser instead (a one-time link; with `--print`
    /// the link is printed rather than opened).
    ///
    /// Example: privreg status
    Status(page::StatusArgs),
    /// Check the whole setup and print the command that fixes each problem found.
    ///
    /// Exits non-zero when anything is wrong.
    ///
    /// Example: privreg doctor
    Doctor,
    /// Print, install or uninstall the cargo configuration that sends cargo through privreg.
    ///
    /// `--install` merges it into $`CARGO_HOME/config.toml` (comments and other keys kept, a
    /// backup written the first time); `--uninstall` puts back what was there before.
    ///
    /// Example: privreg cargo-config --install
    CargoConfig(cargo_config::CargoConfigArgs),
    /// Check every cached file against its checksum and drop what is damaged (and temp files a
    /// crash left behind); dropped files are fetched again when needed.
    ///
    /// Example: privreg verify
    Verify,
    /// Remove least recently used crates and index files from the disk cache: down to
    /// --max-size, and those unused for longer than --older-than (without either, `[cache]` in
    /// config.toml decides). Says what it removes and how much it frees; crates of lockfiles
    /// warmed with `privreg warm --keep` stay.
    ///
    /// Works on the cache directory directly (the daemon need not run) and is safe while the
    /// daemon runs: files being served stay readable, and the daemon fetches removed files
    /// again when they are asked for. The daemon also collects on its own, once a day.
    ///
    /// Example: privreg gc --max-size 2GiB --dry-run
    Gc(gc::GcArgs),
    /// Generate service files for the daemon and help install.sh run it.
    ///
    /// Example: privreg service unit > ~/.config/systemd/user/privreg.service
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Delete privreg's tokens from the OS keyring: the local token and every configured
    /// upstream's token (`./install.sh --purge` runs it).
    ///
    /// Example: privreg purge-tokens
    PurgeTokens,
    /// Fetch every index file and crate that lockfiles need through the daemon, so that the next
    /// build works offline.
    ///
    /// Without arguments it warms the current project's Cargo.lock. Packages of the public
    /// registry go through the layered view, those of an upstream's own URL (`registry = "…"`)
    /// through that upstream's view; path and git packages are skipped. Prints what was fetched,
    /// already cached or failed (with the upstream and reason); exits non-zero when anything
    /// failed.
    ///
    /// Example: privreg warm ~/src/app/Cargo.lock ~/src/tool/Cargo.lock
    Warm(warm::WarmArgs),
    /// Make the daemon revalidate its cached index files now instead of when their ttl runs out,
    /// and report what changed (new versions, yanks) per crate and upstream.
    ///
    /// With crate names, each is fetched in full from every upstream; without, every cached
    /// index file is revalidated with a conditional request. Exits non-zero when an upstream
    /// failed.
    ///
    /// Example: privreg refresh acme-core
    Refresh(refresh::RefreshArgs),
    /// Check lockfiles against the policy in force and the RustSec advisory database.
    ///
    /// Reports every locked package that a pin hides or soft-blocks (with the stanza), that is
    /// too young for an `age` pin, that an advisory affects (with its ID and patched versions),
    /// that its upstream yanked, or whose checksum differs from the one privreg first served.
    /// Packages of the public registry are checked in the layered view, those of an upstream's
    /// own URL in that upstream's view; path, git and other registries' packages are skipped
    /// and listed. Exits 1 on any finding, 2 when no advisory database could be loaded.
    ///
    /// Example: privreg audit Cargo.lock --format json
    Audit(audit::AuditArgs),
    /// Print the completion script for a shell.
    ///
    /// bash: source it from ~/.bashrc, or save it to
    /// ~/.local/share/bash-completion/completions/privreg. zsh: save it as `_privreg` in a
    /// directory on $fpath. fish: save it to ~/.config/fish/completions/privreg.fish.
    ///
    /// Example: privreg completions bash > ~/.local/share/bash-completion/completions/privreg
    Completions(completions::CompletionsArgs),
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

    pub fn config_file(&self) -> PathBuf {
        self.config.join(CONFIG_FILE)
    }

    /// The address the running daemon recorded in `<cache-dir>/daemon.json`, if any.
    pub fn recorded_addr(&self) -> Option<String> {
        DaemonState::read(&self.cache).map(|s| s.addr)
    }

    /// `host:port` of the running daemon: what it wrote in `daemon.json`, else `listen`.
    pub fn daemon_addr(&self) -> anyhow::Result<String> {
        if let Some(addr) = self.recorded_addr() {
            return Ok(addr);
        }
        Ok(Config::load(&self.config)?.listen.to_string())
    }

    /// The local token to present to the daemon: `None` when `config` has `auth = false`.
    pub fn local_token(&self, config: &Config) -> Result<Option<Token>, SecretsError> {
        if !config.auth {
            return Ok(None);
        }
        let keyring = Keyring::open(config.keyring)?;
        keyring.get(&EntryName::local_token(&self.config)).map(Some)
    }
}

/// Opens the keyring that `config.toml` chooses (`auto` when there is no config yet).
pub fn open_keyring(dirs: &Dirs) -> anyhow::Result<(Keyring, Config)> {
    let config = Config::load(&dirs.config)?;
    let keyring = Keyring::open(config.keyring)?;
    Ok((keyring, config))
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::new(&cli)?;
    match cli.command {
        Command::Init(args) => init::run(&dirs, &args),
        Command::Login {
            name: Some(name), ..
        } => login::login(&dirs, &name),
        Command::Login { name: None, .. } => login::shared_login(&dirs),
        Command::Logout {
            name: Some(name), ..
        } => login::logout(&dirs, &name),
        Command::Logout { name: None, .. } => login::shared_logout(&dirs),
        Command::PurgeTokens => login::purge(&dirs),
        Command::Upstream(cmd) => upstream::run(&dirs, cmd).await,
        Command::Pin(cmd) => pin::run(&dirs, cmd),
        Command::Policy { krate } => report::policy(&dirs, &krate).await,
        Command::Status(args) if args.open => page::open(&dirs, args.print).await,
        Command::Status(_) => report::status(&dirs).await,
        Command::Doctor => doctor::run(&dirs).await,
        Command::CargoConfig(args) => cargo_config::run(&dirs, &args),
        Command::Verify => {
            let report = privreg_shared::store::Cache::new(&dirs.cache).verify();
            for path in &report.dropped {
                println!("dropped damaged {}", path.display());
            }
            println!(
                "checked {} cached files: {} damaged and dropped, {} temp files removed",
                report.checked,
                report.dropped.len(),
                report.temp_removed
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc(args) => gc::run(&dirs, &args),
        Command::Service(cmd) => service::run(&dirs, cmd).await,
        Command::Warm(args) => warm::run(&dirs, args).await,
        Command::Refresh(args) => refresh::run(&dirs, args).await,
        Command::Audit(args) => audit::run(&dirs, args).await,
        Command::Completions(args) => Ok(completions::run(&args)),
    }
}

/// The daemon's base URL for cargo's config, refusing port 0 (which only the running daemon can
/// resolve into a real port).
pub fn daemon_index_url(dirs: &Dirs) -> anyhow::Result<String> {
    let addr = dirs.daemon_addr()?;
    if addr.ends_with(":0") {
        bail!(
            "{}: `listen` uses port 0 and the daemon is not running, so its port is unknown; start the daemon first",
            dirs.config_file().display()
        );
    }
    Ok(format!("sparse+http://{addr}/index/"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("privreg: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
