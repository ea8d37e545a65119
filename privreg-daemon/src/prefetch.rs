//! Prefetch: when the daemon fetches a new index file from an upstream, it fetches the index files
//! of the dependencies of the versions cargo will pick through the layered view, in parallel and
//! bounded, so that cargo's next requests find them warm. Each prefetched file announces its own
//! dependencies in turn, so the whole graph is fetched while cargo is still reading the first
//! files; files already fresh cost nothing (one that is fresh on disk but not in memory is not
//! even read: loading it would push files in use out of the memory budget).
//!
//! Which versions: for a crate some announced dependency asked for, the newest version matching
//! each requirement seen for it (what cargo's resolver picks when nothing conflicts); for one
//! nobody announced (cargo asked for it first: the project's own dependencies), the newest
//! [`crate::upstream::PREFETCH_VERSIONS`] releases. A requirement seen after the crate's file
//! arrived gets its version followed then.

use std::sync::Arc;

use privreg_shared::index::IndexLine;
use semver::{Version, VersionReq};
use tokio::sync::Semaphore;

use crate::daemon::Daemon;

/// What the prefetcher knows of one crate: the requirements its dependents announced, and the
/// versions whose dependencies were already followed.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    reqs: Vec<VersionReq>,
    /// A few versions per crate (one per requirement): a list is smaller than a set.
    followed: Vec<Version>,
    mentioned: bool,
}

impl Interest {
    /// Records that a dependent asked for the crate with `req` (`None`: a requirement that does
    /// not parse). True when the crate is worth a prefetch: first mentioned, or asked with a new
    /// requirement that may pick a version not followed yet.
    pub(crate) fn mention(&mut self, req: Option<VersionReq>) -> bool {
        let first = !std::mem::replace(&mut self.mentioned, true);
        let new_req = match req {
            Some(r) if !self.reqs.contains(&r) => {
                self.reqs.push(r);
                true
            }
            _ => false,
        };
        first || new_req
    }

    /// The versions of `lines` to follow now: [`versions_to_follow`], less those followed before.
    pub(crate) fn take<'a>(
        &mut self,
        lines: &'a [IndexLine],
        fallback: usize,
    ) -> Vec<&'a IndexLine> {
        versions_to_follow(lines, &self.reqs, fallback)
            .into_iter()
            .filter(|l| {
                let new = !self.followed.contains(&l.vers);
                if new {
                    self.followed.push(l.vers.clone());
                }
                new
            })
            .collect()
    }
}

/// The versions whose dependencies cargo will want: per requirement, the newest version that is
/// not yanked and matches it; with no requirement known, the newest `fallback` releases
/// (pre-releases only when there is nothing else).
pub(crate) fn versions_to_follow<'a>(
    lines: &'a [IndexLine],
    reqs: &[VersionReq],
    fallback: usize,
) -> Vec<&'a IndexLine> {
    let mut live: Vec<&IndexLine> = lines.iter().filter(|l| !l.yanked).collect();
    live.sort_by(|a, b| b.vers.cmp(&a.vers));
    if reqs.is_empty() {
        let releases: Vec<_> = live
            .iter()
            .copied()
            .filter(|l| l.vers.pre.is_empty())
            .collect();
        let pick = if releases.is_empty() { live } else { releases };
        return pick.into_iter().take(fallback).collect();
    }
    let mut out: Vec<&IndexLine> = Vec::new();
    for req in reqs {
        if let Some(l) = live.iter().find(|l| req.matches(&l.vers))
            && !out.iter().any(|o| o.vers == l.vers)
        {
            out.push(l);
        }
    }
    out
}

/// Crates waiting to be prefetched, at most; beyond that a prefetch is dropped (and counted).
pub(crate) const PREFETCH_QUEUE: usize = 4096;

/// Index files fetched for prefetching at the same time, at most.
pub(crate) const PREFETCH_CONCURRENCY: usize = 16;

