//! `GET /-/policy/<crate>`: like `apt-cache policy`, every version of a crate from every upstream
//! and what the layering policy made of it, for `privreg policy`.

use serde::{Deserialize, Serialize};

use crate::advisory::AdvisoryHit;
use crate::policy::{Dated, State};

/// The answer of `GET /-/policy/<crate>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Wire", into = "Wire")]
pub struct Policy {
    /// The crate's name as asked.
    pub krate: String,
    /// What each upstream answered, in the order config.toml lists them.
    pub upstreams: Vec<PolicyUpstream>,
    /// The merged view, or why there is none.
    pub outcome: PolicyOutcome,
}

/// What the policy made of the upstreams' answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// The upstreams' answers could not be merged (say an owner failed): why.
    Unavailable(String),
    /// The merged view.
    Merged(Merged),
}

/// The merged view of a crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The upstreams that own the name, best first.
    pub owners: Vec<String>,
    /// Newest version first, then in upstream order.
    pub versions: Vec<VersionDecision>,
    /// Versions that two upstreams served with different checksums.
    pub conflicts: Vec<Conflict>,
    /// Advice for people, e.g. the pin stanza that admits shadowed newer versions.
    pub hints: Vec<String>,
    /// The config or pin error in force (the last good configuration is used meanwhile).
    pub config_error: Option<String>,
}

/// One upstream's answer for the crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUpstream {
    /// The upstream's name from `config.toml`.
    pub name: String,
    /// Its configured `priority`.
    pub priority: i32,
    /// The priority it claims the crate with: a pin's, else its own.
    pub claim: String,
    /// The pin stanza the claim comes from (`file:line`).
    pub claim_stanza: Option<String>,
    /// `has N versions`, `absent` or `error`.
    pub answer: String,
    /// Why the last fetch from it failed, if it did (the answer may then be the cached one).
    pub error: Option<String>,
}

/// One version from one upstream and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDecision {
    /// The version, e.g. `1.2.3`.
    pub version: String,
    /// The name of the upstream it comes from.
    pub upstream: String,
    /// The version's priority, or `never`.
    pub priority: String,
    /// What the policy made of it.
    pub state: VersionState,
    /// The pin stanza that decided it (`file:line`).
    pub stanza: Option<String>,
    /// Yanked upstream or by a negative pin.
    pub yanked: bool,
    /// For duplicates: the upstream whose copy is served.
    pub winner: Option<String>,
    /// When the version was published (its `pubtime`) or first seen by privreg, in seconds since
    /// the epoch; `None` when it has no `pubtime` and was there at privreg's first fetch.
    #[serde(default)]
    pub published: Option<u64>,
    /// Where [`published`](Self::published) comes from.
    #[serde(default)]
    pub dated: Dating,
    /// The advisories that affect the version (withdrawn ones left out).
    #[serde(default)]
    pub advisories: Vec<PolicyAdvisory>,
}

/// Where a version's age comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dating {
    /// `pubtime`: the index line's `pubtime`.
    Pubtime,
    /// `first-seen`: no `pubtime`; when privreg first saw the version in a revalidation.
    FirstSeen,
    /// `first-fetch`: no `pubtime`, and there at privreg's first fetch of the file: old.
    #[default]
    FirstFetch,
}

impl Dating {
    /// The wire name, as `privreg policy` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Dating::Pubtime => "pubtime",
            Dating::FirstSeen => "first-seen",
            Dating::FirstFetch => "first-fetch",
        }
    }
}

impl From<Dated> for Dating {
    fn from(d: Dated) -> Dating {
        match d {
            Dated::Pubtime(_) => Dating::Pubtime,
            Dated::FirstSeen(_) => Dating::FirstSeen,
            Dated::Old => Dating::FirstFetch,
        }
    }
}

/// An advisory that affects a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAdvisory {
    /// Its ID, e.g. `RUSTSEC-2023-0071`.
    pub id: String,
    /// `vulnerability`, `unmaintained`, `unsound`, `notice`, or another informational kind.
    pub kind: String,
}

