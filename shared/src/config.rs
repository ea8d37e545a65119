//! `config.toml`: parse (serde, unknown keys refused), then validate, then hand back a [`Config`]
//! that the caller swaps in whole. Every error names the file and line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use crate::name::UpstreamName;
use crate::policy::UpstreamRef;

mod shared_cache;

pub use shared_cache::{
    DEFAULT_SHARED_COOLDOWN, DEFAULT_SHARED_TIMEOUT, DEFAULT_SHARED_UPSTREAM, SharedCacheConfig,
    SharedMode,
};
mod advisories;

pub use advisories::{Advisories, AdvisoryDbSource, DEFAULT_ADVISORY_REFRESH};

/// The config file's name inside the config directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The address the daemon listens on when `listen` is absent (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// An upstream's `priority` when it sets none; the pin file's `Pin-Priority` values compare against
/// it.
pub const DEFAULT_PRIORITY: i32 = 500;
/// An upstream's `ttl` when it sets none: how long a cached index file counts as fresh.
pub const DEFAULT_TTL: Duration = Duration::from_mins(2);
/// An upstream's `timeout` when it sets none: how long one request to it may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// An upstream's `stale` when it sets none: how long past its `ttl` a file may still be served at
/// once.
pub const DEFAULT_STALE: Duration = Duration::from_hours(24);

/// Bounds on what the daemon accepts and how hard it presses an upstream: `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest index file or `config.json` accepted from an upstream (`max-index-size`).
    pub max_index_size: u64,
    /// Largest `.crate` accepted from an upstream (`max-crate-size`).
    pub max_crate_size: u64,
    /// Requests in flight to one upstream at a time; more wait their turn
    /// (`max-upstream-requests`).
    pub max_upstream_requests: usize,
    /// Largest request head (request line and headers) accepted from a client
    /// (`max-header-size`); a larger one gets 431. Read when the daemon starts.
    pub max_header_size: usize,
    /// Client connections held open at once (`max-connections`); at the limit a new one takes
    /// the slot of the one that has gone longest without a request. Read when the daemon starts.
    pub max_connections: usize,
    /// How long a client may take to send a request head (`header-read-timeout`), and for
    /// HTTP/1.1 how long a connection may wait between requests. Read when the daemon starts.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight may stay silent (`idle-timeout`).
    /// Read when the daemon starts.
    pub idle_timeout: Duration,
    /// Bytes the daemon's in-memory index cache may hold (`index-memory`): upstream index files
    /// with their parsed lines, and merged views; the least recently used go first and are read
    /// back from the disk cache when asked for again. Read when the daemon starts.
    pub index_memory: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_index_size: 64 << 20,
            max_crate_size: 256 << 20,
            max_upstream_requests: 32,
            max_header_size: 64 << 10,
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(1),
            index_memory: 64 << 20,
        }
    }
}

/// `[cache] max-size` when absent: the disk cache's bound.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 10 << 30;
/// `[cache] max-age` when absent: files unused this long are removed (as cargo does with its own
/// caches).
pub const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_hours(90 * 24);

/// The disk cache's bounds, `[cache]`: enforced by the daemon's daily collection and by
/// `privreg gc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// `max-size`: least recently used crates and index files are removed beyond it (`None`:
    /// `"none"`, no bound).
    pub max_size: Option<u64>,
    /// `max-age`: crates and index files unused this long are removed (`None`: `"none"`).
    pub max_age: Option<Duration>,
}

impl Default for CacheLimits {
    fn default() -> CacheLimits {
        CacheLimits {
            max_size: Some(DEFAULT_CACHE_MAX_SIZE),
            max_age: Some(DEFAULT_CACHE_MAX_AGE),
        }
    }
}

