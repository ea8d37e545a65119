//! The layered view: every upstream's answer for a crate, merged by the pure policy.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use privreg_shared::CrateName;
use privreg_shared::advisory::AdvisorySource;
use privreg_shared::config::{Config, Upstream};
use privreg_shared::index::{CRATES_IO_KEY, registry_url_key};
use privreg_shared::policy::{self, Answer, Facts, MergeError, PinRules, UpstreamRef};
use privreg_shared::store::{FirstSeen, now_secs};
use semver::Version;
use sha2::{Digest, Sha256};

use crate::daemon::Daemon;
use crate::upstream::{Entry, FetchError, Fetched, OnDisk};

/// The configuration in force, with what is derived from it. Swapped whole on reload.
pub(crate) struct Runtime {
    pub config: Config,
    pub pins: Box<dyn PinRules + Send + Sync>,
    pub refs: Vec<UpstreamRef>,
    /// Registry URL keys that name a layered upstream (rule 10).
    pub layered_keys: HashSet<String>,
    /// Bumped on every reload, so merged bodies are recomputed.
    pub generation: u64,
}

impl Runtime {
    pub(crate) fn new(
        config: Config,
        pins: Box<dyn PinRules + Send + Sync>,
        generation: u64,
    ) -> Runtime {
        let refs = config.upstreams.iter().map(Upstream::policy_ref).collect();
        let mut layered_keys: HashSet<String> = config
            .upstreams
            .iter()
            .map(|u| registry_url_key(&u.index))
            .collect();
        // An upstream named `crates-io` stands for the public registry (a mirror of it, or the
        // registry itself), so dependencies that name the public registry's URLs are layered.
        if config.upstream(CRATES_IO_KEY).is_some() {
            layered_keys.insert(CRATES_IO_KEY.to_owned());
        }
        Runtime {
            config,
            pins,
            refs,
            layered_keys,
            generation,
        }
    }

    pub(crate) fn is_layered(&self, url: &str) -> bool {
        self.layered_keys.contains(&registry_url_key(url))
    }
}

/// A merged index file, ready to serve.
#[derive(Debug)]
pub(crate) struct MergedBody {
    pub body: Bytes,
    /// Quoted strong ETag of the body.
    pub etag: String,
    /// For each served version: the upstream (by name) and checksum, to route downloads.
    pub sources: BTreeMap<Version, (String, String)>,
    fingerprint: Fingerprint,
    /// When a decision could change with nothing else changing (a version growing out of an
    /// `age` pin), in seconds since the epoch: the body is computed again from then on.
    expires: Option<u64>,
    /// `body` is an upstream entry's body (a file served as it came), whose bytes that entry
    /// weighs against the memory budget.
    body_shared: bool,
}

impl MergedBody {
    /// A merged view of `body` alone, for the unit tests of what holds them.
    #[cfg(test)]
    pub(crate) fn for_test(body: Bytes) -> MergedBody {
        MergedBody {
            etag: strong_etag(&body),
            body,
            sources: BTreeMap::new(),
            fingerprint: (0, 0, Vec::new()),
            expires: None,
            body_shared: false,
        }
    }

    /// About how many bytes of memory the merged view holds besides what the upstream entries
    /// it came from hold (see [`crate::upstream::Memory`]).
    pub(crate) fn weight(&self) -> usize {
        /// Per served version: the map's node, the version, the upstream's name and the
        /// checksum, with their heap blocks.
        const PER_VERSION: usize = 64 + size_of::<(Version, (String, String))>() + 16 + 80;
        let body = if self.body_shared { 0 } else { self.body.len() };
        size_of::<MergedBody>()
            + body
            + self.etag.capacity()
            + self.sources.len() * PER_VERSION
            + self.fingerprint.2.capacity() * size_of::<u64>()
    }
}

impl MergedBody {
    /// Whether this body may still be served for `fingerprint` at `now`.
    fn holds(&self, fingerprint: &Fingerprint, now: u64) -> bool {
        self.fingerprint == *fingerprint && self.expires.is_none_or(|e| now < e)
    }
}

