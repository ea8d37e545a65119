//! Where an upstream's token goes: only where cargo itself would send that registry's token.
//! Index files and downloads carry it only when the upstream requires authentication (its
//! `config.json` says `auth-required`, or answers 401 without a token); the owner API calls
//! (yank, owners) always, to the `api` URL; search only when authentication is required.
//!
//! The upstream here is a small recording server in this process: its index on one port, and
//! the hosts its `config.json` names as `dl` and `api` on another, so that a token on a download
//! shows up as such. Also: index lines naming another crate are dropped, as cargo drops them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privreg_tests::{Privreg, random_token};
use sha2::{Digest, Sha256};

const CRATE: &[u8] = b"not really a .crate, but privreg only checks its sha256";

/// One request as the recording server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// `index`, or `other` (the `dl` and `api` host).
    host: &'static str,
    method: String,
    path: String,
    authorization: Option<String>,
}

/// How the recorded upstream treats requests without its token.
#[derive(Debug, Clone, Copy, Default)]
struct Auth {
    /// `config.json` says `auth-required: true`, and index files and downloads need the token.
    required: bool,
    /// `config.json` itself answers 401 without the token (cargo's probe).
    config_refuses: bool,
}

struct Upstream {
    index_addr: String,
    token: String,
    cksum: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Served {
    auth: Auth,
    token: String,
    other_addr: String,
    cksum: String,
}

impl Served {
    /// The answer (status, body) for one request.
    fn answer(&self, host: &str, method: &str, path: &str, auth: Option<&str>) -> (u16, Vec<u8>) {
        let authorized = auth == Some(self.token.as_str());
        let needs = |required: bool| required && !authorized;
        let line = |name: &str, vers: &str| {
            format!(
                r#"{{"name":"{name}","vers":"{vers}","deps":[],"cksum":"{}","features":{{}},"yanked":false}}"#,
                self.cksum
            )
        };
        match (host, method, path) {
            ("index", "GET", "/index/config.json") => {
                if needs(self.auth.config_refuses) {
                    return (401, b"token needed".to_vec());
                }
                let config = serde_json::json!({
                    "dl": format!("http://{}/dl", self.other_addr),
                    "api": format!("http://{}", self.other_addr),
                    "auth-required": self.auth.required,
                });
                (200, config.to_string().into_bytes())
            }
            ("index", "GET", "/index/ac/me/acme-core") => {
                if needs(self.auth.required) {
                    return (401, b"token needed".to_vec());
                }
                // The second line is another crate's: cargo would drop it.
                let body = format!(
                    "{}\n{}\n",
                    line("acme-core", "0.2.0"),
                    line("acme_core", "0.3.0")
                );
                (200, body.into_bytes())
            }
            ("other", "GET", "/dl/acme-core/0.2.0/download") => {
                if needs(self.auth.required) {
                    return (401, b"token needed".to_vec());
                }
                (200, CRATE.to_vec())
            }
            ("other", "DELETE", "/api/v1/crates/acme-core/0.2.0/yank") => {
                (200, br#"{"ok":true}"#.to_vec())
            }
            ("other", "GET", "/api/v1/crates/acme-core/owners") => {
                (200, br#"{"users":[]}"#.to_vec())
            }
            ("other", "GET", p) if p.starts_with("/api/v1/crates?") => {
                (200, br#"{"crates":[],"meta":{"total":0}}"#.to_vec())
            }
            _ => (404, b"not here".to_vec()),
        }
    }
}

impl Upstream {
    fn start(auth: Auth) -> Upstream {
        let index = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let other_addr = other.local_addr().unwrap().to_string();
        let served = Arc::new(Served {
            auth,
            token: random_token("scope"),
            other_addr,
            cksum: hex::encode(Sha256::digest(CRATE)),
        });
        let up = Upstream {
            index_addr: index.local_addr().unwrap().to_string(),
            token: served.token.clone(),
            cksum: served.cksum.clone(),
            seen: Arc::default(),
        };
        for (host, listener) in [("index", index), ("other", other)] {
            let (served, seen) = (served.clone(), up.seen.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (served, seen) = (served.clone(), seen.clone());
                    std::thread::spawn(move || serve(host, &stream, &served, &seen));
                }
            });
        }
        up
    }

    fn index(&self) -> String {
        format!("sparse+http://{}/index/", self.index_addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests to `host` for `path` (`?` and after ignored), in order.
    fn seen_at(&self, host: &str, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.host == host && s.path.split('?').next() == Some(path))
            .collect()
    }

    /// A daemon with this upstream as `acme`, its token in `PRIVREG_TOKEN_ACME`.
    fn privreg(&self) -> Privreg {
        let mut privreg = Privreg::new(&format!(
            "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\n",
            self.index()
        ));
        privreg.env("PRIVREG_TOKEN_ACME", &self.token);
        privreg.spawn().unwrap();
        privreg
    }
}

/// Answers one HTTP/1.1 request on `stream`, and records it.
fn serve(host: &'static str, stream: &TcpStream, served: &Served, seen: &Mutex<Vec<Seen>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let (mut authorization, mut length) = (None, 0);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(v.trim().to_owned()),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, answer) = served.answer(host, &method, &path, authorization.as_deref());
    seen.lock().unwrap().push(Seen {
        host,
        method,
        path,
        authorization,
    });
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer);
}

/// One request of any method to the daemon; the status and body.
fn call(privreg: &Privreg, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(&privreg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_mins(1))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        privreg.addr
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

fn download(privreg: &Privreg, up: &Upstream) -> Vec<u8> {
    let r = privreg.get(&format!("/dl/acme-core/0.2.0/{}", up.cksum));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), privreg.log());
    r.body
}

fn no_token(seen: &[Seen]) -> bool {
    seen.iter().all(|s| s.authorization.is_none())
}

fn all_with(seen: &[Seen], token: &str) -> bool {
    !seen.is_empty()
        && seen
            .iter()
            .all(|s| s.authorization.as_deref() == Some(token))
}

#[test]
fn an_upstream_token_stays_off_an_index_that_does_not_require_it() {
    let up = Upstream::start(Auth::default());
    let privreg = up.privreg();
    let r = privreg.get("/index/ac/me/acme-core");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.seen();
    assert!(!seen.is_empty());
    assert!(no_token(&seen), "{seen:?}");
}

#[test]
fn downloads_from_another_host_carry_no_token_without_auth_required() {
    let up = Upstream::start(Auth::default());
    let privreg = up.privreg();
    assert_eq!(privreg.get("/index/ac/me/acme-core").status, 200);
    assert_eq!(download(&privreg, &up), CRATE);
    let downloads = up.seen_at("other", "/dl/acme-core/0.2.0/download");
    assert_eq!(downloads.len(), 1, "{:?}", up.seen());
    assert!(no_token(&up.seen()), "{:?}", up.seen());
    assert!(!privreg.log().contains(&up.token));
}

#[test]
fn owner_api_calls_carry_the_token_to_the_api_host_and_search_does_not() {
    let up = Upstream::start(Auth::default());
    let privreg = up.privreg();
    let (status, body) = call(&privreg, "GET", "/api/v1/crates?q=acme&per_page=10");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        call(&privreg, "GET", "/api/v1/crates/acme-core/owners").0,
        200
    );
    let (status, body) = call(&privreg, "DELETE", "/api/v1/crates/acme-core/0.2.0/yank");
    assert_eq!(status, 200, "{body}");

