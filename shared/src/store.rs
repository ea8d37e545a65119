//! The on-disk cache shared by the daemon (which fills it) and the CLI (which reports on it and
//! verifies it): the one place that knows the cache layout.
//!
//! The cache is versioned (`<cache-dir>/v1/…`), written atomically (temp file, fsync,
//! rename) so that a crash never leaves a partial file where a reader can find it.
//!
//! Layout:
//! - `v1/upstreams/<name>-<url-hash>/index/<index-path>`: one upstream's index file, as a JSON
//!   metadata line followed by the body exactly as the upstream sent it.
//! - `v1/upstreams/<name>-<url-hash>/config.json`: the upstream's `config.json`, same format.
//! - `v1/crates/<ab>/<sha256>.crate`: downloads, content-addressed and verified before renaming.
//! - `v1/served/<index-path>.json`: the checksum served for each version of a crate (rule 8).
//! - `<index file>.seen`, next to an upstream's index file: when privreg first saw its versions
//!   (see [`FirstSeen`]).
//! - `v1/keep/<hash>.json`: what a lockfile warmed with `privreg warm --keep` keeps.
//! - `v1/gc.json`: the last collection ([`gc`]).

mod behind;
pub mod gc;
mod seen;
mod spool;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::CrateName;
use crate::config::Upstream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use seen::{FirstSeen, SEEN_SUFFIX};
pub use spool::{Spool, Spooled};

/// How much of a file is read (or sent) at a time, so that a large file is never held whole.
pub const CHUNK: usize = 64 << 10;

/// An I/O error with the path it is about.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct CacheError {
    /// The file or directory the operation was on.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError {
        path: path.to_owned(),
        source,
    }
}

/// What is known of one upstream file besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// `false`: the upstream answered 404 (the crate is absent there).
    pub present: bool,
    /// The upstream's `ETag`, sent back as `If-None-Match` when revalidating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The upstream's `Last-Modified`, sent back as `If-Modified-Since` when revalidating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// When the upstream last confirmed this answer (seconds since the epoch).
    pub fetched: u64,
}

/// The metadata line as written to disk: [`Meta`] plus the body's sha256, so that a body damaged
/// on disk is found when it is read (and fetched again) rather than served.
#[derive(Serialize, Deserialize)]
struct DiskMeta {
    #[serde(flatten)]
    meta: Meta,
    sha256: String,
}

/// The sha256 (hex) and length of what `reader` holds, read [`CHUNK`] at a time, so
/// that a large file is never held whole.
fn sha256_of(reader: &mut impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let len = std::io::copy(
        &mut std::io::BufReader::with_capacity(CHUNK, reader),
        &mut hasher,
    )?;
    Ok((hex::encode(hasher.finalize()), len))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Meta {
    /// [`fetched`](Self::fetched) as a time.
    pub fn fetched_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.fetched)
    }
}

/// Now, in seconds since the epoch (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stored upstream file.
#[derive(Debug, Clone)]
pub struct Stored {
    /// What is known of the file besides its body.
    pub meta: Meta,
    /// The body exactly as the upstream sent it (empty for a 404).
    pub body: Bytes,
}

/// The metadata line of an upstream's file as it is stored (with the body's sha256), newline
/// included; the body follows it.
fn meta_line(s: &Stored) -> Vec<u8> {
    let disk = DiskMeta {
        meta: s.meta.clone(),
        sha256: sha256_hex(&s.body),
    };
    let mut data = serde_json::to_vec(&disk).expect("meta serialises");
    data.push(b'\n');
    data
}

/// An upstream's file as it is stored: the metadata line (with the body's sha256), then the body.
pub fn encode(s: &Stored) -> Vec<u8> {
    let mut data = meta_line(s);
    data.extend_from_slice(&s.body);
    data
}

/// Bytes and files under `dir`, recursively (0 when it does not exist).
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    bytes += e.metadata().map_or(0, |m| m.len());
                    files += 1;
                }
                _ => {}
            }
        }
    }
    (bytes, files)
}

