//! `[cache.shared]`: the team tier, a cache shared by several daemons on object storage
//! (memory → local disk → shared tier → upstream). Credentials never come from here: they come
//! from the standard environment variables or the OS keyring (`privreg login --shared`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, Upstream};
use crate::name::UpstreamName;

/// How long one request to the shared tier may take when `timeout` is absent.
pub const DEFAULT_SHARED_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a failing shared tier is skipped when `cooldown` is absent.
pub const DEFAULT_SHARED_COOLDOWN: Duration = Duration::from_secs(30);
/// The upstream whose files are shared when `upstreams` is absent.
pub const DEFAULT_SHARED_UPSTREAM: &str = "crates-io";

/// Whether a daemon writes what it verified back to the shared tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharedMode {
    /// `read-write` (the default): read, and write back verified files.
    #[default]
    ReadWrite,
    /// `read-only`: read only (laptops read what CI wrote).
    ReadOnly,
}

/// A validated `[cache.shared]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCacheConfig {
    /// `url`: `s3://bucket/prefix` as written.
    pub url: url::Url,
    /// The bucket (the URL's host).
    pub bucket: String,
    /// The key prefix inside the bucket, without slashes at either end (may be empty).
    pub prefix: String,
    /// `endpoint`: an S3-compatible server's base URL (`None`: the engine's default).
    pub endpoint: Option<url::Url>,
    /// `region` (`None`: from the environment, else the engine's default).
    pub region: Option<String>,
    /// `path-style`: `bucket` in the path rather than the host name (default: `true` when an
    /// `endpoint` is set, else `false`).
    pub path_style: bool,
    /// `mode`.
    pub mode: SharedMode,
    /// `upstreams`: the upstreams whose files may be read from and written to the tier.
    pub upstreams: Vec<UpstreamName>,
    /// `timeout`: how long one request to the tier may take before it is given up.
    pub timeout: Duration,
    /// `cooldown`: how long the tier is skipped after a failure (circuit breaker).
    pub cooldown: Duration,
}

impl SharedCacheConfig {
    /// Whether `up`'s files may be shared.
    pub fn shares(&self, up: &Upstream) -> bool {
        self.upstreams.contains(&up.name)
    }

