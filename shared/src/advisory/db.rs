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
