//! The layering policy: which upstream's versions of a crate are served (DESIGN.md, "Pin file:
//! meaning"). Pure: answers and pins in, a decision per version out. No I/O.

use std::cell::{Cell, OnceCell};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use semver::Version;

use crate::advisory::{AdvisoryHit, AdvisorySource, NoAdvisories};
use crate::index::{IndexFile, IndexLine};
use crate::name::CrateName;
use crate::store::FirstSeen;

/// An upstream as the policy sees it. Its position in the slice given to [`merge`] is its
/// declaration order (earlier wins ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRef {
    /// The upstream's name from `config.toml` (for `registry` pins and messages).
    pub name: String,
    /// Host of the upstream's index URL (for `origin` pins).
    pub host: String,
    /// The configured priority.
    pub priority: i32,
}

/// A pin priority: a non-zero integer, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPriority {
    /// `never`: removes what the stanza matches.
    Never,
    /// A non-zero integer; like apt, ≥ 1000 is a hold and a negative value on an owner's version
    /// yanks it.
    Value(i32),
}

impl fmt::Display for PinPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinPriority::Never => f.write_str("never"),
            PinPriority::Value(v) => write!(f, "{v}"),
        }
    }
}

/// Where a pin stanza starts: file name (relative to the config dir) and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StanzaRef {
    /// The file's path relative to the config dir, e.g. `preferences.d/10-acme.pref`.
    pub file: String,
    /// 1-based line of the stanza's first non-comment line.
    pub line: usize,
}

impl fmt::Display for StanzaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A matching pin stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMatch {
    /// The stanza's `Pin-Priority:`.
    pub priority: PinPriority,
    /// Where the stanza is.
    pub stanza: StanzaRef,
}

/// When a version was published, as far as privreg knows (issue 17): the index line's `pubtime`,
/// else the moment privreg first saw the version appear in a revalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dated {
    /// The index line's `pubtime`, in seconds since the epoch.
    Pubtime(u64),
    /// No `pubtime`: when privreg first saw the version, in seconds since the epoch.
    FirstSeen(u64),
    /// No `pubtime`, and present the first time privreg fetched the index file: old.
    Old,
}

impl Dated {
    /// How `line` is dated, given when privreg first saw the versions of its file (`None`: no
    /// record, every version without `pubtime` is old).
    pub fn of(line: &IndexLine, seen: Option<&FirstSeen>) -> Dated {
        match (line.pubtime, seen.and_then(|s| s.get(&line.vers))) {
            (Some(t), _) => Dated::Pubtime(t),
            (None, Some(t)) => Dated::FirstSeen(t),
            (None, None) => Dated::Old,
        }
    }

    /// The moment, in seconds since the epoch; `None` for [`Dated::Old`].
    pub fn time(self) -> Option<u64> {
        match self {
            Dated::Pubtime(t) | Dated::FirstSeen(t) => Some(t),
            Dated::Old => None,
        }
    }
}

/// What the policy knows besides the index files and the pins: the time of the decision, when
/// each version was first seen, and the advisory database in force. Pure data: the caller reads
/// the clock and the cache, the policy never does.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    /// Now, in seconds since the epoch: `age` selectors measure against it.
    pub now: u64,
    /// For each upstream, in the order given to [`merge`], when privreg first saw its versions
    /// that have no `pubtime` (a missing entry: none recorded).
    pub first_seen: &'a [Option<&'a FirstSeen>],
    /// The advisory database in force.
    pub advisories: &'a dyn AdvisorySource,
}

impl Facts<'static> {
    /// No dates recorded and no advisories, at `now`.
    pub fn at(now: u64) -> Facts<'static> {
        Facts {
            now,
            first_seen: &[],
            advisories: &NoAdvisories,
        }
    }
}

