//! The RustSec advisory database in force (issue 17): loaded from the last good copy in the
//! cache when the daemon starts (in the background, never delaying it), refreshed every
//! `advisories.refresh` from `advisories.db` (a git repository fetched with the `rustsec`
//! crate, or a local directory), and put in force with [`Daemon::set_advisories`].
//!
//! Layout under the cache directory: `advisory-db/current/` is the last good copy (only ever
//! replaced by a copy that loaded without error), `advisory-db/git-<hash>/` the git checkout of a
//! repository URL, `advisory-db/tmp-*`/`old-*` the swap in progress.
//!
//! Nothing is fetched unless something wants the database: `[advisories]` in config.toml, a pin
//! with the `advisory` selector, or `privreg audit`. A plain setup never reaches out by itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use privreg_shared::advisory::{AdvisoryDb, DEFAULT_DB_URL};
use privreg_shared::config::{Advisories, AdvisoryDbSource};
use privreg_shared::pin::Preferences;
use privreg_shared::protocol::AdvisoriesStatus;
use sha2::{Digest, Sha256};

use crate::daemon::Daemon;

/// The cache subdirectory that holds the copies.
const DIR: &str = "advisory-db";
/// The file in a copy that says when it was fetched (seconds since the epoch) and from where
/// (a line each).
const STAMP: &str = ".privreg-fetched";
/// How often the loop looks again at whether the database is wanted and due.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// How long `privreg audit` waits for a first copy when none is loaded.
const FIRST_COPY_WAIT: Duration = Duration::from_mins(2);
/// How long a git fetch waits for another process's lock on the checkout.
const GIT_LOCK_WAIT: Duration = Duration::from_mins(1);

