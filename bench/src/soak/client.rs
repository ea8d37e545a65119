//! The soak's load: keep-alive HTTP/1.1 connections, each looping over a mix of targets and
//! checking every answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

/// A request without a complete answer by then counts as an error.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Each connection's cycle: 6 index files, 2 missing crates, 2 downloads.
const PATTERN: [Kind; 10] = [
    Kind::Index,
    Kind::Index,
    Kind::Missing,
    Kind::Index,
    Kind::Download,
    Kind::Index,
    Kind::Index,
    Kind::Missing,
    Kind::Index,
    Kind::Download,
];
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Index = 0,
    Missing = 1,
    Download = 2,
}

pub(super) const KINDS: [Kind; 3] = [Kind::Index, Kind::Missing, Kind::Download];

impl Kind {
    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Index => "cached index files (200, the body served at warm-up)",
            Kind::Missing => "index files of missing crates (404)",
            Kind::Download => "downloads (200, sha256 of the body = checksum)",
        }
    }
}

pub(super) enum Expect {
    Body(Bytes),
    NotFound,
    Sha256(String),
}

pub(super) struct Target {
    pub path: String,
    pub expect: Expect,
}

/// The targets of each kind, indexed by `Kind as usize`.
pub(super) struct Mix {
    pub lists: [Vec<Target>; 3],
}

/// Requests, errors and latencies (µs) of one or more connections, by kind.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub lat: [Vec<u32>; 3],
    pub requests: [u64; 3],
    pub errors: [u64; 3],
    pub examples: Vec<String>,
    pub connects: u64,
}

impl Tally {
    fn error(&mut self, kind: Kind, message: String) {
        self.errors[kind as usize] += 1;
        if self.examples.len() < 10 {
            self.examples.push(message);
        }
    }

    fn merge(&mut self, o: Tally) {
        for k in 0..3 {
            self.lat[k].extend_from_slice(&o.lat[k]);
            self.requests[k] += o.requests[k];
            self.errors[k] += o.errors[k];
        }
        let room = 10usize.saturating_sub(self.examples.len());
        self.examples.extend(o.examples.into_iter().take(room));
        self.connects += o.connects;
    }

    pub(super) fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }
}

type Sender = SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// `GET path` on an open connection: the status and the whole body.
async fn get(send: &mut Sender, host: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    send.ready()
        .await
        .context("the daemon closed the connection")?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Why an answer is wrong, if it is.
pub(super) fn check(target: &Target, status: u16, body: &[u8]) -> Result<(), String> {
    match &target.expect {
        Expect::Body(want) => {
            if status != 200 {
                Err(format!("answered {status}, want 200"))
            } else if body != want.as_ref() {
                Err(format!(
                    "a body of {} bytes that differs from the {} bytes served at warm-up",
                    body.len(),
                    want.len()
                ))
            } else {
                Ok(())
            }
        }
        Expect::NotFound if status == 404 => Ok(()),
        Expect::NotFound => Err(format!("answered {status}, want 404")),
        Expect::Sha256(want) => {
            if status != 200 {
                return Err(format!("answered {status}, want 200"));
            }
            let got = sha256_hex(body);
            if &got == want {
                Ok(())
            } else {
                Err(format!("a body of {} bytes with sha256 {got}", body.len()))
            }
        }
    }
}

/// One connection's loop until `until`: the next target of the next kind of [`PATTERN`], each
/// connection starting at its own place in each list. After a transport error it reconnects.
async fn connection(
    addr: SocketAddr,
    mix: Arc<Mix>,
    c: usize,
    conns: usize,
    until: Instant,
) -> Tally {
    let host = addr.to_string();
    let mut t = Tally::default();
    let mut next: [usize; 3] = std::array::from_fn(|k| c * mix.lists[k].len() / conns.max(1));
    let mut slot = c;
    let mut send: Option<Sender> = None;
    while Instant::now() < until {
        let kind = PATTERN[slot % PATTERN.len()];
        slot += 1;
        let k = kind as usize;
        let list = &mix.lists[k];
        if list.is_empty() {
            continue;
        }
        let target = &list[next[k] % list.len()];
        next[k] += 1;
        t.requests[k] += 1;
        if send.is_none() {
            match connect(addr).await {
                Ok(s) => {
                    t.connects += 1;
                    send = Some(s);
                }
                Err(e) => {
                    t.error(kind, format!("GET {}: cannot connect: {e:#}", target.path));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let s = send.as_mut().expect("connected above");
        let start = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, get(s, &host, &target.path)).await {
            Err(_) => {
                t.error(
                    kind,
                    format!(
                        "GET {}: no answer within {} s",
                        target.path,
                        REQUEST_TIMEOUT.as_secs()
                    ),
                );
                send = None;
            }
            Ok(Err(e)) => {
                t.error(kind, format!("GET {}: {e:#}", target.path));
                send = None;
            }
            Ok(Ok((status, body))) => {
                let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
                t.lat[k].push(us);
                if let Err(why) = check(target, status, &body) {
                    t.error(kind, format!("GET {}: {why}", target.path));
                }
            }
        }
    }
    t
}

/// `conns` connections looping over `mix` for `secs`; returns what they counted and the seconds
/// it took.
pub(super) async fn run_mix(
    addr: SocketAddr,
    mix: Arc<Mix>,
    conns: usize,
    secs: f64,
) -> anyhow::Result<(Tally, f64)> {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|c| tokio::spawn(connection(addr, mix.clone(), c, conns, until)))
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        all.merge(t.await.context("a load connection panicked")?);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

/// GETs every path once over `conns` keep-alive connections; the answers in the order of `paths`.
pub(super) async fn get_all(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    conns: usize,
) -> anyhow::Result<Vec<(u16, Bytes)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let host = addr.to_string();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (paths, next, host) = (paths.clone(), next.clone(), host.clone());
            tokio::spawn(async move {
                let mut send = connect(addr).await?;
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else {
                        return Ok::<_, anyhow::Error>(out);
                    };
                    let answer = tokio::time::timeout(REQUEST_TIMEOUT, get(&mut send, &host, path))
                        .await
                        .with_context(|| format!("warm-up: GET {path}: no answer in time"))?
                        .with_context(|| format!("warm-up: GET {path}"))?;
                    out.push((i, answer));
                }
            })
        })
        .collect();
    let mut slots: Vec<Option<(u16, Bytes)>> = vec![None; paths.len()];
    for t in tasks {
        for (i, a) in t.await.context("a warm-up connection panicked")?? {
            slots[i] = Some(a);
        }
    }
    slots
        .into_iter()
        .map(|s| s.context("warm-up: a path got no answer"))
        .collect()
}

/// Requests, errors and latency percentiles of one kind (or all).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub(super) fn stats(mut lat: Vec<u32>, requests: u64, errors: u64, secs: f64) -> Stats {
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "`p` is in [0, 1], so the rounded index is in 0..len"
        )]
        let idx = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[idx]) / 1000.0
    };
    Stats {
        requests,
        errors,
        rps: requests as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}
