//! `privreg doctor`: checks the whole setup, prints each problem with the command that fixes
//! it, and exits non-zero when anything is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use privreg_shared::config::{Config, ConfigError};
use privreg_shared::pin::Preferences;
use privreg_shared::secrets::{EntryName, Keyring, SecretStore, SecretsError};

use super::client::{DaemonClient, DaemonError};
use super::service::{SERVICE_NAME, default_daemon};
use super::upstream::{CheckError, check};
use super::{Dirs, cargo_config};

#[derive(Default)]
struct Report {
    problems: usize,
}

impl Report {
    /// The summary line and the exit code.
    fn finish(self) -> ExitCode {
        if self.problems == 0 {
            println!("everything looks right");
            ExitCode::SUCCESS
        } else {
            println!(
                "{} problem{} found",
                self.problems,
                if self.problems == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }

    #[allow(
        clippy::unused_self,
        reason = "a check's outcome goes through the report, as `fail`'s does"
    )]
    fn ok(&self, what: impl std::fmt::Display) {
        println!("ok    {what}");
    }

    fn fail(&mut self, what: impl std::fmt::Display, fix: impl std::fmt::Display) {
        self.problems += 1;
        println!("FAIL  {what}");
        for (i, line) in fix.to_string().lines().enumerate() {
            println!("      {} {line}", if i == 0 { "fix:" } else { "    " });
        }
    }
}

/// A word for the shell: quoted unless it is plain.
fn sh(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The systemd user unit install.sh writes (`.service` or `.socket`), if it is there.
fn systemd_file(suffix: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".config")))?;
    let unit = base.join(format!("systemd/user/{SERVICE_NAME}.{suffix}"));
    unit.exists().then_some(unit)
}

/// The systemd user unit install.sh writes, if that is how the daemon runs here.
fn systemd_unit() -> Option<PathBuf> {
    systemd_file("service")
}

/// How the daemon is kept alive on this machine, in one line for the report.
fn keep_alive() -> String {
    if let Some(socket) = systemd_file("socket") {
        return format!(
            "the daemon is started on demand by the systemd socket {SERVICE_NAME}.socket ({}): the first cargo request after login or a crash starts it",
            socket.display()
        );
    }
    if let Some(unit) = systemd_unit() {
        return format!(
            "the daemon runs as the systemd user service {SERVICE_NAME} ({}); run ./install.sh again to have privreg.socket start it on demand",
            unit.display()
        );
    }
    if let Some(plist) = launch_agent() {
        let sockets =
            std::fs::read_to_string(&plist).is_ok_and(|p| p.contains("<key>Sockets</key>"));
        return if sockets {
            format!(
                "the daemon runs as the launchd agent {SERVICE_NAME} ({}): launchd holds its socket and starts it at login and on the first cargo request after a crash",
                plist.display()
            )
        } else {
            format!(
                "the daemon runs as the launchd agent {SERVICE_NAME} ({}): started at login, restarted after a crash; run ./install.sh again to have launchd start it on demand",
                plist.display()
            )
        };
    }
    let autostart = if std::env::var_os(crate::autostart::NO_AUTOSTART)
        .is_some_and(|v| !v.is_empty() && v != "0")
    {
        format!(
            "and {} is set, so nothing starts it",
            crate::autostart::NO_AUTOSTART
        )
    } else {
        "so `privreg status`, `policy`, `warm` and `refresh` start it in the background when it does not answer".to_owned()
    };
    format!(
        "no user service keeps the daemon running here ({autostart}); ./install.sh where a user service manager runs starts it at login"
    )
}

fn launch_agent() -> Option<PathBuf> {
    let plist = std::env::home_dir()?.join(format!("Library/LaunchAgents/{SERVICE_NAME}.plist"));
    plist.exists().then_some(plist)
}

/// The command that (re)starts the daemon the way it is installed here.
fn start_command(dirs: &Dirs, restart: bool) -> String {
    if systemd_unit().is_some() {
        let verb = if restart { "restart" } else { "start" };
        return format!(
            "systemctl --user {verb} {SERVICE_NAME}   (log: journalctl --user -u {SERVICE_NAME})"
        );
    }
    if launch_agent().is_some() {
        return format!("launchctl kickstart -k gui/$(id -u)/{SERVICE_NAME}");
    }
    let daemon = default_daemon().unwrap_or_else(|_| PathBuf::from("privreg-daemon"));
    let log = dirs.cache.join("daemon.log");
    let pid = dirs.cache.join("daemon.pid");
    let stop = if restart {
        format!("kill $(cat {}); ", sh(&pid))
    } else {
        String::new()
    };
    format!(
        "{stop}nohup {} --config-dir {} --cache-dir {} >>{} 2>&1 & echo $! >{}\n(or run ./install.sh again, which installs a user service where one can run)",
        sh(&daemon),
        sh(&dirs.config),
        sh(&dirs.cache),
        sh(&log),
        sh(&pid)
    )
}