/// What the status shows of the database, and what drives its refreshes.
#[derive(Default)]
pub(crate) struct AdvisoryState {
    shown: Mutex<Shown>,
    /// `privreg audit` asked for the database: fetch it from now on.
    asked: AtomicBool,
    /// Told when a load or fetch finishes (for [`AdvisoryState::ask`]).
    done: tokio::sync::Notify,
    /// Makes the refresh loop look again at once.
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Shown {
    count: Option<u64>,
    newest: Option<String>,
    updated_at: Option<u64>,
    /// Where the copy in force came from (`advisories.db` then), when known.
    from: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<u64>,
    wanted: bool,
    /// When the last fetch was tried, and from where.
    last_attempt: Option<(Instant, AdvisoryDbSource)>,
    /// A load or fetch is under way.
    in_progress: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AdvisoryState {
    /// Makes the refresh loop look again now (a reload, an audit).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The status sub-object for `advisories` in force.
    pub(crate) fn status(&self, config: &Advisories) -> AdvisoriesStatus {
        let s = self.shown.lock().expect("advisory state lock");
        AdvisoriesStatus {
            db: source_text(&config.db),
            wanted: s.wanted,
            refresh_secs: config.refresh.as_secs(),
            count: s.count,
            newest: s.newest.clone(),
            updated_at: s.updated_at,
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_at,
        }
    }

    /// For `privreg audit`: fetch from now on, and when no copy is loaded, wait (bounded) for
    /// the fetch that this starts, unless one already failed (the audit then says so).
    pub(crate) async fn ask(&self) {
        self.asked.store(true, Ordering::Relaxed);
        let settled = || {
            let s = self.shown.lock().expect("advisory state lock");
            s.count.is_some() || (s.last_attempt.is_some() && !s.in_progress)
        };
        if settled() {
            return;
        }
        let waited = tokio::time::timeout(FIRST_COPY_WAIT, async {
            loop {
                let done = self.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                self.wake();
                if settled() {
                    return;
                }
                done.await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!("no advisory database after waiting; auditing without one");
        }
    }

    fn finished(&self) {
        self.shown.lock().expect("advisory state lock").in_progress = false;
        self.done.notify_waiters();
    }

    fn loaded(&self, db: &AdvisoryDb, stamp: Stamp) {
        let mut s = self.shown.lock().expect("advisory state lock");
        s.count = Some(db.count() as u64);
        s.newest = db.newest().map(str::to_owned);
        s.updated_at = stamp.at;
        s.from = stamp.from;
    }

    fn failed(&self, error: String) {
        let mut s = self.shown.lock().expect("advisory state lock");
        s.last_error = Some(error);
        s.last_error_at = Some(now_secs());
    }

    /// Whether a fetch is due: never tried (and no copy from the same `db` young enough),
    /// tried longer than `refresh` ago, or `db` changed since.
    fn due(&self, config: &Advisories) -> bool {
        let s = self.shown.lock().expect("advisory state lock");
        match &s.last_attempt {
            Some((at, source)) => *source != config.db || at.elapsed() >= config.refresh,
            None => {
                s.from.as_deref() != Some(source_text(&config.db).as_str())
                    || s.updated_at
                        .is_none_or(|u| now_secs().saturating_sub(u) >= config.refresh.as_secs())
            }
        }
    }
}

/// `advisories.db` as the status shows it.
fn source_text(source: &AdvisoryDbSource) -> String {
    match source {
        AdvisoryDbSource::Default => DEFAULT_DB_URL.to_owned(),
        AdvisoryDbSource::Git(url) => url.clone(),
        AdvisoryDbSource::Path(p) => p.display().to_string(),
    }
}

/// Whether the pin files in force use the `advisory` selector (read from disk: a pin file that
/// does not parse counts as not using it; the daemon keeps its last good pins meanwhile).
fn pins_use_advisories(config_dir: &Path) -> bool {
    Preferences::load(config_dir)
        .is_ok_and(|p| p.stanzas().any(|(_, s)| s.selectors.advisory.is_some()))
}

/// Starts the background task that loads and refreshes the database.
pub(crate) fn start(daemon: Arc<Daemon>) {
    tokio::spawn(async move {
        let root = daemon.cache_dir().join(DIR);
        let loaded = tokio::task::spawn_blocking(move || load_current(&root)).await;
        match loaded {
            Ok(Ok(Some((db, stamp)))) => {
                tracing::info!(
                    advisories = db.count(),
                    "loaded the last good copy of the advisory database"
                );
                install(&daemon, db, stamp);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot load the cached advisory database");
                daemon.advisory_state().failed(e);
                daemon.metrics().advisory_db_error();
            }
            Err(e) => tracing::error!(error = %e, "advisory database loader panicked"),
        }
        daemon.advisory_state().finished();
        run(daemon).await;
    });
}

fn install(daemon: &Daemon, db: AdvisoryDb, stamp: Stamp) {
    daemon.metrics().advisory_db(db.count(), stamp.at);
    daemon.advisory_state().loaded(&db, stamp);
    daemon.set_advisories(Arc::new(db));
}

async fn run(daemon: Arc<Daemon>) {
    loop {
        let config = daemon.runtime().config.advisories.clone();
        let state = daemon.advisory_state();
        let wanted = config.explicit
            || state.asked.load(Ordering::Relaxed)
            || pins_use_advisories(daemon.config_dir());
        state.shown.lock().expect("advisory state lock").wanted = wanted;
        if wanted && state.due(&config) {
            {
                let mut s = state.shown.lock().expect("advisory state lock");
                s.last_attempt = Some((Instant::now(), config.db.clone()));
                s.in_progress = true;
            }
            let root = daemon.cache_dir().join(DIR);
            let source = config.db.clone();
            let fetched = tokio::task::spawn_blocking(move || refresh(&root, &source)).await;
            match fetched {
                Ok(Ok((db, stamp))) => {
                    tracing::info!(
                        advisories = db.count(),
                        newest = db.newest().unwrap_or("-"),
                        "advisory database updated"
                    );
                    install(&daemon, db, stamp);
                    state.shown.lock().expect("advisory state lock").last_error = None;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "advisory database not updated; the last good copy stays in force");
                    state.failed(e);
                    daemon.metrics().advisory_db_error();
                }
                Err(e) => tracing::error!(error = %e, "advisory database refresh panicked"),
            }
            state.finished();
        }
        let wait = CHECK_EVERY.min(config.refresh);
        tokio::select! {
            () = state.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The last good copy, if there is one, and when it was fetched.
/// When and from where a copy was fetched (its [`STAMP`] file).
#[derive(Debug, Default, PartialEq, Eq)]
struct Stamp {
    at: Option<u64>,
    from: Option<String>,
}

impl Stamp {
    fn parse(text: &str) -> Stamp {
        let mut lines = text.lines();
        Stamp {
            at: lines.next().and_then(|l| l.trim().parse().ok()),
            from: lines.next().map(str::to_owned).filter(|l| !l.is_empty()),
        }
    }

    fn render(&self) -> String {
        format!(
            "{}\n{}\n",
            self.at.unwrap_or(0),
            self.from.as_deref().unwrap_or("")
        )
    }
}

fn load_current(root: &Path) -> Result<Option<(AdvisoryDb, Stamp)>, String> {
    let current = root.join("current");
    if !current.is_dir() {
        // A crash mid-swap leaves the previous copy as `old-*`.
        let Some(old) = leftovers(root, "old-").into_iter().next() else {
            return Ok(None);
        };
        std::fs::rename(&old, &current)
            .map_err(|e| format!("cannot restore {}: {e}", old.display()))?;
    }
    let db = AdvisoryDb::open(&current).map_err(|e| e.to_string())?;
    let stamp = std::fs::read_to_string(current.join(STAMP))
        .map(|t| Stamp::parse(&t))
        .unwrap_or_default();
    Ok(Some((db, stamp)))
}

/// Entries of `root` whose names start with `prefix`.
fn leftovers(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// Fetches (git) or reads (directory) the database, checks that it loads, and makes a copy of
/// it the last good copy. Blocking.
fn refresh(root: &Path, source: &AdvisoryDbSource) -> Result<(AdvisoryDb, Stamp), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let from = match source {
        AdvisoryDbSource::Default => fetch_git(root, DEFAULT_DB_URL)?,
        AdvisoryDbSource::Git(url) => fetch_git(root, url)?,
        AdvisoryDbSource::Path(path) => path.clone(),
    };
    // Check the source itself first, so that an error names the user's file.
    AdvisoryDb::open(&from).map_err(|e| e.to_string())?;
    for stale in leftovers(root, "tmp-") {
        let _ = std::fs::remove_dir_all(stale);
    }
    let tmp = root.join(format!("tmp-{}", std::process::id()));
    copy_tree(&from, &tmp).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        format!("cannot copy {} into the cache: {e}", from.display())
    })?;
    let db = AdvisoryDb::open(&tmp).map_err(|e| e.to_string())?;
    let stamp = Stamp {
        at: Some(now_secs()),
        from: Some(source_text(source)),
    };
    std::fs::write(tmp.join(STAMP), stamp.render())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let current = root.join("current");
    let old = root.join(format!("old-{}", std::process::id()));
    if current.is_dir() {
        std::fs::rename(&current, &old)
            .map_err(|e| format!("cannot move {} aside: {e}", current.display()))?;
    }
    std::fs::rename(&tmp, &current)
        .map_err(|e| format!("cannot put {} in place: {e}", current.display()))?;
    for old in leftovers(root, "old-") {
        let _ = std::fs::remove_dir_all(old);
    }
    // Checkouts of repositories no longer configured.
    for checkout in leftovers(root, "git-") {
        if checkout.is_dir() && checkout != from {
            let _ = std::fs::remove_dir_all(&checkout);
            let _ = std::fs::remove_file(checkout.with_extension("lock"));
        }
    }
    Ok((db, stamp))
}

/// Fetches the git repository at `url` into its checkout under `root`; returns the checkout.
fn fetch_git(root: &Path, url: &str) -> Result<PathBuf, String> {
    let hash = hex::encode(Sha256::digest(url.as_bytes()));
    let checkout = root.join(format!("git-{}", &hash[..16]));
    AdvisoryDb::fetch_git(url, &checkout, GIT_LOCK_WAIT).map_err(|e| e.to_string())?;
    Ok(checkout)
}

/// Copies the regular files and directories of `from` into a new directory `to`, leaving out
/// `.git` and other dot-entries at any level (the database never has any that matter).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let s = Stamp {
            at: Some(42),
            from: Some("/srv/advisory-db".into()),
        };
        assert_eq!(Stamp::parse(&s.render()), s);
        assert_eq!(
            Stamp::parse("17"),
            Stamp {
                at: Some(17),
                from: None
            }
        );
        assert_eq!(Stamp::parse(""), Stamp::default());
    }
}
