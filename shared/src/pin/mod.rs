//! The pin file (DESIGN.md, "Pin file: format" and "Pin file: meaning"): apt_preferences(5)-style
//! stanzas in `preferences`, then `preferences.d/*.pref` in lexical order.
//!
//! - [`Preferences::load`] is the only function here that touches the file system;
//!   [`Preferences::parse_files`] and [`PinFile::parse`] are pure.
//! - `impl PinRules for Preferences` (in `eval`) answers the policy's `claim` and `prio` queries.
//! - [`add_stanza`] and [`remove_stanza`] edit a file's text without touching any other byte.
//!
//! Choices where DESIGN.md is silent:
//!
//! - **Lines.** A line is blank when it holds only whitespace; blank lines separate stanzas. A line
//!   whose first non-blank character is `#` is a comment, anywhere, also inside a stanza. A line that
//!   starts with a space or tab (and is not blank or a comment) continues the previous field, as in
//!   deb822; its trimmed text is appended after one space. `\r\n` line ends and a leading byte-order
//!   mark are accepted.
//! - **Stanzas.** A stanza is a paragraph (a run of non-blank lines) that holds at least one
//!   non-comment line; a paragraph of comments only is not a stanza. Comments directly above, inside
//!   or directly below a stanza (no blank line between) belong to it: [`remove_stanza`] removes
//!   them with it. The stanza's *position* ([`Stanza::line`], and so `file:line` in
//!   [`StanzaRef`]) is its first non-comment line, the line a reader looks for.
//! - **Fields.** `Explanation` may repeat; `Package`, `Pin` and `Pin-Priority` must each appear
//!   exactly once. Errors about a missing field point at the stanza's first field line.
//! - **Package patterns.** A pattern that starts with `/` is a regex and must end with `/`; one that
//!   holds `*`, `?`, `[` or `{` is a glob (globset syntax, no backslash escapes: names never hold
//!   the characters one would escape); anything else must be a valid crate name. A lone `*` cannot
//!   be combined with other patterns. Names and globs are compared with `-` and `_` made alike (an
//!   `_` in a glob, even inside `[…]`, matches either) and without regard to case. Regexes are
//!   unanchored (write `^…$` to anchor, as in apt), case-insensitive, and match when they match the
//!   name as written, with every `_` made `-`, or with every `-` made `_`; so `/^acme-/` and
//!   `/^acme_/` both match `acme_core` and `ACME-Core` (a regex mixing `-` and `_` only matches
//!   names written that way).
//! - **Selectors.** `registry` and `origin` take one glob each, compared without regard to case.
//!   `version` uses cargo's requirement semantics (`semver::VersionReq`), so a pre-release only
//!   matches a requirement that names a pre-release of the same version.
//! - **`age <DURATION`** (issue 17) matches versions published less than DURATION (humantime:
//!   `3d`, `72h`, `2w`, `1h 30m`; at least one second) before now; `age >DURATION` is its
//!   complement (published at least that long ago). The age comes from the index line's
//!   `pubtime`, else from when privreg first saw the version ([`crate::policy::Dated`]); a
//!   version present at privreg's first fetch of its file is old: never `<`, always `>`.
//! - **`advisory`** (issue 17) matches versions affected by a RustSec advisory that is not
//!   withdrawn: with no value, a vulnerability; else any advisory named by its comma-separated
//!   value, whose items are kinds (`vulnerability`, `unmaintained`, `unsound`, `notice`, or
//!   `any` for every kind) and advisory IDs (`RUSTSEC-2023-0071`, case-insensitive).
//! - **Tiers.** `version`, `age` and `advisory` are *version-specific*: a stanza with any of
//!   them never sets a claim (rule 2), and with a named package it is searched in the first tier
//!   of rule 3. Unlike `version`, `age` and `advisory` are allowed with `Package: *` (a cooldown
//!   is `Package: *` / `Pin: age <3d` / `Pin-Priority: -1`); such a stanza is in the `*` tier,
//!   so any named stanza that matches a version (a hold, a `registry` pin) exempts it.
//! - **Errors.** Parse errors from [`Preferences::load`] name the full path of the file; errors from
//!   [`Preferences::parse_files`] and [`PinFile::parse`] name the file as given.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use globset::GlobMatcher;
use regex::Regex;
use semver::VersionReq;

use crate::advisory::AdvisoryKind;
use crate::policy::{PinPriority, StanzaRef};

