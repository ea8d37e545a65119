//! A fault-injecting HTTP/1.1 reverse proxy for tests: sits in front of one registry on
//! 127.0.0.1, passes requests through unchanged, and on command injects one fault per class of
//! path (`config.json`, index files, downloads). See `privreg_tests::fault` for the protocol.
//!
//! Usage: `privreg-fault-proxy --upstream HOST:PORT`. Every connection gets one answer and
//! `Connection: close`. The upstream's whole answer is read before anything is sent on, so a
//! client that leaves early never breaks the upstream's connection (cargo's test server dies on
//! a broken pipe).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privreg_tests::fault::{Command, Fault, Hit, PathClass};

/// How long a hanging answer waits for the client to leave before giving up on it.
const HANG_LIMIT: Duration = Duration::from_mins(5);
/// A dripped body: this many bytes…
const DRIP_BYTES: usize = 2;
/// …every this long.
const DRIP_EVERY: Duration = Duration::from_millis(250);

const GARBAGE: &[u8] =
    b"<html><body>\n<h1>502 Bad Gateway</h1>\n\x00\xff\xfe not an index, not gzip\n</body></html>\n";

struct State {
    upstream: String,
    addr: String,
    elsewhere: String,
    faults: Mutex<HashMap<PathClass, (Fault, u64)>>,
    hits: Mutex<Vec<Hit>>,
    elsewhere_hits: Mutex<Vec<Hit>>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// Status line and headers, with `content_length` and `Connection: close`.
    fn head(&self, content_length: usize) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            302 => "Found",
            304 => "Not Modified",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Other",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (k, v) in &self.headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        let _ = write!(
            head,
            "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
        );
        head.into_bytes()
    }
}

/// Reads one request; `None` when the client sent nothing.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other(format!("bad request line {line:?}")));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other("request headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = req.header("content-length").and_then(|l| l.parse().ok()) {
        req.body = vec![0; len];
        reader.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