/// A problem with a config file, located where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file the problem is in.
    pub path: PathBuf,
    /// 1-based; `None` when the whole file is the problem (e.g. it cannot be read).
    pub line: Option<usize>,
    /// What is wrong, in lower case, without the file or line (the [`Display`](fmt::Display) adds
    /// them).
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Which OS credential store holds tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyringChoice {
    /// `auto`: the platform's usual stores, first one that works (on Linux the Secret Service, then
    /// keyutils).
    #[default]
    Auto,
    /// `secret-service`: the D-Bus Secret Service (GNOME Keyring, `KWallet`).
    SecretService,
    /// `keyutils`: the Linux kernel keyring.
    Keyutils,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    auth: Option<bool>,
    keyring: Option<KeyringChoice>,
    #[serde(default)]
    upstreams: IndexMap<Spanned<String>, RawUpstream>,
    limits: Option<RawLimits>,
    advisories: Option<advisories::RawAdvisories>,
    cache: Option<RawCache>,
}

/// `[cache]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCache {
    max_size: Option<Spanned<RawSize>>,
    max_age: Option<Spanned<String>>,
    shared: Option<shared_cache::RawShared>,
}

/// A size: bytes, or a string such as "64MiB".
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_index_size: Option<Spanned<RawSize>>,
    max_crate_size: Option<Spanned<RawSize>>,
    max_upstream_requests: Option<Spanned<i64>>,
    max_header_size: Option<Spanned<RawSize>>,
    max_connections: Option<Spanned<i64>>,
    header_read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    index_memory: Option<Spanned<RawSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    index: Spanned<String>,
    priority: Option<Spanned<i64>>,
    ttl: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    stale: Option<Spanned<String>>,
    publish: Option<Spanned<bool>>,
}

/// A validated upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The table key under `[upstreams]`, e.g. `crates-io`.
    pub name: UpstreamName,
    /// The index URL as written, `sparse+` included.
    pub index: String,
    /// The index URL without `sparse+`, ending in `/`: what paths are joined onto.
    pub base: url::Url,
    /// `priority`: higher wins the claim on a crate name ([`DEFAULT_PRIORITY`] when absent).
    pub priority: i32,
    /// `ttl`: how long a cached index file is served without asking the upstream ([`DEFAULT_TTL`]
    /// when absent).
    pub ttl: Duration,
    /// How long one request to this upstream may take.
    pub timeout: Duration,
    /// How long past its `ttl` a cached file may still be served at once while it is
    /// revalidated in the background (stale-while-revalidate); older files are revalidated
    /// before they are served.
    pub stale: Duration,
    /// `publish`: whether `cargo publish --registry privreg` goes to this upstream (at most one has
    /// it).
    pub publish: bool,
    /// The `[limits]` in force (the same for every upstream).
    pub limits: Limits,
}

impl Upstream {
    /// The host of [`base`](Self::base), or `""` if it has none (validation refuses that).
    pub fn host(&self) -> &str {
        self.base.host_str().unwrap_or("")
    }

    /// This upstream as the layering policy sees it: name, host and priority.
    pub fn policy_ref(&self) -> UpstreamRef {
        UpstreamRef {
            name: self.name.to_string(),
            host: self.host().to_owned(),
            priority: self.priority,
        }
    }
}

/// A validated `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `listen`: the daemon's loopback socket address ([`DEFAULT_LISTEN`] when absent; port 0 picks
    /// a free port).
    pub listen: SocketAddr,
    /// `auth`: whether cargo must present the local token (default `true`).
    pub auth: bool,
    /// `keyring`: which OS credential store holds tokens (default `auto`).
    pub keyring: KeyringChoice,
    /// In declaration order (earlier wins ties).
    pub upstreams: Vec<Upstream>,
    /// `[limits]`, defaults where absent.
    pub limits: Limits,
    /// `[cache.shared]`: the team tier, if configured.
    pub shared: Option<SharedCacheConfig>,
    /// `[advisories]`, defaults where absent.
    pub advisories: Advisories,
    /// `[cache]`, defaults where absent.
    pub cache: CacheLimits,
}

