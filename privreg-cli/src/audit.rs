//! `privreg audit [Cargo.lock…] [--format json]`: checks every locked package against the policy
//! in force and the advisory database, by asking the daemon (`POST /-/audit`), which holds both.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use privreg_shared::config::Config;
use privreg_shared::protocol::{
    AdvisoriesStatus, AuditPackage, AuditReport, AuditRequest, Finding, LockfileAudit, Problem,
    SkippedPackage,
};

use super::Dirs;
use crate::warm::{Class, Route, classify, load, lockfiles, upstream_keys};

/// Exit status when the advisory database could not be consulted (no copy loaded).
const NO_DATABASE: u8 = 2;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub(crate) enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document (for CI).
    Json,
}

#[derive(Args)]
pub struct AuditArgs {
    /// Cargo.lock files (or the directories holding them); default: the current project's.
    lockfiles: Vec<PathBuf>,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// One line for a finding.
pub(crate) fn describe(f: &Finding) -> String {
    let stanza = |s: &Option<String>| s.as_deref().map_or(String::new(), |s| format!(" by {s}"));
    let what = match &f.problem {
        Problem::Hidden {
            state,
            upstream,
            stanza: s,
        } => format!("hidden ({state}) in {upstream}{}", stanza(s)),
        Problem::SoftBlocked {
            upstream,
            stanza: s,
            priority,
        } => format!(
            "soft-blocked (listed as yanked) in {upstream}{} (priority {priority})",
            stanza(s)
        ),
        Problem::TooYoung {
            upstream,
            stanza: s,
            hidden,
        } => format!(
            "too young: {} in {upstream}{}",
            if *hidden { "hidden" } else { "soft-blocked" },
            stanza(s)
        ),
        Problem::Advisory {
            id,
            advisory_kind,
            patched,
        } => {
            let fix = if patched.is_empty() {
                "no patched version".to_owned()
            } else {
                format!("patched: {}", patched.join(", "))
            };
            format!("{id} ({advisory_kind}); {fix}")
        }
        Problem::Yanked { upstream } => format!("yanked in {upstream}"),
        Problem::ChecksumChanged { recorded, locked } => {
            format!("checksum {locked} differs from the {recorded} privreg first served")
        }
        Problem::NotServed { reason } => format!("not served: {reason}"),
    };
    format!("{} {}: {what}", f.name, f.version)
}

/// The database line: what was consulted.
fn database(a: &AdvisoriesStatus) -> String {
    match (a.count, &a.newest) {
        (Some(n), newest) => format!(
            "advisory database {}: {n} advisories, newest {}",
            a.db,
            newest.as_deref().unwrap_or("-")
        ),
        (None, _) => format!(
            "advisory database {}: not loaded{}",
            a.db,
            a.last_error
                .as_deref()
                .map_or(String::new(), |e| format!(" ({e})"))
        ),
    }
}

pub(crate) async fn run(dirs: &Dirs, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let paths = lockfiles(&args.lockfiles)?;
    let upstreams = upstream_keys(&Config::load(&dirs.config)?);
    let lockfiles = paths
        .iter()
        .map(|p| load(p).map(|l| (p.clone(), l)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A first fetch of the advisory database may take a while.
    let conn = crate::autostart::connect(dirs, Duration::from_mins(5)).await?;
    let mut audits = Vec::new();
    let mut advisories = AdvisoriesStatus::default();
    for (path, lockfile) in lockfiles {
        let mut request = AuditRequest::default();
        let mut skipped = Vec::new();
        for p in &lockfile.packages {
            let (name, version) = (p.name.as_str().to_owned(), p.version.to_string());
            let source = match classify(p.source.as_ref(), &upstreams) {
                Class::Served(route) => {
                    request.packages.push(AuditPackage {
                        name,
                        version,
                        upstream: match route {
                            Route::Layered => None,
                            Route::Upstream(u) => Some(u),
                        },
                        checksum: p.checksum.as_ref().map(ToString::to_string),
                    });
                    continue;
                }
                Class::Path => "path".to_owned(),
                Class::Git | Class::Other(_) => p
                    .source
                    .as_ref()
                    .map_or_else(|| "path".to_owned(), ToString::to_string),
            };
            skipped.push(SkippedPackage {
                name,
                version,
                source,
            });
        }
        let answer = conn.audit(&request).await?;
        advisories = answer.advisories;
        audits.push(LockfileAudit {
            path,
            checked: request.packages.len(),
            skipped,
            findings: answer.findings,
        });
    }
    let total_findings = audits.iter().map(|a| a.findings.len()).sum();
    let report = AuditReport {
        lockfiles: audits,
        advisories,
        total_findings,
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        ),
        Format::Text => print_text(&report),
    }
    if report.advisories.count.is_none() {
        eprintln!(
            "privreg: error: no advisory database is loaded, so advisories were not checked{}",
            report
                .advisories
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"))
        );
        return Ok(ExitCode::from(NO_DATABASE));
    }
    Ok(if report.total_findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(report: &AuditReport) {
    for a in &report.lockfiles {
        println!(
            "{}: {} packages checked, {} skipped (path, git, or registries privreg does not serve), {} findings",
            a.path.display(),
            a.checked,
            a.skipped.len(),
            a.findings.len()
        );
        for f in &a.findings {
            println!("  {}", describe(f));
        }
    }
    println!("{}", database(&report.advisories));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_read_as_one_line_each() {
        let f = Finding {
            name: "vuln".into(),
            version: "1.0.0".into(),
            problem: Problem::Advisory {
                id: "RUSTSEC-2024-0001".into(),
                advisory_kind: "vulnerability".into(),
                patched: vec![">=1.0.1".into()],
            },
        };
        assert_eq!(
            describe(&f),
            "vuln 1.0.0: RUSTSEC-2024-0001 (vulnerability); patched: >=1.0.1"
        );
        let f = Finding {
            problem: Problem::SoftBlocked {
                upstream: "crates-io".into(),
                stanza: Some("preferences:4".into()),
                priority: "-1".into(),
            },
            ..f
        };
        assert_eq!(
            describe(&f),
            "vuln 1.0.0: soft-blocked (listed as yanked) in crates-io by preferences:4 (priority -1)"
        );
    }
}
