//! The index pack, without I/O: one object per shared upstream that holds the index files a
//! daemon last worked with, so that a cold daemon on a warm tier reads one object instead of one
//! per file (a resolution asks for hundreds, a few levels at a time).
//!
//! Format: the line `privreg index pack 1`, the length of the entries (4 bytes, little-endian),
//! and the entries as one LZ4 block (index JSON shrinks about twelve times). The entries are,
//! per file, a line `<length> <path>` and `length` bytes of an index-file object
//! ([`encode_index`]: the upstream's validators and fetch time, the body's sha256, the body).
//! Paths are sparse-index paths of valid crate names, exactly as cargo asks for them; anything
//! else, a damaged block, or entries longer than the reader's limit refuse the whole pack. Each
//! file is checked against its sha256 when it is taken, and refused alone.

use std::collections::HashMap;

use bytes::Bytes;
use privreg_shared::CrateName;
use privreg_shared::store::Stored;

use super::object::{Refused, Verified, decode_index, encode_index, join};

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
    #[error("{0} bytes of entries, more than the limit of {1}")]
    TooLarge(u64, u64),
    #[error("damaged: {0}")]
    Damaged(String),
    #[error("entry {at}: unreadable entry line")]
    BadLine { at: usize },
    #[error("entry {at}: {path:?} is not an index path")]
    BadPath { at: usize, path: String },
    #[error("entry {at}: cut short")]
    Truncated { at: usize },
}

/// The pack of `files` (sparse-index path, stored file): one object.
pub(crate) fn encode_pack<'a>(files: impl IntoIterator<Item = (&'a str, &'a Stored)>) -> Bytes {
    let entries = encode_entries(files);
    let len = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&lz4_flex::block::compress(&entries));
    Bytes::from(out)
}

/// A pack read from the tier: its entries, uncompressed, and where each file lies in them.
/// Each file is checked when it is taken, as a single index-file object is, so that the pack is
/// usable as soon as it is decompressed.
#[derive(Debug)]
pub(crate) struct Pack {
    entries: Vec<u8>,
    at: HashMap<String, (usize, usize)>,
}

impl Pack {
    /// The file at `path`, taken out of the pack: `None` when it holds none, an error when its
    /// object is damaged. Copied out, so that holding it does not keep the pack alive.
    pub(crate) fn take(&mut self, path: &str, now: u64) -> Option<Result<Verified, Refused>> {
        let (start, len) = self.at.remove(path)?;
        let object = Bytes::copy_from_slice(&self.entries[start..start + len]);
        Some(decode_index(&object, now))
    }

    /// Whether every file was taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// How many files are left.
    pub(crate) fn len(&self) -> usize {
        self.at.len()
    }
}

/// The pack written by [`encode_pack`], if its entries take at most `limit` bytes and are well
/// formed (their files are checked when taken: [`Pack::take`]).
pub(crate) fn decode_pack(object: &[u8], limit: u64) -> Result<Pack, PackRefused> {
    let rest = object.strip_prefix(MAGIC).ok_or(PackRefused::NotAPack)?;
    let (len, block) = rest.split_first_chunk::<4>().ok_or(PackRefused::NotAPack)?;
    let len = u32::from_le_bytes(*len);
    if u64::from(len) > limit {
        return Err(PackRefused::TooLarge(u64::from(len), limit));
    }
    let len = usize::try_from(len).map_err(|_| PackRefused::TooLarge(u64::MAX, limit))?;
    let entries =
        lz4_flex::block::decompress(block, len).map_err(|e| PackRefused::Damaged(e.to_string()))?;
    if entries.len() != len {
        return Err(PackRefused::Damaged(format!(
            "{} bytes of entries, not {len}",
            entries.len()
        )));
    }
    let at = entry_places(&entries)?;
    Ok(Pack { entries, at })
}

/// The entries of `files`, uncompressed.
fn encode_entries<'a>(files: impl IntoIterator<Item = (&'a str, &'a Stored)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, stored) in files {
        let object = encode_index(stored);
        out.extend_from_slice(format!("{} {path}\n", object.len()).as_bytes());
        out.extend_from_slice(&object);
    }
    out
}

