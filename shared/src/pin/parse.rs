//! The pin file grammar: lines, paragraphs, fields, patterns and selectors. Pure.

use std::ops::Range;

use globset::GlobBuilder;
use regex::RegexBuilder;
use semver::VersionReq;

use super::{
    AdvisoryItem, AdvisoryMatch, AgeLimit, NameGlob, PackagePattern, Packages, PatternMatcher,
    PinError, PinErrorKind, Selectors, Stanza,
};
use crate::advisory::AdvisoryKind;
use crate::name::CrateName;
use crate::policy::PinPriority;

/// One line of a file.
pub(super) struct RawLine<'a> {
    /// 1-based.
    pub number: usize,
    /// Without its `\n` or `\r\n` (and without a byte-order mark on line 1).
    pub text: &'a str,
    /// Byte range in the file, line end included.
    pub span: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineKind {
    Blank,
    Comment,
    Continuation,
    Field,
}

pub(super) fn split_lines(text: &str) -> Vec<RawLine<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, chunk) in text.split_inclusive('\n').enumerate() {
        let end = start + chunk.len();
        let mut body = chunk.strip_suffix('\n').unwrap_or(chunk);
        body = body.strip_suffix('\r').unwrap_or(body);
        if i == 0 {
            body = body.strip_prefix('\u{feff}').unwrap_or(body);
        }
        out.push(RawLine {
            number: i + 1,
            text: body,
            span: start..end,
        });
        start = end;
    }
    out
}

pub(super) fn line_kind(text: &str) -> LineKind {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        LineKind::Blank
    } else if trimmed.starts_with('#') {
        LineKind::Comment
    } else if text.starts_with([' ', '\t']) {
        LineKind::Continuation
    } else {
        LineKind::Field
    }
}

/// The stanzas' paragraphs: index ranges into `lines` of runs of non-blank lines that hold at least
/// one non-comment line, and the index of that first non-comment line.
pub(super) fn stanza_paragraphs(lines: &[RawLine<'_>]) -> Vec<(Range<usize>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if line_kind(lines[i].text) == LineKind::Blank {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && line_kind(lines[i].text) != LineKind::Blank {
            i += 1;
        }
        if let Some(first) = (start..i).find(|&j| line_kind(lines[j].text) != LineKind::Comment) {
            out.push((start..i, first));
        }
    }
    out
}

struct Field<'a> {
    name: &'a str,
    value: String,
    line: usize,
}

/// Parses every stanza of one file.
pub(super) fn parse_stanzas(file: &str, text: &str) -> Result<Vec<Stanza>, PinError> {
    let lines = split_lines(text);
    stanza_paragraphs(&lines)
        .into_iter()
        .map(|(range, first)| parse_stanza(file, &lines[range], lines[first].number))
        .collect()
}

fn parse_stanza(file: &str, lines: &[RawLine<'_>], first: usize) -> Result<Stanza, PinError> {
    let at = |line: usize| {
        move |kind: PinErrorKind| PinError {
            file: file.to_owned(),
            line: Some(line),
            kind,
        }
    };

    let mut fields: Vec<Field<'_>> = Vec::new();
    for l in lines {
        match line_kind(l.text) {
            LineKind::Blank | LineKind::Comment => {}
            LineKind::Continuation => {
                let Some(field) = fields.last_mut() else {
                    return Err(at(l.number)(PinErrorKind::StrayContinuation));
                };
                field.value.push(' ');
                field.value.push_str(l.text.trim());
            }
            LineKind::Field => {
                let found = || PinErrorKind::ExpectedField(l.text.trim().to_owned());
                let Some((name, value)) = l.text.split_once(':') else {
                    return Err(at(l.number)(found()));
                };
                let name = name.trim();
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(at(l.number)(found()));
                }
                fields.push(Field {
                    name,
                    value: value.to_owned(),
                    line: l.number,
                });
            }
        }
    }
    let mut explanations = Vec::new();
    let mut package: Option<(Packages, String, usize)> = None;
    let mut pin: Option<(Selectors, String, usize)> = None;
    let mut priority: Option<(PinPriority, usize)> = None;
    for f in fields {
        let value = f.value.trim().to_owned();
        let repeated = |field: &'static str, first: Option<usize>| match first {
            Some(first) => Err(at(f.line)(PinErrorKind::RepeatedField { field, first })),
            None => Ok(()),
        };
        match f.name.to_ascii_lowercase().as_str() {
            "explanation" => explanations.push(value),
            "package" => {
                repeated("Package", package.as_ref().map(|p| p.2))?;
                let parsed = parse_packages(&value).map_err(at(f.line))?;
                package = Some((parsed, value, f.line));
            }
            "pin" => {
                repeated("Pin", pin.as_ref().map(|p| p.2))?;
                let parsed = parse_selectors(&value).map_err(at(f.line))?;
                pin = Some((parsed, value, f.line));
            }
            "pin-priority" => {
                repeated("Pin-Priority", priority.map(|p| p.1))?;
                priority = Some((parse_priority(&value).map_err(at(f.line))?, f.line));
            }
            _ => return Err(at(f.line)(PinErrorKind::UnknownField(f.name.to_owned()))),
        }
    }
    let missing = |field| at(first)(PinErrorKind::MissingField(field));
    let (packages, package_text, _) = package.ok_or_else(|| missing("Package"))?;
    let (selectors, pin_text, pin_line) = pin.ok_or_else(|| missing("Pin"))?;
    let (priority, _) = priority.ok_or_else(|| missing("Pin-Priority"))?;
    if matches!(packages, Packages::Any) && selectors.version.is_some() {
        return Err(at(pin_line)(PinErrorKind::VersionWithStar));
    }
    let (start, end) = match (lines.first(), lines.last()) {
        (Some(s), Some(e)) => (s.number, e.number + 1),
        _ => (first, first + 1),
    };
    Ok(Stanza {
        line: first,
        lines: start..end,
        explanations,
        packages,
        package_text,
        selectors,
        pin_text,
        priority,
    })
}