    let search = up.seen_at("other", "/api/v1/crates");
    assert_eq!(search.len(), 1, "{:?}", up.seen());
    assert!(no_token(&search), "{search:?}");
    let owners = up.seen_at("other", "/api/v1/crates/acme-core/owners");
    assert!(all_with(&owners, &up.token), "{owners:?}");
    let yank = up.seen_at("other", "/api/v1/crates/acme-core/0.2.0/yank");
    assert!(all_with(&yank, &up.token), "{yank:?}");
    assert_eq!(yank[0].method, "DELETE");
    // The index (config.json for `api`, the index file for the owner) never saw the token.
    let index: Vec<Seen> = up
        .seen()
        .into_iter()
        .filter(|s| s.host == "index")
        .collect();
    assert!(!index.is_empty());
    assert!(no_token(&index), "{index:?}");
}

/// What an auth-required upstream saw: the index file got the token once it was known to be
/// needed, and the download and every API call got it.
fn check_auth_required(up: &Upstream, privreg: &Privreg) {
    let r = privreg.get("/index/ac/me/acme-core");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), privreg.log());
    assert_eq!(download(privreg, up), CRATE);
    assert_eq!(call(privreg, "GET", "/api/v1/crates?q=acme").0, 200);
    assert_eq!(
        call(privreg, "DELETE", "/api/v1/crates/acme-core/0.2.0/yank").0,
        200
    );

    // The yank dropped the cached index file: asked again, with the token at once.
    assert_eq!(privreg.get("/index/ac/me/acme-core").status, 200);

    let token = up.token.as_str();
    let index = up.seen_at("index", "/index/ac/me/acme-core");
    assert!(
        index.last().unwrap().authorization.as_deref() == Some(token),
        "{index:?}"
    );
    for path in [
        "/dl/acme-core/0.2.0/download",
        "/api/v1/crates",
        "/api/v1/crates/acme-core/0.2.0/yank",
    ] {
        let seen = up.seen_at("other", path);
        assert!(all_with(&seen, token), "{path}: {seen:?}");
    }
    // Only the first request, before the daemon knew, went without it.
    let without: Vec<&Seen> = index.iter().filter(|s| s.authorization.is_none()).collect();
    assert_eq!(without.len(), 1, "{index:?}");
    assert!(index.len() >= 3, "{index:?}");
    assert!(!privreg.log().contains(token));
}

