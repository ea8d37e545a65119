//! Collecting the cache: which crates and index files to remove so that the cache stays under
//! `[cache] max-size` and keeps nothing unused for longer than `[cache] max-age`.
//!
//! [`plan`] is the whole decision, pure: given every removable file with its size, its last use
//! and whether a lockfile keeps it (`privreg warm --keep`), it picks what goes, least recently used
//! first. [`Cache::scan`] and [`Cache::collect`] are the edge that walks the disk and removes.
//!
//! Last use is a file's modification time. The daemon never writes per request: it notes the
//! files it serves in memory ([`Cache::note_use`]) and sets their modification time in one batch
//! a minute ([`Cache::flush_uses`]); a file written from an upstream's answer has its write time
//! anyway. Modification times (unlike access times) are not moved by reading (`privreg verify`,
//! backups) nor lost on `noatime` mounts, and nothing else in the cache reads them.
//!
//! Removal is one `unlink` per file, so a collection stopped at any point (a crash, SIGKILL)
//! leaves every remaining file whole: `privreg verify` finds nothing damaged. A file being served
//! stays readable through its open handle; a download in progress is a temp file that is only
//! removed once it is an hour old (a crash's leftover); a file used again after the plan was made
//! (its modification time moved) is skipped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Cache, at, now_secs, write_atomic};

/// How old a temp file must be before a collection takes it for a crash's leftover.
pub const TEMP_AGE: Duration = Duration::from_hours(1);
/// Files whose use is noted between two flushes, at most (a minute of the daemon's work; each
/// is a path of about 100 bytes, so the set stays under a few MB whatever the load).
pub const USES_HELD: usize = 16_384;
/// How often the daemon collects on its own, at most.
pub const AUTO_INTERVAL: Duration = Duration::from_hours(24);

/// What a removable file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An upstream's index file.
    Index,
    /// A downloaded `.crate`.
    Crate,
    /// A temp file (a write or download in progress, or a crash's leftover).
    Temp,
}

/// One removable file as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// Its last use (seconds since the epoch): its modification time.
    pub last_use: u64,
    /// A lockfile warmed with `privreg warm --keep` needs it: never removed.
    pub kept: bool,
}

/// What to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    /// Remove least recently used files until the cache holds at most this many bytes.
    pub max_size: Option<u64>,
    /// Remove files unused for longer than this.
    pub max_age: Option<Duration>,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Indices into the items, least recently used first.
    pub remove: Vec<usize>,
    /// Bytes in the cache before (removable files and the rest).
    pub before: u64,
    /// Bytes the removals free.
    pub freed: u64,
    /// Bytes that kept files hold.
    pub kept: u64,
}

impl Plan {
    /// Bytes in the cache after the removals.
    pub fn after(&self) -> u64 {
        self.before - self.freed
    }
}

/// Decides what to remove from `items` (plus `other` bytes that are never removed: the served
/// checksums, `config.json` files, keep records) at `now` (seconds since the epoch): temp files
/// older than [`TEMP_AGE`]; files unused for longer than `max_age`; then, least recently used
/// first, files until the total is at most `max_size`. Kept files are never removed, even when
/// they alone exceed `max_size`.
pub fn plan(items: &[Item], other: u64, rules: &Rules, now: u64) -> Plan {
    let age = |i: &Item| now.saturating_sub(i.last_use);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].last_use, &items[i].path));
    let mut p = Plan {
        before: other + items.iter().map(|i| i.size).sum::<u64>(),
        kept: items.iter().filter(|i| i.kept).map(|i| i.size).sum(),
        ..Plan::default()
    };
    let mut chosen = vec![false; items.len()];
    let mut take = |p: &mut Plan, i: usize| {
        if !chosen[i] {
            chosen[i] = true;
            p.remove.push(i);
            p.freed += items[i].size;
        }
    };
    for &i in &order {
        let item = &items[i];
        let old_temp = item.kind == Kind::Temp && age(item) >= TEMP_AGE.as_secs();
        let unused = item.kind != Kind::Temp
            && !item.kept
            && rules.max_age.is_some_and(|m| age(item) > m.as_secs());
        if old_temp || unused {
            take(&mut p, i);
        }
    }
    if let Some(max) = rules.max_size {
        for &i in &order {
            if p.after() <= max {
                break;
            }
            let item = &items[i];
            if item.kind != Kind::Temp && !item.kept {
                take(&mut p, i);
            }
        }
    }
    p.remove
        .sort_by_key(|&i| (items[i].last_use, &items[i].path));
    p
}

