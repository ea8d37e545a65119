//! `POST /-/audit`: checks locked packages against the policy in force and the advisory
//! database, for `privreg audit`. The policy's verdict is the one `privreg policy` shows (the
//! same [`Policy`] document), so the two never disagree.

use std::collections::{BTreeMap, HashSet};

use privreg_shared::CrateName;
use privreg_shared::pin::Preferences;
use privreg_shared::protocol::{
    AuditAnswer, AuditPackage, AuditRequest, Finding, Policy, PolicyOutcome, Problem,
    VersionDecision, VersionState,
};

use crate::daemon::Daemon;

/// Largest audit request body accepted (a lockfile of tens of thousands of packages fits).
pub(crate) const MAX_AUDIT_BODY: usize = 8 << 20;

/// A request that cannot be checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    /// The body is not an [`AuditRequest`].
    #[error("the body is not an audit request: {0}")]
    Body(#[from] serde_json::Error),
}

/// The pin stanzas (`file:line`) that hold back young versions (`age <D`): a version they decide
/// is too young.
fn age_stanzas(prefs: Option<&Preferences>) -> HashSet<String> {
    prefs
        .into_iter()
        .flat_map(Preferences::stanzas)
        .filter(|(_, s)| s.selectors.age.as_ref().is_some_and(|a| a.younger))
        .map(|(f, s)| format!("{}:{}", f.name, s.line))
        .collect()
}

/// What the policy made of `version` as `package` reaches cargo: in the layered view, or in one
/// upstream's own view (where only `never` and negative pins apply).
fn policy_problems(
    package: &AuditPackage,
    policy: &Policy,
    aged: &HashSet<String>,
) -> Vec<Problem> {
    let merged = match &policy.outcome {
        PolicyOutcome::Merged(m) => m,
        PolicyOutcome::Unavailable(reason) => {
            return vec![Problem::NotServed {
                reason: reason.clone(),
            }];
        }
    };
    let decisions: Vec<&VersionDecision> = merged
        .versions
        .iter()
        .filter(|d| d.version == package.version)
        .filter(|d| package.upstream.as_ref().is_none_or(|u| *u == d.upstream))
        .collect();
    let served = |d: &&&VersionDecision| match package.upstream {
        // Its own view: shadowing, holds and duplicates are the layered view's business.
        Some(_) => !matches!(d.state, VersionState::Blocked | VersionState::YankedByPin),
        None => matches!(d.state, VersionState::Served | VersionState::YankedByPin),
    };
    // The decision cargo sees: the served one, else the first (best) hidden one.
    let Some(d) = decisions.iter().find(served).or_else(|| decisions.first()) else {
        let reason = match &package.upstream {
            Some(u) => format!("upstream {u} does not have version {}", package.version),
            None => format!("no upstream has version {}", package.version),
        };
        return vec![Problem::NotServed { reason }];
    };
    let too_young = d.stanza.as_ref().is_some_and(|s| aged.contains(s));
    let mut problems = Vec::new();
    let visible = decisions.iter().any(|x| served(&x));
    if !visible {
        problems.push(if too_young {
            Problem::TooYoung {
                upstream: d.upstream.clone(),
                stanza: d.stanza.clone(),
                hidden: true,
            }
        } else {
            Problem::Hidden {
                state: d.state,
                upstream: d.upstream.clone(),
                stanza: d.stanza.clone(),
            }
        });
    } else if d.state == VersionState::YankedByPin {
        problems.push(if too_young {
            Problem::TooYoung {
                upstream: d.upstream.clone(),
                stanza: d.stanza.clone(),
                hidden: false,
            }
        } else {
            Problem::SoftBlocked {
                upstream: d.upstream.clone(),
                stanza: d.stanza.clone(),
                priority: d.priority.clone(),
            }
        });
    } else if d.yanked {
        problems.push(Problem::Yanked {
            upstream: d.upstream.clone(),
        });
    }
    problems
}

impl Daemon {
    /// Parses and answers a `POST /-/audit` body.
    pub(crate) async fn audit_request(&self, body: &[u8]) -> Result<AuditAnswer, AuditError> {
        let request: AuditRequest = serde_json::from_slice(body)?;
        Ok(self.audit(&request).await)
    }

