//! Who may talk to the daemon: requests must name the daemon's own address in `Host` (no DNS
//! rebinding), and with `auth = true` carry the local token in `Authorization`, exactly as the
//! credential provider hands it to cargo. `/-/health` and `/-/login` are open and say nothing.
//!
//! Two endpoints accept more ([`Accept`]): `/metrics` also takes `Authorization: Bearer <token>`
//! (what a Prometheus scraper's `authorization` setting sends); `GET /-/` also takes the status
//! page's session cookie (see [`crate::session`]), which unlocks nothing else. A one-time link
//! `/-/open/<nonce>` carries its own secret and is checked by its handler.

use http::{Method, Request};
use privreg_shared::route::{Endpoint, View};

use crate::daemon::Daemon;

/// The outcome of checking a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// `Host` names another address.
    WrongHost,
    /// No token.
    Unauthorized,
    /// A token, but not ours.
    Forbidden,
}

/// What a request may present instead of the local token as cargo sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    /// The local token only.
    Token,
    /// Also `Bearer <local token>` (a metrics scraper).
    TokenOrBearer,
    /// Also a status page session cookie.
    TokenOrSession,
    /// Only the `Host` check (a one-time link, checked by its handler).
    HostOnly,
}

/// What a request for `parsed` (with `method`) may present (see [`Accept`]).
pub(crate) fn accept_for<E>(
    parsed: &Result<(View<'_>, Endpoint<'_>), E>,
    method: &Method,
) -> Accept {
    match parsed {
        Ok((_, Endpoint::Metrics)) => Accept::TokenOrBearer,
        Ok((_, Endpoint::Page)) if method == Method::GET || method == Method::HEAD => {
            Accept::TokenOrSession
        }
        Ok((_, Endpoint::PageOpen(_))) => Accept::HostOnly,
        _ => Accept::Token,
    }
}

impl Daemon {
    /// The `Host` values this daemon answers to: its address, and `localhost` with its port.
    fn host_allowed(&self, host: &str) -> bool {
        let own = self.base_url().trim_start_matches("http://");
        if host.eq_ignore_ascii_case(own) {
            return true;
        }
        let port = own.rsplit_once(':').map(|(_, p)| p);
        let loopback = own.starts_with("127.") || own.starts_with("[::1]");
        loopback && port.is_some_and(|p| host.eq_ignore_ascii_case(&format!("localhost:{p}")))
    }

    pub(crate) fn check<B>(&self, req: &Request<B>, accept: Accept) -> Verdict {
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
        let Some(token) = self.local_token() else {
            return Verdict::Allowed;
        };
        if accept == Accept::HostOnly
            || (accept == Accept::TokenOrSession && self.sessions().has_session(req.headers()))
        {
            return Verdict::Allowed;
        }
        match req.headers().get(http::header::AUTHORIZATION) {
            None => Verdict::Unauthorized,
            Some(v) if token.matches(v.as_bytes()) => Verdict::Allowed,
            Some(v)
                if accept == Accept::TokenOrBearer
                    && bearer(v.as_bytes()).is_some_and(|t| token.matches(t)) =>
            {
                Verdict::Allowed
            }
            Some(_) => Verdict::Forbidden,
        }
    }

    pub(crate) fn auth_required(&self) -> bool {
        self.local_token().is_some()
    }
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"abc"), None);
    }
}
