//! Loading the configuration and pins, and hot reload: the daemon watches its config dir and puts
//! a valid change in force at once; an invalid one leaves the last good configuration in force
//! and is reported (log, `/-/status`) until fixed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use privreg_shared::config::{Config, ConfigError};
use privreg_shared::pin::{PinError, Preferences};

use crate::daemon::Daemon;
use crate::layered::Runtime;

/// Why the configuration could not be loaded; each names its file and line.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pins(#[from] PinError),
}

/// Reads `config.toml` and the pin files.
pub(crate) fn load(config_dir: &Path, generation: u64) -> Result<Runtime, LoadError> {
    let config = Config::load(config_dir)?;
    let pins = Preferences::load(config_dir)?;
    Ok(Runtime::new(config, Box::new(pins), generation))
}

/// The settings read only at start (named as in `config.toml`) that `new` changes.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.listen != old.listen {
        changed.push("listen");
    }
    if new.auth != old.auth {
        changed.push("auth");
    }
    changed
}

impl Daemon {
    /// Reloads from disk; on error keeps the configuration in force and records the error.
    pub(crate) fn reload(&self) {
        let current = self.runtime();
        match load(self.config_dir(), current.generation + 1) {
            Ok(rt) => {
                for setting in restart_needed(&current.config, &rt.config) {
                    if setting == "listen" {
                        tracing::warn!(listen = %rt.config.listen, "`listen` changed; restart the daemon to apply it");
                    } else {
                        tracing::warn!("`{setting}` changed; restart the daemon to apply it");
                    }
                }
                self.swap_runtime(rt);
                self.metrics().reloaded(true);
                if self.set_load_error(None) {
                    tracing::info!("configuration fixed and reloaded");
                } else {
                    tracing::info!("configuration reloaded");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded; the last good one stays in force");
                self.set_load_error(Some(e.to_string()));
                self.metrics().reloaded(false);
            }
        }
    }
}

/// Watches the config dir and reloads on every change (after 150 ms of quiet, so that an editor's
/// burst of writes makes one reload). Runs until the daemon stops.
pub(crate) fn watch(daemon: Arc<Daemon>) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(daemon.config_dir(), RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            while tokio::time::timeout(Duration::from_millis(150), rx.recv())
                .await
                .is_ok_and(|m| m.is_some())
            {}
            daemon.reload();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(top: &str) -> Config {
        let text = format!("{top}[upstreams.acme]\nindex = \"sparse+http://127.0.0.1:1/index/\"\n");
        Config::parse(Path::new("config.toml"), &text).unwrap()
    }

    #[test]
    fn only_listen_and_auth_need_a_restart() {
        let base = config("");
        let cases = [
            ("", vec![]),
            ("listen = \"127.0.0.1:1\"\n", vec!["listen"]),
            ("auth = false\n", vec!["auth"]),
            (
                "listen = \"127.0.0.1:1\"\nauth = false\n",
                vec!["listen", "auth"],
            ),
            ("[limits]\nmax-upstream-requests = 3\n", vec![]),
        ];
        for (top, want) in cases {
            assert_eq!(restart_needed(&base, &config(top)), want, "{top}");
        }
    }
}