/// Starts the prefetcher; it runs until the daemon stops.
pub(crate) fn start(daemon: Arc<Daemon>) {
    let Some(mut rx) = daemon.take_prefetch_queue() else {
        return;
    };
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(PREFETCH_CONCURRENCY));
        while let Some((krate, registry)) = rx.recv().await {
            // Dependencies on registries privreg does not layer are cargo's own business.
            if registry
                .as_deref()
                .is_some_and(|r| !daemon.runtime().is_layered(r))
            {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                if daemon
                    .upstreams()
                    .fresh_on_disk(&daemon.runtime().config.upstreams, &krate)
                {
                    daemon.metrics().prefetch_skipped();
                    return;
                }
                daemon.note_prefetch();
                daemon.metrics().prefetch();
                let (_, fetched) = daemon.gather(&krate).await;
                // A fresh file announces nothing by itself; a requirement seen since it arrived
                // may pick a version whose dependencies are not fetched yet.
                for entry in fetched.iter().filter_map(|f| f.entry.as_ref()) {
                    if let Some(file) = &entry.file {
                        daemon.upstreams().announce_dependencies(&krate, file);
                    }
                }
                drop(permit);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const CK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn lines(versions: &[(&str, bool)]) -> Vec<IndexLine> {
        versions
            .iter()
            .map(|(v, yanked)| {
                IndexLine::parse(&format!(
                    r#"{{"name":"x","vers":"{v}","deps":[],"cksum":"{CK}","features":{{}},"yanked":{yanked}}}"#
                ))
                .unwrap()
            })
            .collect()
    }

    fn vers(picked: &[&IndexLine]) -> Vec<String> {
        picked.iter().map(|l| l.vers.to_string()).collect()
    }

    fn req(r: &str) -> VersionReq {
        VersionReq::parse(r).unwrap()
    }

    #[test]
    fn without_requirements_the_newest_releases() {
        let ls = lines(&[
            ("1.0.0", false),
            ("2.0.0", false),
            ("2.1.0", true),
            ("1.5.0", false),
            ("3.0.0-rc.1", false),
            ("0.9.0", false),
        ]);
        assert_eq!(
            vers(&versions_to_follow(&ls, &[], 3)),
            ["2.0.0", "1.5.0", "1.0.0"]
        );
        let pre = lines(&[("0.1.0-alpha.1", false), ("0.1.0-alpha.2", false)]);
        assert_eq!(
            vers(&versions_to_follow(&pre, &[], 3)),
            ["0.1.0-alpha.2", "0.1.0-alpha.1"]
        );
    }

    #[test]
    fn with_requirements_the_newest_match_of_each() {
        let ls = lines(&[
            ("0.3.1", false),
            ("0.3.4", false),
            ("0.4.0", false),
            ("0.4.2", true),
            ("1.0.0", false),
            ("2.0.0-beta.1", false),
        ]);
        assert_eq!(vers(&versions_to_follow(&ls, &[req("^0.3")], 3)), ["0.3.4"]);
        // Yanked versions are not picked; two requirements that pick one version give it once.
        assert_eq!(
            vers(&versions_to_follow(
                &ls,
                &[req("^0.4"), req(">=0.4, <0.5"), req("*")],
                3
            )),
            ["0.4.0", "1.0.0"]
        );
        // Pre-releases only for a requirement that names one.
        assert_eq!(
            vers(&versions_to_follow(&ls, &[req("^2.0.0-beta.1")], 3)),
            ["2.0.0-beta.1"]
        );
        assert!(versions_to_follow(&ls, &[req("^5")], 3).is_empty());
    }

    #[test]
    fn interest_follows_each_version_once_and_wakes_for_new_requirements() {
        let ls = lines(&[("1.0.0", false), ("1.2.0", false), ("2.0.0", false)]);
        let mut i = Interest::default();
        assert!(i.mention(Some(req("^1"))), "first mention");
        assert!(!i.mention(Some(req("^1"))), "same requirement again");
        assert!(
            !i.mention(None),
            "an unparsable requirement after the first"
        );
        assert_eq!(vers(&i.take(&ls, 3)), ["1.2.0"]);
        assert!(i.take(&ls, 3).is_empty(), "followed already");
        assert!(i.mention(Some(req("^2"))), "a new requirement");
        assert_eq!(vers(&i.take(&ls, 3)), ["2.0.0"]);

        let mut unknown = Interest::default();
        assert!(unknown.mention(None));
        assert_eq!(vers(&unknown.take(&ls, 2)), ["2.0.0", "1.2.0"]);
    }
}