/// A size as people read it: `1023 B`, `1.5 KiB`, `5.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// The last write, if it failed (when, and why), e.g. a full disk: the daemon keeps serving
    /// without caching and `privreg status` shows it until a write succeeds again.
    write_error: std::sync::Arc<std::sync::Mutex<Option<(u64, String)>>>,
    /// Files served since the last [`Cache::flush_uses`] (see [`gc`]).
    used: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
    /// The daemon's write-behind queue ([`Cache::write_behind`]); `None`: writes are made at once.
    behind: Option<std::sync::Arc<behind::WriteBehind>>,
}

/// Records a write's outcome in `last`: a failure until a write works again.
fn note_write<T>(last: &std::sync::Mutex<Option<(u64, String)>>, r: &Result<T, CacheError>) {
    let mut last = last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match r {
        Err(e) => *last = Some((now_secs(), e.to_string())),
        Ok(_) => {
            if let Some((_, e)) = last.take() {
                tracing::info!(previous = %e, "cache writes work again");
            }
        }
    }
}

/// Directory name of an upstream's files: its name plus a hash of its index URL, so that
/// pointing a name at another registry never serves the old registry's files.
pub fn upstream_dir_name(up: &Upstream) -> String {
    let digest = Sha256::digest(up.base.as_str().as_bytes());
    format!("{}-{}", up.name, &hex::encode(digest)[..12])
}

impl Cache {
    /// The versioned directory under the cache dir that holds everything (`<cache-dir>/v1`).
    pub const VERSION_DIR: &'static str = "v1";

    /// The cache in `cache_dir`; nothing is created until something is written.
    pub fn new(cache_dir: &Path) -> Cache {
        Cache {
            root: cache_dir.join(Self::VERSION_DIR),
            write_error: std::sync::Arc::default(),
            used: std::sync::Arc::default(),
            behind: None,
        }
    }

    /// The same cache, with its small files (index files, first-seen records, served checksums)
    /// written behind by threads of their own, so that no request waits on the disk (see
    /// [`behind`]). Readers of this cache see queued writes at once; [`Cache::flush`] waits for
    /// them. For the daemon; the CLI writes at once.
    pub fn write_behind(self) -> std::io::Result<Cache> {
        let errors = self.write_error.clone();
        let queue = behind::WriteBehind::start(move |r| {
            if let Err(e) = &r {
                tracing::warn!(error = %e, "cannot write the cache");
            }
            note_write(&errors, &r);
        })?;
        Ok(Cache {
            behind: Some(std::sync::Arc::new(queue)),
            ..self
        })
    }

    /// Waits until every write queued by [`Cache::write_behind`] is on disk, for at most
    /// `limit`; true when none is left.
    pub fn flush(&self, limit: Duration) -> bool {
        self.behind.as_ref().is_none_or(|b| b.flush(limit))
    }

    /// Files and bytes waiting to be written (0 without [`Cache::write_behind`]).
    pub fn writes_waiting(&self) -> (usize, usize) {
        self.behind.as_ref().map_or((0, 0), |b| b.waiting())
    }

    /// Writes `data` to `path` (`None`: removes it), behind or at once; `remove_on_failure`: a
    /// failed write behind removes the file, whose older copy must not be read back.
    fn put(
        &self,
        path: &Path,
        data: Option<Vec<Bytes>>,
        remove_on_failure: bool,
    ) -> Result<(), CacheError> {
        if let Some(b) = &self.behind {
            b.put(path, data, remove_on_failure);
            return Ok(());
        }
        self.noting(put_now(path, data.as_deref()))
    }

    /// The contents of a small file: what waits to be written to it, else the disk's.
    fn read_small(&self, path: &Path) -> std::io::Result<Bytes> {
        match self.behind.as_ref().and_then(|b| b.get(path)) {
            Some(Some(queued)) => Ok(behind::joined(&queued)),
            Some(None) => Err(std::io::ErrorKind::NotFound.into()),
            None => std::fs::read(path).map(Bytes::from),
        }
    }

    /// `<cache-dir>/v1`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The error of the last cache write, if it failed: (seconds since the epoch, error).
    pub fn write_error(&self) -> Option<(u64, String)> {
        self.write_error.lock().expect("write error lock").clone()
    }

    fn noting<T>(&self, r: Result<T, CacheError>) -> Result<T, CacheError> {
        note_write(&self.write_error, &r);
        r
    }

