//! The HTTP client every upstream request goes through.

use std::time::Duration;

/// Reqwest's redirect policy: follow only within the same scheme, host and port, so that an
/// upstream's token never travels to another host.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let next = attempt.url();
        match first {
            Some(first) if attempt.previous().len() < 5 && first.origin() == next.origin() => {
                attempt.follow()
            }
            _ => attempt.stop(),
        }
    })
}

/// The client for upstream requests: privreg's user agent, a connect timeout, and redirects
/// followed only within an upstream's origin.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("privreg/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(same_origin_redirects())
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("the HTTP client builds")
}
