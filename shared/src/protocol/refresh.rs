//! `POST /-/refresh`: the request `privreg refresh` sends and the report the daemon answers.

use serde::{Deserialize, Serialize};

/// What `POST /-/refresh` takes: the crates to refresh; none (or an empty body) means every
/// cached index file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The crate names to refresh (as cargo writes them); empty for every cached index file.
    #[serde(default)]
    pub crates: Vec<String>,
}

/// What became of one index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The upstream's answer differs from the cached one.
    Changed,
    /// The upstream answered the same as the cached copy.
    Unchanged,
    /// Nothing was cached before; now it is.
    Fetched,
    /// The upstream gave no usable answer; the cached copy (if any) stays in force.
    Failed,
}

/// One index file of one upstream, before and after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileReport {
    /// The crate's name (wire name `crate`).
    #[serde(rename = "crate")]
    pub krate: String,
    /// The upstream's name from `config.toml`.
    pub upstream: String,
    /// What became of the file.
    pub outcome: Outcome,
    /// Whether the upstream has the crate (as now known).
    pub present: bool,
    /// Versions the upstream lists now: a count, for files fetched the first time.
    pub versions: usize,
    /// Versions listed now that were not before (only for [`Outcome::Changed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Versions listed before that are gone now (only for [`Outcome::Changed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Versions newly marked yanked (only for [`Outcome::Changed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yanked: Vec<String>,
    /// Versions no longer marked yanked (only for [`Outcome::Changed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unyanked: Vec<String>,
    /// Why the upstream gave no usable answer (only for [`Outcome::Failed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer of `POST /-/refresh`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshReport {
    /// By crate, then in the order the upstreams are configured.
    pub files: Vec<FileReport>,
}