    fn upstream_path(&self, up: &Upstream, rel: UpstreamPath<'_>) -> PathBuf {
        let dir = self.root.join("upstreams").join(upstream_dir_name(up));
        match rel {
            UpstreamPath::Config => dir.join("config.json"),
            UpstreamPath::Index(krate) => dir.join("index").join(krate.index_path()),
        }
    }

    /// An upstream's cached file; `None` when there is none, or it was damaged (and is now
    /// deleted).
    pub fn load(&self, up: &Upstream, rel: UpstreamPath<'_>) -> Result<Option<Stored>, CacheError> {
        let path = self.upstream_path(up, rel);
        let data = match self.read_small(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(&path)(e)),
        };
        let Some(nl) = data.iter().position(|b| *b == b'\n') else {
            return Ok(None);
        };
        let body = data.slice(nl + 1..);
        match serde_json::from_slice::<DiskMeta>(&data[..nl]) {
            Ok(disk) if disk.sha256 == sha256_hex(&body) => Ok(Some(Stored {
                meta: disk.meta,
                body,
            })),
            // A damaged entry is as good as none: it is dropped and fetched again.
            _ => {
                tracing::warn!(path = %path.display(), "dropping a damaged cache file");
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
        }
    }

    /// The metadata of an upstream's file on disk, from its first line only (the body is neither
    /// read nor checked: [`load`](Self::load) does that). `None` when there is no file or its
    /// first line is not metadata.
    pub fn load_meta(&self, up: &Upstream, rel: UpstreamPath<'_>) -> Option<Meta> {
        use std::io::BufRead as _;
        let path = self.upstream_path(up, rel);
        let mut line = Vec::new();
        if let Some(queued) = self.behind.as_ref().and_then(|b| b.get(&path)) {
            // The first line only, without joining the queued parts.
            for b in queued?.into_iter().flatten() {
                line.push(b);
                if b == b'\n' {
                    break;
                }
            }
        } else {
            let file = std::fs::File::open(&path).ok()?;
            std::io::BufReader::with_capacity(1024, file)
                .read_until(b'\n', &mut line)
                .ok()?;
        }
        serde_json::from_slice::<DiskMeta>(line.strip_suffix(b"\n")?)
            .ok()
            .map(|d| d.meta)
    }

    /// Writes an upstream's file atomically; a failure is kept for
    /// [`write_error`](Self::write_error).
    pub fn store(
        &self,
        up: &Upstream,
        rel: UpstreamPath<'_>,
        s: &Stored,
    ) -> Result<(), CacheError> {
        let path = self.upstream_path(up, rel);
        // The body is the one memory holds, not a copy.
        let parts = vec![Bytes::from(meta_line(s)), s.body.clone()];
        self.put(&path, Some(parts), true)
    }

    /// Where an upstream's file is, or would be, stored.
    pub fn upstream_file(&self, up: &Upstream, rel: UpstreamPath<'_>) -> PathBuf {
        self.upstream_path(up, rel)
    }

    /// Where the `.crate` with sha256 `cksum` (lower-case hex) is, or would be, stored.
    pub fn crate_path(&self, cksum: &str) -> PathBuf {
        self.root
            .join("crates")
            .join(&cksum[..2])
            .join(format!("{cksum}.crate"))
    }

