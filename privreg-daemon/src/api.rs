//! The registry web API through the daemon: publish goes to the upstream marked `publish = true`
//! (or the view's upstream), yank/unyank/owners to the upstream that owns the crate under the
//! current policy, search to every upstream with an API at once. Each request carries that
//! upstream's own token; its answer reaches cargo unchanged.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, StatusCode};
use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use privreg_shared::protocol::RegistryConfig;
use serde_json::{Value, json};

use crate::Daemon;
use crate::download::View;
use crate::upstream::FetchError;
use privreg_shared::store::UpstreamPath;

/// Largest request body forwarded (a publish carries the `.crate`).
pub const MAX_API_BODY: usize = 64 << 20;

/// What the API answers: status, content type and body.
pub struct ApiResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl ApiResponse {
    /// The registry API's error shape, which cargo prints.
    pub fn error(status: StatusCode, detail: impl Into<String>) -> ApiResponse {
        ApiResponse {
            status,
            content_type: Some("application/json".into()),
            body: Bytes::from(json!({ "errors": [{ "detail": detail.into() }] }).to_string()),
        }
    }
}

fn upstream_failed(e: &FetchError) -> ApiResponse {
    ApiResponse::error(StatusCode::BAD_GATEWAY, e.to_string())
}

/// The crate name in a publish body (u32 LE length, then the JSON metadata).
fn published_name(body: &[u8]) -> Option<CrateName> {
    let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let meta: Value = serde_json::from_slice(body.get(4..4 + len)?).ok()?;
    CrateName::new(meta.get("name")?.as_str()?).ok()
}