impl Config {
    /// Reads and validates `config.toml` in `config_dir`.
    pub fn load(config_dir: &Path) -> Result<Config, ConfigError> {
        let path = config_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            path: path.clone(),
            line: None,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file; run `privreg init` to create it".to_owned()
            } else {
                format!("cannot read: {e}")
            },
        })?;
        Config::parse(&path, &text)
    }

    /// Parses and validates the text of a config file; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |span: Option<Span>, message: String| ConfigError {
            path: path.to_owned(),
            line: span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            err(e.span(), message)
        })?;
        let listen = parse_listen(raw.listen.as_ref()).map_err(|(span, m)| err(Some(span), m))?;
        let limits = match &raw.limits {
            None => Limits::default(),
            Some(l) => parse_limits(l).map_err(|(span, m)| err(Some(span), m))?,
        };
        let cache = match &raw.cache {
            None => CacheLimits::default(),
            Some(c) => parse_cache(c).map_err(|(span, m)| err(Some(span), m))?,
        };
        let upstreams =
            parse_upstreams(raw.upstreams, limits).map_err(|(span, m)| err(Some(span), m))?;
        let shared = match raw.cache.as_ref().and_then(|c| c.shared.as_ref()) {
            None => None,
            Some(s) => Some(
                shared_cache::parse_shared(s, &upstreams)
                    .map_err(|(span, m)| err(Some(span), m))?,
            ),
        };
        let advisories = advisories::parse_advisories(raw.advisories.as_ref(), path)
            .map_err(|(span, m)| err(Some(span), m))?;
        Ok(Config {
            cache,
            listen,
            auth: raw.auth.unwrap_or(true),
            keyring: raw.keyring.unwrap_or_default(),
            upstreams,
            limits,
            shared,
            advisories,
        })
    }

    /// The upstream called `name` (a `&str`, `&String` or [`UpstreamName`]), if there is one.
    pub fn upstream(&self, name: impl AsRef<str>) -> Option<&Upstream> {
        let name = name.as_ref();
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// Where in the file a value is (a byte range).
type Span = std::ops::Range<usize>;

/// A validation error: the span it is about and the message.
type Invalid = (Span, String);

/// `listen`: a socket address, [`DEFAULT_LISTEN`] when absent.
fn parse_listen(raw: Option<&Spanned<String>>) -> Result<SocketAddr, Invalid> {
    let Some(l) = raw else {
        return Ok(DEFAULT_LISTEN
            .parse()
            .expect("default listen address parses"));
    };
    let addr: SocketAddr = l.get_ref().parse().map_err(|_| {
        (
            l.span(),
            format!(
                "`listen`: {:?} is not an address such as {DEFAULT_LISTEN}",
                l.get_ref()
            ),
        )
    })?;
    // The daemon is per developer: its cache holds private registries' crates and it hands out
    // upstream tokens' work, so it never answers another machine (a team server is another
    // product).
    if !addr.ip().is_loopback() {
        return Err((
            l.span(),
            format!(
                "`listen`: {addr} is not a loopback address; privreg serves only this machine (use 127.0.0.1 or [::1], e.g. {DEFAULT_LISTEN})"
            ),
        ));
    }
    Ok(addr)
}

/// `[upstreams.*]`, in declaration order: each one valid, no two sharing a token variable, at
/// most one publishing.
fn parse_upstreams(
    raw: IndexMap<Spanned<String>, RawUpstream>,
    limits: Limits,
) -> Result<Vec<Upstream>, Invalid> {
    let mut upstreams: Vec<Upstream> = Vec::new();
    let mut publisher: Option<UpstreamName> = None;
    for (name, raw_up) in raw {
        let (span, name) = (name.span(), name.into_inner());
        let name = UpstreamName::try_from(name).map_err(|e| (span.clone(), e.to_string()))?;
        // Names that differ only in case or `-`/`_` share one `PRIVREG_TOKEN_<NAME>`: one
        // upstream's token would be sent to the other.
        if let Some(other) = upstreams.iter().find(|u| u.name.shares_token_var(&name)) {
            return Err((
                span,
                format!(
                    "upstreams {} and {name} would share the token variable {}; rename one",
                    other.name,
                    name.token_var()
                ),
            ));
        }
        let up = parse_upstream(name, &raw_up, limits)?;
        if let Some(publish) = raw_up.publish.as_ref().filter(|_| up.publish) {
            if let Some(other) = &publisher {
                return Err((
                    publish.span(),
                    format!(
                        "upstreams {other} and {} both set `publish = true`; at most one may",
                        up.name
                    ),
                ));
            }
            publisher = Some(up.name.clone());
        }
        upstreams.push(up);
    }
    Ok(upstreams)
}

/// One `[upstreams.<name>]` table.
fn parse_upstream(
    name: UpstreamName,
    raw: &RawUpstream,
    limits: Limits,
) -> Result<Upstream, Invalid> {
    let index = raw.index.get_ref().clone();
    let base = parse_index_url(&index)
        .map_err(|m| (raw.index.span(), format!("upstream {name}: `index`: {m}")))?;
    let priority = match &raw.priority {
        None => DEFAULT_PRIORITY,
        Some(p) => i32::try_from(*p.get_ref())
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                (
                    p.span(),
                    format!("upstream {name}: `priority` must be a non-zero 32-bit integer"),
                )
            })?,
    };
    let ttl = parse_duration(&name, "ttl", "2m", raw.ttl.as_ref(), DEFAULT_TTL)?;
    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => humantime::parse_duration(t.get_ref())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                (
                    t.span(),
                    format!(
                        "upstream {name}: `timeout` {:?} is not a non-zero duration such as \"30s\"",
                        t.get_ref()
                    ),
                )
            })?,
    };
    let stale = parse_duration(&name, "stale", "1h", raw.stale.as_ref(), DEFAULT_STALE)?;
    let publish = raw.publish.as_ref().is_some_and(|p| *p.get_ref());
    Ok(Upstream {
        name,
        index,
        base,
        priority,
        ttl,
        timeout,
        stale,
        publish,
        limits,
    })
}

