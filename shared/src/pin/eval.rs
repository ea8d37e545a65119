//! Evaluation: which stanza applies to a crate, an upstream and a version (DESIGN.md rules 2, 3).

use semver::Version;

use super::{PackagePattern, Packages, PatternMatcher, Preferences, Stanza, Tier};
use crate::name::CrateName;
use crate::policy::{PinMatch, PinRules, StanzaRef, UpstreamRef};

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

impl Stanza {
    /// Does this stanza apply to `krate` from `upstream`? With `version` `None` (a claim), a
    /// stanza with a `version` selector never applies.
    pub fn applies(
        &self,
        krate: &CrateName,
        upstream: &UpstreamRef,
        version: Option<&Version>,
    ) -> bool {
        self.applies_forms(&NameForms::new(krate), upstream, version)
    }

    fn applies_forms(
        &self,
        name: &NameForms<'_>,
        upstream: &UpstreamRef,
        version: Option<&Version>,
    ) -> bool {
        let sel = &self.selectors;
        self.packages.matches_forms(name)
            && sel
                .registry
                .as_ref()
                .is_none_or(|g| g.is_match(&upstream.name))
            && sel
                .origin
                .as_ref()
                .is_none_or(|g| g.is_match(&upstream.host))
            && match (&sel.version, version) {
                (None, _) => true,
                (Some(req), Some(v)) => req.matches(v),
                (Some(_), None) => false,
            }
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
        version: Option<&Version>,
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
    /// Rule 2: the first matching stanza without a `version` selector, named stanzas before `*`.
    fn claim(&self, krate: &CrateName, upstream: &UpstreamRef) -> Option<PinMatch> {
        self.first_match(&[Tier::Named, Tier::General], krate, upstream, None)
    }

    /// Rule 3: named-with-version, then named-without-version, then `*` stanzas.
    fn prio(
        &self,
        krate: &CrateName,
        upstream: &UpstreamRef,
        version: &Version,
    ) -> Option<PinMatch> {
        self.first_match(
            &[Tier::NamedWithVersion, Tier::Named, Tier::General],
            krate,
            upstream,
            Some(version),
        )
    }
}
