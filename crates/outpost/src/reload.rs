//! A standalone node's config file: reloaded on SIGHUP, or when its modification time changes
//! (looked at every second), until SIGTERM or Ctrl-C.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Calls `reload` at each SIGHUP or change of `path`; returns at SIGTERM or Ctrl-C.
pub async fn until_stopped<F, Fut>(path: &Path, mut reload: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut last_seen = modified(path);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let changed = tokio::select! {
            _ = hup.recv() => true,
            _ = poll.tick() => {
                let now = modified(path);
                let changed = now != last_seen;
                last_seen = now;
                changed
            }
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if changed {
            reload().await;
        }
    }
}