/// An upstream's duration setting `key` (e.g. `ttl`); `example` goes into the error.
fn parse_duration(
    name: &UpstreamName,
    key: &str,
    example: &str,
    raw: Option<&Spanned<String>>,
    default: Duration,
) -> Result<Duration, Invalid> {
    let Some(t) = raw else { return Ok(default) };
    humantime::parse_duration(t.get_ref()).map_err(|e| {
        (
            t.span(),
            format!(
                "upstream {name}: `{key}` {:?} is not a duration such as \"{example}\": {e}",
                t.get_ref()
            ),
        )
    })
}

/// A non-zero duration setting (`key` is its dotted path, e.g. `limits.idle-timeout`),
/// `default` when absent; `example` goes into the error.
fn nonzero_duration(
    v: Option<&Spanned<String>>,
    key: &str,
    example: &str,
    default: Duration,
) -> Result<Duration, Invalid> {
    let Some(v) = v else { return Ok(default) };
    humantime::parse_duration(v.get_ref())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            (
                v.span(),
                format!(
                    "`{key}` {:?} is not a non-zero duration such as \"{example}\"",
                    v.get_ref()
                ),
            )
        })
}

/// A size such as `"10GiB"` or a number of bytes (`None` when it is neither).
pub fn parse_size(text: &str) -> Option<u64> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|b| b.as_u64())
}

fn parse_cache(raw: &RawCache) -> Result<CacheLimits, Invalid> {
    let d = CacheLimits::default();
    let max_size = match &raw.max_size {
        None => d.max_size,
        Some(v) => match v.get_ref() {
            RawSize::Text(t) if t == "none" => None,
            RawSize::Bytes(n) => Some(*n),
            RawSize::Text(t) => Some(parse_size(t).ok_or_else(|| {
                (
                    v.span(),
                    format!("`cache.max-size` {t:?} is not a size such as \"10GiB\" (or \"none\")"),
                )
            })?),
        },
    };
    let max_age = match &raw.max_age {
        None => d.max_age,
        Some(v) if v.get_ref() == "none" => None,
        Some(v) => Some(
            humantime::parse_duration(v.get_ref())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    (
                        v.span(),
                        format!(
                            "`cache.max-age` {:?} is not a non-zero duration such as \"90d\" (or \"none\")",
                            v.get_ref()
                        ),
                    )
                })?,
        ),
    };
    Ok(CacheLimits { max_size, max_age })
}

