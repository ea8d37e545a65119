//! Turning an upstream's answer for a file into a typed outcome: first its status and headers
//! (read the body, keep the held copy, the file is absent, or an error naming what to do), then
//! a 200's body (is it what the file should be). Pure: no I/O.

use bytes::Bytes;
use privreg_shared::config::Upstream;
use privreg_shared::index::IndexLine;
use privreg_shared::protocol::RegistryConfig;
use privreg_shared::store::UpstreamPath;

use super::error::FetchError;

/// An answer's validators, kept to make the next request conditional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    /// `ETag` and `Last-Modified`, when they are text.
    pub(super) fn from_headers(headers: &http::HeaderMap) -> Validators {
        let header = |name: http::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Validators {
            etag: header(http::header::ETAG),
            last_modified: header(http::header::LAST_MODIFIED),
        }
    }
}

/// What the head of an answer says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Head {
    /// A new body follows (200).
    Body(Validators),
    /// The held copy is still good (304 to a conditional request).
    NotModified(Validators),
    /// The upstream has no such crate (404 or 410 for an index file).
    Absent,
}

/// Classifies an answer's `status` and `headers` for `rel` (`what`: how errors name it).
/// `held_body`: a copy with a body is held, so the request was conditional and a 304 can answer
/// it; a 304 to an unconditional request is an error.
pub(super) fn head(
    up: &Upstream,
    what: &str,
    rel: UpstreamPath<'_>,
    status: u16,
    headers: &http::HeaderMap,
    held_body: bool,
) -> Result<Head, FetchError> {
    match status {
        200 => Ok(Head::Body(Validators::from_headers(headers))),
        304 if held_body => Ok(Head::NotModified(Validators::from_headers(headers))),
        404 | 410 if matches!(rel, UpstreamPath::Index(_)) => Ok(Head::Absent),
        _ => Err(FetchError::from_status(up, what, status, headers)),
    }
}

/// A usable answer for a file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Modified { body: Bytes, validators: Validators },
    NotModified(Validators),
    Absent,
}

impl Answer {
    /// The `outcome` label of `privreg_upstream_requests_total`.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            Answer::Modified { .. } => "ok",
            Answer::NotModified(_) => "not_modified",
            Answer::Absent => "absent",
        }
    }
}

/// The answer a 200 with `body` gives for `rel`: refused when `config.json` is not JSON or an
/// index file is something else.
pub(super) fn body(
    up: &Upstream,
    what: &str,
    rel: UpstreamPath<'_>,
    body: Bytes,
    validators: Validators,
) -> Result<Answer, FetchError> {
    let bad = match rel {
        UpstreamPath::Config => RegistryConfig::parse(&body).err().map(|e| e.to_string()),
        UpstreamPath::Index(_) => not_an_index(&body),
    };
    match bad {
        Some(message) => Err(FetchError::BadBody {
            upstream: up.name.to_string(),
            what: what.to_owned(),
            message,
        }),
        None => Ok(Answer::Modified { body, validators }),
    }
}

/// Whether an index file's body is something else (an error page, binary junk): `Some(why)` when
/// it has lines but not one of them is an index entry. Cargo would read such a body as a crate
/// without versions, which would hide the crate instead of failing.
pub(super) fn not_an_index(body: &[u8]) -> Option<String> {
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    let (first, first_line) = lines.next()?;
    let reason = |l: &[u8]| match std::str::from_utf8(l) {
        Ok(text) => IndexLine::parse(text).err(),
        Err(_) => Some("line is not UTF-8".to_owned()),
    };
    let first_reason = reason(first_line)?;
    let mut count = 1;
    for (_, l) in lines {
        reason(l)?;
        count += 1;
    }
    Some(format!(
        "none of its {count} lines is an index entry (line {}: {first_reason})",
        first + 1
    ))
}

#[cfg(test)]
mod tests {
    use http::header::{ETAG, LAST_MODIFIED, RETRY_AFTER};
    use privreg_shared::CrateName;

    use super::*;

    const LINE: &str = r#"{"name":"foo","vers":"1.0.0","deps":[],"cksum":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","features":{}}"#;

