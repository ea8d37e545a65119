//! `privreg-daemon`: the per-developer registry daemon (foreground; logs to stderr).
//!
//! privreg's daemon: a layered, cached sparse registry in front of several upstreams.
//!
//! The policy is pure (`privreg_shared::policy`); this crate adds the network at the edges:
//! [`upstream`] talks to upstreams, [`privreg_shared::store`] keeps their answers on disk, [`layered`] merges,
//! [`download`] verifies crates, and [`server`] answers cargo.

mod advisories;
mod api;
mod audit;
mod auth;
mod body;
mod conns;
mod daemon;
mod download;
mod gc;
mod h2c;
mod keyed;
mod layered;
mod metrics;
mod page;
mod prefetch;
mod refresh;
mod reload;
mod server;
mod session;
mod shared_tier;
mod status;
mod tokens;
mod upstream;
mod view;

use std::path::PathBuf;
use std::sync::Arc;

use crate::daemon::Daemon;
use anyhow::Context;
use clap::Parser;
use privreg_shared::paths;
use privreg_shared::protocol::DaemonState;
use privreg_shared::secrets::{EntryName, Keyring, SecretStore};

/// Serves a layered, cached sparse index of every configured upstream to cargo.
///
/// Example: privreg-daemon --config-dir ~/.config/privreg --cache-dir ~/.cache/privreg
#[derive(Parser)]
#[command(version)]
#[allow(
    clippy::doc_markdown,
    reason = "clap prints these comments as the --help text, where backticks would show"
)]
struct Args {
    /// Directory holding config.toml and the pin files [env: PRIVREG_CONFIG_DIR]
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Directory for cached index files and crates [env: PRIVREG_CACHE_DIR]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PRIVREG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// How long a stopping daemon waits for the cache writes it queued.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; stopping"),
    }
}

fn main() -> std::process::ExitCode {
    init_logging();
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("privreg-daemon: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The listening socket a service manager handed over, so that the first cargo request after
/// login or a crash starts the daemon: systemd socket activation (`LISTEN_FDS` and `LISTEN_PID`),
/// else the launchd agent's `Sockets` entry on macOS. `None` when nothing was handed over; then
/// the daemon binds `listen` itself.
fn inherited_listener() -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let (listener, manager, fix) = if fds.len() > 0 {
        if fds.len() > 1 {
            tracing::warn!(
                sockets = fds.len(),
                "the service manager handed over several sockets; using the first"
            );
        }
        let listener = fds
            .take_tcp_listener(0)
            .context("the socket the service manager handed over (LISTEN_FDS) is unusable")?
            .context(
                "the socket the service manager handed over (LISTEN_FDS) is not a TCP listener",
            )?;
        (listener, "systemd", "ListenStream= in privreg.socket")
    } else {
        let mut launchd = privreg_launchd::activated_listeners(privreg_launchd::SOCKET_NAME)?;
        if launchd.len() > 1 {
            tracing::warn!(
                sockets = launchd.len(),
                "launchd handed over several sockets; using the first"
            );
        }
        if launchd.is_empty() {
            return Ok(None);
        }
        let listener = launchd.swap_remove(0);
        (listener, "launchd", "Sockets in the launchd agent's plist")
    };
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "the socket {manager} handed over listens on {addr}, which is not loopback; \
             privreg serves only this machine (fix {fix})"
        );
    }
    listener.set_nonblocking(true)?;
    tracing::info!(%addr, manager, "listening on the socket the service manager handed over");
    Ok(Some(tokio::net::TcpListener::from_std(listener)?))
}

/// Raises the open-files limit from its soft to its hard limit (every client connection takes
/// one), and warns when `limits.max-connections` leaves too few for the cache and upstreams.
fn raise_open_files(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(open_files = limit, max_connections, "open-files limit");
            // Cache files, upstream connections and the listener need some to spare.
            if (max_connections as u64).saturating_add(128) > limit {
                tracing::warn!(
                    open_files = limit,
                    max_connections,
                    "limits.max-connections leaves fewer than 128 open files for the cache and \
                     upstreams; lower it or raise the open-files limit (ulimit -n)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config_dir =
        paths::config_dir(args.config_dir).context("no config directory; pass --config-dir")?;
    let cache_dir =
        paths::cache_dir(args.cache_dir).context("no cache directory; pass --cache-dir")?;
    let runtime = crate::reload::load(&config_dir, 1)?;
    let config = runtime.config.clone();
    raise_open_files(config.limits.max_connections);
    // With `auth = true` the keyring must answer and hold the local token; without, upstream
    // tokens are read from it lazily (or from the environment).
    let (local_token, keyring) = if config.auth {
        let keyring =
            Keyring::open(config.keyring).context("`auth = true` needs the OS keyring")?;
        let token = keyring
            .get(&EntryName::local_token(&config_dir))
            .context("`auth = true` needs the local token")?;
        (Some(token), Some(keyring))
    } else {
        (None, None)
    };
    let listener = match inherited_listener()? {
        Some(listener) => listener,
        None => tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?,
    };
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| format!("{} ({})", u.name, u.priority))
        .collect();
    let daemon = Arc::new(Daemon::new(
        runtime,
        config_dir,
        cache_dir.clone(),
        base_url.clone(),
        local_token,
        keyring,
    ));
    crate::reload::watch(daemon.clone()).context("cannot watch the config directory")?;
    crate::prefetch::start(daemon.clone());
    // The advisory database's last good copy loads in the background; start never waits for it.
    crate::advisories::start(daemon.clone());
    // Nothing walks the cache here, so that start time does not grow with it: the collector
    // measures it, and removes temp files a crash left behind, in the background.
    crate::gc::start(daemon.clone());
    crate::shared_tier::start_packs(daemon.clone());
    daemon
        .upstreams()
        .shared()
        .preload(&daemon.runtime().config.upstreams);
    crate::upstream::deferred::start(daemon.upstreams().clone());

    let state = DaemonState::path(&cache_dir);
    let info = DaemonState {
        addr: addr.to_string(),
        pid: std::process::id(),
    };
    privreg_shared::store::write_atomic(&state, &info.to_bytes())?;
    tracing::info!(url = %format!("{base_url}/index/"), upstreams = %upstreams.join(", "), "privreg-daemon listening");

    let cache = daemon.cache().clone();
    crate::server::serve(daemon.clone(), listener, shutdown_signal()).await;
    // A stopping daemon (a CI runner's job ends) leaves its index pack for the next one.
    let packs = tokio::time::timeout(
        SHUTDOWN_FLUSH,
        daemon.write_packs(std::time::Duration::ZERO),
    );
    if packs.await.is_err() {
        tracing::warn!("the index pack was not written in time at exit");
    }
    // The local copies put off, then what is still queued for the disk, are written before the
    // process ends.
    let upstreams = daemon.upstreams().clone();
    let copies =
        tokio::task::spawn_blocking(move || upstreams.write_deferred(std::time::Duration::ZERO));
    if tokio::time::timeout(SHUTDOWN_FLUSH, copies).await.is_err() {
        tracing::warn!(
            "local copies of files from the shared tier were not written in time at exit"
        );
    }
    let (files, _) = cache.writes_waiting();
    let flushed = tokio::task::spawn_blocking(move || cache.flush(SHUTDOWN_FLUSH)).await;
    if !flushed.unwrap_or(false) {
        tracing::warn!(
            files,
            "cache writes still queued at exit; those files are fetched again"
        );
    }
    let _ = std::fs::remove_file(&state);
    tracing::info!("stopped");
    Ok(())
}