impl<'a> Facts<'a> {
    /// The facts about version `line` of `krate` from upstream `upstream` (an index into the
    /// upstreams given to [`merge`]).
    pub fn version(
        &self,
        krate: &'a CrateName,
        upstream: usize,
        line: &'a IndexLine,
    ) -> VersionFacts<'a> {
        let seen = self.first_seen.get(upstream).copied().flatten();
        VersionFacts {
            version: &line.vers,
            dated: Dated::of(line, seen),
            now: self.now,
            krate: Some(krate),
            source: self.advisories,
            hits: OnceCell::new(),
            flips: Cell::new(None),
        }
    }
}

/// One version as the pins see it: its number, when it was published, and (looked up only when
/// a pin asks) the advisories that affect it. Records the earliest moment at which an `age`
/// selector asked about it would answer differently ([`VersionFacts::flips_at`]).
pub struct VersionFacts<'a> {
    version: &'a Version,
    dated: Dated,
    now: u64,
    krate: Option<&'a CrateName>,
    source: &'a dyn AdvisorySource,
    hits: OnceCell<Vec<AdvisoryHit>>,
    flips: Cell<Option<u64>>,
}

impl fmt::Debug for VersionFacts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionFacts")
            .field("version", &self.version)
            .field("dated", &self.dated)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl<'a> VersionFacts<'a> {
    /// A version known only by its number: old, and affected by no advisory.
    pub fn bare(version: &'a Version) -> VersionFacts<'a> {
        VersionFacts::at(version, Dated::Old, 0)
    }

    /// A version dated `dated`, seen at `now`, affected by no advisory.
    pub fn at(version: &'a Version, dated: Dated, now: u64) -> VersionFacts<'a> {
        VersionFacts {
            version,
            dated,
            now,
            krate: None,
            source: &NoAdvisories,
            hits: OnceCell::new(),
            flips: Cell::new(None),
        }
    }

    /// The same version, with `krate`'s advisories from `source`.
    #[must_use]
    pub fn with_advisories(
        mut self,
        krate: &'a CrateName,
        source: &'a dyn AdvisorySource,
    ) -> VersionFacts<'a> {
        self.krate = Some(krate);
        self.source = source;
        self.hits = OnceCell::new();
        self
    }

    /// The version.
    pub fn version(&self) -> &'a Version {
        self.version
    }

    /// When it was published, as far as privreg knows.
    pub fn dated(&self) -> Dated {
        self.dated
    }

    /// Whether it was published less than `limit` before now. An [`Dated::Old`] version never
    /// is. Notes when the answer turns (it only ever turns from yes to no).
    pub fn younger_than(&self, limit: Duration) -> bool {
        let Some(t) = self.dated.time() else {
            return false;
        };
        let until = t.saturating_add(limit.as_secs());
        let young = self.now < until;
        if young {
            self.flips
                .set(Some(self.flips.get().map_or(until, |f| f.min(until))));
        }
        young
    }

    /// Every advisory that affects the version (withdrawn ones included, marked so); looked up
    /// once, on first use.
    pub fn advisories(&self) -> &[AdvisoryHit] {
        self.hits.get_or_init(|| match self.krate {
            Some(k) => self.source.affected(k, self.version),
            None => Vec::new(),
        })
    }

    /// The earliest moment (seconds since the epoch) at which an `age` selector asked about this
    /// version so far would answer differently; `None` when none would.
    pub fn flips_at(&self) -> Option<u64> {
        self.flips.get()
    }
}

/// The pin rules, as the policy queries them (rules 2 and 3 of DESIGN.md).
pub trait PinRules {
    /// The first matching stanza without a version-specific selector (`version`, `age`,
    /// `advisory`), named stanzas before `*` ones.
    fn claim(&self, krate: &CrateName, upstream: &UpstreamRef) -> Option<PinMatch>;
    /// The first matching stanza: named-with-version-specific-selectors,
    /// named-without, then `*` stanzas.
    fn prio(
        &self,
        krate: &CrateName,
        upstream: &UpstreamRef,
        version: &VersionFacts<'_>,
    ) -> Option<PinMatch>;
}

/// No pin file: every upstream's claim is its configured priority.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPins;