fn config_fix(e: &ConfigError) -> String {
    if e.line.is_none() && !e.path.exists() {
        "privreg init".to_owned()
    } else {
        format!("edit {} (see the error above)", sh(&e.path))
    }
}

/// Whether a program is on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let name = format!("{program}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
}

/// How long a request to the daemon may take.
const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn run(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let mut r = Report::default();
    let config = check_files(&mut r, dirs);
    let (keyring, token_ok) = check_keyring(&mut r, dirs, config.as_ref());
    r.ok(keep_alive());
    let addr = dirs.daemon_addr().ok();
    if let Some(addr) = &addr
        && check_daemon_answers(&mut r, dirs, addr).await?
    {
        check_daemon_status(&mut r, dirs, config.as_ref(), addr, token_ok).await;
    }
    check_cargo(&mut r, config.as_ref(), addr.as_deref());
    check_credential_provider(&mut r);
    if let Some(c) = &config {
        check_upstreams(&mut r, c, keyring.as_ref()).await;
    }
    Ok(r.finish())
}

/// config.toml and the pin files parse; the config, if it does.
fn check_files(r: &mut Report, dirs: &Dirs) -> Option<Config> {
    let config = match Config::load(&dirs.config) {
        Ok(c) => {
            r.ok(format!("{} parses", dirs.config_file().display()));
            Some(c)
        }
        Err(e) => {
            let fix = config_fix(&e);
            r.fail(e, fix);
            None
        }
    };
    match Preferences::load(&dirs.config) {
        Ok(p) => r.ok(format!(
            "pin files parse ({} stanzas)",
            p.files.iter().map(|f| f.stanzas.len()).sum::<usize>()
        )),
        Err(e) => {
            let fix = format!(
                "edit {} (see the error above; `privreg pin list` numbers the stanzas)",
                sh(Path::new(&e.file))
            );
            r.fail(e, fix);
        }
    }
    config
}

/// The keyring opens and holds the local token: the keyring, if it opens, and whether the
/// token is there.
fn check_keyring(r: &mut Report, dirs: &Dirs, config: Option<&Config>) -> (Option<Keyring>, bool) {
    let Some(c) = config else {
        return (None, false);
    };
    let k = match Keyring::open(c.keyring) {
        Ok(k) => k,
        Err(e) => {
            r.fail(
                e,
                format!(
                    "set `keyring` in {} to a store that works here, then privreg init",
                    sh(&dirs.config_file())
                ),
            );
            return (None, false);
        }
    };
    let mut token_ok = false;
    if c.auth {
        match k.get(&EntryName::local_token(&dirs.config)) {
            Ok(_) => {
                token_ok = true;
                r.ok(format!("the local token is in the {}", k.kind()));
            }
            Err(e @ SecretsError::NoEntry { .. }) => r.fail(e, "privreg init"),
            Err(e) => r.fail(e, "check that the keyring is unlocked, then privreg init"),
        }
    } else {
        r.ok(format!("keyring: the {} answers (auth = false)", k.kind()));
    }
    (Some(k), token_ok)
}

/// The daemon answers `/-/health` at `addr`: whether it is up.
async fn check_daemon_answers(r: &mut Report, dirs: &Dirs, addr: &str) -> anyhow::Result<bool> {
    let client = DaemonClient::new(addr.to_owned(), None, TIMEOUT)?;
    match client.health().await {
        Ok(()) => {
            r.ok(format!("the daemon answers at http://{addr}/"));
            return Ok(true);
        }
        Err(e) => match e.status() {
            Some(status) => r.fail(
                format!("something else answers at {addr} ({status}), not privreg's daemon"),
                format!(
                    "choose another `listen` in {}, then {}",
                    sh(&dirs.config_file()),
                    start_command(dirs, false)
                ),
            ),
            None => r.fail(
                format!("the daemon does not answer at {addr}"),
                start_command(dirs, false),
            ),
        },
    }
    Ok(false)
}

