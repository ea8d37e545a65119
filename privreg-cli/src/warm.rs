//! `privreg warm [Cargo.lock …]`: fetch every index file and crate that lockfiles need through
//! the daemon, so that the next build works offline (on a flight, on a train).
//!
//! Each registry package goes through the view cargo uses for it: packages of the public
//! registry (its git or sparse URL) through the layered view (`/index/…`, `/dl/…`), packages of a
//! configured upstream's own URL (`registry = "acme"` dependencies) through that upstream's view
//! (`/upstream/acme/…`). The daemon says in [`CACHE_HEADER`] whether it already held each answer.
//! Path and git packages are cargo's own business and are only counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cargo_lock::package::SourceKind;
use cargo_lock::{Lockfile, SourceId};
use clap::Args;
use futures_util::stream::{self, StreamExt};
use privreg_shared::CrateName;
use privreg_shared::config::Config;
use privreg_shared::index::{CRATES_IO_KEY, registry_url_key};
use privreg_shared::route::CACHE_HEADER;
use reqwest::StatusCode;
use semver::Version;
use sha2::{Digest, Sha256};

use super::Dirs;
use super::client::DaemonClient;

#[derive(Args)]
pub struct WarmArgs {
    /// Cargo.lock files (or the directories holding them); default: the current project's, as
    /// `cargo locate-project --workspace` finds it.
    lockfiles: Vec<PathBuf>,
    /// Index files (each with its crates) fetched at the same time, at most.
    #[arg(long, short = 'j', default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Also keep these lockfiles' crates and index files in the cache: collections (`privreg
    /// gc`, the daemon's daily one) never remove them until `privreg warm --unkeep`.
    #[arg(long, conflicts_with = "unkeep")]
    keep: bool,
    /// Release what `--keep` kept for these lockfiles (nothing is fetched).
    #[arg(long)]
    unkeep: bool,
}

/// A lockfile's path as keep records name it: absolute, symlinks resolved where possible.
fn keep_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

/// Records what the lockfile at `path` keeps: its registry packages' checksums and names.
fn keep(cache: &privreg_shared::store::Cache, path: &Path, plan: &Plan) -> anyhow::Result<usize> {
    let mut crates = BTreeSet::new();
    let mut names = BTreeSet::new();
    for job in &plan.jobs {
        names.insert(job.name.to_ascii_lowercase());
        crates.extend(job.versions.values().flatten().cloned());
    }
    let record = privreg_shared::store::gc::KeepRecord {
        lockfile: keep_key(path),
        at: privreg_shared::store::now_secs(),
        crates: crates.into_iter().collect(),
        names: names.into_iter().collect(),
    };
    cache.keep(&record)?;
    Ok(record.crates.len())
}

