//! privreg is there when cargo needs it: a service manager holds the daemon's socket and starts
//! the daemon on the first connection (systemd socket activation, `LISTEN_FDS`), driven here by
//! the real `systemd-socket-activate` (Debian's systemd package) and the real cargo.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use privreg_shared::protocol::DaemonState;
use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, bin, http_get};

/// `systemd-socket-activate`, or a failure that says what to install.
fn socket_activate_tool() -> &'static str {
    let tool = "systemd-socket-activate";
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "{tool} is not on PATH: install Debian's systemd package (tests/run.sh does)"
    );
    tool
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The activator (or the daemon it became), killed when the test ends, pass or fail.
struct Activator {
    child: Child,
    /// Copies its stderr (the daemon's log, once it runs) to the log file.
    log: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
}

impl Activator {
    /// Waits for the process to exit and for its log to be written whole.
    fn exit(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().expect("wait for the daemon");
        if let Some(log) = self.log.take() {
            log.join().expect("log thread").expect("copy the log");
        }
        status
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `systemd-socket-activate -l ADDR privreg-daemon …` and waits until it listens. It
/// starts nothing else until the first connection arrives; then it runs the daemon in its own
/// process with the listening socket as fd 3.
fn activate(addr: &str, p: &Privreg, log: &Path) -> Activator {
    let mut child = Command::new(socket_activate_tool())
        .arg("-l")
        .arg(addr)
        .arg(bin("privreg-daemon"))
        .arg("--config-dir")
        .arg(&p.config_dir)
        .arg("--cache-dir")
        .arg(&p.cache_dir)
        .env("PRIVREG_LOG", "debug,hyper=info,reqwest=info,h2=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run systemd-socket-activate");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first)
        .expect("read systemd-socket-activate's stderr");
    assert!(
        first.starts_with(&format!("Listening on {addr}")),
        "systemd-socket-activate did not listen on {addr}: {first:?}"
    );
    // The rest of its stderr is the daemon's log, once the daemon runs.
    let mut log = std::fs::File::create(log).expect("log file");
    let log = std::thread::spawn(move || std::io::copy(&mut err, &mut log));
    Activator {
        child,
        log: Some(log),
    }
}

#[test]
fn a_cargo_build_through_a_socket_with_no_daemon_behind_it_succeeds() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("sockdep", "1.2.0").lib("pub fn seven() -> u32 { 7 }"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut p = Privreg::new(&format!(
        "listen = \"{addr}\"\nauth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        reg.index
    ));
    p.addr = addr.clone();
    let log = p.root().join("activated.log");
    let mut activator = activate(&addr, &p, &log);

    // Nothing runs behind the socket yet: no daemon has recorded itself.
    assert!(
        DaemonState::read(&p.cache_dir).is_none(),
        "a daemon started before any connection"
    );
    assert_eq!(
        activator.child.try_wait().expect("wait"),
        None,
        "systemd-socket-activate exited early"
    );

    let sb = Sandbox::new();
    sb.use_privreg(&p);
    let project = sb.project(
        "sockapp",
        "sockdep = \"1\"\n",
        "fn main() { println!(\"{}\", sockdep::seven()); }\n",
    );
    let out = sb.cargo(&project, &["run", "--quiet"]);
    assert!(
        out.status.success(),
        "cargo through the activated socket failed:\n{}\n--- daemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");

    // The daemon that answered is the one the socket started: it took the inherited socket
    // (the same address, in the activator's own process) rather than binding one itself.
    let state = DaemonState::read(&p.cache_dir).expect("the activated daemon wrote daemon.json");
    assert_eq!(state.addr, addr);
    assert_eq!(state.pid, activator.child.id());
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        daemon_log.contains("listening on the socket the service manager handed over"),
        "{daemon_log}"
    );
    let health = http_get(&addr, "/-/health", &[]).expect("health");
    assert_eq!(health.status, 200);
    // The cache directory the daemon created holds private registries' files: the user's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p.cache_dir)
            .expect("cache dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{}", p.cache_dir.display());
    }
}

#[test]
fn a_handed_over_socket_that_is_not_loopback_is_refused() {
    let addr = format!("0.0.0.0:{}", free_port());
    let p = Privreg::new("auth = false\n");
    let log = p.root().join("activated.log");
    let mut activator = activate(&addr, &p, &log);
    // The first connection starts the daemon, which must refuse the socket and exit.
    let _ = std::net::TcpStream::connect(addr.replace("0.0.0.0", "127.0.0.1"));
    let status = activator.exit();
    assert!(!status.success(), "the daemon served a non-loopback socket");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("which is not loopback") && text.contains("privreg.socket"),
        "{text}"
    );
}

/// Kills the daemon a `privreg` command started in the background, when the test ends.
struct Started(std::path::PathBuf);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.0.join("daemon.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn a_privreg_command_starts_a_daemon_that_does_not_answer() {
    let mut reg = Registry::start(RegistryOpts::default());
    reg.publish(Pkg::new("autodep", "0.3.0").lib("pub fn three() -> u32 { 3 }"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut p = Privreg::new(&format!(
        "listen = \"{addr}\"\nauth = false\n\n[upstreams.crates-io]\nindex = \"{}\"\n",
        reg.index
    ));
    p.addr = addr.clone();
    let privreg = |env: &[(&str, &str)]| {
        Command::new(bin("privreg"))
            .arg("--config-dir")
            .arg(&p.config_dir)
            .arg("--cache-dir")
            .arg(&p.cache_dir)
            .arg("status")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run privreg")
    };

    // Turned off, nothing is started and the error says the daemon does not answer.
    let out = privreg(&[("PRIVREG_NO_AUTOSTART", "1")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not answer"), "{err}");
    assert!(DaemonState::read(&p.cache_dir).is_none(), "{err}");

    // By default the command starts it in the background and then answers.
    let _started = Started(p.cache_dir.clone());
    let out = privreg(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("started it in the background"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&addr),
        "status does not show the daemon's address"
    );
    let state = DaemonState::read(&p.cache_dir).expect("the started daemon wrote daemon.json");
    let pid: u32 = std::fs::read_to_string(p.cache_dir.join("daemon.pid"))
        .expect("daemon.pid")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(state.pid, pid);

    // It outlives the command that started it and serves cargo.
    let sb = Sandbox::new();
    sb.use_privreg(&p);
    let project = sb.project(
        "autoapp",
        "autodep = \"0.3\"\n",
        "fn main() { println!(\"{}\", autodep::three()); }\n",
    );
    let out = sb.cargo(&project, &["run", "--quiet"]);
    assert!(
        out.status.success(),
        "cargo through the started daemon failed:\n{}\n--- daemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(p.cache_dir.join("daemon.log")).unwrap_or_default()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    // A second command finds it running and starts nothing.
    let out = privreg(&[]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("started it"));
    assert_eq!(DaemonState::read(&p.cache_dir).map(|s| s.pid), Some(pid));
}