impl From<&AdvisoryHit> for PolicyAdvisory {
    fn from(h: &AdvisoryHit) -> PolicyAdvisory {
        PolicyAdvisory {
            id: h.id.clone(),
            kind: h.kind.to_string(),
        }
    }
}

/// [`State`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    /// `served`: listed.
    Served,
    /// `yanked-by-pin`: listed with `yanked: true` because a negative pin applies.
    YankedByPin,
    /// `shadowed`: hidden because another upstream owns the name and this version's priority is
    /// lower.
    Shadowed,
    /// `blocked`: removed by a `never` pin.
    Blocked,
    /// `not-held`: hidden by a hold (≥ 1000) on other versions.
    NotHeld,
    /// `duplicate`: the same version is served from another upstream ([`VersionDecision::winner`]).
    Duplicate,
    /// `checksum-changed`: hidden because a different checksum was served for it before.
    ChecksumChanged,
}

impl VersionState {
    /// The wire name, as `privreg policy` prints it (`yanked-by-pin`).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Served => "served",
            VersionState::YankedByPin => "yanked-by-pin",
            VersionState::Shadowed => "shadowed",
            VersionState::Blocked => "blocked",
            VersionState::NotHeld => "not-held",
            VersionState::Duplicate => "duplicate",
            VersionState::ChecksumChanged => "checksum-changed",
        }
    }
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&State> for VersionState {
    fn from(s: &State) -> VersionState {
        match s {
            State::Served => VersionState::Served,
            State::YankedByPin => VersionState::YankedByPin,
            State::Shadowed => VersionState::Shadowed,
            State::Blocked => VersionState::Blocked,
            State::NotHeld => VersionState::NotHeld,
            State::Duplicate { .. } => VersionState::Duplicate,
            State::ChecksumChanged { .. } => VersionState::ChecksumChanged,
        }
    }
}

/// The same version with different checksums in two upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The version, e.g. `1.2.3`.
    pub version: String,
    /// The upstream whose copy is served.
    pub winner: String,
    /// The upstream whose copy is hidden.
    pub loser: String,
}

/// The document as it travels: `{crate, upstreams, unavailable}` when the answers could not be
/// merged, else `{crate, owners, upstreams, versions, conflicts, hints, config_error}`.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(rename = "crate")]
    krate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owners: Option<Vec<String>>,
    upstreams: Vec<PolicyUpstream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    versions: Option<Vec<VersionDecision>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conflicts: Option<Vec<Conflict>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hints: Option<Vec<String>>,
    /// Absent when unavailable, `null` or a message otherwise.
    #[allow(
        clippy::option_option,
        reason = "absent, `null` and a message are three states of the wire document"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_error: Option<Option<String>>,
}

impl From<Policy> for Wire {
    fn from(p: Policy) -> Wire {
        let mut wire = Wire {
            krate: p.krate,
            owners: None,
            upstreams: p.upstreams,
            unavailable: None,
            versions: None,
            conflicts: None,
            hints: None,
            config_error: None,
        };
        match p.outcome {
            PolicyOutcome::Unavailable(why) => wire.unavailable = Some(why),
            PolicyOutcome::Merged(m) => {
                wire.owners = Some(m.owners);
                wire.versions = Some(m.versions);
                wire.conflicts = Some(m.conflicts);
                wire.hints = Some(m.hints);
                wire.config_error = Some(m.config_error);
            }
        }
        wire
    }
}

