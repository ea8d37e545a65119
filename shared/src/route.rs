//! Request paths, parsed and validated before anything touches the daemon's state or the file
//! system. Pure: a path in, an endpoint (with validated names, versions and checksums) out.

use semver::Version;

use crate::name::{CrateName, UpstreamNameRef};

/// Which view a request is for: the layered one, or one upstream's (`/upstream/<name>/…`, with
/// a name that `config.toml` would accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View<'a> {
    /// Paths from the root: `/index/…`, `/dl/…`, `/-/…`, `/metrics`.
    Layered,
    /// Paths under `/upstream/<name>/`: that one upstream's index, downloads and API.
    Upstream(UpstreamNameRef<'a>),
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `/-/health`: open, says nothing.
    Health,
    /// `/-/login`: open, how cargo gets the local token.
    Login,
    /// `/-/status` (layered view only).
    Status,
    /// `/-/policy/<crate>` (layered view only).
    Policy(CrateName),
    /// `…/index/config.json`
    Config,
    /// `…/index/<sparse path>`, for the crate it names (lower-case).
    Index(CrateName),
    /// `…/dl/{crate}/{version}/{sha256-checksum}`
    Download {
        /// The crate, case as in the path.
        krate: CrateName,
        /// The version to download.
        version: Version,
        /// The `.crate` file's sha256: 64 lower-case hex digits.
        cksum: String,
    },
    /// `…/api/<rest>`: the registry web API; `rest` is the path after `api/`.
    Api(&'a str),
    /// `/metrics`: Prometheus metrics (layered view only).
    Metrics,
    /// `/-/`: the status page (layered view only).
    Page,
    /// `/-/open` (POST): makes a one-time link to the status page.
    PageLink,
    /// `/-/open/<nonce>`: a one-time link; `nonce` is [`PAGE_NONCE_HEX`] lower-case hex digits.
    PageOpen(&'a str),
    /// `/-/refresh` (POST, layered view only): revalidate cached index files now; the crates to
    /// revalidate (none: every cached file) are in the JSON body.
    Refresh,
    /// `/-/audit` (POST, layered view only): check locked packages (JSON body) against the
    /// policy in force and the advisory database.
    Audit,
}

/// Response header on index files and downloads: `hit` when the daemon already held the answer
/// (every upstream's, for the layered view), `miss` when it had to ask an upstream first.
pub const CACHE_HEADER: &str = "privreg-cache";

/// Hex digits in a status page link's nonce.
pub const PAGE_NONCE_HEX: usize = 64;

impl Endpoint<'_> {
    /// A short fixed name, e.g. for a metrics label (never anything taken from the path).
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Health => "health",
            Endpoint::Login => "login",
            Endpoint::Status => "status",
            Endpoint::Policy(_) => "policy",
            Endpoint::Config => "config",
            Endpoint::Index(_) => "index",
            Endpoint::Download { .. } => "download",
            Endpoint::Api(_) => "api",
            Endpoint::Metrics => "metrics",
            Endpoint::Page => "page",
            Endpoint::PageLink => "page_link",
            Endpoint::PageOpen(_) => "page_open",
            Endpoint::Refresh => "refresh",
            Endpoint::Audit => "audit",
        }
    }
}

/// Why a path is refused: not something privreg serves (404), or malformed (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Answer 404; holds the message (naming what was not found).
    #[error("{0}")]
    NotFound(String),
    /// Answer 400; holds what is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// Whether `s` is 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a request path (without the query).
