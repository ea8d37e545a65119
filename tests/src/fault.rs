//! Faults between privreg and an upstream: [`FaultProxy`] runs `privreg-fault-proxy`, a small
//! HTTP/1.1 reverse proxy in front of a real test registry that passes requests through unchanged
//! until told to inject a [`Fault`] into one [`PathClass`] of requests.
//!
//! Protocol of the process (like `privreg-test-registry`): `privreg-fault-proxy --upstream
//! HOST:PORT` prints one JSON line `{"addr":…,"elsewhere":…}` when ready, then reads one JSON
//! [`Command`] per line on stdin and answers each with one JSON line. It exits when stdin closes.
//! `elsewhere` is a second listener, another origin, that redirects point at: it answers every
//! request with 200 and records it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command as Process, Stdio};
use std::time::{Duration, Instant};

use crate::{Registry, bin};

/// Which upstream requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathClass {
    /// `/index/config.json`
    Config,
    /// Every other `/index/…` file.
    Index,
    /// `/dl/…`, the `.crate` downloads.
    Download,
}

impl PathClass {
    pub const ALL: [PathClass; 3] = [PathClass::Config, PathClass::Index, PathClass::Download];

    /// The class of a request path; `None` for anything else (the web API), which is never
    /// faulted.
    pub fn of(path: &str) -> Option<PathClass> {
        if path == "/index/config.json" {
            Some(PathClass::Config)
        } else if path.starts_with("/index/") {
            Some(PathClass::Index)
        } else if path.starts_with("/dl/") {
            Some(PathClass::Download)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PathClass::Config => "config",
            PathClass::Index => "index",
            PathClass::Download => "download",
        }
    }
}

/// What the proxy does to a request of a faulted class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// Pass through unchanged (`config.json` has its `dl` and `api` pointed at the proxy).
    #[serde(rename = "none")]
    None,
    #[serde(rename = "500")]
    Status500,
    /// 503 with `Retry-After`.
    #[serde(rename = "503")]
    Status503,
    /// 429 with `Retry-After`.
    #[serde(rename = "429")]
    Status429,
    /// Read the request, never answer; the connection stays open until the client leaves.
    #[serde(rename = "hang")]
    Hang,
    /// Read the request, then close with `SO_LINGER` 0: a TCP reset.
    #[serde(rename = "reset")]
    Reset,
    /// 200 with a body of junk (not JSON, not gzip, partly not UTF-8).
    #[serde(rename = "garbage")]
    Garbage,
    /// The real answer with a `Content-Length` larger than what is sent; then the connection
    /// closes.
    #[serde(rename = "truncated")]
    Truncated,
    /// The real answer, headers at once, then the body two bytes every 250 ms.
    #[serde(rename = "drip")]
    Drip,
    /// The real answer with one byte of the body changed, 200: a download's sha256 no longer
    /// matches the index.
    #[serde(rename = "wrong-checksum")]
    WrongChecksum,
    #[serde(rename = "401")]
    Status401,
    #[serde(rename = "403")]
    Status403,
    /// 302 to the same path on the `elsewhere` origin.
    #[serde(rename = "redirect")]
    Redirect,
}

impl Fault {
    /// Every fault, in the order of the documentation's table.
    pub const ALL: [Fault; 12] = [
        Fault::Status500,
        Fault::Status503,
        Fault::Status429,
        Fault::Hang,
        Fault::Reset,
        Fault::Garbage,
        Fault::Truncated,
        Fault::Drip,
        Fault::WrongChecksum,
        Fault::Status401,
        Fault::Status403,
        Fault::Redirect,
    ];

    /// The name used on the wire and in test names.
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Status500 => "500",
            Fault::Status503 => "503",
            Fault::Status429 => "429",
            Fault::Hang => "hang",
            Fault::Reset => "reset",
            Fault::Garbage => "garbage",
            Fault::Truncated => "truncated",
            Fault::Drip => "drip",
            Fault::WrongChecksum => "wrong-checksum",
            Fault::Status401 => "401",
            Fault::Status403 => "403",
            Fault::Redirect => "redirect",
        }
    }
}

/// One command to the proxy process.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// From now on, requests of `class` get `fault` (`retry_after`: the `Retry-After` seconds of
    /// 429 and 503). Answer: `{"ok":true}`.
    Fault {
        class: PathClass,
        fault: Fault,
        #[serde(default = "default_retry_after")]
        retry_after: u64,
    },
    /// Every class passes through again. Answer: `{"ok":true}`.
    Clear(bool),
    /// Answer: `{"hits":[Hit…],"elsewhere":[Hit…]}`.
    Hits(bool),
}

fn default_retry_after() -> u64 {
    1
}

