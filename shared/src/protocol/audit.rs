//! `POST /-/audit`: the daemon checks locked packages against the policy in force and the
//! advisory database, for `privreg audit`; and the report `privreg audit --format json` prints.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{AdvisoriesStatus, VersionState};

/// The body of `POST /-/audit`: the packages to check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRequest {
    /// Each (name, version) once.
    pub packages: Vec<AuditPackage>,
}

/// One locked package to check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AuditPackage {
    /// The crate's name as locked.
    pub name: String,
    /// The locked version.
    pub version: String,
    /// The upstream whose own view serves it (a lockfile that names the registry's URL);
    /// `None`: the layered view (a `crates-io` package under source replacement).
    pub upstream: Option<String>,
    /// The locked checksum (lower-case hex sha256), if the lockfile has one.
    pub checksum: Option<String>,
}

/// The answer of `POST /-/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnswer {
    /// Every problem found, in the order of the request's packages.
    pub findings: Vec<Finding>,
    /// The advisory database the check used.
    pub advisories: AdvisoriesStatus,
}

/// One problem with one locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The crate's name.
    pub name: String,
    /// The locked version.
    pub version: String,
    /// What is wrong.
    #[serde(flatten)]
    pub problem: Problem,
}

/// What is wrong with a locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// The policy hides the version: a `never` pin, another upstream owns the name, a hold on
    /// other versions, or a changed checksum. A fresh resolution cannot pick it and an existing
    /// lockfile cannot fetch it.
    Hidden {
        /// What the policy made of it.
        state: VersionState,
        /// The upstream it comes from.
        upstream: String,
        /// The pin stanza that decided it (`file:line`).
        stanza: Option<String>,
    },
    /// A negative pin lists it as yanked: existing lockfiles keep working, new resolutions avoid
    /// it.
    SoftBlocked {
        /// The upstream it comes from.
        upstream: String,
        /// The pin stanza that decided it (`file:line`).
        stanza: Option<String>,
        /// The pin's priority.
        priority: String,
    },
    /// A pin with an `age` selector decided it: published too recently.
    TooYoung {
        /// The upstream it comes from.
        upstream: String,
        /// The pin stanza that decided it (`file:line`).
        stanza: Option<String>,
        /// Whether it is hidden (`never`) rather than soft-blocked.
        hidden: bool,
    },
    /// A RustSec advisory affects it.
    Advisory {
        /// The advisory's ID, e.g. `RUSTSEC-2023-0001`.
        id: String,
        /// `vulnerability`, `unmaintained`, `unsound`, `notice`, …
        advisory_kind: String,
        /// The `patched` requirements, e.g. `>=1.0.1`; empty: no fixed version.
        patched: Vec<String>,
    },
    /// Its upstream has yanked it.
    Yanked {
        /// The upstream that yanked it.
        upstream: String,
    },
    /// The lockfile's checksum differs from the one privreg first served for this version.
    ChecksumChanged {
        /// The checksum privreg recorded.
        recorded: String,
        /// The lockfile's.
        locked: String,
    },
    /// No upstream serves this version (or the crate) at all, or the policy could not be
    /// evaluated (an upstream failed).
    NotServed {
        /// Why.
        reason: String,
    },
}

/// What `privreg audit --format json` prints: one document for every lockfile checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// One entry per lockfile, in the order given.
    pub lockfiles: Vec<LockfileAudit>,
    /// The advisory database the check used.
    pub advisories: AdvisoriesStatus,
    /// Findings over every lockfile; the command exits non-zero when this is not zero.
    pub total_findings: usize,
}

/// The audit of one lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockfileAudit {
    /// The lockfile's path as given.
    pub path: PathBuf,
    /// Registry packages that privreg serves and that were checked.
    pub checked: usize,
    /// Packages not checked: git and path packages, and registries privreg does not serve.
    pub skipped: Vec<SkippedPackage>,
    /// The problems found.
    pub findings: Vec<Finding>,
}

/// A locked package that was not checked, and its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPackage {
    /// The crate's name.
    pub name: String,
    /// The locked version.
    pub version: String,
    /// The lockfile's `source` (`git+…`, a registry privreg does not serve), or `path`.
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_report_wire_format_is_pinned() {
        let report = AuditReport {
            lockfiles: vec![LockfileAudit {
                path: "Cargo.lock".into(),
                checked: 2,
                skipped: vec![SkippedPackage {
                    name: "app".into(),
                    version: "0.1.0".into(),
                    source: "path".into(),
                }],
                findings: vec![
                    Finding {
                        name: "vuln".into(),
                        version: "1.0.0".into(),
                        problem: Problem::Advisory {
                            id: "RUSTSEC-2024-0001".into(),
                            advisory_kind: "vulnerability".into(),
                            patched: vec![">=1.0.1".into()],
                        },
                    },
                    Finding {
                        name: "vuln".into(),
                        version: "1.0.0".into(),
                        problem: Problem::SoftBlocked {
                            upstream: "crates-io".into(),
                            stanza: Some("preferences:1".into()),
                            priority: "-1".into(),
                        },
                    },
                ],
            }],
            advisories: AdvisoriesStatus {
                db: "/adb".into(),
                count: Some(1),
                ..AdvisoriesStatus::default()
            },
            total_findings: 2,
        };
        let text = concat!(
            r#"{"lockfiles":[{"path":"Cargo.lock","checked":2,"#,
            r#""skipped":[{"name":"app","version":"0.1.0","source":"path"}],"#,
            r#""findings":[{"name":"vuln","version":"1.0.0","kind":"advisory","#,
            r#""id":"RUSTSEC-2024-0001","advisory_kind":"vulnerability","patched":[">=1.0.1"]},"#,
            r#"{"name":"vuln","version":"1.0.0","kind":"soft-blocked","upstream":"crates-io","#,
            r#""stanza":"preferences:1","priority":"-1"}]}],"#,
            r#""advisories":{"db":"/adb","wanted":false,"refresh_secs":0,"count":1,"newest":null,"#,
            r#""updated_at":null,"last_error":null,"last_error_at":null},"total_findings":2}"#
        );
        assert_eq!(serde_json::to_string(&report).unwrap(), text);
        assert_eq!(serde_json::from_str::<AuditReport>(text).unwrap(), report);
        let hidden = Finding {
            name: "x".into(),
            version: "1.0.0".into(),
            problem: Problem::Hidden {
                state: VersionState::Blocked,
                upstream: "acme".into(),
                stanza: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&hidden).unwrap(),
            r#"{"name":"x","version":"1.0.0","kind":"hidden","state":"blocked","upstream":"acme","stanza":null}"#
        );
    }
}
