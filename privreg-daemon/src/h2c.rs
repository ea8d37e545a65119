//! Accepting cargo's `Upgrade: h2c` offer on plain http (RFC 7540 §3.2).
//!
//! Cargo (curl) keeps at most two connections to a registry host; over HTTP/1.1 that is two
//! requests in flight, so a resolution waits on the daemon one round trip per pair of index
//! files. Over HTTP/2 it sends every request it has at once. Cargo offers the upgrade with the
//! first request on a connection; hyper does not implement the server side of it, so this module
//! does the little that is missing:
//!
//! - answer the offering request with `101 Switching Protocols`, then, on the upgraded
//!   connection, a SETTINGS frame and the response to that request as stream 1 (HPACK literals
//!   that leave the header table untouched), and
//! - run hyper's own HTTP/2 server on the rest of the connection, hiding from it the three
//!   things it did not take part in: the client's acknowledgement of that first SETTINGS frame,
//!   frames on stream 1, and the connection-level flow-control credit the client gives back for
//!   the DATA sent on stream 1 (so hyper's idea of the client's window stays the client's).
//!
//! Frames are passed on whole, but never buffered beyond the maximum frame size the server
//! advertises (the default, [`MAX_FRAME_SIZE`]): a client declaring a larger frame is handed
//! straight to hyper, which answers GOAWAY with `FRAME_SIZE_ERROR` and closes, as it does for
//! prior-knowledge HTTP/2.
//!
//! The frame and header encodings are pure functions, pinned by the tests below against RFC 7541's
//! examples. Only small first responses are sent this way (one DATA frame within the default
//! frame size and within the window the client's `HTTP2-Settings` give stream 1); a larger one
//! is answered over HTTP/1.1 as usual, and an offer whose `HTTP2-Settings` is malformed is
//! declined.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::daemon::Daemon;

/// The largest first response sent on stream 1: one DATA frame of the default maximum frame
/// size, well inside the default flow-control window.
pub(crate) const MAX_FIRST_BODY: usize = 16 << 10;

/// Streams in flight on one upgraded connection. Cargo asks for every download at once and each
/// answer is held in memory until it is sent, so this bounds the daemon's memory (cargo keeps at
/// most two connections); index answers come from memory and need no more to keep cargo busy.
pub(crate) const MAX_STREAMS: u32 = 32;

/// `SETTINGS_MAX_FRAME_SIZE` as both the upgrade's SETTINGS (empty: the default) and hyper's own
/// (its default) advertise it: the largest frame a client may send.
pub(crate) const MAX_FRAME_SIZE: usize = 16 << 10;

const PREFACE_LEN: usize = 24;
const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_WINDOW_UPDATE: u8 = 0x8;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether `req` offers an upgrade to h2c that privreg takes: an HTTP/1.1 GET without a body,
/// with `Upgrade: h2c`, an `HTTP2-Settings` header and both named in `Connection`.
pub(crate) fn offered<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && has_token(h, header::UPGRADE, "h2c")
        && h.contains_key("http2-settings")
        && has_token(h, header::CONNECTION, "upgrade")
        && has_token(h, header::CONNECTION, "http2-settings")
        && !h.contains_key(header::TRANSFER_ENCODING)
        && h.get(header::CONTENT_LENGTH).is_none_or(|v| v == "0")
}

/// The flow-control window the client gives stream 1, from its `HTTP2-Settings` header (RFC 7540
/// §3.2.1: the payload of a SETTINGS frame in base64url): its `SETTINGS_INITIAL_WINDOW_SIZE`, and
/// never more than the connection's initial window (65,535). `None` when the header is not a
/// valid SETTINGS payload: then the offer is declined.
pub(crate) fn stream_one_window(settings: &[u8]) -> Option<u32> {
    const DEFAULT_WINDOW: u32 = 65_535;
    let mut bits = 0u32;
    let mut nbits = 0u32;
    let mut payload = Vec::new();
    for &c in settings.iter().take_while(|&&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            payload.push(
                u8::try_from(bits >> nbits).expect("`bits` keeps under 8 bits above `nbits`"),
            );
            bits &= (1 << nbits) - 1;
        }
    }
    if payload.len() % 6 != 0 {
        return None;
    }
    let mut window = DEFAULT_WINDOW;
    for setting in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([setting[0], setting[1]]);
        let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
        if id == 0x4 {
            if value > 0x7fff_ffff {
                return None;
            }
            window = value;
        }
    }
    Some(window.min(DEFAULT_WINDOW))
}

