//! Reading an upstream's answer: bounded by `[limits]` and cut off by the upstream's `timeout`
//! (what the body should be is checked in [`super::classify`]).

use bytes::{Bytes, BytesMut};
use privreg_shared::config::Upstream;

use super::error::FetchError;

/// Reads a body of at most `limit.0` bytes (`limit.1`: the config key that sets it).
pub(super) async fn read_limited(
    resp: reqwest::Response,
    limit: (u64, &'static str),
    up: &Upstream,
    what: &str,
) -> Result<Bytes, FetchError> {
    // Reserve what the upstream announces, but never more than the limit: an upstream that
    // declares a huge Content-Length must not make the daemon allocate it before the check.
    let mut body = BytesMut::with_capacity(
        resp.content_length()
            .map_or(0, |l| usize::try_from(l.min(limit.0)).unwrap_or(0)),
    );
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