/// One request the proxy (or its `elsewhere` origin) received, and what became of it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    pub path: String,
    pub class: Option<PathClass>,
    pub fault: Fault,
    /// The request carried an `Authorization` header.
    pub authorization: bool,
    /// Bytes of the response body written to the client.
    pub body_sent: usize,
    /// The proxy is done with the request.
    pub done: bool,
    /// The client closed the connection before the proxy had sent its whole answer (a hang or a
    /// drip cut off by the client's timeout).
    pub client_left: bool,
}

/// A running `privreg-fault-proxy` in front of one test registry.
pub struct FaultProxy {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// `127.0.0.1:PORT` of the proxy.
    pub addr: String,
    /// `127.0.0.1:PORT` of the other origin that redirects point at.
    pub elsewhere: String,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream`.
    pub fn start(upstream: &Registry) -> FaultProxy {
        let mut child = Process::new(bin("privreg-fault-proxy"))
            .arg("--upstream")
            .arg(upstream.addr())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start privreg-fault-proxy");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut proxy = FaultProxy {
            child,
            stdin,
            stdout,
            addr: String::new(),
            elsewhere: String::new(),
        };
        let ready = proxy.read_reply();
        ready["addr"]
            .as_str()
            .expect("addr")
            .clone_into(&mut proxy.addr);
        ready["elsewhere"]
            .as_str()
            .expect("elsewhere")
            .clone_into(&mut proxy.elsewhere);
        proxy
    }

    fn read_reply(&mut self) -> serde_json::Value {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read fault proxy");
        assert!(n > 0, "fault proxy exited");
        let v: serde_json::Value = serde_json::from_str(&line).expect("fault proxy reply");
        assert!(v.get("error").is_none(), "fault proxy: {v}");
        v
    }

    fn command(&mut self, cmd: &Command) -> serde_json::Value {
        let stdin = self.stdin.as_mut().expect("proxy is running");
        let text = serde_json::to_string(cmd).expect("command");
        writeln!(stdin, "{text}").expect("write fault proxy");
        stdin.flush().expect("flush");
        self.read_reply()
    }

    /// `sparse+http://ADDR/index/`: the upstream's index URL, through the proxy.
    pub fn index_url(&self) -> String {
        format!("sparse+http://{}/index/", self.addr)
    }

    /// Injects `fault` into every request of `class` from now on (`Retry-After: 30` on 429 and
    /// 503; see [`FaultProxy::set_with_retry_after`]).
    pub fn set(&mut self, class: PathClass, fault: Fault) {
        self.set_with_retry_after(class, fault, 30);
    }

    pub fn set_with_retry_after(&mut self, class: PathClass, fault: Fault, retry_after: u64) {
        self.command(&Command::Fault {
            class,
            fault,
            retry_after,
        });
    }

    /// Passes everything through again.
    pub fn clear(&mut self) {
        self.command(&Command::Clear(true));
    }

    /// Every request so far, and every request the `elsewhere` origin received.
    pub fn hits(&mut self) -> (Vec<Hit>, Vec<Hit>) {
        let r = self.command(&Command::Hits(true));
        let parse = |v: &serde_json::Value| -> Vec<Hit> {
            serde_json::from_value(v.clone()).expect("hits")
        };
        (parse(&r["hits"]), parse(&r["elsewhere"]))
    }

    /// The requests so far for `path`.
    pub fn hits_for(&mut self, path: &str) -> Vec<Hit> {
        self.hits()
            .0
            .into_iter()
            .filter(|h| h.path == path)
            .collect()
    }

    /// Waits (at most `secs`) until every request for `path` is done; returns them.
    pub fn settled(&mut self, path: &str, secs: u64) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let hits = self.hits_for(path);
            if hits.iter().all(|h| h.done) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "requests for {path} still open after {secs}s: {hits:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `secs`, a bound that only turns "never" into a failure) until at least `n`
    /// requests for `path` came and every one is done; returns them.
    pub fn completed(&mut self, path: &str, n: usize, secs: u64) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let hits = self.hits_for(path);
            if hits.len() >= n && hits.iter().all(|h| h.done) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "not {n} finished requests for {path} after {secs}s: {hits:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_classes() {
        assert_eq!(PathClass::of("/index/config.json"), Some(PathClass::Config));
        assert_eq!(PathClass::of("/index/3/f/foo"), Some(PathClass::Index));
        assert_eq!(
            PathClass::of("/dl/foo/1.0.0/download"),
            Some(PathClass::Download)
        );
        assert_eq!(PathClass::of("/api/v1/crates/new"), None);
    }

    #[test]
    fn commands_round_trip_by_name() {
        for f in Fault::ALL {
            let text = serde_json::to_string(&f).unwrap();
            assert_eq!(text, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<Fault>(&text).unwrap(), f);
        }
        let c: Command =
            serde_json::from_str(r#"{"fault":{"class":"index","fault":"429"}}"#).unwrap();
        assert!(matches!(
            c,
            Command::Fault {
                class: PathClass::Index,
                fault: Fault::Status429,
                retry_after: 1
            }
        ));
    }
}