    /// A cached crate, open at its start with its length, checked against its checksum a chunk
    /// at a time (the file is never held whole); a damaged file is deleted and `None` returned,
    /// so that it is fetched again.
    pub fn open_crate(&self, cksum: &str) -> Option<(std::fs::File, u64)> {
        use std::io::Seek;
        let path = self.crate_path(cksum);
        let mut file = std::fs::File::open(&path).ok()?;
        let (got, len) = match sha256_of(&mut file) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a cached crate");
                return None;
            }
        };
        if got != cksum {
            tracing::error!(path = %path.display(), "dropping a damaged cached crate");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        file.rewind().ok()?;
        self.note_path_use(path);
        Some((file, len))
    }

    /// Removes the temp files a crash can leave behind (nothing ever reads them).
    pub fn sweep_temp(&self) -> usize {
        files_under(&self.root)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
            })
            .filter(|p| std::fs::remove_file(p).is_ok())
            .count()
    }

    /// Checks every cached file: crates against the checksum in their name, upstream files
    /// against the sha256 recorded with them. Damaged files and temp files are removed.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport {
            temp_removed: self.sweep_temp(),
            ..VerifyReport::default()
        };
        for path in files_under(&self.root) {
            report.checked += 1;
            let good = match path.extension().and_then(|e| e.to_str()) {
                Some("crate") => {
                    let want = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default();
                    std::fs::File::open(&path)
                        .and_then(|mut f| sha256_of(&mut f))
                        .is_ok_and(|(got, _)| got == want)
                }
                _ if seen::is_record(&path) => seen::record_is_good(&path),
                _ if path.starts_with(self.root.join("upstreams")) => std::fs::read(&path)
                    .is_ok_and(|d| {
                        let nl = d.iter().position(|b| *b == b'\n').unwrap_or(d.len());
                        serde_json::from_slice::<DiskMeta>(&d[..nl]).is_ok_and(|m| {
                            m.sha256 == sha256_hex(d.get(nl + 1..).unwrap_or_default())
                        })
                    }),
                _ => true,
            };
            if !good && std::fs::remove_file(&path).is_ok() {
                report.dropped.push(path);
            }
        }
        report
    }

    fn served_path(&self, krate: &CrateName) -> PathBuf {
        self.root
            .join("served")
            .join(format!("{}.json", krate.index_path()))
    }

    /// The checksums served earlier for each version of `krate`.
    pub fn served(&self, krate: &CrateName) -> BTreeMap<semver::Version, String> {
        self.read_small(&self.served_path(krate))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    /// Writes the checksums served for each version of `krate` (rule 8), atomically.
    pub fn store_served(
        &self,
        krate: &CrateName,
        served: &BTreeMap<semver::Version, String>,
    ) -> Result<(), CacheError> {
        // Like every cache write, a failure shows in `privreg status` until a write works.
        self.put(&self.served_path(krate), Some(served_record(served)), false)
    }

    /// Like [`Cache::store_served`], but with [`Cache::write_behind`] the write is held until
    /// [`Cache::release_held`] or [`Cache::flush`] (a bounded number are held; past that, it is
    /// queued as any other). [`Cache::served`] reads it back at once.
    pub fn hold_served(
        &self,
        krate: &CrateName,
        served: &BTreeMap<semver::Version, String>,
    ) -> Result<(), CacheError> {
        let Some(b) = &self.behind else {
            return self.store_served(krate, served);
        };
        b.hold(&self.served_path(krate), Some(served_record(served)), false);
        Ok(())
    }

    /// Hands every held write ([`Cache::hold_served`]) to the writers.
    pub fn release_held(&self) {
        if let Some(b) = &self.behind {
            b.release();
        }
    }

    /// Writes held now ([`Cache::hold_served`]); they count in [`Cache::writes_waiting`] too.
    pub fn writes_held(&self) -> usize {
        self.behind.as_ref().map_or(0, |b| b.held())
    }
}

/// The file of a crate's served checksums ([`Cache::store_served`], [`Cache::hold_served`]).
fn served_record(served: &BTreeMap<semver::Version, String>) -> Vec<Bytes> {
    vec![Bytes::from(
        serde_json::to_vec(served).expect("checksums serialise"),
    )]
}

/// What [`Cache::verify`] found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Files checked.
    pub checked: usize,
    /// Temp files left by a crash, removed.
    pub temp_removed: usize,
    /// Damaged files, removed (they are fetched again when needed).
    pub dropped: Vec<PathBuf>,
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    out
}

/// Which file of an upstream.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamPath<'a> {
    /// The upstream's `config.json`.
    Config,
    /// The index file of a crate.
    Index(&'a CrateName),
}

impl<'a> UpstreamPath<'a> {
    /// The crate of an index file; `None` for `config.json`.
    pub fn krate(self) -> Option<&'a CrateName> {
        match self {
            UpstreamPath::Config => None,
            UpstreamPath::Index(k) => Some(k),
        }
    }

    /// The index file of `krate`, or `config.json` for `None` (the inverse of
    /// [`UpstreamPath::krate`]).
    pub fn of(krate: Option<&'a CrateName>) -> UpstreamPath<'a> {
        krate.map_or(UpstreamPath::Config, UpstreamPath::Index)
    }
}