/// One HTTP/2 frame.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frames stay small");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK integer with an `n`-bit prefix; `high` holds the bits above the prefix.
#[allow(
    clippy::cast_possible_truncation,
    reason = "`n` is at most 8, so each byte pushed fits: the prefix's maximum, a value below it, \
              or a 7-bit group"
)]
fn hpack_int(out: &mut Vec<u8>, n: u8, high: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK string literal, not Huffman-coded.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// The header block of a response: every field a literal without indexing, so the decoder's
/// dynamic table stays as the encoder that takes over the connection expects it (empty).
fn header_block(status: StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    // `:status` is entry 8 of the static table: literal without indexing, indexed name.
    hpack_int(&mut out, 4, 0x00, 8);
    hpack_str(&mut out, status.as_str().as_bytes());
    for (name, value) in headers {
        if matches!(
            name,
            &header::CONNECTION | &header::TRANSFER_ENCODING | &header::UPGRADE
        ) || name == "keep-alive"
            || name == "proxy-connection"
        {
            continue;
        }
        out.push(0x00);
        hpack_str(&mut out, name.as_str().as_bytes());
        hpack_str(&mut out, value.as_bytes());
    }
    out
}

/// What the server writes first on the upgraded connection: an empty SETTINGS frame (the server
/// preface), then the response to the upgrade request on stream 1.
pub(crate) fn first_frames(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame(&mut out, FRAME_SETTINGS, 0, 0, &[]);
    let block = header_block(status, headers);
    if body.is_empty() {
        frame(
            &mut out,
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &block,
        );
    } else {
        frame(&mut out, FRAME_HEADERS, FLAG_END_HEADERS, 1, &block);
        frame(&mut out, FRAME_DATA, FLAG_END_STREAM, 1, body);
    }
    out
}

/// Client-to-server bytes, with what the HTTP/2 server must not see taken out: the client's
/// first SETTINGS acknowledgement (it answers [`first_frames`]'s SETTINGS), any frame on
/// stream 1, and connection `WINDOW_UPDATE` credit up to the first body's length. Pure: feed
/// bytes in, take the bytes to pass on out.
#[derive(Debug, Default)]
pub(crate) struct InboundFilter {
    pending: BytesMut,
    preface_seen: usize,
    ack_dropped: bool,
    /// Connection-level window the client still has to give back for stream 1's DATA.
    window_debt: u32,
    /// A frame larger than [`MAX_FRAME_SIZE`] was declared: everything goes to hyper as is.
    oversized: bool,
}

impl InboundFilter {
    /// A filter for a connection whose first answer had a body of `first_body` bytes.
    pub(crate) fn new(first_body: usize) -> InboundFilter {
        InboundFilter {
            window_debt: u32::try_from(first_body).unwrap_or(u32::MAX),
            ..InboundFilter::default()
        }
    }

    /// Takes `input`; returns the bytes ready to pass on (whole frames only, the preface as is;
    /// from a frame declared larger than [`MAX_FRAME_SIZE`] on, everything as it comes).
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut BytesMut) {
        if self.oversized {
            out.extend_from_slice(input);
            return;
        }
        self.pending.extend_from_slice(input);
        if self.preface_seen < PREFACE_LEN {
            let n = (PREFACE_LEN - self.preface_seen).min(self.pending.len());
            out.extend_from_slice(&self.pending.split_to(n));
            self.preface_seen += n;
        }
        while self.preface_seen == PREFACE_LEN && self.pending.len() >= 9 {
            let len = u32::from_be_bytes([0, self.pending[0], self.pending[1], self.pending[2]]);
            if len as usize > MAX_FRAME_SIZE {
                // Not buffered: hyper sees the frame header and refuses it (FRAME_SIZE_ERROR).
                self.oversized = true;
                out.extend_from_slice(&self.pending.split());
                return;
            }
            let total = 9 + len as usize;
            if self.pending.len() < total {
                break;
            }
            let mut f = self.pending.split_to(total);
            let (kind, flags) = (f[3], f[4]);
            let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
            let first_ack = kind == FRAME_SETTINGS && flags & FLAG_ACK != 0 && !self.ack_dropped;
            if first_ack {
                self.ack_dropped = true;
            } else if kind == FRAME_WINDOW_UPDATE && stream == 0 && len == 4 && self.window_debt > 0
            {
                let inc = u32::from_be_bytes([f[9], f[10], f[11], f[12]]) & 0x7fff_ffff;
                let paid = inc.min(self.window_debt);
                self.window_debt -= paid;
                // An increment of 0 is a protocol error: a frame fully paid off goes.
                if inc > paid {
                    f[9..13].copy_from_slice(&(inc - paid).to_be_bytes());
                    out.extend_from_slice(&f);
                }
            } else if stream != 1 {
                out.extend_from_slice(&f);
            }
        }
    }
}