    /// Whether verified files are written back.
    pub fn writes(&self) -> bool {
        self.mode == SharedMode::ReadWrite
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawShared {
    url: Spanned<String>,
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    path_style: Option<bool>,
    mode: Option<SharedMode>,
    upstreams: Option<Spanned<Vec<Spanned<String>>>>,
    timeout: Option<Spanned<String>>,
    cooldown: Option<Spanned<String>>,
}

/// Validates `[cache.shared]` against the upstreams configured.
pub(super) fn parse_shared(
    raw: &RawShared,
    upstreams: &[Upstream],
) -> Result<SharedCacheConfig, Invalid> {
    let url_text = raw.url.get_ref();
    let bad_url = |why: &str| {
        (
            raw.url.span(),
            format!("`cache.shared.url` {url_text:?} {why}; write it as \"s3://bucket/prefix\""),
        )
    };
    let url = url::Url::parse(url_text).map_err(|_| bad_url("is not a URL"))?;
    if url.scheme() != "s3" {
        return Err(bad_url(
            "is not an s3:// URL (S3 and S3-compatible servers are supported)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            raw.url.span(),
            "`cache.shared.url` must not hold credentials; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or `privreg login --shared`".to_owned(),
        ));
    }
    let bucket = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad_url("names no bucket"))?
        .to_owned();
    let prefix = url.path().trim_matches('/').to_owned();
    let endpoint = match &raw.endpoint {
        None => None,
        Some(e) => Some(
            url::Url::parse(e.get_ref())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    (
                        e.span(),
                        format!(
                            "`cache.shared.endpoint` {:?} is not an http(s) URL such as \"http://127.0.0.1:9000\"",
                            e.get_ref()
                        ),
                    )
                })?,
        ),
    };
    let region = match &raw.region {
        Some(r) if r.get_ref().trim().is_empty() => {
            return Err((r.span(), "`cache.shared.region` is empty".to_owned()));
        }
        r => r.as_ref().map(|r| r.get_ref().trim().to_owned()),
    };
    let names = match &raw.upstreams {
        None => vec![UpstreamName::try_from(DEFAULT_SHARED_UPSTREAM.to_owned()).expect("valid")],
        Some(list) => {
            let mut names = Vec::new();
            for n in list.get_ref() {
                let known = upstreams.iter().any(|u| u.name == n.get_ref().as_str());
                let name = UpstreamName::try_from(n.get_ref().clone())
                    .ok()
                    .filter(|_| known)
                    .ok_or_else(|| {
                        (
                            n.span(),
                            format!(
                                "`cache.shared.upstreams`: {:?} is not an upstream in [upstreams]",
                                n.get_ref()
                            ),
                        )
                    })?;
                names.push(name);
            }
            names
        }
    };
    let duration = |v: &Option<Spanned<String>>, key: &str, default: Duration| {
        super::nonzero_duration(v.as_ref(), &format!("cache.shared.{key}"), "1s", default)
    };
    Ok(SharedCacheConfig {
        bucket,
        prefix,
        path_style: raw.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region,
        mode: raw.mode.unwrap_or_default(),
        upstreams: names,
        timeout: duration(&raw.timeout, "timeout", DEFAULT_SHARED_TIMEOUT)?,
        cooldown: duration(&raw.cooldown, "cooldown", DEFAULT_SHARED_COOLDOWN)?,
        url,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const UPS: &str = "[upstreams.crates-io]\nindex = \"sparse+https://index.example/\"\n\
                       [upstreams.acme]\nindex = \"sparse+https://acme.example/index/\"\n";

    fn parse(shared: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            Path::new("config.toml"),
            &format!("{UPS}[cache.shared]\n{shared}"),
        )
    }

    #[test]
    fn defaults() {
        let c = parse("url = \"s3://team-cache/privreg/\"\n").unwrap();
        let s = c.shared.unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("team-cache", "privreg")
        );
        assert_eq!(s.mode, SharedMode::ReadWrite);
        assert_eq!(s.upstreams, ["crates-io"]);
        assert!(!s.path_style);
        assert_eq!(
            (s.timeout, s.cooldown),
            (DEFAULT_SHARED_TIMEOUT, DEFAULT_SHARED_COOLDOWN)
        );
        assert!(s.shares(&c.upstreams[0]) && !s.shares(&c.upstreams[1]));
        assert!(Config::parse(Path::new("c"), UPS).unwrap().shared.is_none());
    }

    #[test]
    fn every_key() {
        let c = parse(
            "url = \"s3://b\"\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\n\
             mode = \"read-only\"\nupstreams = [\"acme\", \"crates-io\"]\ntimeout = \"250ms\"\n\
             cooldown = \"1m\"\n",
        )
        .unwrap();
        let s = c.shared.unwrap();
        assert_eq!(s.prefix, "");
        assert!(s.path_style && !s.writes());
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.upstreams, ["acme", "crates-io"]);
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert!(s.shares(&c.upstreams[1]));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let cases = [
            ("url = \"https://b/p\"\n", "`cache.shared.url`"),
            (
                "url = \"s3://key:secret@b/p\"\n",
                "must not hold credentials",
            ),
            (
                "url = \"s3://b\"\nendpoint = \"ftp://x\"\n",
                "`cache.shared.endpoint`",
            ),
            (
                "url = \"s3://b\"\nupstreams = [\"nope\"]\n",
                "`cache.shared.upstreams`",
            ),
            (
                "url = \"s3://b\"\ntimeout = \"0s\"\n",
                "`cache.shared.timeout`",
            ),
            ("url = \"s3://b\"\nmode = \"write\"\n", "unknown variant"),
            (
                "url = \"s3://b\"\naccess-key = \"x\"\n",
                "unknown field `access-key`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.to_string().contains(want), "{text}: {err}");
            assert!(err.line.is_some_and(|l| l >= 5), "{text}: {err}");
        }
    }
}
