//! `<cache-dir>/daemon.json`: written by the daemon once it listens, so that the CLI, the
//! credential provider and tests find it even when `listen` asked for port 0.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file's name in the cache directory.
pub const DAEMON_STATE_FILE: &str = "daemon.json";

/// What the running daemon records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// `host:port` the daemon listens on.
    pub addr: String,
    /// The daemon's process id.
    pub pid: u32,
}

impl DaemonState {
    /// Where the state file lives for the cache directory `cache_dir`.
    pub fn path(cache_dir: &Path) -> PathBuf {
        cache_dir.join(DAEMON_STATE_FILE)
    }

    /// The state a running daemon recorded under `cache_dir`, if there is a readable one.
    pub fn read(cache_dir: &Path) -> Option<DaemonState> {
        let data = std::fs::read(Self::path(cache_dir)).ok()?;
        Self::parse(&data)
    }

    /// Parses the state file's bytes; `None` for anything that is not a state file.
    pub fn parse(data: &[u8]) -> Option<DaemonState> {
        serde_json::from_slice(data).ok()
    }

    /// The bytes the daemon writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the state serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_pinned() {
        let s = DaemonState {
            addr: "127.0.0.1:7878".into(),
            pid: 42,
        };
        assert_eq!(s.to_bytes(), br#"{"addr":"127.0.0.1:7878","pid":42}"#);
        assert_eq!(
            DaemonState::parse(br#"{"pid":42,"addr":"127.0.0.1:7878"}"#),
            Some(s)
        );
        assert_eq!(DaemonState::parse(b"{\"addr\":1}"), None);
        assert_eq!(DaemonState::parse(b""), None);
    }
}
