//! `/-/status` and `/-/policy/<crate>`: what the daemon is doing and why a version is (not) served,
//! as JSON for `privreg status` and `privreg policy`.

use std::sync::Arc;

use privreg_shared::CrateName;
use privreg_shared::policy::{self, Answer, Dated, State};
use privreg_shared::protocol::{
    CacheWriteError, Conflict, MemoryStatus, Merged, Policy, PolicyOutcome, PolicyUpstream, Status,
    UpstreamStatus, VersionDecision,
};
use privreg_shared::store::now_secs;

use crate::daemon::Daemon;
use crate::layered::{answer, first_seen, merge_at};
use crate::upstream::Entry;

impl Daemon {
    pub(crate) fn status(&self) -> Status {
        let rt = self.runtime();
        let health = self.upstreams().health();
        let upstreams = rt
            .config
            .upstreams
            .iter()
            .map(|u| {
                let h = health.get(u.name.as_str()).cloned().unwrap_or_default();
                UpstreamStatus {
                    name: u.name.to_string(),
                    index: u.index.clone(),
                    priority: u.priority,
                    ttl_secs: u.ttl.as_secs(),
                    last_ok: h.last_ok,
                    last_error: h.last_error,
                    last_error_at: h.last_error_at,
                }
            })
            .collect();
        let (cache_hits, cache_misses) = self.upstreams().hits_and_misses();
        Status {
            url: format!("{}/index/", self.base_url()),
            pid: std::process::id(),
            uptime_secs: self.started().elapsed().map_or(0, |d| d.as_secs()),
            config_dir: self.config_dir().to_owned(),
            cache_dir: self.cache_dir().to_owned(),
            upstreams,
            config_error: self.load_error(),
            cache_write_error: self
                .cache()
                .write_error()
                .map(|(at, error)| CacheWriteError { at, error }),
            upstream_requests: self.upstreams().request_count(),
            cache_hits,
            cache_misses,
            revalidations: self.upstreams().revalidation_count(),
            prefetches: self.prefetch_count(),
            h2c_upgrades: self.h2c_upgrade_count(),
            shared_tier: self.upstreams().shared().status(),
            memory: self.memory_status(),
            advisories: self.advisory_state().status(&rt.config.advisories),
            disk: self.disk_status(),
        }
    }

    /// The in-memory index cache now; also sets its size for the next read of `/metrics`.
    pub(crate) fn memory_status(&self) -> MemoryStatus {
        let usage = self.upstreams().memory().usage();
        self.metrics()
            .memory_usage(usage.bytes, usage.budget, usage.entries);
        let counts = self.metrics().memory_counts();
        MemoryStatus {
            bytes: usage.bytes,
            budget_bytes: usage.budget,
            entries: usage.entries,
            hits: counts.hits,
            misses: counts.misses,
            disk_reads: counts.disk_reads,
            evictions: counts.evictions,
        }
    }

