//! The HTTP front: routes cargo's requests to the layered view and downloads.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use privreg_shared::CrateName;
use tokio::net::TcpListener;

use crate::api::MAX_API_BODY;
use crate::auth::{self, Accept, Verdict};
use crate::daemon::Daemon;
use crate::download::DownloadError;
use crate::download::View;
use crate::layered::LayeredError;
use http_body_util::BodyExt;
use privreg_shared::protocol::RegistryConfig;
use privreg_shared::route::{self, Endpoint, RouteError};
use privreg_shared::store::UpstreamPath;

use crate::body::Body;

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(Bytes::from(body.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("the answer serialises");
    let mut r = Response::new(Body::from(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The registry API's error shape, which cargo prints.
fn api_error(status: StatusCode, detail: impl Into<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "errors": [{ "detail": detail.into() }] }),
    )
}

/// 503 with `Retry-After`: an upstream failed (it may have said how long to wait).
fn unavailable(body: String, retry_after: u64) -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, body);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

fn layered_error(e: &LayeredError) -> Response<Body> {
    match e {
        LayeredError::NotFound(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        LayeredError::Unavailable { errors, .. } => {
            let wait = errors
                .iter()
                .filter_map(crate::upstream::FetchError::retry_after)
                .max();
            unavailable(e.to_string(), wait.unwrap_or(1).max(1))
        }
    }
}

/// The answer for a download that failed.
fn download_error(e: &DownloadError) -> Response<Body> {
    match e {
        DownloadError::NotServed { .. } => text(StatusCode::NOT_FOUND, e.to_string()),
        DownloadError::Layered(l) => layered_error(l),
        DownloadError::Cache(_) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        // The upstream asked to be left alone for a while: so does privreg.
        DownloadError::Upstream(u) if u.retry_after().is_some() => {
            unavailable(e.to_string(), u.retry_after().unwrap_or(1).max(1))
        }
        DownloadError::Upstream(_)
        | DownloadError::BadDl { .. }
        | DownloadError::ChecksumMismatch { .. } => text(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// The answer to a request that needs no token (`/-/health`, `/-/login`), if it is one.
fn open_endpoint(parsed: &Result<(View<'_>, Endpoint<'_>), RouteError>) -> Option<Response<Body>> {
    match parsed {
        Ok((_, Endpoint::Health)) => Some(text(StatusCode::OK, "ok")),
        Ok((_, Endpoint::Login)) => Some(text(
            StatusCode::OK,
            "privreg hands cargo its local token through the credential provider cargo-credential-privreg.\nRun `privreg init` to create the token and `privreg doctor` to check the setup.",
        )),
        _ => None,
    }
}

/// The answer to a path that names no endpoint.
fn route_error(e: &RouteError) -> Response<Body> {
    match e {
        RouteError::NotFound(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        RouteError::BadRequest(_) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The `config.json` of a view, for a daemon at `base_url`.
fn config_json(base_url: &str, view: View<'_>, auth_required: bool) -> RegistryConfig {
    let base = match view {
        View::Layered => base_url.to_owned(),
        View::Upstream(name) => format!("{base_url}/upstream/{name}"),
    };
    RegistryConfig {
        dl: Some(format!(
            "{base}/dl/{{crate}}/{{version}}/{{sha256-checksum}}"
        )),
        api: Some(base),
        auth_required,
    }
}

/// The value of [`route::CACHE_HEADER`].
fn cache_header_value(hit: bool) -> HeaderValue {
    HeaderValue::from_static(if hit { "hit" } else { "miss" })
}

impl Daemon {
    /// Whether every upstream answer a view needs for `krate`'s index file is already held.
    fn cache_state(&self, view: View<'_>, krate: &CrateName) -> HeaderValue {
        let rt = self.runtime();
        let rel = UpstreamPath::Index(krate);
        let hit = match view {
            View::Layered => rt
                .config
                .upstreams
                .iter()
                .all(|u| self.upstreams().is_cached(u, rel)),
            View::Upstream(name) => rt
                .config
                .upstream(name)
                .is_some_and(|u| self.upstreams().is_cached(u, rel)),
        };
        cache_header_value(hit)
    }

    async fn index(
        &self,
        view: View<'_>,
        krate: &CrateName,
        req: &Request<Incoming>,
    ) -> Response<Body> {
        let krate = krate.clone();
        let cache_state = self.cache_state(view, &krate);
        let served = match view {
            View::Layered => self
                .layered(&krate)
                .await
                .map(|m| (m.body.clone(), m.etag.clone())),
            View::Upstream(name) => self
                .upstream_view(name.as_str(), &krate)
                .await
                .map(|v| (v.body, v.etag)),
        };
        match served {
            Ok((body, etag)) => {
                let etag = HeaderValue::from_str(&etag).expect("hex etag is a header value");
                if req
                    .headers()
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v == etag)
                {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    r.headers_mut().insert(header::ETAG, etag);
                    r.headers_mut().insert(route::CACHE_HEADER, cache_state);
                    return r;
                }
                let mut r = Response::new(Body::from(body));
                r.headers_mut().insert(header::ETAG, etag);
                r.headers_mut().insert(route::CACHE_HEADER, cache_state);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            Err(e) => {
                if matches!(e, LayeredError::Unavailable { .. }) {
                    tracing::warn!(error = %e, "answering 503");
                }
                layered_error(&e)
            }
        }
    }

    async fn dl(
        &self,
        view: View<'_>,
        krate: &CrateName,
        version: &semver::Version,
        cksum: &str,
    ) -> Response<Body> {
        match self.download(view, krate, version, cksum).await {
            Ok((data, hit)) => {
                let mut r = Response::new(data);
                r.headers_mut()
                    .insert(route::CACHE_HEADER, cache_header_value(hit));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/gzip"),
                );
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "download failed");
                download_error(&e)
            }
        }
    }

    /// Answers one request.
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let started = std::time::Instant::now();
        let resp = self.route(req).await;
        tracing::debug!(%method, path, status = resp.status().as_u16(), micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), "request");
        let (status, took) = (resp.status().as_u16(), started.elapsed());
        let bytes = hyper::body::Body::size_hint(resp.body()).exact();
        self.metrics()
            .served(&path, status, bytes.unwrap_or(0), took);
        resp
    }

    /// Refuses requests that are not from this daemon's own cargo; `None` lets them in.
    fn gate(&self, req: &Request<Incoming>, accept: Accept) -> Option<Response<Body>> {
        match self.check(req, accept) {
            Verdict::Allowed => None,
            Verdict::WrongHost => Some(text(
                StatusCode::MISDIRECTED_REQUEST,
                "this is privreg; the Host header does not name its address",
            )),
            Verdict::Unauthorized => {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    match accept {
                        Accept::TokenOrSession => {
                            "open privreg's status page with `privreg status --open`"
                        }
                        _ => {
                            "privreg needs its local token; configure cargo-credential-privreg as the credential provider"
                        }
                    },
                );
                let login = format!("Cargo login_url=\"{}/-/login\"", self.base_url());
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&login).expect("the login URL is a header value"),
                );
                Some(r)
            }
            Verdict::Forbidden => Some(text(
                StatusCode::FORBIDDEN,
                "that is not privreg's local token",
            )),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let parsed = route::parse(&path);
        if let Some(open) = open_endpoint(&parsed) {
            return open;
        }
        // Everything else, even a bad path, only for our own cargo.
        if let Some(refused) = self.gate(&req, auth::accept_for(&parsed, req.method())) {
            return refused;
        }
        let (view, endpoint) = match parsed {
            Ok(r) => r,
            Err(e) => return route_error(&e),
        };
        if let View::Upstream(name) = view
            && self.runtime().config.upstream(name).is_none()
        {
            return text(StatusCode::NOT_FOUND, format!("no upstream named {name}"));
        }
        if let Endpoint::Api(api) = endpoint {
            let api = match req.uri().query() {
                Some(q) => format!("{api}?{q}"),
                None => api.to_owned(),
            };
            let method = req.method().clone();
            let body = match http_body_util::Limited::new(req.into_body(), MAX_API_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return api_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body refused: {e}"),
                    );
                }
            };
            let r = self.api(view, method, &api, body).await;
            let mut resp = Response::new(Body::from(r.body));
            *resp.status_mut() = r.status;
            if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            return resp;
        }
        if endpoint == Endpoint::Refresh {
            return self.refresh_endpoint(req).await;
        }
        if endpoint == Endpoint::Audit {
            return self.audit_endpoint(req).await;
        }
        if let Some(r) = self.observe(&endpoint, req.method()) {
            return r;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served here",
            );
        }
        match endpoint {
            Endpoint::Status => json(StatusCode::OK, &self.status()),
            Endpoint::Policy(krate) => json(StatusCode::OK, &self.policy(&krate).await),
            Endpoint::Config => json(
                StatusCode::OK,
                &config_json(self.base_url(), view, self.auth_required()),
            ),
            Endpoint::Index(krate) => self.index(view, &krate, &req).await,
            Endpoint::Download {
                krate,
                version,
                cksum,
            } => self.dl(view, &krate, &version, &cksum).await,
            Endpoint::Metrics | Endpoint::Page | Endpoint::PageLink | Endpoint::PageOpen(_) => {
                unreachable!("answered by observe")
            }
            Endpoint::Refresh
            | Endpoint::Audit
            | Endpoint::Health
            | Endpoint::Login
            | Endpoint::Api(_) => {
                unreachable!("answered above")
            }
        }
    }
}

