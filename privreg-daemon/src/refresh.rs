//! `POST /-/refresh` (`privreg refresh`): revalidate cached index files now rather than when
//! their `ttl` runs out, and say what changed.
//!
//! Without crate names, every index file cached for a configured upstream is revalidated with a
//! conditional request (cheap: unchanged files cost a 304). Named crates are fetched in full from
//! every upstream, because some upstreams keep their ETag across a yank and a 304 would hide it.
//! The new answers go into the same memory and disk cache that serves cargo, so the layered and
//! per-upstream views serve them from the next request on.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::stream::{self, StreamExt};
use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use semver::Version;

use crate::daemon::Daemon;
use crate::upstream::{Entry, Fetched};
use privreg_shared::protocol::{FileReport, Outcome, RefreshReport, RefreshRequest};
use privreg_shared::store::{Cache, UpstreamPath, upstream_dir_name};

/// Largest request body accepted (a list of crate names).
pub(crate) const MAX_REFRESH_BODY: usize = 1 << 20;
/// Index files revalidated at the same time, at most.
pub(crate) const REFRESH_CONCURRENCY: usize = 16;

/// Why a refresh request is refused (400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    #[error("the body must be JSON like {{\"crates\": [\"serde\"]}}: {0}")]
    Body(#[from] serde_json::Error),
    #[error("{name:?} is not a crate name: {message}")]
    Name { name: String, message: String },
}