    /// Like `apt-cache policy`: every version from every upstream and what the policy made of it.
    pub(crate) async fn policy(&self, krate: &CrateName) -> Policy {
        let (rt, fetched) = self.gather(krate).await;
        let entries: Vec<Option<Arc<Entry>>> = fetched.iter().map(|f| f.entry.clone()).collect();
        let answers: Vec<Answer<'_>> = entries.iter().map(Option::as_ref).map(answer).collect();
        let remembered = self.cache().served(krate);
        let (_, advisories) = self.advisories();
        let result = merge_at(
            &rt,
            krate,
            &entries,
            &answers,
            &remembered,
            &*advisories,
            now_secs(),
        );
        let first_seen = first_seen(&entries);
        let upstreams: Vec<PolicyUpstream> = rt
            .refs
            .iter()
            .zip(&fetched)
            .map(|(u, f)| {
                let claim = rt.pins.claim(krate, u);
                PolicyUpstream {
                    name: u.name.as_str().to_owned(),
                    priority: u.priority,
                    claim: claim
                        .as_ref()
                        .map_or(u.priority.to_string(), |m| m.priority.to_string()),
                    claim_stanza: claim.map(|m| m.stanza.to_string()),
                    answer: match answer(f.entry.as_ref()) {
                        Answer::Has(file) => format!("has {} versions", file.lines.len()),
                        Answer::Absent => "absent".to_owned(),
                        Answer::Error => "error".to_owned(),
                    },
                    error: f.error.as_ref().map(ToString::to_string),
                }
            })
            .collect();
        let merged = match result {
            Ok(m) => m,
            Err(e) => {
                return Policy {
                    krate: krate.as_str().to_owned(),
                    upstreams,
                    outcome: PolicyOutcome::Unavailable(e.to_string()),
                };
            }
        };
        let line = |d: &policy::Decision| match answers[d.upstream] {
            Answer::Has(f) => f.version(&d.version),
            _ => None,
        };
        let yanked_upstream = |d: &policy::Decision| line(d).is_some_and(|l| l.yanked);
        let dated = |d: &policy::Decision| {
            line(d).map_or(Dated::Old, |l| Dated::of(l, first_seen[d.upstream]))
        };
        let mut decisions = merged.decisions.clone();
        decisions.sort_by(|a, b| b.version.cmp(&a.version).then(a.upstream.cmp(&b.upstream)));
        let versions = decisions
            .iter()
            .map(|d| VersionDecision {
                version: d.version.to_string(),
                upstream: rt.refs[d.upstream].name.clone(),
                priority: if d.state == State::Blocked {
                    "never".to_owned()
                } else {
                    d.priority.to_string()
                },
                state: (&d.state).into(),
                stanza: d.stanza.as_ref().map(ToString::to_string),
                yanked: yanked_upstream(d) || d.state == State::YankedByPin,
                winner: match &d.state {
                    State::Duplicate { winner } => Some(rt.refs[*winner].name.clone()),
                    _ => None,
                },
                published: dated(d).time(),
                dated: dated(d).into(),
                advisories: advisories
                    .affected(krate, &d.version)
                    .iter()
                    .filter(|h| !h.withdrawn)
                    .map(Into::into)
                    .collect(),
            })
            .collect();
        // Hints: a shadowed upstream with versions newer than anything served.
        let newest_served = merged
            .decisions
            .iter()
            .filter(|d| matches!(d.state, State::Served | State::YankedByPin))
            .map(|d| &d.version)
            .max();
        let top = merged.owners.first().and_then(|o| merged.claims[*o]);
        let mut hints = Vec::new();
        for (i, u) in rt.refs.iter().enumerate() {
            let newer: Vec<String> = merged
                .decisions
                .iter()
                .filter(|d| d.upstream == i && d.state == State::Shadowed)
                .filter(|d| newest_served.is_none_or(|n| &d.version > n))
                .map(|d| d.version.to_string())
                .collect();
            if let (false, Some(top)) = (newer.is_empty(), top) {
                hints.push(format!(
                    "{} has newer versions ({}) that are shadowed; to admit them add to the pin file:\nPackage: {}\nPin: registry {}\nPin-Priority: {}",
                    u.name,
                    newer.join(", "),
                    krate,
                    u.name,
                    top
                ));
            }
        }
        Policy {
            krate: krate.as_str().to_owned(),
            upstreams,
            outcome: PolicyOutcome::Merged(Merged {
                owners: merged
                    .owners
                    .iter()
                    .map(|o| rt.refs[*o].name.clone())
                    .collect(),
                versions,
                conflicts: merged
                    .conflicts
                    .iter()
                    .map(|c| Conflict {
                        version: c.version.to_string(),
                        winner: rt.refs[c.winner].name.clone(),
                        loser: rt.refs[c.loser].name.clone(),
                    })
                    .collect(),
                hints,
                config_error: self.load_error(),
            }),
        }
    }
}