fn parse_limits(raw: &RawLimits) -> Result<Limits, Invalid> {
    let d = Limits::default();
    let size = |v: &Option<Spanned<RawSize>>, key: &str, min: u64, default: u64| {
        let Some(v) = v else { return Ok(default) };
        let n = match v.get_ref() {
            RawSize::Bytes(n) => Some(*n),
            RawSize::Text(t) => t.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
        };
        n.filter(|n| *n >= min).ok_or_else(|| {
            (
                v.span(),
                format!(
                    "`limits.{key}` must be a size of at least {min} bytes, such as \"64MiB\" or 65536"
                ),
            )
        })
    };
    let max_upstream_requests = match &raw.max_upstream_requests {
        None => d.max_upstream_requests,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| (1..=4096).contains(n))
            .ok_or_else(|| {
                (
                    n.span(),
                    "`limits.max-upstream-requests` must be between 1 and 4096".to_owned(),
                )
            })?,
    };
    let max_connections = match &raw.max_connections {
        None => d.max_connections,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| (1..=65536).contains(n))
            .ok_or_else(|| {
                (
                    n.span(),
                    "`limits.max-connections` must be between 1 and 65536".to_owned(),
                )
            })?,
    };
    let duration = |v: &Option<Spanned<String>>, key: &str, default: Duration| {
        nonzero_duration(v.as_ref(), &format!("limits.{key}"), "10s", default)
    };
    let header_read_timeout = duration(
        &raw.header_read_timeout,
        "header-read-timeout",
        d.header_read_timeout,
    )?;
    let idle_timeout = duration(&raw.idle_timeout, "idle-timeout", d.idle_timeout)?;
    let header = size(
        &raw.max_header_size,
        "max-header-size",
        8 << 10,
        d.max_header_size as u64,
    )?;
    Ok(Limits {
        max_index_size: size(
            &raw.max_index_size,
            "max-index-size",
            1024,
            d.max_index_size,
        )?,
        max_crate_size: size(
            &raw.max_crate_size,
            "max-crate-size",
            1024,
            d.max_crate_size,
        )?,
        max_upstream_requests,
        max_header_size: usize::try_from(header).unwrap_or(usize::MAX),
        max_connections,
        header_read_timeout,
        idle_timeout,
        index_memory: size(&raw.index_memory, "index-memory", 64 << 10, d.index_memory)?,
    })
}

/// Why an `index` URL is refused; the message quotes the URL, except for credentials in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexUrlError {
    /// It lacks the `sparse+` prefix (a git index, or a plain URL).
    #[error(
        "{index:?} is not a sparse index URL; write it as `sparse+https://…/` (git indexes are not supported)"
    )]
    NotSparse {
        /// The URL as written, with any credentials replaced by `***`.
        index: String,
    },
    /// What follows `sparse+` does not parse as a URL.
    #[error("{index:?} is not a URL: {reason}")]
    NotUrl {
        /// The URL as written, with any credentials replaced by `***`.
        index: String,
        /// Why the URL parser refused it.
        reason: url::ParseError,
    },
    /// The scheme is neither `http` nor `https`.
    #[error("{index:?} must use http or https")]
    Scheme {
        /// The URL as written, with any credentials replaced by `***`.
        index: String,
    },
    /// The URL has no host.
    #[error("{index:?} has no host")]
    NoHost {
        /// The URL as written, with any credentials replaced by `***`.
        index: String,
    },
    /// The URL carries a user name or password; the URL is not quoted so they stay out of logs.
    #[error("credentials do not belong in the URL; use `privreg login`")]
    Credentials,
    /// The URL has a `?query` or `#fragment`.
    #[error("{index:?} must not have a query or fragment")]
    QueryOrFragment {
        /// The URL as written, with any credentials replaced by `***`.
        index: String,
    },
}