/// The memo key of a merged body: the configuration's generation, the advisory database's
/// generation, and the revision of each upstream's entry (0: none).
type Fingerprint = (u64, u64, Vec<u64>);

/// Why the layered view has no body for a crate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LayeredError {
    #[error("no upstream serves {0}")]
    NotFound(CrateName),
    #[error("{krate} is unavailable: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unavailable {
        krate: CrateName,
        errors: Vec<FetchError>,
    },
}

/// The policy's view of what an upstream entry says.
pub(crate) fn answer(entry: Option<&Arc<Entry>>) -> Answer<'_> {
    match entry {
        Some(e) => match &e.file {
            Some(f) => Answer::Has(f),
            None => Answer::Absent,
        },
        None => Answer::Error,
    }
}

/// The memo key of a merged body (see [`Fingerprint`]). The merged body is computed again when
/// it changes. (An entry's first-seen record changes only with its revision.)
fn fingerprint(generation: u64, advisories: u64, entries: &[Option<Arc<Entry>>]) -> Fingerprint {
    let revs = entries.iter().map(|e| e.as_ref().map_or(0, |e| e.rev));
    (generation, advisories, revs.collect())
}

/// The first-seen records of the upstreams' entries, in the order of `entries`, for [`Facts`].
pub(crate) fn first_seen(entries: &[Option<Arc<Entry>>]) -> Vec<Option<&FirstSeen>> {
    entries
        .iter()
        .map(|e| e.as_deref().map(|e| &*e.seen))
        .collect()
}

