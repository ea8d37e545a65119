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
use privreg_shared::route::{self, Endpoint, RouteError};

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

    async fn index(
        &self,
        view: View<'_>,
        krate: &CrateName,
        req: &Request<Incoming>,
    ) -> Response<Body> {
        let krate = krate.clone();
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

    async fn dl(
        &self,
        view: View<'_>,
        krate: &CrateName,
        version: &semver::Version,
        cksum: &str,
    ) -> Response<Body> {
        match self.download(view, krate, version, cksum).await {
            Ok(data) => {
                let mut r = Response::new(Full::new(data));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/gzip"),
                );
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "download failed");
                match &e {
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
        let parsed = route::parse(&path);
        match parsed {
            Ok((_, Endpoint::Health)) => return text(StatusCode::OK, "ok"),
            Ok((_, Endpoint::Login)) => {
                return text(
                    StatusCode::OK,
                    "privreg hands cargo its local token through the credential provider cargo-credential-privreg.\nRun `privreg init` to create the token and `privreg doctor` to check the setup.",
                );
            }
            _ => {}
        }
        // Everything else, even a bad path, only for our own cargo.
        if let Some(refused) = self.gate(&req) {
            return refused;
        }
        let (view, endpoint) = match parsed {
            Ok(r) => r,
            Err(e @ RouteError::NotFound(_)) => return text(StatusCode::NOT_FOUND, e.to_string()),
            Err(e @ RouteError::BadRequest(_)) => {
                return text(StatusCode::BAD_REQUEST, e.to_string());
            }
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
        match endpoint {
            Endpoint::Status => json(StatusCode::OK, &self.status_json()),
            Endpoint::Policy(krate) => json(StatusCode::OK, &self.policy_json(&krate).await),
            Endpoint::Config => json(StatusCode::OK, &self.config_json(view)),
            Endpoint::Index(krate) => self.index(view, &krate, &req).await,
            Endpoint::Download {
                krate,
                version,
                cksum,
            } => self.dl(view, &krate, &version, &cksum).await,
            Endpoint::Health | Endpoint::Login | Endpoint::Api(_) => unreachable!("answered above"),
        }
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
