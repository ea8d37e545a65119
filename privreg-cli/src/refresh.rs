//! `privreg refresh [CRATE…]`: make the daemon revalidate now, and say what changed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use privreg_shared::CrateName;

use super::Dirs;
use privreg_shared::protocol::{FileReport, Outcome, RefreshRequest};

#[derive(Args)]
pub struct RefreshArgs {
    /// Crates to refresh at every upstream; default: every cached index file.
    crates: Vec<String>,
}

/// At most this many versions are named in one list; the rest are counted.
const MAX_LISTED: usize = 8;

fn list(word: &str, versions: &[String]) -> Option<String> {
    if versions.is_empty() {
        return None;
    }
    let shown = versions
        .iter()
        .rev()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>();
    let more = versions.len().saturating_sub(MAX_LISTED);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Some(format!("{word} {}{more}", shown.join(", ")))
}

fn versions(n: usize) -> String {
    if n == 1 {
        "1 version".to_owned()
    } else {
        format!("{n} versions")
    }
}

/// One line for a file: crate, upstream, and what happened.
pub(crate) fn describe(f: &FileReport) -> String {
    let what = match f.outcome {
        Outcome::Failed => format!(
            "failed: {}",
            f.error.as_deref().unwrap_or("no usable answer")
        ),
        Outcome::Unchanged if f.present => format!("unchanged ({})", versions(f.versions)),
        Outcome::Unchanged => "unchanged (does not have it)".to_owned(),
        Outcome::Fetched if f.present => format!("fetched ({})", versions(f.versions)),
        Outcome::Fetched => "fetched (does not have it)".to_owned(),
        Outcome::Changed if !f.present => "changed: no longer has it".to_owned(),
        Outcome::Changed => {
            let parts: Vec<String> = [
                list("new", &f.added),
                list("yanked", &f.yanked),
                list("unyanked", &f.unyanked),
                list("removed", &f.removed),
            ]
            .into_iter()
            .flatten()
            .collect();
            if parts.is_empty() {
                "changed".to_owned()
            } else {
                format!("changed: {}", parts.join("; "))
            }
        }
    };
    format!("{:<24} {:<16} {what}", f.krate, f.upstream)
}

pub(crate) async fn run(dirs: &Dirs, args: RefreshArgs) -> anyhow::Result<ExitCode> {
    for c in &args.crates {
        CrateName::new(c).with_context(|| format!("{c:?} is not a crate name"))?;
    }
    // Revalidating a large cache takes a while; the daemon answers when every file is done.
    let report = crate::autostart::connect(dirs, Duration::from_mins(15))
        .await?
        .refresh(&RefreshRequest {
            crates: args.crates.clone(),
        })
        .await?;
    let count = |o: Outcome| report.files.iter().filter(|f| f.outcome == o).count();
    let named = !args.crates.is_empty();
    for f in &report.files {
        // Without names the cache can be large: only what changed or failed is worth a line.
        if named || f.outcome != Outcome::Unchanged {
            println!("{}", describe(f));
        }
    }
    if !named && report.files.is_empty() {
        println!("nothing is cached yet: no index files to revalidate");
        return Ok(ExitCode::SUCCESS);
    }
    let fetched = count(Outcome::Fetched);
    println!(
        "{} {} index files: {} changed, {} unchanged, {}{} failed",
        if named { "refreshed" } else { "revalidated" },
        report.files.len(),
        count(Outcome::Changed),
        count(Outcome::Unchanged),
        if fetched > 0 {
            format!("{fetched} fetched for the first time, ")
        } else {
            String::new()
        },
        count(Outcome::Failed),
    );
    Ok(if count(Outcome::Failed) > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome, present: bool) -> FileReport {
        FileReport {
            krate: "foo".into(),
            upstream: "acme".into(),
            outcome,
            present,
            versions: 3,
            added: Vec::new(),
            removed: Vec::new(),
            yanked: Vec::new(),
            unyanked: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn lines_say_what_changed() {
        let mut f = report(Outcome::Changed, true);
        f.added = (0..10).map(|i| format!("1.{i}.0")).collect();
        f.yanked = vec!["0.9.0".into()];
        let line = describe(&f);
        assert!(line.starts_with("foo "), "{line}");
        assert!(
            line.ends_with(
                "acme             changed: new 1.9.0, 1.8.0, 1.7.0, 1.6.0, 1.5.0, 1.4.0, 1.3.0, 1.2.0 and 2 more; yanked 0.9.0"
            ),
            "{line}"
        );
        assert!(
            describe(&report(Outcome::Unchanged, false)).ends_with("unchanged (does not have it)")
        );
        assert!(describe(&report(Outcome::Fetched, true)).ends_with("fetched (3 versions)"));
        let mut failed = report(Outcome::Failed, true);
        failed.error = Some("upstream acme answered 500 for the index file of foo".into());
        assert!(
            describe(&failed)
                .ends_with("failed: upstream acme answered 500 for the index file of foo")
        );
    }
}
