//! What the shared tier holds, without I/O: object keys, the index-file object format, and the
//! circuit breaker's state.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use privreg_shared::store::{Meta, Stored};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The object key of the `.crate` whose sha256 is `cksum` (lower-case hex, validated by the
/// router): `<prefix>/v1/crates/<ab>/<cd>/<cksum>`, shared by every upstream that serves it.
pub(crate) fn crate_key(prefix: &str, cksum: &str) -> String {
    let (a, b) = (
        cksum.get(..2).unwrap_or_default(),
        cksum.get(2..4).unwrap_or_default(),
    );
    join(prefix, &format!("v1/crates/{a}/{b}/{cksum}"))
}

/// The object key of an upstream file: `<prefix>/v1/index/<upstream dir>/<path>`; the upstream
/// dir is the name plus a hash of the index URL (as on disk), so two daemons share a file only
/// when they name the same registry.
pub(crate) fn index_key(prefix: &str, upstream_dir: &str, rel_url: &str) -> String {
    join(prefix, &format!("v1/index/{upstream_dir}/{rel_url}"))
}

pub(super) fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// The header line of an index-file object: the upstream's validators and fetch time, and the
/// body's sha256 (a damaged object is found rather than served).
#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    meta: Meta,
    sha256: String,
}

/// An index-file object: one JSON header line, then the body exactly as the upstream sent it.
pub(crate) fn encode_index(stored: &Stored) -> Bytes {
    let header = Header {
        meta: stored.meta.clone(),
        sha256: hex::encode(Sha256::digest(&stored.body)),
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(&serde_json::to_vec(&header).expect("a header serialises"));
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&stored.body);
    out.freeze()
}

/// Why an object read from the tier is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("no header line")]
    NoHeader,
    #[error("unreadable header: {0}")]
    BadHeader(String),
    #[error("body sha256 {got} differs from the header's {want}")]
    Damaged { want: String, got: String },
    #[error("an absent answer with a body")]
    AbsentWithBody,
}

/// An index file read from the tier, with its body's sha256 (checked against the object's
/// header), which the caller need not compute again.
#[derive(Debug)]
pub(crate) struct Verified {
    pub stored: Stored,
    pub sha256: [u8; 32],
}

/// Reads an index-file object written by [`encode_index`]. A fetch time in the future (a clock
/// ahead, or a forged object) is taken as now, so that it never buys more freshness than `ttl`.
pub(crate) fn decode_index(object: &Bytes, now: u64) -> Result<Verified, Refused> {
    let split = object
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(Refused::NoHeader)?;
    let header: Header =
        serde_json::from_slice(&object[..split]).map_err(|e| Refused::BadHeader(e.to_string()))?;
    let body = object.slice(split + 1..);
    let sha256: [u8; 32] = Sha256::digest(&body).into();
    let got = hex::encode(sha256);
    if got != header.sha256 {
        return Err(Refused::Damaged {
            want: header.sha256,
            got,
        });
    }
    if !header.meta.present && !body.is_empty() {
        return Err(Refused::AbsentWithBody);
    }
    let mut meta = header.meta;
    meta.fetched = meta.fetched.min(now);
    Ok(Verified {
        stored: Stored { meta, body },
        sha256,
    })
}

/// The circuit breaker: after a failure the tier is skipped until `open_until`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Breaker {
    open_until: Option<Instant>,
    /// When the last failure opened it: a request that started before then and succeeds says
    /// nothing about the tier now, and does not close it.
    opened_at: Option<Instant>,
    /// Failures in a row.
    pub failures: u64,
}

impl Breaker {
    /// Whether the tier may be asked at `now`.
    pub(crate) fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|t| now >= t)
    }

    /// How long the tier is still skipped at `now`, if it is.
    pub(crate) fn open_for(&self, now: Instant) -> Option<Duration> {
        self.open_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// A request that started at `started` succeeded: the tier answers again, unless the
    /// request was already under way when the last failure opened the breaker (with many
    /// requests in flight, one of those would otherwise close it at once).
    pub(crate) fn succeeded(&mut self, started: Instant) {
        if self.opened_at.is_some_and(|opened| started < opened) {
            return;
        }
        self.open_until = None;
        self.opened_at = None;
        self.failures = 0;
    }

    /// A failure at `now` opens the breaker for `cooldown`.
    pub(crate) fn failed(&mut self, now: Instant, cooldown: Duration) {
        self.failures += 1;
        self.open_until = Some(now + cooldown);
        self.opened_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(present: bool, body: &'static [u8]) -> Stored {
        Stored {
            meta: Meta {
                present,
                etag: Some("\"e1\"".into()),
                last_modified: None,
                fetched: 100,
            },
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn keys() {
        let ck = "abcdef".repeat(10) + "0123";
        assert_eq!(
            crate_key("team/privreg", &ck),
            format!("team/privreg/v1/crates/ab/cd/{ck}")
        );
        assert_eq!(crate_key("", &ck), format!("v1/crates/ab/cd/{ck}"));
        assert_eq!(
            index_key("p", "crates-io-0123456789ab", "se/rd/serde"),
            "p/v1/index/crates-io-0123456789ab/se/rd/serde"
        );
    }

    #[test]
    fn index_objects_round_trip_and_damage_is_refused() {
        let s = stored(true, b"{\"name\":\"a\"}\n");
        let obj = encode_index(&s);
        let back = decode_index(&obj, 1000).unwrap();
        // The digest it was checked against comes with it.
        assert_eq!(back.sha256, <[u8; 32]>::from(Sha256::digest(&s.body)));
        let back = back.stored;
        assert_eq!((back.meta, back.body), (s.meta.clone(), s.body.clone()));
        // Absent answers travel too.
        let absent = stored(false, b"");
        assert!(
            !decode_index(&encode_index(&absent), 1000)
                .unwrap()
                .stored
                .meta
                .present
        );
        // One byte changed in the body.
        let mut bad = obj.to_vec();
        *bad.last_mut().unwrap() = b'x';
        assert!(matches!(
            decode_index(&Bytes::from(bad), 1000),
            Err(Refused::Damaged { .. })
        ));
        assert!(matches!(
            decode_index(&Bytes::from_static(b"no newline"), 1),
            Err(Refused::NoHeader)
        ));
        assert!(matches!(
            decode_index(&Bytes::from_static(b"{}\nx"), 1),
            Err(Refused::BadHeader(_))
        ));
        // A fetch time from the future buys no extra freshness.
        assert_eq!(decode_index(&obj, 50).unwrap().stored.meta.fetched, 50);
    }

    #[test]
    fn breaker_skips_for_the_cooldown() {
        let (now, cool) = (Instant::now(), Duration::from_secs(30));
        let mut b = Breaker::default();
        assert!(b.allows(now) && b.open_for(now).is_none());
        b.failed(now, cool);
        assert!(!b.allows(now + Duration::from_secs(29)));
        assert_eq!(b.open_for(now), Some(cool));
        assert!(b.allows(now + cool));
        let before = now;
        let now = now + Duration::from_secs(1);
        b.failed(now, cool);
        assert_eq!(b.failures, 2);
        // A request under way before the failure that succeeds after it leaves it open.
        b.succeeded(before);
        assert!(!b.allows(now) && b.failures == 2);
        b.succeeded(now);
        assert!(b.allows(now) && b.failures == 0);
    }
}
