//! Per-upstream views (`/upstream/<name>/index/…`): one upstream's index files, its lines passed
//! through unchanged except what `never` and negative pins do, so that projects naming the
//! registry explicitly (`registry = "acme"`) resolve through the daemon while their Cargo.lock
//! keeps the upstream's own URL.

use bytes::Bytes;
use privreg_shared::CrateName;
use privreg_shared::config::Upstream;
use privreg_shared::index::IndexFile;
use privreg_shared::policy;
use privreg_shared::store::now_secs;
use sha2::{Digest, Sha256};

use crate::daemon::Daemon;
use crate::layered::{LayeredError, Runtime};
use crate::upstream::Entry;

/// A served index body and its ETag.
pub(crate) struct ViewBody {
    pub body: Bytes,
    pub etag: String,
}

pub(crate) fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..32])
}

impl Daemon {
    /// The lines of `file` (upstream `up`'s index file of `krate`, held in `entry`) that its own
    /// view serves now, as (line index, yanked by pin).
    pub(crate) fn single(
        &self,
        rt: &Runtime,
        up: &Upstream,
        krate: &CrateName,
        entry: &Entry,
        file: &IndexFile,
    ) -> Vec<(usize, bool)> {
        let (_, advisories) = self.advisories();
        let facts = policy::Facts {
            now: now_secs(),
            first_seen: &[Some(&*entry.seen)],
            advisories: advisories.as_ref(),
        };
        policy::single(krate, &up.policy_ref(), file, rt.pins.as_ref(), &facts)
    }

    /// The index file of `krate` in upstream `name`'s own view.
    pub(crate) async fn upstream_view(
        &self,
        name: &str,
        krate: &CrateName,
    ) -> Result<ViewBody, LayeredError> {
        let rt = self.runtime();
        let Some(up) = rt.config.upstream(name) else {
            return Err(LayeredError::NotFound(krate.clone()));
        };
        let fetched = self.upstreams().index(up, krate).await;
        let Some(entry) = fetched.entry else {
            return Err(LayeredError::Unavailable {
                krate: krate.clone(),
                errors: fetched.error.into_iter().collect(),
            });
        };
        let Some(file) = &entry.file else {
            return Err(LayeredError::NotFound(krate.clone()));
        };
        // Computed on every request (no memo), so a version growing out of an `age` pin is
        // served as soon as it does; the ETag is the body's.
        let lines = self.single(&rt, up, krate, &entry, file);
        if lines.is_empty() {
            return Err(LayeredError::NotFound(krate.clone()));
        }
        let mut body = String::new();
        for (i, yanked) in lines {
            body.push_str(&file.lines[i].render(yanked, &|_| false));
            body.push('\n');
        }
        Ok(ViewBody {
            etag: etag_of(body.as_bytes()),
            body: Bytes::from(body),
        })
    }
}
