//! The listening sockets launchd hands over to privreg's daemon (the launchd agent's `Sockets`
//! entry), so that the first cargo request after login or a crash starts the daemon; the macOS
//! counterpart of systemd's `LISTEN_FDS`.
//!
//! This crate holds the workspace's only `unsafe` block: turning the file descriptors that
//! `launch_activate_socket` returns into listeners. On other systems it is empty of effect:
//! [`activated_listeners`] returns no sockets.

#![warn(missing_docs)]

/// The name of the socket in the launchd agent's `Sockets` dictionary (`privreg service plist`
/// writes it).
pub const SOCKET_NAME: &str = "Listeners";

/// Why launchd's sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// launchd refused; holds its answer. Check the agent's `Sockets` entry
    /// (`privreg service plist`) and re-run install.sh.
    #[error("launchd did not hand over the socket `{name}`: {reason}")]
    Refused {
        /// The socket's name in the agent's `Sockets` dictionary.
        name: String,
        /// launchd's answer.
        reason: String,
    },
}

/// The TCP listeners launchd holds for the socket `name` of the agent that started this process.
/// Empty when the process was not started by launchd or its agent has no such socket (the daemon
/// then binds `listen` itself). Takes ownership of the sockets: call it once.
#[cfg(target_os = "macos")]
pub fn activated_listeners(name: &str) -> Result<Vec<std::net::TcpListener>, ActivationError> {
    use std::os::fd::FromRawFd;

    let fds = match raunch::activate_socket(name) {
        Ok(fds) => fds,
        Err(raunch::Error::NotManaged | raunch::Error::NotInPlist) => return Ok(Vec::new()),
        Err(e) => {
            return Err(ActivationError::Refused {
                name: name.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    Ok(fds
        .into_iter()
        .map(|fd| {
            // SAFETY: `launch_activate_socket` returns descriptors of sockets that launchd
            // created for this process's agent and hands over to the caller, who owns them from
            // then on; a second call for the same name fails with `AlreadyActivated` instead of
            // returning them again, so each is wrapped, and later closed, exactly once. The
            // agent's `Sockets` entry declares them as TCP stream sockets (`SockType` stream).
            #[allow(unsafe_code)]
            unsafe {
                std::net::TcpListener::from_raw_fd(fd)
            }
        })
        .collect())
}

/// Elsewhere launchd does not exist: never any sockets.
#[cfg(not(target_os = "macos"))]
pub fn activated_listeners(_name: &str) -> Result<Vec<std::net::TcpListener>, ActivationError> {
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not started by launchd (as in every test run): no sockets and no error, so the daemon
    /// binds `listen` itself.
    #[test]
    fn outside_launchd_there_are_no_sockets() {
        assert!(activated_listeners(SOCKET_NAME).unwrap().is_empty());
    }
}
