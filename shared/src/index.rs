//! Sparse-index files: parse an upstream's body into versions, and render merged lines.
//!
//! Lines are kept in the upstream's own bytes; only the documented rewrites (a dependency's
//! `registry` URL that names a layered upstream becomes `null`, and `yanked` set by a pin) touch a
//! line, and then only that line is re-serialised.

use bytes::Bytes;
use semver::Version;
use serde::Deserialize;

use crate::CrateName;

/// One version of a crate as an upstream served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLine {
    /// The line exactly as the upstream sent it (no trailing newline): a slice of the upstream's
    /// body, so that the lines of a file cost no memory of their own. Valid UTF-8.
    raw: Bytes,
    /// The `name` field: the crate's name as published (its case may differ from the file's path).
    pub name: String,
    /// The `vers` field.
    pub vers: Version,
    /// Lower-case hex sha256 of the `.crate` file.
    pub cksum: String,
    /// The `yanked` field: cargo no longer picks this version for new lock files.
    pub yanked: bool,
    /// The `pubtime` field, in seconds since the epoch, when it is in cargo's exact format
    /// ([`parse_pubtime`]); `None` when absent or malformed (the line is still served as it is).
    pub pubtime: Option<u64>,
    /// The `registry` URLs its dependencies name (usually none: same registry). The
    /// dependencies themselves are read from `raw` when needed ([`IndexLine::dependencies`]), so
    /// that thousands of versions cost no memory for them.
    dep_registries: Vec<String>,
}

/// What privreg needs to know about a dependency on an index line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepRef {
    /// The name of the crate depended upon (`package` if renamed, else `name`).
    pub krate: String,
    /// The `registry` field: the index URL of the registry the dependency comes from; `None` for
    /// the same registry as this line.
    pub registry: Option<String>,
    /// The version requirement, as written in the index (`^1.2`, `>=0.3, <0.5`).
    pub req: Option<String>,
    /// A dev-dependency (cargo never resolves those of a registry crate).
    pub dev: bool,
    /// Optional, and not switched on by the crate's `default` feature: cargo only needs it when
    /// a dependent asks for a feature that enables it.
    pub off_by_default: bool,
}

/// A line that was skipped, and why (1-based line number in the upstream body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number in the upstream's body.
    pub line: usize,
    /// Why it was skipped (unparsable JSON, a foreign `name`, a bad version, …).
    pub reason: String,
}

/// An upstream's index file for one crate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// One entry per version; a later line with the same version replaces an earlier one, as in
    /// cargo.
    pub lines: Vec<IndexLine>,
    /// Lines left out of [`lines`](Self::lines) because they were unusable.
    pub skipped: Vec<SkippedLine>,
    /// The body as the upstream sent it.
    pub body: Bytes,
    /// `body` is exactly `lines` in order, each followed by `\n` (no skipped, blank, `\r\n`
    /// or replaced lines): a view that serves every line unchanged can serve `body` itself.
    pub canonical: bool,
}

#[derive(Deserialize)]
struct LineFields<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    vers: std::borrow::Cow<'a, str>,
    cksum: std::borrow::Cow<'a, str>,
    #[serde(default)]
    yanked: Option<bool>,
    #[serde(default)]
    deps: Vec<DepFields<'a>>,
    #[serde(default)]
    v: Option<u32>,
    #[serde(default, borrow)]
    pubtime: Option<Pubtime<'a>>,
}

/// The `pubtime` field as found: a string, or anything else (which dates nothing).
#[derive(Deserialize)]
#[serde(untagged)]
enum Pubtime<'a> {
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