mod edit;
mod eval;
mod parse;
#[cfg(test)]
mod tests;

pub use edit::{ListEntry, add_stanza, remove_stanza};

/// The main pin file, in the config dir.
pub const PREFERENCES_FILE: &str = "preferences";
/// The directory of further pin files, in the config dir.
pub const PREFERENCES_DIR: &str = "preferences.d";
/// Only files in [`PREFERENCES_DIR`] with this suffix are read (as apt does).
pub const PREF_SUFFIX: &str = ".pref";

/// A problem with a pin file, located where it is. Displays as `FILE:LINE: message`, or
/// `FILE: message` when the whole file is the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PinError {
    /// The file's name as given to the parser, or its full path when it came from
    /// [`Preferences::load`].
    pub file: String,
    /// 1-based; `None` when the file cannot be read.
    pub line: Option<usize>,
    /// What is wrong on that line.
    pub kind: PinErrorKind,
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinErrorKind {
    /// The file (or an entry of `preferences.d`) cannot be read; holds the I/O error.
    #[error("cannot read: {0}")]
    Unreadable(String),
    /// A line that is not `Field: value`; holds the line.
    #[error("expected `Field: value`, found `{0}`")]
    ExpectedField(String),
    /// An indented line with no field above it to continue.
    #[error("continuation line without a field above it")]
    StrayContinuation,
    /// A field other than `Explanation`, `Package`, `Pin` or `Pin-Priority`; holds its name.
    #[error("unknown field `{0}`; expected `Explanation`, `Package`, `Pin` or `Pin-Priority`")]
    UnknownField(String),
    /// `Package`, `Pin` or `Pin-Priority` appears twice in one stanza.
    #[error("field `{field}` repeated in one stanza (first on line {first})")]
    RepeatedField {
        /// The field's name.
        field: &'static str,
        /// The 1-based line of its first occurrence.
        first: usize,
    },
    /// The stanza lacks `Package`, `Pin` or `Pin-Priority`; holds the field name.
    #[error("stanza has no `{0}:` field")]
    MissingField(&'static str),
    /// A field with nothing after the colon; holds the field name.
    #[error("`{0}:` is empty")]
    EmptyField(&'static str),
    /// A `Package:` pattern that is neither a valid crate name, a glob nor a `/regex/`.
    #[error("`{pattern}` is not a crate name, glob or /regex/: {reason}")]
    BadPackage {
        /// The pattern as written.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// `*` together with other patterns in one `Package:` field.
    #[error("a lone `*` cannot be combined with other patterns")]
    StarWithOthers,
    /// A `Package:` glob, or a `registry`/`origin` glob, that does not compile.
    #[error("bad glob `{pattern}`: {reason}")]
    BadGlob {
        /// The pattern as written.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// A `Package:` `/regex/` that does not compile.
    #[error("bad regex `{pattern}`: {reason}")]
    BadRegex {
        /// The pattern as written.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// An empty selector between the `;`s of `Pin:`.
    #[error("empty selector in `Pin:`")]
    EmptySelector,
    /// A selector other than `registry`, `origin`, `version`, `age` or `advisory`; holds its
    /// name.
    #[error(
        "unknown selector `{0}`; expected `registry`, `origin`, `version`, `age` or `advisory`"
    )]
    UnknownSelector(String),
    /// A selector given twice in one `Pin:`; holds its name.
    #[error("selector `{0}` repeated in one `Pin:`")]
    RepeatedSelector(&'static str),
    /// A selector without a value after it; holds its name.
    #[error("selector `{0}` needs a value")]
    MissingSelectorValue(&'static str),
    /// A `version` value that is not a cargo version requirement.
    #[error("bad version requirement `{req}`: {reason}")]
    BadVersionReq {
        /// The requirement as written.
        req: String,
        /// Why it was refused.
        reason: String,
    },
    /// An `age` value that is not `<DURATION` or `>DURATION`.
    #[error("bad age `{value}`: {reason}; expected `<DURATION` or `>DURATION`, e.g. `<3d`")]
    BadAge {
        /// The value as written.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// An `advisory` item that is neither a kind nor an advisory ID.
    #[error(
        "bad advisory `{0}`; expected `vulnerability`, `unmaintained`, `unsound`, `notice`, `any` or an ID such as `RUSTSEC-2023-0071`"
    )]
    BadAdvisory(String),
    /// A `version` selector in a `Package: *` stanza.
    #[error("`version` needs a named package, not `*`")]
    VersionWithStar,
    /// `Pin-Priority: 0`.
    #[error("priority 0 is not allowed; use a non-zero integer or `never`")]
    ZeroPriority,
    /// A `Pin-Priority:` that is neither a non-zero integer nor `never`; holds the value.
    #[error("`{0}` is not a priority; expected a non-zero integer or `never`")]
    BadPriority(String),
    /// A value given to [`add_stanza`] that spans lines or holds control characters; holds the
    /// field name.
    #[error("`{0}:` value must be one line without control characters")]
    NotOneLine(&'static str),
}

/// One parsed pin file.
#[derive(Debug, Clone)]
pub struct PinFile {
    /// The path relative to the config dir: `preferences` or `preferences.d/10-acme.pref`.
    pub name: String,
    /// The text as read; editing works on it byte for byte.
    pub text: String,
    /// The stanzas, in file order.
    pub stanzas: Vec<Stanza>,
}

impl PinFile {
    /// Parses one file's text; `name` is used in errors and in [`StanzaRef`]s.
    pub fn parse(name: impl Into<String>, text: impl Into<String>) -> Result<PinFile, PinError> {
        let name = name.into();
        let text = text.into();
        let stanzas = parse::parse_stanzas(&name, &text)?;
        Ok(PinFile {
            name,
            text,
            stanzas,
        })
    }

    /// Where stanza `index` (0-based, within this file) is.
    pub fn stanza_ref(&self, index: usize) -> Option<StanzaRef> {
        self.stanzas.get(index).map(|s| StanzaRef {
            file: self.name.clone(),
            line: s.line,
        })
    }
}

/// One stanza: which crates, from where, at what priority.
#[derive(Debug, Clone)]
pub struct Stanza {
    /// 1-based line of the stanza's first non-comment line: where the stanza "is" (`file:line`).
    pub line: usize,
    /// 1-based, half-open: every line of the stanza's paragraph, its comments included.
    pub lines: Range<usize>,
    /// The `Explanation:` fields, in order.
    pub explanations: Vec<String>,
    /// The `Package:` field: which crates the stanza applies to.
    pub packages: Packages,
    /// The `Package:` value as written (continuations joined).
    pub package_text: String,
    /// The `Pin:` field: which upstreams and versions the stanza applies to.
    pub selectors: Selectors,
    /// The `Pin:` value as written (continuations joined).
    pub pin_text: String,
    /// The `Pin-Priority:` field.
    pub priority: PinPriority,
}

/// Which evaluation tier a stanza is in (DESIGN.md rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Named package(s) and a version-specific selector (`version`, `age`, `advisory`).
    NamedWithVersion,
    /// Named package(s), no version-specific selector.
    Named,
    /// `Package: *`.
    General,
}

impl Stanza {
    /// The evaluation tier the stanza is searched in (DESIGN.md rule 3).
    pub fn tier(&self) -> Tier {
        match (&self.packages, self.selectors.is_version_specific()) {
            (Packages::Any, _) => Tier::General,
            (Packages::Named(_), true) => Tier::NamedWithVersion,
            (Packages::Named(_), false) => Tier::Named,
        }
    }
}

impl fmt::Display for Stanza {
    /// One line: `Package: … | Pin: … | Pin-Priority: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Package: {} | Pin: {} | Pin-Priority: {}",
            self.package_text, self.pin_text, self.priority
        )
    }
}

/// The `Package:` field.
#[derive(Debug, Clone)]
pub enum Packages {
    /// The lone `*`: the general form.
    Any,
    /// One or more patterns; a crate matches when any does.
    Named(Vec<PackagePattern>),
}

/// One pattern of a `Package:` field.
#[derive(Debug, Clone)]
pub struct PackagePattern {
    text: String,
    matcher: PatternMatcher,
}

#[derive(Debug, Clone)]
enum PatternMatcher {
    /// The name's key (lower-case, `-` for `_`).
    Exact(String),
    /// Compiled from the folded glob; matched against the key.
    Glob(GlobMatcher),
    Regex(Regex),
}

impl PackagePattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The `Pin:` field: every selector present must hold.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `registry GLOB`: the upstream's name.
    pub registry: Option<NameGlob>,
    /// `origin HOSTGLOB`: the host of the upstream's index URL.
    pub origin: Option<NameGlob>,
    /// `version REQ`.
    pub version: Option<VersionReq>,
    /// `age <DURATION` or `age >DURATION`.
    pub age: Option<AgeLimit>,
    /// `advisory [ITEM,…]`.
    pub advisory: Option<AdvisoryMatch>,
}

impl Selectors {
    /// Whether a selector depends on the version (`version`, `age`, `advisory`): such a stanza
    /// never sets a claim.
    pub fn is_version_specific(&self) -> bool {
        self.version.is_some() || self.age.is_some() || self.advisory.is_some()
    }
}

/// The `age` selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeLimit {
    /// `<` (younger than `limit`) or `>` (at least `limit` old).
    pub younger: bool,
    /// The duration, at least one second.
    pub limit: Duration,
}

