//! Validated crate names and their sparse-index paths, and validated upstream names
//! ([`UpstreamName`]).
//!
//! Every name that reaches path code goes through [`CrateName`], so that request paths such as
//! `../../etc/passwd`, encoded slashes or over-long names never touch the file system.

use std::fmt;

mod upstream;

pub use upstream::{
    MAX_UPSTREAM_NAME_LEN, TOKEN_ENV_PREFIX, UpstreamName, UpstreamNameError, UpstreamNameRef,
};

/// Longest crate name accepted (the public registry's limit).
pub const MAX_NAME_LEN: usize = 64;

/// Why a string is not a crate name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The string is empty.
    #[error("crate name is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`]; holds the length in bytes.
    #[error("crate name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// Holds the first character that is not an ASCII letter, digit, `-` or `_`.
    #[error("crate name contains {0:?}; only ASCII letters, digits, `-` and `_` are allowed")]
    BadCharacter(char),
    /// The first character is a digit or `-`.
    #[error("crate name must start with a letter or `_`")]
    BadStart,
}

/// A crate name that is safe to use in paths: ASCII alphanumerics, `-` and `_`, starting with a
/// letter or `_`, at most [`MAX_NAME_LEN`] characters. Case is kept as given.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrateName(String);

impl CrateName {
    /// Checks `name` against the rule above and keeps it as given.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let first = name.chars().next().ok_or(NameError::Empty)?;
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadCharacter(bad));
        }
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(NameError::BadStart);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given, case kept.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased name, as cargo uses it in index paths.
    #[must_use]
    pub fn lower(&self) -> CrateName {
        CrateName(self.0.to_ascii_lowercase())
    }

    /// The name with `-` and `_` made alike and lower-cased: two crates with the same key are the
    /// same crate to cargo.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase().replace('_', "-")
    }

    /// The sparse-index path of this crate (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd`), lower-cased.
    pub fn index_path(&self) -> String {
        let lower = self.0.to_ascii_lowercase();
        let krate = tame_index::KrateName::try_from(lower.as_str())
            .expect("a validated crate name is a valid tame-index name");
        let mut path = String::with_capacity(lower.len() + 6);
        krate.prefix(&mut path, '/');
        path.push('/');
        path.push_str(&lower);
        path
    }

    /// Parses a sparse-index request path (the part after `index/`) into the crate it names.
    /// Only the exact lower-case path that cargo itself would request is accepted.
    pub fn from_index_path(path: &str) -> Option<CrateName> {
        let name = path.rsplit('/').next()?;
        let krate = CrateName::new(name).ok()?;
        (krate.0 == krate.0.to_ascii_lowercase() && krate.index_path() == path).then_some(krate)
    }
}

impl fmt::Display for CrateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CrateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrateName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_follow_cargo() {
        let p = |n: &str| CrateName::new(n).unwrap().index_path();
        assert_eq!(p("a"), "1/a");
        assert_eq!(p("ab"), "2/ab");
        assert_eq!(p("abc"), "3/a/abc");
        assert_eq!(p("serde"), "se/rd/serde");
        assert_eq!(p("Inflector"), "in/fl/inflector");
    }

    #[test]
    fn request_paths_round_trip_only_when_canonical() {
        assert_eq!(
            CrateName::from_index_path("se/rd/serde").unwrap().as_str(),
            "serde"
        );
        assert_eq!(
            CrateName::from_index_path("3/a/abc").unwrap().as_str(),
            "abc"
        );
        for bad in [
            "se/rd/Serde",
            "SE/RD/serde",
            "xx/rd/serde",
            "../../etc/passwd",
            "se/rd/ser%2fde",
            "se/rd/..",
            "1/.",
            "",
            "se/rd/serde/",
            "3/a/abc/../abc",
        ] {
            assert!(
                CrateName::from_index_path(bad).is_none(),
                "{bad:?} accepted"
            );
        }
        let long = "a".repeat(65);
        assert!(CrateName::from_index_path(&format!("aa/aa/{long}")).is_none());
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(CrateName::new(""), Err(NameError::Empty));
        assert_eq!(CrateName::new("a/b"), Err(NameError::BadCharacter('/')));
        assert_eq!(CrateName::new("1abc"), Err(NameError::BadStart));
        assert_eq!(CrateName::new(&"a".repeat(65)), Err(NameError::TooLong(65)));
        assert!(CrateName::new(&"a".repeat(64)).is_ok());
        assert_eq!(CrateName::new("Foo_bar").unwrap().key(), "foo-bar");
    }
}
