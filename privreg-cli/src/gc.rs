//! `privreg gc [--max-size SIZE] [--older-than DURATION] [--dry-run]`: collect the disk cache by
//! hand. It works on the cache directory itself, so that it needs neither the daemon nor a
//! readable config when given its bounds; it is safe while the daemon runs (see
//! [`privreg_shared::store::gc`]), which notices removed index files and fetches them again.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use privreg_shared::config::{Config, parse_size};
use privreg_shared::store::gc::{Collected, GcRecord, Kind, Rules};
use privreg_shared::store::{Cache, human_bytes, now_secs};

use super::Dirs;

#[derive(Args)]
pub struct GcArgs {
    /// Remove least recently used crates and index files until the cache holds at most SIZE
    /// (such as "2GiB"). With neither this nor --older-than, `[cache]` in config.toml decides.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    max_size: Option<u64>,
    /// Remove crates and index files unused for longer than DURATION (such as "30d").
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// List every file removed (or, with --dry-run, that would be).
    #[arg(long, short)]
    verbose: bool,
}

fn size(text: &str) -> Result<u64, String> {
    parse_size(text).ok_or_else(|| format!("{text:?} is not a size such as \"2GiB\""))
}

/// The bounds to collect with: the flags when any is given, else `[cache]`.
fn rules(dirs: &Dirs, args: &GcArgs) -> anyhow::Result<Rules> {
    if args.max_size.is_some() || args.older_than.is_some() {
        return Ok(Rules {
            max_size: args.max_size,
            max_age: args.older_than,
        });
    }
    let config = Config::load(&dirs.config).context(
        "no bounds given and config.toml cannot be read; pass --max-size or --older-than",
    )?;
    Ok(Rules {
        max_size: config.cache.max_size,
        max_age: config.cache.max_age,
    })
}

fn describe(rules: &Rules) -> String {
    let mut parts = Vec::new();
    if let Some(m) = rules.max_size {
        parts.push(format!("max-size {}", human_bytes(m)));
    }
    if let Some(a) = rules.max_age {
        parts.push(format!(
            "unused for more than {}",
            humantime::format_duration(a)
        ));
    }
    if parts.is_empty() {
        "no bounds (only temp files a crash left behind)".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The summary lines, for people.
fn summary(done: &Collected, rules: &Rules, dry_run: bool, kept_lockfiles: usize) -> Vec<String> {
    let count = |k: Kind| done.removed.iter().filter(|i| i.kind == k).count();
    let verb = if dry_run { "would remove" } else { "removed" };
    let freed = if dry_run { "would free" } else { "freed" };
    let mut out = vec![format!(
        "{verb} {} files ({} index files, {} crates, {} temp files), {freed} {}",
        done.removed.len(),
        count(Kind::Index),
        count(Kind::Crate),
        count(Kind::Temp),
        human_bytes(done.freed)
    )];
    out.push(format!(
        "cache: {} in {} files{} (was {} in {} files); bounds: {}",
        human_bytes(done.after.0),
        done.after.1,
        if dry_run { " after" } else { "" },
        human_bytes(done.before.0),
        done.before.1,
        describe(rules)
    ));
    if kept_lockfiles > 0 {
        out.push(format!(
            "kept: {} by {kept_lockfiles} lockfiles (privreg warm --keep; `privreg warm --unkeep` releases them)",
            human_bytes(done.kept)
        ));
    }
    if let Some(max) = rules.max_size
        && done.after.0 > max
    {
        out.push(format!(
            "warning: still over max-size by {}: what is left is kept or not removable (served checksums, config.json files)",
            human_bytes(done.after.0 - max)
        ));
    }
    out
}

pub(crate) fn run(dirs: &Dirs, args: &GcArgs) -> anyhow::Result<ExitCode> {
    let rules = rules(dirs, args)?;
    let cache = Cache::new(&dirs.cache);
    let kept_lockfiles = cache.keep_records().len();
    let word = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let done = cache.collect(&rules, args.dry_run, |item| {
        if args.verbose {
            let unused = now_secs().saturating_sub(item.last_use);
            println!(
                "{word} {} ({}, unused for {})",
                item.path.display(),
                human_bytes(item.size),
                humantime::format_duration(Duration::from_secs(unused - unused % 60))
            );
        }
    });
    for line in summary(&done, &rules, args.dry_run, kept_lockfiles) {
        println!("{line}");
    }
    if !args.dry_run {
        cache.store_gc_record(&GcRecord::of(&done, "privreg gc"))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use privreg_shared::store::gc::Item;

    #[test]
    fn the_summary_says_what_went_and_what_is_left() {
        let item = |kind, size| Item {
            path: "x".into(),
            kind,
            size,
            last_use: 0,
            kept: false,
        };
        let done = Collected {
            removed: vec![item(Kind::Index, 1024), item(Kind::Crate, 2048)],
            freed: 3072,
            before: (10_240, 5),
            after: (7168, 3),
            kept: 4096,
            skipped: 0,
            seen_removed: 0,
        };
        let rules = Rules {
            max_size: Some(4096),
            max_age: None,
        };
        let lines = summary(&done, &rules, false, 1);
        assert_eq!(
            lines[0],
            "removed 2 files (1 index files, 1 crates, 0 temp files), freed 3.0 KiB"
        );
        assert_eq!(
            lines[1],
            "cache: 7.0 KiB in 3 files (was 10.0 KiB in 5 files); bounds: max-size 4.0 KiB"
        );
        assert!(lines[2].starts_with("kept: 4.0 KiB by 1 lockfiles"));
        assert!(lines[3].starts_with("warning: still over max-size by 3.0 KiB"));
        let dry = summary(&done, &Rules::default(), true, 0);
        assert!(dry[0].starts_with("would remove 2 files"), "{}", dry[0]);
        assert!(dry[1].contains("no bounds"), "{}", dry[1]);
        assert_eq!(dry.len(), 2);
    }
}