/// Creates `dir` and its missing parents private to the user (0700 on Unix): the cache holds
/// private registries' crates and index files, which other local users must not read.
pub fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `data` to `path` through a temp file in the same directory: fsync, then rename.
/// Missing directories are created private to the user ([`create_private_dirs`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CacheError> {
    write_parts(path, &[data])
}

/// Writes the concatenation of `parts` to `path` ([`write_atomic`]), or removes the file
/// (`None`; one that is not there is no error).
fn put_now(path: &Path, parts: Option<&[Bytes]>) -> Result<(), CacheError> {
    match parts {
        Some(parts) => write_parts(path, parts),
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(at(path)(e)),
            _ => Ok(()),
        },
    }
}

/// [`write_atomic`] of the concatenation of `parts`, without concatenating them in memory.
fn write_parts(path: &Path, parts: &[impl AsRef<[u8]>]) -> Result<(), CacheError> {
    let dir = path.parent().expect("cache paths have a parent");
    create_private_dirs(dir).map_err(at(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(at(dir))?;
    for part in parts {
        tmp.write_all(part.as_ref()).map_err(at(tmp.path()))?;
    }
    tmp.as_file().sync_data().map_err(at(path))?;
    tmp.persist(path).map_err(|e| CacheError {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A present file fetched at `fetched`, without validators.
    fn stored(fetched: u64, body: &'static [u8]) -> Stored {
        Stored {
            meta: Meta {
                present: true,
                etag: None,
                last_modified: None,
                fetched,
            },
            body: Bytes::from_static(body),
        }
    }

    #[cfg(unix)]
    #[test]
    fn directories_it_creates_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let up = upstream("sparse+http://127.0.0.1:1/index/");
        let krate = CrateName::new("serde").unwrap();
        let s = stored(1, b"{}\n");
        cache.store(&up, UpstreamPath::Index(&krate), &s).unwrap();
        drop(cache.spool(&"ab".repeat(32)));
        let mut checked = 0;
        let mut dirs = vec![dir.path().join("cache")];
        while let Some(d) = dirs.pop() {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
            checked += 1;
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                }
            }
        }
        // cache, v1, upstreams, <name>, index, se, rv, crates, ab
        assert!(checked >= 9, "{checked}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    fn upstream(index: &str) -> Upstream {
        crate::config::Config::parse(
            Path::new("c.toml"),
            &format!("[upstreams.acme]\nindex = \"{index}\"\n"),
        )
        .unwrap()
        .upstreams
        .remove(0)
    }

    #[test]
    fn a_failed_write_of_the_served_checksums_shows_until_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let krate = CrateName::new("serde").unwrap();
        let served: BTreeMap<semver::Version, String> =
            [("1.0.0".parse().unwrap(), "ab".repeat(32))].into();
        // A file stands where the directory of served records would go.
        std::fs::create_dir_all(cache.root()).unwrap();
        std::fs::write(cache.root().join("served"), b"in the way").unwrap();
        assert!(cache.store_served(&krate, &served).is_err());
        let (_, why) = cache.write_error().expect("the failure is kept");
        assert!(why.contains("served"), "names the path: {why}");
        std::fs::remove_file(cache.root().join("served")).unwrap();
        cache.store_served(&krate, &served).unwrap();
        assert_eq!(cache.write_error(), None);
        assert_eq!(cache.served(&krate), served);
    }

    #[test]
    fn held_served_checksums_are_read_back_and_written_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path()).write_behind().unwrap();
        let on_disk = Cache::new(dir.path());
        let krate = CrateName::new("serde").unwrap();
        let served: BTreeMap<semver::Version, String> =
            [("1.0.0".parse().unwrap(), "ab".repeat(32))].into();
        cache.hold_served(&krate, &served).unwrap();
        assert_eq!(cache.served(&krate), served);
        assert_eq!((cache.writes_held(), cache.writes_waiting().0), (1, 1));
        std::thread::sleep(Duration::from_millis(50));
        assert!(on_disk.served(&krate).is_empty());
        cache.release_held();
        assert_eq!(cache.writes_held(), 0);
        assert!(cache.flush(Duration::from_secs(10)));
        assert_eq!(on_disk.served(&krate), served);
        // Without write-behind there is nothing to hold: written at once.
        let other = CrateName::new("other").unwrap();
        on_disk.hold_served(&other, &served).unwrap();
        assert_eq!(Cache::new(dir.path()).served(&other), served);
    }

    #[test]
    fn stores_and_loads_with_meta() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let up = upstream("sparse+http://127.0.0.1:1/index/");
        let krate = CrateName::new("serde").unwrap();
        assert!(
            cache
                .load(&up, UpstreamPath::Index(&krate))
                .unwrap()
                .is_none()
        );
        let s = Stored {
            meta: Meta {
                present: true,
                etag: Some("\"x\"".into()),
                last_modified: None,
                fetched: 7,
            },
            body: Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n"),
        };
        assert_eq!(cache.load_meta(&up, UpstreamPath::Index(&krate)), None);
        cache.store(&up, UpstreamPath::Index(&krate), &s).unwrap();
        let back = cache
            .load(&up, UpstreamPath::Index(&krate))
            .unwrap()
            .unwrap();
        assert_eq!(back.meta, s.meta);
        assert_eq!(back.body, s.body);
        assert_eq!(
            cache.load_meta(&up, UpstreamPath::Index(&krate)),
            Some(s.meta.clone()),
            "the first line alone gives the same metadata"
        );
        // Files live under the versioned directory and no temp files are left behind.
        let file = dir
            .path()
            .join("v1/upstreams")
            .join(upstream_dir_name(&up))
            .join("index/se/rd/serde");
        assert!(file.is_file());
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn another_url_is_another_directory() {
        let a = upstream("sparse+http://127.0.0.1:1/index/");
        let b = upstream("sparse+http://127.0.0.1:2/index/");
        assert_ne!(upstream_dir_name(&a), upstream_dir_name(&b));
        assert!(upstream_dir_name(&a).starts_with("acme-"));
    }

    #[test]
    fn damaged_entries_read_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let up = upstream("sparse+http://127.0.0.1:1/index/");
        let path = cache.upstream_path(&up, UpstreamPath::Config);
        write_atomic(&path, b"garbage without newline").unwrap();
        assert!(cache.load(&up, UpstreamPath::Config).unwrap().is_none());
        write_atomic(&path, b"{not json\nbody").unwrap();
        assert!(cache.load(&up, UpstreamPath::Config).unwrap().is_none());
    }

    #[test]
    fn a_damaged_body_is_dropped_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let up = upstream("sparse+http://127.0.0.1:1/index/");
        let krate = CrateName::new("serde").unwrap();
        let s = stored(7, b"{\"a\":1}\n");
        cache.store(&up, UpstreamPath::Index(&krate), &s).unwrap();
        let path = cache.upstream_path(&up, UpstreamPath::Index(&krate));
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 2;
        data[last] = b'2';
        std::fs::write(&path, data).unwrap();
        assert!(
            cache
                .load(&up, UpstreamPath::Index(&krate))
                .unwrap()
                .is_none()
        );
        assert!(!path.exists());

        let good = b"crate bytes";
        let cksum = sha256_hex(good);
        let store = |data: &[u8]| {
            let mut spool = cache.spool(&cksum);
            spool.write(data);
            cache.finish_spool(spool, &cksum).unwrap();
        };
        store(good);
        let (mut file, len) = cache.open_crate(&cksum).unwrap();
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut read).unwrap();
        assert_eq!((read.as_slice(), len), (&good[..], good.len() as u64));
        std::fs::write(cache.crate_path(&cksum), b"crate bytez").unwrap();
        assert!(cache.open_crate(&cksum).is_none());
        assert!(!cache.crate_path(&cksum).exists());

        store(good);
        std::fs::write(
            cache.crate_path(&cksum).with_file_name(".tmp-x"),
            b"partial",
        )
        .unwrap();
        std::fs::write(cache.crate_path(&cksum), b"bad").unwrap();
        let report = cache.verify();
        assert_eq!((report.dropped.len(), report.temp_removed), (1, 1));
    }
}