impl PinRules for NoPins {
    fn claim(&self, _: &CrateName, _: &UpstreamRef) -> Option<PinMatch> {
        None
    }
    fn prio(&self, _: &CrateName, _: &UpstreamRef, _: &VersionFacts<'_>) -> Option<PinMatch> {
        None
    }
}

/// What one upstream said about a crate (rule 1). An upstream that failed but has a cached answer
/// is given to the policy as that last good answer; `Error` means nothing good is known.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// The upstream has the crate (200); its index file, possibly the cached last good one.
    Has(&'a IndexFile),
    /// The upstream does not have the crate (404).
    Absent,
    /// The upstream failed (5xx, timeout, 401/403, unparsable body) and nothing good is cached.
    Error,
}

/// What happened to one version from one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Listed.
    Served,
    /// Listed with `yanked: true` because a negative pin applies (rule 7).
    YankedByPin,
    /// Hidden: another upstream owns the name and this version's priority is below the owner's.
    Shadowed,
    /// Removed by a `never` pin.
    Blocked,
    /// Hidden by a hold (≥ 1000) on other versions.
    NotHeld,
    /// The same version is served from the upstream with this index.
    Duplicate {
        /// Index of the serving upstream in the `upstreams` given to [`merge`].
        winner: usize,
    },
    /// Hidden: a different checksum for this version was served before.
    ChecksumChanged {
        /// The checksum (lower-case hex sha256) served before.
        remembered: String,
    },
}

/// The decision for one version from one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into the `upstreams` given to [`merge`].
    pub upstream: usize,
    /// The version.
    pub version: Version,
    /// Its effective priority (`prio` of rule 3); 0 when a `never` pin blocks it.
    pub priority: i32,
    /// The stanza that set the priority, if a pin did.
    pub stanza: Option<StanzaRef>,
    /// What happened to it.
    pub state: State,
}

/// Two upstreams served different bytes for the same version (rule 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The version both served.
    pub version: Version,
    /// Index of the upstream whose line is served.
    pub winner: usize,
    /// Index of the upstream whose different line is hidden.
    pub loser: usize,
}

/// A served version: which upstream's line, and whether a pin yanks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Index into the `upstreams` given to [`merge`].
    pub upstream: usize,
    /// Index into that upstream's [`IndexFile::lines`].
    pub line: usize,
    /// Serve the line with `yanked: true` (a negative pin on an owner's version, rule 7).
    pub force_yanked: bool,
}

/// The merged view of one crate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// In upstream declaration order, then each upstream's own line order.
    pub selected: Vec<Selected>,
    /// One per version of each upstream that has the crate, in the same order as `selected`.
    pub decisions: Vec<Decision>,
    /// Versions served with different checksums by different upstreams (rule 8).
    pub conflicts: Vec<Conflict>,
    /// Upstreams with the top claim.
    pub owners: Vec<usize>,
    /// The claim of each upstream for this crate (`None` = removed by `never`).
    pub claims: Vec<Option<i32>>,
    /// The earliest moment (seconds since the epoch) at which a decision could change with
    /// nothing else changing (a version growing out of an `age` selector); `None`: never.
    pub expires: Option<u64>,
}

/// Why no merged view can be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// Rule 9: an upstream that could own the crate failed and nothing good is cached.
    #[error("upstream {} failed and nothing is cached for this crate", .upstreams.join(", "))]
    Unavailable {
        /// The names of the failed upstreams, in declaration order.
        upstreams: Vec<String>,
    },
}

fn value(p: PinPriority) -> Option<i32> {
    match p {
        PinPriority::Never => None,
        PinPriority::Value(v) => Some(v),
    }
}

/// Rule 2: `None` when a `never` stanza removes the upstream for this crate.
fn claim_of(pin: Option<&PinMatch>, up: &UpstreamRef) -> Option<i32> {
    match pin {
        Some(m) => value(m.priority),
        None => Some(up.priority),
    }
}

/// A version's candidate in [`merge`]: its priority, upstream, line and decision.
struct Candidate {
    prio: i32,
    upstream: usize,
    line: usize,
    decision: usize,
}

