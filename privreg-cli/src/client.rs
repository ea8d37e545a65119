//! The one way the CLI talks to the running daemon: [`DaemonClient`], with the local token when
//! `auth = true`, and typed methods for the daemon's JSON documents.

use std::time::Duration;

use anyhow::Context;
use privreg_shared::config::Config;
use privreg_shared::protocol::{
    AuditAnswer, AuditRequest, PageLink, Policy, RefreshReport, RefreshRequest, Status,
};
use privreg_shared::secrets::Token;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::Dirs;

/// Why the daemon did not give what was asked; the variants tell the caller what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    /// Nothing answers at the address: start the daemon.
    #[error(
        "the daemon does not answer at {addr}; start it (see `privreg doctor`) or check `listen`"
    )]
    NotRunning {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// 401: the daemon wants the local token and none was sent.
    #[error(
        "the daemon wants its local token and none was found; run `privreg init` (it creates the token) and restart the daemon"
    )]
    Unauthorized,
    /// 403: the daemon refuses the local token that was sent.
    #[error(
        "the daemon does not accept the local token in the keyring (it was started with another one); restart the daemon"
    )]
    Forbidden,
    /// Any other answer than success.
    #[error("the daemon answered {status} for {path}: {body}")]
    Status {
        path: String,
        status: StatusCode,
        body: String,
    },
    /// The connection broke, or timed out, after the daemon was reached.
    #[error("talking to the daemon at {addr}")]
    Transport {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// A success whose body is not the document asked for.
    #[error("the daemon's answer for {path} is not {what}")]
    BadAnswer {
        path: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl DaemonError {
    /// The HTTP status the daemon answered with, if it answered.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            DaemonError::Unauthorized => Some(StatusCode::UNAUTHORIZED),
            DaemonError::Forbidden => Some(StatusCode::FORBIDDEN),
            DaemonError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for the daemon on loopback: no proxy, short connect timeout.
#[derive(Clone)]
pub(crate) struct DaemonClient {
    client: reqwest::Client,
    addr: String,
    auth: Option<HeaderValue>,
}

impl DaemonClient {
    /// A client for the daemon `dirs` point at (its `daemon.json`, else `listen`), with the local
    /// token when `auth = true`; `timeout` bounds each request. A missing token is not an error
    /// here: the daemon's 401 says what is wrong.
    pub(crate) fn open(dirs: &Dirs, timeout: Duration) -> anyhow::Result<DaemonClient> {
        let addr = dirs.daemon_addr()?;
        let token = match Config::load(&dirs.config) {
            Ok(config) => dirs.local_token(&config).unwrap_or(None),
            Err(_) => None,
        };
        DaemonClient::new(addr, token.as_ref(), timeout)
    }

    /// A client for the daemon at `addr` (`host:port`), presenting `token` if given.
    pub(crate) fn new(
        addr: String,
        token: Option<&Token>,
        timeout: Duration,
    ) -> anyhow::Result<DaemonClient> {
        let auth = match token {
            Some(t) => Some(
                privreg_shared::http::authorization(t)
                    .context("the local token is not a valid header value; run `privreg init`")?,
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(timeout)
            .build()
            .context("cannot build an HTTP client")?;
        Ok(DaemonClient { client, addr, auth })
    }

    /// The same client, for a daemon at another address.
    pub(crate) fn at(&self, addr: String) -> DaemonClient {
        DaemonClient {
            addr,
            ..self.clone()
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        req
    }

    fn transport(&self, e: reqwest::Error) -> DaemonError {
        let addr = self.addr.clone();
        if e.is_connect() {
            DaemonError::NotRunning { addr, source: e }
        } else {
            DaemonError::Transport { addr, source: e }
        }
    }

    /// Sends a request; a daemon that does not answer, or refuses the token, is an error, every
    /// other answer is the caller's.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, DaemonError> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(DaemonError::Unauthorized),
            StatusCode::FORBIDDEN => Err(DaemonError::Forbidden),
            _ => Ok(resp),
        }
    }

    /// GETs `path`, whatever the daemon answers but 401 and 403 (for `privreg warm`, which
    /// reports each answer).
    pub(crate) async fn get(&self, path: &str) -> Result<reqwest::Response, DaemonError> {
        self.send(self.request(Method::GET, path)).await
    }

    /// The body of a successful answer.
    async fn success(&self, path: &str, resp: reqwest::Response) -> Result<String, DaemonError> {
        let status = resp.status();
        let body = resp.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(DaemonError::Status {
                path: path.to_owned(),
                status,
                body: body.trim().to_owned(),
            });
        }
        Ok(body)
    }

    async fn document<T: DeserializeOwned>(
        &self,
        path: &str,
        req: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<T, DaemonError> {
        let resp = self.send(req).await?;
        let body = self.success(path, resp).await?;
        serde_json::from_str(&body).map_err(|source| DaemonError::BadAnswer {
            path: path.to_owned(),
            what,
            source,
        })
    }

    /// `GET /-/health`, without the local token: whether the daemon answers `ok`.
    pub(crate) async fn health(&self) -> Result<(), DaemonError> {
        let path = "/-/health";
        let resp = self
            .client
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(DaemonError::Status {
            path: path.to_owned(),
            status,
            body: resp.text().await.unwrap_or_default().trim().to_owned(),
        })
    }

    /// `GET /-/status`.
    pub(crate) async fn status(&self) -> Result<Status, DaemonError> {
        let path = "/-/status";
        self.document(path, self.request(Method::GET, path), "JSON")
            .await
    }

    /// `GET /-/policy/<krate>`; the daemon checks the name.
    pub(crate) async fn policy(&self, krate: &str) -> Result<Policy, DaemonError> {
        let path = format!("/-/policy/{krate}");
        self.document(&path, self.request(Method::GET, &path), "JSON")
            .await
    }

    /// `POST /-/refresh`.
    pub(crate) async fn refresh(
        &self,
        request: &RefreshRequest,
    ) -> Result<RefreshReport, DaemonError> {
        let path = "/-/refresh";
        let req = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(request).expect("the request serialises"));
        self.document(path, req, "a report").await
    }

    /// `POST /-/audit`.
    pub(crate) async fn audit(&self, request: &AuditRequest) -> Result<AuditAnswer, DaemonError> {
        let path = "/-/audit";
        let req = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(request).expect("the request serialises"));
        self.document(path, req, "an audit").await
    }

    /// `POST /-/open`: a one-time link to the status page.
    pub(crate) async fn page_link(&self) -> Result<PageLink, DaemonError> {
        let path = "/-/open";
        self.document(path, self.request(Method::POST, path), "JSON")
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_which_status_the_daemon_answered() {
        assert_eq!(
            DaemonError::Unauthorized.status(),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(DaemonError::Forbidden.status(), Some(StatusCode::FORBIDDEN));
        let e = DaemonError::Status {
            path: "/-/status".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: "boom".into(),
        };
        assert_eq!(e.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(
            e.to_string(),
            "the daemon answered 500 Internal Server Error for /-/status: boom"
        );
    }

    #[tokio::test]
    async fn a_daemon_that_is_not_there_is_not_running() {
        // A port that was free a moment ago: nothing listens on it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .to_string();
        let client = DaemonClient::new(addr.clone(), None, Duration::from_secs(5)).unwrap();
        let e = client.status().await.unwrap_err();
        assert!(
            matches!(&e, DaemonError::NotRunning { addr: a, .. } if *a == addr),
            "{e:?}"
        );
        assert_eq!(e.status(), None);
        assert!(e.to_string().starts_with("the daemon does not answer at "));
    }
}
