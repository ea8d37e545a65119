//! When privreg first saw each version of an index file (issue 17): the age of a version whose
//! index line has no `pubtime`.
//!
//! The record sits next to the index file it dates, as `<index-path>.seen` (crate names never
//! hold a `.`, so it cannot be another crate's file), and lives and dies with it:
//!
//! - Versions present the first time privreg ever fetched the file count as old and are not
//!   recorded: a fresh install must not block everything for days.
//! - A version that appears in a later answer (a revalidation, or a crate that answered 404
//!   before) is recorded with that moment.
//! - Only versions still in the file and without a valid `pubtime` are kept, so the record is
//!   never larger than its file; when none is left (the usual case, and always for a 404) the
//!   record is removed.
//! - A record that cannot be read counts as empty (those versions count as old).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::{Deserialize, Serialize};

use super::{Cache, CacheError, UpstreamPath};
use crate::CrateName;
use crate::config::Upstream;
use crate::index::IndexFile;

/// The suffix of a first-seen record, appended to its index file's path.
pub const SEEN_SUFFIX: &str = ".seen";

/// When privreg first saw the versions of one index file that appeared after its first fetch and
/// have no `pubtime`: version → seconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FirstSeen(BTreeMap<Version, u64>);

impl FirstSeen {
    /// When `version` was first seen; `None` when it is not recorded (old, or dated by `pubtime`).
    pub fn get(&self, version: &Version) -> Option<u64> {
        self.0.get(version).copied()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many versions are dated.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The record after the file `before` was replaced by `after` at `now` (seconds since the
    /// epoch). `before` is `None` when privreg held no answer at all for the file (its first
    /// fetch, or after its cache entry was removed): then nothing new is dated. An empty
    /// [`IndexFile`] stands for a 404. Pure.
    #[must_use]
    pub fn update(&self, before: Option<&IndexFile>, after: &IndexFile, now: u64) -> FirstSeen {
        let dated = after
            .lines
            .iter()
            .filter(|l| l.pubtime.is_none())
            .filter_map(|l| match (self.get(&l.vers), before) {
                (Some(t), _) => Some((l.vers.clone(), t)),
                (None, Some(b)) if b.version(&l.vers).is_none() => Some((l.vers.clone(), now)),
                (None, _) => None,
            })
            .collect();
        FirstSeen(dated)
    }
}

/// The record's path next to the index file at `index`.
pub(super) fn seen_path(index: &Path) -> PathBuf {
    let mut name = index.as_os_str().to_owned();
    name.push(SEEN_SUFFIX);
    PathBuf::from(name)
}

/// Whether the file at `path` is a first-seen record that reads (for [`Cache::verify`]).
pub(super) fn is_record(path: &Path) -> bool {
    path.as_os_str().to_string_lossy().ends_with(SEEN_SUFFIX)
}

/// Whether the first-seen record at `path` can be read.
pub(super) fn record_is_good(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|d| serde_json::from_slice::<FirstSeen>(&d).is_ok())
}

impl Cache {
    /// When privreg first saw the versions of `krate`'s index file at `up`; empty when nothing
    /// is recorded or the record cannot be read.
    pub fn first_seen(&self, up: &Upstream, krate: &CrateName) -> FirstSeen {
        let path = seen_path(&self.upstream_path(up, UpstreamPath::Index(krate)));
        match self.read_small(&path) {
            Ok(d) => serde_json::from_slice(&d).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged first-seen record");
                FirstSeen::default()
            }),
            Err(_) => FirstSeen::default(),
        }
    }

    /// Writes the first-seen record of `krate`'s index file at `up` atomically, or removes it
    /// when it is empty.
    pub fn store_first_seen(
        &self,
        up: &Upstream,
        krate: &CrateName,
        seen: &FirstSeen,
    ) -> Result<(), CacheError> {
        let path = seen_path(&self.upstream_path(up, UpstreamPath::Index(krate)));
        if seen.is_empty() {
            return self.put(&path, None, false);
        }
        let data = serde_json::to_vec(seen).expect("first-seen records serialise");
        self.put(&path, Some(vec![bytes::Bytes::from(data)]), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// An index file with these versions; those ending in `p` carry a `pubtime`.
    fn file(versions: &[&str]) -> IndexFile {
        let body: String = versions
            .iter()
            .map(|v| {
                let (v, pubtime) = v
                    .strip_suffix('p')
                    .map_or((*v, ""), |v| (v, r#","pubtime":"2025-01-01T00:00:00Z""#));
                format!(r#"{{"name":"foo","vers":"{v}","deps":[],"cksum":"{CK}"{pubtime}}}"#) + "\n"
            })
            .collect();
        IndexFile::parse(body.as_bytes())
    }

    fn seen(pairs: &[(&str, u64)]) -> FirstSeen {
        FirstSeen(
            pairs
                .iter()
                .map(|(v, t)| (v.parse().unwrap(), *t))
                .collect(),
        )
    }

    #[test]
    fn versions_are_dated_when_they_appear_after_the_first_fetch() {
        let none = FirstSeen::default();
        let absent = IndexFile::default();
        // (record before, file before (None: never fetched), file after, record after)
        let cases: Vec<(FirstSeen, Option<IndexFile>, IndexFile, FirstSeen)> = vec![
            // The first fetch dates nothing.
            (none.clone(), None, file(&["1.0.0", "1.1.0"]), none.clone()),
            // A revalidation dates what is new, only that.
            (
                none.clone(),
                Some(file(&["1.0.0"])),
                file(&["1.0.0", "1.1.0"]),
                seen(&[("1.1.0", 50)]),
            ),
            // A crate that was absent (404) is new as a whole.
            (
                none.clone(),
                Some(absent.clone()),
                file(&["1.0.0", "1.1.0"]),
                seen(&[("1.0.0", 50), ("1.1.0", 50)]),
            ),
            // Dates are kept, never moved; a version with `pubtime` needs none.
            (
                seen(&[("1.1.0", 20)]),
                Some(file(&["1.0.0", "1.1.0"])),
                file(&["1.0.0", "1.1.0", "1.2.0p", "1.3.0"]),
                seen(&[("1.1.0", 20), ("1.3.0", 50)]),
            ),
            // A version gone from the file is forgotten; a 404 forgets everything.
            (
                seen(&[("1.1.0", 20), ("1.3.0", 30)]),
                Some(file(&["1.1.0", "1.3.0"])),
                file(&["1.3.0"]),
                seen(&[("1.3.0", 30)]),
            ),
            (
                seen(&[("1.3.0", 30)]),
                Some(file(&["1.3.0"])),
                absent.clone(),
                none.clone(),
            ),
            // A record left from before the file was evicted keeps its dates on a new first
            // fetch; nothing else is dated.
            (
                seen(&[("1.1.0", 20)]),
                None,
                file(&["1.0.0", "1.1.0", "1.2.0"]),
                seen(&[("1.1.0", 20)]),
            ),
        ];
        for (i, (record, before, after, want)) in cases.into_iter().enumerate() {
            assert_eq!(record.update(before.as_ref(), &after, 50), want, "case {i}");
        }
    }

    #[test]
    fn records_live_next_to_their_index_file_and_go_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let up = crate::config::Config::parse(
            Path::new("c.toml"),
            "[upstreams.acme]\nindex = \"sparse+http://127.0.0.1:1/index/\"\n",
        )
        .unwrap()
        .upstreams
        .remove(0);
        let krate = CrateName::new("serde").unwrap();
        assert!(cache.first_seen(&up, &krate).is_empty());
        let record = seen(&[("1.2.3", 1_700_000_000)]);
        cache.store_first_seen(&up, &krate, &record).unwrap();
        assert_eq!(cache.first_seen(&up, &krate), record);
        let index = cache.upstream_path(&up, UpstreamPath::Index(&krate));
        let path = seen_path(&index);
        assert_eq!(path.parent(), index.parent());
        assert!(is_record(&path) && record_is_good(&path));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"1.2.3":1700000000}"#
        );
        // `verify` keeps a good record and drops a damaged one.
        assert!(cache.verify().dropped.is_empty());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(cache.first_seen(&up, &krate).is_empty());
        assert_eq!(cache.verify().dropped, std::slice::from_ref(&path));
        cache.store_first_seen(&up, &krate, &record).unwrap();
        cache
            .store_first_seen(&up, &krate, &FirstSeen::default())
            .unwrap();
        assert!(!path.exists());
        cache
            .store_first_seen(&up, &krate, &FirstSeen::default())
            .unwrap();
    }
}
