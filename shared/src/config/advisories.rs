//! `[advisories]`: where the RustSec advisory database comes from and how often it is refreshed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Invalid;

/// `advisories.refresh` when absent: once a day.
pub const DEFAULT_ADVISORY_REFRESH: Duration = Duration::from_hours(24);

/// Where the advisory database comes from (`advisories.db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvisoryDbSource {
    /// The public RustSec advisory-db git repository (no `db` given). Its URL is the `rustsec`
    /// crate's, resolved where that crate is linked (the daemon).
    Default,
    /// A git repository to fetch (an `https://` URL, the only kind the `rustsec` crate fetches).
    Git(String),
    /// A directory laid out like advisory-db (`crates/<name>/RUSTSEC-….md`), copied from.
    /// Relative paths are resolved against the config directory.
    Path(PathBuf),
}

/// `[advisories]` in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisories {
    /// `db`: where the database comes from.
    pub db: AdvisoryDbSource,
    /// `refresh`: how often the database is fetched again.
    pub refresh: Duration,
    /// Whether config.toml has an `[advisories]` table. Without one the daemon fetches the
    /// database only once something asks for it (an `advisory` pin or `privreg audit`), so that a
    /// plain setup never reaches out to the advisory database's host by itself.
    pub explicit: bool,
}

impl Default for Advisories {
    fn default() -> Advisories {
        Advisories {
            db: AdvisoryDbSource::Default,
            refresh: DEFAULT_ADVISORY_REFRESH,
            explicit: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdvisories {
    db: Option<Spanned<String>>,
    refresh: Option<Spanned<String>>,
}

/// Validates `[advisories]`; `config_file` anchors a relative `db` path.
pub(super) fn parse_advisories(
    raw: Option<&RawAdvisories>,
    config_file: &Path,
) -> Result<Advisories, Invalid> {
    let Some(raw) = raw else {
        return Ok(Advisories::default());
    };
    let db = match &raw.db {
        None => AdvisoryDbSource::Default,
        Some(db) => parse_db(db.get_ref(), config_file).map_err(|m| (db.span(), m))?,
    };
    let refresh = match &raw.refresh {
        None => DEFAULT_ADVISORY_REFRESH,
        Some(r) => humantime::parse_duration(r.get_ref())
            .ok()
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| {
                (
                    r.span(),
                    format!(
                        "`advisories.refresh` {:?} is not a duration of at least 1s such as \"1d\"",
                        r.get_ref()
                    ),
                )
            })?,
    };
    Ok(Advisories {
        db,
        refresh,
        explicit: true,
    })
}

fn parse_db(db: &str, config_file: &Path) -> Result<AdvisoryDbSource, String> {
    if db.trim().is_empty() {
        return Err("`advisories.db` is empty; give a git URL or a directory".to_owned());
    }
    if db.starts_with("https://") {
        return url::Url::parse(db)
            .map(|_| AdvisoryDbSource::Git(db.to_owned()))
            .map_err(|e| format!("`advisories.db` {db:?} is not a URL: {e}"));
    }
    if db.contains("://") || db.starts_with("git@") {
        return Err(format!(
            "`advisories.db` {db:?}: only https:// git URLs and local directories are supported"
        ));
    }
    let path = Path::new(db);
    Ok(AdvisoryDbSource::Path(if path.is_absolute() {
        path.to_owned()
    } else {
        config_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(path)
    }))
}