/// Where each file lies in uncompressed entries (start, length), by path.
fn entry_places(entries: &[u8]) -> Result<HashMap<String, (usize, usize)>, PackRefused> {
    let mut at = HashMap::new();
    let (mut pos, mut n) = (0, 0);
    while pos < entries.len() {
        n += 1;
        let rest = &entries[pos..];
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(PackRefused::BadLine { at: n })?;
        let line = std::str::from_utf8(&rest[..end]).map_err(|_| PackRefused::BadLine { at: n })?;
        let (len, path) = line.split_once(' ').ok_or(PackRefused::BadLine { at: n })?;
        let len: usize = len.parse().map_err(|_| PackRefused::BadLine { at: n })?;
        if CrateName::from_index_path(path).is_none() {
            return Err(PackRefused::BadPath {
                at: n,
                path: path.chars().take(80).collect(),
            });
        }
        let start = pos + end + 1;
        if entries.len() - start < len {
            return Err(PackRefused::Truncated { at: n });
        }
        at.insert(path.to_owned(), (start, len));
        pos = start + len;
    }
    Ok(at)
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

    fn refused(entries: &[u8]) -> PackRefused {
        entry_places(entries).expect_err("refused")
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
        let object = encode_pack([("se/rd/serde", &a), ("1/a", &b)]);
        assert!(object.starts_with(b"privreg index pack 1\n"));
        let mut pack = decode_pack(&object, 1 << 20).unwrap();
        assert_eq!(pack.len(), 2);
        let serde = pack.take("se/rd/serde", 1000).unwrap().unwrap().stored;
        assert_eq!((serde.body, serde.meta), (a.body.clone(), a.meta.clone()));
        // Taken out: a second take finds nothing.
        assert!(pack.take("se/rd/serde", 1000).is_none());
        assert!(pack.take("se/rd/serde_json", 1000).is_none());
        // A fetch time from the future is taken as now, as for a single object.
        assert_eq!(
            pack.take("1/a", 80).unwrap().unwrap().stored.meta.fetched,
            80
        );
        assert!(pack.is_empty());
        // An empty pack is a pack.
        assert!(decode_pack(&encode_pack([]), 0).unwrap().is_empty());
        // Index files repeat themselves: the pack is much smaller than its files.
        let line = b"{\"name\":\"serde\",\"vers\":\"1.0.0\",\"deps\":[],\"cksum\":\"00\",\"features\":{}}\n";
        let big = Stored {
            body: Bytes::from(line.repeat(1000)),
            ..a.clone()
        };
        assert!(encode_pack([("se/rd/serde", &big)]).len() < big.body.len() / 10);
    }

    #[test]
    fn a_damaged_oversized_or_foreign_pack_is_refused_whole() {
        let a = stored(100, b"{\"name\":\"serde\"}\n");
        let object = encode_pack([("se/rd/serde", &a)]);
        let decode = |o: &[u8]| decode_pack(o, 1 << 20).expect_err("refused");
        assert_eq!(decode(b"something else"), PackRefused::NotAPack);
        assert_eq!(decode(MAGIC), PackRefused::NotAPack);
        // The entries' length is checked against the limit before anything is decompressed.
        assert!(matches!(
            decode_pack(&object, 10),
            Err(PackRefused::TooLarge(_, 10))
        ));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), PackRefused::TooLarge(..)));
        // A damaged block: cut short, or a length that does not match.
        assert!(matches!(
            decode(&object[..object.len() - 3]),
            PackRefused::Damaged(_)
        ));
        let mut longer = object.to_vec();
        longer[MAGIC.len()] += 1;
        assert!(matches!(decode(&longer), PackRefused::Damaged(_)));
    }

    #[test]
    fn damaged_files_are_refused_alone_and_hostile_entries_whole() {
        let a = stored(100, b"{\"name\":\"serde\"}\n");
        let good = encode_entries([("se/rd/serde", &a), ("se/rd/serde_json", &a)]);
        // One byte of the second body changed: that file alone is refused, when it is taken.
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 1;
        let mut pack = Pack {
            at: entry_places(&bad).unwrap(),
            entries: bad,
        };
        assert!(pack.take("se/rd/serde", 1000).unwrap().is_ok());
        assert!(matches!(
            pack.take("se/rd/serde_json", 1000),
            Some(Err(Refused::Damaged { .. }))
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
            let entries = encode_entries([(path, &a)]);
            assert!(
                matches!(refused(&entries), PackRefused::BadPath { at: 1, .. }),
                "{path}"
            );
        }
        assert_eq!(refused(b"se/rd/serde\n"), PackRefused::BadLine { at: 1 });
    }
}