/// The running daemon accepts the local token, serves our config dir, and has no config error
/// in force.
async fn check_daemon_status(
    r: &mut Report,
    dirs: &Dirs,
    config: Option<&Config>,
    addr: &str,
    token_ok: bool,
) {
    let status = match DaemonClient::open(dirs, TIMEOUT) {
        Ok(client) => client.status().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let e = match status {
        Ok(st) => {
            if config.is_some_and(|c| c.auth) {
                r.ok("the daemon accepts the local token");
            }
            check_same_config_dir(r, dirs, addr, &st.config_dir);
            if let Some(e) = &st.config_error {
                r.fail(
                    format!("the daemon keeps its last good configuration because: {e}"),
                    "fix the file named there; the daemon reloads it by itself",
                );
            }
            return;
        }
        Err(e) => e,
    };
    match e.downcast_ref::<DaemonError>() {
        Some(DaemonError::Unauthorized) if !token_ok => r.fail(
            "the daemon wants the local token, which is not in the keyring",
            format!("privreg init, then {}", start_command(dirs, true)),
        ),
        Some(e @ (DaemonError::Unauthorized | DaemonError::Forbidden)) => r.fail(
            format!(
                "the daemon refuses the local token in the keyring ({}): it was started with another one",
                e.status().expect("401 and 403 are statuses")
            ),
            start_command(dirs, true),
        ),
        Some(DaemonError::Status { status, .. }) => r.fail(
            format!("the daemon answered {status} for /-/status"),
            start_command(dirs, true),
        ),
        _ => r.fail(format!("{e:#}"), start_command(dirs, false)),
    }
}

/// The daemon at `addr` serves the config dir the CLI uses.
fn check_same_config_dir(r: &mut Report, dirs: &Dirs, addr: &str, theirs: &Path) {
    let ours = std::fs::canonicalize(&dirs.config).ok();
    if let Some(ours) = ours
        && std::fs::canonicalize(theirs).ok().as_ref() != Some(&ours)
    {
        r.fail(
            format!(
                "the daemon at {addr} serves the config dir {}, not {}",
                theirs.display(),
                ours.display()
            ),
            "use the same PRIVREG_CONFIG_DIR for the daemon and the CLI, or another `listen`",
        );
    }
}

/// Cargo's config sends crates-io (and the private upstreams' URLs) to the daemon.
fn check_cargo(r: &mut Report, config: Option<&Config>, addr: Option<&str>) {
    let Some(addr) = addr.filter(|a| !a.ends_with(":0")) else {
        return;
    };
    let url = format!("sparse+http://{addr}/index/");
    let private = config
        .map(cargo_config::private_upstreams)
        .unwrap_or_default();
    match cargo_config::check(&url, &private) {
        Ok(None) => r.ok(format!("cargo's config sends crates-io to {url}")),
        Ok(Some(wrong)) => r.fail(wrong, "privreg cargo-config --install"),
        Err(e) => r.fail(
            format!("{e:#}"),
            "fix cargo's config file, then privreg cargo-config --install",
        ),
    }
}

/// cargo can run the credential provider.
fn check_credential_provider(r: &mut Report) {
    if let Some(p) = on_path("cargo-credential-privreg") {
        r.ok(format!(
            "cargo-credential-privreg is on PATH ({})",
            p.display()
        ));
    } else {
        let dir = default_daemon()
            .ok()
            .and_then(|d| d.parent().map(Path::to_owned))
            .filter(|d| d.join("cargo-credential-privreg").is_file());
        let fix = match dir {
            Some(d) => format!(
                "export PATH={}:\"$PATH\"   (in your shell's profile)",
                sh(&d)
            ),
            None => {
                "./install.sh (it installs cargo-credential-privreg with cargo install)".to_owned()
            }
        };
        r.fail(
            "cargo-credential-privreg is not on PATH, so cargo cannot get the local token",
            fix,
        );
    }
}

/// Each upstream's config.json answers, with its token.
async fn check_upstreams(r: &mut Report, c: &Config, keyring: Option<&Keyring>) {
    for up in &c.upstreams {
        match check(keyring, up).await {
            Ok(()) => r.ok(format!(
                "upstream {}: config.json answers ({})",
                up.name, up.index
            )),
            Err(e) => {
                let auth = e
                    .downcast_ref::<CheckError>()
                    .is_some_and(CheckError::is_auth);
                let fix = if auth {
                    format!("privreg login {}", up.name)
                } else {
                    format!(
                        "check the URL and the network; if it is gone: privreg upstream remove {}",
                        up.name
                    )
                };
                r.fail(format!("{e:#}"), fix);
            }
        }
    }
    if c.upstreams.is_empty() {
        r.fail(
            "no upstreams: cargo can resolve nothing",
            "privreg upstream add NAME sparse+https://…/",
        );
    }
}
