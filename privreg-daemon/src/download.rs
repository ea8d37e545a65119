//! Crate downloads: routed to the upstream whose line (and checksum) the layered view served,
//! verified against that checksum, then cached by content.

use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use semver::Version;

use crate::body::{Body, FileBody};
use crate::daemon::Daemon;

use crate::layered::LayeredError;
use crate::upstream::FetchError;
pub(crate) use privreg_shared::route::View;
use privreg_shared::store::{Spooled, UpstreamPath};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DownloadError {
    #[error("{krate} {version} with checksum {cksum} is not served by privreg")]
    NotServed {
        krate: String,
        version: Version,
        cksum: String,
    },
    #[error(transparent)]
    Layered(#[from] LayeredError),
    #[error(transparent)]
    Upstream(#[from] FetchError),
    #[error("upstream {upstream}'s config.json has no usable `dl` URL: {message}")]
    BadDl { upstream: String, message: String },
    #[error(
        "upstream {upstream} sent {krate} {version} with sha256 {got}, but its index says {want}; nothing was cached"
    )]
    ChecksumMismatch {
        upstream: String,
        krate: String,
        version: Version,
        want: String,
        got: String,
    },
    #[error("cannot cache the download: {0}")]
    Cache(#[from] privreg_shared::store::CacheError),
}

/// Expands an upstream's `dl` template for one crate (cargo's rules: markers, else
/// `/{crate}/{version}/download` appended).
pub(crate) fn dl_url(
    dl: &str,
    krate: &str,
    version: &str,
    cksum: &str,
) -> Result<url::Url, String> {
    const MARKERS: [&str; 5] = [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    let expanded = if MARKERS.iter().any(|m| dl.contains(m)) {
        let prefix = index_prefix(krate);
        dl.replace("{crate}", krate)
            .replace("{version}", version)
            .replace("{prefix}", &prefix)
            .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
            .replace("{sha256-checksum}", cksum)
    } else {
        format!("{}/{krate}/{version}/download", dl.trim_end_matches('/'))
    };
    url::Url::parse(&expanded).map_err(|e| format!("{expanded:?} is not a URL: {e}"))
}

/// The directory prefix of a crate in cargo's layout, in the name's own case (`{prefix}`).
fn index_prefix(krate: &str) -> String {
    match krate.len() {
        0 => String::new(),
        1 => "1".to_owned(),
        2 => "2".to_owned(),
        3 => format!("3/{}", krate.get(..1).unwrap_or_default()),
        _ => format!(
            "{}/{}",
            krate.get(..2).unwrap_or_default(),
            krate.get(2..4).unwrap_or_default()
        ),
    }
}

impl Daemon {
    /// Serves `/dl/{crate}/{version}/{cksum}` (or a per-upstream view's): the cached file, or a
    /// verified download, of a version the view serves with that checksum; and whether the file
    /// was already cached when asked for. A cached file is streamed from disk.
    pub(crate) async fn download(
        &self,
        view: View<'_>,
        name: &CrateName,
        version: &Version,
        cksum: &str,
    ) -> Result<(Body, bool), DownloadError> {
        let (krate, version) = (name.as_str(), version.clone());
        // A cached copy is checked against its checksum before it is served; a damaged one is
        // dropped.
        let cached = || {
            self.cache()
                .open_crate(cksum)
                .map(|(file, len)| Body::File(FileBody::new(file, len)))
        };
        let up = match self.source_of(view, name, &version, cksum).await {
            Ok(up) => up,
            Err(e @ DownloadError::NotServed { .. }) => return Err(e),
            // The upstream cannot be asked and nothing is cached for the crate: a copy verified
            // earlier is still good.
            Err(e) => match cached() {
                Some(data) => return Ok((data, true)),
                None => return Err(e),
            },
        };
        if let Some(data) = cached() {
            return Ok((data, true));
        }
        let flight = self.download_lock(cksum);
        let _guard = flight.lock().await;
        // Downloaded meanwhile by a concurrent request: not cached when this one came in.
        if let Some(data) = cached() {
            return Ok((data, false));
        }
        if let Some(data) = self.crate_from_shared_tier(&up, cksum).await {
            return Ok((data, false));
        }
        let url = self.dl_url_for(&up, krate, &version, cksum).await?;
        let what = format!("the download of {krate} {version}");
        let asked = std::time::Instant::now();
        let mut spool = self.cache().spool(cksum);
        let data = self.upstreams().download(&up, url, &what, &mut spool).await;
        let outcome = data
            .as_ref()
            .map_or_else(FetchError::metric_label, |()| "ok");
        let took = asked.elapsed();
        self.metrics().upstream(&up.name, "download", outcome, took);
        data?;
        // Verified as it was written; only a match is renamed into the cache. Not being able to
        // cache (a full disk) still serves the verified bytes. Cache I/O stays on the async
        // worker: handing it to another thread (block_in_place) grew the daemon's memory under
        // load (the soak in `privreg-bench`).
        match self.cache().finish_spool(spool, cksum) {
            Ok(Spooled::File(file, len)) => {
                let path = self.cache().crate_path(cksum);
                self.upstreams().shared().put_crate(&up, cksum, path);
                Ok((Body::File(FileBody::new(file, len)), false))
            }
            Ok(Spooled::Memory(data)) => Ok((Body::from(data), false)),
            Err(got) => {
                tracing::error!(upstream = %up.name, krate, %version, want = cksum, got, "checksum mismatch; download dropped");
                let err = DownloadError::ChecksumMismatch {
                    upstream: up.name.to_string(),
                    krate: krate.to_owned(),
                    version,
                    want: cksum.to_owned(),
                    got,
                };
                self.upstreams().note_error(&up, &err.to_string());
                Err(err)
            }
        }
    }

    /// The upstream a view takes this exact version (and checksum) from.
    async fn source_of(
        &self,
        view: View<'_>,
        name: &CrateName,
        version: &Version,
        cksum: &str,
    ) -> Result<Upstream, DownloadError> {
        let not_served = || DownloadError::NotServed {
            krate: name.to_string(),
            version: version.clone(),
            cksum: cksum.to_owned(),
        };
        let rt = self.runtime();
        match view {
            View::Layered => {
                let merged = self.layered(&name.lower()).await?;
                let (up_name, served) = merged.sources.get(version).ok_or_else(not_served)?;
                if served != cksum {
                    return Err(not_served());
                }
                Ok(rt.config.upstream(up_name).ok_or_else(not_served)?.clone())
            }
            View::Upstream(up_name) => {
                let up = rt.config.upstream(up_name).ok_or_else(not_served)?.clone();
                let lower = name.lower();
                let fetched = self.upstreams().index(&up, &lower).await;
                let Some(entry) = fetched.entry else {
                    return Err(fetched
                        .error
                        .map_or_else(not_served, DownloadError::Upstream));
                };
                let file = entry.file.as_ref().ok_or_else(not_served)?;
                let listed = self
                    .single(&rt, &up, &lower, &entry, file)
                    .into_iter()
                    .any(|(i, _)| file.lines[i].vers == *version && file.lines[i].cksum == cksum);
                if listed { Ok(up) } else { Err(not_served()) }
            }
        }
    }

    async fn dl_url_for(
        &self,
        up: &Upstream,
        krate: &str,
        version: &Version,
        cksum: &str,
    ) -> Result<url::Url, DownloadError> {
        let fetched = self.upstreams().fetch(up, UpstreamPath::Config).await;
        let Some(entry) = fetched.entry else {
            return Err(fetched.error.map_or_else(
                || DownloadError::BadDl {
                    upstream: up.name.to_string(),
                    message: "config.json is missing".into(),
                },
                DownloadError::Upstream,
            ));
        };
        let config: serde_json::Value =
            serde_json::from_slice(&entry.body).map_err(|e| DownloadError::BadDl {
                upstream: up.name.to_string(),
                message: e.to_string(),
            })?;
        let dl = config
            .get("dl")
            .and_then(|d| d.as_str())
            .ok_or_else(|| DownloadError::BadDl {
                upstream: up.name.to_string(),
                message: "`dl` is missing".into(),
            })?;
        let url = dl_url(dl, krate, &version.to_string(), cksum).map_err(|message| {
            DownloadError::BadDl {
                upstream: up.name.to_string(),
                message,
            }
        })?;
        // A relative or foreign-scheme `dl` must not send requests anywhere surprising.
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DownloadError::BadDl {
                upstream: up.name.to_string(),
                message: format!("scheme of {url} is not http(s)"),
            });
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::dl_url;

    #[test]
    fn dl_templates() {
        let ck = "ab".repeat(32);
        let lower = "http://h/{lowerprefix}/{crate}/{version}/{sha256-checksum}";
        let cases = [
            (
                "http://h/dl",
                "Serde",
                "http://h/dl/Serde/1.0.0/download".to_owned(),
            ),
            (
                "http://h/dl/",
                "serde",
                "http://h/dl/serde/1.0.0/download".to_owned(),
            ),
            (lower, "Serde", format!("http://h/se/rd/Serde/1.0.0/{ck}")),
            (
                "http://h/{prefix}/{crate}",
                "Serde",
                "http://h/Se/rd/Serde".to_owned(),
            ),
            (
                "http://h/{prefix}/{crate}",
                "ab",
                "http://h/2/ab".to_owned(),
            ),
            (
                "http://h/{prefix}/{crate}",
                "Abc",
                "http://h/3/A/Abc".to_owned(),
            ),
        ];
        for (dl, krate, want) in cases {
            assert_eq!(
                dl_url(dl, krate, "1.0.0", &ck).unwrap().as_str(),
                want,
                "{dl} {krate}"
            );
        }
    }
}