/// `--unkeep`: forgets the keep records of `paths`.
fn unkeep(dirs: &Dirs, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let cache = privreg_shared::store::Cache::new(&dirs.cache);
    for path in paths {
        let key = keep_key(path);
        if cache.unkeep(&key)? {
            println!(
                "released {}: its crates may be collected again",
                key.display()
            );
        } else {
            println!("{} was not kept", key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a locked registry package is fetched from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Route {
    /// The public registry's packages: the layered view.
    Layered,
    /// A configured upstream's own URL: that upstream's view.
    Upstream(String),
}

impl Route {
    fn prefix(&self) -> String {
        match self {
            Route::Layered => String::new(),
            Route::Upstream(name) => format!("/upstream/{name}"),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Layered => f.write_str("the layered view"),
            Route::Upstream(name) => write!(f, "upstream {name}"),
        }
    }
}

/// What a locked package is to privreg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    Served(Route),
    Path,
    Git,
    /// A registry (or vendored source) privreg does not serve: cargo goes there itself.
    Other(String),
}

/// Classifies a package's `source`; `upstreams` are (URL key, name) of the configured upstreams.
pub(crate) fn classify(source: Option<&SourceId>, upstreams: &[(String, String)]) -> Class {
    let Some(source) = source else {
        return Class::Path;
    };
    match source.kind() {
        SourceKind::Path => Class::Path,
        SourceKind::Git(_) => Class::Git,
        SourceKind::Registry | SourceKind::SparseRegistry => {
            let key = registry_url_key(source.url().as_str());
            if key == CRATES_IO_KEY {
                return Class::Served(Route::Layered);
            }
            match upstreams.iter().find(|(k, _)| *k == key) {
                Some((_, name)) => Class::Served(Route::Upstream(name.clone())),
                None => Class::Other(source.url().to_string()),
            }
        }
        _ => Class::Other(source.url().to_string()),
    }
}

/// One index file to warm, with the versions (and checksums) of it that lockfiles lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub route: Route,
    /// The name as the lockfile spells it (downloads use it).
    pub name: String,
    /// Version → checksum (`None` when the lockfile has none).
    pub versions: BTreeMap<Version, Option<String>>,
}

/// A package by name and version.
type Id = (String, Version);

/// What lockfiles ask for: the index files to warm, and what was skipped.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub jobs: Vec<Job>,
    pub path: BTreeSet<Id>,
    pub git: BTreeSet<Id>,
    /// Source URL → packages.
    pub other: BTreeMap<String, BTreeSet<Id>>,
}

impl Plan {
    /// Adds a lockfile's packages; the same package in several lockfiles counts once.
    pub(crate) fn add(&mut self, lockfile: &Lockfile, upstreams: &[(String, String)]) {
        let mut jobs: BTreeMap<(Route, String), Job> = self
            .jobs
            .drain(..)
            .map(|j| ((j.route.clone(), j.name.to_ascii_lowercase()), j))
            .collect();
        for p in &lockfile.packages {
            let id = || (p.name.as_str().to_owned(), p.version.clone());
            match classify(p.source.as_ref(), upstreams) {
                Class::Path => _ = self.path.insert(id()),
                Class::Git => _ = self.git.insert(id()),
                Class::Other(url) => _ = self.other.entry(url).or_default().insert(id()),
                Class::Served(route) => {
                    let name = p.name.as_str().to_owned();
                    let job = jobs
                        .entry((route.clone(), name.to_ascii_lowercase()))
                        .or_insert_with(|| Job {
                            route,
                            name,
                            versions: BTreeMap::new(),
                        });
                    job.versions.insert(
                        p.version.clone(),
                        p.checksum.as_ref().map(std::string::ToString::to_string),
                    );
                }
            }
        }
        self.jobs = jobs.into_values().collect();
    }

    pub(crate) fn packages(&self) -> usize {
        self.jobs.iter().map(|j| j.versions.len()).sum()
    }
}

/// What became of one file (an index file or a crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Fetched,
    Cached,
    Failed(String),
}

/// What became of one locked package.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub name: String,
    pub version: Version,
    pub route: Route,
    pub index: State,
    /// `None` when the index file failed and the crate was not asked for.
    pub krate: Option<State>,
}

impl Outcome {
    /// The package's overall state: failed if anything failed, fetched if anything was.
    pub(crate) fn state(&self) -> State {
        let states = [Some(&self.index), self.krate.as_ref()];
        if let Some(State::Failed(e)) = states
            .iter()
            .flatten()
            .find(|s| matches!(s, State::Failed(_)))
        {
            return State::Failed(e.clone());
        }
        if self.krate.is_none() {
            return State::Failed("the index file was not fetched".into());
        }
        if states.iter().flatten().any(|s| **s == State::Fetched) {
            State::Fetched
        } else {
            State::Cached
        }
    }
}

/// A 200 answer's cache state, else the daemon's reason.
async fn answered(resp: reqwest::Response) -> Result<(bool, reqwest::Response), String> {
    let status = resp.status();
    if status == StatusCode::OK {
        let hit = resp
            .headers()
            .get(CACHE_HEADER)
            .is_some_and(|v| v.as_bytes() == b"hit");
        return Ok((hit, resp));
    }
    let body = resp.text().await.unwrap_or_default();
    let body = body.trim();
    Err(if body.is_empty() {
        format!("the daemon answered {status}")
    } else {
        body.to_owned()
    })
}

