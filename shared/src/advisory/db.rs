//! The RustSec advisory database, loaded with the `rustsec` crate, as an [`AdvisorySource`].
//!
//! Only what matching needs is kept of each advisory (its ID, kind, version ranges), indexed by
//! the crate name as cargo compares names (case-insensitive, `-` and `_` alike).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustsec::Collection;
use rustsec::advisory::Versions;

use super::{AdvisoryHit, AdvisoryKind, AdvisorySource};
use crate::CrateName;

/// The public RustSec advisory-db git repository, as the `rustsec` crate names it: the database
/// used when `advisories.db` is not set.
pub const DEFAULT_DB_URL: &str = rustsec::repository::git::DEFAULT_URL;

/// A database that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load the advisory database at {}: {message}", path.display())]
pub struct AdvisoryDbError {
    /// The directory that was read.
    pub path: PathBuf,
    /// What `rustsec` said, with its causes (it names the advisory file at fault).
    pub message: String,
}

/// One advisory, as much of it as matching and reports need.
#[derive(Debug)]
struct Entry {
    hit: AdvisoryHit,
    versions: Versions,
}

/// A loaded advisory database.
#[derive(Debug, Default)]
pub struct AdvisoryDb {
    /// By normalised crate name.
    by_crate: HashMap<String, Vec<Entry>>,
    count: usize,
    newest: Option<String>,
}

/// How cargo compares crate names: case-insensitive, `-` and `_` alike.
fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl AdvisoryDb {
    /// Loads the database in `path`, a directory laid out like advisory-db (`crates/<name>/
    /// RUSTSEC-YYYY-NNNN.md`). Any advisory that does not parse fails the whole load, so that a
    /// broken copy never replaces a good one.
    pub fn open(path: &Path) -> Result<AdvisoryDb, AdvisoryDbError> {
        let db = rustsec::Database::open(path).map_err(|e| AdvisoryDbError {
            path: path.to_owned(),
            message: chain(&e),
        })?;
        let mut out = AdvisoryDb::default();
        for advisory in db.iter() {
            let meta = &advisory.metadata;
            if meta.collection.is_some_and(|c| c != Collection::Crates) {
                continue;
            }
            let kind = meta
                .informational
                .as_ref()
                .map_or(AdvisoryKind::Vulnerability, |i| {
                    AdvisoryKind::parse(i.as_str())
                });
            let hit = AdvisoryHit {
                id: meta.id.to_string(),
                kind,
                patched: advisory
                    .versions
                    .patched()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                withdrawn: meta.withdrawn.is_some(),
            };
            out.count += 1;
            let date = meta.date.as_str();
            if out.newest.as_deref().is_none_or(|n| date > n) {
                out.newest = Some(date.to_owned());
            }
            out.by_crate
                .entry(normalise(meta.package.as_str()))
                .or_default()
                .push(Entry {
                    hit,
                    versions: advisory.versions.clone(),
                });
        }
        Ok(out)
    }

    /// Fetches the git repository at `url` (an `https://` URL) into `checkout` and checks out
    /// its newest commit, waiting at most `lock_wait` for another process's lock on it.
    pub fn fetch_git(
        url: &str,
        checkout: &Path,
        lock_wait: Duration,
    ) -> Result<(), AdvisoryDbError> {
        rustsec::Repository::fetch(url, checkout, true, lock_wait)
            .map(drop)
            .map_err(|e| AdvisoryDbError {
                path: checkout.to_owned(),
                message: format!("cannot fetch {url}: {}", chain(&e)),
            })
    }

    /// How many advisories about crates it holds (withdrawn ones included).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The newest advisory's date, `YYYY-MM-DD`.
    pub fn newest(&self) -> Option<&str> {
        self.newest.as_deref()
    }
}

impl AdvisorySource for AdvisoryDb {
    fn affected(&self, krate: &CrateName, version: &semver::Version) -> Vec<AdvisoryHit> {
        let Some(entries) = self.by_crate.get(&normalise(krate.as_str())) else {
            return Vec::new();
        };
        let mut hits: Vec<AdvisoryHit> = entries
            .iter()
            .filter(|e| e.versions.is_vulnerable(version))
            .map(|e| e.hit.clone())
            .collect();
        hits.sort();
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisory(id: &str, package: &str, extra: &str, versions: &str) -> String {
        format!(
            "```toml\n[advisory]\nid = \"{id}\"\npackage = \"{package}\"\ndate = \"2024-01-0{}\"\n{extra}\n[versions]\n{versions}\n```\n\n# Title\n\nDescription.\n",
            id.len() % 9 + 1
        )
    }

    fn write(root: &Path, package: &str, id: &str, text: &str) {
        let dir = root.join("crates").join(package);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{id}.md")), text).unwrap();
    }

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn versions_kinds_and_names_match_as_rustsec_says() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "Foo_Bar",
            "RUSTSEC-2024-0001",
            &advisory(
                "RUSTSEC-2024-0001",
                "Foo_Bar",
                "",
                "patched = [\">= 1.2.0\"]\nunaffected = [\"< 1.0.0\"]",
            ),
        );
        write(
            root,
            "Foo_Bar",
            "RUSTSEC-2024-0002",
            &advisory(
                "RUSTSEC-2024-0002",
                "Foo_Bar",
                "informational = \"unsound\"\nwithdrawn = \"2024-02-01\"",
                "patched = []",
            ),
        );
        let db = AdvisoryDb::open(root).unwrap();
        assert_eq!(db.count(), 2);
        let name = CrateName::new("foo-bar").unwrap();
        let unaffected = db.affected(&name, &v("0.9.0"));
        assert_eq!(
            unaffected.len(),
            1,
            "only the withdrawn one, which lists no patch"
        );
        assert!(unaffected[0].withdrawn);
        assert!(db.affected(&name, &v("1.2.0")).iter().all(|h| h.withdrawn));
        let hits = db.affected(&name, &v("1.1.5"));
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].id, "RUSTSEC-2024-0001");
        assert_eq!(hits[0].kind, AdvisoryKind::Vulnerability);
        assert_eq!(hits[0].patched, [">=1.2.0"]);
        assert!(!hits[0].withdrawn);
        assert_eq!(hits[1].kind, AdvisoryKind::Unsound);
        assert!(hits[1].withdrawn);
        assert!(
            db.affected(&CrateName::new("other").unwrap(), &v("1.0.0"))
                .is_empty()
        );
    }

    #[test]
    fn a_file_that_does_not_parse_fails_the_load_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "x",
            "RUSTSEC-2024-0003",
            "```toml\n[advisory\n```\n",
        );
        let e = AdvisoryDb::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("RUSTSEC-2024-0003.md"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            AdvisoryDb::open(empty.path()).is_err(),
            "no crates/ directory"
        );
    }
}
