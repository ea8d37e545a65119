//! Where no service manager keeps the daemon running (containers, CI, a machine without a user
//! systemd), the commands that need it start it in the background when it does not answer, the
//! way sccache's client starts its server: the first `privreg status` (or `warm`, `refresh`,
//! `policy`, `status --open`) after a reboot or a crash brings it back.
//!
//! `PRIVREG_NO_AUTOSTART=1` turns this off; `privreg doctor` and `privreg service wait` never
//! start anything (they report).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Dirs;
use crate::client::{DaemonClient, DaemonError};
use crate::service::default_daemon;

/// How long a started daemon may take to answer `/-/health`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable that turns automatic starts off.
pub(crate) const NO_AUTOSTART: &str = "PRIVREG_NO_AUTOSTART";

/// Whether automatic starts are allowed by the environment.
fn allowed() -> bool {
    std::env::var_os(NO_AUTOSTART).is_none_or(|v| v.is_empty() || v == "0")
}

/// A client for the running daemon; when nothing answers at its address, the daemon is started
/// in the background first (see the module docs).
pub(crate) async fn connect(dirs: &Dirs, timeout: Duration) -> anyhow::Result<DaemonClient> {
    let client = DaemonClient::open(dirs, timeout)?;
    match client.health().await {
        Err(DaemonError::NotRunning { .. }) if allowed() => {}
        // Anything else (answering, refusing, broken) is for the command itself to report.
        _ => return Ok(client),
    }
    let started = start(dirs)?;
    eprintln!(
        "privreg: the daemon was not running; started it in the background (pid {}, log {}).\n\
         privreg: to keep it running across reboots, run ./install.sh where a user service manager runs",
        started.pid,
        started.log.display()
    );
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        // The daemon records its address once it listens (it may differ from `listen` when
        // that asks for port 0).
        let client = DaemonClient::open(dirs, timeout)?;
        if client.health().await.is_ok() {
            return Ok(client);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the daemon was started (pid {}) but did not answer within {}s; see {}",
                started.pid,
                START_TIMEOUT.as_secs(),
                started.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A daemon started in the background.
struct Started {
    pid: u32,
    log: PathBuf,
}

/// Starts `privreg-daemon` (next to this `privreg`) detached: its own process group, no terminal,
/// stderr appended to `daemon.log` in the cache directory, its pid in `daemon.pid` (the files
/// install.sh's background mode uses too).
fn start(dirs: &Dirs) -> anyhow::Result<Started> {
    let daemon = default_daemon()?;
    privreg_shared::store::create_private_dirs(&dirs.cache)
        .with_context(|| format!("cannot create {}", dirs.cache.display()))?;
    let log = dirs.cache.join("daemon.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut cmd = std::process::Command::new(&daemon);
    cmd.arg("--config-dir")
        .arg(&dirs.config)
        .arg("--cache-dir")
        .arg(&dirs.cache)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file);
    // Its own process group: a terminal that closes (SIGHUP to its foreground group) or a ^C
    // in it does not take the daemon along.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", daemon.display()))?;
    let pid = child.id();
    // Not waited for: it outlives this command.
    drop(child);
    let pid_file = dirs.cache.join("daemon.pid");
    privreg_shared::store::write_atomic(&pid_file, format!("{pid}\n").as_bytes())?;
    Ok(Started { pid, log })
}