impl Daemon {
    /// The upstream's API base URL, from its `config.json`.
    async fn api_base(&self, up: &Upstream) -> Result<url::Url, ApiResponse> {
        let fetched = self.upstreams.fetch(up, UpstreamPath::Config).await;
        let Some(entry) = fetched.entry else {
            return Err(fetched
                .error
                .as_ref()
                .map(upstream_failed)
                .unwrap_or_else(|| {
                    ApiResponse::error(
                        StatusCode::BAD_GATEWAY,
                        format!("upstream {} has no config.json", up.name),
                    )
                }));
        };
        let api = RegistryConfig::parse(&entry.body).ok().and_then(|c| c.api);
        let Some(api) = api else {
            return Err(ApiResponse::error(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "upstream {} has no web API (no `api` in its config.json)",
                    up.name
                ),
            ));
        };
        let api = if api.ends_with('/') {
            api
        } else {
            format!("{api}/")
        };
        url::Url::parse(&api).map_err(|e| {
            ApiResponse::error(
                StatusCode::BAD_GATEWAY,
                format!("upstream {}'s `api` URL {api:?} is bad: {e}", up.name),
            )
        })
    }

    /// Sends one API request to `up` with its own token and hands back its answer unchanged.
    async fn forward(
        &self,
        up: &Upstream,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> ApiResponse {
        let base = match self.api_base(up).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Ok(url) = base.join(path_and_query.trim_start_matches('/')) else {
            return ApiResponse::error(StatusCode::BAD_REQUEST, "bad API path");
        };
        let what = format!("{method} /{}", path_and_query.trim_start_matches('/'));
        let _permit = match self.upstreams.permit(up, &what).await {
            Ok(p) => p,
            Err(e) => return upstream_failed(&e),
        };
        let req = self
            .upstreams
            .request_to(up, method, url)
            .await
            .timeout(up.timeout.max(Duration::from_secs(60)))
            .body(body);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return upstream_failed(&self.upstreams.transport_error(up, &what, e)),
        };
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if matches!(status.as_u16(), 401 | 403) {
            tracing::warn!(upstream = %up.name, %status, request = %what, "upstream refused the token");
        }
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match resp.bytes().await {
            Ok(body) => ApiResponse {
                status,
                content_type,
                body,
            },
            Err(e) => upstream_failed(&self.upstreams.transport_error(up, &what, e)),
        }
    }

    /// Forgets what is cached for `krate` so that cargo sees a change at once.
    fn drop_cached(&self, up: &Upstream, krate: &CrateName) {
        self.upstreams
            .invalidate(up, UpstreamPath::Index(&krate.lower()));
        self.forget_merged(&krate.lower());
    }

    /// The upstream a view sends a crate's mutations (yank, unyank, owners) to.
    async fn owner_of(
        &self,
        view: View<'_>,
        krate: &CrateName,
        version: Option<&str>,
    ) -> Result<Upstream, ApiResponse> {
        let rt = self.runtime();
        if let View::Upstream(name) = view {
            return rt.config.upstream(name).cloned().ok_or_else(|| {
                ApiResponse::error(StatusCode::NOT_FOUND, format!("no upstream named {name}"))
            });
        }
        let merged = self
            .layered(&krate.lower())
            .await
            .map_err(|e| ApiResponse::error(StatusCode::NOT_FOUND, e.to_string()))?;
        let by_version = version
            .and_then(|v| semver::Version::parse(v).ok())
            .and_then(|v| merged.sources.get(&v).map(|(u, _)| u.clone()));
        let name =
            by_version.or_else(|| merged.sources.values().next_back().map(|(u, _)| u.clone()));
        name.and_then(|n| rt.config.upstream(&n).cloned())
            .ok_or_else(|| {
                ApiResponse::error(StatusCode::NOT_FOUND, format!("no upstream serves {krate}"))
            })
    }

    /// Answers `/api/…` (or `/upstream/<name>/api/…`): `rest` is the path after `api/`, with the
    /// query.
    pub async fn api(
        &self,
        view: View<'_>,
        method: Method,
        rest: &str,
        body: Bytes,
    ) -> ApiResponse {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let full = format!("api/{rest}");
        match (method.clone(), parts.as_slice()) {
            (Method::PUT, ["v1", "crates", "new"]) => {
                let rt = self.runtime();
                let target = match view {
                    View::Upstream(name) => rt.config.upstream(name),
                    View::Layered => rt.config.upstreams.iter().find(|u| u.publish),
                };
                let Some(up) = target.cloned() else {
                    return ApiResponse::error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "no upstream to publish to: set `publish = true` on one upstream in {}",
                            self.config_dir
                                .join(privreg_shared::config::CONFIG_FILE)
                                .display()
                        ),
                    );
                };
                drop(rt);
                let krate = published_name(&body);
                let resp = self.forward(&up, method, &full, body).await;
                if resp.status.is_success()
                    && let Some(krate) = krate
                {
                    self.drop_cached(&up, &krate);
                }
                resp
            }
            (Method::DELETE | Method::PUT, ["v1", "crates", krate, version, "yank" | "unyank"]) => {
                let Ok(krate) = CrateName::new(krate) else {
                    return ApiResponse::error(StatusCode::BAD_REQUEST, "bad crate name");
                };
                let up = match self.owner_of(view, &krate, Some(version)).await {
                    Ok(u) => u,
                    Err(r) => return r,
                };
                let resp = self.forward(&up, method, &full, body).await;
                if resp.status.is_success() {
                    self.drop_cached(&up, &krate);
                }
                resp
            }
            (Method::GET | Method::PUT | Method::DELETE, ["v1", "crates", krate, "owners"]) => {
                let Ok(krate) = CrateName::new(krate) else {
                    return ApiResponse::error(StatusCode::BAD_REQUEST, "bad crate name");
                };
                match self.owner_of(view, &krate, None).await {
                    Ok(up) => self.forward(&up, method, &full, body).await,
                    Err(r) => r,
                }
            }
            (Method::GET, ["v1", "crates"]) => self.search(view, query).await,
            _ => ApiResponse::error(
                StatusCode::NOT_FOUND,
                format!("privreg does not serve {method} /{full}"),
            ),
        }
    }

    /// Search every upstream with an API at once; one row per name, the owner's row wins.
    async fn search(&self, view: View<'_>, query: &str) -> ApiResponse {
        let rt = self.runtime();
        let ups: Vec<&Upstream> = match view {
            View::Upstream(name) => rt.config.upstream(name).into_iter().collect(),
            View::Layered => rt.config.upstreams.iter().collect(),
        };
        let path = format!("api/v1/crates?{query}");
        let answers = join_all(
            ups.iter()
                .map(|u| self.forward(u, Method::GET, &path, Bytes::new())),
        )
        .await;
        // Rows by name, with the claim of the upstream they came from.
        let mut rows: Vec<(String, i32, Value)> = Vec::new();
        for (up, answer) in ups.iter().zip(answers) {
            let parsed = (answer.status.is_success())
                .then(|| serde_json::from_slice::<Value>(&answer.body).ok())
                .flatten();
            let Some(crates) = parsed
                .as_ref()
                .and_then(|v| v.get("crates"))
                .and_then(Value::as_array)
            else {
                tracing::warn!(upstream = %up.name, status = %answer.status, "search left out an upstream that failed");
                continue;
            };
            for row in crates {
                let Some(name) = row
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(|n| CrateName::new(n).ok())
                else {
                    continue;
                };
                let claim = rt
                    .pins
                    .claim(&name, &up.policy_ref())
                    .map_or(Some(up.priority), |m| match m.priority {
                        privreg_shared::policy::PinPriority::Never => None,
                        privreg_shared::policy::PinPriority::Value(v) => Some(v),
                    });
                let Some(claim) = claim else { continue };
                match rows.iter_mut().find(|(k, _, _)| *k == name.key()) {
                    Some(existing) if existing.1 >= claim => {}
                    Some(existing) => *existing = (name.key(), claim, row.clone()),
                    None => rows.push((name.key(), claim, row.clone())),
                }
            }
        }
        let crates: Vec<Value> = rows.into_iter().map(|(_, _, row)| row).collect();
        let body = json!({ "crates": crates, "meta": { "total": crates.len() } });
        ApiResponse {
            status: StatusCode::OK,
            content_type: Some("application/json".into()),
            body: Bytes::from(body.to_string()),
        }
    }
}