fn state(hit: bool) -> State {
    if hit { State::Cached } else { State::Fetched }
}

/// Fetches one crate through the daemon and checks its sha256 against the lockfile's.
async fn fetch_crate(
    conn: &DaemonClient,
    job: &Job,
    version: &Version,
    cksum: &str,
) -> anyhow::Result<State> {
    let path = format!("{}/dl/{}/{version}/{cksum}", job.route.prefix(), job.name);
    let resp = conn.get(&path).await?;
    let (hit, mut resp) = match answered(resp).await {
        Ok(a) => a,
        Err(reason) => return Ok(State::Failed(reason)),
    };
    let mut sha = Sha256::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => sha.update(&chunk),
            Ok(None) => break,
            Err(e) => return Ok(State::Failed(format!("the download was cut short: {e}"))),
        }
    }
    let got = hex::encode(sha.finalize());
    if got != cksum {
        return Ok(State::Failed(format!(
            "the daemon sent a file with sha256 {got}, but Cargo.lock says {cksum}"
        )));
    }
    Ok(state(hit))
}

/// Warms one index file and its locked crates.
async fn warm_job(conn: &DaemonClient, job: &Job) -> anyhow::Result<Vec<Outcome>> {
    let outcome = |version: &Version, index: &State, krate: Option<State>| Outcome {
        name: job.name.clone(),
        version: version.clone(),
        route: job.route.clone(),
        index: index.clone(),
        krate,
    };
    let index = match CrateName::new(&job.name) {
        Err(e) => State::Failed(e.to_string()),
        Ok(name) => {
            let path = format!("{}/index/{}", job.route.prefix(), name.lower().index_path());
            let resp = conn.get(&path).await?;
            match answered(resp).await {
                Ok((hit, _)) => state(hit),
                Err(reason) => State::Failed(reason),
            }
        }
    };
    let mut out = Vec::new();
    for (version, cksum) in &job.versions {
        let krate = match (&index, cksum) {
            (State::Failed(_), _) => None,
            (_, None) => Some(State::Failed("Cargo.lock has no checksum for it".into())),
            (_, Some(cksum)) => Some(fetch_crate(conn, job, version, cksum).await?),
        };
        out.push(outcome(version, &index, krate));
    }
    Ok(out)
}

