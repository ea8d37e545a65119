//! Evaluation: which stanza applies to a crate, an upstream and a version (DESIGN.md rules 2, 3).

use super::{
    AdvisoryItem, AdvisoryMatch, AgeLimit, PackagePattern, Packages, PatternMatcher, Preferences,
    Stanza, Tier,
};
use crate::name::CrateName;
use crate::policy::{PinMatch, PinRules, StanzaRef, UpstreamRef, VersionFacts};

/// A crate name in the forms patterns are matched against.
pub(super) struct NameForms<'a> {
    /// As written.
    written: &'a str,
    /// Lower-case, `-` for `_`: [`CrateName::key`].
    key: String,
    /// Lower-case, `_` for `-`.
    underscores: String,
}

impl<'a> NameForms<'a> {
    pub(super) fn new(krate: &'a CrateName) -> Self {
        let key = krate.key();
        let underscores = key.replace('-', "_");
        NameForms {
            written: krate.as_str(),
            key,
            underscores,
        }
    }
}

impl PackagePattern {
    /// Does this pattern match `krate` (case-insensitive, `-` and `_` alike)?
    pub fn matches(&self, krate: &CrateName) -> bool {
        self.matches_forms(&NameForms::new(krate))
    }

    fn matches_forms(&self, name: &NameForms<'_>) -> bool {
        match &self.matcher {
            PatternMatcher::Exact(key) => *key == name.key,
            PatternMatcher::Glob(glob) => glob.is_match(&name.key),
            PatternMatcher::Regex(re) => {
                re.is_match(name.written)
                    || re.is_match(&name.key)
                    || re.is_match(&name.underscores)
            }
        }
    }
}

impl Packages {
    /// Does this `Package:` field match `krate`?
    pub fn matches(&self, krate: &CrateName) -> bool {
        self.matches_forms(&NameForms::new(krate))
    }

    fn matches_forms(&self, name: &NameForms<'_>) -> bool {
        match self {
            Packages::Any => true,
            Packages::Named(patterns) => patterns.iter().any(|p| p.matches_forms(name)),
        }
    }
}

impl AgeLimit {
    /// Does the version's age satisfy the limit? (Notes in `v` when that changes.)
    pub fn matches(&self, v: &VersionFacts<'_>) -> bool {
        v.younger_than(self.limit) == self.younger
    }
}

impl AdvisoryMatch {
    /// Is the version affected by a non-withdrawn advisory that an item names?
    pub fn matches(&self, v: &VersionFacts<'_>) -> bool {
        v.advisories().iter().filter(|h| !h.withdrawn).any(|h| {
            self.items.iter().any(|item| match item {
                AdvisoryItem::Any => true,
                AdvisoryItem::Kind(k) => *k == h.kind,
                AdvisoryItem::Id(id) => h.id.eq_ignore_ascii_case(id),
            })
        })
    }
}

impl Stanza {
    /// Does this stanza apply to `krate` from `upstream`? With `version` `None` (a claim), a
    /// stanza with a version-specific selector (`version`, `age`, `advisory`) never applies.
    pub fn applies(
        &self,
        krate: &CrateName,
        upstream: &UpstreamRef,
        version: Option<&VersionFacts<'_>>,
    ) -> bool {
        self.applies_forms(&NameForms::new(krate), upstream, version)
    }

    fn applies_forms(
        &self,
        name: &NameForms<'_>,
        upstream: &UpstreamRef,
        version: Option<&VersionFacts<'_>>,
    ) -> bool {
        let sel = &self.selectors;
        let by_version = || match version {
            None => !sel.is_version_specific(),
            // Cheapest first: the advisory lookup only when everything else holds.
            Some(v) => {
                sel.version.as_ref().is_none_or(|r| r.matches(v.version()))
                    && sel.age.as_ref().is_none_or(|a| a.matches(v))
                    && sel.advisory.as_ref().is_none_or(|a| a.matches(v))
            }
        };
        self.packages.matches_forms(name)
            && sel
                .registry
                .as_ref()
                .is_none_or(|g| g.is_match(&upstream.name))
            && sel
                .origin
                .as_ref()
                .is_none_or(|g| g.is_match(&upstream.host))
            && by_version()
    }
}

impl Preferences {
    /// The first stanza that applies, searching `tiers` in order and, within a tier, files and
    /// stanzas in order.
    fn first_match(
        &self,
        tiers: &[Tier],
        krate: &CrateName,
        upstream: &UpstreamRef,
        version: Option<&VersionFacts<'_>>,
    ) -> Option<PinMatch> {
        let name = NameForms::new(krate);
        tiers.iter().find_map(|tier| {
            self.stanzas()
                .filter(|(_, s)| s.tier() == *tier)
                .find(|(_, s)| s.applies_forms(&name, upstream, version))
                .map(|(file, s)| PinMatch {
                    priority: s.priority,
                    stanza: StanzaRef {
                        file: file.name.clone(),
                        line: s.line,
                    },
                })
        })
    }
}

impl PinRules for Preferences {
    /// Rule 2: the first matching stanza without a version-specific selector, named stanzas
    /// before `*`.
    fn claim(&self, krate: &CrateName, upstream: &UpstreamRef) -> Option<PinMatch> {
        self.first_match(&[Tier::Named, Tier::General], krate, upstream, None)
    }

    /// Rule 3: named-with-version, then named-without-version, then `*` stanzas.
    fn prio(
        &self,
        krate: &CrateName,
        upstream: &UpstreamRef,
        version: &VersionFacts<'_>,
    ) -> Option<PinMatch> {
        self.first_match(
            &[Tier::NamedWithVersion, Tier::Named, Tier::General],
            krate,
            upstream,
            Some(version),
        )
    }
}
