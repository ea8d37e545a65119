//! The layered view: every upstream's answer for a crate, merged by the pure policy.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use privreg_shared::CrateName;
use privreg_shared::config::{Config, Upstream};
use privreg_shared::index::{CRATES_IO_KEY, registry_url_key};
use privreg_shared::policy::{self, Answer, MergeError, PinRules, UpstreamRef};
use semver::Version;
use sha2::{Digest, Sha256};

use crate::Daemon;
use crate::upstream::{Entry, FetchError, Fetched};

/// The configuration in force, with what is derived from it. Swapped whole on reload.
pub struct Runtime {
    pub config: Config,
    pub pins: Box<dyn PinRules + Send + Sync>,
    pub refs: Vec<UpstreamRef>,
    /// Registry URL keys that name a layered upstream (rule 10).
    pub layered_keys: HashSet<String>,
    /// Bumped on every reload, so merged bodies are recomputed.
    pub generation: u64,
}

impl Runtime {
    pub fn new(config: Config, pins: Box<dyn PinRules + Send + Sync>, generation: u64) -> Runtime {
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

    pub fn is_layered(&self, url: &str) -> bool {
        self.layered_keys.contains(&registry_url_key(url))
    }
}

/// A merged index file, ready to serve.
#[derive(Debug)]
pub struct MergedBody {
    pub body: Bytes,
    /// Quoted strong ETag of the body.
    pub etag: String,
    /// For each served version: the upstream (by name) and checksum, to route downloads.
    pub sources: BTreeMap<Version, (String, String)>,
    fingerprint: (u64, Vec<u64>),
}

/// Why the layered view has no body for a crate.
#[derive(Debug, thiserror::Error)]
pub enum LayeredError {
    #[error("no upstream serves {0}")]
    NotFound(CrateName),
    #[error("{krate} is unavailable: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unavailable {
        krate: CrateName,
        errors: Vec<FetchError>,
    },
}

/// The policy's view of what an upstream entry says.
pub fn answer(entry: &Option<Arc<Entry>>) -> Answer<'_> {
    match entry {
        Some(e) => match &e.file {
            Some(f) => Answer::Has(f),
            None => Answer::Absent,
        },
        None => Answer::Error,
    }
}

impl Daemon {
    /// Every upstream's answer for `krate` (fresh, revalidated, or the last good one), with the
    /// configuration they were asked under.
    pub async fn gather(&self, krate: &CrateName) -> (Arc<Runtime>, Vec<Fetched>) {
        let rt = self.runtime();
        let fetched = join_all(
            rt.config
                .upstreams
                .iter()
                .map(|u| self.upstreams.index(u, krate)),
        )
        .await;
        (rt, fetched)
    }

    /// The layered index file of `krate`.
    pub async fn layered(&self, krate: &CrateName) -> Result<Arc<MergedBody>, LayeredError> {
        let (rt, fetched) = self.gather(krate).await;
        let entries: Vec<Option<Arc<Entry>>> = fetched.iter().map(|f| f.entry.clone()).collect();
        let fingerprint = (
            rt.generation,
            entries
                .iter()
                .map(|e| e.as_ref().map_or(0, |e| e.rev))
                .collect::<Vec<_>>(),
        );
        if let Some(m) = self.merged.lock().expect("merged lock").get(krate)
            && m.fingerprint == fingerprint
        {
            return Ok(m.clone());
        }
        let answers: Vec<Answer<'_>> = entries.iter().map(answer).collect();
        let remembered = self.cache.served(krate);
        let merged = match policy::merge(krate, &rt.refs, &answers, rt.pins.as_ref(), &remembered) {
            Ok(m) => m,
            Err(MergeError::Unavailable { upstreams }) => {
                let errors = fetched
                    .iter()
                    .zip(&rt.config.upstreams)
                    .filter(|(_, u)| upstreams.iter().any(|n| u.name == *n))
                    .filter_map(|(f, _)| f.error.clone())
                    .collect();
                return Err(LayeredError::Unavailable {
                    krate: krate.clone(),
                    errors,
                });
            }
        };
        self.metrics.merged(krate, &rt.refs, &merged);
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
        if all != remembered
            && let Err(e) = self.cache.store_served(krate, &all)
        {
            tracing::warn!(error = %e, "cannot record served checksums");
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
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
        let m = Arc::new(MergedBody {
            body,
            etag,
            sources,
            fingerprint,
        });
        self.merged
            .lock()
            .expect("merged lock")
            .insert(krate.clone(), m.clone());
        Ok(m)
    }
}