/// The lockfile of the project around the current directory.
pub(crate) fn current_lockfile() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let located = std::process::Command::new(&cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .stdin(std::process::Stdio::null())
        .output();
    let manifest = match located {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => bail!(
            "no Cargo project here (name a Cargo.lock): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        // Without cargo: the nearest Cargo.lock above the current directory.
        Err(_) => {
            let cwd = std::env::current_dir().context("the current directory")?;
            let found = cwd
                .ancestors()
                .find(|d| d.join("Cargo.lock").is_file())
                .with_context(|| {
                    format!("no Cargo.lock in {} or above (name one)", cwd.display())
                })?;
            found.join("Cargo.toml")
        }
    };
    Ok(manifest.with_file_name("Cargo.lock"))
}

/// The lockfiles named on the command line, or the current project's when none is.
pub(crate) fn lockfiles(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    Ok(if args.is_empty() {
        vec![current_lockfile()?]
    } else {
        args.iter().map(|p| lockfile_path(p)).collect()
    })
}

/// Each configured upstream's registry key (the form of a lockfile's `source`) with its name.
pub(crate) fn upstream_keys(config: &Config) -> Vec<(String, String)> {
    config
        .upstreams
        .iter()
        .map(|u| (registry_url_key(&u.index), u.name.to_string()))
        .collect()
}

/// A lockfile named on the command line (a directory means its Cargo.lock).
pub(crate) fn lockfile_path(arg: &Path) -> PathBuf {
    if arg.is_dir() {
        arg.join("Cargo.lock")
    } else {
        arg.to_owned()
    }
}

pub(crate) fn load(path: &Path) -> anyhow::Result<Lockfile> {
    if !path.is_file() {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        bail!(
            "{}: no such file; run `cargo generate-lockfile`{} first",
            path.display(),
            dir.map(|d| format!(" in {}", d.display()))
                .unwrap_or_default()
        );
    }
    Lockfile::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Counts of files in each state.
#[derive(Debug, Default)]
struct Tally {
    fetched: usize,
    cached: usize,
    failed: usize,
}

impl Tally {
    fn add(&mut self, s: &State) {
        match s {
            State::Fetched => self.fetched += 1,
            State::Cached => self.cached += 1,
            State::Failed(_) => self.failed += 1,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fetched, {} already cached, {} failed",
            self.fetched, self.cached, self.failed
        )
    }
}

pub(crate) async fn run(dirs: &Dirs, args: WarmArgs) -> anyhow::Result<ExitCode> {
    let paths = lockfiles(&args.lockfiles)?;
    if args.unkeep {
        return unkeep(dirs, &paths);
    }
    let upstreams = upstream_keys(&Config::load(&dirs.config)?);
    let mut plan = Plan::default();
    let mut kept = Vec::new();
    for path in &paths {
        let lockfile = load(path)?;
        if args.keep {
            let mut own = Plan::default();
            own.add(&lockfile, &upstreams);
            kept.push((path, own));
        }
        plan.add(&lockfile, &upstreams);
    }
    let cache = privreg_shared::store::Cache::new(&dirs.cache);
    for (path, own) in &kept {
        let n = keep(&cache, path, own)?;
        println!(
            "keeping {} ({n} crates) until `privreg warm --unkeep`",
            path.display()
        );
    }

    let conn = crate::autostart::connect(dirs, Duration::from_mins(10)).await?;
    // One cheap request first, so that a daemon that is down or refuses the token says so once.
    conn.get("/index/config.json").await?;

    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = indicatif::ProgressBar::new(plan.packages() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} packages {wide_msg}",
            )
            .expect("the template parses")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (conn, bar_ref) = (&conn, &bar);
    let mut results = stream::iter(&plan.jobs)
        .map(|job| async move {
            let out = warm_job(conn, job).await;
            if let Ok(out) = &out {
                bar_ref.set_message(job.name.clone());
                bar_ref.inc(out.len() as u64);
                if !terminal {
                    for o in out {
                        let word = match o.state() {
                            State::Fetched => "fetched",
                            State::Cached => "cached ",
                            State::Failed(_) => "failed ",
                        };
                        println!("{word} {} {}", o.name, o.version);
                    }
                }
            }
            out.map(|o| (job, o))
        })
        .buffer_unordered(usize::from(args.jobs));
    let mut outcomes = Vec::new();
    let (mut index, mut crates) = (Tally::default(), Tally::default());
    while let Some(r) = results.next().await {
        let (_, out) = r?;
        if let Some(first) = out.first() {
            index.add(&first.index);
        }
        for o in &out {
            crates.add(o.krate.as_ref().unwrap_or(&State::Failed(String::new())));
        }
        outcomes.extend(out);
    }
    bar.finish_and_clear();

    outcomes.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let mut packages = Tally::default();
    let mut failures = Vec::new();
    for o in &outcomes {
        let s = o.state();
        packages.add(&s);
        if let State::Failed(reason) = s {
            failures.push(format!(
                "  {} {} via {}: {reason}",
                o.name, o.version, o.route
            ));
        }
    }
    if !failures.is_empty() {
        println!("failed:");
        for f in &failures {
            println!("{f}");
        }
    }
    let lockfiles = if paths.len() == 1 {
        paths[0].display().to_string()
    } else {
        format!("{} lockfiles", paths.len())
    };
    println!(
        "warmed {lockfiles}: {} packages: {packages}",
        plan.packages()
    );
    println!("  index files: {index}");
    println!("  crates:      {crates}");
    let other: usize = plan.other.values().map(BTreeSet::len).sum();
    println!(
        "  skipped:     {} path, {} git, {other} from registries privreg does not serve",
        plan.path.len(),
        plan.git.len()
    );
    for url in plan.other.keys() {
        println!("               (not served by privreg: {url})");
    }
    if !plan.git.is_empty() {
        println!("  note: cargo fetches git dependencies itself; run `cargo fetch` for them");
    }
    Ok(if packages.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn lockfile(acme: &str) -> Lockfile {
        let git = tame_index::index::git::CRATES_IO_INDEX;
        let sparse = tame_index::index::sparse::CRATES_IO_HTTP_INDEX;
        format!(
            r#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["Serde", "acme-core", "helper", "gitdep", "foreign", "serde_json"]

[[package]]
name = "Serde"
version = "1.0.0"
source = "registry+{git}"
checksum = "{CK}"

[[package]]
name = "serde_json"
version = "1.0.1"
source = "{sparse}"
checksum = "{CK}"

[[package]]
name = "serde_json"
version = "1.0.2"
source = "{sparse}"
checksum = "{CK}"

[[package]]
name = "acme-core"
version = "0.2.0"
source = "{acme}"
checksum = "{CK}"

[[package]]
name = "helper"
version = "0.1.0"

[[package]]
name = "gitdep"
version = "0.1.0"
source = "git+https://git.example/gitdep#0123456789abcdef0123456789abcdef01234567"

[[package]]
name = "foreign"
version = "1.0.0"
source = "sparse+https://other.example/index/"
checksum = "{CK}"
"#
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn plans_by_source() {
        let upstreams = vec![(
            registry_url_key("sparse+http://127.0.0.1:9/index/"),
            "acme".to_owned(),
        )];
        let mut plan = Plan::default();
        plan.add(&lockfile("sparse+http://127.0.0.1:9/index/"), &upstreams);
        // The same lockfile again: nothing is fetched or counted twice.
        plan.add(&lockfile("sparse+http://127.0.0.1:9/index/"), &upstreams);
        let jobs: Vec<(Route, &str, Vec<String>)> = plan
            .jobs
            .iter()
            .map(|j| {
                (
                    j.route.clone(),
                    j.name.as_str(),
                    j.versions.keys().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            jobs,
            [
                (Route::Layered, "Serde", vec!["1.0.0".to_owned()]),
                (
                    Route::Layered,
                    "serde_json",
                    vec!["1.0.1".to_owned(), "1.0.2".to_owned()]
                ),
                (
                    Route::Upstream("acme".into()),
                    "acme-core",
                    vec!["0.2.0".to_owned()]
                ),
            ]
        );
        assert!(
            plan.jobs
                .iter()
                .all(|j| j.versions.values().all(|c| c.as_deref() == Some(CK)))
        );
        assert_eq!(plan.packages(), 4);
        assert_eq!((plan.path.len(), plan.git.len()), (2, 1));
        assert_eq!(
            plan.other
                .into_iter()
                .map(|(u, p)| (u, p.len()))
                .collect::<Vec<_>>(),
            [("https://other.example/index/".to_owned(), 1)]
        );
    }

    #[test]
    fn an_unconfigured_registry_is_not_served() {
        let mut plan = Plan::default();
        plan.add(&lockfile("sparse+http://127.0.0.1:9/index/"), &[]);
        assert_eq!(plan.packages(), 3);
        assert_eq!(plan.other.values().map(BTreeSet::len).sum::<usize>(), 2);
    }

    #[test]
    fn a_package_is_fetched_if_any_of_its_files_was() {
        let o = |index: State, krate: Option<State>| Outcome {
            name: "foo".into(),
            version: "1.0.0".parse().unwrap(),
            route: Route::Layered,
            index,
            krate,
        };
        assert_eq!(o(State::Cached, Some(State::Cached)).state(), State::Cached);
        assert_eq!(
            o(State::Fetched, Some(State::Cached)).state(),
            State::Fetched
        );
        assert_eq!(
            o(State::Cached, Some(State::Fetched)).state(),
            State::Fetched
        );
        assert_eq!(
            o(State::Failed("x".into()), None).state(),
            State::Failed("x".into())
        );
        assert_eq!(
            o(State::Cached, Some(State::Failed("y".into()))).state(),
            State::Failed("y".into())
        );
    }
}
