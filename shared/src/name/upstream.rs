//! Validated upstream names: the `<name>` of `[upstreams.<name>]`, of `/upstream/<name>/…`, of
//! the cargo registry `privreg-<name>`, of the upstream's cache directory and of
//! `PRIVREG_TOKEN_<NAME>`. One rule for all of them, so that a name one accepts is a name every
//! other accepts.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// Longest upstream name accepted (the same as for crate names).
pub const MAX_UPSTREAM_NAME_LEN: usize = 64;

/// `PRIVREG_TOKEN_<NAME>` holds an upstream's token.
pub const TOKEN_ENV_PREFIX: &str = "PRIVREG_TOKEN_";

/// Why a string is not an upstream name; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamNameError {
    /// The string is empty.
    #[error("upstream name \"\" may only hold ASCII letters, digits, `-` and `_`")]
    Empty,
    /// A character other than an ASCII letter, digit, `-` or `_`.
    #[error("upstream name {name:?} may only hold ASCII letters, digits, `-` and `_`")]
    BadCharacter {
        /// The name as given.
        name: String,
        /// The first character that broke the rule.
        found: char,
    },
    /// Longer than [`MAX_UPSTREAM_NAME_LEN`].
    #[error(
        "upstream name {name:?} is {len} characters long; the limit is {MAX_UPSTREAM_NAME_LEN}"
    )]
    TooLong {
        /// The name as given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// The one rule: 1 to [`MAX_UPSTREAM_NAME_LEN`] ASCII letters, digits, `-` and `_`. Safe in a
/// URL path segment, a cargo registry name after `privreg-`, a directory name and (after
/// [`UpstreamName::token_var`]'s mapping) an environment variable name.
fn validate(name: &str) -> Result<(), UpstreamNameError> {
    if name.is_empty() {
        return Err(UpstreamNameError::Empty);
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(UpstreamNameError::BadCharacter {
            name: name.to_owned(),
            found,
        });
    }
    if name.len() > MAX_UPSTREAM_NAME_LEN {
        return Err(UpstreamNameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    Ok(())
}

/// `PRIVREG_TOKEN_` and the (valid) name upper-cased, `-` as `_`.
fn token_var(name: &str) -> String {
    let mangled: String = name
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    format!("{TOKEN_ENV_PREFIX}{mangled}")
}

/// An upstream name that holds the rule (see the module docs). Case is kept as given; two
/// names that differ only in case are different upstreams (but share a token variable, which
/// `config.toml` refuses). `Debug`, `Display` and serde show the bare name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName(String);

impl UpstreamName {
    /// Checks `name` against the rule (see the module docs) and keeps it as given.
    pub fn new(name: &str) -> Result<UpstreamName, UpstreamNameError> {
        validate(name)?;
        Ok(UpstreamName(name.to_owned()))
    }

    /// The name as given, case kept.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The borrowed form, e.g. to compare with a [`UpstreamNameRef`] from a request path.
    pub fn as_name_ref(&self) -> UpstreamNameRef<'_> {
        UpstreamNameRef(&self.0)
    }

    /// The environment variable that holds this upstream's token: `PRIVREG_TOKEN_` and the name
    /// upper-cased, `-` as `_` (`acme-x` → `PRIVREG_TOKEN_ACME_X`).
    pub fn token_var(&self) -> String {
        token_var(&self.0)
    }

    /// Whether `other` reads its token from the same variable: names that differ only in case
    /// or `-`/`_` would each be sent the other's token.
    pub fn shares_token_var(&self, other: &UpstreamName) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .bytes()
                .zip(other.0.bytes())
                .all(|(a, b)| token_byte(a) == token_byte(b))
    }
}

/// A byte of a valid name as it appears in its token variable.
fn token_byte(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_uppercase()
    }
}

/// An upstream name borrowed from elsewhere (e.g. a request path), validated by the same rule
/// as [`UpstreamName`]. `Copy`; [`UpstreamNameRef::to_name`] gives the owned form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamNameRef<'a>(&'a str);

impl<'a> UpstreamNameRef<'a> {
    /// Checks `name` against the rule (see the module docs) and borrows it.
    pub fn new(name: &'a str) -> Result<UpstreamNameRef<'a>, UpstreamNameError> {
        validate(name)?;
        Ok(UpstreamNameRef(name))
    }

    /// The name as given, with the borrowed lifetime.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// The owned form.
    pub fn to_name(&self) -> UpstreamName {
        UpstreamName(self.0.to_owned())
    }

    /// See [`UpstreamName::token_var`].
    pub fn token_var(&self) -> String {
        token_var(self.0)
    }
}

impl FromStr for UpstreamName {
    type Err = UpstreamNameError;

    fn from_str(s: &str) -> Result<UpstreamName, UpstreamNameError> {
        UpstreamName::new(s)
    }
}

impl TryFrom<String> for UpstreamName {
    type Error = UpstreamNameError;