    fn acme() -> Upstream {
        crate::upstream::test_upstream()
    }

    fn headers(pairs: &[(http::HeaderName, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.clone(), v.parse().unwrap()))
            .collect()
    }

    fn validators(etag: Option<&str>, lm: Option<&str>) -> Validators {
        Validators {
            etag: etag.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
        }
    }

    #[test]
    fn heads_become_typed_outcomes() {
        let up = acme();
        let foo = CrateName::new("foo").unwrap();
        let (index, config) = (UpstreamPath::Index(&foo), UpstreamPath::Config);
        let tagged = headers(&[(ETAG, "\"e1\""), (LAST_MODIFIED, "yesterday")]);
        let v = validators(Some("\"e1\""), Some("yesterday"));
        let none = http::HeaderMap::new();
        let ok = |h| Ok::<_, FetchError>(h);
        let cases = [
            (index, 200, &tagged, false, ok(Head::Body(v.clone()))),
            (
                config,
                200,
                &none,
                true,
                ok(Head::Body(Validators::default())),
            ),
            (index, 304, &tagged, true, ok(Head::NotModified(v.clone()))),
            (index, 404, &none, true, ok(Head::Absent)),
            (index, 410, &none, false, ok(Head::Absent)),
        ];
        for (rel, status, h, held, want) in cases {
            assert_eq!(head(&up, "x", rel, status, h, held), want, "{status}");
        }
        // Errors: a 304 nobody asked for, a missing config.json, refusals and failures.
        for (rel, status, held, want) in [
            (index, 304, false, "upstream acme answered 304 for x"),
            (config, 404, false, "upstream acme answered 404 for x"),
            (index, 500, true, "upstream acme answered 500 for x"),
        ] {
            let e = head(&up, "x", rel, status, &none, held).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let e = head(&up, "x", index, 401, &none, true).unwrap_err();
        assert!(matches!(e, FetchError::Auth { status: 401, .. }), "{e:?}");
        let slow = headers(&[(RETRY_AFTER, "7")]);
        let e = head(&up, "x", index, 429, &slow, true).unwrap_err();
        assert_eq!(e.retry_after(), Some(7));
    }

    #[test]
    fn bodies_are_checked_against_what_the_file_should_be() {
        let up = acme();
        let foo = CrateName::new("foo").unwrap();
        let (index, config) = (UpstreamPath::Index(&foo), UpstreamPath::Config);
        let v = validators(Some("\"e1\""), None);
        for (rel, text, good) in [
            (config, "{\"dl\":\"http://x/\"}", true),
            (config, "<html>", false),
            (index, LINE, true),
            (index, "", true),
            (index, "<html>\n</html>", false),
        ] {
            let got = body(&up, "x", rel, Bytes::from(text), v.clone());
            match got {
                Ok(answer) => {
                    assert!(good, "{text:?} was accepted");
                    assert_eq!(answer.outcome(), "ok");
                    assert_eq!(
                        answer,
                        Answer::Modified {
                            body: Bytes::from(text),
                            validators: v.clone()
                        }
                    );
                }
                Err(e) => {
                    assert!(!good, "{text:?}: {e}");
                    assert!(matches!(e, FetchError::BadBody { .. }), "{e:?}");
                }
            }
        }
    }

    #[test]
    fn an_index_body_is_one_with_a_usable_line() {
        assert_eq!(
            not_an_index(b""),
            None,
            "an empty file is a crate without versions"
        );
        assert_eq!(not_an_index(format!("{LINE}\n").as_bytes()), None);
        // One good line among bad ones is still an index file (cargo skips the rest).
        assert_eq!(not_an_index(format!("junk\n{LINE}\n").as_bytes()), None);
    }

    #[test]
    fn garbage_is_named_with_its_first_bad_line() {
        let why = not_an_index(b"\n<html>\n<body>oops</body>\n").unwrap();
        assert!(
            why.starts_with("none of its 2 lines is an index entry (line 2: "),
            "{why}"
        );
        let why = not_an_index(&[0xff, 0xfe, b'\n']).unwrap();
        assert!(why.contains("not UTF-8"), "{why}");
    }
}
