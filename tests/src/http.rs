//! A minimal HTTP/1.1 client over a plain TCP stream, to look at exactly what privreg answers.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with extra headers; the response is read to the end (`Connection: close`). A body
/// shorter than its `Content-Length`, or a chunked body without its last chunk (the server went
/// away mid-answer), is an error.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    http_request(addr, "GET", path, headers, None)
}

/// Like [`http_get`], for any method, with a body (sent with its `Content-Length`) if given.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_mins(1)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if let Some(body) = body {
        let _ = write!(req, "Content-Length: {}\r\n", body.len());
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        let _ = write!(req, "Host: {addr}\r\n");
    }
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let Some(body) = body {
        s.write_all(body)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(want) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        && body.len() < want
    {
        // What curl (and so cargo) reports as a broken transfer, never as a response.
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("transfer closed with {} of {want} bytes", body.len()),
        ));
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// The body of a chunked transfer; an error unless it ends with the last (zero-size) chunk and
/// every chunk arrived whole (a cut-off transfer is what curl reports as an error too).
fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let cut = |what: String| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what);
    let mut out = Vec::new();
    loop {
        let pos = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| cut(format!("chunked body cut off after {} bytes", out.len())))?;
        let line = String::from_utf8_lossy(&data[..pos]);
        // A chunk size may carry extensions after `;`.
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
        let start = pos + 2;
        if size == 0 {
            return Ok(out);
        }
        if data.len() < start + size + 2 {
            return Err(cut(format!(
                "chunked body cut off inside a chunk of {size} bytes (after {} bytes)",
                out.len()
            )));
        }
        if &data[start + size..start + size + 2] != b"\r\n" {
            return Err(std::io::Error::other("a chunk does not end with CRLF"));
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn whole_chunked_bodies_are_read() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }

    #[test]
    fn cut_off_chunked_bodies_are_errors() {
        for cut in [&b"3\r\nabc\r\n"[..], b"3\r\nab", b"3\r\nabc\r\n2\r\n", b""] {
            assert!(dechunk(cut).is_err(), "{:?}", String::from_utf8_lossy(cut));
        }
    }
}