/// The JSON body of a POST to an endpoint that acts (`/-/refresh`, `/-/audit`), at most `limit`
/// bytes; else the answer that refuses it. `usage` says what to POST.
async fn json_post(
    req: Request<Incoming>,
    usage: &'static str,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, usage);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(r);
    }
    // A web page cannot send this type across origins without asking first (and nothing
    // here answers that), so a page the user visits cannot make the daemon act.
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json",
        ));
    }
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body refused: {e}"),
        )),
    }
}

impl Daemon {
    /// `POST /-/refresh`: see [`crate::refresh`].
    async fn refresh_endpoint(&self, req: Request<Incoming>) -> Response<Body> {
        let usage = "POST {\"crates\": [...]} here (no crates: every cached index file)";
        let body = match json_post(req, usage, crate::refresh::MAX_REFRESH_BODY).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        match self.refresh_request(&body).await {
            Ok(report) => json(StatusCode::OK, &report),
            Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    /// `POST /-/audit`: see [`crate::audit`].
    async fn audit_endpoint(&self, req: Request<Incoming>) -> Response<Body> {
        let usage = "POST {\"packages\": [{\"name\": ..., \"version\": ...}]} here";
        let body = match json_post(req, usage, crate::audit::MAX_AUDIT_BODY).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        match self.audit_request(&body).await {
            Ok(answer) => json(StatusCode::OK, &answer),
            Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
}

/// Serves connections from `listener` until `shutdown` completes, then lets open requests finish.
///
/// Connections are bounded (see [`crate::conns`]): at most `limits.max-connections` at once, a
/// request head must arrive within `limits.header-read-timeout` (HTTP/1.1 waits between
/// requests too), and a connection silent for `limits.idle-timeout` with no request in flight
/// is closed.
pub(crate) async fn serve(
    daemon: Arc<Daemon>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let limits = daemon.runtime().config.limits;
    // A request head larger than `limits.max-header-size` gets 431 (HTTP/1) or a stream error
    // (HTTP/2) instead of an ever-growing buffer.
    let max_head = limits.max_header_size;
    builder
        .http1()
        .max_buf_size(max_head)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
    let conns = crate::conns::Conns::new(limits.max_connections);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Every slot holds a request in flight: this one is closed at once.
                let Some(conn) = conns.admit() else { continue };
                let _ = stream.set_nodelay(true);
                let io = crate::conns::Io::new(stream, conn.clone(), limits.idle_timeout);
                let daemon = daemon.clone();
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let daemon = daemon.clone();
                    let in_flight = conn.request();
                    req.extensions_mut().insert(conn.clone());
                    async move {
                        let r = daemon.serve_request(req).await;
                        drop(in_flight);
                        Ok::<_, Infallible>(r)
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10s; stopping anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use privreg_shared::CrateName;

    use super::*;
    use crate::upstream::FetchError;

    fn retry_later(secs: u64) -> FetchError {
        crate::upstream::test_retry_later(secs)
    }

    fn status_error() -> FetchError {
        FetchError::Status {
            upstream: "acme".into(),
            what: "x".into(),
            status: 500,
        }
    }

    fn retry_after(r: &Response<Body>) -> Option<&str> {
        r.headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap())
    }

    #[test]
    fn an_unavailable_crate_waits_as_long_as_its_slowest_upstream_asked() {
        let krate = CrateName::new("foo").unwrap();
        let r = layered_error(&LayeredError::NotFound(krate.clone()));
        assert_eq!((r.status(), retry_after(&r)), (StatusCode::NOT_FOUND, None));
        for (errors, wait) in [
            (vec![retry_later(5), status_error(), retry_later(30)], "30"),
            (vec![status_error()], "1"),
            (vec![retry_later(0)], "1"),
            (vec![], "1"),
        ] {
            let e = LayeredError::Unavailable {
                krate: krate.clone(),
                errors,
            };
            let r = layered_error(&e);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(retry_after(&r), Some(wait));
        }
    }

    #[test]
    fn failed_downloads_answer_by_what_failed() {
        let version = semver::Version::new(1, 0, 0);
        let cases = [
            (
                DownloadError::NotServed {
                    krate: "foo".into(),
                    version: version.clone(),
                    cksum: "00".into(),
                },
                StatusCode::NOT_FOUND,
                None,
            ),
            (
                DownloadError::Upstream(retry_later(9)),
                StatusCode::SERVICE_UNAVAILABLE,
                Some("9"),
            ),
            (
                DownloadError::Upstream(status_error()),
                StatusCode::BAD_GATEWAY,
                None,
            ),
            (
                DownloadError::BadDl {
                    upstream: "acme".into(),
                    message: "no dl".into(),
                },
                StatusCode::BAD_GATEWAY,
                None,
            ),
            (
                DownloadError::ChecksumMismatch {
                    upstream: "acme".into(),
                    krate: "foo".into(),
                    version,
                    want: "00".into(),
                    got: "11".into(),
                },
                StatusCode::BAD_GATEWAY,
                None,
            ),
            (
                DownloadError::Layered(LayeredError::NotFound(CrateName::new("foo").unwrap())),
                StatusCode::NOT_FOUND,
                None,
            ),
        ];
        for (e, status, wait) in cases {
            let r = download_error(&e);
            assert_eq!((r.status(), retry_after(&r)), (status, wait), "{e}");
        }
    }

    #[test]
    fn only_health_and_login_are_open() {
        for (path, open) in [
            ("/-/health", true),
            ("/-/login", true),
            ("/-/status", false),
            ("/index/config.json", false),
            ("/index/3/f/foo", false),
            ("/../../etc/passwd", false),
        ] {
            let answer = open_endpoint(&route::parse(path));
            assert_eq!(answer.is_some(), open, "{path}");
            if let Some(r) = answer {
                assert_eq!(r.status(), StatusCode::OK);
            }
        }
    }

    #[test]
    fn bad_paths_are_told_apart_from_unknown_ones() {
        for (path, want) in [
            ("/nothing/here", StatusCode::NOT_FOUND),
            ("/index/3/f/fo%", StatusCode::NOT_FOUND),
            ("/-/policy/not a name", StatusCode::BAD_REQUEST),
            ("/dl/foo/one/00", StatusCode::BAD_REQUEST),
        ] {
            let e = route::parse(path).expect_err(path);
            assert_eq!(route_error(&e).status(), want, "{path}");
        }
    }

    #[test]
    fn each_view_has_its_own_config_json() {
        let base = "http://127.0.0.1:7777";
        let layered = serde_json::to_value(config_json(base, View::Layered, true)).unwrap();
        assert_eq!(layered["api"], base);
        assert_eq!(
            layered["dl"],
            format!("{base}/dl/{{crate}}/{{version}}/{{sha256-checksum}}")
        );
        assert_eq!(layered["auth-required"], true);
        let acme = View::Upstream(privreg_shared::name::UpstreamNameRef::new("acme").unwrap());
        let acme = serde_json::to_value(config_json(base, acme, false)).unwrap();
        assert_eq!(acme["api"], format!("{base}/upstream/acme"));
        assert_eq!(
            acme["dl"],
            format!("{base}/upstream/acme/dl/{{crate}}/{{version}}/{{sha256-checksum}}")
        );
        assert_eq!(acme["auth-required"], false);
    }
}
