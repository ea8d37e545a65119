//! The HTTP client every upstream request goes through: the shared builder
//! ([`privreg_shared::http::upstream_client`], whose redirect policy keeps a token on its
//! upstream's origin) plus the daemon's connection pooling.

use std::time::Duration;

/// The client for upstream requests.
pub(crate) fn http_client() -> reqwest::Client {
    privreg_shared::http::upstream_client()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("the HTTP client builds")
}