/// Parses a whole HTTP/1.1 response read to the end of its connection.
fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("upstream answer has no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("upstream answer has a bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection")
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// The upstream's own answer to `req` (`config.json` pointed at the proxy).
fn forward(state: &State, req: &Request) -> io::Result<Response> {
    let mut up = TcpStream::connect(&state.upstream)?;
    up.set_read_timeout(Some(Duration::from_mins(1)))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        req.method.to_ascii_uppercase(),
        req.path,
        state.upstream
    );
    for (k, v) in &req.headers {
        if !["host", "connection", "content-length"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            let _ = write!(head, "{k}: {v}\r\n");
        }
    }
    if !req.body.is_empty() {
        let _ = write!(head, "Content-Length: {}\r\n", req.body.len());
    }
    head.push_str("\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    let mut resp = parse_response(&raw)?;
    if req.path == "/index/config.json" && resp.status == 200 {
        let text = String::from_utf8_lossy(&resp.body).replace(
            &format!("http://{}", state.upstream),
            &format!("http://{}", state.addr),
        );
        resp.body = text.into_bytes();
    }
    Ok(resp)
}

/// What became of one answer.
#[derive(Default)]
struct Outcome {
    body_sent: usize,
    client_left: bool,
}

fn send(out: &mut TcpStream, resp: &Response) -> io::Result<Outcome> {
    out.write_all(&resp.head(resp.body.len()))?;
    out.write_all(&resp.body)?;
    out.flush()?;
    Ok(Outcome {
        body_sent: resp.body.len(),
        client_left: false,
    })
}

/// Waits until the client closes the connection (or [`HANG_LIMIT`]), answering nothing.
fn hang(out: &mut TcpStream) -> Outcome {
    let _ = out.set_read_timeout(Some(HANG_LIMIT));
    let mut buf = [0u8; 1024];
    let client_left = loop {
        match out.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    Outcome {
        body_sent: 0,
        client_left,
    }
}

/// Headers at once, then the body a few bytes at a time until done or the client leaves.
fn drip(out: &mut TcpStream, resp: &Response) -> io::Result<Outcome> {
    out.write_all(&resp.head(resp.body.len()))?;
    out.flush()?;
    let mut o = Outcome::default();
    for chunk in resp.body.chunks(DRIP_BYTES) {
        std::thread::sleep(DRIP_EVERY);
        if out.write_all(chunk).and_then(|()| out.flush()).is_err() {
            o.client_left = true;
            return Ok(o);
        }
        o.body_sent += chunk.len();
    }
    Ok(o)
}

fn answer(
    state: &State,
    req: &Request,
    fault: Fault,
    retry_after: u64,
    out: &mut TcpStream,
) -> io::Result<Outcome> {
    let retry = retry_after.to_string();
    match fault {
        Fault::None => send(out, &forward(state, req)?),
        Fault::Status500 => send(out, &Response::new(500, &[], b"internal error\n")),
        Fault::Status503 => send(
            out,
            &Response::new(503, &[("Retry-After", &retry)], b"service unavailable\n"),
        ),
        Fault::Status429 => send(
            out,
            &Response::new(429, &[("Retry-After", &retry)], b"too many requests\n"),
        ),
        Fault::Status401 => send(
            out,
            &Response::new(
                401,
                &[("WWW-Authenticate", "Cargo login_url=\"http://127.0.0.1/\"")],
                b"unauthorized\n",
            ),
        ),
        Fault::Status403 => send(out, &Response::new(403, &[], b"forbidden\n")),
        Fault::Redirect => {
            let location = format!("http://{}{}", state.elsewhere, req.path);
            send(out, &Response::new(302, &[("Location", &location)], b""))
        }
        Fault::Garbage => send(out, &Response::new(200, &[], GARBAGE)),
        Fault::Hang => Ok(hang(out)),
        Fault::Reset => {
            socket2::SockRef::from(&*out).set_linger(Some(Duration::ZERO))?;
            Ok(Outcome::default())
        }
        Fault::WrongChecksum => {
            let mut resp = forward(state, req)?;
            if resp.status == 200 && !resp.body.is_empty() {
                let mid = resp.body.len() / 2;
                resp.body[mid] ^= 0x55;
            }
            send(out, &resp)
        }
        Fault::Truncated => {
            let resp = forward(state, req)?;
            let half = resp.body.len() / 2;
            out.write_all(&resp.head(resp.body.len() + 64))?;
            out.write_all(&resp.body[..half])?;
            out.flush()?;
            let _ = out.shutdown(Shutdown::Both);
            Ok(Outcome {
                body_sent: half,
                client_left: false,
            })
        }
        Fault::Drip => drip(out, &forward(state, req)?),
    }
}

fn handle(state: &State, stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let class = PathClass::of(&req.path);
    let (fault, retry_after) = class
        .and_then(|c| state.faults.lock().expect("faults lock").get(&c).copied())
        .unwrap_or((Fault::None, 1));
    let id = {
        let mut hits = state.hits.lock().expect("hits lock");
        hits.push(Hit {
            path: req.path.clone(),
            class,
            fault,
            authorization: req.header("authorization").is_some(),
            body_sent: 0,
            done: false,
            client_left: false,
        });
        hits.len() - 1
    };
    let mut out = stream;
    let outcome = answer(state, &req, fault, retry_after, &mut out).unwrap_or_else(|e| {
        // A client that hangs up early (a timeout, a daemon stopped mid-request) is expected.
        if !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            eprintln!("privreg-fault-proxy: {} {}: {e}", req.method, req.path);
        }
        Outcome {
            body_sent: 0,
            client_left: true,
        }
    });
    drop(out);
    let mut hits = state.hits.lock().expect("hits lock");
    let hit = &mut hits[id];
    hit.body_sent = outcome.body_sent;
    hit.client_left = outcome.client_left;
    hit.done = true;
    Ok(())
}

/// The other origin: answers 200 to everything and records it.
fn handle_elsewhere(state: &State, mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let body = b"{\"dl\":\"http://127.0.0.1:1/elsewhere\"}\n";
    send(&mut stream, &Response::new(200, &[], body))?;
    state
        .elsewhere_hits
        .lock()
        .expect("elsewhere lock")
        .push(Hit {
            class: PathClass::of(&req.path),
            authorization: req.header("authorization").is_some(),
            path: req.path,
            fault: Fault::None,
            body_sent: body.len(),
            done: true,
            client_left: false,
        });
    Ok(())
}

fn serve(
    listener: TcpListener,
    state: Arc<State>,
    handler: fn(&State, TcpStream) -> io::Result<()>,
) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let state = state.clone();
            std::thread::spawn(move || {
                if let Err(e) = handler(&state, stream) {
                    eprintln!("privreg-fault-proxy: {e}");
                }
            });
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut upstream = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--upstream" => upstream = args.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    let upstream = upstream.expect("--upstream HOST:PORT is required");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let elsewhere = TcpListener::bind("127.0.0.1:0").expect("bind the other origin");
    let state = Arc::new(State {
        upstream,
        addr: listener.local_addr().expect("addr").to_string(),
        elsewhere: elsewhere.local_addr().expect("addr").to_string(),
        faults: Mutex::default(),
        hits: Mutex::default(),
        elsewhere_hits: Mutex::default(),
    });
    serve(listener, state.clone(), handle);
    serve(elsewhere, state.clone(), handle_elsewhere);

    let out = io::stdout();
    let reply = |v: serde_json::Value| {
        let mut o = out.lock();
        writeln!(o, "{v}").expect("stdout");
        o.flush().expect("stdout");
    };
    reply(serde_json::json!({ "addr": state.addr, "elsewhere": state.elsewhere }));
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let cmd: Command = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                reply(serde_json::json!({ "error": e.to_string() }));
                continue;
            }
        };
        match cmd {
            Command::Fault {
                class,
                fault,
                retry_after,
            } => {
                state
                    .faults
                    .lock()
                    .expect("faults lock")
                    .insert(class, (fault, retry_after));
                reply(serde_json::json!({ "ok": true }));
            }
            Command::Clear(_) => {
                state.faults.lock().expect("faults lock").clear();
                reply(serde_json::json!({ "ok": true }));
            }
            Command::Hits(_) => {
                let hits = state.hits.lock().expect("hits lock").clone();
                let elsewhere = state.elsewhere_hits.lock().expect("elsewhere lock").clone();
                reply(serde_json::json!({ "hits": hits, "elsewhere": elsewhere }));
            }
        }
    }
}
