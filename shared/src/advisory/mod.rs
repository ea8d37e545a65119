//! RustSec advisories as the pin policy sees them (issue 17).
//!
//! This module holds the types both sides agree on: the `advisory` pin selector (in `pin`) matches
//! against [`AdvisoryHit`]s, and the advisory database (loaded with the `rustsec` crate) produces
//! them for a crate name and version.

use std::fmt;

#[cfg(feature = "advisory-db")]
mod db;

#[cfg(feature = "advisory-db")]
pub use db::{AdvisoryDb, AdvisoryDbError, DEFAULT_DB_URL};

/// The kind of an advisory, as RustSec's `informational` field gives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdvisoryKind {
    /// No `informational` field: a security vulnerability. The `advisory` selector's default.
    Vulnerability,
    /// `informational = "unmaintained"`.
    Unmaintained,
    /// `informational = "unsound"`.
    Unsound,
    /// `informational = "notice"`.
    Notice,
    /// Any other informational kind, as written.
    Other(String),
}

impl AdvisoryKind {
    /// The kind's name as written in a pin selector and in RustSec's `informational` field
    /// (`vulnerability` for a plain advisory).
    pub fn as_str(&self) -> &str {
        match self {
            AdvisoryKind::Vulnerability => "vulnerability",
            AdvisoryKind::Unmaintained => "unmaintained",
            AdvisoryKind::Unsound => "unsound",
            AdvisoryKind::Notice => "notice",
            AdvisoryKind::Other(s) => s,
        }
    }

    /// Parses a kind's name; any name other than the four known ones is [`AdvisoryKind::Other`].
    pub fn parse(s: &str) -> AdvisoryKind {
        match s.to_ascii_lowercase().as_str() {
            "vulnerability" => AdvisoryKind::Vulnerability,
            "unmaintained" => AdvisoryKind::Unmaintained,
            "unsound" => AdvisoryKind::Unsound,
            "notice" => AdvisoryKind::Notice,
            other => AdvisoryKind::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for AdvisoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One advisory that affects one version of a crate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdvisoryHit {
    /// The advisory's ID, e.g. `RUSTSEC-2023-0001`.
    pub id: String,
    /// Its kind.
    pub kind: AdvisoryKind,
    /// The advisory's `patched` requirements as written (e.g. `>=1.2.3`); empty when none.
    pub patched: Vec<String>,
    /// Withdrawn advisories never match a selector; kept so that reports can say so.
    pub withdrawn: bool,
}

/// Where the policy learns which advisories affect a version: the advisory database in force.
pub trait AdvisorySource: Send + Sync {
    /// Every advisory (withdrawn ones included, marked so) that affects `version` of the crate
    /// named `krate`; empty when none does or no database is loaded.
    fn affected(&self, krate: &crate::CrateName, version: &semver::Version) -> Vec<AdvisoryHit>;
}

/// No advisory database: nothing is affected.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAdvisories;

impl AdvisorySource for NoAdvisories {
    fn affected(&self, _: &crate::CrateName, _: &semver::Version) -> Vec<AdvisoryHit> {
        Vec::new()
    }
}
