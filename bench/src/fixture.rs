//! The local upstream: a static sparse registry served from a mirror directory over HTTP/1.1
//! (keep-alive) on 127.0.0.1, with a fixed delay added to every request to stand in for a remote
//! registry. Every file has a quoted `ETag`, and `If-None-Match` gets 304.
//!
//! Mirror layout (also what nginx serves): `index/<sparse index path>` and
//! `dl/<crate>/<version>/download`. `config.json` is generated with this server's own address.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

/// Request counters, reset around each measured run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub not_modified: AtomicU64,
    pub not_found: AtomicU64,
    pub downloads: AtomicU64,
    in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
}

/// What the upstream saw during one run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen {
    pub requests: u64,
    pub not_modified: u64,
    /// 404s: with the mirror, files that resolving never reads (the mirror holds only those).
    pub not_found: u64,
    pub downloads: u64,
    pub max_in_flight: u64,
}

impl Counters {
    /// Returns what was counted since the last call and starts again from zero.
    pub(crate) fn take(&self) -> Seen {
        Seen {
            requests: self.requests.swap(0, Ordering::Relaxed),
            not_modified: self.not_modified.swap(0, Ordering::Relaxed),
            not_found: self.not_found.swap(0, Ordering::Relaxed),
            downloads: self.downloads.swap(0, Ordering::Relaxed),
            max_in_flight: self.max_in_flight.swap(0, Ordering::Relaxed),
        }
    }
}

struct File {
    body: Bytes,
    etag: HeaderValue,
}

struct State {
    files: HashMap<String, File>,
    config: File,
    delay: Duration,
    counters: Arc<Counters>,
}

/// A running local upstream (it stops with the runtime it was started on).
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    /// Sparse index paths (`se/rd/serde`) of every index file, sorted.
    pub index_paths: Vec<String>,
}

impl Upstream {
    /// `sparse+http://ADDR/index/`
    pub(crate) fn index_url(&self) -> String {
        format!("sparse+http://{}/index/", self.addr)
    }
}

fn file(body: Bytes) -> File {
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", &hex::encode(digest)[..20]);
    File {
        body,
        etag: HeaderValue::from_str(&etag).expect("hex is a header value"),
    }
}

fn load_tree(root: &Path, dir: &Path, url_prefix: &str, out: &mut HashMap<String, File>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            load_tree(root, &path, url_prefix, out);
        } else if let Ok(data) = std::fs::read(&path) {
            let rel = path.strip_prefix(root).expect("under root");
            let key = format!("{url_prefix}{}", rel.to_string_lossy());
            out.insert(key, file(Bytes::from(data)));
        }
    }
}

/// Loads the mirror into memory and starts serving it on 127.0.0.1 with `delay` per request.
pub(crate) async fn start(mirror: &Path, delay: Duration) -> anyhow::Result<Upstream> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut files = HashMap::new();
    let index = mirror.join("index");
    load_tree(&index, &index, "/index/", &mut files);
    let dl = mirror.join("dl");
    load_tree(&dl, &dl, "/dl/", &mut files);
    let mut index_paths: Vec<String> = files
        .keys()
        .filter_map(|k| k.strip_prefix("/index/"))
        .map(str::to_owned)
        .collect();
    index_paths.sort();
    anyhow::ensure!(
        !index_paths.is_empty(),
        "{}: the mirror has no index files",
        mirror.display()
    );
    let config = serde_json::json!({
        "dl": format!("http://{addr}/dl/{{crate}}/{{version}}/download"),
        "api": format!("http://{addr}"),
    });
    let counters = Arc::new(Counters::default());
    let state = Arc::new(State {
        files,
        config: file(Bytes::from(config.to_string())),
        delay,
        counters: counters.clone(),
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(serve(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Upstream {
        addr,
        counters,
        index_paths,
    })
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

/// Whether an `If-None-Match` value names `etag` (a list, `*`, or weak validators).
fn matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let want = etag.to_str().unwrap_or_default();
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == want)
}

async fn serve(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let c = &state.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    c.max_in_flight.fetch_max(now, Ordering::Relaxed);
    tokio::time::sleep(state.delay).await;
    let path = req.uri().path();
    let found = if path == "/index/config.json" {
        Some(&state.config)
    } else {
        state.files.get(path)
    };
    let resp = match found {
        None => {
            c.not_found.fetch_add(1, Ordering::Relaxed);
            status(StatusCode::NOT_FOUND)
        }
        Some(f) => {
            if path.starts_with("/dl/") {
                c.downloads.fetch_add(1, Ordering::Relaxed);
            }
            let fresh = req
                .headers()
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| matches(v, &f.etag));
            let mut r = if fresh {
                c.not_modified.fetch_add(1, Ordering::Relaxed);
                status(StatusCode::NOT_MODIFIED)
            } else {
                Response::new(Full::new(f.body.clone()))
            };
            r.headers_mut().insert(header::ETAG, f.etag.clone());
            r
        }
    };
    c.in_flight.fetch_sub(1, Ordering::Relaxed);
    resp
}

/// Checks that the mirror directory looks complete enough to serve.
pub(crate) fn check_mirror(mirror: &Path) -> anyhow::Result<()> {
    let meta = mirror.join("mirror.json");
    std::fs::metadata(&meta)
        .with_context(|| format!("{}: missing (the mirror is incomplete)", meta.display()))?;
    Ok(())
}