/// The crates whose index files are cached for `up` (by the names in the cache's layout).
pub(crate) fn cached_index_files(cache: &Cache, up: &Upstream) -> Vec<CrateName> {
    let root = cache
        .root()
        .join("upstreams")
        .join(upstream_dir_name(up))
        .join("index");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    if let Some(k) = crate_at(&root, &path) {
                        out.push(k);
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The crate whose index file lives at `path` under `root`, if `path` is exactly where that
/// crate's file belongs (temp files and strays are not).
fn crate_at(root: &Path, path: &Path) -> Option<CrateName> {
    let name = path.file_name()?.to_str()?;
    let krate = CrateName::new(name).ok()?;
    let rel = path.strip_prefix(root).ok()?;
    let rel: Vec<&str> = rel.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
    (rel.join("/") == krate.index_path() && krate.lower() == krate).then_some(krate)
}

/// Version → yanked, of a cached answer (empty when absent).
fn versions(entry: Option<&Entry>) -> BTreeMap<Version, bool> {
    entry
        .and_then(|e| e.file.as_ref())
        .map(|f| f.lines.iter().map(|l| (l.vers.clone(), l.yanked)).collect())
        .unwrap_or_default()
}

/// Compares what was held before with what the upstream answered.
pub(crate) fn compare(
    krate: &CrateName,
    upstream: &str,
    before: Option<&Entry>,
    fetched: &Fetched,
) -> FileReport {
    let after = match (&fetched.error, &fetched.entry) {
        (None, Some(e)) => Some(e.as_ref()),
        _ => None,
    };
    let now = after.or(before);
    let mut report = FileReport {
        krate: krate.to_string(),
        upstream: upstream.to_owned(),
        outcome: Outcome::Unchanged,
        present: now.is_some_and(|e| e.meta.present),
        versions: versions(now).len(),
        added: Vec::new(),
        removed: Vec::new(),
        yanked: Vec::new(),
        unyanked: Vec::new(),
        error: fetched.error.as_ref().map(ToString::to_string),
    };
    let Some(after) = after else {
        report.outcome = Outcome::Failed;
        return report;
    };
    let Some(before) = before else {
        report.outcome = Outcome::Fetched;
        return report;
    };
    if before.meta.present == after.meta.present && before.body == after.body {
        return report;
    }
    report.outcome = Outcome::Changed;
    let (old, new) = (versions(Some(before)), versions(Some(after)));
    for (v, yanked) in &new {
        match old.get(v) {
            None => report.added.push(v.to_string()),
            Some(was) if was != yanked && *yanked => report.yanked.push(v.to_string()),
            Some(was) if was != yanked => report.unyanked.push(v.to_string()),
            Some(_) => {}
        }
    }
    report.removed = old
        .keys()
        .filter(|v| !new.contains_key(v))
        .map(ToString::to_string)
        .collect();
    report
}

impl Daemon {
    /// Revalidates `crates` at every upstream (full fetches), or, when empty, every cached index
    /// file (conditional requests), and reports each file.
    pub(crate) async fn refresh(&self, crates: &[CrateName]) -> RefreshReport {
        let rt = self.runtime();
        let order = |name: &str| rt.config.upstreams.iter().position(|u| u.name == name);
        // Owned jobs: the futures below must not borrow (they run on the server's tasks).
        let mut jobs: Vec<(Upstream, CrateName, bool)> = Vec::new();
        if crates.is_empty() {
            for up in &rt.config.upstreams {
                for krate in cached_index_files(self.cache(), up) {
                    jobs.push((up.clone(), krate, false));
                }
            }
        } else {
            for krate in crates {
                for up in &rt.config.upstreams {
                    jobs.push((up.clone(), krate.lower(), true));
                }
            }
        }
        let upstreams = self.upstreams().clone();
        let mut files: Vec<FileReport> = stream::iter(jobs)
            .map(move |(up, krate, unconditional)| {
                let upstreams = upstreams.clone();
                async move {
                    let (before, fetched) = upstreams
                        .revalidate_now(&up, UpstreamPath::Index(&krate), unconditional)
                        .await;
                    compare(&krate, &up.name, before.as_deref(), &fetched)
                }
            })
            .buffer_unordered(REFRESH_CONCURRENCY)
            .collect()
            .await;
        files.sort_by(|a, b| {
            (a.krate.as_str(), order(&a.upstream)).cmp(&(b.krate.as_str(), order(&b.upstream)))
        });
        let count = |o: Outcome| files.iter().filter(|f| f.outcome == o).count();
        tracing::info!(
            files = files.len(),
            changed = count(Outcome::Changed),
            failed = count(Outcome::Failed),
            "refresh done"
        );
        RefreshReport { files }
    }

    /// Answers `POST /-/refresh` with this body.
    pub(crate) async fn refresh_request(&self, body: &[u8]) -> Result<RefreshReport, RefreshError> {
        let request: RefreshRequest = if body.iter().all(u8::is_ascii_whitespace) {
            RefreshRequest::default()
        } else {
            serde_json::from_slice(body)?
        };
        let crates = request
            .crates
            .iter()
            .map(|c| {
                CrateName::new(c).map_err(|e| RefreshError::Name {
                    name: c.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.refresh(&crates).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use privreg_shared::index::IndexFile;
    use privreg_shared::store::{Meta, Stored};
    use std::fmt::Write as _;
    use std::sync::Arc;

    const CK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn entry(lines: &[(&str, bool)], present: bool, rev: u64) -> Arc<Entry> {
        let body = lines.iter().fold(String::new(), |mut body, (v, y)| {
            writeln!(
                body,
                "{{\"name\":\"foo\",\"vers\":\"{v}\",\"deps\":[],\"cksum\":\"{CK}\",\"features\":{{}},\"yanked\":{y}}}"
            )
            .unwrap();
            body
        });
        let body = Bytes::from(body);
        Arc::new(Entry {
            meta: Meta {
                present,
                etag: None,
                last_modified: None,
                fetched: 1,
            },
            file: present.then(|| Arc::new(IndexFile::parse_bytes(body.clone()))),
            body,
            rev,
            seen: Arc::default(),
            digest: std::sync::OnceLock::new(),
            disk: crate::upstream::DiskState::new(crate::upstream::OnDisk::Same),
        })
    }

    fn ok(e: Arc<Entry>) -> Fetched {
        Fetched {
            entry: Some(e),
            error: None,
        }
    }

    #[test]
    fn compares_versions_and_yanks() {
        let k = CrateName::new("foo").unwrap();
        let before = entry(
            &[("1.0.0", false), ("1.1.0", false), ("0.9.0", false)],
            true,
            1,
        );
        let after = entry(
            &[("1.0.0", true), ("1.1.0", false), ("1.2.0", false)],
            true,
            2,
        );
        let r = compare(&k, "acme", Some(&before), &ok(after.clone()));
        assert_eq!(r.outcome, Outcome::Changed);
        assert_eq!(
            (r.added, r.removed, r.yanked, r.unyanked),
            (
                vec!["1.2.0".to_owned()],
                vec!["0.9.0".to_owned()],
                vec!["1.0.0".to_owned()],
                vec![]
            )
        );
        let r = compare(&k, "acme", Some(&after), &ok(before.clone()));
        assert_eq!(r.unyanked, ["1.0.0"]);

        // Same bytes: unchanged, even with a new revision (a full fetch).
        let same = entry(
            &[("1.0.0", false), ("1.1.0", false), ("0.9.0", false)],
            true,
            9,
        );
        let r = compare(&k, "acme", Some(&before), &ok(same));
        assert_eq!(
            (r.outcome, r.present, r.versions),
            (Outcome::Unchanged, true, 3)
        );

        // Absent before and after: unchanged; absent, then published: changed.
        let absent = entry(&[], false, 3);
        let r = compare(&k, "acme", Some(&absent), &ok(entry(&[], false, 4)));
        assert_eq!((r.outcome, r.present), (Outcome::Unchanged, false));
        let r = compare(&k, "acme", Some(&absent), &ok(before.clone()));
        assert_eq!((r.outcome, r.added.len()), (Outcome::Changed, 3));

        // Nothing cached before: fetched.
        let r = compare(&k, "acme", None, &ok(before.clone()));
        assert_eq!((r.outcome, r.versions), (Outcome::Fetched, 3));
    }

    #[test]
    fn a_failure_keeps_what_was_known() {
        let k = CrateName::new("foo").unwrap();
        let before = entry(&[("1.0.0", false)], true, 1);
        let failed = Fetched {
            entry: Some(before.clone()),
            error: Some(crate::upstream::FetchError::Status {
                upstream: "acme".into(),
                what: "the index file of foo".into(),
                status: 500,
            }),
        };
        let r = compare(&k, "acme", Some(&before), &failed);
        assert_eq!(
            (r.outcome, r.present, r.versions),
            (Outcome::Failed, true, 1)
        );
        assert_eq!(
            r.error.as_deref(),
            Some("upstream acme answered 500 for the index file of foo")
        );
    }

    #[test]
    fn finds_cached_index_files_only_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let up = privreg_shared::config::Config::parse(
            Path::new("c.toml"),
            "[upstreams.acme]\nindex = \"sparse+http://127.0.0.1:1/index/\"\n",
        )
        .unwrap()
        .upstreams
        .remove(0);
        let stored = Stored {
            meta: Meta {
                present: true,
                etag: None,
                last_modified: None,
                fetched: 1,
            },
            body: Bytes::from_static(b""),
        };
        for name in ["serde", "ab", "x", "syn"] {
            let k = CrateName::new(name).unwrap();
            cache.store(&up, UpstreamPath::Index(&k), &stored).unwrap();
        }
        let index = cache
            .root()
            .join("upstreams")
            .join(upstream_dir_name(&up))
            .join("index");
        std::fs::write(index.join("se/rd/.tmp-abc"), b"partial").unwrap();
        std::fs::write(index.join("se/rd/other"), b"stray").unwrap();
        let names: Vec<String> = cached_index_files(&cache, &up)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["ab", "serde", "syn", "x"]);
    }
}