pub fn parse(path: &str) -> Result<(View<'_>, Endpoint<'_>), RouteError> {
    let not_found =
        || RouteError::NotFound(format!("privreg serves nothing at {}", path.escape_debug()));
    match path {
        "/-/health" => return Ok((View::Layered, Endpoint::Health)),
        "/-/login" => return Ok((View::Layered, Endpoint::Login)),
        _ => {}
    }
    let (view, rest) = match path.strip_prefix("/upstream/") {
        Some(r) => {
            let (name, rest) = r.split_once('/').ok_or_else(not_found)?;
            let name = UpstreamNameRef::new(name).map_err(|_| not_found())?;
            (View::Upstream(name), rest)
        }
        None => (View::Layered, path.strip_prefix('/').ok_or_else(not_found)?),
    };
    if view == View::Layered {
        match rest {
            "-/status" => return Ok((view, Endpoint::Status)),
            "metrics" => return Ok((view, Endpoint::Metrics)),
            "-/" => return Ok((view, Endpoint::Page)),
            "-/open" => return Ok((view, Endpoint::PageLink)),
            "-/refresh" => return Ok((view, Endpoint::Refresh)),
            "-/audit" => return Ok((view, Endpoint::Audit)),
            _ => {}
        }
        if let Some(nonce) = rest.strip_prefix("-/open/") {
            let hex = nonce.len() == PAGE_NONCE_HEX
                && nonce
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            return if hex {
                Ok((view, Endpoint::PageOpen(nonce)))
            } else {
                Err(not_found())
            };
        }
        if let Some(name) = rest.strip_prefix("-/policy/") {
            let krate = CrateName::new(name).map_err(|e| RouteError::BadRequest(e.to_string()))?;
            return Ok((view, Endpoint::Policy(krate.lower())));
        }
    }
    if let Some(api) = rest.strip_prefix("api/") {
        return Ok((view, Endpoint::Api(api)));
    }
    if rest == "index/config.json" {
        return Ok((view, Endpoint::Config));
    }
    if let Some(index) = rest.strip_prefix("index/") {
        let krate = CrateName::from_index_path(index).ok_or_else(|| {
            RouteError::NotFound(format!(
                "{} is not a sparse index path of a crate",
                index.escape_debug()
            ))
        })?;
        return Ok((view, Endpoint::Index(krate)));
    }
    if let Some(dl) = rest.strip_prefix("dl/") {
        let parts: Vec<&str> = dl.split('/').collect();
        let [krate, version, cksum] = parts.as_slice() else {
            return Err(RouteError::NotFound(
                "downloads are /dl/{crate}/{version}/{sha256-checksum}".into(),
            ));
        };
        let krate = CrateName::new(krate).map_err(|e| RouteError::BadRequest(e.to_string()))?;
        let version = Version::parse(version).map_err(|e| {
            RouteError::BadRequest(format!(
                "version {:?}: {e}",
                version.escape_debug().to_string()
            ))
        })?;
        if !is_sha256_hex(cksum) {
            return Err(RouteError::BadRequest(
                "the checksum must be 64 lower-case hex digits".into(),
            ));
        }
        return Ok((
            view,
            Endpoint::Download {
                krate,
                version,
                cksum: (*cksum).to_owned(),
            },
        ));
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str) -> View<'_> {
        View::Upstream(UpstreamNameRef::new(name).unwrap())
    }

    fn ck() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse("/-/health").unwrap(),
            (View::Layered, Endpoint::Health)
        );
        assert_eq!(
            parse("/-/status").unwrap(),
            (View::Layered, Endpoint::Status)
        );
        assert_eq!(
            parse("/-/policy/Serde").unwrap(),
            (
                View::Layered,
                Endpoint::Policy(CrateName::new("serde").unwrap())
            )
        );
        assert_eq!(
            parse("/index/config.json").unwrap(),
            (View::Layered, Endpoint::Config)
        );
        assert_eq!(
            parse("/index/se/rd/serde").unwrap(),
            (
                View::Layered,
                Endpoint::Index(CrateName::new("serde").unwrap())
            )
        );
        assert_eq!(
            parse("/upstream/acme/index/3/a/abc").unwrap(),
            (up("acme"), Endpoint::Index(CrateName::new("abc").unwrap()))
        );
        assert_eq!(
            parse(&format!("/dl/Serde/1.0.0/{}", ck())).unwrap(),
            (
                View::Layered,
                Endpoint::Download {
                    krate: CrateName::new("Serde").unwrap(),
                    version: "1.0.0".parse().unwrap(),
                    cksum: ck()
                }
            )
        );
        assert_eq!(
            parse("/upstream/acme/api/v1/crates/new").unwrap(),
            (up("acme"), Endpoint::Api("v1/crates/new"))
        );
    }

    #[test]
    fn refresh_endpoint() {
        assert_eq!(
            parse("/-/refresh").unwrap(),
            (View::Layered, Endpoint::Refresh)
        );
        assert_eq!(parse("/-/audit").unwrap(), (View::Layered, Endpoint::Audit));
        for path in [
            "/upstream/acme/-/refresh",
            "/-/refresh/",
            "/-/refresh/serde",
            "/upstream/acme/-/audit",
            "/-/audit/x",
        ] {
            assert!(
                matches!(parse(path), Err(RouteError::NotFound(_))),
                "{path}: {:?}",
                parse(path)
            );
        }
    }

    #[test]
    fn observability_endpoints() {
        assert_eq!(
            parse("/metrics").unwrap(),
            (View::Layered, Endpoint::Metrics)
        );
        assert_eq!(parse("/-/").unwrap(), (View::Layered, Endpoint::Page));
        assert_eq!(
            parse("/-/open").unwrap(),
            (View::Layered, Endpoint::PageLink)
        );
        let nonce = "0f".repeat(32);
        assert_eq!(
            parse(&format!("/-/open/{nonce}")).unwrap(),
            (View::Layered, Endpoint::PageOpen(&nonce))
        );
        for path in [
            "/upstream/acme/metrics",
            "/upstream/acme/-/",
            "/upstream/acme/-/open",
            &format!("/upstream/acme/-/open/{nonce}") as &str,
            "/metrics/",
            "/-",
            "/-/open/",
            &format!("/-/open/{}", "0F".repeat(32)),
            &format!("/-/open/{}", "0f".repeat(31)),
            &format!("/-/open/{nonce}0"),
            &format!("/-/open/{nonce}/"),
            "/-/open/../status",
        ] {
            match parse(path) {
                Err(RouteError::NotFound(_)) => {}
                other => panic!("{path}: {other:?}, want 404"),
            }
        }
    }

    #[test]
    fn refusals() {
        let long = "a".repeat(65);
        for (path, bad_request) in [
            ("/index/../../etc/passwd", false),
            ("/index/3/f/..%2f..%2fetc", false),
            ("/index/3/F/Foo", false),
            (&format!("/index/aa/aa/{long}") as &str, false),
            ("/dl/foo/1.0.0/../../../etc/passwd", false),
            ("/dl/..%2f/1.0.0/00", true),
            (&format!("/dl/foo/not-semver/{}", ck()), true),
            ("/dl/foo/1.0.0/ZZ", true),
            ("/upstream/../index/config.json", false),
            ("/upstream/a%2fb/index/config.json", false),
            ("/upstream/acme/-/status", false),
            ("/-/policy/a/b", true),
            ("relative", false),
            ("", false),
        ] {
            match parse(path) {
                Err(RouteError::BadRequest(_)) => assert!(bad_request, "{path}: 400, want 404"),
                Err(RouteError::NotFound(_)) => assert!(!bad_request, "{path}: 404, want 400"),
                Ok(r) => panic!("{path} accepted: {r:?}"),
            }
        }
    }
}

