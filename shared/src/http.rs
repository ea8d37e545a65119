//! Every outgoing HTTP client to upstream registries is built here (the daemon's, and the CLI's
//! `privreg upstream check`), with one redirect policy and one way of attaching a token.
//! Behind the `http` feature, so that the credential provider does not compile reqwest.

use std::time::Duration;

use reqwest::header::HeaderValue;

use crate::secrets::Token;

/// The `User-Agent` privreg sends upstream.
pub const USER_AGENT: &str = concat!("privreg/", env!("CARGO_PKG_VERSION"));

/// How long connecting to an upstream may take, at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// Follow redirects only within the scheme, host and port first asked, and at most
/// [`MAX_REDIRECTS`], so that an upstream's token never travels to another host.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let next = attempt.url();
        match first {
            Some(first)
                if attempt.previous().len() < MAX_REDIRECTS && first.origin() == next.origin() =>
            {
                attempt.follow()
            }
            _ => attempt.stop(),
        }
    })
}

/// A client builder for talking to upstreams: privreg's user agent, [`CONNECT_TIMEOUT`] and
/// same-origin redirects only. Callers add their own timeouts.
pub fn upstream_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(same_origin_redirects())
}

/// The `Authorization` value for `token`, sent raw as cargo does and marked sensitive so that it
/// never shows in debug output; `None` when the token cannot be a header value.
pub fn authorization(token: &Token) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(token.expose()).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_raw_and_sensitive() {
        let v = authorization(&Token::new("cio-secret").unwrap()).unwrap();
        assert_eq!(v.as_bytes(), b"cio-secret");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("cio-secret"));
    }
}