impl fmt::Display for AgeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.younger { '<' } else { '>' };
        write!(f, "{op}{}", humantime::format_duration(self.limit))
    }
}

/// The `advisory` selector: matches a version affected by a non-withdrawn advisory that any item
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryMatch {
    /// At least one; `[Kind(Vulnerability)]` when the selector has no value.
    pub items: Vec<AdvisoryItem>,
}

/// One item of an `advisory` selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvisoryItem {
    /// Advisories of this kind.
    Kind(AdvisoryKind),
    /// `any`: advisories of every kind.
    Any,
    /// The advisory with this ID (upper-case), e.g. `RUSTSEC-2023-0071`.
    Id(String),
}

/// A case-insensitive glob over an upstream name or host.
#[derive(Debug, Clone)]
pub struct NameGlob {
    text: String,
    matcher: GlobMatcher,
}

impl NameGlob {
    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `s` matches the glob, ignoring case.
    pub fn is_match(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }
}

/// All pin files, in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct Preferences {
    /// The files in evaluation order: `preferences` first, then `preferences.d/*.pref` by name.
    pub files: Vec<PinFile>,
}

impl Preferences {
    /// Reads `preferences`, then `preferences.d/*.pref` in lexical order of file name, from
    /// `config_dir`. Missing files and a missing directory mean no pins. In `preferences.d`, names
    /// not ending in `.pref` and hidden names (starting with `.`, such as editors' lock files) are
    /// ignored; a `.pref` entry that cannot be read (a directory, a dangling link, not UTF-8) is an
    /// error naming its path.
    pub fn load(config_dir: &Path) -> Result<Preferences, PinError> {
        let unreadable = |path: &Path, e: std::io::Error| PinError {
            file: path.display().to_string(),
            line: None,
            kind: PinErrorKind::Unreadable(e.to_string()),
        };
        let mut names = Vec::new();
        let main = config_dir.join(PREFERENCES_FILE);
        match std::fs::symlink_metadata(&main) {
            Ok(_) => names.push(PREFERENCES_FILE.to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unreadable(&main, e)),
        }
        let dir = config_dir.join(PREFERENCES_DIR);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut found = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| unreadable(&dir, e))?;
                    // Names that are not UTF-8 cannot end in `.pref` as far as we can tell; skip.
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if name.ends_with(PREF_SUFFIX) && !name.starts_with('.') {
                        found.push(name);
                    }
                }
                found.sort();
                names.extend(found.into_iter().map(|n| format!("{PREFERENCES_DIR}/{n}")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unreadable(&dir, e)),
        }
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let path = config_dir.join(&name);
            let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, e))?;
            let file = PinFile::parse(name, text).map_err(|e| PinError {
                file: path.display().to_string(),
                ..e
            })?;
            files.push(file);
        }
        Ok(Preferences { files })
    }

    /// Parses `(name, text)` pairs, in the order given (the evaluation order). Pure.
    pub fn parse_files<I, N, T>(files: I) -> Result<Preferences, PinError>
    where
        I: IntoIterator<Item = (N, T)>,
        N: Into<String>,
        T: Into<String>,
    {
        let files = files
            .into_iter()
            .map(|(name, text)| PinFile::parse(name, text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Preferences { files })
    }

    /// Every stanza with its file, in evaluation order within a tier.
    pub fn stanzas(&self) -> impl Iterator<Item = (&PinFile, &Stanza)> {
        self.files
            .iter()
            .flat_map(|f| f.stanzas.iter().map(move |s| (f, s)))
    }

    /// True when no file holds a stanza.
    pub fn is_empty(&self) -> bool {
        self.files.iter().all(|f| f.stanzas.is_empty())
    }
}
