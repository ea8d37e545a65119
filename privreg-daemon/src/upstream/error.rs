//! Why an upstream gave no usable answer, in words that name the upstream and what to do.

use std::time::Duration;

use privreg_shared::config::Upstream;

/// Why an upstream gave no usable answer. Every variant names the upstream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error(
        "upstream {upstream} refused {what} with {status}: its token is missing or wrong (run `privreg login {upstream}`)"
    )]
    Auth {
        upstream: String,
        what: String,
        status: u16,
    },
    #[error("upstream {upstream} answered {status} for {what}")]
    Status {
        upstream: String,
        what: String,
        status: u16,
    },
    #[error("upstream {upstream} did not answer {what} within {secs}s")]
    Timeout {
        upstream: String,
        what: String,
        secs: f64,
    },
    #[error("cannot reach upstream {upstream} for {what}: {message}")]
    Transport {
        upstream: String,
        what: String,
        message: String,
    },
    #[error(
        "upstream {upstream} sent more than {limit} bytes for {what} (raise `limits.{key}` in config.toml to accept it)"
    )]
    TooLarge {
        upstream: String,
        what: String,
        limit: u64,
        key: &'static str,
    },
    #[error(
        "upstream {upstream} already has {limit} requests in flight and none finished within {secs}s; {what} was not asked for (`limits.max-upstream-requests`)"
    )]
    Busy {
        upstream: String,
        what: String,
        limit: usize,
        secs: f64,
    },
    #[error("upstream {upstream} sent garbage for {what}: {message}")]
    BadBody {
        upstream: String,
        what: String,
        message: String,
    },
    #[error(
        "upstream {upstream} answered {status} for {what} and asked to be left alone for {retry_after}s"
    )]
    RetryLater {
        upstream: String,
        what: String,
        status: u16,
        /// Seconds, as the upstream's `Retry-After` said, at most [`MAX_RETRY_AFTER`].
        retry_after: u64,
    },
    #[error(
        "upstream {upstream} answered {status} for {what}: a redirect to {location}, another origin, which privreg does not follow (its token stays with {upstream})"
    )]
    Redirect {
        upstream: String,
        what: String,
        status: u16,
        location: String,
    },
    #[error("upstream {upstream} cut {what} short: {message}")]
    CutShort {
        upstream: String,
        what: String,
        message: String,
    },
}

/// The longest `Retry-After` privreg honours; an upstream asking for more is asked again after
/// this long.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_mins(5);

impl FetchError {
    /// The `outcome` label of `privreg_upstream_requests_total` for this failure.
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            FetchError::Auth { .. } => "auth_error",
            FetchError::Status { .. } => "status_error",
            FetchError::RetryLater { .. } => "retry_later",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Transport { .. } => "transport_error",
            FetchError::CutShort { .. } => "cut_short",
            FetchError::Redirect { .. } => "redirect",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::BadBody { .. } => "bad_body",
            FetchError::Busy { .. } => "busy",
        }
    }

    /// Seconds to wait before asking again, when the upstream said so (429 or 503 with
    /// `Retry-After`).
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            FetchError::RetryLater { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The error for a failed request to `up` (`in_body`: while reading the body, after the
    /// headers came). The request's `timeout` bounds the body too, so a slow drip is a timeout.
    pub(crate) fn from_reqwest(
        up: &Upstream,
        what: &str,
        e: &reqwest::Error,
        in_body: bool,
    ) -> FetchError {
        let (upstream, what) = (up.name.to_string(), what.to_owned());
        if e.is_timeout() {
            FetchError::Timeout {
                upstream,
                what,
                secs: up.timeout.as_secs_f64(),
            }
        } else if in_body {
            FetchError::CutShort {
                upstream,
                what,
                message: error_chain(e),
            }
        } else {
            FetchError::Transport {
                upstream,
                what,
                message: error_chain(e),
            }
        }
    }

    /// The error for a non-success `status` of `what` (`headers`: the answer's).
    pub(super) fn from_status(
        up: &Upstream,
        what: &str,
        status: u16,
        headers: &http::HeaderMap,
    ) -> FetchError {
        let (upstream, what) = (up.name.to_string(), what.to_owned());
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
        };
        match status {
            401 | 403 => FetchError::Auth {
                upstream,
                what,
                status,
            },
            // Followed only within the upstream's origin (see `same_origin_redirects`).
            301 | 302 | 303 | 307 | 308 => FetchError::Redirect {
                upstream,
                what,
                status,
                location: header(http::header::LOCATION)
                    .unwrap_or("nowhere (no Location header)")
                    .to_owned(),
            },
            429 | 503 => {
                match header(http::header::RETRY_AFTER).and_then(|v| v.trim().parse::<u64>().ok()) {
                    Some(secs) => FetchError::RetryLater {
                        upstream,
                        what,
                        status,
                        retry_after: secs.min(MAX_RETRY_AFTER.as_secs()),
                    },
                    None => FetchError::Status {
                        upstream,
                        what,
                        status,
                    },
                }
            }
            _ => FetchError::Status {
                upstream,
                what,
                status,
            },
        }
    }
}

/// An error and its sources, `: `-separated (reqwest's own message alone says little).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Upstream {
        crate::upstream::test_upstream()
    }

    fn with(name: http::HeaderName, value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn statuses_become_errors_that_say_what_to_do() {
        let up = acme();
        let none = http::HeaderMap::new();
        let e = FetchError::from_status(&up, "config.json", 401, &none);
        assert!(e.to_string().contains("privreg login acme"), "{e}");
        let e = FetchError::from_status(&up, "config.json", 500, &none);
        assert_eq!(e.to_string(), "upstream acme answered 500 for config.json");
        assert_eq!(e.retry_after(), None);
        let moved = with(http::header::LOCATION, "http://elsewhere.example/x");
        let e = FetchError::from_status(&up, "config.json", 302, &moved);
        assert!(e.to_string().contains("http://elsewhere.example/x"), "{e}");
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_and_capped() {
        let up = acme();
        let e = FetchError::from_status(&up, "x", 429, &with(http::header::RETRY_AFTER, "30"));
        assert_eq!(e.retry_after(), Some(30));
        let e = FetchError::from_status(&up, "x", 503, &with(http::header::RETRY_AFTER, "86400"));
        assert_eq!(e.retry_after(), Some(MAX_RETRY_AFTER.as_secs()));
        // An HTTP date is not read: the answer counts as a plain 503.
        let date = with(http::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT");
        let e = FetchError::from_status(&up, "x", 503, &date);
        assert_eq!(e.retry_after(), None);
    }
}
