//! The body of every answer: bytes held in memory, or a cached `.crate` read from disk a chunk
//! at a time as the connection takes it.
//!
//! Over h2c cargo asks for every download of a `cargo fetch` at once; holding each answer whole
//! made the daemon's memory grow with the size of the crates in flight. A file body holds one
//! chunk per stream instead.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};

/// How much of a file one poll reads (and so what one file body holds at most).
pub(crate) use privreg_shared::store::CHUNK;

/// An answer's body.
#[derive(Debug)]
pub(crate) enum Body {
    Full(Full<Bytes>),
    File(FileBody),
}

impl Body {
    pub(crate) fn empty() -> Self {
        Body::Full(Full::new(Bytes::new()))
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Full(Full::new(b))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::from(Bytes::from(s))
    }
}

impl From<Full<Bytes>> for Body {
    fn from(f: Full<Bytes>) -> Self {
        Body::Full(f)
    }
}

/// A file of known length, read from its current position in [`CHUNK`]s. A file that ends
/// early or fails to read ends the body with an error, so the client sees a broken answer,
/// never a short one that looks whole.
#[derive(Debug)]
pub(crate) struct FileBody {
    file: std::fs::File,
    left: u64,
}

impl FileBody {
    pub(crate) fn new(file: std::fs::File, len: u64) -> Self {
        FileBody { file, left: len }
    }

    /// Reads the next chunk. The read is synchronous: cached crates are in the page cache, and
    /// handing each read to another thread grew the daemon's memory under load (see
    /// `download.rs`).
    fn next_chunk(&mut self) -> std::io::Result<Bytes> {
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(CHUNK);
        let mut buf = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the cached file is shorter than when it was opened",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.left -= want as u64;
        Ok(buf.freeze())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Body::File(f) if f.left == 0 => Poll::Ready(None),
            Body::File(f) => Poll::Ready(Some(f.next_chunk().map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::File(f) => f.left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::File(f) => SizeHint::with_exact(f.left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::{Seek, Write};

    fn file_with(data: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f.rewind().unwrap();
        f
    }

    #[tokio::test]
    async fn a_file_body_yields_the_file_in_chunks() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 17))
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut body = Body::File(FileBody::new(file_with(&data), data.len() as u64));
        assert_eq!(
            hyper::body::Body::size_hint(&body).exact(),
            Some(data.len() as u64)
        );
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
        assert_eq!(sizes, [CHUNK, CHUNK, 17]);
        assert!(hyper::body::Body::is_end_stream(&body));
    }

    #[tokio::test]
    async fn a_file_shorter_than_announced_is_an_error_not_a_short_body() {
        let body = Body::File(FileBody::new(file_with(b"abc"), 10));
        let err = body.collect().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn an_empty_file_body_ends_at_once() {
        let body = Body::File(FileBody::new(file_with(b""), 0));
        assert!(hyper::body::Body::is_end_stream(&body));
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }
}