impl From<Wire> for Policy {
    fn from(w: Wire) -> Policy {
        let outcome = match w.unavailable {
            Some(why) => PolicyOutcome::Unavailable(why),
            None => PolicyOutcome::Merged(Merged {
                owners: w.owners.unwrap_or_default(),
                versions: w.versions.unwrap_or_default(),
                conflicts: w.conflicts.unwrap_or_default(),
                hints: w.hints.unwrap_or_default(),
                config_error: w.config_error.flatten(),
            }),
        };
        Policy {
            krate: w.krate,
            upstreams: w.upstreams,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> PolicyUpstream {
        PolicyUpstream {
            name: "acme".into(),
            priority: 600,
            claim: "600".into(),
            claim_stanza: None,
            answer: "has 2 versions".into(),
            error: None,
        }
    }

    const UPSTREAM: &str = r#"{"name":"acme","priority":600,"claim":"600","claim_stanza":null,"answer":"has 2 versions","error":null}"#;

    fn merged() -> Policy {
        Policy {
            krate: "acme-core".into(),
            upstreams: vec![upstream()],
            outcome: PolicyOutcome::Merged(Merged {
                owners: vec!["acme".into()],
                versions: vec![VersionDecision {
                    version: "1.0.0".into(),
                    upstream: "acme".into(),
                    priority: "never".into(),
                    state: VersionState::YankedByPin,
                    stanza: Some("/cfg/preferences:3".into()),
                    yanked: true,
                    winner: None,
                    published: Some(1_736_467_200),
                    dated: Dating::FirstSeen,
                    advisories: vec![PolicyAdvisory {
                        id: "RUSTSEC-2024-0001".into(),
                        kind: "vulnerability".into(),
                    }],
                }],
                conflicts: vec![Conflict {
                    version: "1.0.0".into(),
                    winner: "acme".into(),
                    loser: "crates-io".into(),
                }],
                hints: vec!["a hint".into()],
                config_error: None,
            }),
        }
    }

    #[test]
    fn the_merged_wire_format_is_pinned() {
        let text = format!(
            concat!(
                r#"{{"crate":"acme-core","owners":["acme"],"upstreams":[{}],"#,
                r#""versions":[{{"version":"1.0.0","upstream":"acme","priority":"never","state":"yanked-by-pin","#,
                r#""stanza":"/cfg/preferences:3","yanked":true,"winner":null,"#,
                r#""published":1736467200,"dated":"first-seen","#,
                r#""advisories":[{{"id":"RUSTSEC-2024-0001","kind":"vulnerability"}}]}}],"#,
                r#""conflicts":[{{"version":"1.0.0","winner":"acme","loser":"crates-io"}}],"#,
                r#""hints":["a hint"],"config_error":null}}"#
            ),
            UPSTREAM
        );
        assert_eq!(serde_json::to_string(&merged()).unwrap(), text);
        assert_eq!(serde_json::from_str::<Policy>(&text).unwrap(), merged());
    }

    #[test]
    fn the_unavailable_wire_format_is_pinned() {
        let p = Policy {
            krate: "acme-core".into(),
            upstreams: vec![upstream()],
            outcome: PolicyOutcome::Unavailable("acme failed".into()),
        };
        let text = format!(
            r#"{{"crate":"acme-core","upstreams":[{UPSTREAM}],"unavailable":"acme failed"}}"#
        );
        assert_eq!(serde_json::to_string(&p).unwrap(), text);
        assert_eq!(serde_json::from_str::<Policy>(&text).unwrap(), p);
    }

    #[test]
    fn a_version_from_an_older_daemon_reads_as_undated() {
        let text = r#"{"version":"1.0.0","upstream":"acme","priority":"500","state":"served","stanza":null,"yanked":false,"winner":null}"#;
        let v: VersionDecision = serde_json::from_str(text).unwrap();
        assert_eq!(
            (v.published, v.dated, v.advisories.len()),
            (None, Dating::FirstFetch, 0)
        );
        for d in [Dating::Pubtime, Dating::FirstSeen, Dating::FirstFetch] {
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
    }

    #[test]
    fn every_state_has_its_wire_name() {
        for s in [
            VersionState::Served,
            VersionState::YankedByPin,
            VersionState::Shadowed,
            VersionState::Blocked,
            VersionState::NotHeld,
            VersionState::Duplicate,
            VersionState::ChecksumChanged,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
