//! The request-path parser (`route::parse`): whatever a client sends, an accepted path names only
//! validated things, and the canonical path of what it names parses back to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privreg_shared::CrateName;
use privreg_shared::route::{self, Endpoint, RouteError, View, is_sha256_hex};

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let (view, endpoint) = match route::parse(&path) {
        Ok(r) => r,
        Err(RouteError::NotFound(m) | RouteError::BadRequest(m)) => {
            // Messages go into responses and logs: one line, whatever the path held.
            assert!(!m.contains(['\n', '\r']), "{m:?}");
            return;
        }
    };
    let prefix = match view {
        View::Layered => String::new(),
        View::Upstream(name) => {
            assert!(!name.is_empty() && name.len() <= 64, "{name:?}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{name:?}"
            );
            format!("/upstream/{name}")
        }
    };
    let canonical = match &endpoint {
        Endpoint::Health => "/-/health".to_owned(),
        Endpoint::Login => "/-/login".to_owned(),
        Endpoint::Status => layered(view, "/-/status"),
        Endpoint::Policy(k) => {
            assert_eq!(view, View::Layered);
            valid(k);
            assert_eq!(k.as_str(), k.as_str().to_ascii_lowercase());
            format!("/-/policy/{k}")
        }
        Endpoint::Config => format!("{prefix}/index/config.json"),
        Endpoint::Index(k) => {
            valid(k);
            assert_eq!(k.as_str(), k.as_str().to_ascii_lowercase());
            // Only the exact path cargo requests is accepted.
            assert_eq!(path, format!("{prefix}/index/{}", k.index_path()));
            format!("{prefix}/index/{}", k.index_path())
        }
        Endpoint::Download {
            krate,
            version,
            cksum,
        } => {
            valid(krate);
            assert!(is_sha256_hex(cksum), "{cksum:?}");
            format!("{prefix}/dl/{krate}/{version}/{cksum}")
        }
        Endpoint::Metrics => layered(view, "/metrics"),
        Endpoint::Page => layered(view, "/-/"),
        Endpoint::PageLink => layered(view, "/-/open"),
        Endpoint::Refresh => layered(view, "/-/refresh"),
        Endpoint::Audit => layered(view, "/-/audit"),
        Endpoint::PageOpen(nonce) => {
            assert_eq!(nonce.len(), route::PAGE_NONCE_HEX);
            assert!(
                nonce
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
            layered(view, &format!("/-/open/{nonce}"))
        }
        Endpoint::Api(rest) => {
            assert!(path.ends_with(rest), "{rest:?} is not the end of {path:?}");
            format!("{prefix}/api/{rest}")
        }
    };
    // The path of what was parsed names the same thing.
    let again = route::parse(&canonical).unwrap_or_else(|e| panic!("{canonical:?}: {e}"));
    assert_eq!(again, (view, endpoint), "{path:?} vs {canonical:?}");
});

/// The path of an endpoint that only the layered view has.
fn layered(view: View<'_>, path: &str) -> String {
    assert_eq!(view, View::Layered, "{path}");
    path.to_owned()
}

/// A name that reaches path code is a valid crate name, with no path syntax in it.
fn valid(k: &CrateName) {
    assert_eq!(CrateName::new(k.as_str()).as_ref(), Ok(k));
    assert!(!k.as_str().contains(['/', '.', '%', '\\']), "{k:?}");
}