/// The upgraded connection as hyper's HTTP/2 server sees it.
struct Shim<T> {
    io: T,
    /// Still to be written before anything hyper writes.
    first: Bytes,
    filter: InboundFilter,
    ready: BytesMut,
    eof: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Shim<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 16 << 10];
            let mut rb = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.filter.feed(rb.filled(), &mut this.ready);
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Shim<T> {
    fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.first.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.first))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.first.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Shim<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_first(cx))?;
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_first(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_first(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

use crate::body::Body;

/// `PRIVREG_NO_H2C=1` declines every offer (HTTP/1.1 only), for measuring what h2c brings.
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("PRIVREG_NO_H2C").is_none_or(|v| v != "1"))
}

impl Daemon {
    /// Answers one request, switching the connection to HTTP/2 when cargo offers it and the
    /// answer is small enough to go first.
    pub(crate) async fn serve_request(
        self: Arc<Self>,
        mut req: Request<hyper::body::Incoming>,
    ) -> Response<Body> {
        if !enabled() || !offered(&req) {
            return self.handle(req).await;
        }
        // The first answer goes on stream 1 only within the window the client gives it.
        let Some(window) = req
            .headers()
            .get("http2-settings")
            .and_then(|v| stream_one_window(v.as_bytes()))
        else {
            return self.handle(req).await;
        };
        let upgrade = hyper::upgrade::on(&mut req);
        // The connection's slot: requests on the upgraded connection are in flight on it too.
        let conn = req.extensions().get::<crate::conns::Conn>().cloned();
        let resp = self.clone().handle(req).await;
        // A large (or streamed) first answer goes out over HTTP/1.1 and the offer lapses.
        let small = hyper::body::Body::size_hint(resp.body())
            .exact()
            .is_some_and(|n| n <= MAX_FIRST_BODY as u64 && n <= u64::from(window));
        if !small {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            // The file broke while read: the same error an HTTP/1.1 answer would end with.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the first answer");
                let mut r = Response::new(Body::from(format!("cannot read the answer: {e}\n")));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return r;
            }
        };
        let mut headers = parts.headers;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let first_body = body.len();
        let first = Bytes::from(first_frames(parts.status, &headers, &body));
        self.note_h2c_upgrade();
        let max_head = self.runtime().config.limits.max_header_size;
        let daemon = self.clone();
        tokio::spawn(async move {
            let io = match upgrade.await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "h2c upgrade did not complete");
                    return;
                }
            };
            let shim = Shim {
                io: TokioIo::new(io),
                first,
                filter: InboundFilter::new(first_body),
                ready: BytesMut::new(),
                eof: false,
            };
            let service = hyper::service::service_fn(move |req| {
                let daemon = daemon.clone();
                let in_flight = conn.as_ref().map(crate::conns::Conn::request);
                async move {
                    let r = daemon.handle(req).await;
                    drop(in_flight);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
                .max_concurrent_streams(MAX_STREAMS)
                .serve_connection(TokioIo::new(shim), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "h2c connection ended with an error");
            }
        });
        let mut switching = Response::new(Body::empty());
        *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        switching
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        switching
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        switching
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        hex::encode(b)
    }

    #[test]
    fn hpack_integers_follow_rfc7541_c1() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        hpack_int(&mut out, 5, 0, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        hpack_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
    }

    #[test]
    fn header_block_is_literals_without_indexing() {
        // RFC 7541 C.2.1's literal, but without indexing (first byte 0x00 instead of 0x40).
        let mut h = HeaderMap::new();
        h.insert("custom-key", HeaderValue::from_static("custom-header"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let block = header_block(StatusCode::NOT_FOUND, &h);
        assert_eq!(
            hex(&block),
            format!(
                "0803{}000a{}0d{}",
                hex(b"404"),
                hex(b"custom-key"),
                hex(b"custom-header")
            )
        );
    }

    #[test]
    fn first_frames_are_settings_then_stream_one() {
        let body = b"{\"dl\":\"x\"}";
        let out = first_frames(StatusCode::OK, &HeaderMap::new(), body);
        // SETTINGS, empty, stream 0.
        assert_eq!(&out[..9], [0, 0, 0, FRAME_SETTINGS, 0, 0, 0, 0, 0]);
        // HEADERS on stream 1, END_HEADERS only: `:status: 200` as a literal.
        assert_eq!(
            &out[9..18],
            [0, 0, 5, FRAME_HEADERS, FLAG_END_HEADERS, 0, 0, 0, 1]
        );
        assert_eq!(&out[18..23], [0x08, 0x03, b'2', b'0', b'0']);
        // DATA on stream 1 ends the stream.
        assert_eq!(
            &out[23..32],
            [0, 0, 10, FRAME_DATA, FLAG_END_STREAM, 0, 0, 0, 1]
        );
        assert_eq!(&out[32..], body);
        let empty = first_frames(StatusCode::NOT_MODIFIED, &HeaderMap::new(), b"");
        assert_eq!(empty[13], FLAG_END_HEADERS | FLAG_END_STREAM);
        assert_eq!(empty.len(), 9 + 9 + 5);
    }

    #[test]
    fn inbound_filter_hides_the_first_ack_and_stream_one() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut want = input.clone();
        let settings = {
            let mut f = Vec::new();
            frame(&mut f, FRAME_SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
            f
        };
        let (mut ack, mut update1, mut headers3) = (Vec::new(), Vec::new(), Vec::new());
        frame(&mut ack, FRAME_SETTINGS, FLAG_ACK, 0, &[]);
        frame(&mut update1, 0x8, 0, 1, &[0, 0, 1, 0]);
        frame(&mut headers3, FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x82]);
        for f in [&settings, &ack, &update1, &headers3, &ack] {
            input.extend_from_slice(f);
        }
        // The first ACK and the stream-1 WINDOW_UPDATE go; the second ACK is hyper's own.
        for f in [&settings, &headers3, &ack] {
            want.extend_from_slice(f);
        }
        // Fed one byte at a time, frames still come out whole and in order.
        let mut filter = InboundFilter::default();
        let mut out = BytesMut::new();
        for b in &input {
            filter.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(hex(&out), hex(&want));
    }

    #[test]
    fn a_frame_declared_too_large_is_passed_on_unbuffered() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut settings = Vec::new();
        frame(&mut settings, FRAME_SETTINGS, 0, 0, &[]);
        input.extend_from_slice(&settings);
        // DATA on stream 1 declaring 16 MiB: its header alone comes out, at once.
        let huge = [0x01, 0x00, 0x00, FRAME_DATA, 0, 0, 0, 0, 1];
        input.extend_from_slice(&huge);
        let mut filter = InboundFilter::default();
        let mut out = BytesMut::new();
        filter.feed(&input, &mut out);
        assert_eq!(hex(&out), hex(&input));
        // What follows is passed on as it comes, never held.
        out.clear();
        filter.feed(&[0xaa; 1000], &mut out);
        assert_eq!(out.len(), 1000);
        assert!(filter.pending.is_empty());
        // A frame of exactly the maximum size is still taken whole.
        let mut filter = InboundFilter::default();
        let mut out = BytesMut::new();
        let mut max = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut max, FRAME_DATA, 0, 3, &vec![0; MAX_FRAME_SIZE]);
        filter.feed(&max[..max.len() - 1], &mut out);
        assert_eq!(out.len(), PREFACE_LEN);
        filter.feed(&max[max.len() - 1..], &mut out);
        assert_eq!(out.len(), max.len());
    }

    #[test]
    fn connection_credit_for_the_first_body_is_kept_from_hyper() {
        let update = |inc: u32| {
            let mut f = Vec::new();
            frame(&mut f, FRAME_WINDOW_UPDATE, 0, 0, &inc.to_be_bytes());
            f
        };
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut want = input.clone();
        // 100 bytes went out on stream 1: an update of 60 is swallowed, one of 1000 becomes 960,
        // and later ones pass as they are.
        for f in [update(60), update(1000), update(5)] {
            input.extend_from_slice(&f);
        }
        for f in [update(960), update(5)] {
            want.extend_from_slice(&f);
        }
        let mut filter = InboundFilter::new(100);
        let mut out = BytesMut::new();
        filter.feed(&input, &mut out);
        assert_eq!(hex(&out), hex(&want));
    }

    #[test]
    fn stream_one_gets_the_window_the_client_settings_give() {
        // curl's offer: MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 65536, ENABLE_PUSH 0.
        assert_eq!(stream_one_window(b"AAMAAABkAAQAAQAAAAIAAAAA"), Some(65_535));
        // INITIAL_WINDOW_SIZE 1024 (`00 04 00 00 04 00`), padded or not.
        assert_eq!(stream_one_window(b"AAQAAAQA"), Some(1024));
        assert_eq!(stream_one_window(b"AAQAAAAA"), Some(0));
        // No settings at all: the default.
        assert_eq!(stream_one_window(b""), Some(65_535));
        // Not base64url, or not whole settings: declined.
        assert_eq!(stream_one_window(b"AAQA*AQA"), None);
        assert_eq!(stream_one_window(b"AAQAAA"), None);
        // A window over 2^31-1 is a FLOW_CONTROL_ERROR.
        assert_eq!(stream_one_window(b"AAT_____"), None);
    }

    #[test]
    fn only_bodyless_gets_with_a_full_offer_are_taken() {
        let offer = |f: &dyn Fn(http::request::Builder) -> http::request::Builder| {
            let b = Request::get("/index/config.json")
                .header("connection", "Upgrade, HTTP2-Settings")
                .header("upgrade", "h2c")
                .header("http2-settings", "AAMAAABkAAQAAQAAAAIAAAAA");
            offered(&f(b).body(()).unwrap())
        };
        assert!(offer(&|b| b));
        assert!(!offer(&|b| b.method(Method::PUT)));
        assert!(!offer(&|b| b.header("content-length", "5")));
        assert!(!offer(&|b| b.version(Version::HTTP_10)));
        let plain = Request::get("/").header("upgrade", "h2c").body(()).unwrap();
        assert!(!offered(&plain));
    }
}
