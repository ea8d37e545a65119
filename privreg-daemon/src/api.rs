//! The registry web API through the daemon: publish goes to the upstream marked `publish = true`
//! (or the view's upstream), yank/unyank/owners to the upstream that owns the crate under the
//! current policy, search to every upstream with an API at once. Each request carries that
//! upstream's own token where cargo would send it (see `upstream::scope`: always for the owner's
//! calls, for a search only when the upstream requires auth); its answer reaches cargo
//! unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, StatusCode};
use privreg_shared::CrateName;
use privreg_shared::config::{Config, Upstream};
use privreg_shared::policy::PinPriority;
use privreg_shared::protocol::RegistryConfig;
use semver::Version;
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::download::View;
use crate::upstream::{FetchError, RequestKind};
use privreg_shared::store::UpstreamPath;

/// Largest request body forwarded (a publish carries the `.crate`).
pub(crate) const MAX_API_BODY: usize = 64 << 20;

/// What the API answers: status, content type and body.
pub(crate) struct ApiResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl ApiResponse {
    /// The registry API's error shape, which cargo prints.
    pub(crate) fn error(status: StatusCode, detail: impl Into<String>) -> ApiResponse {
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

/// What an API request asks for, by method and path (after `api/`, without the query).
#[derive(Debug, PartialEq, Eq)]
enum ApiRoute<'a> {
    /// `PUT v1/crates/new`: to the view's upstream or the one marked `publish = true`.
    Publish,
    /// `DELETE|PUT v1/crates/<krate>/<version>/(yank|unyank)`: to the upstream owning the crate.
    Yank { krate: &'a str, version: &'a str },
    /// `GET|PUT|DELETE v1/crates/<krate>/owners`: to the upstream owning the crate.
    Owners { krate: &'a str },
    /// `GET v1/crates`: to every upstream at once.
    Search,
    /// Anything else: not served.
    Unknown,
}

fn api_route<'a>(method: &Method, path: &'a str) -> ApiRoute<'a> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::PUT, ["v1", "crates", "new"]) => ApiRoute::Publish,
        (Method::DELETE | Method::PUT, ["v1", "crates", krate, version, "yank" | "unyank"]) => {
            ApiRoute::Yank { krate, version }
        }
        (Method::GET | Method::PUT | Method::DELETE, ["v1", "crates", krate, "owners"]) => {
            ApiRoute::Owners { krate }
        }
        (Method::GET, ["v1", "crates"]) => ApiRoute::Search,
        _ => ApiRoute::Unknown,
    }
}

/// The upstream a publish through `view` goes to: the view's own, or in the layered view the
/// one marked `publish = true`.
fn publish_target<'c>(config: &'c Config, view: View<'_>) -> Option<&'c Upstream> {
    match view {
        View::Upstream(name) => config.upstream(name),
        View::Layered => config.upstreams.iter().find(|u| u.publish),
    }
}

/// The upstream (by name) that owns a crate in the layered view, from the merged view's
/// `sources`: the one serving `version` when that is a served version, else the one serving
/// the newest version.
fn owner_name<'m>(
    sources: &'m BTreeMap<Version, (String, String)>,
    version: Option<&str>,
) -> Option<&'m str> {
    let by_version = version
        .and_then(|v| Version::parse(v).ok())
        .and_then(|v| sources.get(&v));
    by_version
        .or_else(|| sources.values().next_back())
        .map(|(u, _)| u.as_str())
}

/// The API base URL (ending in `/`) in the `config.json` of upstream `name`.
fn api_base_url(name: &str, config_json: &[u8]) -> Result<url::Url, ApiResponse> {
    let api = RegistryConfig::parse(config_json).ok().and_then(|c| c.api);
    let Some(api) = api else {
        return Err(ApiResponse::error(
            StatusCode::NOT_IMPLEMENTED,
            format!("upstream {name} has no web API (no `api` in its config.json)"),
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
            format!("upstream {name}'s `api` URL {api:?} is bad: {e}"),
        )
    })
}

/// Search rows, one per crate: the row of the upstream with the highest claim on the crate
/// (the first one seen among equals), in the order crates were first seen.
#[derive(Default)]
struct SearchRows(Vec<(String, i32, Value)>);

impl SearchRows {
    /// Offers `row` for the crate with key `key`, from an upstream claiming it with `claim`.
    fn offer(&mut self, key: String, claim: i32, row: &Value) {
        match self.0.iter_mut().find(|(k, _, _)| *k == key) {
            Some(existing) if existing.1 >= claim => {}
            Some(existing) => *existing = (key, claim, row.clone()),
            None => self.0.push((key, claim, row.clone())),
        }
    }