/// The earlier of two optional moments.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Merges the upstreams' answers for `krate`. `answers[i]` belongs to `upstreams[i]`.
/// `remembered` holds the checksum served earlier for each version (rule 8); `facts`, what is
/// known of each version besides its line (its age, its advisories).
pub fn merge(
    krate: &CrateName,
    upstreams: &[UpstreamRef],
    answers: &[Answer<'_>],
    pins: &dyn PinRules,
    remembered: &BTreeMap<Version, String>,
    facts: &Facts<'_>,
) -> Result<Merged, MergeError> {
    assert_eq!(upstreams.len(), answers.len(), "one answer per upstream");
    let claim_pins: Vec<Option<PinMatch>> =
        upstreams.iter().map(|u| pins.claim(krate, u)).collect();
    let claims: Vec<Option<i32>> = upstreams
        .iter()
        .zip(&claim_pins)
        .map(|(u, p)| claim_of(p.as_ref(), u))
        .collect();

    // Rule 5: the top positive claim among upstreams that have the crate.
    let top = answers
        .iter()
        .zip(&claims)
        .filter(|(a, _)| matches!(a, Answer::Has(_)))
        .filter_map(|(_, c)| *c)
        .filter(|c| *c > 0)
        .max();

    // Rule 9: fail closed.
    let failed: Vec<String> = answers
        .iter()
        .zip(&claims)
        .zip(upstreams)
        .filter(|((a, c), _)| {
            // An upstream whose claim is not positive could never own the crate.
            matches!(a, Answer::Error) && c.is_some_and(|c| c > 0 && top.is_none_or(|t| c >= t))
        })
        .map(|(_, u)| u.name.clone())
        .collect();
    if !failed.is_empty() {
        return Err(MergeError::Unavailable { upstreams: failed });
    }

    let mut merged = Merged {
        owners: (0..upstreams.len())
            .filter(|&i| matches!(answers[i], Answer::Has(_)) && top.is_some() && claims[i] == top)
            .collect(),
        ..Merged::default()
    };

    let mut by_version: BTreeMap<Version, Vec<Candidate>> = BTreeMap::new();
    for (u, answer) in answers.iter().enumerate() {
        let Answer::Has(file) = answer else { continue };
        let Some(claim) = claims[u] else {
            // Removed by `never` for this crate: every version is blocked by that stanza.
            for line in &file.lines {
                merged.decisions.push(Decision {
                    upstream: u,
                    version: line.vers.clone(),
                    priority: 0,
                    stanza: claim_pins[u].as_ref().map(|m| m.stanza.clone()),
                    state: State::Blocked,
                });
            }
            continue;
        };
        let owner = merged.owners.contains(&u);
        for (l, line) in file.lines.iter().enumerate() {
            let known = facts.version(krate, u, line);
            let pin = pins.prio(krate, &upstreams[u], &known);
            merged.expires = earliest(merged.expires, known.flips_at());
            let (prio, stanza) = match &pin {
                Some(m) => (value(m.priority), Some(m.stanza.clone())),
                None => (Some(claim), None),
            };
            let (priority, state) = match prio {
                None => (0, State::Blocked),
                Some(p) if owner && p < 0 => (p, State::YankedByPin),
                Some(p) if owner => (p, State::Served),
                Some(p) if top.is_some_and(|t| p >= t) => (p, State::Served),
                Some(p) => (p, State::Shadowed),
            };
            let listed = matches!(state, State::Served | State::YankedByPin);
            merged.decisions.push(Decision {
                upstream: u,
                version: line.vers.clone(),
                priority,
                stanza,
                state,
            });
            if listed {
                by_version
                    .entry(line.vers.clone())
                    .or_default()
                    .push(Candidate {
                        prio: priority,
                        upstream: u,
                        line: l,
                        decision: merged.decisions.len() - 1,
                    });
            }
        }
    }

    // Rule 6: a hold lists only the held versions.
    let held = by_version.values().flatten().any(|c| c.prio >= 1000);

    for (version, mut candidates) in by_version {
        // Rule 8: highest priority, then the upstream declared first.
        candidates.sort_by_key(|c| (std::cmp::Reverse(c.prio), c.upstream));
        let cksum = |c: &Candidate| match answers[c.upstream] {
            Answer::Has(f) => f.lines[c.line].cksum.as_str(),
            _ => unreachable!("candidates come from answers that have the crate"),
        };
        let winner = match remembered.get(&version) {
            Some(old) => candidates.iter().position(|c| cksum(c) == old),
            None => Some(0),
        };
        let Some(w) = winner else {
            let old = remembered[&version].clone();
            for c in &candidates {
                merged.decisions[c.decision].state = State::ChecksumChanged {
                    remembered: old.clone(),
                };
            }
            continue;
        };
        let win = &candidates[w];
        for (i, c) in candidates.iter().enumerate() {
            if i == w {
                continue;
            }
            merged.decisions[c.decision].state = State::Duplicate {
                winner: win.upstream,
            };
            if cksum(c) != cksum(win) {
                merged.conflicts.push(Conflict {
                    version: version.clone(),
                    winner: win.upstream,
                    loser: c.upstream,
                });
            }
        }
        if held && win.prio < 1000 {
            merged.decisions[win.decision].state = State::NotHeld;
            continue;
        }
        let force_yanked = merged.decisions[win.decision].state == State::YankedByPin;
        merged.selected.push(Selected {
            upstream: win.upstream,
            line: win.line,
            force_yanked,
        });
    }
    // In each upstream's own order: a view that is one upstream's file unchanged is then served
    // as that file's bytes (cargo does not mind the order of lines).
    merged.selected.sort_by_key(|s| (s.upstream, s.line));
    merged.claims = claims;
    Ok(merged)
}

/// One upstream's own view of a crate (the per-upstream endpoint): its lines unchanged, except
/// that `never` pins remove (the whole crate, or versions) and negative pins yank. Returns the
/// served lines as (line index, yanked by pin). `facts.first_seen[0]` dates `file`'s versions.
pub fn single(
    krate: &CrateName,
    up: &UpstreamRef,
    file: &IndexFile,
    pins: &dyn PinRules,
    facts: &Facts<'_>,
) -> Vec<(usize, bool)> {
    if pins
        .claim(krate, up)
        .is_some_and(|m| m.priority == PinPriority::Never)
    {
        return Vec::new();
    }
    file.lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            match pins
                .prio(krate, up, &facts.version(krate, 0, line))
                .map(|m| m.priority)
            {
                Some(PinPriority::Never) => None,
                Some(PinPriority::Value(p)) if p < 0 => Some((i, true)),
                _ => Some((i, false)),
            }
        })
        .collect()
}

