//! One-time links to the status page and the sessions they open.
//!
//! `privreg status --open` asks the daemon (with the local token, `POST /-/open`) for a link
//! `/-/open/<nonce>`: the nonce is random, works once, and only for [`LINK_TTL`]. Opening it sets
//! an `HttpOnly`, `SameSite=Strict` session cookie (path `/-/`) and redirects to `/-/`. The cookie
//! unlocks `GET /-/` and nothing else (see `auth.rs`). The local token never appears in a URL.
//!
//! Only SHA-256 digests of nonces and sessions are kept, in memory, in small bounded lists.

use std::time::{Duration, Instant};

use http::HeaderMap;
use privreg_shared::secrets::{SecretsError, generate_local_token};
use sha2::{Digest, Sha256};

/// How long a one-time link works.
pub(crate) const LINK_TTL: Duration = Duration::from_mins(1);
/// How long a page session lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_hours(8);
/// Links not yet used, at most (the oldest is dropped first).
const MAX_LINKS: usize = 8;
/// Sessions, at most (the oldest is dropped first).
const MAX_SESSIONS: usize = 16;

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Secrets (by digest) and when each stops working, oldest first.
#[derive(Default)]
struct Bounded {
    entries: Vec<([u8; 32], Instant)>,
}

impl Bounded {
    fn add(&mut self, secret: &str, expires: Instant, max: usize, now: Instant) {
        self.entries.retain(|(_, until)| *until > now);
        if self.entries.len() >= max {
            self.entries.remove(0);
        }
        self.entries.push((digest(secret), expires));
    }

    fn valid(&self, secret: &str, now: Instant) -> bool {
        let d = digest(secret);
        self.entries
            .iter()
            .any(|(known, until)| *known == d && *until > now)
    }

    /// Forgets `secret` (used or not).
    fn remove(&mut self, secret: &str) {
        let d = digest(secret);
        self.entries.retain(|(known, _)| *known != d);
    }
}

/// The status page's one-time links and sessions.
pub(crate) struct PageSessions {
    cookie: String,
    links: std::sync::Mutex<Bounded>,
    sessions: std::sync::Mutex<Bounded>,
}

impl PageSessions {
    /// `port` goes into the cookie's name, so that two daemons on one machine keep apart.
    pub(crate) fn new(port: u16) -> PageSessions {
        PageSessions {
            cookie: format!("privreg_page_{port}"),
            links: std::sync::Mutex::default(),
            sessions: std::sync::Mutex::default(),
        }
    }

    /// A new nonce for `/-/open/<nonce>` (64 hex digits from the OS random source).
    pub(crate) fn new_link(&self) -> Result<String, SecretsError> {
        self.new_link_at(Instant::now())
    }

    fn new_link_at(&self, now: Instant) -> Result<String, SecretsError> {
        let nonce = generate_local_token()?.expose().to_owned();
        self.links
            .lock()
            .expect("links lock")
            .add(&nonce, now + LINK_TTL, MAX_LINKS, now);
        Ok(nonce)
    }

    /// Uses up a link: the `Set-Cookie` value of a new session, or `None` when the nonce is
    /// unknown, used already or expired.
    pub(crate) fn redeem(&self, nonce: &str) -> Option<Result<String, SecretsError>> {
        self.redeem_at(nonce, Instant::now())
    }

    fn redeem_at(&self, nonce: &str, now: Instant) -> Option<Result<String, SecretsError>> {
        let valid = {
            let mut links = self.links.lock().expect("links lock");
            let valid = links.valid(nonce, now);
            links.remove(nonce);
            valid
        };
        if !valid {
            return None;
        }
        let session = match generate_local_token() {
            Ok(t) => t.expose().to_owned(),
            Err(e) => return Some(Err(e)),
        };
        self.sessions.lock().expect("sessions lock").add(
            &session,
            now + SESSION_TTL,
            MAX_SESSIONS,
            now,
        );
        Some(Ok(format!(
            "{}={session}; Path=/-/; Max-Age={}; HttpOnly; SameSite=Strict",
            self.cookie,
            SESSION_TTL.as_secs()
        )))
    }

    /// Whether the request's `Cookie` headers hold a live session of ours.
    pub(crate) fn has_session(&self, headers: &HeaderMap) -> bool {
        self.has_session_at(headers, Instant::now())
    }

    fn has_session_at(&self, headers: &HeaderMap, now: Instant) -> bool {
        let sessions = self.sessions.lock().expect("sessions lock");
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == self.cookie && sessions.valid(value, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_header(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("other=1; {pair}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_link_works_once_and_opens_a_session() {
        let s = PageSessions::new(7878);
        let now = Instant::now();
        let nonce = s.new_link_at(now).unwrap();
        assert_eq!(nonce.len(), privreg_shared::route::PAGE_NONCE_HEX);
        let set = s.redeem_at(&nonce, now).unwrap().unwrap();
        assert!(set.starts_with("privreg_page_7878="), "{set}");
        for attr in ["Path=/-/", "HttpOnly", "SameSite=Strict"] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(s.redeem_at(&nonce, now).is_none(), "a link works once");
        let headers = cookie_header(&set);
        assert!(s.has_session_at(&headers, now));
        assert!(!s.has_session_at(&headers, now + SESSION_TTL));
        assert!(!s.has_session_at(&HeaderMap::new(), now));
        // Another value, or our value under another daemon's name, is no session.
        let forged = cookie_header(&format!("privreg_page_7878={}", "0".repeat(64)));
        assert!(!s.has_session_at(&forged, now));
        let other = PageSessions::new(7879);
        assert!(!other.has_session_at(&headers, now));
    }

    #[test]
    fn links_expire_and_are_bounded() {
        let s = PageSessions::new(1);
        let now = Instant::now();
        let late = s.new_link_at(now).unwrap();
        assert!(s.redeem_at(&late, now + LINK_TTL).is_none());
        assert!(s.redeem_at(&"ab".repeat(32), now).is_none());
        let first = s.new_link_at(now).unwrap();
        for _ in 0..MAX_LINKS {
            s.new_link_at(now).unwrap();
        }
        assert!(
            s.redeem_at(&first, now).is_none(),
            "the oldest link was dropped"
        );
        let last = s.new_link_at(now).unwrap();
        assert!(s.redeem_at(&last, now).is_some());
    }
}