    /// The search answer cargo reads.
    fn into_body(self) -> Bytes {
        let crates: Vec<Value> = self.0.into_iter().map(|(_, _, row)| row).collect();
        let body = json!({ "crates": crates, "meta": { "total": crates.len() } });
        Bytes::from(body.to_string())
    }
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
        let fetched = self.upstreams().fetch(up, UpstreamPath::Config).await;
        let Some(entry) = fetched.entry else {
            return Err(fetched.error.as_ref().map_or_else(
                || {
                    ApiResponse::error(
                        StatusCode::BAD_GATEWAY,
                        format!("upstream {} has no config.json", up.name),
                    )
                },
                upstream_failed,
            ));
        };
        api_base_url(&up.name, &entry.body)
    }

    /// Sends one API request to `up`, with its own token where cargo would send it (`kind`), and
    /// hands back its answer unchanged.
    async fn forward(
        &self,
        up: &Upstream,
        kind: RequestKind,
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
        let _permit = match self.upstreams().permit(up, &what).await {
            Ok(p) => p,
            Err(e) => return upstream_failed(&e),
        };
        let req = self
            .upstreams()
            .request_to(up, kind, method, url)
            .timeout(up.timeout.max(Duration::from_mins(1)))
            .body(body);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return upstream_failed(&FetchError::from_reqwest(up, &what, &e, false)),
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
            Err(e) => upstream_failed(&FetchError::from_reqwest(up, &what, &e, false)),
        }
    }

    /// Forgets what is cached for `krate` so that cargo sees a change at once.
    fn drop_cached(&self, up: &Upstream, krate: &CrateName) {
        self.upstreams()
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
        owner_name(&merged.sources, version)
            .and_then(|n| rt.config.upstream(n).cloned())
            .ok_or_else(|| {
                ApiResponse::error(StatusCode::NOT_FOUND, format!("no upstream serves {krate}"))
            })
    }

    /// Answers `/api/…` (or `/upstream/<name>/api/…`): `rest` is the path after `api/`, with the
    /// query.
    pub(crate) async fn api(
        &self,
        view: View<'_>,
        method: Method,
        rest: &str,
        body: Bytes,
    ) -> ApiResponse {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let full = format!("api/{rest}");
        match api_route(&method, path) {
            ApiRoute::Publish => {
                let rt = self.runtime();
                let Some(up) = publish_target(&rt.config, view).cloned() else {
                    return ApiResponse::error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "no upstream to publish to: set `publish = true` on one upstream in {}",
                            self.config_dir()
                                .join(privreg_shared::config::CONFIG_FILE)
                                .display()
                        ),
                    );
                };
                drop(rt);
                let krate = published_name(&body);
                let resp = self
                    .forward(&up, RequestKind::Owner, method, &full, body)
                    .await;
                if resp.status.is_success()
                    && let Some(krate) = krate
                {
                    self.drop_cached(&up, &krate);
                }
                resp
            }
            ApiRoute::Yank { krate, version } => {
                let Ok(krate) = CrateName::new(krate) else {
                    return ApiResponse::error(StatusCode::BAD_REQUEST, "bad crate name");
                };
                let up = match self.owner_of(view, &krate, Some(version)).await {
                    Ok(u) => u,
                    Err(r) => return r,
                };
                let resp = self
                    .forward(&up, RequestKind::Owner, method, &full, body)
                    .await;
                if resp.status.is_success() {
                    self.drop_cached(&up, &krate);
                }
                resp
            }
            ApiRoute::Owners { krate } => {
                let Ok(krate) = CrateName::new(krate) else {
                    return ApiResponse::error(StatusCode::BAD_REQUEST, "bad crate name");
                };
                match self.owner_of(view, &krate, None).await {
                    Ok(up) => {
                        self.forward(&up, RequestKind::Owner, method, &full, body)
                            .await
                    }
                    Err(r) => r,
                }
            }
            ApiRoute::Search => self.search(view, query).await,
            ApiRoute::Unknown => ApiResponse::error(
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
                .map(|u| self.forward(u, RequestKind::Search, Method::GET, &path, Bytes::new())),
        )
        .await;
        // Rows by name, with the claim of the upstream they came from.
        let mut rows = SearchRows::default();
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
                        PinPriority::Never => None,
                        PinPriority::Value(v) => Some(v),
                    });
                let Some(claim) = claim else { continue };
                rows.offer(name.key(), claim, row);
            }
        }
        ApiResponse {
            status: StatusCode::OK,
            content_type: Some("application/json".into()),
            body: rows.into_body(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            std::path::Path::new("config.toml"),
            "[upstreams.acme]\nindex = \"sparse+http://127.0.0.1:1/index/\"\npublish = true\n\n\
             [upstreams.mirror]\nindex = \"sparse+http://127.0.0.1:2/index/\"\n",
        )
        .unwrap()
    }

    #[test]
    fn api_requests_are_routed_by_method_and_path() {
        use ApiRoute::*;
        let cases = [
            (Method::PUT, "v1/crates/new", Publish),
            (Method::PUT, "v1/crates/new/", Publish),
            (Method::GET, "v1/crates/new", Unknown),
            (
                Method::DELETE,
                "v1/crates/foo/1.0.0/yank",
                Yank {
                    krate: "foo",
                    version: "1.0.0",
                },
            ),
            (
                Method::PUT,
                "v1/crates/foo/1.0.0/unyank",
                Yank {
                    krate: "foo",
                    version: "1.0.0",
                },
            ),
            (Method::GET, "v1/crates/foo/1.0.0/yank", Unknown),
            (Method::GET, "v1/crates/foo/owners", Owners { krate: "foo" }),
            (Method::PUT, "v1/crates/foo/owners", Owners { krate: "foo" }),
            (
                Method::DELETE,
                "v1/crates/foo/owners",
                Owners { krate: "foo" },
            ),
            (Method::POST, "v1/crates/foo/owners", Unknown),
            (Method::GET, "v1/crates", Search),
            (Method::PUT, "v1/crates", Unknown),
            (Method::GET, "v1/me", Unknown),
            (Method::GET, "", Unknown),
        ];
        for (method, path, want) in cases {
            assert_eq!(api_route(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn a_publish_goes_to_the_views_upstream_or_the_marked_one() {
        let config = config();
        let name = |v| publish_target(&config, v).map(|u| u.name.as_str());
        assert_eq!(name(View::Layered), Some("acme"));
        assert_eq!(
            name(View::Upstream(
                privreg_shared::name::UpstreamNameRef::new("mirror").unwrap()
            )),
            Some("mirror")
        );
        assert_eq!(
            name(View::Upstream(
                privreg_shared::name::UpstreamNameRef::new("nope").unwrap()
            )),
            None
        );
        let mut unmarked = config.clone();
        unmarked
            .upstreams
            .iter_mut()
            .for_each(|u| u.publish = false);
        assert_eq!(
            publish_target(&unmarked, View::Layered).map(|u| &u.name),
            None
        );
    }

    #[test]
    fn mutations_go_to_the_upstream_serving_the_version_else_the_newest() {
        let source = |u: &str| (u.to_owned(), "cksum".to_owned());
        let sources: BTreeMap<Version, (String, String)> = [
            (Version::new(1, 0, 0), source("mirror")),
            (Version::new(2, 0, 0), source("acme")),
        ]
        .into_iter()
        .collect();
        let cases = [
            (Some("1.0.0"), Some("mirror")),
            (Some("2.0.0"), Some("acme")),
            (Some("3.0.0"), Some("acme")),
            (Some("not a version"), Some("acme")),
            (None, Some("acme")),
        ];
        for (version, want) in cases {
            assert_eq!(owner_name(&sources, version), want, "{version:?}");
        }
        assert_eq!(owner_name(&BTreeMap::new(), None), None);
    }

    #[test]
    fn the_api_base_comes_from_config_json() {
        let url = |json: &str| api_base_url("acme", json.as_bytes()).map(|u| u.to_string());
        for (json, want) in [
            (r#"{"api":"http://h/x"}"#, "http://h/x/"),
            (r#"{"api":"http://h/x/"}"#, "http://h/x/"),
        ] {
            assert_eq!(url(json).ok().as_deref(), Some(want));
        }
        for (json, status) in [
            (r#"{"dl":"http://h/"}"#, StatusCode::NOT_IMPLEMENTED),
            ("not json", StatusCode::NOT_IMPLEMENTED),
            (r#"{"api":"not a url"}"#, StatusCode::BAD_GATEWAY),
        ] {
            let Err(e) = url(json) else {
                panic!("{json} gave an API URL")
            };
            assert_eq!(e.status, status, "{json}");
            assert!(String::from_utf8_lossy(&e.body).contains("acme"));
        }
    }

    #[test]
    fn search_keeps_the_row_of_the_highest_claim_per_crate() {
        let row = |from: &str| json!({ "name": "foo", "from": from });
        let mut rows = SearchRows::default();
        rows.offer("foo".into(), 100, &row("low"));
        rows.offer("bar".into(), 100, &json!({ "name": "bar" }));
        rows.offer("foo".into(), 500, &row("high"));
        rows.offer("foo".into(), 500, &row("tie"));
        rows.offer("foo".into(), 200, &row("lower"));
        let body: Value = serde_json::from_slice(&rows.into_body()).unwrap();
        assert_eq!(
            body,
            json!({ "crates": [row("high"), { "name": "bar" }], "meta": { "total": 2 } })
        );
    }
}