fn parse_packages(value: &str) -> Result<Packages, PinErrorKind> {
    let tokens: Vec<&str> = value.split_whitespace().collect();
    if tokens.is_empty() {
        return Err(PinErrorKind::EmptyField("Package"));
    }
    if tokens.contains(&"*") {
        return if tokens.len() == 1 {
            Ok(Packages::Any)
        } else {
            Err(PinErrorKind::StarWithOthers)
        };
    }
    tokens
        .into_iter()
        .map(parse_pattern)
        .collect::<Result<_, _>>()
        .map(Packages::Named)
}

fn parse_pattern(token: &str) -> Result<PackagePattern, PinErrorKind> {
    let matcher = if let Some(rest) = token.strip_prefix('/') {
        let bad = |reason: String| PinErrorKind::BadRegex {
            pattern: token.to_owned(),
            reason,
        };
        let inner = rest
            .strip_suffix('/')
            .ok_or_else(|| bad("missing the closing `/`".to_owned()))?;
        let re = RegexBuilder::new(inner)
            .case_insensitive(true)
            .build()
            .map_err(|e| bad(regex_reason(&e)))?;
        PatternMatcher::Regex(re)
    } else if token.contains(['*', '?', '[', '{']) {
        let glob = GlobBuilder::new(&fold_glob(token))
            .case_insensitive(true)
            .backslash_escape(false)
            .build()
            .map_err(|e| PinErrorKind::BadGlob {
                pattern: token.to_owned(),
                reason: e.kind().to_string(),
            })?;
        PatternMatcher::Glob(glob.compile_matcher())
    } else {
        let name = CrateName::new(token).map_err(|e| PinErrorKind::BadPackage {
            pattern: token.to_owned(),
            reason: e.to_string(),
        })?;
        PatternMatcher::Exact(name.key())
    };
    Ok(PackagePattern {
        text: token.to_owned(),
        matcher,
    })
}

/// The last line of a regex error, without its `error: ` prefix: the part that says what is wrong.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

/// Rewrites a glob so that it matches a name's key (`-` for `_`): every `_` outside a class becomes
/// `-`; a class that holds `_` loses it and gains a literal `-` at its end.
pub(super) fn fold_glob(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::with_capacity(glob.len() + 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '[' {
            out.push(if c == '_' { '-' } else { c });
            i += 1;
            continue;
        }
        // A class: `[`, an optional `!` or `^`, an optional literal `]`, then up to `]`.
        let mut j = i + 1;
        let negated = j < chars.len() && matches!(chars[j], '!' | '^');
        if negated {
            j += 1;
        }
        let body_start = j;
        if j < chars.len() && chars[j] == ']' {
            j += 1;
        }
        while j < chars.len() && chars[j] != ']' {
            j += 1;
        }
        if j >= chars.len() {
            // Unclosed: leave it for globset to report.
            out.extend(&chars[i..]);
            break;
        }
        let body = &chars[body_start..j];
        out.extend(&chars[i..body_start]);
        out.extend(body.iter().filter(|c| **c != '_'));
        if body.contains(&'_') {
            out.push('-');
        }
        out.push(']');
        i = j + 1;
    }
    out
}

fn name_glob(keyword: &'static str, value: &str) -> Result<NameGlob, PinErrorKind> {
    let bad = |reason: String| PinErrorKind::BadGlob {
        pattern: value.to_owned(),
        reason,
    };
    if value.contains(char::is_whitespace) {
        return Err(bad(format!("`{keyword}` takes a single glob")));
    }
    let glob = GlobBuilder::new(value)
        .case_insensitive(true)
        .backslash_escape(false)
        .build()
        .map_err(|e| bad(e.kind().to_string()))?;
    Ok(NameGlob {
        text: value.to_owned(),
        matcher: glob.compile_matcher(),
    })
}