/// The policy's merge of `answers` (those of `entries`) for `krate` at `now` (seconds since the
/// epoch), with the versions dated by the entries and the advisory database `advisories`.
pub(crate) fn merge_at(
    rt: &Runtime,
    krate: &CrateName,
    entries: &[Option<Arc<Entry>>],
    answers: &[Answer<'_>],
    remembered: &BTreeMap<Version, String>,
    advisories: &dyn AdvisorySource,
    now: u64,
) -> Result<policy::Merged, MergeError> {
    let first_seen = first_seen(entries);
    let facts = Facts {
        now,
        first_seen: &first_seen,
        advisories,
    };
    policy::merge(
        krate,
        &rt.refs,
        answers,
        rt.pins.as_ref(),
        remembered,
        &facts,
    )
}

/// The quoted strong ETag of a merged body.
fn strong_etag(body: &[u8]) -> String {
    etag_of(&Sha256::digest(body).into())
}

/// The quoted strong ETag of a body whose sha256 is `sha256`.
fn etag_of(sha256: &[u8; 32]) -> String {
    format!("\"{}\"", &hex::encode(sha256)[..32])
}

/// The errors of the upstreams the policy found `unavailable`, in configuration order
/// (`fetched`: each configured upstream's outcome).
fn unavailable_errors(
    fetched: &[Fetched],
    upstreams: &[Upstream],
    unavailable: &[String],
) -> Vec<FetchError> {
    fetched
        .iter()
        .zip(upstreams)
        .filter(|(_, u)| unavailable.iter().any(|n| u.name == *n))
        .filter_map(|(f, _)| f.error.clone())
        .collect()
}

impl Daemon {
    /// Every upstream's answer for `krate` (fresh, revalidated, or the last good one), with the
    /// configuration they were asked under.
    pub(crate) async fn gather(&self, krate: &CrateName) -> (Arc<Runtime>, Vec<Fetched>) {
        let rt = self.runtime();
        let fetched = join_all(
            rt.config
                .upstreams
                .iter()
                .map(|u| self.upstreams().index(u, krate)),
        )
        .await;
        (rt, fetched)
    }

    /// The layered index file of `krate`.
    pub(crate) async fn layered(&self, krate: &CrateName) -> Result<Arc<MergedBody>, LayeredError> {
        let (rt, fetched) = self.gather(krate).await;
        let entries: Vec<Option<Arc<Entry>>> = fetched.iter().map(|f| f.entry.clone()).collect();
        let (advisory_generation, advisories) = self.advisories();
        let fingerprint = fingerprint(rt.generation, advisory_generation, &entries);
        let now = now_secs();
        if let Some(m) = self.remembered_merge(krate)
            && m.holds(&fingerprint, now)
        {
            return Ok(m);
        }
        let answers: Vec<Answer<'_>> = entries.iter().map(Option::as_ref).map(answer).collect();
        let remembered = self.cache().served(krate);
        let merged = match merge_at(
            &rt,
            krate,
            &entries,
            &answers,
            &remembered,
            &*advisories,
            now,
        ) {
            Ok(m) => m,
            Err(MergeError::Unavailable { upstreams }) => {
                return Err(LayeredError::Unavailable {
                    krate: krate.clone(),
                    errors: unavailable_errors(&fetched, &rt.config.upstreams, &upstreams),
                });
            }
        };
        self.metrics().merged(krate, &rt.refs, &merged);
        for c in &merged.conflicts {
            tracing::warn!(
                krate = %krate,
                version = %c.version,
                winner = %rt.refs[c.winner].name,
                loser = %rt.refs[c.loser].name,
                "two upstreams serve different bytes for the same version; serving the winner's"
            );
        }
        let served = merged.checksums(&answers);
        let mut all = remembered.clone();
        all.extend(served.clone());
        if all != remembered {
            // From files of the tier alone, whose local copies wait for a quiet daemon: the
            // record waits with them (a crash loses both, and the tier still has the files).
            let from_tier = entries.iter().flatten().next().is_some()
                && entries
                    .iter()
                    .flatten()
                    .all(|e| e.disk.get() == OnDisk::Deferred);
            let stored = if from_tier {
                self.upstreams().hold_served(krate, &all)
            } else {
                self.cache().store_served(krate, &all)
            };
            if let Err(e) = stored {
                tracing::warn!(error = %e, "cannot record served checksums");
            }
        }
        if merged.selected.is_empty() {
            return Err(LayeredError::NotFound(krate.clone()));
        }
        let body = merged.render(&answers, &|u| rt.is_layered(u));
        let sources = merged
            .selected
            .iter()
            .filter_map(|s| match answers[s.upstream] {
                Answer::Has(f) => {
                    let l = &f.lines[s.line];
                    Some((
                        l.vers.clone(),
                        (rt.refs[s.upstream].name.clone(), l.cksum.clone()),
                    ))
                }
                _ => None,
            })
            .collect();
        // A body served as an upstream entry's has that entry's sha256, known when the entry
        // came from the tier (which checked it), computed once otherwise.
        let shared_with = entries
            .iter()
            .flatten()
            .find(|e| e.body.as_ptr() == body.as_ptr() && e.body.len() == body.len());
        let etag = shared_with.map_or_else(|| strong_etag(&body), |e| etag_of(e.sha256()));
        let body_shared = shared_with.is_some();
        let m = Arc::new(MergedBody {
            body,
            etag,
            sources,
            fingerprint,
            expires: merged.expires,
            body_shared,
        });
        self.remember_merge(krate.clone(), m.clone());
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use privreg_shared::policy::NoPins;
    use privreg_shared::store::Meta;

    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(std::path::Path::new("config.toml"), text).unwrap()
    }

    fn entry(rev: u64) -> Arc<Entry> {
        Arc::new(Entry {
            meta: Meta {
                present: false,
                etag: None,
                last_modified: None,
                fetched: 0,
            },
            body: Bytes::new(),
            file: None,
            rev,
            seen: Arc::default(),
            digest: std::sync::OnceLock::new(),
            disk: crate::upstream::DiskState::new(crate::upstream::OnDisk::Same),
        })
    }

    fn failed(upstream: &str) -> Fetched {
        Fetched {
            entry: None,
            error: Some(FetchError::Status {
                upstream: upstream.into(),
                what: "x".into(),
                status: 500,
            }),
        }
    }

    #[test]
    fn the_merge_is_kept_until_an_entry_the_configuration_or_the_advisories_change() {
        let key = fingerprint(1, 5, &[Some(entry(3)), None, Some(entry(8))]);
        assert_eq!(key, (1, 5, vec![3, 0, 8]));
        assert_eq!(
            key,
            fingerprint(1, 5, &[Some(entry(3)), None, Some(entry(8))])
        );
        for other in [
            fingerprint(2, 5, &[Some(entry(3)), None, Some(entry(8))]),
            fingerprint(1, 6, &[Some(entry(3)), None, Some(entry(8))]),
            fingerprint(1, 5, &[Some(entry(4)), None, Some(entry(8))]),
            fingerprint(1, 5, &[Some(entry(3)), Some(entry(1)), Some(entry(8))]),
            fingerprint(1, 5, &[Some(entry(3)), None]),
        ] {
            assert_ne!(key, other);
        }
    }

    #[test]
    fn the_merge_expires_when_a_decision_could_turn() {
        let body = |expires| MergedBody {
            body: Bytes::new(),
            etag: String::new(),
            sources: BTreeMap::new(),
            fingerprint: (1, 0, vec![2]),
            expires,
            body_shared: false,
        };
        let key = (1, 0, vec![2]);
        assert!(body(None).holds(&key, u64::MAX));
        assert!(body(Some(100)).holds(&key, 99));
        assert!(!body(Some(100)).holds(&key, 100));
        assert!(!body(None).holds(&(1, 1, vec![2]), 0));
    }

    #[test]
    fn the_etag_is_a_quoted_prefix_of_the_bodys_sha256() {
        let etag = strong_etag(b"");
        assert_eq!(etag, "\"e3b0c44298fc1c149afbf4c8996fb924\"");
        assert_ne!(strong_etag(b"a"), etag);
        // From an entry's digest (the tier's, or computed once): the same tag.
        let e = entry(1);
        assert_eq!(etag_of(e.sha256()), etag);
        assert_eq!(e.digest.get(), Some(&<[u8; 32]>::from(Sha256::digest(b""))));
    }

    #[test]
    fn only_the_unavailable_upstreams_errors_are_told() {
        let config = config(
            "[upstreams.a]\nindex = \"sparse+http://127.0.0.1:1/index/\"\n\
             [upstreams.b]\nindex = \"sparse+http://127.0.0.1:2/index/\"\n\
             [upstreams.c]\nindex = \"sparse+http://127.0.0.1:3/index/\"\n",
        );
        let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        let fetched: Vec<Fetched> = names.iter().map(|n| failed(n)).collect();
        let told = |unavailable: &[&str]| {
            let unavailable: Vec<String> = unavailable.iter().map(|&n| n.to_owned()).collect();
            unavailable_errors(&fetched, &config.upstreams, &unavailable)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let said = |n: &str| format!("upstream {n} answered 500 for x");
        assert_eq!(
            told(&[names[2], names[0]]),
            [said(names[0]), said(names[2])]
        );
        assert!(told(&[]).is_empty());
    }

    #[test]
    fn dependencies_on_a_configured_registry_are_layered() {
        let public = tame_index::index::sparse::CRATES_IO_HTTP_INDEX;
        let one = config("[upstreams.acme]\nindex = \"sparse+http://127.0.0.1:1/index/\"\n");
        let rt = Runtime::new(one, Box::new(NoPins), 4);
        assert_eq!(rt.generation, 4);
        assert_eq!(rt.refs.len(), 1);
        assert!(rt.is_layered("sparse+http://127.0.0.1:1/index/"));
        assert!(rt.is_layered("sparse+http://127.0.0.1:1/index"));
        assert!(!rt.is_layered("sparse+http://127.0.0.1:2/index/"));
        assert!(!rt.is_layered(public));
        // An upstream named `crates-io` stands for the public registry, whatever its URL.
        let mirror =
            config("[upstreams.crates-io]\nindex = \"sparse+http://127.0.0.1:1/index/\"\n");
        let rt = Runtime::new(mirror, Box::new(NoPins), 0);
        assert!(rt.is_layered(public));
        assert!(rt.is_layered(tame_index::index::git::CRATES_IO_INDEX));
    }
}
