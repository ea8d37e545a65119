//! `privreg service unit|plist|dir|wait`: what install.sh needs to run the daemon as a user
//! service — the systemd user unit and the launchd agent (generated here so that tests can check
//! them), privreg's directories, and a wait for the daemon's `/-/health`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};

use super::Dirs;
use super::client::{DaemonClient, DaemonError};

/// The systemd unit's name and the launchd agent's label.
pub(crate) const SERVICE_NAME: &str = "privreg";

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Print a systemd user unit that runs the daemon (logs to the journal).
    ///
    /// Example: privreg service unit > ~/.config/systemd/user/privreg.service
    Unit {
        /// The daemon binary; default: privreg-daemon next to this privreg.
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// Print the systemd user socket unit that starts the daemon on the first connection
    /// (socket activation on config.toml's `listen`).
    ///
    /// Example: privreg service socket > ~/.config/systemd/user/privreg.socket
    Socket,
    /// Print a launchd agent (macOS) that runs the daemon.
    ///
    /// Example: privreg service plist > ~/Library/LaunchAgents/privreg.plist
    Plist {
        /// The daemon binary; default: privreg-daemon next to this privreg.
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// Print privreg's config or cache directory.
    ///
    /// Example: privreg service dir cache
    Dir { which: Which },
    /// Wait until the daemon answers on /-/health.
    ///
    /// Example: privreg service wait --timeout 20
    Wait {
        /// Seconds to wait.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Which {
    Config,
    Cache,
}

/// The daemon binary next to the running `privreg`.
pub(crate) fn default_daemon() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    Ok(exe
        .parent()
        .context("this program has no directory")?
        .join(format!("privreg-daemon{}", std::env::consts::EXE_SUFFIX)))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// One argument of a systemd `ExecStart=`: double-quoted, with `\`, `"`, `%` and `$` escaped.
fn systemd_arg(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The systemd user unit.
pub(crate) fn unit(daemon: &Path, config_dir: &Path, cache_dir: &Path) -> String {
    let exec = [
        daemon.to_string_lossy(),
        "--config-dir".into(),
        config_dir.to_string_lossy(),
        "--cache-dir".into(),
        cache_dir.to_string_lossy(),
    ]
    .iter()
    .map(|a| systemd_arg(a))
    .collect::<Vec<_>>()
    .join(" ");
    format!(
        r#"# privreg's daemon as a systemd user service; written by install.sh (`privreg service unit`).
#
#   systemctl --user status privreg       is it running?
#   journalctl --user -u privreg -f       its log (the daemon logs to stderr, into the journal)
#   systemctl --user edit privreg         change the log level, e.g. add under [Service]:
#       Environment=PRIVREG_LOG=privreg_daemon=debug
#     (PRIVREG_LOG takes tracing's env-filter syntax; the default is info.)
#   loginctl enable-linger "$USER"        keep it running while you are logged out

[Unit]
Description=privreg: layered, cached cargo registry on loopback
# Started on demand: privreg.socket listens and hands its socket over on the first connection.
Requires={SERVICE_NAME}.socket
After={SERVICE_NAME}.socket

[Service]
Type=exec
ExecStart={exec}
Restart=on-failure
RestartSec=2
# The tokens the daemon sends to upstreams may also come from PRIVREG_TOKEN_<NAME>, e.g.
# Environment=PRIVREG_TOKEN_ACME=… (prefer `privreg login acme`, which uses the OS keyring).
"#
    )
}

/// The systemd user socket unit: systemd listens on `listen` and starts privreg.service on the
/// first connection (after login, a crash or a `kill`), handing the socket over (`LISTEN_FDS`).
pub(crate) fn socket_unit(listen: std::net::SocketAddr) -> anyhow::Result<String> {
    if listen.port() == 0 {
        bail!(
            "`listen = \"{listen}\"` asks for any free port, which a socket unit cannot hold; set a fixed port in config.toml"
        );
    }
    Ok(format!(
        r"# privreg's listening socket; written by install.sh (`privreg service socket`).
# systemd listens here and starts privreg.service on the first connection, so cargo finds the
# daemon after login or a crash. After changing `listen` in config.toml, run ./install.sh again.
#
#   systemctl --user status privreg.socket

[Unit]
Description=privreg: socket of the layered cargo registry (starts the daemon on demand)

[Socket]
ListenStream={listen}
NoDelay=true

[Install]
WantedBy=sockets.target
"
    ))
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The launchd agent. launchd holds the listening socket (`Sockets`, taken by the daemon through
/// `launch_activate_socket`) and starts the daemon on the first connection, so cargo finds it
/// after login or a crash. launchd has no journal: stderr goes to `daemon.log` in the cache dir.
pub(crate) fn plist(
    daemon: &Path,
    config_dir: &Path,
    cache_dir: &Path,
    listen: std::net::SocketAddr,
) -> anyhow::Result<String> {
    if listen.port() == 0 {
        bail!(
            "`listen = \"{listen}\"` asks for any free port, which launchd cannot hold for the daemon; set a fixed port in config.toml"
        );
    }
    let family = if listen.is_ipv4() { "IPv4" } else { "IPv6" };
    let (node, port) = (listen.ip(), listen.port());
    let args: String = [
        daemon.to_string_lossy(),
        "--config-dir".into(),
        config_dir.to_string_lossy(),
        "--cache-dir".into(),
        cache_dir.to_string_lossy(),
    ]
    .iter()
    .fold(String::new(), |mut args, a| {
        let _ = writeln!(args, "        <string>{}</string>", xml(a));
        args
    });
    let log = xml(&cache_dir.join("daemon.log").to_string_lossy());
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- privreg's daemon as a launchd agent; written by install.sh (`privreg service plist`).
     Log: the file in StandardErrorPath. Log level: PRIVREG_LOG below (tracing's env-filter
     syntax, e.g. privreg_daemon=debug), then
     launchctl bootout gui/$UID/{SERVICE_NAME}; launchctl bootstrap gui/$UID THIS-FILE -->
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{SERVICE_NAME}</string>
    <key>ProgramArguments</key>
    <array>
{args}    </array>
    <key>EnvironmentVariables</key>
    <dict>
        <key>PRIVREG_LOG</key>
        <string>info</string>
    </dict>
    <key>Sockets</key>
    <dict>
        <key>{socket}</key>
        <dict>
            <key>SockNodeName</key>
            <string>{node}</string>
            <key>SockServiceName</key>
            <string>{port}</string>
            <key>SockType</key>
            <string>stream</string>
            <key>SockFamily</key>
            <string>{family}</string>
        </dict>
    </dict>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
    <key>ProcessType</key>
    <string>Background</string>
    <key>StandardErrorPath</key>
    <string>{log}</string>
</dict>
</plist>
"#,
        socket = privreg_launchd::SOCKET_NAME,
    ))
}

/// Polls `/-/health` until the daemon answers `ok`.
async fn wait(dirs: &Dirs, timeout: Duration) -> anyhow::Result<String> {
    let client = DaemonClient::new(String::new(), None, Duration::from_secs(2))?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match dirs.daemon_addr() {
            Ok(addr) if !addr.ends_with(":0") => match client.at(addr.clone()).health().await {
                Ok(()) => return Ok(addr),
                Err(DaemonError::Status { status, .. }) => format!("{addr} answered {status}"),
                Err(
                    DaemonError::NotRunning { source, .. } | DaemonError::Transport { source, .. },
                ) => format!("{addr}: {source}"),
                Err(e) => format!("{addr}: {e}"),
            },
            Ok(_) => "the daemon has not recorded its address yet".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "the daemon did not answer within {}s ({last}); see its log",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn run(dirs: &Dirs, cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    let (config, cache) = (absolute(&dirs.config), absolute(&dirs.cache));
    match cmd {
        ServiceCommand::Unit { daemon } => {
            let daemon = absolute(&daemon.map_or_else(default_daemon, Ok)?);
            print!("{}", unit(&daemon, &config, &cache));
        }
        ServiceCommand::Socket => {
            let config = privreg_shared::config::Config::load(&dirs.config)?;
            print!("{}", socket_unit(config.listen)?);
        }
        ServiceCommand::Plist { daemon } => {
            let daemon = absolute(&daemon.map_or_else(default_daemon, Ok)?);
            let listen = privreg_shared::config::Config::load(&dirs.config)?.listen;
            print!("{}", plist(&daemon, &config, &cache, listen)?);
        }
        ServiceCommand::Dir { which } => {
            let dir = match which {
                Which::Config => config,
                Which::Cache => cache,
            };
            println!("{}", dir.display());
        }
        ServiceCommand::Wait { timeout } => {
            let addr = wait(dirs, Duration::from_secs(timeout)).await?;
            println!("privreg-daemon answers at http://{addr}/");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_quotes_and_escapes_paths() {
        let u = unit(
            Path::new("/home/a b/.cargo/bin/privreg-daemon"),
            Path::new("/home/a b/.config/privreg"),
            Path::new("/tmp/100%$x\"y\\z"),
        );
        assert!(u.contains(
            "ExecStart=\"/home/a b/.cargo/bin/privreg-daemon\" \"--config-dir\" \"/home/a b/.config/privreg\" \"--cache-dir\" \"/tmp/100%%$$x\\\"y\\\\z\"\n"
        ), "{u}");
        assert!(u.contains("\nRestart=on-failure\n"));
        assert!(u.contains("PRIVREG_LOG"));
        assert!(
            u.contains("\nRequires=privreg.socket\nAfter=privreg.socket\n"),
            "{u}"
        );
        assert!(
            !u.contains("[Install]"),
            "the socket starts the service: {u}"
        );
    }

    #[test]
    fn socket_unit_listens_on_listen_and_refuses_port_0() {
        let s = socket_unit("127.0.0.1:7878".parse().unwrap()).unwrap();
        assert!(
            s.contains("\n[Socket]\nListenStream=127.0.0.1:7878\n"),
            "{s}"
        );
        assert!(s.contains("\nWantedBy=sockets.target\n"), "{s}");
        let s = socket_unit("[::1]:7878".parse().unwrap()).unwrap();
        assert!(s.contains("\nListenStream=[::1]:7878\n"), "{s}");
        let e = socket_unit("127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("fixed port"), "{e}");
    }

    #[test]
    fn plist_escapes_xml() {
        let p = plist(
            Path::new("/Users/a&b/.cargo/bin/privreg-daemon"),
            Path::new("/Users/a&b/Library/Application Support/privreg"),
            Path::new("/Users/a&b/Library/Caches/privreg"),
            "127.0.0.1:7878".parse().unwrap(),
        )
        .unwrap();
        assert!(p.contains("<string>/Users/a&amp;b/.cargo/bin/privreg-daemon</string>"));
        assert!(p.contains("<key>Label</key>\n    <string>privreg</string>"));
        assert!(p.contains("<string>/Users/a&amp;b/Library/Caches/privreg/daemon.log</string>"));
        assert!(!p.contains("a&b"));
    }

    /// launchd holds `listen` under the name the daemon asks it for, and cannot hold port 0.
    #[test]
    fn plist_hands_listen_to_the_daemon_through_sockets() {
        let dir = Path::new("/Users/a/privreg");
        let p = plist(dir, dir, dir, "127.0.0.1:7878".parse().unwrap()).unwrap();
        let socket = format!(
            "<key>Sockets</key>\n    <dict>\n        <key>{}</key>\n        <dict>\n            \
             <key>SockNodeName</key>\n            <string>127.0.0.1</string>\n            \
             <key>SockServiceName</key>\n            <string>7878</string>\n            \
             <key>SockType</key>\n            <string>stream</string>\n            \
             <key>SockFamily</key>\n            <string>IPv4</string>\n",
            privreg_launchd::SOCKET_NAME
        );
        assert!(p.contains(&socket), "{p}");
        let p = plist(dir, dir, dir, "[::1]:7878".parse().unwrap()).unwrap();
        assert!(p.contains("<string>::1</string>"), "{p}");
        assert!(p.contains("<string>IPv6</string>"), "{p}");
        let e = plist(dir, dir, dir, "127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("fixed port"), "{e}");
    }
}