fn parse_selectors(value: &str) -> Result<Selectors, PinErrorKind> {
    if value.is_empty() {
        return Err(PinErrorKind::EmptyField("Pin"));
    }
    let mut sel = Selectors::default();
    for part in value.split(';') {
        let part = part.trim();
        if part.is_empty() {
            return Err(PinErrorKind::EmptySelector);
        }
        let (keyword, arg) = part
            .split_once(char::is_whitespace)
            .map_or((part, ""), |(k, a)| (k, a.trim()));
        let keyword: &'static str = match keyword.to_ascii_lowercase().as_str() {
            "registry" => "registry",
            "origin" => "origin",
            "version" => "version",
            "age" => "age",
            "advisory" => "advisory",
            _ => return Err(PinErrorKind::UnknownSelector(keyword.to_owned())),
        };
        let taken = match keyword {
            "registry" => sel.registry.is_some(),
            "origin" => sel.origin.is_some(),
            "version" => sel.version.is_some(),
            "age" => sel.age.is_some(),
            _ => sel.advisory.is_some(),
        };
        if taken {
            return Err(PinErrorKind::RepeatedSelector(keyword));
        }
        // `advisory` alone means vulnerabilities; every other selector needs a value.
        if arg.is_empty() && keyword != "advisory" {
            return Err(PinErrorKind::MissingSelectorValue(keyword));
        }
        match keyword {
            "registry" => sel.registry = Some(name_glob(keyword, arg)?),
            "origin" => sel.origin = Some(name_glob(keyword, arg)?),
            "version" => {
                let req = VersionReq::parse(arg).map_err(|e| PinErrorKind::BadVersionReq {
                    req: arg.to_owned(),
                    reason: e.to_string(),
                })?;
                sel.version = Some(req);
            }
            "age" => sel.age = Some(parse_age(arg)?),
            _ => sel.advisory = Some(parse_advisory(arg)?),
        }
    }
    Ok(sel)
}

/// `<DURATION` or `>DURATION` (spaces after the sign allowed), DURATION in humantime's syntax and
/// at least one second.
pub(super) fn parse_age(arg: &str) -> Result<AgeLimit, PinErrorKind> {
    let bad = |reason: &str| PinErrorKind::BadAge {
        value: arg.to_owned(),
        reason: reason.to_owned(),
    };
    let (younger, rest) = match arg.as_bytes().first() {
        Some(b'<') => (true, &arg[1..]),
        Some(b'>') => (false, &arg[1..]),
        _ => return Err(bad("no `<` or `>`")),
    };
    if rest.starts_with('=') {
        return Err(bad("`<=` and `>=` are not supported"));
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(bad("no duration"));
    }
    let limit = humantime::parse_duration(rest).map_err(|e| bad(&e.to_string()))?;
    if limit.as_secs() == 0 {
        return Err(bad("the duration must be at least one second"));
    }
    Ok(AgeLimit { younger, limit })
}

/// Whether `s` is a RustSec advisory ID: `RUSTSEC-YYYY-NNNN` (any case).
fn is_rustsec_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17
        && b[..8].eq_ignore_ascii_case(b"RUSTSEC-")
        && b[12] == b'-'
        && b[8..12].iter().chain(&b[13..]).all(u8::is_ascii_digit)
}

/// Nothing (vulnerabilities), or comma-separated kinds, `any` and advisory IDs.
pub(super) fn parse_advisory(arg: &str) -> Result<AdvisoryMatch, PinErrorKind> {
    if arg.is_empty() {
        return Ok(AdvisoryMatch {
            items: vec![AdvisoryItem::Kind(AdvisoryKind::Vulnerability)],
        });
    }
    let items = arg
        .split(',')
        .map(|item| {
            let item = item.trim();
            if is_rustsec_id(item) {
                return Ok(AdvisoryItem::Id(item.to_ascii_uppercase()));
            }
            if item.eq_ignore_ascii_case("any") {
                return Ok(AdvisoryItem::Any);
            }
            match AdvisoryKind::parse(item) {
                AdvisoryKind::Other(_) => Err(PinErrorKind::BadAdvisory(item.to_owned())),
                kind => Ok(AdvisoryItem::Kind(kind)),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(AdvisoryMatch { items })
}

fn parse_priority(value: &str) -> Result<PinPriority, PinErrorKind> {
    if value.is_empty() {
        return Err(PinErrorKind::EmptyField("Pin-Priority"));
    }
    if value.eq_ignore_ascii_case("never") {
        return Ok(PinPriority::Never);
    }
    match value.parse::<i32>() {
        Ok(0) => Err(PinErrorKind::ZeroPriority),
        Ok(v) => Ok(PinPriority::Value(v)),
        Err(_) => Err(PinErrorKind::BadPriority(value.to_owned())),
    }
}
