//! A real S3-compatible server on 127.0.0.1 for the shared tier's tests: moto's server
//! (`moto[server]` from the Python package index, which `tests/run.sh` installs), in its own process on a free port.
//!
//! Buckets and objects are read and changed with plain HTTP requests (moto accepts unsigned
//! ones), so that a test can list what the daemons wrote and tamper with an object.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::http_request;

/// The Python interpreter with moto installed: `$PRIVREG_PYTHON`, else `python3`. Panics,
/// saying what to install, when moto's server is not importable.
fn python_with_moto() -> String {
    let python = std::env::var("PRIVREG_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&python)
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the shared tier's tests need moto's S3 server: `{python} -m pip install 'moto[server]'` \
         (tests/run.sh does; set PRIVREG_PYTHON to use another interpreter)"
    );
    python
}

/// An `Authorization` header of the right shape for the test credentials (`testing`).
const ANY_SIGNATURE: &str = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

/// moto's S3 server, killed on drop.
pub struct S3Server {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

/// An answer from the server.
#[derive(Debug)]
pub struct S3Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl S3Server {
    /// Starts the server on a free port and waits until it answers.
    pub fn start() -> S3Server {
        let python = python_with_moto();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server");
        let server = S3Server {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.try_request("GET", "/", b"").is_err() {
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://127.0.0.1:PORT`, for `[cache.shared] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id (to stop it with a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGSTOP or SIGCONT: a stopped server accepts connections and never answers.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} moto's server");
    }

    /// Kills the server.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn try_request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<S3Response> {
        // moto checks no signature, but treats a request without `Authorization` as anonymous
        // (refused for existing objects).
        let headers = [
            ("Authorization", ANY_SIGNATURE),
            ("Content-Type", "application/octet-stream"),
        ];
        let r = http_request(&self.addr, method, path, &headers, Some(body))?;
        Ok(S3Response {
            status: r.status,
            body: r.body,
        })
    }

    /// One request; panics when the server does not answer.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> S3Response {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} to moto's server: {e}"))
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(r.status, 200, "create bucket {bucket}: {:?}", r.body);
    }

    /// Every key in `bucket`, sorted (up to 1000; the tests hold far fewer).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let r = self.request("GET", &format!("/{bucket}?list-type=2"), b"");
        assert_eq!(r.status, 200, "list {bucket}");
        let xml = String::from_utf8_lossy(&r.body).into_owned();
        let mut keys: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect();
        keys.sort();
        keys
    }

    pub fn get_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let r = self.request("GET", &format!("/{bucket}/{key}"), b"");
        assert_eq!(r.status, 200, "get {key}");
        r.body
    }

    pub fn delete_object(&self, bucket: &str, key: &str) {
        let r = self.request("DELETE", &format!("/{bucket}/{key}"), b"");
        assert!(matches!(r.status, 200 | 204), "delete {key}: {}", r.status);
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let r = self.request("PUT", &format!("/{bucket}/{key}"), body);
        assert_eq!(r.status, 200, "put {key}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // A stopped process would keep its port; wake it so that the kill ends it cleanly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        self.kill();
    }
}
