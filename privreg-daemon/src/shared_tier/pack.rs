//! The index pack, without I/O: one object per shared upstream that holds the index files a
//! daemon last worked with, so that a cold daemon on a warm tier reads one object instead of one
//! per file (a resolution asks for hundreds, a few levels at a time).
//!
//! Format: the line `privreg index pack 1`, then per file a line `<length> <path>` and `length`
//! bytes of an index-file object ([`encode_index`]: the upstream's validators and fetch time,
//! the body's sha256, the body). Paths are sparse-index paths of valid crate names, exactly as
//! cargo asks for them; anything else refuses the whole pack.

use std::collections::HashMap;

use bytes::Bytes;
use privreg_shared::CrateName;
use privreg_shared::store::Stored;

use super::object::{Refused, decode_index, encode_index, join};

const MAGIC: &[u8] = b"privreg index pack 1\n";

/// The object key of `upstream_dir`'s pack: `<prefix>/v1/packs/<upstream dir>/index.pack`.
pub(crate) fn pack_key(prefix: &str, upstream_dir: &str) -> String {
    join(prefix, &format!("v1/packs/{upstream_dir}/index.pack"))
}

/// Why a pack is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PackRefused {
    #[error("not an index pack")]
    NotAPack,
    #[error("entry {at}: unreadable entry line")]
    BadLine { at: usize },
    #[error("entry {at}: {path:?} is not an index path")]
    BadPath { at: usize, path: String },
    #[error("entry {at}: cut short")]
    Truncated { at: usize },
    #[error("entry {at} ({path}): {why}")]
    Entry {
        at: usize,
        path: String,
        why: Refused,
    },
}

/// The pack of `files` (sparse-index path, stored file) as the parts of one object; the bodies
/// are shared, not copied.
pub(crate) fn encode_pack<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a Stored)>,
) -> Vec<Bytes> {
    let mut parts = vec![Bytes::from_static(MAGIC)];
    for (path, stored) in files {
        let object = encode_index(stored);
        parts.push(Bytes::from(format!("{} {path}\n", object.len())));
        parts.push(object);
    }
    parts
}

/// The files of a pack written by [`encode_pack`], by path; each is checked as a single
/// index-file object is. The bodies are copied out, so that holding some of them does not keep
/// the whole object alive.
pub(crate) fn decode_pack(object: &[u8], now: u64) -> Result<HashMap<String, Stored>, PackRefused> {
    let mut rest = object.strip_prefix(MAGIC).ok_or(PackRefused::NotAPack)?;
    let mut files = HashMap::new();
    let mut at = 0;
    while !rest.is_empty() {
        at += 1;
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(PackRefused::BadLine { at })?;
        let line = std::str::from_utf8(&rest[..end]).map_err(|_| PackRefused::BadLine { at })?;
        let (len, path) = line.split_once(' ').ok_or(PackRefused::BadLine { at })?;
        let len: usize = len.parse().map_err(|_| PackRefused::BadLine { at })?;
        if CrateName::from_index_path(path).is_none() {
            return Err(PackRefused::BadPath {
                at,
                path: path.chars().take(80).collect(),
            });
        }
        rest = &rest[end + 1..];
        let entry = rest.get(..len).ok_or(PackRefused::Truncated { at })?;
        let stored = decode_index(&Bytes::copy_from_slice(entry), now).map_err(|why| {
            PackRefused::Entry {
                at,
                path: path.to_owned(),
                why,
            }
        })?;
        files.insert(path.to_owned(), stored);
        rest = &rest[len..];
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use privreg_shared::store::Meta;

    use super::*;

    fn stored(fetched: u64, body: &'static [u8]) -> Stored {
        Stored {
            meta: Meta {
                present: true,
                etag: Some("\"e\"".into()),
                last_modified: None,
                fetched,
            },
            body: Bytes::from_static(body),
        }
    }

    fn joined(parts: &[Bytes]) -> Vec<u8> {
        parts.concat()
    }

    fn refused(object: &[u8]) -> PackRefused {
        decode_pack(object, 1000).expect_err("refused")
    }

    #[test]
    fn key() {
        assert_eq!(
            pack_key("team", "crates-io-0123456789ab"),
            "team/v1/packs/crates-io-0123456789ab/index.pack"
        );
        assert_eq!(pack_key("", "u"), "v1/packs/u/index.pack");
    }

    #[test]
    fn packs_round_trip() {
        let (a, b) = (stored(100, b"{\"name\":\"serde\"}\n"), stored(90, b""));
        let object = joined(&encode_pack([("se/rd/serde", &a), ("1/a", &b)]));
        assert!(object.starts_with(b"privreg index pack 1\n"));
        let files = decode_pack(&object, 1000).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["se/rd/serde"].body, a.body);
        assert_eq!(files["se/rd/serde"].meta, a.meta);
        assert_eq!(files["1/a"].meta.fetched, 90);
        // An empty pack is a pack.
        assert!(decode_pack(MAGIC, 1).unwrap().is_empty());
        // A fetch time from the future is taken as now, as for a single object.
        assert_eq!(
            decode_pack(&object, 95).unwrap()["se/rd/serde"]
                .meta
                .fetched,
            95
        );
    }

    #[test]
    fn a_damaged_or_hostile_pack_is_refused_whole() {
        let a = stored(100, b"{\"name\":\"serde\"}\n");
        let good = joined(&encode_pack([
            ("se/rd/serde", &a),
            ("se/rd/serde_json", &a),
        ]));
        assert_eq!(refused(b"something else"), PackRefused::NotAPack);
        // One byte of the second body changed.
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 1;
        assert!(matches!(
            decode_pack(&bad, 1000),
            Err(PackRefused::Entry { at: 2, .. })
        ));
        // Cut short.
        assert_eq!(
            refused(&good[..good.len() - 1]),
            PackRefused::Truncated { at: 2 }
        );
        // Paths that are not what cargo asks for never reach the cache.
        for path in [
            "../../etc/passwd",
            "se/rd/Serde",
            "se/rd/../serde",
            "xx/yy/serde",
        ] {
            let object = joined(&encode_pack([(path, &a)]));
            assert!(
                matches!(
                    decode_pack(&object, 1000),
                    Err(PackRefused::BadPath { at: 1, .. })
                ),
                "{path}"
            );
        }
        let mut no_len = MAGIC.to_vec();
        no_len.extend_from_slice(b"se/rd/serde\n");
        assert_eq!(refused(&no_len), PackRefused::BadLine { at: 1 });
    }
}