/// Checks a sparse index URL and returns its base (without `sparse+`, ending in `/`).
pub fn parse_index_url(index: &str) -> Result<url::Url, IndexUrlError> {
    // Quoted in errors with any `user:password@` replaced, whatever else is wrong with it.
    let index_owned = || crate::secrets::redact_url(index);
    let Some(rest) = index.strip_prefix("sparse+") else {
        return Err(IndexUrlError::NotSparse {
            index: index_owned(),
        });
    };
    let mut url = url::Url::parse(rest).map_err(|reason| IndexUrlError::NotUrl {
        index: index_owned(),
        reason,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(IndexUrlError::Scheme {
            index: index_owned(),
        });
    }
    if url.host_str().is_none() {
        return Err(IndexUrlError::NoHost {
            index: index_owned(),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(IndexUrlError::Credentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(IndexUrlError::QueryOrFragment {
            index: index_owned(),
        });
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/cfg/config.toml"), text)
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
listen = "127.0.0.1:0"
auth = false

[upstreams.acme]
index = "sparse+http://127.0.0.1:1/index"
priority = 600
ttl = "2m"
publish = true

[upstreams.crates-io]
index = "sparse+http://127.0.0.1:2/index/"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert!(!c.auth);
        let names: Vec<_> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["acme", "crates-io"]);
        assert_eq!(c.upstreams[0].base.as_str(), "http://127.0.0.1:1/index/");
        assert_eq!(c.upstreams[0].ttl, Duration::from_mins(2));
        assert_eq!(c.upstreams[1].priority, DEFAULT_PRIORITY);
        assert!(c.upstreams[0].publish);
        for listen in ["[::1]:7878", "127.0.0.2:7878", "127.0.0.1:7878"] {
            let c = parse(&format!("listen = \"{listen}\"\n")).unwrap();
            assert_eq!(c.listen.to_string(), listen);
        }
    }

    #[test]
    fn advisories() {
        let d = parse("").unwrap().advisories;
        assert_eq!(d, Advisories::default());
        assert!(!d.explicit);
        assert_eq!(d.refresh, Duration::from_hours(24));
        let a = parse("[advisories]\n").unwrap().advisories;
        assert!(a.explicit);
        assert_eq!(a.db, AdvisoryDbSource::Default);
        let a = parse("[advisories]\ndb = \"adb\"\nrefresh = \"2h\"\n")
            .unwrap()
            .advisories;
        assert_eq!(a.db, AdvisoryDbSource::Path("/cfg/adb".into()));
        assert_eq!(a.refresh, Duration::from_hours(2));
        let a = parse("[advisories]\ndb = \"https://127.0.0.1:1/advisory-db.git\"\n")
            .unwrap()
            .advisories;
        assert_eq!(
            a.db,
            AdvisoryDbSource::Git("https://127.0.0.1:1/advisory-db.git".into())
        );
        let a = parse("[advisories]\ndb = \"/srv/adb\"\n")
            .unwrap()
            .advisories;
        assert_eq!(a.db, AdvisoryDbSource::Path("/srv/adb".into()));
    }

    #[test]
    fn cache_bounds() {
        assert_eq!(parse("").unwrap().cache, CacheLimits::default());
        let c = parse("[cache]\nmax-size = \"1GiB\"\nmax-age = \"30d\"\n").unwrap();
        assert_eq!(
            c.cache,
            CacheLimits {
                max_size: Some(1 << 30),
                max_age: Some(Duration::from_hours(30 * 24)),
            }
        );
        let c = parse("[cache]\nmax-size = \"none\"\nmax-age = \"none\"\n").unwrap();
        assert_eq!((c.cache.max_size, c.cache.max_age), (None, None));
        assert_eq!(
            parse("[cache]\nmax-size = 4096\n").unwrap().cache.max_size,
            Some(4096)
        );
        for (text, line, needle) in [
            ("[cache]\nmax-size = \"big\"\n", 2, "cache.max-size"),
            ("\n[cache]\nmax-age = \"0s\"\n", 3, "cache.max-age"),
            ("[cache]\nmax-files = 1\n", 2, "max-files"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, Some(line), "{text}");
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }

    #[test]
    fn limits() {
        let c = parse(
            "[limits]\nmax-index-size = \"1MiB\"\nmax-crate-size = 2048\nmax-upstream-requests = 4\nmax-header-size = \"16 KiB\"\nmax-connections = 64\nheader-read-timeout = \"5s\"\nidle-timeout = \"2m\"\nindex-memory = \"256KiB\"\n[upstreams.a]\nindex = \"sparse+http://h/\"\n",
        )
        .unwrap();
        let want = Limits {
            max_index_size: 1 << 20,
            max_crate_size: 2048,
            max_upstream_requests: 4,
            max_header_size: 16 << 10,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_mins(2),
            index_memory: 256 << 10,
        };
        assert_eq!(c.limits, want);
        assert_eq!(c.upstreams[0].limits, want);
        assert_eq!(parse("").unwrap().limits, Limits::default());
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.auth);
        assert!(c.upstreams.is_empty());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("listen = \"127.0.0.1:0\"\n\n[upstreams.a]\nindex = \"sparse+http://h/\"\nprioritee = 5\n")
            .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().starts_with("/cfg/config.toml:5: "), "{e}");
        assert!(e.message.contains("prioritee"), "{e}");
    }

    #[test]
    fn validation_errors_name_the_line() {
        let cases = [
            ("[upstreams.a]\nindex = \"https://h/\"\n", 2, "sparse"),
            ("[upstreams.a]\nindex = \"sparse+ftp://h/\"\n", 2, "http"),
            (
                "[upstreams.a]\nindex = \"sparse+http://u:p@h/\"\n",
                2,
                "privreg login",
            ),
            (
                "[upstreams.a]\nindex = \"sparse+http://h/\"\npriority = 0\n",
                3,
                "non-zero",
            ),
            (
                "[upstreams.a]\nindex = \"sparse+http://h/\"\nttl = \"soon\"\n",
                3,
                "duration",
            ),
            ("listen = \"nowhere\"\n", 1, "listen"),
            (
                "listen = \"0.0.0.0:7878\"\n",
                1,
                "`listen`: 0.0.0.0:7878 is not a loopback",
            ),
            ("# lan\nlisten = \"[::]:7878\"\n", 2, "not a loopback"),
            (
                "[upstreams.a]\nindex = \"sparse+http://h/\"\ntimeout = \"0s\"\n",
                3,
                "timeout",
            ),
            (
                "[upstreams.a]\nindex = \"sparse+http://h/\"\npublish = true\n[upstreams.b]\nindex = \"sparse+http://i/\"\npublish = true\n",
                6,
                "at most one",
            ),
            (
                "[upstreams.\"a b\"]\nindex = \"sparse+http://h/\"\n",
                1,
                "upstream name",
            ),
            ("[upstreams.a]\npriority = 3\n", 1, "index"),
            (
                "[upstreams.acme-x]\nindex = \"sparse+http://h/\"\n[upstreams.ACME_x]\nindex = \"sparse+http://i/\"\n",
                3,
                "PRIVREG_TOKEN_ACME_X",
            ),
            ("[limits]\nmax-index-size = \"huge\"\n", 2, "max-index-size"),
            ("[limits]\nmax-crate-size = 12\n", 2, "at least"),
            ("[limits]\n\nmax-upstream-requests = 0\n", 3, "between"),
            (
                "[limits]\nmax-header-size = \"1KiB\"\n",
                2,
                "max-header-size",
            ),
            ("[limits]\nmax-body = 1\n", 2, "max-body"),
            ("[limits]\nmax-connections = 0\n", 2, "max-connections"),
            (
                "[limits]\nheader-read-timeout = \"0s\"\n",
                2,
                "header-read-timeout",
            ),
            ("[limits]\nidle-timeout = \"soon\"\n", 2, "idle-timeout"),
            (
                "[limits]\nindex-memory = \"1KiB\"\n",
                2,
                "limits.index-memory",
            ),
            ("[limits]\n\nindex-memory = \"lots\"\n", 3, "index-memory"),
            (
                "[advisories]\nrefresh = \"often\"\n",
                2,
                "advisories.refresh",
            ),
            (
                "[advisories]\ndb = \"git://h/advisory-db\"\n",
                2,
                "advisories.db",
            ),
            ("[advisories]\n\nurl = \"x\"\n", 3, "url"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn validation_messages_are_exact() {
        let up = |rest: &str| format!("[upstreams.a]\nindex = \"sparse+http://h/\"\n{rest}");
        let cases = [
            (
                up("priority = 0\n"),
                "upstream a: `priority` must be a non-zero 32-bit integer",
            ),
            (
                up("timeout = \"0s\"\n"),
                "upstream a: `timeout` \"0s\" is not a non-zero duration such as \"30s\"",
            ),
            (
                up("publish = true\n[upstreams.b]\nindex = \"sparse+http://i/\"\npublish = true\n"),
                "upstreams a and b both set `publish = true`; at most one may",
            ),
            (
                "[upstreams.acme-x]\nindex = \"sparse+http://h/\"\n[upstreams.ACME_x]\nindex = \"sparse+http://i/\"\n".to_owned(),
                "upstreams acme-x and ACME_x would share the token variable PRIVREG_TOKEN_ACME_X; rename one",
            ),
            (
                "[upstreams.\"a b\"]\nindex = \"sparse+http://h/\"\n".to_owned(),
                "upstream name \"a b\" may only hold ASCII letters, digits, `-` and `_`",
            ),
            (
                "[upstreams.\"\"]\nindex = \"sparse+http://h/\"\n".to_owned(),
                "upstream name \"\" may only hold ASCII letters, digits, `-` and `_`",
            ),
            (
                "listen = \"nowhere\"\n".to_owned(),
                "`listen`: \"nowhere\" is not an address such as 127.0.0.1:7878",
            ),
            (
                "[upstreams.a]\nindex = \"https://h/\"\n".to_owned(),
                "upstream a: `index`: \"https://h/\" is not a sparse index URL; write it as `sparse+https://…/` (git indexes are not supported)",
            ),
            (
                "[upstreams.a]\nindex = \"sparse+http://u:p@h/\"\n".to_owned(),
                "upstream a: `index`: credentials do not belong in the URL; use `privreg login`",
            ),
            (
                "[upstreams.a]\nindex = \"sparse+http://h/?q\"\n".to_owned(),
                "upstream a: `index`: \"sparse+http://h/?q\" must not have a query or fragment",
            ),
            (
                "[limits]\nmax-upstream-requests = 0\n".to_owned(),
                "`limits.max-upstream-requests` must be between 1 and 4096",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(&text).unwrap_err().message, want, "{text:?}");
        }
        let e = parse(&up("stale = \"x\"\n")).unwrap_err();
        assert!(
            e.message
                .starts_with("upstream a: `stale` \"x\" is not a duration such as \"1h\": "),
            "{e}"
        );
    }

    #[test]
    fn upstream_names_are_at_most_64_characters() {
        let text = |n: &str| format!("[upstreams.{n}]\nindex = \"sparse+http://h/\"\n");
        let n64 = "a".repeat(64);
        assert_eq!(parse(&text(&n64)).unwrap().upstreams[0].name, n64.as_str());
        let n65 = "a".repeat(65);
        let e = parse(&text(&n65)).unwrap_err();
        assert_eq!(e.line, Some(1));
        assert_eq!(
            e.message,
            format!("upstream name \"{n65}\" is 65 characters long; the limit is 64")
        );
    }

    #[test]
    fn index_url_errors_are_variants() {
        assert!(matches!(
            parse_index_url("https://h/"),
            Err(IndexUrlError::NotSparse { .. })
        ));
        assert!(matches!(
            parse_index_url("sparse+ftp://h/"),
            Err(IndexUrlError::Scheme { .. })
        ));
        assert_eq!(
            parse_index_url("sparse+http://u:p@h/"),
            Err(IndexUrlError::Credentials)
        );
        assert_eq!(
            parse_index_url("sparse+http://h/x").unwrap().as_str(),
            "http://h/x/"
        );
    }

    #[test]
    fn index_url_errors_never_quote_a_password() {
        for (bad, quoted) in [
            ("https://u:hunter2@h/", "https://***@h/"),
            ("sparse+ftp://u:hunter2@h/", "sparse+ftp://***@h/"),
            ("sparse+http://u:hunter2@h/?q", "credentials do not belong"),
            ("sparse+http://u:hunter2@[::1/", "sparse+http://***@[::1/"),
            ("sparse+http://:hunter2@/", "sparse+http://***@/"),
        ] {
            let err = parse_index_url(bad).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
            assert!(err.contains(quoted), "{bad}: {err}");
        }
        assert_eq!(
            crate::secrets::redact_url("sparse+http://h/a@b"),
            "sparse+http://h/a@b"
        );
        assert_eq!(crate::secrets::redact_url("not a url"), "not a url");
    }
}
