//! Building the request for an upstream file: where the file lives, what privreg calls it, and
//! which validators make the request conditional. Pure: no I/O.

use http::HeaderName;
use privreg_shared::config::Upstream;
use privreg_shared::store::{Meta, UpstreamPath};

/// The file as errors and logs name it.
pub(super) fn what(rel: UpstreamPath<'_>) -> String {
    match rel {
        UpstreamPath::Config => "config.json".to_owned(),
        UpstreamPath::Index(k) => format!("the index file of {k}"),
    }
}

/// The file's path under the upstream's index URL.
pub(super) fn rel_url(rel: UpstreamPath<'_>) -> String {
    match rel {
        UpstreamPath::Config => "config.json".to_owned(),
        UpstreamPath::Index(k) => k.index_path(),
    }
}

/// The file's URL at `up`.
pub(super) fn file_url(up: &Upstream, rel: UpstreamPath<'_>) -> url::Url {
    up.base
        .join(&rel_url(rel))
        .expect("index paths join onto a base URL")
}

/// The headers that make a request conditional on the copy held (`If-None-Match`, then
/// `If-Modified-Since`): only a copy with a body has validators worth sending.
pub(super) fn conditional_headers(held: Option<&Meta>) -> Vec<(HeaderName, String)> {
    let Some(meta) = held.filter(|m| m.present) else {
        return Vec::new();
    };
    let etag = meta.etag.clone().map(|v| (http::header::IF_NONE_MATCH, v));
    let last_modified = meta
        .last_modified
        .clone()
        .map(|v| (http::header::IF_MODIFIED_SINCE, v));
    etag.into_iter().chain(last_modified).collect()
}

#[cfg(test)]
mod tests {
    use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
    use privreg_shared::CrateName;

    use super::*;

    fn acme() -> Upstream {
        crate::upstream::test_upstream()
    }

    #[test]
    fn files_live_under_the_index_url() {
        let up = acme();
        let serde = CrateName::new("Serde").unwrap();
        let cases = [
            (UpstreamPath::Config, "http://127.0.0.1:1/index/config.json"),
            (
                UpstreamPath::Index(&serde),
                "http://127.0.0.1:1/index/se/rd/serde",
            ),
        ];
        for (rel, want) in cases {
            assert_eq!(file_url(&up, rel).as_str(), want);
        }
        let a = CrateName::new("a").unwrap();
        assert_eq!(rel_url(UpstreamPath::Index(&a)), "1/a");
        assert_eq!(what(UpstreamPath::Config), "config.json");
        assert_eq!(what(UpstreamPath::Index(&serde)), "the index file of Serde");
    }

    #[test]
    fn only_a_held_body_makes_a_request_conditional() {
        let meta = |present, etag: Option<&str>, lm: Option<&str>| Meta {
            present,
            etag: etag.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
            fetched: 1,
        };
        let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
        let both = vec![
            (IF_NONE_MATCH, "\"e1\"".to_owned()),
            (IF_MODIFIED_SINCE, lm.to_owned()),
        ];
        let cases = [
            (None, vec![]),
            (Some(meta(true, None, None)), vec![]),
            // An absent answer has nothing to keep: ask without conditions.
            (Some(meta(false, Some("\"e1\""), Some(lm))), vec![]),
            (
                Some(meta(true, Some("\"e1\""), None)),
                vec![(IF_NONE_MATCH, "\"e1\"".to_owned())],
            ),
            (
                Some(meta(true, None, Some(lm))),
                vec![(IF_MODIFIED_SINCE, lm.to_owned())],
            ),
            (Some(meta(true, Some("\"e1\""), Some(lm))), both),
        ];
        for (held, want) in cases {
            assert_eq!(conditional_headers(held.as_ref()), want, "{held:?}");
        }
    }
}