/// Parses a `pubtime` value in cargo's format, exactly `YYYY-MM-DDTHH:MM:SSZ` (UTC, no fraction,
/// no offset, zero-padded), to seconds since the epoch. Anything else is `None`, as cargo
/// refuses it too.
pub fn parse_pubtime(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    if b.len() != 20
        || b[19] != b'Z'
        || b[10] != b'T'
        || !digits.iter().all(|&i| b[i].is_ascii_digit())
    {
        return None;
    }
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[derive(Deserialize)]
struct DepFields<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    package: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    registry: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    req: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    optional: bool,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `text`, JSON that [`LineFields`] accepted, may hold what `serde_json::Value` refuses
/// although the fields `LineFields` skips are not checked: a number beyond `f64` (only with an
/// exponent or hundreds of digits), a `\uD800`–`\uDFFF` escape (a lone surrogate), or nesting
/// deeper than `Value`'s limit of 128. Errs towards `true`; cheap, so that only such rare lines
/// pay for a second parse.
fn may_not_reparse(text: &str) -> bool {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        if b[i + 1..].starts_with(b"u")
                            && matches!(b.get(i + 2), Some(b'd' | b'D'))
                            && matches!(b.get(i + 3), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
                        {
                            return true;
                        }
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > 100 {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while b
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_digit() || b".eE+-".contains(c))
                {
                    i += 1;
                }
                if i - start >= 300 || b[start..=i].iter().any(|c| matches!(c, b'e' | b'E')) {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// The optional dependencies (by the name the manifest gives them) that a crate's `default`
/// feature switches on, following features that enable other features. `feature` looks a feature
/// up in `features` / `features2`. `dep:x`, `x/f` and a bare `x` naming an optional dependency
/// enable it; `x?/f` does not.
fn default_enabled<'a>(
    optional: &[&'a str],
    feature: impl Fn(&str) -> Option<Vec<&'a str>>,
) -> std::collections::HashSet<&'a str> {
    let mut on = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec!["default"];
    while let Some(f) = todo.pop() {
        if !seen.insert(f) {
            continue;
        }
        let Some(entries) = feature(f) else {
            // Not a feature: the implicit feature of an optional dependency.
            if let Some(dep) = optional.iter().find(|d| **d == f) {
                on.insert(*dep);
            }
            continue;
        };
        for entry in entries {
            if let Some(dep) = entry.strip_prefix("dep:") {
                on.extend(optional.iter().copied().find(|d| *d == dep));
            } else if let Some((dep, _)) = entry.split_once('/') {
                if !dep.ends_with('?') {
                    on.extend(optional.iter().copied().find(|d| *d == dep));
                }
            } else {
                todo.push(entry);
            }
        }
    }
    on
}

impl IndexLine {
    /// The line as the upstream sent it.
    pub fn raw(&self) -> &str {
        std::str::from_utf8(&self.raw).expect("index lines are checked to be UTF-8 when parsed")
    }

    /// Parses one index line. Errors say why cargo could not use it either.
    pub fn parse(raw: &str) -> Result<IndexLine, String> {
        Self::parse_bytes(Bytes::copy_from_slice(raw.as_bytes()))
    }

    /// Parses one index line held in (a slice of) an upstream's body.
    fn parse_bytes(raw: Bytes) -> Result<IndexLine, String> {
        let text = std::str::from_utf8(&raw).map_err(|_| "line is not UTF-8".to_owned())?;
        let fields: LineFields<'_> =
            serde_json::from_str(text).map_err(|e| format!("not an index entry: {e}"))?;
        if fields.v.is_some_and(|v| v > 2) {
            return Err(format!(
                "index format version {} is unknown",
                fields.v.unwrap_or(0)
            ));
        }
        let vers = Version::parse(&fields.vers)
            .map_err(|e| format!("version {:?} is not semver: {e}", fields.vers))?;
        if !is_sha256_hex(&fields.cksum) {
            return Err(format!(
                "checksum of {} {} is not a sha256 hex digest",
                fields.name, vers
            ));
        }
        // `render` rewrites a line through `serde_json::Value`: a line that it cannot read there
        // would be served without the rewrites that pins and layering call for.
        if may_not_reparse(text) && serde_json::from_str::<serde_json::Value>(text).is_err() {
            return Err(format!(
                "{} {} holds a number out of range, a lone surrogate or nesting too deep",
                fields.name, vers
            ));
        }
        let (name, cksum) = (fields.name.into_owned(), fields.cksum.into_owned());
        let dep_registries = fields
            .deps
            .iter()
            .filter_map(|d| d.registry.as_deref().map(str::to_owned))
            .collect();
        let yanked = fields.yanked.unwrap_or(false);
        let pubtime = match &fields.pubtime {
            Some(Pubtime::Text(t)) => parse_pubtime(t),
            _ => None,
        };
        Ok(IndexLine {
            raw,
            name,
            vers,
            cksum,
            yanked,
            pubtime,
            dep_registries,
        })
    }

    /// The line's dependencies, read from its bytes.
    pub fn dependencies(&self) -> Vec<DepRef> {
        // `Cow`, not `&str`: a name written with an escape (`"b\u0061r"`) cannot be borrowed.
        type Features<'a> =
            std::collections::HashMap<std::borrow::Cow<'a, str>, Vec<std::borrow::Cow<'a, str>>>;
        #[derive(Deserialize)]
        struct Line<'a> {
            #[serde(default, borrow)]
            deps: Vec<DepFields<'a>>,
            #[serde(default, borrow)]
            features: Features<'a>,
            #[serde(default, borrow)]
            features2: Features<'a>,
        }
        let Ok(d) = serde_json::from_str::<Line<'_>>(self.raw()) else {
            return Vec::new();
        };
        let optional: Vec<&str> = d
            .deps
            .iter()
            .filter(|d| d.optional)
            .map(|d| d.name.as_ref())
            .collect();
        // A registry may split one feature across both maps (cargo joins them).
        let on = default_enabled(&optional, |f| {
            let (a, b) = (d.features.get(f), d.features2.get(f));
            (a.is_some() || b.is_some()).then(|| {
                a.into_iter()
                    .chain(b)
                    .flatten()
                    .map(std::convert::AsRef::as_ref)
                    .collect()
            })
        });
        d.deps
            .iter()
            .map(|dep| DepRef {
                dev: dep.kind.as_deref() == Some("dev"),
                krate: dep
                    .package
                    .as_ref()
                    .unwrap_or(&dep.name)
                    .clone()
                    .into_owned(),
                registry: dep.registry.as_ref().map(|r| r.clone().into_owned()),
                req: dep.req.as_ref().map(|r| r.clone().into_owned()),
                off_by_default: dep.optional && !on.contains(dep.name.as_ref()),
            })
            .collect()
    }

    /// Whether [`IndexLine::render`] would change the line.
    pub fn needs_rewrite(&self, force_yanked: bool, is_layered: &dyn Fn(&str) -> bool) -> bool {
        (force_yanked && !self.yanked) || self.dep_registries.iter().any(|r| is_layered(r))
    }

    /// The line as the layered view serves it: `registry` URLs that name a layered upstream
    /// become `null`, and `yanked` is forced on when a pin soft-blocks the version.
    pub fn render(&self, force_yanked: bool, is_layered: &dyn Fn(&str) -> bool) -> String {
        let rewrite_registry = self.dep_registries.iter().any(|r| is_layered(r));
        let rewrite_yank = force_yanked && !self.yanked;
        if !rewrite_registry && !rewrite_yank {
            return self.raw().to_owned();
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(self.raw()) else {
            return self.raw().to_owned();
        };
        if rewrite_yank {
            value["yanked"] = serde_json::Value::Bool(true);
        }
        if rewrite_registry && let Some(deps) = value.get_mut("deps").and_then(|d| d.as_array_mut())
        {
            for dep in deps {
                if dep
                    .get("registry")
                    .and_then(|r| r.as_str())
                    .is_some_and(is_layered)
                {
                    dep["registry"] = serde_json::Value::Null;
                }
            }
        }
        value.to_string()
    }
}

impl IndexFile {
    /// About how many bytes of memory the parsed file holds besides its body (which its lines
    /// are slices of): the lines' own fields and the skipped lines' reasons, each heap block at
    /// its capacity plus the allocator's bookkeeping. For weighing files against a memory
    /// budget; the body is weighed by whoever holds it.
    pub fn parsed_bytes(&self) -> usize {
        /// The allocator's bookkeeping per heap block (glibc's header, rounded up).
        const BLOCK: usize = 16;
        let heap = |capacity: usize| if capacity == 0 { 0 } else { capacity + BLOCK };
        // A semver identifier of up to 8 bytes is held inline.
        let ident = |s: &str| if s.len() > 8 { heap(s.len() + 8) } else { 0 };
        let line = |l: &IndexLine| {
            heap(l.name.capacity())
                + heap(l.cksum.capacity())
                + ident(l.vers.pre.as_str())
                + ident(l.vers.build.as_str())
                + heap(l.dep_registries.capacity() * size_of::<String>())
                + l.dep_registries
                    .iter()
                    .map(|r| heap(r.capacity()))
                    .sum::<usize>()
        };
        heap(self.lines.capacity() * size_of::<IndexLine>())
            + self.lines.iter().map(line).sum::<usize>()
            + heap(self.skipped.capacity() * size_of::<SkippedLine>())
            + self
                .skipped
                .iter()
                .map(|s| heap(s.reason.capacity()))
                .sum::<usize>()
    }

    /// Parses an upstream's body. Lines that cargo could not use are skipped and reported, never
    /// fatal.
    pub fn parse(body: &[u8]) -> IndexFile {
        Self::parse_bytes(Bytes::copy_from_slice(body))
    }

    /// Like [`IndexFile::parse`], keeping `body` and slicing the lines out of it (no copies).
    pub fn parse_bytes(body: Bytes) -> IndexFile {
        Self::parse_lines(body, None)
    }

    /// Like [`IndexFile::parse_bytes`], for the index file of `krate`: a line whose `name` is
    /// another crate's is skipped too, as cargo drops it (see [`foreign_name`]).
    pub fn parse_for(krate: &CrateName, body: Bytes) -> IndexFile {
        Self::parse_lines(body, Some(krate))
    }

    fn parse_lines(body: Bytes, krate: Option<&CrateName>) -> IndexFile {
        let mut file = IndexFile {
            canonical: body.ends_with(b"\n") || body.is_empty(),
            body,
            ..IndexFile::default()
        };
        // A second handle on the same bytes, to slice lines from while `file` grows.
        let body = file.body.clone();
        let mut start = 0;
        let mut number = 0;
        while start < body.len() {
            let end = body[start..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(body.len(), |p| start + p);
            number += 1;
            let mut raw = body.slice(start..end);
            start = end + 1;
            if raw.ends_with(b"\r") {
                raw.truncate(raw.len() - 1);
                file.canonical = false;
            }
            if raw.iter().all(u8::is_ascii_whitespace) {
                file.canonical = false;
                continue;
            }
            let parsed = IndexLine::parse_bytes(raw).and_then(|line| {
                match krate.and_then(|k| foreign_name(k, &line.name)) {
                    Some(reason) => Err(reason),
                    None => Ok(line),
                }
            });
            match parsed {
                Ok(line) => {
                    if let Some(pos) = file.lines.iter().position(|l| l.vers == line.vers) {
                        file.lines.remove(pos);
                        file.canonical = false;
                    }
                    file.lines.push(line);
                }
                Err(reason) => {
                    file.canonical = false;
                    file.skipped.push(SkippedLine {
                        line: number,
                        reason,
                    });
                }
            }
        }
        file
    }

    /// The line for `vers`, if the file has one.
    pub fn version(&self, vers: &Version) -> Option<&IndexLine> {
        self.lines.iter().find(|l| &l.vers == vers)
    }
}

/// Why a line naming crate `name` does not belong in the index file of `krate`, if it does not.
///
/// Cargo keeps only the lines whose `name` is exactly the name it asked for. The file's path is
/// lower-cased, so cargo asking as `Serde` or `serde` gets the same file, and the line of a crate
/// published as `Serde` is one cargo uses: only case may differ. `-` and `_` may not: `foo-bar`
/// and `foo_bar` have files of their own, and cargo drops a `foo_bar` line from `foo-bar`'s.
pub fn foreign_name(krate: &CrateName, name: &str) -> Option<String> {
    (!krate.as_str().eq_ignore_ascii_case(name)).then(|| {
        let krate = krate.as_str();
        format!("the line is for crate {name:?}, not {krate:?} whose index file it came in")
    })
}

/// Canonical form of a registry index URL for comparisons: without `sparse+`, without trailing
/// slashes, and with the public registry's git and sparse URLs made one.
pub fn registry_url_key(url: &str) -> String {
    let crates_io_git = tame_index::index::git::CRATES_IO_INDEX;
    let crates_io_sparse = tame_index::index::sparse::CRATES_IO_HTTP_INDEX;
    let strip = |u: &str| {
        u.trim()
            .strip_prefix("sparse+")
            .unwrap_or(u.trim())
            .trim_end_matches('/')
            .to_ascii_lowercase()
    };
    let key = strip(url);
    let key = key.strip_suffix(".git").map(str::to_owned).unwrap_or(key);
    if key == strip(crates_io_git) || key == strip(crates_io_sparse) {
        CRATES_IO_KEY.to_owned()
    } else {
        key
    }
}

/// The key [`registry_url_key`] gives both of the public registry's URLs.
pub const CRATES_IO_KEY: &str = "crates-io";

#[cfg(test)]
mod tests {
    use super::*;

    const CK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn line(name: &str, vers: &str, extra: &str) -> String {
        format!(
            r#"{{"name":"{name}","vers":"{vers}","deps":[{extra}],"cksum":"{CK}","features":{{}},"yanked":false,"rust_version":"1.70","pubtime":"2025-01-01T00:00:00Z"}}"#
        )
    }

    #[test]
    fn parses_and_keeps_raw_bytes() {
        let body = format!(
            "{}\n{}\n",
            line("foo", "1.0.0", ""),
            line("foo", "1.1.0", "")
        );
        let f = IndexFile::parse(body.as_bytes());
        assert_eq!(f.lines.len(), 2);
        assert!(f.skipped.is_empty());
        assert_eq!(f.lines[1].raw(), line("foo", "1.1.0", ""));
        assert!(f.canonical);
        assert_eq!(
            f.lines[1].render(false, &|_| true),
            line("foo", "1.1.0", "")
        );
    }

    #[test]
    fn parsed_bytes_grow_with_the_lines_and_leave_out_the_body() {
        let body = |n: usize| {
            (0..n)
                .map(|i| line("foo", &format!("1.0.{i}"), "") + "\n")
                .collect::<String>()
        };
        let (one, ten) = (
            IndexFile::parse(body(1).as_bytes()),
            IndexFile::parse(body(10).as_bytes()),
        );
        // Each line: its slot in the vector, its name and its checksum.
        let per_line = size_of::<IndexLine>() + (3 + 16) + (64 + 16);
        assert!(one.parsed_bytes() >= per_line, "{}", one.parsed_bytes());
        assert!(
            ten.parsed_bytes() >= 10 * per_line,
            "{}",
            ten.parsed_bytes()
        );
        // The raw lines are slices of the body, which is not counted here.
        assert!(ten.parsed_bytes() < 10 * per_line + 1024 + ten.body.len() / 2);
        let long_pre = IndexFile::parse(line("foo", "1.0.0-prerelease.1", "").as_bytes());
        assert!(long_pre.parsed_bytes() > one.parsed_bytes());
        let skipped = IndexFile::parse(b"not json\n");
        assert!(skipped.parsed_bytes() > 0);
        assert_eq!(IndexFile::parse(b"").parsed_bytes(), 0);
    }

    #[test]
    fn optional_dependencies_off_by_default_are_marked() {
        let raw = format!(
            r#"{{"name":"foo","vers":"1.0.0","cksum":"{CK}","deps":[
            {{"name":"always","req":"^1"}},
            {{"name":"tls","req":"^1","optional":true}},
            {{"name":"via-dep","req":"^1","optional":true}},
            {{"name":"via-slash","req":"^1","optional":true}},
            {{"name":"weak","req":"^1","optional":true}},
            {{"name":"extra","req":"^1","optional":true}},
            {{"name":"renamed","package":"real-name","req":"^1","optional":true}},
            {{"name":"test-only","req":"^1","kind":"dev"}}],
            "features":{{"default":["std","tls"],"std":["via-slash/std","weak?/std"],"full":["extra"]}},
            "features2":{{"more":["renamed"],"std":["dep:via-dep"]}}}}"#
        )
        .replace('\n', "");
        let l = IndexLine::parse(&raw).unwrap();
        assert_eq!(l.dependencies()[0].req.as_deref(), Some("^1"));
        let off: Vec<(String, bool, bool)> = l
            .dependencies()
            .into_iter()
            .map(|d| (d.krate, d.off_by_default, d.dev))
            .collect();
        let expect = [
            ("always", false, false),
            ("tls", false, false),
            ("via-dep", false, false),
            ("via-slash", false, false),
            ("weak", true, false),
            ("extra", true, false),
            ("real-name", true, false),
            ("test-only", false, true),
        ];
        let expect: Vec<(String, bool, bool)> = expect
            .iter()
            .map(|(n, o, d)| ((*n).to_owned(), *o, *d))
            .collect();
        assert_eq!(off, expect);
    }

    /// Found by fuzzing (fuzz/, `index_merge`): a feature written with a JSON escape made the
    /// whole line's dependencies unreadable (empty), and different from its rewritten form.
    #[test]
    fn escaped_feature_names_are_read() {
        let raw = format!(
            r#"{{"name":"foo","vers":"1.0.0","cksum":"{CK}","deps":[{{"name":"x","req":"^1","optional":true}},{{"name":"y","req":"^1","optional":true}}],"features":{{"d\u0065fault":["\u0078"],"\u00e9":["y"]}}}}"#
        );
        let l = IndexLine::parse(&raw).unwrap();
        let deps: Vec<(String, bool)> = l
            .dependencies()
            .into_iter()
            .map(|d| (d.krate, d.off_by_default))
            .collect();
        assert_eq!(deps, [("x".to_owned(), false), ("y".to_owned(), true)]);
    }

    #[test]
    fn default_feature_cycles_terminate() {
        let raw = format!(
            r#"{{"name":"foo","vers":"1.0.0","cksum":"{CK}","deps":[{{"name":"x","req":"^1","optional":true}}],"features":{{"default":["a"],"a":["b"],"b":["a","x"]}}}}"#
        );
        let l = IndexLine::parse(&raw).unwrap();
        assert!(!l.dependencies()[0].off_by_default);
    }

    #[test]
    fn bad_lines_are_skipped_with_their_number() {
        let body = format!(
            "{}\nnot json\n{{\"name\":\"foo\",\"vers\":\"x\",\"cksum\":\"{CK}\"}}\n{{\"name\":\"foo\",\"vers\":\"2.0.0\",\"cksum\":\"abc\"}}\n{{\"name\":\"foo\",\"vers\":\"3.0.0\",\"cksum\":\"{CK}\",\"v\":3}}\n",
            line("foo", "1.0.0", "")
        );
        let f = IndexFile::parse(body.as_bytes());
        assert_eq!(f.lines.len(), 1);
        let lines: Vec<usize> = f.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(f.skipped[1].reason.contains("semver"), "{:?}", f.skipped[1]);
    }

    #[test]
    fn lines_for_another_crate_are_skipped_as_cargo_drops_them() {
        let krate = CrateName::new("foo-bar").unwrap();
        // (name on the line, kept)
        let cases = [
            ("foo-bar", true),
            ("Foo-Bar", true),
            ("FOO-BAR", true),
            ("foo_bar", false),
            ("foo", false),
            ("foo-bars", false),
            ("", false),
        ];
        for (name, kept) in cases {
            assert_eq!(foreign_name(&krate, name).is_none(), kept, "{name:?}");
            let body = Bytes::from(format!("{}\n", line(name, "1.0.0", "")));
            let f = IndexFile::parse_for(&krate, body.clone());
            assert_eq!(f.lines.len(), usize::from(kept), "{name:?}");
            assert_eq!(f.canonical, kept, "{name:?}");
            if !kept {
                assert_eq!(f.skipped.len(), 1, "{name:?}");
                assert_eq!(f.skipped[0].line, 1);
                let reason = &f.skipped[0].reason;
                assert!(reason.contains(&format!("{name:?}")), "{reason}");
                assert!(reason.contains("\"foo-bar\""), "{reason}");
            }
            // Without a crate to check against, every well-formed line is kept.
            assert_eq!(IndexFile::parse_bytes(body).lines.len(), 1, "{name:?}");
        }
    }

    #[test]
    fn a_line_for_another_crate_does_not_replace_a_version() {
        let krate = CrateName::new("foo").unwrap();
        let body = format!(
            "{}\n{}\n",
            line("foo", "1.0.0", ""),
            line("bar", "1.0.0", "")
        );
        let f = IndexFile::parse_for(&krate, Bytes::from(body));
        assert_eq!(f.lines.len(), 1);
        assert_eq!(f.lines[0].raw(), line("foo", "1.0.0", ""));
        assert_eq!(f.skipped.len(), 1);
        assert_eq!(f.skipped[0].line, 2);
    }

    #[test]
    fn later_line_for_same_version_wins() {
        let a = line("foo", "1.0.0", "");
        let b = a.replace("\"yanked\":false", "\"yanked\":true");
        let f = IndexFile::parse(format!("{a}\n{b}").as_bytes());
        assert_eq!(f.lines.len(), 1);
        assert!(f.lines[0].yanked);
    }

    #[test]
    fn rewrites_only_layered_registry_urls_and_keeps_unknown_fields() {
        let deps = format!(
            r#"{{"name":"bar","req":"^1","registry":"{}","kind":"normal"}},{{"name":"baz","req":"^1","registry":"https://other.example/index","kind":"normal"}}"#,
            tame_index::index::git::CRATES_IO_INDEX
        );
        let l = IndexLine::parse(&line("foo", "1.0.0", &deps)).unwrap();
        assert_eq!(
            l.dependencies()[0].registry.as_deref(),
            Some(tame_index::index::git::CRATES_IO_INDEX)
        );
        let out = l.render(false, &|u| registry_url_key(u) == CRATES_IO_KEY);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["deps"][0]["registry"].is_null());
        assert_eq!(v["deps"][1]["registry"], "https://other.example/index");
        assert_eq!(v["rust_version"], "1.70");
        assert_eq!(v["pubtime"], "2025-01-01T00:00:00Z");
        // Field order is kept.
        assert!(
            out.starts_with(r#"{"name":"foo","vers":"1.0.0","deps""#),
            "{out}"
        );
    }

    #[test]
    fn pubtime_is_read_strictly_in_cargos_format() {
        // (value as written in the line, seconds since the epoch)
        let cases: [(&str, Option<u64>); 14] = [
            (r#""2025-01-01T00:00:00Z""#, Some(1_735_689_600)),
            (r#""1970-01-01T00:00:00Z""#, Some(0)),
            (r#""2024-02-29T23:59:59Z""#, Some(1_709_251_199)),
            (r#""2025-02-29T00:00:00Z""#, None),
            (r#""2025-13-01T00:00:00Z""#, None),
            (r#""2025-01-01T24:00:00Z""#, None),
            (r#""2025-01-01T00:00:00.5Z""#, None),
            (r#""2025-01-01T00:00:00+00:00""#, None),
            (r#""2025-01-01 00:00:00Z""#, None),
            (r#""2025-1-01T00:00:00Z""#, None),
            (r#""+025-01-01T00:00:00Z""#, None),
            (r#""2025-01-01T00:00:00z""#, None),
            ("null", None),
            ("1735689600", None),
        ];
        for (value, want) in cases {
            let text = line("foo", "1.0.0", "").replace(r#""2025-01-01T00:00:00Z""#, value);
            let l = IndexLine::parse(&text).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(l.pubtime, want, "{value}");
        }
        let without = line("foo", "1.0.0", "").replace(r#","pubtime":"2025-01-01T00:00:00Z""#, "");
        assert_eq!(IndexLine::parse(&without).unwrap().pubtime, None);
    }

    #[test]
    fn pubtime_passes_through_every_rewrite_byte_for_byte() {
        let deps = format!(
            r#"{{"name":"bar","req":"^1","registry":"{}","kind":"normal"}}"#,
            tame_index::index::git::CRATES_IO_INDEX
        );
        let field = r#""pubtime":"2025-01-01T00:00:00Z""#;
        for (yank, layered) in [(true, false), (false, true), (true, true), (false, false)] {
            let raw = line("foo", "1.0.0", &deps);
            let l = IndexLine::parse(&raw).unwrap();
            let out = l.render(yank, &|u| layered && registry_url_key(u) == CRATES_IO_KEY);
            assert_eq!(out == raw, !yank && !layered, "{out}");
            assert!(out.contains(field), "{out}");
            assert!(out.ends_with(&format!("{field}}}")), "{out}");
            assert_eq!(IndexLine::parse(&out).unwrap().pubtime, l.pubtime);
        }
    }

    #[test]
    fn forced_yank() {
        let l = IndexLine::parse(&line("foo", "1.0.0", "")).unwrap();
        let out = l.render(true, &|_| false);
        assert!(out.contains("\"yanked\":true"));
        assert!(!out.contains("\"yanked\":false"));
    }

    /// Found by fuzzing (fuzz/, `index_merge`): `serde_json` skips unknown fields without checking
    /// what `Value` checks, so these lines parsed but `render` could not rewrite them and served
    /// them unchanged: not yanked by a negative pin, `registry` URLs kept.
    #[test]
    fn lines_that_cannot_be_rewritten_are_skipped() {
        let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
        for (i, bad) in [
            "1e400",
            "-1E+999",
            &"9".repeat(400),
            r#""\uD800""#,
            r#"{"\udfff":0}"#,
            &deep,
        ]
        .into_iter()
        .enumerate()
        {
            let text = line("foo", &format!("1.0.{i}"), "")
                .replace("\"pubtime\"", &format!("\"x\":{bad},\"pubtime\""));
            assert!(
                serde_json::from_str::<LineFields<'_>>(&text).is_ok(),
                "{text}"
            );
            let e = IndexLine::parse(&text).expect_err(&text);
            assert!(e.contains(&format!("foo 1.0.{i}")), "{e}");
        }
        // What `Value` holds is still accepted, and rewritten.
        let nested = format!("{}1{}", "[".repeat(101), "]".repeat(101));
        for fine in [
            "1e300",
            "-1.5e-400",
            &"9".repeat(300),
            r#""\ud83d\ude00""#,
            r#""\u00e9""#,
            &nested,
        ] {
            let text = line("foo", "1.0.0", "")
                .replace("\"pubtime\"", &format!("\"x\":{fine},\"pubtime\""));
            let l = IndexLine::parse(&text).unwrap_or_else(|e| panic!("{fine}: {e}"));
            assert!(
                l.render(true, &|_| false).contains("\"yanked\":true"),
                "{fine}"
            );
        }
    }

    #[test]
    fn url_keys() {
        assert_eq!(
            registry_url_key(tame_index::index::git::CRATES_IO_INDEX),
            CRATES_IO_KEY
        );
        assert_eq!(
            registry_url_key(tame_index::index::sparse::CRATES_IO_HTTP_INDEX),
            CRATES_IO_KEY
        );
        assert_eq!(
            registry_url_key("sparse+http://127.0.0.1:9/index/"),
            registry_url_key("http://127.0.0.1:9/index")
        );
    }
}