/// What lockfiles kept with `privreg warm --keep` need: crates by checksum and index files by
/// crate name (lower-cased), from every `v1/keep/*.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// Checksums of kept crates.
    pub crates: HashSet<String>,
    /// Lower-cased names of crates whose index files are kept.
    pub names: HashSet<String>,
}

/// One lockfile's keep record, `v1/keep/<hash of its path>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepRecord {
    /// The lockfile, as given (made absolute).
    pub lockfile: PathBuf,
    /// When it was recorded (seconds since the epoch).
    pub at: u64,
    /// Checksums of its registry packages.
    pub crates: Vec<String>,
    /// Names of its registry packages.
    pub names: Vec<String>,
}

/// The last collection, `v1/gc.json`, written by the daemon's and by `privreg gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRecord {
    /// When it ran (seconds since the epoch).
    pub at: u64,
    /// Files it removed.
    pub removed_files: u64,
    /// Bytes it freed.
    pub freed_bytes: u64,
    /// Bytes in the cache after it.
    pub bytes_after: u64,
    /// Files in the cache after it.
    pub files_after: u64,
    /// Who ran it: `daemon` or `privreg gc`.
    pub by: String,
}

impl GcRecord {
    /// The record of collection `done`, run now by `by`.
    pub fn of(done: &Collected, by: &str) -> GcRecord {
        GcRecord {
            at: now_secs(),
            removed_files: done.removed.len() as u64,
            freed_bytes: done.freed,
            bytes_after: done.after.0,
            files_after: done.after.1,
            by: by.to_owned(),
        }
    }
}

/// What [`Cache::scan`] found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every removable file.
    pub items: Vec<Item>,
    /// Bytes of the files that are never removed.
    pub other_bytes: u64,
    /// How many files those are.
    pub other_files: u64,
}

impl Scan {
    /// Bytes and files in the cache.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.other_bytes + self.items.iter().map(|i| i.size).sum::<u64>(),
            self.other_files + self.items.len() as u64,
        )
    }
}

/// What [`Cache::collect`] did.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// The removed files (with what they were), least recently used first.
    pub removed: Vec<Item>,
    /// Bytes freed.
    pub freed: u64,
    /// Bytes and files in the cache before.
    pub before: (u64, u64),
    /// Bytes and files in the cache after.
    pub after: (u64, u64),
    /// Bytes that kept files hold.
    pub kept: u64,
    /// Files skipped because they were used after the plan was made (or were gone already).
    pub skipped: u64,
    /// First-seen records removed with their index files (not in `removed`).
    pub seen_removed: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn keep_name(lockfile: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(lockfile.as_os_str().as_encoded_bytes());
    format!("{}.json", &hex::encode(digest)[..16])
}

impl Cache {
    fn keep_dir(&self) -> PathBuf {
        self.root.join("keep")
    }

    /// `v1/gc.json`.
    pub fn gc_record_path(&self) -> PathBuf {
        self.root.join("gc.json")
    }

    /// The last collection, if one ran.
    pub fn gc_record(&self) -> Option<GcRecord> {
        let data = std::fs::read(self.gc_record_path()).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Records a collection (atomically).
    pub fn store_gc_record(&self, r: &GcRecord) -> Result<(), super::CacheError> {
        write_atomic(
            &self.gc_record_path(),
            &serde_json::to_vec(r).expect("record serialises"),
        )
    }

    /// Records what `record.lockfile` keeps (replacing an earlier record of it).
    pub fn keep(&self, record: &KeepRecord) -> Result<(), super::CacheError> {
        let path = self.keep_dir().join(keep_name(&record.lockfile));
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(record).expect("record serialises"),
        )
    }