/// Config and routing share one rule for upstream names: what `config.toml` accepts,
/// `/upstream/<name>/` serves, and what it refuses, routing refuses too.
#[cfg(test)]
mod upstream_names {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn config_accepts(name: &str) -> bool {
        let text = format!("[upstreams.\"{name}\"]\nindex = \"sparse+http://h/\"\n");
        match Config::parse(Path::new("/cfg/config.toml"), &text) {
            Ok(c) => {
                assert_eq!(c.upstreams[0].name, name);
                true
            }
            Err(e) => {
                assert_eq!(e.line, Some(1), "{e}");
                assert!(e.message.starts_with("upstream name "), "{e}");
                false
            }
        }
    }

    fn route_accepts(name: &str) -> bool {
        match parse(&format!("/upstream/{name}/index/config.json")) {
            Ok((View::Upstream(n), Endpoint::Config)) => {
                assert_eq!(n.as_str(), name);
                true
            }
            Ok(other) => panic!("{name:?}: {other:?}"),
            Err(RouteError::NotFound(_)) => false,
            Err(e) => panic!("{name:?}: {e}"),
        }
    }

    #[test]
    fn config_and_routing_agree() {
        let (n64, n65) = ("a".repeat(64), "a".repeat(65));
        for (name, ok) in [
            ("acme", true),
            ("crates-io", true),
            ("ACME_x", true),
            ("1st", true),
            ("-", true),
            ("_", true),
            (n64.as_str(), true),
            (n65.as_str(), false),
            ("a.b", false),
            ("..", false),
            ("a%2fb", false),
            ("a b", false),
            ("acmé", false),
            ("a+b", false),
            ("a~b", false),
            ("a:b", false),
        ] {
            assert_eq!(config_accepts(name), ok, "config: {name:?}");
            assert_eq!(route_accepts(name), ok, "route: {name:?}");
        }
        assert!(!config_accepts(""));
        assert!(matches!(
            parse("/upstream//index/config.json"),
            Err(RouteError::NotFound(_))
        ));
    }
}