    /// Checks each package: the policy's verdict, advisories, the checksum privreg recorded.
    pub(crate) async fn audit(&self, request: &AuditRequest) -> AuditAnswer {
        self.advisory_state().ask().await;
        let (_, advisories) = self.advisories();
        let prefs = Preferences::load(self.config_dir()).ok();
        let aged = age_stanzas(prefs.as_ref());
        let mut policies: BTreeMap<String, Policy> = BTreeMap::new();
        let mut findings = Vec::new();
        for package in &request.packages {
            let mut problems = Vec::new();
            let krate = CrateName::new(&package.name);
            let version = semver::Version::parse(&package.version);
            let (krate, version) = match (krate, version) {
                (Ok(k), Ok(v)) => (k, v),
                (Err(e), _) => {
                    problems.push(Problem::NotServed {
                        reason: format!("not a crate name: {e}"),
                    });
                    push(&mut findings, package, problems);
                    continue;
                }
                (_, Err(e)) => {
                    problems.push(Problem::NotServed {
                        reason: format!("not a version: {e}"),
                    });
                    push(&mut findings, package, problems);
                    continue;
                }
            };
            let key = krate.as_str().to_ascii_lowercase();
            if !policies.contains_key(&key) {
                let policy = self.policy(&krate).await;
                policies.insert(key.clone(), policy);
            }
            problems.extend(policy_problems(package, &policies[&key], &aged));
            for hit in advisories.affected(&krate, &version) {
                if hit.withdrawn {
                    continue;
                }
                problems.push(Problem::Advisory {
                    id: hit.id,
                    advisory_kind: hit.kind.to_string(),
                    patched: hit.patched,
                });
            }
            if let Some(locked) = &package.checksum
                && let Some(recorded) = self.cache().served(&krate).get(&version)
                && !recorded.eq_ignore_ascii_case(locked)
            {
                problems.push(Problem::ChecksumChanged {
                    recorded: recorded.clone(),
                    locked: locked.clone(),
                });
            }
            push(&mut findings, package, problems);
        }
        let rt = self.runtime();
        AuditAnswer {
            findings,
            advisories: self.advisory_state().status(&rt.config.advisories),
        }
    }
}

fn push(findings: &mut Vec<Finding>, package: &AuditPackage, problems: Vec<Problem>) {
    findings.extend(problems.into_iter().map(|problem| Finding {
        name: package.name.clone(),
        version: package.version.clone(),
        problem,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use privreg_shared::protocol::{Merged, VersionDecision};

    fn decision(
        version: &str,
        upstream: &str,
        state: VersionState,
        yanked: bool,
    ) -> VersionDecision {
        VersionDecision {
            version: version.into(),
            upstream: upstream.into(),
            priority: if state == VersionState::YankedByPin {
                "-1"
            } else {
                "500"
            }
            .into(),
            state,
            stanza: (state != VersionState::Served).then(|| "preferences:1".to_owned()),
            yanked,
            winner: None,
            published: None,
            dated: privreg_shared::protocol::Dating::default(),
            advisories: Vec::new(),
        }
    }

    fn policy(versions: Vec<VersionDecision>) -> Policy {
        Policy {
            krate: "x".into(),
            upstreams: Vec::new(),
            outcome: PolicyOutcome::Merged(Merged {
                owners: vec!["corp".into()],
                versions,
                conflicts: Vec::new(),
                hints: Vec::new(),
                config_error: None,
            }),
        }
    }

    fn package(version: &str, upstream: Option<&str>) -> AuditPackage {
        AuditPackage {
            name: "x".into(),
            version: version.into(),
            upstream: upstream.map(str::to_owned),
            checksum: None,
        }
    }

    #[test]
    fn the_layered_view_reports_what_cargo_would_see() {
        let p = policy(vec![
            decision("1.0.3", "corp", VersionState::YankedByPin, false),
            decision("1.0.2", "corp", VersionState::Served, true),
            decision("1.0.1", "corp", VersionState::Served, false),
            decision("1.0.1", "crates-io", VersionState::Duplicate, false),
            decision("1.0.0", "crates-io", VersionState::Shadowed, false),
        ]);
        let none = HashSet::new();
        let problems = |v: &str| policy_problems(&package(v, None), &p, &none);
        assert!(
            problems("1.0.1").is_empty(),
            "served; its duplicate is no problem"
        );
        assert_eq!(
            problems("1.0.2"),
            [Problem::Yanked {
                upstream: "corp".into()
            }]
        );
        assert_eq!(
            problems("1.0.3"),
            [Problem::SoftBlocked {
                upstream: "corp".into(),
                stanza: Some("preferences:1".into()),
                priority: "-1".into(),
            }]
        );
        assert_eq!(
            problems("1.0.0"),
            [Problem::Hidden {
                state: VersionState::Shadowed,
                upstream: "crates-io".into(),
                stanza: Some("preferences:1".into()),
            }]
        );
        assert!(matches!(problems("2.0.0")[..], [Problem::NotServed { .. }]));
        // A stanza with an `age` selector decided it: too young.
        let aged: HashSet<String> = ["preferences:1".to_owned()].into();
        assert_eq!(
            policy_problems(&package("1.0.3", None), &p, &aged),
            [Problem::TooYoung {
                upstream: "corp".into(),
                stanza: Some("preferences:1".into()),
                hidden: false,
            }]
        );
    }

    #[test]
    fn an_upstream_view_ignores_shadowing_but_not_pins() {
        let p = policy(vec![
            decision("1.0.0", "crates-io", VersionState::Shadowed, false),
            decision("0.9.0", "crates-io", VersionState::Blocked, false),
        ]);
        let none = HashSet::new();
        assert!(policy_problems(&package("1.0.0", Some("crates-io")), &p, &none).is_empty());
        assert!(matches!(
            policy_problems(&package("0.9.0", Some("crates-io")), &p, &none)[..],
            [Problem::Hidden {
                state: VersionState::Blocked,
                ..
            }]
        ));
        assert!(matches!(
            policy_problems(&package("1.0.0", Some("corp")), &p, &none)[..],
            [Problem::NotServed { .. }]
        ));
    }
}