    /// Forgets what `lockfile` kept; whether it kept anything.
    pub fn unkeep(&self, lockfile: &Path) -> Result<bool, super::CacheError> {
        let path = self.keep_dir().join(keep_name(lockfile));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(at(&path)(e)),
        }
    }

    /// Every keep record (unreadable ones are skipped with a warning).
    pub fn keep_records(&self) -> Vec<KeepRecord> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.keep_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice::<KeepRecord>(&d).ok())
            {
                Some(r) => out.push(r),
                None => {
                    tracing::warn!(path = %path.display(), "skipping an unreadable keep record");
                }
            }
        }
        out.sort_by(|a, b| a.lockfile.cmp(&b.lockfile));
        out
    }

    /// What every keep record keeps.
    pub fn kept(&self) -> Kept {
        let mut kept = Kept::default();
        for r in self.keep_records() {
            kept.crates.extend(r.crates);
            kept.names
                .extend(r.names.into_iter().map(|n| n.to_ascii_lowercase()));
        }
        kept
    }

    /// Walks the cache: every index file, crate and temp file with its size and last use, and
    /// the bytes of everything else. Never called when the daemon starts.
    pub fn scan(&self, kept: &Kept) -> Scan {
        let mut scan = Scan::default();
        let upstreams = self.root.join("upstreams");
        let crates = self.root.join("crates");
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let Ok(t) = e.file_type() else { continue };
                let path = e.path();
                if t.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(m) = e.metadata() else { continue };
                let name = e.file_name();
                let name = name.to_string_lossy();
                let last_use = m.modified().map_or(0, secs);
                let kind = if name.starts_with(".tmp-") {
                    Kind::Temp
                } else if super::seen::is_record(&path) {
                    // A first-seen record lives and dies with the index file beside it (an
                    // older mtime must not evict it first: its versions would count as old).
                    scan.other_bytes += m.len();
                    scan.other_files += 1;
                    continue;
                } else if path.starts_with(&crates) && name.ends_with(".crate") {
                    Kind::Crate
                } else if path.starts_with(&upstreams)
                    && path.strip_prefix(&upstreams).is_ok_and(|r| {
                        r.components()
                            .nth(1)
                            .is_some_and(|c| c.as_os_str() == "index")
                    })
                {
                    Kind::Index
                } else {
                    scan.other_bytes += m.len();
                    scan.other_files += 1;
                    continue;
                };
                let kept = match kind {
                    Kind::Crate => kept.crates.contains(name.trim_end_matches(".crate")),
                    Kind::Index => kept.names.contains(name.as_ref()),
                    Kind::Temp => false,
                };
                scan.items.push(Item {
                    path,
                    kind,
                    size: m.len(),
                    last_use,
                    kept,
                });
            }
        }
        scan
    }

    /// Scans, plans with `rules`, and (unless `dry_run`) removes, calling `removed` after each
    /// file goes (the daemon forgets it in memory; `privreg gc -v` prints it). A file whose
    /// modification time moved since the scan (used or rewritten meanwhile) is skipped.
    pub fn collect(
        &self,
        rules: &Rules,
        dry_run: bool,
        mut removed: impl FnMut(&Item),
    ) -> Collected {
        let scan = self.scan(&self.kept());
        let p = plan(&scan.items, scan.other_bytes, rules, now_secs());
        let before = scan.totals();
        let mut out = Collected {
            before,
            kept: p.kept,
            ..Collected::default()
        };
        for i in p.remove {
            let item = &scan.items[i];
            if !dry_run {
                let still = std::fs::symlink_metadata(&item.path)
                    .is_ok_and(|m| m.modified().map_or(0, secs) <= item.last_use);
                if !still || std::fs::remove_file(&item.path).is_err() {
                    out.skipped += 1;
                    continue;
                }
            }
            out.freed += item.size;
            if item.kind == Kind::Index && !dry_run {
                let seen = super::seen::seen_path(&item.path);
                if let Ok(m) = std::fs::symlink_metadata(&seen)
                    && std::fs::remove_file(&seen).is_ok()
                {
                    out.freed += m.len();
                    out.seen_removed += 1;
                }
            }
            removed(item);
            out.removed.push(item.clone());
        }
        out.after = (
            before.0 - out.freed,
            before.1 - out.removed.len() as u64 - out.seen_removed,
        );
        out
    }

    /// Notes that the file at `path` was used (served); [`Cache::flush_uses`] records it. At
    /// most [`USES_HELD`] files are noted between flushes; beyond that a use is not recorded (the
    /// file's last use then looks older than it is, which matters only if a collection that needs
    /// space comes before its next use).
    pub fn note_path_use(&self, path: PathBuf) {
        let mut used = self.used.lock().expect("uses lock");
        if used.len() < USES_HELD {
            used.insert(path);
        }
    }

    /// Notes that an upstream's file was used (served from memory or disk).
    pub fn note_use(&self, up: &crate::config::Upstream, rel: super::UpstreamPath<'_>) {
        self.note_path_use(self.upstream_path(up, rel));
    }

    /// Sets the modification time of every file used since the last flush to now, in one batch.
    /// Returns the files that were gone (removed by `privreg gc` or by hand), so that the daemon
    /// can forget them in memory.
    pub fn flush_uses(&self) -> Vec<PathBuf> {
        let used = std::mem::take(&mut *self.used.lock().expect("uses lock"));
        let now = filetime::FileTime::now();
        used.into_iter()
            .filter(|p| {
                matches!(filetime::set_file_mtime(p, now), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const NOW: u64 = 1_000 * DAY;

    fn item(name: &str, kind: Kind, size: u64, days_unused: u64, kept: bool) -> Item {
        Item {
            path: PathBuf::from(name),
            kind,
            size,
            last_use: NOW - days_unused * DAY,
            kept,
        }
    }

    fn names(items: &[Item], p: &Plan) -> Vec<String> {
        p.remove
            .iter()
            .map(|&i| items[i].path.display().to_string())
            .collect()
    }

    #[test]
    fn least_recently_used_go_first_until_under_the_limit() {
        let items = vec![
            item("new", Kind::Crate, 100, 0, false),
            item("old", Kind::Crate, 100, 9, false),
            item("mid", Kind::Index, 100, 5, false),
            item("older", Kind::Index, 100, 20, false),
        ];
        let rules = Rules {
            max_size: Some(250),
            max_age: None,
        };
        let p = plan(&items, 10, &rules, NOW);
        assert_eq!(names(&items, &p), ["older", "old"]);
        assert_eq!((p.before, p.freed, p.after()), (410, 200, 210));
        // Already under: nothing.
        let p = plan(
            &items,
            10,
            &Rules {
                max_size: Some(410),
                max_age: None,
            },
            NOW,
        );
        assert!(p.remove.is_empty());
        // No rules: nothing (but old temp files).
        assert!(plan(&items, 0, &Rules::default(), NOW).remove.is_empty());
    }

    #[test]
    fn kept_files_stay_even_over_the_limit() {
        let items = vec![
            item("kept-old", Kind::Crate, 500, 300, true),
            item("free", Kind::Crate, 100, 1, false),
            item("kept-index", Kind::Index, 50, 400, true),
        ];
        let rules = Rules {
            max_size: Some(10),
            max_age: Some(Duration::from_hours(24)),
        };
        let p = plan(&items, 0, &rules, NOW);
        assert_eq!(names(&items, &p), ["free"]);
        assert_eq!((p.kept, p.after()), (550, 550));
    }

    #[test]
    fn files_unused_past_max_age_go_whatever_the_size() {
        let items = vec![
            item("a", Kind::Index, 1, 91, false),
            item("b", Kind::Crate, 1, 89, false),
            item("c", Kind::Crate, 1, 200, false),
        ];
        let rules = Rules {
            max_size: None,
            max_age: Some(Duration::from_hours(90 * 24)),
        };
        assert_eq!(names(&items, &plan(&items, 0, &rules, NOW)), ["c", "a"]);
    }

    #[test]
    fn temp_files_go_only_when_an_hour_old_and_never_count_towards_the_limit() {
        let mut fresh = item(".tmp-fresh", Kind::Temp, 1000, 0, false);
        fresh.last_use = NOW - 60;
        let items = vec![
            fresh,
            item(".tmp-old", Kind::Temp, 10, 1, false),
            item("x", Kind::Crate, 10, 0, false),
        ];
        let p = plan(
            &items,
            0,
            &Rules {
                max_size: Some(0),
                max_age: None,
            },
            NOW,
        );
        assert_eq!(names(&items, &p), [".tmp-old", "x"]);
        assert_eq!(p.after(), 1000, "a download in progress is never removed");
    }

    #[test]
    fn ties_in_last_use_break_by_path_so_a_plan_is_repeatable() {
        let items = vec![
            item("b", Kind::Crate, 10, 3, false),
            item("a", Kind::Crate, 10, 3, false),
        ];
        let p = plan(
            &items,
            0,
            &Rules {
                max_size: Some(10),
                max_age: None,
            },
            NOW,
        );
        assert_eq!(names(&items, &p), ["a"]);
    }

    fn write(path: &Path, data: &[u8], days_unused: u64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        let t = filetime::FileTime::from_unix_time(
            i64::try_from(now_secs() - days_unused * DAY).unwrap(),
            0,
        );
        filetime::set_file_mtime(path, t).unwrap();
    }

    #[test]
    fn collect_removes_by_last_use_keeps_kept_and_records_uses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let root = cache.root().to_owned();
        let idx = |n: &str| root.join("upstreams/acme-0123/index").join(n);
        write(&idx("se/rd/serde"), &[b'x'; 100], 10);
        write(&idx("to/ki/tokio"), &[b'x'; 100], 1);
        // First-seen records go with their index files, never before them (older mtimes).
        write(&idx("to/ki/tokio.seen"), &[b'y'; 7], 0);
        write(&idx("se/rd/serde.seen"), &[b'y'; 7], 0);
        write(&root.join("upstreams/acme-0123/config.json"), b"{}", 100);
        write(&root.join("served/se/rd/serde.json"), b"{}", 100);
        let ck = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        write(&cache.crate_path(&ck('a')), &[b'x'; 300], 30);
        write(&cache.crate_path(&ck('b')), &[b'x'; 300], 40);
        write(
            &cache.crate_path(&ck('c')).with_file_name(".tmp-x"),
            b"..",
            0,
        );
        cache
            .keep(&KeepRecord {
                lockfile: "/p/Cargo.lock".into(),
                at: 1,
                crates: vec![ck('b')],
                names: vec!["Serde".into()],
            })
            .unwrap();
        let keep_bytes = std::fs::metadata(
            root.join("keep")
                .join(keep_name(Path::new("/p/Cargo.lock"))),
        )
        .unwrap()
        .len();

        let scan = cache.scan(&cache.kept());
        assert_eq!(scan.items.len(), 5);
        assert_eq!(scan.other_files, 5);
        assert_eq!(scan.other_bytes, 4 + 14 + keep_bytes);

        let rules = Rules {
            max_size: Some(0),
            max_age: None,
        };
        let dry = cache.collect(&rules, true, |_| {});
        assert_eq!(dry.removed.len(), 2);
        assert!(
            cache.crate_path(&ck('a')).exists(),
            "a dry run removes nothing"
        );

        let mut seen = Vec::new();
        let done = cache.collect(&rules, false, |i| seen.push(i.path.clone()));
        assert_eq!(seen, [cache.crate_path(&ck('a')), idx("to/ki/tokio")]);
        assert_eq!(done.freed, 400 + 7);
        assert!(
            !idx("to/ki/tokio.seen").exists(),
            "removed with its index file"
        );
        assert!(idx("se/rd/serde.seen").exists(), "kept with its index file");
        assert!(!cache.crate_path(&ck('a')).exists());
        assert!(cache.crate_path(&ck('b')).exists(), "kept crate");
        assert!(idx("se/rd/serde").exists(), "kept index file");
        assert_eq!(done.after.1, done.before.1 - 3);

        // A noted use moves the file to the end of the queue; a gone file is reported.
        cache.note_path_use(idx("se/rd/serde"));
        cache.note_path_use(idx("to/ki/tokio"));
        assert_eq!(cache.flush_uses(), [idx("to/ki/tokio")]);
        let m = std::fs::metadata(idx("se/rd/serde"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(secs(m) + 5 >= now_secs());

        assert!(cache.unkeep(Path::new("/p/Cargo.lock")).unwrap());
        assert!(!cache.unkeep(Path::new("/p/Cargo.lock")).unwrap());
        assert_eq!(cache.kept(), Kept::default());
    }

    #[test]
    fn noted_uses_are_bounded_between_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        for i in 0..USES_HELD + 100 {
            cache.note_path_use(dir.path().join(format!("f{i}")));
        }
        // None of them exists, so every held note comes back as gone.
        assert_eq!(cache.flush_uses().len(), USES_HELD);
        cache.note_path_use(dir.path().join("again"));
        assert_eq!(cache.flush_uses().len(), 1, "a flush empties the set");
    }

    #[test]
    fn the_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        assert!(cache.gc_record().is_none());
        let r = GcRecord {
            at: 5,
            removed_files: 2,
            freed_bytes: 300,
            bytes_after: 10,
            files_after: 1,
            by: "privreg gc".into(),
        };
        cache.store_gc_record(&r).unwrap();
        assert_eq!(cache.gc_record(), Some(r));
    }
}