    fn try_from(s: String) -> Result<UpstreamName, UpstreamNameError> {
        validate(&s)?;
        Ok(UpstreamName(s))
    }
}

impl TryFrom<&str> for UpstreamName {
    type Error = UpstreamNameError;

    fn try_from(s: &str) -> Result<UpstreamName, UpstreamNameError> {
        UpstreamName::new(s)
    }
}

impl From<UpstreamName> for String {
    fn from(n: UpstreamName) -> String {
        n.0
    }
}

impl From<UpstreamNameRef<'_>> for UpstreamName {
    fn from(n: UpstreamNameRef<'_>) -> UpstreamName {
        n.to_name()
    }
}

impl AsRef<str> for UpstreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UpstreamNameRef<'_> {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Deref for UpstreamName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Deref for UpstreamNameRef<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for UpstreamNameRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for UpstreamNameRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl PartialEq<str> for UpstreamName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for UpstreamName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for UpstreamName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<UpstreamName> for String {
    fn eq(&self, other: &UpstreamName) -> bool {
        *self == other.0
    }
}

impl PartialEq<UpstreamName> for str {
    fn eq(&self, other: &UpstreamName) -> bool {
        self == other.0
    }
}

impl PartialEq<UpstreamName> for &str {
    fn eq(&self, other: &UpstreamName) -> bool {
        *self == other.0
    }
}

impl PartialEq<UpstreamNameRef<'_>> for UpstreamName {
    fn eq(&self, other: &UpstreamNameRef<'_>) -> bool {
        self.0 == other.0
    }
}

impl PartialEq<UpstreamName> for UpstreamNameRef<'_> {
    fn eq(&self, other: &UpstreamName) -> bool {
        self.0 == other.0
    }
}

impl serde::Serialize for UpstreamName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for UpstreamName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UpstreamName, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamName::try_from(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert_eq!(UpstreamName::new(""), Err(UpstreamNameError::Empty));
        for ok in ["a", "acme-x", "ACME_x", "1st", "-", "_", &"a".repeat(64)] {
            assert_eq!(UpstreamName::new(ok).unwrap().as_str(), ok);
            assert_eq!(UpstreamNameRef::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["a b", "a/b", "..", "a.b", "a%2fb", "é", "a\n"] {
            assert!(
                matches!(
                    UpstreamName::new(bad),
                    Err(UpstreamNameError::BadCharacter { .. })
                ),
                "{bad:?}"
            );
        }
        let long = "a".repeat(65);
        assert_eq!(
            UpstreamName::new(&long),
            Err(UpstreamNameError::TooLong {
                name: long.clone(),
                len: 65
            })
        );
        assert_eq!(
            UpstreamNameRef::new(&long).unwrap_err(),
            UpstreamName::new(&long).unwrap_err()
        );
        assert_eq!(
            UpstreamName::new("a b").unwrap_err().to_string(),
            "upstream name \"a b\" may only hold ASCII letters, digits, `-` and `_`"
        );
    }

    #[test]
    fn parses_and_shows_as_the_bare_name() {
        let n: UpstreamName = "acme".parse().unwrap();
        assert_eq!(n.to_string(), "acme");
        assert_eq!(format!("{n:?}"), "\"acme\"");
        assert_eq!(n, "acme");
        assert_eq!(n, n.as_name_ref());
        assert_eq!(UpstreamName::try_from("acme".to_owned()).unwrap(), n);
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"acme\"");
        assert_eq!(serde_json::from_str::<UpstreamName>("\"acme\"").unwrap(), n);
        let e = serde_json::from_str::<UpstreamName>("\"a/b\"").unwrap_err();
        assert!(e.to_string().contains("may only hold"), "{e}");
    }

    #[test]
    fn token_vars() {
        let var = |n: &str| UpstreamName::new(n).unwrap().token_var();
        assert_eq!(var("acme"), "PRIVREG_TOKEN_ACME");
        assert_eq!(var("crates-io"), "PRIVREG_TOKEN_CRATES_IO");
        assert_eq!(var("my_reg2"), "PRIVREG_TOKEN_MY_REG2");
        assert_eq!(
            UpstreamNameRef::new("acme-x").unwrap().token_var(),
            "PRIVREG_TOKEN_ACME_X"
        );
        let pairs = [
            ("acme-x", "ACME_x", true),
            ("a", "A", true),
            ("a-b", "a_b", true),
            ("a", "b", false),
            ("ab", "a", false),
            ("a1", "a-1", false),
        ];
        for (a, b, shared) in pairs {
            let (a, b) = (UpstreamName::new(a).unwrap(), UpstreamName::new(b).unwrap());
            assert_eq!(a.shares_token_var(&b), shared, "{a} {b}");
            assert_eq!(a.shares_token_var(&b), a.token_var() == b.token_var());
        }
    }
}