impl Merged {
    /// The checksum served for each listed version, to remember for rule 8.
    pub fn checksums(&self, answers: &[Answer<'_>]) -> BTreeMap<Version, String> {
        self.selected
            .iter()
            .filter_map(|s| match answers[s.upstream] {
                Answer::Has(f) => {
                    let l = &f.lines[s.line];
                    Some((l.vers.clone(), l.cksum.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The merged index file body: one line per version, `\n`-terminated. When that is exactly
    /// one upstream's file unchanged, it is that file's body itself (no copy).
    pub fn render(
        &self,
        answers: &[Answer<'_>],
        is_layered: &dyn Fn(&str) -> bool,
    ) -> bytes::Bytes {
        if let Some(first) = self.selected.first()
            && let Answer::Has(f) = answers[first.upstream]
            && f.canonical
            && self.selected.len() == f.lines.len()
            && self.selected.iter().enumerate().all(|(i, s)| {
                s.upstream == first.upstream
                    && s.line == i
                    && !f.lines[i].needs_rewrite(s.force_yanked, is_layered)
            })
        {
            return f.body.clone();
        }
        let mut out = String::new();
        for s in &self.selected {
            if let Answer::Has(f) = answers[s.upstream] {
                out.push_str(&f.lines[s.line].render(s.force_yanked, is_layered));
                out.push('\n');
            }
        }
        bytes::Bytes::from(out)
    }
}

#[cfg(test)]
mod tests;
