//! The HTTP front: routes cargo's requests to the layered view and downloads.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use privreg_shared::CrateName;
use tokio::net::TcpListener;

use crate::Daemon;
use crate::api::MAX_API_BODY;
use crate::auth::Verdict;
use crate::download::DownloadError;
use crate::download::View;
use crate::layered::LayeredError;
use http_body_util::BodyExt;

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
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

fn layered_error(e: &LayeredError) -> Response<Body> {
    match e {
        LayeredError::NotFound(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        LayeredError::Unavailable { .. } => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

impl Daemon {
    fn config_json(&self, view: View<'_>) -> serde_json::Value {
        let base = match view {
            View::Layered => self.base_url.clone(),
            View::Upstream(name) => format!("{}/upstream/{name}", self.base_url),
        };
        serde_json::json!({
            "dl": format!("{base}/dl/{{crate}}/{{version}}/{{sha256-checksum}}"),
            "api": base,
            "auth-required": self.auth_required(),
        })
    }

    async fn index(&self, view: View<'_>, path: &str, req: &Request<Incoming>) -> Response<Body> {
        let Some(krate) = CrateName::from_index_path(path) else {
            return text(
                StatusCode::NOT_FOUND,
                "not a sparse index path privreg serves",
            );
        };
        let served = match view {
            View::Layered => self
                .layered(&krate)
                .await
                .map(|m| (m.body.clone(), m.etag.clone())),
            View::Upstream(name) => self
                .upstream_view(name, &krate)
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
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    r.headers_mut().insert(header::ETAG, etag);
                    return r;
                }
                let mut r = Response::new(Full::new(body));
                r.headers_mut().insert(header::ETAG, etag);
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

    async fn dl(&self, view: View<'_>, rest: &str) -> Response<Body> {
        let parts: Vec<&str> = rest.split('/').collect();
        let [krate, version, cksum] = parts.as_slice() else {
            return text(
                StatusCode::NOT_FOUND,
                "downloads are /dl/{crate}/{version}/{sha256-checksum}",
            );
        };
        match self.download(view, krate, version, cksum).await {
            Ok(path) => match tokio::fs::read(&path).await {
                Ok(data) => {
                    let mut r = Response::new(Full::new(Bytes::from(data)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/gzip"),
                    );
                    r
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{}: {e}", path.display()),
                ),
            },
            Err(e) => {
                tracing::warn!(error = %e, "download failed");
                match &e {
                    DownloadError::BadRequest(_) => text(StatusCode::BAD_REQUEST, e.to_string()),
                    DownloadError::NotServed { .. } => text(StatusCode::NOT_FOUND, e.to_string()),
                    DownloadError::Layered(l) => layered_error(l),
                    DownloadError::Cache(_) => {
                        text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    }
                    DownloadError::Upstream(_)
                    | DownloadError::BadDl { .. }
                    | DownloadError::ChecksumMismatch { .. } => {
                        text(StatusCode::BAD_GATEWAY, e.to_string())
                    }
                }
            }
        }
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let started = std::time::Instant::now();
        let resp = self.route(req).await;
        tracing::debug!(%method, path, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
        resp
    }

    /// Refuses requests that are not from this daemon's own cargo; `None` lets them in.
    fn gate(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        match self.check(req) {
            Verdict::Allowed => None,
            Verdict::WrongHost => Some(text(
                StatusCode::MISDIRECTED_REQUEST,
                "this is privreg; the Host header does not name its address",
            )),
            Verdict::Unauthorized => {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "privreg needs its local token; configure cargo-credential-privreg as the credential provider",
                );
                let login = format!("Cargo login_url=\"{}/-/login\"", self.base_url);
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
        if path == "/-/health" {
            return text(StatusCode::OK, "ok");
        }
        if path == "/-/login" {
            return text(
                StatusCode::OK,
                "privreg hands cargo its local token through the credential provider cargo-credential-privreg.\nRun `privreg init` to create the token and `privreg doctor` to check the setup.",
            );
        }
        if let Some(refused) = self.gate(&req) {
            return refused;
        }
        // `/upstream/<name>/…` is that upstream's own view; everything else the layered one.
        let (view, rest) = match path
            .strip_prefix("/upstream/")
            .and_then(|r| r.split_once('/'))
        {
            Some((name, rest)) => {
                if self.runtime().config.upstream(name).is_none() {
                    return text(StatusCode::NOT_FOUND, format!("no upstream named {name}"));
                }
                (View::Upstream(name), format!("/{rest}"))
            }
            None => (View::Layered, path.clone()),
        };
        if let Some(api) = rest.strip_prefix("/api/") {
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
            let mut resp = Response::new(Full::new(r.body));
            *resp.status_mut() = r.status;
            if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            return resp;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served here",
            );
        }
        if view == View::Layered {
            if rest == "/-/status" {
                return json(StatusCode::OK, &self.status_json());
            }
            if let Some(name) = rest.strip_prefix("/-/policy/") {
                return match CrateName::new(name) {
                    Ok(krate) => json(StatusCode::OK, &self.policy_json(&krate.lower()).await),
                    Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
                };
            }
        }
        if rest == "/index/config.json" {
            return json(StatusCode::OK, &self.config_json(view));
        }
        if let Some(index_path) = rest.strip_prefix("/index/") {
            return self.index(view, index_path, &req).await;
        }
        if let Some(dl) = rest.strip_prefix("/dl/") {
            return self.dl(view, dl).await;
        }
        text(StatusCode::NOT_FOUND, "not found")
    }
}

/// Serves connections from `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(daemon: Arc<Daemon>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
                let _ = stream.set_nodelay(true);
                let daemon = daemon.clone();
                let service = hyper::service::service_fn(move |req| {
                    let daemon = daemon.clone();
                    async move { Ok::<_, Infallible>(daemon.handle(req).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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