#[test]
fn an_upstream_that_refuses_config_json_gets_the_token_on_index_downloads_and_api() {
    let up = Upstream::start(Auth {
        required: true,
        config_refuses: true,
    });
    let privreg = up.privreg();
    check_auth_required(&up, &privreg);
    // cargo's probe: config.json without the token first, then with it.
    let config = up.seen_at("index", "/index/config.json");
    assert_eq!(config.len(), 2, "{config:?}");
    assert!(config[0].authorization.is_none(), "{config:?}");
    assert_eq!(config[1].authorization.as_deref(), Some(up.token.as_str()));
}

#[test]
fn an_upstream_whose_config_json_says_auth_required_gets_the_token_on_index_and_downloads() {
    // config.json itself is open, and says the rest is not.
    let up = Upstream::start(Auth {
        required: true,
        config_refuses: false,
    });
    let privreg = up.privreg();
    check_auth_required(&up, &privreg);
    let config = up.seen_at("index", "/index/config.json");
    assert_eq!(config.len(), 1, "{config:?}");
    assert!(no_token(&config), "{config:?}");
}

#[test]
fn index_lines_for_another_crate_are_dropped_and_logged() {
    let up = Upstream::start(Auth::default());
    let privreg = up.privreg();
    let r = privreg.get("/index/ac/me/acme-core");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains(r#""name":"acme-core""#), "{text}");
    assert!(!text.contains("acme_core"), "{text}");
    let per_upstream = privreg.get("/upstream/acme/index/ac/me/acme-core").text();
    assert!(!per_upstream.contains("acme_core"), "{per_upstream}");
    privreg.within(2.0, "the skipped line in the log", |p| {
        p.log().matches(r#""acme_core""#).count() == 1
    });
}
