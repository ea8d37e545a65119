//! A download on its way into the cache: written a chunk at a time to a temp file beside its final
//! place while its sha256 is computed, so that the daemon never holds a whole crate in memory.
//! Only a file whose checksum matches is renamed into place; anything else leaves nothing behind.
//! When the disk fails (full, read-only), the download goes on in memory and is served uncached.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::{Cache, CacheError, at};

/// A crate being downloaded. Dropping it removes its temp file.
pub struct Spool {
    path: PathBuf,
    disk: Option<tempfile::NamedTempFile>,
    memory: BytesMut,
    hasher: Sha256,
    len: u64,
    /// Why the download is no longer going to disk.
    error: Option<CacheError>,
}

/// A finished, verified download.
#[derive(Debug)]
pub enum Spooled {
    /// The file, open at its start, and its length: cached, or (when it could not be renamed
    /// into place) an unlinked temp file.
    File(std::fs::File, u64),
    /// The disk failed: the bytes, uncached.
    Memory(Bytes),
}

impl Cache {
    /// Starts spooling the download of the crate with checksum `cksum`.
    pub fn spool(&self, cksum: &str) -> Spool {
        let path = self.crate_path(cksum);
        let dir = path.parent().expect("crate paths have a parent").to_owned();
        let disk = super::create_private_dirs(&dir)
            .and_then(|()| tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir))
            .map_err(at(&dir));
        let (disk, error) = match disk {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        Spool {
            path,
            disk,
            memory: BytesMut::new(),
            hasher: Sha256::new(),
            len: 0,
            error,
        }
    }

    /// Ends `spool`: `Err(sha256)` when the bytes do not have the checksum `cksum` (nothing is
    /// kept), else the verified crate, cached when the disk allows.
    pub fn finish_spool(&self, spool: Spool, cksum: &str) -> Result<Spooled, String> {
        let Spool {
            path,
            disk,
            memory,
            hasher,
            len,
            error,
        } = spool;
        let got = hex::encode(hasher.finalize());
        if got != cksum {
            return Err(got);
        }
        let Some(tmp) = disk else {
            let e = error.expect("a spool off disk says why");
            tracing::warn!(error = %e, "cannot cache a download; serving it without caching");
            let _ = self.noting(Err::<(), _>(e));
            return Ok(Spooled::Memory(memory.freeze()));
        };
        if let Err(e) = tmp.as_file().sync_data() {
            tracing::warn!(error = %e, path = %path.display(), "cannot cache a download; serving it without caching");
            let _ = self.noting(Err::<(), _>(at(&path)(e)));
            return reopen(tmp.into_file(), len);
        }
        match tmp.persist(&path) {
            Ok(file) => {
                let _ = self.noting(Ok(()));
                reopen(file, len)
            }
            Err(e) => {
                tracing::warn!(error = %e.error, path = %path.display(), "cannot cache a download; serving it without caching");
                let _ = self.noting(Err::<(), _>(at(&path)(e.error)));
                reopen(e.file.into_file(), len)
            }
        }
    }
}

/// The written file, read from its start.
fn reopen(mut file: std::fs::File, len: u64) -> Result<Spooled, String> {
    match file.rewind() {
        Ok(()) => Ok(Spooled::File(file, len)),
        // Cannot happen for a regular file just written; refusing keeps the answer honest.
        Err(e) => Err(format!("(unreadable: {e})")),
    }
}

impl Spool {
    /// Adds the next chunk of the download.
    pub fn write(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        let before = self.len;
        self.len += chunk.len() as u64;
        let Some(tmp) = &mut self.disk else {
            self.memory.extend_from_slice(chunk);
            return;
        };
        let Err(e) = tmp.write_all(chunk) else {
            return;
        };
        // Go on in memory with what reached the disk so far (a failed write may have left part of
        // this chunk, which is dropped); the temp file goes away with `tmp`.
        let tmp = self.disk.take().expect("on disk");
        let mut memory = Vec::new();
        let read = tmp
            .reopen()
            .and_then(|f| f.take(before).read_to_end(&mut memory));
        self.error = Some(at(&self.path)(e));
        match read {
            Ok(n) if n as u64 == before => {
                self.memory = BytesMut::from(&memory[..]);
                self.memory.extend_from_slice(chunk);
            }
            // What was written cannot be read back: the bytes are lost, and the checksum (over
            // everything) will not match what is kept, so poison the hash.
            _ => self.hasher.update(b"\0unreadable spool"),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn read_all(s: Spooled) -> Vec<u8> {
        match s {
            Spooled::File(mut f, len) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                assert_eq!(v.len() as u64, len);
                v
            }
            Spooled::Memory(b) => b.to_vec(),
        }
    }

    #[test]
    fn a_verified_download_is_cached_and_served_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let cksum = sha(&data);
        let mut spool = cache.spool(&cksum);
        for chunk in data.chunks(7000) {
            spool.write(chunk);
        }
        assert_eq!(spool.len(), data.len() as u64);
        let done = cache.finish_spool(spool, &cksum).unwrap();
        assert!(matches!(done, Spooled::File(..)));
        assert_eq!(read_all(done), data);
        assert_eq!(std::fs::read(cache.crate_path(&cksum)).unwrap(), data);
        assert_eq!(cache.sweep_temp(), 0, "no temp file is left");
    }

    #[test]
    fn a_wrong_checksum_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let cksum = sha(b"what the index says");
        let mut spool = cache.spool(&cksum);
        spool.write(b"something else");
        assert_eq!(
            cache.finish_spool(spool, &cksum).unwrap_err(),
            sha(b"something else")
        );
        assert!(!cache.crate_path(&cksum).exists());
        assert_eq!(cache.sweep_temp(), 0, "the temp file went with the spool");
        // A download that stops half way (dropped) leaves nothing either.
        let mut spool = cache.spool(&cksum);
        spool.write(b"what the");
        drop(spool);
        assert_eq!(cache.sweep_temp(), 0);
    }

    #[test]
    fn without_a_disk_the_download_is_served_from_memory_and_the_error_shows() {
        let dir = tempfile::tempdir().unwrap();
        // The crate directory cannot be made: a file stands where it would go.
        std::fs::create_dir_all(dir.path().join(Cache::VERSION_DIR)).unwrap();
        std::fs::write(
            dir.path().join(Cache::VERSION_DIR).join("crates"),
            b"in the way",
        )
        .unwrap();
        let cache = Cache::new(dir.path());
        let data = b"crate bytes";
        let cksum = sha(data);
        let mut spool = cache.spool(&cksum);
        spool.write(&data[..5]);
        spool.write(&data[5..]);
        let done = cache.finish_spool(spool, &cksum).unwrap();
        assert!(matches!(done, Spooled::Memory(_)));
        assert_eq!(read_all(done), data);
        assert!(cache.write_error().is_some());
    }
}
