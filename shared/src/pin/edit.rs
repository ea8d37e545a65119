//! Editing pin files without touching any byte that is not part of the edit, and listing stanzas
//! for `privreg pin list`.

use std::fmt;

use super::parse::{LineKind, line_kind, split_lines, stanza_paragraphs};
use super::{PinError, PinErrorKind, PinFile, Preferences, Stanza};
use crate::policy::{PinPriority, StanzaRef};

/// Appends a stanza to `text` (the contents of the file called `file`, empty if it does not exist
/// yet) and returns the new text, or the error that the whole new text would have. Every byte of
/// `text` is kept: the stanza goes after it, separated by one blank line (none is added when the
/// text already ends with one, and a missing final line end is added first). Lines are written
/// with `\r\n` when the file's first line ends so, else `\n`. Values must be single lines.
pub fn add_stanza(
    file: &str,
    text: &str,
    package: &str,
    pin: &str,
    priority: PinPriority,
    explanation: Option<&str>,
) -> Result<String, PinError> {
    let lines = split_lines(text);
    let eol = match lines.first() {
        Some(l) if text[l.span.clone()].ends_with("\r\n") => "\r\n",
        _ => "\n",
    };
    let mut out = text.to_owned();
    let mut next_line = lines.len() + 1;
    if !out.is_empty() {
        if !out.ends_with('\n') {
            out.push_str(eol);
        }
        if lines
            .last()
            .is_some_and(|l| line_kind(l.text) != LineKind::Blank)
        {
            out.push_str(eol);
            next_line += 1;
        }
    }
    let priority = priority.to_string();
    let mut fields = Vec::with_capacity(4);
    if let Some(explanation) = explanation.filter(|e| !e.trim().is_empty()) {
        fields.push(("Explanation", explanation));
    }
    fields.push(("Package", package));
    fields.push(("Pin", pin));
    fields.push(("Pin-Priority", priority.as_str()));
    for (i, (field, value)) in fields.into_iter().enumerate() {
        if value.contains(char::is_control) {
            return Err(PinError {
                file: file.to_owned(),
                line: Some(next_line + i),
                kind: PinErrorKind::NotOneLine(field),
            });
        }
        out.push_str(field);
        out.push_str(": ");
        out.push_str(value.trim());
        out.push_str(eol);
    }
    PinFile::parse(file, out.as_str())?;
    Ok(out)
}

/// Removes stanza `index` (0-based, within this text; the same numbering [`PinFile::stanzas`] has
/// when the text parses) and returns the new text, or `None` when there is no such stanza.
///
/// Exactly the stanza's paragraph goes: its fields and the comments directly above, inside and
/// directly below it (no blank line between), plus one adjacent blank line: the one after it, else
/// the one before it. Every other byte stays. The text need not parse, so a broken stanza can be
/// removed too.
pub fn remove_stanza(text: &str, index: usize) -> Option<String> {
    let lines = split_lines(text);
    let (range, _) = stanza_paragraphs(&lines).into_iter().nth(index)?;
    let (mut start, mut end) = (range.start, range.end);
    let blank = |i: usize| line_kind(lines[i].text) == LineKind::Blank;
    if end < lines.len() && blank(end) {
        end += 1;
    } else if start > 0 && blank(start - 1) {
        start -= 1;
    }
    let (from, to) = (lines[start].span.start, lines[end - 1].span.end);
    let mut out = String::with_capacity(text.len() - (to - from));
    out.push_str(&text[..from]);
    out.push_str(&text[to..]);
    Some(out)
}

/// One stanza as `privreg pin list` numbers it.
#[derive(Debug, Clone)]
pub struct ListEntry<'a> {
    /// 1-based, across all files in evaluation order of files.
    pub number: usize,
    /// Index into [`Preferences::files`].
    pub file: usize,
    /// Index into that file's [`PinFile::stanzas`]: what [`remove_stanza`] takes.
    pub index: usize,
    /// `file:line`.
    pub at: StanzaRef,
    /// The stanza itself.
    pub stanza: &'a Stanza,
}

impl fmt::Display for ListEntry<'_> {
    /// `N  file:line  Package: … | Pin: … | Pin-Priority: …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {}  {}", self.number, self.at, self.stanza)
    }
}

impl Preferences {
    /// Every stanza, numbered from 1 across all files.
    pub fn list(&self) -> Vec<ListEntry<'_>> {
        let mut out = Vec::new();
        for (fi, file) in self.files.iter().enumerate() {
            for (si, stanza) in file.stanzas.iter().enumerate() {
                out.push(ListEntry {
                    number: out.len() + 1,
                    file: fi,
                    index: si,
                    at: StanzaRef {
                        file: file.name.clone(),
                        line: stanza.line,
                    },
                    stanza,
                });
            }
        }
        out
    }

    /// Removes stanza `number` (as [`Preferences::list`] numbers it): the file's name (relative to
    /// the config dir) and its new text, for the caller to write; `None` when there is no such
    /// stanza.
    pub fn remove_numbered(&self, number: usize) -> Option<(&str, String)> {
        let entry = self.list().into_iter().find(|e| e.number == number)?;
        let file = &self.files[entry.file];
        remove_stanza(&file.text, entry.index).map(|text| (file.name.as_str(), text))
    }
}
