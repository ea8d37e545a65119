//! Prefetch: when the daemon fetches a new index file from an upstream, it fetches the index files
//! of the dependencies of that crate's newest versions through the layered view, in parallel and
//! bounded, so that cargo's next requests find them warm. Each prefetched file announces its own
//! dependencies in turn, so the whole graph is fetched while cargo is still reading the first
//! files; files already fresh cost nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Semaphore;

use crate::Daemon;

/// Index files fetched for prefetching at the same time, at most.
pub const PREFETCH_CONCURRENCY: usize = 16;

/// Starts the prefetcher; it runs until the daemon stops.
pub fn start(daemon: Arc<Daemon>) {
    let Some(mut rx) = daemon.prefetch_rx.lock().expect("prefetch lock").take() else {
        return;
    };
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(PREFETCH_CONCURRENCY));
        while let Some((krate, registry)) = rx.recv().await {
            // Dependencies on registries privreg does not layer are cargo's own business.
            if registry
                .as_deref()
                .is_some_and(|r| !daemon.runtime().is_layered(r))
            {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                daemon.prefetches.fetch_add(1, Ordering::Relaxed);
                daemon.metrics.prefetch();
                daemon.gather(&krate).await;
                drop(permit);
            });
        }
    });
}
