//! An object being filled from the origin, shared by the request that fetches it (the leader)
//! and the requests for the same key that arrive meanwhile (followers). This is request
//! collapsing: followers wait for the leader's response head instead of going to the origin,
//! then stream the body as it arrives.
//!
//! The body is kept in memory while it fits the memory tier's object limit. Past that, the
//! chunks are dropped and followers read the disk tier's temporary file as it grows; with no
//! disk tier the object is not stored and followers that have not started go to the origin.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::object::ObjectMeta;

/// How a fill ended, or that it goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillEnd {
    Running,
    /// The whole body arrived and was stored.
    Complete,
    /// The response is not one followers can use (not storable, too large, failed): they go
    /// to the origin themselves.
    Abandoned,
    /// The body broke off midway: followers that already sent part of it must cut too.
    Failed,
}

pub(crate) struct FillState {
    pub meta: Option<Arc<ObjectMeta>>,
    /// The body so far, while it is kept in memory.
    pub chunks: Vec<Bytes>,
    pub in_memory: bool,
    /// Bytes received so far.
    pub received: u64,
    /// The temporary file followers read once the memory copy is dropped, and how much of it
    /// is written.
    pub spill: Option<(PathBuf, u64)>,
    pub end: FillEnd,
}

pub struct Fill {
    pub(crate) state: Mutex<FillState>,
    /// Bumped on every change; followers wait on it.
    pub(crate) changed: watch::Sender<u64>,
}

impl Fill {
    pub(crate) fn new() -> Arc<Fill> {
        Arc::new(Fill {
            state: Mutex::new(FillState {
                meta: None,
                chunks: Vec::new(),
                in_memory: true,
                received: 0,
                spill: None,
                end: FillEnd::Running,
            }),
            changed: watch::channel(0).0,
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, FillState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn end(&self) -> FillEnd {
        self.lock().end
    }

    /// The response head, once the leader has it and it can be shared.
    pub fn meta(&self) -> Option<Arc<ObjectMeta>> {
        self.lock().meta.clone()
    }

    /// Waits until the head is known or the fill ended. `None`: the follower must go to the
    /// origin itself.
    pub async fn wait_head(&self) -> Option<Arc<ObjectMeta>> {
        let mut rx = self.subscribe();
        loop {
            {
                let s = self.lock();
                match s.end {
                    FillEnd::Abandoned | FillEnd::Failed => return None,
                    FillEnd::Complete | FillEnd::Running if s.meta.is_some() => {
                        return s.meta.clone();
                    }
                    _ => {}
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }
}
