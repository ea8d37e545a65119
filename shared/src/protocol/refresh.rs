//! `POST /-/refresh`: the request `privreg refresh` sends and the report the daemon answers.

use serde::{Deserialize, Serialize};

/// What `POST /-/refresh` takes: the crates to refresh; none (or an empty body) means every
/// cached index file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[serde(default)]
    pub crates: Vec<String>,
}

/// What became of one index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The upstream's answer differs from the cached one.
    Changed,
    Unchanged,
    /// Nothing was cached before; now it is.
    Fetched,
    /// The upstream gave no usable answer; the cached copy (if any) stays in force.
    Failed,
}

/// One index file of one upstream, before and after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileReport {
    #[serde(rename = "crate")]
    pub krate: String,
    pub upstream: String,
    pub outcome: Outcome,
    /// Whether the upstream has the crate (as now known).
    pub present: bool,
    /// Versions the upstream lists now: a count, for files fetched the first time.
    pub versions: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yanked: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unyanked: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer of `POST /-/refresh`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshReport {
    /// By crate, then in the order the upstreams are configured.
    pub files: Vec<FileReport>,
}
