//! Who may talk to the daemon: requests must name the daemon's own address in `Host` (no DNS
//! rebinding), and with `auth = true` carry the local token in `Authorization`, exactly as the
//! credential provider hands it to cargo. `/-/health` and `/-/login` are open and say nothing.

use http::Request;

use crate::Daemon;

/// The outcome of checking a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// `Host` names another address.
    WrongHost,
    /// No token.
    Unauthorized,
    /// A token, but not ours.
    Forbidden,
}

/// Paths anyone on the machine may ask for.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/-/health" | "/-/login")
}

impl Daemon {
    /// The `Host` values this daemon answers to: its address, and `localhost` with its port.
    fn host_allowed(&self, host: &str) -> bool {
        let own = self.base_url.trim_start_matches("http://");
        if host.eq_ignore_ascii_case(own) {
            return true;
        }
        let port = own.rsplit_once(':').map(|(_, p)| p);
        let loopback = own.starts_with("127.") || own.starts_with("[::1]");
        loopback && port.is_some_and(|p| host.eq_ignore_ascii_case(&format!("localhost:{p}")))
    }

    pub fn check<B>(&self, req: &Request<B>) -> Verdict {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        if !host.is_some_and(|h| self.host_allowed(&h)) {
            return Verdict::WrongHost;
        }
        let Some(token) = &self.local_token else {
            return Verdict::Allowed;
        };
        match req.headers().get(http::header::AUTHORIZATION) {
            None => Verdict::Unauthorized,
            Some(v) if token.matches(v.as_bytes()) => Verdict::Allowed,
            Some(_) => Verdict::Forbidden,
        }
    }

    pub fn auth_required(&self) -> bool {
        self.local_token.is_some()
    }
}
