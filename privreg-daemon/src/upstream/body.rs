//! Reading an upstream's answer: bounded by `[limits]`, cut off by the upstream's `timeout`, and
//! checked to be an index file when it should be one.

use bytes::{Bytes, BytesMut};
use privreg_shared::config::Upstream;
use privreg_shared::index::IndexLine;

use super::error::FetchError;

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

/// Reads a body of at most `limit.0` bytes (`limit.1`: the config key that sets it).
pub(super) async fn read_limited(
    resp: reqwest::Response,
    limit: (u64, &'static str),
    up: &Upstream,
    what: &str,
) -> Result<Bytes, FetchError> {
    let mut body = BytesMut::with_capacity(resp.content_length().map_or(0, |l| l as usize));
    read_limited_into(resp, limit, up, what, |chunk| body.extend_from_slice(chunk)).await?;
    // Cached bodies live long: keep no spare capacity from growing the buffer.
    if body.capacity() > body.len() + body.len() / 8 {
        return Ok(Bytes::copy_from_slice(&body));
    }
    Ok(body.freeze())
}

/// Hands a body of at most `limit.0` bytes to `sink` a chunk at a time, as it arrives.
pub(super) async fn read_limited_into(
    mut resp: reqwest::Response,
    (limit, key): (u64, &'static str),
    up: &Upstream,
    what: &str,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), FetchError> {
    let too_large = || FetchError::TooLarge {
        upstream: up.name.to_string(),
        what: what.to_owned(),
        limit,
        key,
    };
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let mut len = 0u64;
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| FetchError::from_reqwest(up, what, &e, true))?;
        let Some(chunk) = chunk else { break };
        len += chunk.len() as u64;
        if len > limit {
            return Err(too_large());
        }
        sink(&chunk);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"name":"foo","vers":"1.0.0","deps":[],"cksum":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","features":{}}"#;

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
